//! The camera owner's feedback loop end to end, on the real binary, a real Mosquitto and the
//! real NanoDet + MobileNetV2: a detection called a false positive stops coming back, and a
//! true object of the same class is still announced.
//!
//! The scene is two people taking turns on one camera: the astronaut on the left (a real
//! person) and the cameraman on the right, who plays the poster on the wall the detector keeps
//! calling a person. Each is pasted at a slightly different place in each frame, so the crops
//! the filter judges later are not the ones it was taught with.

mod common;

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use common::mosquitto::{json, Bus, TestBroker};
use common::turns::{on_left, on_right, two_person_frames};
use common::*;

const BASE: &str = "adaptd/testfp";
fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[test]
fn a_false_positive_is_gone_after_feedback_and_a_true_person_stays() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let frames = two_person_frames(tmp.path());
    let broker = TestBroker::start();
    let port = broker.port();
    let mut bus = Bus::subscribe(
        port,
        BASE,
        &[
            "available",
            "training",
            "reply",
            "door/detections",
            "door/objects",
        ],
    );
    let state_dir = tmp.path().join("state");
    let config = tmp.path().join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state_dir:?}\n\
             [model]\nname = \"nanodet-m\"\nsublabel_model = \"mobilenetv2\"\n\
             [track]\nmax_lost_s = 1.0\n\
             [[cameras]]\nname = \"door\"\nscore_threshold = 0.3\n\
             source = {{ kind = \"dir\", path = {frames:?}, fps = 4.0, loop = true }}\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testfp\"\n"
        ),
    )
    .expect("write config");
    let mut daemon = start_daemon(&config);
    bus.wait_for("available", "`online`", |p| p == "online");

    // The astronaut comes first (frames are read in name order), then the "poster".
    let astronaut = json(&bus.wait_for("door/objects", "the astronaut's `new`", |p| {
        let o = json(p);
        o["type"] == "new" && o["after"]["label"] == "person" && on_left(&o["after"]["box"])
    }));
    assert_eq!(astronaut["after"]["false_positive"], false, "{astronaut}");
    let poster = json(&bus.wait_for("door/objects", "the poster's `new`", |p| {
        let o = json(p);
        o["type"] == "new" && o["after"]["label"] == "person" && on_right(&o["after"]["box"])
    }));
    let poster_id = poster["after"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // Bad feedback gets a reply that says what is wrong, and changes nothing.
    let r = bus.ask(
        "cmd/false_positive",
        r#"{"id": "f0", "object": "1.000-nobody"}"#,
    );
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap_or("").contains("no object"),
        "{r}"
    );
    let r = bus.ask("cmd/false_positive", r#"{"id": "f1"}"#);
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("say which object"),
        "{r}"
    );

    // Labeled with its own class, the astronaut is filed by hand as a true person for the
    // filter (not as a name for the sub-label head).
    let astronaut_id = astronaut["after"]["id"].as_str().unwrap_or_default();
    let r = bus.ask(
        "cmd/label",
        &format!(r#"{{"id": "f1b", "label": "person", "object": "{astronaut_id}"}}"#),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["label"], "person", "{r}");

    // `label none` on the object is the feedback: the poster's crop is filed as `none` under
    // the person filter, the astronaut as the true side, and the filter trains.
    let r = bus.ask(
        "cmd/label",
        &format!(r#"{{"id": "f2", "label": "none", "object": "{poster_id}"}}"#),
    );
    assert_eq!(r["ok"], true, "{r}");
    let filed = &r["result"];
    assert_eq!(filed["class"], "person", "{r}");
    assert_eq!(filed["sample"]["label"], "none", "{r}");
    assert!(filed["true_examples"].as_u64() >= Some(1), "{r}");
    assert_eq!(filed["training"], "started", "{r}");
    assert!(
        filed["counts"]["person"].as_u64() >= Some(2),
        "by hand and harvested: {r}"
    );
    assert_eq!(filed["counts"]["none"], 1, "{r}");
    let marked = json(
        &bus.wait_for("door/objects", "the poster marked false", |p| {
            let o = json(p);
            o["after"]["id"] == poster_id.as_str() && o["after"]["false_positive"] == true
        }),
    );
    assert!(
        marked["type"] == "update" || marked["type"] == "end",
        "{marked}"
    );
    let t = json(&bus.wait_for("training", "the filter's run", |p| {
        let t = json(p);
        t["status"] == "finished" || t["status"] == "failed"
    }));
    assert_eq!(t["model"], "false-positives/person", "{t}");
    assert_eq!(t["deployed"], true, "{t}");
    let deployed_at = now_s();

    // Two more turns of each: the poster is seen (suppressed in `detections`) but is never
    // an object again; the astronaut is announced each time.
    let announced = RefCell::new(Vec::new());
    for turn in 0..2 {
        let d = json(
            &bus.wait_for("door/detections", "the poster, suppressed", |p| {
                let d = json(p);
                d["time_unix_ms"].as_f64().unwrap_or(0.0) / 1000.0 > deployed_at + 0.5
                    && d["items"].as_array().is_some_and(|i| {
                        i.iter()
                            .any(|i| on_right(&i["box"]) && i["suppressed"] == true)
                    })
            }),
        );
        assert!(
            d["items"].as_array().is_some_and(|i| i
                .iter()
                .all(|i| !on_right(&i["box"]) || i["suppressed"] == true)),
            "turn {turn}: {d}"
        );
        bus.wait_for("door/objects", "the astronaut announced again", |p| {
            let o = json(p);
            let fresh = o["after"]["start_time"].as_f64().unwrap_or(0.0) > deployed_at + 0.5;
            if fresh {
                announced.borrow_mut().push(o.clone());
            }
            fresh && o["type"] == "new" && on_left(&o["after"]["box"])
        });
    }
    let announced = announced.into_inner();
    assert!(
        announced.iter().all(|o| !on_right(&o["after"]["box"])),
        "the poster came back: {announced:?}"
    );
    assert!(
        announced
            .iter()
            .all(|o| o["after"]["false_positive"] == false),
        "{announced:?}"
    );

    send_signal(&daemon, "-TERM");
    bus.wait_for("available", "`stopped`", |p| p == "stopped");
    assert_eq!(
        wait_exit(&mut daemon, "adaptd", common::mosquitto::WAIT),
        Some(0)
    );
    // The event store says the poster was a false positive.
    let out = adaptd()
        .args(["events", "--state-dir"])
        .arg(&state_dir)
        .args(["show", &poster_id])
        .output()
        .expect("adaptd events show");
    assert!(
        stdout(&out).contains("\"false_positive\": true"),
        "{}",
        stdout(&out)
    );
}
