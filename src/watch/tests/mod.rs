//! The watch's tests: messages in, screens out, on plain strings.
//!
//! - `screen`: what one camera's section shows (the detector and classifier screens);
//! - `device`: the device header, several cameras, `--camera`, training and replies;
//! - `safety`: bad payloads, hostile text, short and narrow terminals, colour.

mod device;
mod safety;
mod screen;

use super::text::{is_unsafe, str_width};
use super::WatchView;

pub const T0: i64 = 1_760_000_000_000;

pub const DETECTOR_STATE: &str = r#"{"binary_version":"0.1.0","device":"cam1",
    "training":false,"auto_train":true,
    "cameras":{"front":{"kind":"camera","enabled":true,"paused":false,"model":"nanodet-m",
        "embedding_model":"mobilenetv2","backend":"onnxruntime","embedding_backend":"tract",
        "head_version":3,"source":"mjpeg http://10.0.0.5:8080/stream (at most 10 fps)",
        "source_state":{"state":"streaming"},"label":"alice"}},
    "learners":{"mobilenetv2":{"backend":"tract","head_version":3,"head_macro_f1":0.931,
        "samples":{"alice":20,"bob":12,"cat":10},"samples_total":42}},
    "samples_total":42,
    "engines":[{"model":"nanodet-m","backend":"onnxruntime","cameras":["front"]}]}"#;

pub const DETECTOR_STATS: &str = r#"{"uptime_s":11520,"cpu_temp_c":52.3,"mqtt_reconnects":0,
    "mqtt_dropped":0,"training":"idle",
    "cameras":{"front":{"fps":9.8,"frames":12034,"skipped_frames":12,"throttled_frames":0,
        "motion_skipped_frames":0,"queued_frames":0,"inference_ms_p50":38.4,
        "inference_ms_p95":57.1,"paused":false,"source_state":"streaming","head_version":3,
        "head_macro_f1":0.931}},
    "samples":{"alice":20,"bob":12,"cat":10}}"#;

pub const DETECTOR_FRAME: &str = r#"{"camera":"front","frame_id":12034,
    "time_unix_ms":1760000000000,"width":640,"height":480,"items":[
    {"label":"person","score":0.91,"box":[12.4,30.0,200.7,410.2],
     "head":{"label":"alice","score":0.88,"unknown":false,"head_version":3}},
    {"label":"person","score":0.77,"box":[300,40,380,300],
     "head":{"label":"unknown","score":0.31,"unknown":true,"head_version":3}},
    {"label":"dog","score":0.55,"box":[420.5,200,600,470]}],"inference_ms":38.2}"#;

pub const CLASSIFIER_STATE: &str = r#"{"camera":"kitchen","kind":"camera","enabled":true,
    "paused":true,"model":"mobilenetv2","embedding_model":"mobilenetv2","backend":"tract",
    "embedding_backend":"tract","head_version":7,
    "source":"dir /var/lib/adaptd/frames (5 fps, loop)",
    "source_state":{"state":"reconnecting","attempt":3,"last_error":"no such device"},
    "label":"cat"}"#;

pub const CLASSIFIER_DEVICE: &str = r#"{"binary_version":"0.1.0","device":"home",
    "training":false,"auto_train":false,
    "cameras":{"kitchen":{"kind":"camera","enabled":true,"paused":true,"model":"mobilenetv2",
        "embedding_model":"mobilenetv2","backend":"tract","embedding_backend":"tract",
        "head_version":7,"source":"dir /var/lib/adaptd/frames (5 fps, loop)",
        "source_state":{"state":"reconnecting","attempt":3,"last_error":"no such device"},
        "label":"cat"}},
    "learners":{"mobilenetv2":{"backend":"tract","head_version":7,"head_macro_f1":null,
        "samples":{"cat":31,"dog":30,"empty":5},"samples_total":66}},"samples_total":66}"#;

pub const CLASSIFIER_FRAME: &str = r#"{"camera":"kitchen","frame_id":77,
    "time_unix_ms":1760000000000,"width":224,"height":224,"items":[{"label":"tabby",
    "score":0.62,"head":{"label":"cat","score":0.97,"unknown":false,"head_version":7}}],
    "inference_ms":7.25}"#;

/// A detector device with one camera, `front`, and a bit of everything.
pub fn detector() -> WatchView {
    let mut v = WatchView::new("cam1", None);
    v.apply("available", b"online", T0 - 60_000);
    v.apply("state", DETECTOR_STATE.as_bytes(), T0 - 60_000);
    v.apply("stats", DETECTOR_STATS.as_bytes(), T0 - 4_000);
    v.apply(
        "front/events",
        br#"{"camera":"front","type":"end","track":"dog","before":"dog","after":null,"score":0.0}"#,
        T0 - 95_000,
    );
    v.apply(
        "front/events",
        br#"{"camera":"front","type":"new","track":"person","before":null,"after":"bob","score":0.74}"#,
        T0 - 30_000,
    );
    v.apply(
        "front/events",
        br#"{"camera":"front","type":"update","track":"person","before":"bob","after":"alice","score":0.88}"#,
        T0 - 3_000,
    );
    v.apply(
        "training",
        br#"{"status":"started","model":"mobilenetv2","trigger":"schedule","force":false}"#,
        T0 - 140_000,
    );
    v.apply(
        "training",
        br#"{"status":"finished","model":"mobilenetv2","version":4,"deployed":true,
            "reason":"v4 holdout macro-F1 0.9310 >= v3's 0.8840 on the same holdout",
            "accuracy":0.95,"macro_f1":0.931,"current_macro_f1":0.884,
            "confusion":[[9,1],[0,10]],"classes":["alice","bob"],"outcome":{}}"#,
        T0 - 125_000,
    );
    v.apply(
        "reply",
        br#"{"id":"a1","cmd":"train","ok":true,"result":{"status":"started"}}"#,
        T0 - 141_000,
    );
    v.apply("front/detections", DETECTOR_FRAME.as_bytes(), T0 - 400);
    v
}

/// A classifier device whose one camera, `kitchen`, is paused and reconnecting; no stats.
pub fn classifier() -> WatchView {
    let mut v = WatchView::new("home", None);
    v.apply("available", b"online", T0);
    v.apply("state", CLASSIFIER_DEVICE.as_bytes(), T0);
    v.apply("kitchen/state", CLASSIFIER_STATE.as_bytes(), T0);
    v.apply(
        "kitchen/detections",
        CLASSIFIER_FRAME.as_bytes(),
        T0 - 2_000,
    );
    v
}

/// Removes SGR sequences (`ESC [ params m`), the only escapes the renderer emits.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            assert_eq!(chars.next(), Some('['), "only CSI sequences: {s:?}");
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    assert_eq!(c, 'm', "only SGR sequences: {s:?}");
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn plain(v: &WatchView, w: usize, h: usize) -> Vec<String> {
    v.render(w, h, T0, false)
}

pub fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

pub fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{}", lines.join("\n")))
}

/// Checks the contract for one render: at most `h` rows, no row wider than `w` columns
/// (visible characters only), and no escape byte at all without colour.
pub fn check_fits(v: &WatchView, w: usize, h: usize, now: i64) {
    for color in [false, true] {
        let lines = v.render(w, h, now, color);
        assert!(lines.len() <= h, "{} rows > {h}", lines.len());
        for l in &lines {
            if !color {
                assert!(!l.contains('\x1b'), "escape without colour: {l:?}");
            }
            let visible = strip_ansi(l);
            assert!(
                str_width(&visible) <= w,
                "{} columns > {w}: {visible:?}",
                str_width(&visible)
            );
            assert!(!visible.chars().any(is_unsafe), "control char: {l:?}");
        }
    }
}
