//! Zones, masks, occupancy counts and snapshots end to end, on the real binary, a real
//! Mosquitto and the real NanoDet + MobileNetV2.
//!
//! Two cameras watch the same replay: the astronaut on the left, then the cameraman on the
//! right, taking turns. `door` has a zone `left` that events require: the astronaut is
//! announced in it, the cameraman (outside every required zone) is counted but never
//! announced. `yard` masks the bottom right corner, where the cameraman stands: his box is in
//! `detections` with no object id, and he is never counted.

mod common;

use std::cell::RefCell;
use std::path::Path;
use std::process::Command;

use common::mosquitto::{json, Bus, TestBroker};
use common::turns::{on_left, on_right, two_person_frames, CANVAS};
use common::*;

const BASE: &str = "adaptd/testzones";
/// The retained payload of `topic` as bytes (mosquitto_sub adds a newline).
fn retained_bytes(port: u16, topic: &str) -> Vec<u8> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-C", "1", "-W", "10", "-N", "-t", topic])
        .output()
        .expect("run mosquitto_sub");
    out.stdout
}

fn config(state_dir: &Path, frames: &Path, port: u16) -> String {
    format!(
        "state_dir = {state_dir:?}\n\
         [model]\nname = \"nanodet-m\"\nsublabel_model = \"mobilenetv2\"\n\
         [track]\nmax_lost_s = 1.0\n\
         [[cameras]]\nname = \"door\"\nscore_threshold = 0.3\nobjects = [\"person\"]\n\
         required_zones = [\"left\"]\n\
         source = {{ kind = \"dir\", path = {frames:?}, fps = 3.0, loop = true }}\n\
         [[cameras.zones]]\nname = \"left\"\npoints = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]\n\
         inertia = 1\n\
         [[cameras]]\nname = \"yard\"\nscore_threshold = 0.3\n\
         masks = [[[0.55, 0.8], [1.0, 0.8], [1.0, 1.0], [0.55, 1.0]]]\n\
         source = {{ kind = \"dir\", path = {frames:?}, fps = 3.0, loop = true }}\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testzones\"\n"
    )
}

#[test]
fn zones_gate_events_masks_hide_counts_follow_and_snapshots_are_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let frames = two_person_frames(tmp.path());
    let broker = TestBroker::start();
    let port = broker.port();
    let mut bus = Bus::subscribe(
        port,
        BASE,
        &[
            "available",
            "door/detections",
            "door/objects",
            "door/all/person",
            "door/left/person",
            "yard/detections",
            "yard/all/person",
        ],
    );
    let state_dir = tmp.path().join("state");
    let config_path = tmp.path().join("adaptd.toml");
    std::fs::write(&config_path, config(&state_dir, &frames, port)).expect("write config");
    let mut daemon = start_daemon(&config_path);
    bus.wait_for("available", "`online`", |p| p == "online");

    // Every count starts at 0 (a retained count of an earlier run is not left standing).
    bus.wait_for("door/all/person", "the first count, 0", |p| p == "0");
    bus.wait_for("door/left/person", "the zone's first count, 0", |p| {
        p == "0"
    });

    // The astronaut is announced in the zone, and counted there.
    let new = json(&bus.wait_for("door/objects", "the astronaut's `new`", |p| {
        let o = json(p);
        o["type"] == "new" && on_left(&o["after"]["box"])
    }));
    assert_eq!(
        new["after"]["current_zones"],
        serde_json::json!(["left"]),
        "{new}"
    );
    assert_eq!(
        new["after"]["entered_zones"],
        serde_json::json!(["left"]),
        "{new}"
    );
    let id = new["after"]["id"].as_str().unwrap_or_default().to_owned();
    bus.wait_for("door/left/person", "one person in the zone", |p| p == "1");

    // Its snapshot: on disk (annotated and clean), retained per label, and said so.
    let with_snapshot = json(&bus.wait_for("door/objects", "has_snapshot", |p| {
        let o = json(p);
        o["after"]["id"] == id.as_str() && o["after"]["has_snapshot"] == true
    }));
    assert_eq!(with_snapshot["type"], "update", "{with_snapshot}");
    let snap_dir = state_dir.join("snapshots").join("door");
    let annotated = std::fs::read(snap_dir.join(format!("{id}.jpg"))).expect("snapshot file");
    assert_eq!(&annotated[..2], &[0xFF, 0xD8], "a JPEG");
    let clean = image::open(snap_dir.join(format!("{id}-clean.jpg"))).expect("clean crop");
    assert!(
        clean.width() < CANVAS.0 && clean.height() <= CANVAS.1,
        "a crop, not the frame: {}x{}",
        clean.width(),
        clean.height()
    );
    let retained = retained_bytes(port, &format!("{BASE}/door/person/snapshot"));
    assert_eq!(retained.get(..2), Some(&[0xFF, 0xD8][..]), "retained JPEG");

    // The cameraman's turn: tracked on `door` (he has an id and is counted in the frame) but
    // never announced, since he never enters `left`.
    let objects_seen = RefCell::new(Vec::new());
    bus.wait_for("door/detections", "the cameraman tracked", |p| {
        let d = json(p);
        d["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| on_right(&i["box"]) && i["id"].is_string()))
    });
    bus.wait_for("door/left/person", "the zone empty again", |p| p == "0");
    // Through the rest of his turn and the astronaut's next `new`, nothing on the right.
    bus.wait_for("door/objects", "the astronaut's next `new`", |p| {
        let o = json(p);
        objects_seen.borrow_mut().push(o.clone());
        o["type"] == "new" && on_left(&o["after"]["box"]) && o["after"]["id"] != id.as_str()
    });
    let seen = objects_seen.into_inner();
    assert!(
        seen.iter().all(|o| !on_right(&o["after"]["box"])),
        "an object outside the required zone was announced: {seen:?}"
    );

    // `yard` masks the cameraman: in `detections`, but no object id.
    let d = json(
        &bus.wait_for("yard/detections", "the masked cameraman", |p| {
            json(p)["items"]
                .as_array()
                .is_some_and(|i| i.iter().any(|i| on_right(&i["box"])))
        }),
    );
    let items = d["items"].as_array().cloned().unwrap_or_default();
    assert!(
        items
            .iter()
            .filter(|i| on_right(&i["box"]))
            .all(|i| i["id"].is_null()),
        "{d}"
    );
    let d = json(
        &bus.wait_for("yard/detections", "the astronaut on yard", |p| {
            json(p)["items"]
                .as_array()
                .is_some_and(|i| i.iter().any(|i| on_left(&i["box"]) && i["id"].is_string()))
        }),
    );
    assert!(d["items"].is_array());

    send_signal(&daemon, "-TERM");
    bus.wait_for("available", "`stopped`", |p| p == "stopped");
    assert_eq!(
        wait_exit(&mut daemon, "adaptd", common::mosquitto::WAIT),
        Some(0)
    );
}

#[test]
fn bad_zones_are_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("adaptd.toml");
    std::fs::write(
        &path,
        "[model]\nname = \"nanodet-m\"\n\
         [[cameras]]\nname = \"door\"\nrequired_zones = [\"porch\"]\n\
         source = { kind = \"dir\", path = \"/tmp\" }\n\
         masks = [[[0.0, 0.0], [1.2, 0.0], [0.5, 0.5]]]\n\
         [[cameras.zones]]\nname = \"step\"\npoints = [[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]\n\
         [[cameras.zones]]\nname = \"step\"\npoints = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5]]\n\
         [[cameras.zones]]\nname = \"state\"\npoints = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5]]\n",
    )
    .expect("write config");
    let out = run(&["check-config", path.to_str().unwrap_or_default()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    for needle in [
        "cross or touch",
        "must be unique",
        "reserved",
        "mask 0",
        "\"porch\"",
    ] {
        assert!(err.contains(needle), "no {needle:?} in: {err}");
    }
}
