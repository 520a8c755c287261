//! One camera's section: the detector and classifier screens, the detections table.

use super::super::reduce::MAX_ITEMS;
use super::*;

#[test]
fn detector_screen_at_80x24() {
    let lines = plain(&detector(), 80, 24);
    let expected = [
        "adaptd watch · cam1 · online · seen 0 s ago · adaptd 0.1.0",
        "up 3h12m · CPU 52°C · auto-train on",
        "learner mobilenetv2 (tract) · head v3 (macro-F1 0.93) · samples 42 in 3 labels",
        "",
        "camera front · model nanodet-m + mobilenetv2 · head v3 (macro-F1 0.93) · source…",
        "stable label: alice · 9.8 fps · p50 38 ms · p95 57 ms · 12034 frames, 12 skipped",
        "last frame 0 s ago · #12034 · 640x480 · 38.2 ms · 3 items",
        "#  backbone  score          box              head",
        "0  person    0.91 ███████░  12,30 201,410    alice   0.88 ███████░",
        "1  person    0.77 ██████░░  300,40 380,300   unknown 0.31 ██░░░░░░",
        "2  dog       0.55 ████░░░░  420,200 600,470  –",
        "recent events:",
        "     3 s ago  update  person: bob → alice  0.88",
        "    30 s ago  new     person: – → bob  0.74",
        "   1 min ago  end     dog: dog → –",
        "",
        "training: mobilenetv2 v4 deployed 2 min ago · macro-F1 0.931 (current 0.884) · …",
        "last reply 2 min ago: train (id a1) ok: {\"status\":\"started\"}",
    ];
    assert_eq!(lines, expected, "\n{}", lines.join("\n"));
}

#[test]
fn classifier_shows_head_label_paused_and_reconnecting_source() {
    let lines = plain(&classifier(), 160, 24);
    let header = line_with(&lines, "adaptd watch");
    // `detections` is live (unlike the retained `state`, `<camera>/state` and `available`).
    assert!(header.contains("home · online · seen 2 s ago"), "{header}");
    let title = line_with(&lines, "camera kitchen");
    assert!(title.starts_with("camera kitchen · paused · "), "{title}");
    // Same backbone for frames and embeddings: named once.
    assert!(
        title.contains("model mobilenetv2 · head v7 · source"),
        "{title}"
    );
    assert!(
        title.ends_with("(reconnecting: attempt 3: no such device)"),
        "{title}"
    );
    assert!(has(&lines, "stable label: cat · no stats yet"));
    assert!(has(
        &lines,
        "last frame 2 s ago · #77 · 224x224 · 7.2 ms · 1 item"
    ));
    // No box column for whole-frame classification.
    let header_row = line_with(&lines, "backbone");
    assert!(!header_row.contains("box"), "{header_row}");
    let row = line_with(&lines, "tabby");
    assert_eq!(row, "0  tabby     0.62 █████░░░  cat  0.97 ████████");
    let learner = line_with(&lines, "learner ");
    assert_eq!(
        learner,
        "learner mobilenetv2 (tract) · head v7 · samples 66: cat 31 · dog 30 · empty 5"
    );
    assert!(has(&lines, "auto-train off"));
    assert!(has(&lines, "training: idle"));
    assert!(has(&lines, "recent events: none yet"));
    check_fits(&classifier(), 80, 24, T0);
}

#[test]
fn detector_rows_show_boxes_sub_labels_and_unknown_marker() {
    let mut v = detector();
    v.apply(
        "front/detections",
        br#"{"frame_id":5,"width":640,"height":480,"inference_ms":40,"items":[
            {"label":"person","score":0.6,"box":[1,2,3,4],
             "head":{"label":"background","score":0.8,"unknown":true}},
            {"label":"car","score":0.5,"box":[1,2,3]},
            {"label":"cat","score":0.4,"box":[0,0,10,10],"head":{"label":"tom","score":0.9}}
        ]}"#,
        T0,
    );
    let lines = plain(&v, 100, 40);
    let row0 = line_with(&lines, "background");
    assert!(row0.contains("1,2 3,4"), "{row0}");
    assert!(row0.ends_with("(unknown)"), "{row0}");
    // A malformed box is a dash, not a problem.
    let row1 = line_with(&lines, "car");
    assert!(row1.contains("0.50") && row1.contains("  –  "), "{row1}");
    assert!(row1.ends_with('–'), "no head: {row1}");
    let row2 = line_with(&lines, "tom");
    assert!(!row2.contains("unknown"), "{row2}");
    assert!(v.problem.is_none());
}

#[test]
fn many_items_are_capped_and_counted() {
    let items: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"label":"person","score":0.5,"box":[{i},0,{i},9]}}"#))
        .collect();
    let payload = format!(r#"{{"frame_id":1,"items":[{}]}}"#, items.join(","));
    let mut v = detector();
    v.apply("front/detections", payload.as_bytes(), T0);
    let frame = &v.cameras["front"].frame.as_ref().unwrap().value;
    assert_eq!(frame.item_count, 100);
    assert_eq!(frame.items.len(), MAX_ITEMS);
    let lines = plain(&v, 80, 24);
    assert_eq!(lines.len(), 24);
    assert!(has(&lines, "100 items"));
    let more = line_with(&lines, " more");
    let rows = |l: &&String| l.contains("person") && !l.contains("person:");
    let shown = lines.iter().filter(rows).count();
    assert_eq!(more.trim(), format!("… {} more", 100 - shown));
    // Detections outrank everything below them: what was dropped is the low end.
    assert!(shown >= 8, "{}", lines.join("\n"));
    assert!(has(&lines, "adaptd watch") && has(&lines, "fps"));
    assert!(!has(&lines, "last reply") && !has(&lines, "recent events"));
}

#[test]
fn audio_frames_have_no_size() {
    let mut v = WatchView::new("hall", None);
    v.apply(
        "mic/state",
        br#"{"camera":"mic","kind":"microphone","model":"ecapa","embedding_model":"ecapa",
            "source":"alsa default","source_state":{"state":"streaming"},"label":"alice"}"#,
        T0,
    );
    v.apply(
        "mic/detections",
        br#"{"camera":"mic","frame_id":3,"time_unix_ms":1,
            "utterance":{"start_s":7.42,"duration_s":3.1,"level_dbfs":-24.6,"snr_db":41.7},
            "items":[{"label":"speech","score":1.0,
                      "head":{"label":"alice","score":0.93,"unknown":false,"head_version":2}}],
            "inference_ms":214.0}"#,
        T0,
    );
    let lines = plain(&v, 100, 30);
    assert!(has(
        &lines,
        "microphone mic · model ecapa · no head yet · source alsa default (streaming)"
    ));
    assert!(
        has(&lines, "last frame 0 s ago · #3 · 214.0 ms · 1 item"),
        "{lines:#?}"
    );
}

#[test]
fn head_and_source_state_take_the_fresher_message() {
    let mut v = WatchView::new("cam1", None);
    v.apply(
        "front/state",
        br#"{"head_version":null,"source_state":{"state":"failed","error":"/dev/video0: gone"}}"#,
        T0,
    );
    let title = plain(&v, 100, 24);
    let title = line_with(&title, "camera front");
    assert!(title.contains("no head yet"), "{title}");
    assert!(title.ends_with("(failed: /dev/video0: gone)"), "{title}");
    v.apply(
        "stats",
        br#"{"cameras":{"front":{"head_version":2,"head_macro_f1":0.5,"source_state":"streaming"}}}"#,
        T0 + 1,
    );
    let title = plain(&v, 100, 24);
    let title = line_with(&title, "camera front");
    assert!(title.contains("head v2 (macro-F1 0.50)"), "{title}");
    assert!(title.ends_with("(streaming)"), "{title}");
    // A newer state names v3; the stats' F1 belongs to v2 and is not shown for v3.
    v.apply("front/state", br#"{"head_version":3}"#, T0 + 2);
    let title = plain(&v, 100, 24);
    assert!(line_with(&title, "camera front").contains("head v3 · source"));
    // The reconnect's detail stays while stats name the same state.
    v.apply(
        "front/state",
        br#"{"source_state":{"state":"reconnecting","attempt":2,"last_error":"unplugged"}}"#,
        T0 + 3,
    );
    v.apply(
        "stats",
        br#"{"cameras":{"front":{"source_state":"reconnecting"}}}"#,
        T0 + 4,
    );
    let title = plain(&v, 100, 24);
    assert!(line_with(&title, "camera front").ends_with("(reconnecting: attempt 2: unplugged)"));
}
