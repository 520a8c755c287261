//! The device header, several cameras, `--camera`, training, replies, retained topics.

use super::super::model::{MAX_CAMERAS, MAX_EVENTS};
use super::*;

fn camera_state(name: &str, label: &str) -> String {
    format!(
        r#"{{"camera":"{name}","kind":"camera","enabled":true,"paused":false,"model":"m",
            "embedding_model":"m","backend":"tract","embedding_backend":"tract",
            "head_version":1,"source":"dir /x","source_state":{{"state":"streaming"}},
            "label":"{label}"}}"#
    )
}

#[test]
fn each_camera_has_its_section_in_name_order() {
    let mut v = detector();
    v.apply("back/state", camera_state("back", "car").as_bytes(), T0);
    v.apply(
        "back/detections",
        br#"{"camera":"back","frame_id":9,"items":[{"label":"car","score":0.8}],"inference_ms":5}"#,
        T0,
    );
    v.apply(
        "back/events",
        br#"{"camera":"back","type":"new","track":"scene","after":"car","score":0.8}"#,
        T0,
    );
    let lines = plain(&v, 100, 60);
    let pos = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
    let (back, front) = (pos("camera back"), pos("camera front"));
    assert!(back < front, "{lines:#?}");
    // Each camera's rows sit in its own section.
    assert!(back < pos("stable label: car") && pos("stable label: car") < front);
    assert!(back < pos("#9 ·") && pos("#9 ·") < front);
    assert!(back < pos("scene: – → car") && pos("scene: – → car") < front);
    assert!(front < pos("#12034") && front < pos("person: bob → alice"));
    // `back` has no figures in `stats` yet.
    assert!(has(&lines, "stable label: car · no stats yet"));
    check_fits(&v, 80, 24, T0);
}

#[test]
fn one_camera_only() {
    let mut v = WatchView::new("cam1", Some("front"));
    v.apply("state", DETECTOR_STATE.as_bytes(), T0);
    v.apply("back/state", camera_state("back", "car").as_bytes(), T0);
    v.apply(
        "stats",
        br#"{"cameras":{"back":{"fps":1},"front":{"fps":2}}}"#,
        T0 - 5_000,
    );
    v.apply("back/detections", br#"{"frame_id":9}"#, T0);
    let lines = plain(&v, 100, 40);
    assert!(
        lines[0].starts_with("adaptd watch · cam1/front · "),
        "{}",
        lines[0]
    );
    assert!(has(&lines, "camera front") && !has(&lines, "camera back"));
    assert_eq!(v.cameras.len(), 1);
    assert!(has(&lines, "2.0 fps"));
    // Another camera's messages are not read at all, not even as a sign of life.
    assert!(lines[0].contains("seen 5 s ago"), "{}", lines[0]);
    let mut w = WatchView::new("cam1", Some("nosuch"));
    w.apply("state", DETECTOR_STATE.as_bytes(), T0);
    assert!(has(&plain(&w, 80, 24), "no message of camera `nosuch` yet"));
}

#[test]
fn cameras_are_capped() {
    let mut v = WatchView::new("big", None);
    for i in 0..40 {
        let name = format!("cam{i:02}");
        v.apply(
            &format!("{name}/state"),
            camera_state(&name, "x").as_bytes(),
            T0,
        );
        v.apply(&format!("{name}/detections"), br#"{"frame_id":1}"#, T0);
    }
    assert_eq!(v.cameras.len(), MAX_CAMERAS);
    let lines = plain(&v, 100, 200);
    assert!(has(&lines, "cameras: the rest are not shown"), "{lines:#?}");
    assert!(has(&lines, "camera cam15") && !has(&lines, "camera cam16"));
    check_fits(&v, 100, 24, T0);
    // Names that break the stream-name rule are never cameras.
    let mut w = WatchView::new("x", None);
    w.apply("Bad Name/state", camera_state("b", "x").as_bytes(), T0);
    w.apply("samples/state", &[0xff, 0xd8, 0xff], T0);
    assert!(w.cameras.is_empty() && w.problem.is_none());
}

#[test]
fn leftover_and_cleared_cameras() {
    let mut v = WatchView::new("cam1", None);
    v.apply("state", DETECTOR_STATE.as_bytes(), T0);
    // The retained state of a camera the device no longer runs.
    v.apply("old/state", camera_state("old", "x").as_bytes(), T0);
    let lines = plain(&v, 120, 40);
    assert!(line_with(&lines, "camera old").contains("not in the device's state"));
    assert!(!line_with(&lines, "camera front").contains("not in the device's state"));
    // Clearing it (an empty retained message) removes it.
    v.apply("old/state", b"", T0);
    assert!(!has(&plain(&v, 120, 40), "camera old"));
    assert!(v.problem.is_none());
}

#[test]
fn availability_offline_stopped_and_unknown() {
    let mut v = detector();
    v.apply("available", b"offline", T0);
    assert!(plain(&v, 80, 24)[0].contains("cam1 · offline"));
    v.apply("available", b" stopped\n", T0);
    assert!(plain(&v, 80, 24)[0].contains("cam1 · stopped"));
    assert!(v.problem.is_none());
    let yellow = v.render(80, 24, T0, true);
    assert!(
        yellow[0].contains("\x1b[33mstopped\x1b[0m"),
        "{:?}",
        yellow[0]
    );
    v.apply("available", b"offline", T0);
    assert!(v.render(80, 24, T0, true)[0].contains("\x1b[31moffline\x1b[0m"));
    v.apply("available", b"online", T0);
    assert!(v.render(80, 24, T0, true)[0].contains("\x1b[32monline\x1b[0m"));
    v.apply("available", b"sleeping", T0);
    let lines = plain(&v, 80, 24);
    assert!(lines[0].contains("cam1 · sleeping"), "{}", lines[0]);
    assert!(line_with(&lines, "problem").contains("available: unexpected 'sleeping'"));
    // An empty retained message clears the topic.
    v.apply("available", b"", T0);
    assert!(plain(&v, 80, 24)[0].contains("cam1 · –"));
}

#[test]
fn retained_topics_do_not_count_as_seen_and_empty_state_clears() {
    let mut v = WatchView::new("cam1", None);
    v.apply("available", b"online", T0);
    v.apply("state", DETECTOR_STATE.as_bytes(), T0);
    v.apply("front/state", camera_state("front", "x").as_bytes(), T0);
    assert!(plain(&v, 80, 24)[0].contains("no live message yet"));
    v.apply("stats", DETECTOR_STATS.as_bytes(), T0 - 125_000);
    assert!(plain(&v, 80, 24)[0].contains("seen 2 min ago"));
    v.apply("state", b"", T0);
    let lines = plain(&v, 80, 24);
    assert!(!has(&lines, "adaptd 0.1.0") && !has(&lines, "learner "));
    // The camera keeps what its own topics said.
    assert!(has(&lines, "camera front"));
    assert!(v.problem.is_none());
}

#[test]
fn other_subtopics_are_ignored() {
    let mut v = detector();
    let before = plain(&v, 80, 24);
    v.apply("front/snapshot", &[0xff, 0xd8, 0xff, 0xe0, 0, 1], T0);
    v.apply("cmd/train", b"{}", T0);
    v.apply("samples/cat", &[0xff, 0xd8], T0);
    v.apply("front/samples/cat", &[0xff, 0xd8], T0);
    v.apply("something-new", b"{", T0);
    v.apply("detections", b"{", T0);
    assert_eq!(plain(&v, 80, 24), before);
    assert!(v.problem.is_none());
    // Leading/trailing slashes from the caller's topic split are tolerated.
    v.apply("/available/", b"stopped", T0);
    assert!(plain(&v, 80, 24)[0].contains("stopped"));
}

#[test]
fn event_list_is_bounded_newest_first() {
    let mut v = WatchView::new("cam1", None);
    for i in 0..100 {
        v.apply(
            "front/events",
            format!(
                r#"{{"type":"update","track":"scene","before":"a{i}","after":"b{i}","score":0.6}}"#
            )
            .as_bytes(),
            T0 - (100 - i) * 1_000,
        );
    }
    assert_eq!(v.cameras["front"].events.len(), MAX_EVENTS);
    let lines = plain(&v, 80, 100);
    let rows: Vec<&String> = lines.iter().filter(|l| l.contains("scene:")).collect();
    assert_eq!(rows.len(), MAX_EVENTS);
    assert_eq!(rows[0].trim(), "1 s ago  update  scene: a99 → b99  0.60");
    assert!(rows[MAX_EVENTS - 1].contains("a92 → b92"), "{}", rows[7]);
    assert!(!has(&lines, "older"));
}

#[test]
fn events_of_unknown_kinds_and_odd_fields() {
    let mut v = WatchView::new("cam1", None);
    v.apply(
        "front/events",
        br#"{"type":"new","track":"scene","before":null,"after":"cat","score":0.87,"extra":1}"#,
        T0,
    );
    v.apply(
        "front/events",
        br#"{"type":"merge","track":"scene","before":"cat"}"#,
        T0,
    );
    v.apply("front/events", br#"{"track":7}"#, T0);
    let lines = plain(&v, 80, 24);
    assert!(has(&lines, "new     scene: – → cat  0.87"), "{lines:#?}");
    assert!(has(&lines, "–       scene: cat → –"), "{lines:#?}");
    assert!(has(&lines, "–       –: – → –"), "{lines:#?}");
}

#[test]
fn training_lifecycle() {
    let mut v = detector();
    v.apply(
        "training",
        br#"{"status":"started","model":"mobilenetv2","trigger":"command","force":false}"#,
        T0 - 75_000,
    );
    v.apply("stats", br#"{"training":"running"}"#, T0 - 1_000);
    let lines = plain(&v, 100, 30);
    assert!(has(
        &lines,
        "training: mobilenetv2 running for 1m15s (trigger: command)"
    ));
    assert!(has(&lines, "training running"), "the header says so too");
    v.apply(
        "training",
        br#"{"status":"finished","version":5,"deployed":false,
            "reason":"v5 holdout macro-F1 0.8000 < v4's 0.9310 on the same holdout: keeping v4",
            "accuracy":0.8,"macro_f1":0.8,"current_macro_f1":0.931}"#,
        T0 - 1_000,
    );
    let line = plain(&v, 200, 30);
    let line = line_with(&line, "training:");
    assert_eq!(
        line,
        "training: v5 not deployed 1 s ago · macro-F1 0.800 (current 0.931) · accuracy 0.800 · v5 holdout macro-F1 0.8000 < v4's 0.9310 on the same holdout: keeping v4"
    );
    v.apply(
        "training",
        br#"{"status":"failed","model":"ecapa","deployed":false,"error":"only 1 class has samples"}"#,
        T0,
    );
    let lines = plain(&v, 100, 30);
    assert_eq!(
        line_with(&lines, "training:"),
        "training: ecapa failed 0 s ago: only 1 class has samples"
    );
    // A fresher state that says a run is going (its `started` was missed) wins.
    v.apply("state", br#"{"training":true}"#, T0 + 1);
    assert!(has(&plain(&v, 100, 30), "training: running"));
    // Without any training message: the flag only.
    let mut w = WatchView::new("x", None);
    assert!(has(&plain(&w, 80, 24), "training: –"));
    w.apply("stats", br#"{"training":"running"}"#, T0);
    assert!(has(&plain(&w, 80, 24), "training: running"));
    w.apply("training", br#"{"status":"paused"}"#, T0 + 1);
    assert!(has(&plain(&w, 80, 24), "training: – 0 s ago"));
}

#[test]
fn reply_line_ok_and_error() {
    let mut v = WatchView::new("cam1", None);
    v.apply(
        "reply",
        br#"{"id":9,"cmd":"set","ok":false,"error":"`fps` = 100 is out of range"}"#,
        T0 - 2_000,
    );
    assert!(has(
        &plain(&v, 80, 24),
        "last reply 2 s ago: set (id 9) error: `fps` = 100 is out of range"
    ));
    v.apply(
        "reply",
        br#"{"id":null,"cmd":"pause","ok":true,"result":{"paused":true,"cameras":["front"]}}"#,
        T0,
    );
    assert!(has(
        &plain(&v, 100, 24),
        r#"last reply 0 s ago: pause ok: {"cameras":["front"],"paused":true}"#
    ));
    v.apply("reply", br#"{"ok":true,"result":null}"#, T0);
    assert!(has(&plain(&v, 80, 24), "last reply 0 s ago: – ok"));
}

#[test]
fn samples_sorted_and_compact() {
    let mut v = WatchView::new("cam1", None);
    v.apply(
        "state",
        br#"{"learners":{"m":{"samples":{"b":5,"a":5,"zed":40,"c":1,"bad":"x"}}}}"#,
        T0,
    );
    let lines = plain(&v, 120, 24);
    assert!(
        has(&lines, "samples 51: zed 40 · a 5 · b 5 · c 1"),
        "{lines:#?}"
    );
    let labels: Vec<String> = (0..40).map(|i| format!(r#""label{i:02}":{i}"#)).collect();
    v.apply(
        "state",
        format!(
            r#"{{"learners":{{"m":{{"samples":{{{}}}}}}}}}"#,
            labels.join(",")
        )
        .as_bytes(),
        T0 + 1,
    );
    let lines = plain(&v, 80, 24);
    let line = line_with(&lines, "samples ");
    assert!(
        line.contains("samples 780: label39 39 · label38 38"),
        "{line}"
    );
    assert!(line.ends_with(" more") && !line.ends_with('…'), "{line}");
    assert!(str_width(line) <= 80);
    v.apply("state", br#"{"learners":{"m":{"samples":{}}}}"#, T0 + 2);
    assert!(has(&plain(&v, 80, 24), "samples: none yet"));
    // Before any `state`, the samples of `stats` (summed over the learners).
    let mut w = WatchView::new("cam1", None);
    w.apply("stats", br#"{"samples":{"a":2,"b":3}}"#, T0);
    assert!(has(&plain(&w, 80, 24), "samples 5: b 3 · a 2"));
}
