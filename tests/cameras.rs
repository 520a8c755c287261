//! Several cameras in one daemon, end to end: four `[[cameras]]` replaying folders on one
//! MobileNetV2, a real Mosquitto, the real binary. What a user with four cameras relies on:
//! each camera speaks on its own topics and names itself in what it says, the model is loaded
//! once for all of them, and a camera whose source fails leaves the others running.

mod common;

use std::path::Path;

use common::mosquitto::{json, Bus, TestBroker, WAIT};
use common::*;
use serde_json::Value;

const BASE: &str = "adaptd/multicam";
/// Cameras with frames, and the photo each one replays.
const CAMERAS: [(&str, &str); 3] = [
    ("porch", "chelsea.png"),
    ("kitchen", "coffee.png"),
    ("garage", "chelsea.png"),
];
/// A camera whose folder does not exist.
const BROKEN: &str = "attic";

/// Crops of a photo at a few offsets, as JPEG files (what one camera sees).
fn write_frames(photo: &str, dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let img = image::open(image(photo)).expect("photo").to_rgb8();
    let (w, h) = img.dimensions();
    for i in 0..3u32 {
        let (cw, ch) = (w * 4 / 5, h * 4 / 5);
        let c = image::imageops::crop_imm(&img, (w - cw) * i / 2, (h - ch) * (i % 2), cw, ch);
        c.to_image()
            .save(dir.join(format!("f{i}.jpg")))
            .expect("write frame");
    }
}

fn config(tmp: &Path, port: u16) -> String {
    let mut text = format!(
        "state_dir = {:?}\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"multicam\"\n\
         stats_interval_secs = 1\n",
        tmp.join("state")
    );
    for (name, photo) in CAMERAS {
        let frames = tmp.join(name);
        write_frames(photo, &frames);
        text.push_str(&format!(
            "[[cameras]]\nname = \"{name}\"\nmodel = \"mobilenetv2\"\n\
             source = {{ kind = \"dir\", path = {frames:?}, fps = 4.0, loop = true }}\n"
        ));
    }
    text.push_str(&format!(
        "[[cameras]]\nname = \"{BROKEN}\"\n\
         source = {{ kind = \"dir\", path = {:?}, fps = 4.0 }}\n",
        tmp.join("no-such-folder")
    ));
    text
}

#[test]
fn four_cameras_share_one_model_and_a_failed_one_leaves_the_others_running() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start();
    let port = broker.port();
    let mut topics = vec!["available", "state", "reply", "stats"];
    let per_camera: Vec<String> = CAMERAS
        .iter()
        .map(|(c, _)| c)
        .chain([&BROKEN])
        .flat_map(|c| ["state", "detections", "events"].map(|t| format!("{c}/{t}")))
        .collect();
    topics.extend(per_camera.iter().map(String::as_str));
    let mut bus = Bus::subscribe(port, BASE, &topics);

    let conf = tmp.path().join("adaptd.toml");
    std::fs::write(&conf, config(tmp.path(), port)).expect("write config");
    let mut daemon = start_daemon(&conf);
    bus.wait_for("available", "`online`", |p| p == "online");

    // Each camera's detections and events on its own topics, each naming its camera.
    for (cam, _) in CAMERAS {
        let d = json(
            &bus.wait_for(&format!("{cam}/detections"), "a detection", |p| {
                json(p)["items"][0]["label"].is_string()
            }),
        );
        assert_eq!(d["camera"], cam, "{d}");
        let e = json(&bus.wait_for(&format!("{cam}/events"), "an event", |_| true));
        assert_eq!(e["camera"], cam, "{e}");
        assert_eq!(e["type"], "new", "{e}");
    }

    // One MobileNetV2 loaded, shared by the four cameras (the broken one included: it was
    // configured with the default model).
    let state = bus.retained_where("state", "the failed camera", |s| {
        s["cameras"][BROKEN]["source_state"]["state"] == "failed"
    });
    let engines = state["engines"].as_array().cloned().unwrap_or_default();
    assert_eq!(engines.len(), 1, "one engine for one model: {state}");
    assert_eq!(engines[0]["model"], "mobilenetv2", "{state}");
    let mut shared: Vec<&str> = engines[0]["cameras"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    shared.sort_unstable();
    assert_eq!(shared, ["attic", "garage", "kitchen", "porch"], "{state}");
    let error = state["cameras"][BROKEN]["source_state"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("no-such-folder"),
        "the error names the folder: {state}"
    );
    assert_eq!(
        state["learners"].as_object().map(|m| m.len()),
        Some(1),
        "{state}"
    );

    // The failed camera does not stop the others: frames keep coming on all three after it.
    for (cam, _) in CAMERAS {
        bus.wait_for(
            &format!("{cam}/detections"),
            "detections after the failure",
            |_| true,
        );
    }
    let stats = json(&bus.wait_for("stats", "figures for every camera", |p| {
        let s = json(p);
        CAMERAS
            .iter()
            .all(|(c, _)| s["cameras"][c]["frames"].as_u64().unwrap_or(0) > 2)
    }));
    assert_eq!(stats["cameras"][BROKEN]["frames"], 0, "{stats}");

    // Commands name their camera; an unknown camera is refused with the list of the real ones.
    let r = bus.ask("cmd/pause", r#"{"id": "p", "camera": "kitchen"}"#);
    assert_eq!(r["ok"], true, "{r}");
    let paused = bus.retained_where("state", "kitchen paused", |s| {
        s["cameras"]["kitchen"]["paused"] == true
    });
    assert_eq!(paused["cameras"]["porch"]["paused"], false, "{paused}");
    let r = bus.ask("cmd/pause", r#"{"id": "n", "camera": "nosuch"}"#);
    assert_eq!(r["ok"], false, "{r}");
    let err = r["error"].as_str().unwrap_or_default();
    for name in ["nosuch", "porch", "kitchen", "garage", "attic"] {
        assert!(err.contains(name), "the reply names {name}: {r}");
    }
    // Without a camera, `resume` (like `pause`) applies to every stream.
    let r = bus.ask("cmd/resume", r#"{"id": "a"}"#);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        r["result"]["cameras"].as_array().map(Vec::len),
        Some(4),
        "{r}"
    );
    bus.retained_where("state", "kitchen resumed", |s| {
        s["cameras"]["kitchen"]["paused"] == false
    });

    send_signal(&daemon, "-TERM");
    bus.wait_for("available", "`stopped`", |p| p == "stopped");
    // One camera failed while the others ran until SIGTERM: a clean stop, not a failure.
    assert_eq!(
        wait_exit(&mut daemon, "adaptd after SIGTERM", WAIT),
        Some(0)
    );
}
