//! Nothing a payload contains panics the view, grows it, or reaches the terminal as a
//! control sequence; every screen fits the terminal it is drawn for.

use super::super::frame;
use super::*;

#[test]
fn malformed_payloads_become_the_problem_line() {
    let mut v = detector();
    let bad: [(&str, &[u8], &str); 10] = [
        (
            "stats",
            b"{\"uptime_s\": 9.",
            "stats: not valid JSON (EOF while parsing",
        ),
        (
            "front/detections",
            b"[1,2]",
            "front/detections: expected a JSON object, got an array",
        ),
        (
            "front/events",
            b"42",
            "front/events: expected a JSON object, got a number",
        ),
        ("training", b"", "training: empty payload"),
        ("training", b"{}", "training: missing field `status`"),
        ("reply", b"null", "reply: expected a JSON object, got null"),
        ("state", b"\xff\xfe{}", "state: not valid JSON"),
        ("available", b"\xff", "available: not UTF-8 text"),
        ("front/detections", b"{\"items\": 5}", ""),
        (
            "stats",
            b"{\"cameras\": {\"front\": {\"fps\": \"fast\", \"frames\": -3}}, \"uptime_s\": 1.5}",
            "",
        ),
    ];
    for (i, (topic, payload, expected)) in bad.iter().enumerate() {
        v.apply(topic, payload, T0 - 5_000);
        check_fits(&v, 80, 24, T0);
        if expected.is_empty() {
            continue;
        }
        let lines = plain(&v, 200, 40);
        let p = line_with(&lines, "problem");
        assert!(p.contains(expected), "{p}");
        assert!(p.starts_with("problem 5 s ago"), "{p}");
        if i > 0 {
            assert!(p.contains(&format!("({} so far)", i + 1)), "{p}");
        }
    }
    // Wrongly typed fields are not problems; they read as missing.
    assert_eq!(v.problems, 8);
    let lines = plain(&v, 200, 40);
    assert!(has(
        &lines,
        "last frame 5 s ago · #0 · 0.0 ms · nothing detected"
    ));
    assert!(has(
        &lines,
        "stable label: alice · 0.0 fps · p50 0.0 ms · p95 0.0 ms · 0 frames, 0 skipped"
    ));
    // The state that was there survives a bad update.
    assert!(has(&lines, "learner mobilenetv2"));
    // A payload that cannot be read does not create a camera.
    v.apply("ghost/detections", b"[]", T0);
    assert!(!v.cameras.contains_key("ghost"));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = crate::rng::SplitMix64::new(0x2545_f491_4f6c_dd1d);
    let mut next = || rng.next_u64();
    let topics = [
        "available",
        "state",
        "stats",
        "training",
        "reply",
        "front/state",
        "front/detections",
        "front/events",
        "kitchen/state",
        "kitchen/detections",
    ];
    let seeds = [
        DETECTOR_STATE,
        DETECTOR_STATS,
        DETECTOR_FRAME,
        CLASSIFIER_STATE,
        CLASSIFIER_DEVICE,
        CLASSIFIER_FRAME,
        r#"{"status":"finished","model":"m","version":4,"deployed":true,"reason":"r"}"#,
        r#"{"id":"a1","cmd":"train","ok":false,"error":"e"}"#,
        r#"{"type":"new","track":"person","before":null,"after":"bob","score":0.74}"#,
    ];
    let mut v = WatchView::new("fuzz", None);
    for round in 0..3000 {
        let topic = topics[next() as usize % topics.len()];
        let mut payload = seeds[next() as usize % seeds.len()].as_bytes().to_vec();
        // Mutate a few bytes: mostly still JSON-ish, sometimes valid with odd types.
        for _ in 0..(next() % 4) {
            let i = next() as usize % payload.len();
            payload[i] = (next() % 256) as u8;
        }
        if round % 7 == 0 {
            payload.truncate(next() as usize % payload.len());
        }
        v.apply(topic, &payload, T0 + round);
        if round % 50 == 0 {
            let w = (next() % 130) as usize;
            let h = (next() % 30) as usize;
            check_fits(&v, w, h, T0 + round);
        }
    }
}

#[test]
fn lines_fit_any_width_with_and_without_colour() {
    let mut v = detector();
    v.apply(
        "reply",
        "{\"cmd\":\"set\",\"ok\":false,\"error\":\"値が大きすぎます: 設定を確認してください\"}"
            .as_bytes(),
        T0,
    );
    v.apply("stats", b"{", T0);
    for w in 0..=130 {
        check_fits(&v, w, 30, T0);
    }
    let lines = plain(&v, 40, 30);
    assert!(lines.iter().any(|l| l.ends_with('…')));
    // A cut wide character never leaves the line wider than asked.
    let reply = v.render(60, 40, T0, true);
    let reply = reply.iter().find(|l| l.contains("last reply")).cloned();
    let reply = strip_ansi(&reply.unwrap_or_default());
    assert!(reply.ends_with('…') && str_width(&reply) <= 60, "{reply}");
}

#[test]
fn colour_is_per_piece_and_reset() {
    let v = detector();
    let lines = v.render(80, 24, T0, true);
    assert!(lines[0].contains("\x1b[1mcam1\x1b[0m"), "{:?}", lines[0]);
    assert!(lines[0].contains("\x1b[32monline\x1b[0m"));
    let label = line_with(&lines, "stable label");
    assert!(label.contains("\x1b[1malice\x1b[0m"), "{label:?}");
    for l in &lines {
        // Every SGR that sets a style is closed on the same line.
        assert_eq!(
            l.matches("\x1b[0m").count(),
            l.matches("\x1b[").count() - l.matches("\x1b[0m").count(),
            "{l:?}"
        );
    }
    // Cut in the middle of a coloured piece: the reset is still there.
    let narrow = v.render(20, 24, T0, true);
    assert!(narrow[0].ends_with("\x1b[0m…"), "{:?}", narrow[0]);
    assert_eq!(strip_ansi(&narrow[0]), "adaptd watch · cam1…");
    let plain_lines = plain(&v, 80, 24);
    for (c, p) in lines.iter().zip(&plain_lines) {
        assert_eq!(&strip_ansi(c), p);
    }
}

#[test]
fn plain_output_has_no_escape_bytes_even_from_payloads() {
    let mut v = WatchView::new("cam\x1b[2J1", None);
    v.apply(
        "front/state",
        "{\"label\":\"\\u001b]0;owned\\u0007cat\",\"model\":\"m\\u009b31m\\u202eevil\"}".as_bytes(),
        T0,
    );
    v.apply(
        "state",
        "{\"learners\":{\"\\u001b[31mm\":{\"samples\":{\"\\u001b[2Jx\":1}}}}".as_bytes(),
        T0,
    );
    v.apply(
        "reply",
        br#"{"cmd":"x","ok":false,"error":"line1\nline2\u001b[31m"}"#,
        T0,
    );
    v.apply("available", b"\x1b[31monline", T0);
    for color in [false, true] {
        let lines = v.render(120, 30, T0, color);
        let all = lines.join("\n");
        if !color {
            assert!(!all.contains('\x1b'), "{all:?}");
        }
        let visible = lines.iter().map(|l| strip_ansi(l)).collect::<String>();
        assert!(!visible.chars().any(is_unsafe), "{visible:?}");
        assert!(!visible.contains('\u{9b}') && !visible.contains('\u{7}'));
    }
    let lines = plain(&v, 120, 30);
    assert!(
        lines[0].starts_with("adaptd watch · cam�[2J1 · "),
        "{}",
        lines[0]
    );
    assert!(has(&lines, "stable label: �]0;owned�cat"));
    assert!(has(&lines, "learner �[31mm"));
    assert!(has(&lines, "error: line1 line2�[31m"));
}

#[test]
fn height_is_respected_and_priorities_hold() {
    let mut v = detector();
    v.apply("stats", b"nope", T0 - 1_000);
    for i in 0..20 {
        v.apply(
            "front/events",
            format!(r#"{{"type":"new","track":"t{i}","after":"x","score":0.9}}"#).as_bytes(),
            T0,
        );
    }
    let full = plain(&v, 80, 100);
    for h in 0..=full.len() + 2 {
        check_fits(&v, 80, h, T0);
        let lines = plain(&v, 80, h);
        if h >= 1 {
            assert!(lines[0].starts_with("adaptd watch"), "h={h}");
        }
        if h >= full.len() {
            assert_eq!(lines, full, "nothing dropped when everything fits");
        }
        // Sections keep their order whatever is dropped.
        let pos = |needle: &str| lines.iter().position(|l| l.contains(needle));
        let order = [
            pos("adaptd watch"),
            pos("up 3h12m"),
            pos("learner "),
            pos("camera front"),
            pos("stable label"),
            pos("last frame"),
            pos("recent events"),
            pos("training:"),
            pos("last reply"),
            pos("problem "),
        ];
        let present: Vec<usize> = order.iter().flatten().copied().collect();
        assert!(present.windows(2).all(|w| w[0] < w[1]), "h={h}: {lines:#?}");
        // The more important survives the less important.
        let rank = [
            pos("adaptd watch"),
            pos("camera front"),
            pos("stable label"),
            pos("last frame"),
            pos("problem "),
            pos("up 3h12m"),
            pos("learner "),
            pos("training:"),
            pos("recent events"),
            pos("last reply"),
        ];
        for pair in rank.windows(2) {
            assert!(pair[0].is_some() || pair[1].is_none(), "h={h}: {lines:#?}");
        }
    }
    assert!(plain(&v, 80, 0).is_empty());
    assert_eq!(plain(&v, 80, 1).len(), 1);
    // A short screen: blank separators go before content, events shrink before going.
    let l = plain(&v, 80, 20);
    assert_eq!(l.len(), 20);
    assert!(!l.iter().any(String::is_empty), "{l:#?}");
    assert!(has(&l, "older"), "{l:#?}");
    assert!(has(&l, "problem") && !has(&l, "last reply"), "{l:#?}");
}

#[test]
fn frames_redraw_in_place() {
    let f = frame(&detector().render(80, 24, T0, true));
    assert!(f.starts_with("\x1b[H"));
    assert!(!f.contains("\x1b[2J"), "no full-screen clear");
    assert!(!f.ends_with('\n'), "no scroll after the bottom row");
}
