//! `adaptd run` end to end: a real Mosquitto on a free loopback port, the real binary with
//! real models replaying a folder of photo crops, driven and observed over MQTT with the
//! `mosquitto_pub` / `mosquitto_sub` clients. Needs the Mosquitto broker and clients
//! (Debian: `apt-get install mosquitto mosquitto-clients`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mosquitto::{json, retained_raw, Bus, TestBroker, WAIT};
use common::*;
use serde_json::Value;

const BASE: &str = "adaptd/testcam";
/// The one camera (or microphone) of a legacy single-`[source]` configuration.
const CAM: &str = "default";

/// The camera's figures in a `stats` payload.
fn cam_stats(p: &str) -> Value {
    json(p)["cameras"][CAM].clone()
}

/// Sample counts per label of a device `state`, summed over its learners.
fn samples_of(state: &Value) -> Value {
    let mut counts = serde_json::Map::new();
    for learner in state["learners"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for (label, n) in learner["samples"].as_object().into_iter().flatten() {
            let sum =
                counts.get(label).and_then(Value::as_u64).unwrap_or(0) + n.as_u64().unwrap_or(0);
            counts.insert(label.clone(), sum.into());
        }
    }
    Value::Object(counts)
}

/// The device's text topics and the legacy camera's, as one mailbox.
fn bus(port: u16) -> Bus {
    Bus::subscribe(
        port,
        BASE,
        &[
            "available",
            "state",
            "training",
            "reply",
            "stats",
            "default/state",
            "default/detections",
            "default/events",
            "default/objects",
        ],
    )
}

/// SIGTERM: the daemon publishes `stopped` (retained) and exits with code 0.
fn stop(daemon: &mut Guard, bus: &mut Bus) {
    send_signal(daemon, "-TERM");
    bus.wait_for("available", "`stopped`", |p| p == "stopped");
    assert_eq!(wait_exit(daemon, "adaptd after SIGTERM", WAIT), Some(0));
}

/// Crops of a photo at a few offsets and scales, as JPEG files: distinct samples of a label.
fn write_crops(photo: &str, n: usize, dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let img = image::open(image(photo)).expect("photo").to_rgb8();
    let (w, h) = img.dimensions();
    (0..n)
        .map(|i| {
            let f = 0.6 + 0.05 * (i % 5) as f32;
            let (cw, ch) = ((w as f32 * f) as u32, (h as f32 * f) as u32);
            let (x, y) = ((w - cw) * (i as u32 % 3) / 2, (h - ch) * (i as u32 % 2));
            let c = image::imageops::crop_imm(&img, x, y, cw, ch).to_image();
            let p = dir.join(format!("{prefix}{i:02}.jpg"));
            c.save(&p).expect("write crop");
            p
        })
        .collect()
}

/// Crops around `bbox` (`[x1, y1, x2, y2]`, the detector's box for the subject) with a few
/// pixels of jitter, as JPEG files: what a detector's sub-label samples look like.
fn write_box_crops(
    photo: &str,
    bbox: [u32; 4],
    n: usize,
    dir: &Path,
    prefix: &str,
) -> Vec<PathBuf> {
    let img = image::open(image(photo)).expect("photo").to_rgb8();
    let (w, h) = img.dimensions();
    (0..n)
        .map(|i| {
            let j = 4 * i as u32;
            let x1 = bbox[0].saturating_sub(j % 12);
            let y1 = bbox[1] + j % 9;
            let x2 = (bbox[2] + j % 10).min(w);
            let y2 = bbox[3].saturating_sub(j % 7).min(h);
            let c = image::imageops::crop_imm(&img, x1, y1, x2 - x1, y2 - y1).to_image();
            let p = dir.join(format!("{prefix}{i:02}.jpg"));
            c.save(&p).expect("write crop");
            p
        })
        .collect()
}

/// A temporary directory with `frames/` (what the source replays) and `samples/` in it.
fn workdirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (frames, samples) = (tmp.path().join("frames"), tmp.path().join("samples"));
    std::fs::create_dir_all(&frames).expect("mkdir");
    std::fs::create_dir_all(&samples).expect("mkdir");
    (tmp, frames, samples)
}

/// Samples each label holds in the store, read by the CLI from the state directory.
fn stored_counts(state_dir: &Path, model: &str) -> Value {
    let o = adaptd()
        .args([
            "samples",
            "list",
            "--format",
            "json",
            "--model",
            model,
            "--state-dir",
        ])
        .arg(state_dir)
        .output()
        .expect("run adaptd samples list");
    assert!(o.status.success(), "{}", stderr(&o));
    let list = json(&stdout(&o));
    let mut counts = serde_json::Map::new();
    for l in list["labels"].as_array().cloned().unwrap_or_default() {
        let n = l["train"].as_u64().unwrap_or(0) + l["holdout"].as_u64().unwrap_or(0);
        counts.insert(l["label"].as_str().unwrap_or("?").to_owned(), n.into());
    }
    Value::Object(counts)
}

#[test]
fn daemon_runs_learns_over_mqtt_and_stops_cleanly() {
    classifier_daemon("");
}

/// The same on the onnxruntime backend.
#[cfg(feature = "onnxruntime")]
#[test]
fn classifier_daemon_on_onnxruntime() {
    on_onnxruntime("classifier_daemon_on_onnxruntime", classifier_daemon);
}

/// Runs `daemon_test` with `[model]` lines selecting the onnxruntime backend; skipped, with
/// the reason printed, when no library is found outside CI.
#[cfg(feature = "onnxruntime")]
fn on_onnxruntime(test: &str, daemon_test: fn(&str)) {
    if let Some(lib) = ort_library_or_skip(test) {
        daemon_test(&format!(
            "backend = \"onnxruntime\"\nonnxruntime_library = {:?}\n",
            lib.display().to_string()
        ));
    }
}

/// The engine the retained `state` must name for these `[model]` lines.
fn backend_of(model_keys: &str) -> &'static str {
    if model_keys.contains("onnxruntime") {
        "onnxruntime"
    } else {
        "tract"
    }
}

/// `model_keys`: extra `[model]` lines (the backend); the model is the default one.
fn classifier_daemon(model_keys: &str) {
    let (tmp, frames, samples) = workdirs();
    write_crops("chelsea.png", 3, &frames, "a");
    write_crops("coffee.png", 3, &frames, "b");
    let cats = write_crops("chelsea.png", 6, &samples, "cat");
    let coffees = write_crops("coffee.png", 6, &samples, "coffee");

    let broker = TestBroker::start();
    let port = broker.port();
    let mut bus = self::bus(port);
    let config = tmp.path().join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\
             [model]\n{model_keys}\
             [source]\nkind = \"dir\"\npath = {frames:?}\nfps = 5.0\nloop = true\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testcam\"\n\
             max_packet_bytes = 1048576\nstats_interval_secs = 1\n",
            state = tmp.path().join("state"),
        ),
    )
    .expect("write config");
    let mut daemon = start_daemon(&config);

    bus.wait_for("available", "`online`", |p| p == "online");
    let d = json(&bus.wait_for("default/detections", "detections", |p| {
        json(p)["items"].is_array()
    }));
    assert!(d["frame_id"].is_u64(), "{d}");
    bus.wait_for("stats", "stats", |p| cam_stats(p)["fps"].is_number());

    // Labeled images over MQTT.
    for (label, files) in [("cat", &cats), ("coffee", &coffees)] {
        for f in files.iter() {
            bus.publish_file(&format!("samples/{label}"), f);
            let r = bus.reply("a sample reply", |v| v["cmd"] == "sample");
            assert_eq!(r["ok"], true, "{r}");
            assert_eq!(r["result"]["label"], label, "{r}");
        }
    }
    // The state follows the last reply closely, not necessarily before it.
    let mut state = bus.retained("state");
    for _ in 0..20 {
        if state["samples_total"] == 12 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        state = bus.retained("state");
    }
    assert_eq!(state["samples_total"], 12, "{state}");
    assert_eq!(samples_of(&state)["cat"], 6, "{state}");
    assert_eq!(state["cameras"][CAM]["paused"], false, "{state}");
    assert_eq!(
        state["cameras"][CAM]["backend"],
        backend_of(model_keys),
        "{state}"
    );

    // Train: the first head is deployed and swapped in while frames keep flowing.
    let r = bus.ask("cmd/train", r#"{"id": "t1"}"#);
    assert_eq!(r["ok"], true, "{r}");
    let t = json(&bus.wait_for("training", "a finished training", |p| {
        json(p)["status"] == "finished"
    }));
    assert_eq!(t["deployed"], true, "{t}");
    let version = t["version"].clone();
    let d = json(
        &bus.wait_for("default/detections", "detections with a head label", |p| {
            json(p)["items"][0]["head"].is_object()
        }),
    );
    let head = &d["items"][0]["head"];
    assert_eq!(head["head_version"], version, "{d}");
    assert!(head["label"] == "cat" || head["label"] == "coffee", "{d}");

    // Bad input: each gets an error reply, and the daemon keeps going.
    bus.publish("cmd/train", "{not json");
    let r = bus.reply("a malformed-JSON reply", |v| v["cmd"] == "train");
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap_or("").contains("JSON"), "{r}");
    bus.publish("cmd/frobnicate", "{}");
    let r = bus.reply("an unknown-verb reply", |v| v["cmd"] == "frobnicate");
    assert_eq!(r["ok"], false, "{r}");
    bus.publish_file("samples/Cat", &cats[0]);
    let r = bus.reply("a bad-label reply", |v| v["cmd"] == "sample");
    assert_eq!(r["ok"], false, "{r}");
    bus.publish("samples/cat", "this is not an image");
    let r = bus.reply("an undecodable-image reply", |v| v["cmd"] == "sample");
    assert_eq!(r["ok"], false, "{r}");
    let big = tmp.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 2 << 20]).expect("write big payload");
    bus.publish_file("samples/cat", &big);
    let r = bus.reply("an oversized-message reply", |v| {
        v["ok"] == false
            && v["error"]
                .as_str()
                .unwrap_or("")
                .contains("max_packet_bytes")
    });
    assert!(r["cmd"].is_null(), "{r}");
    let r = bus.ask("cmd/status", r#"{"id": 2}"#);
    assert_eq!(r["result"]["samples_total"], 12, "{r}");

    // Other commands, each answered.
    let r = bus.ask("cmd/label", r#"{"id": "l1", "label": "cat"}"#);
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["result"]["id"].is_i64(), "{r}");
    let r = bus.ask(
        "cmd/label",
        r#"{"id": "l2", "label": "cat", "detection": 0}"#,
    );
    assert_eq!(r["ok"], false, "a classifier has no detections: {r}");
    let r = bus.ask("cmd/snapshot", r#"{"id": "s1"}"#);
    assert!(r["result"]["bytes"].as_u64().unwrap_or(0) > 0, "{r}");
    let r = bus.ask("cmd/rollback", r#"{"id": "r1", "version": "previous"}"#);
    assert_eq!(r["ok"], false, "only one head exists: {r}");
    let r = bus.ask("cmd/pause", r#"{"id": "p1"}"#);
    assert_eq!(r["result"]["paused"], true, "{r}");
    let r = bus.ask("cmd/resume", r#"{"id": "p2"}"#);
    assert_eq!(r["result"]["paused"], false, "{r}");
    bus.wait_for("default/detections", "detections after the errors", |_| {
        true
    });
    assert!(
        daemon.0.try_wait().expect("try_wait").is_none(),
        "the daemon exited"
    );

    // SIGTERM: `stopped` (retained) and exit code 0.
    stop(&mut daemon, &mut bus);
}

/// A detector with sub-labels: boxes, events, labeling a detection, retraining triggered by
/// new samples, live settings, `forget`, SIGHUP with a valid and an invalid file.
#[test]
fn detector_daemon_sublabels_retrains_and_reloads() {
    detector_daemon("");
}

/// The same on the onnxruntime backend (both the detector and the crop model).
#[cfg(feature = "onnxruntime")]
#[test]
fn detector_daemon_on_onnxruntime() {
    on_onnxruntime("detector_daemon_on_onnxruntime", detector_daemon);
}

/// `model_keys`: extra `[model]` lines (the backend).
fn detector_daemon(model_keys: &str) {
    let (tmp, frames, samples) = workdirs();
    // The person nanodet-m finds in each photo, cropped as a sub-label sample would be.
    write_crops("astronaut.png", 2, &frames, "f");
    let eileen = write_box_crops("astronaut.png", [15, 14, 364, 508], 4, &samples, "e");
    let other = write_box_crops("camera.png", [4, 68, 320, 512], 6, &samples, "o");

    let broker = TestBroker::start();
    let port = broker.port();
    let mut bus = self::bus(port);
    let state_dir = tmp.path().join("state");
    let config = tmp.path().join("adaptd.toml");
    // The motion gate is off: the two replayed frames are nearly alike, so once its
    // background has learned them it would analyse one frame per keep-alive (10 s) and naming
    // a new object would take minutes (the gate and the tracker's hold have tests of their own).
    let write_config = |score: &str| {
        std::fs::write(
            &config,
            format!(
                "state_dir = {state_dir:?}\n\
                 [model]\nname = \"nanodet-m\"\nsublabel_model = \"mobilenetv2\"\n{model_keys}\
                 [detect]\nscore_threshold = {score}\nsublabel_classes = [\"person\"]\n\
                 [consensus]\nn = 2\nm = 3\nmin_score = 0.3\n\
                 [track]\nmax_lost_s = 2.0\nmax_occluded_s = 2.0\n\
                 [train]\nmin_new_samples = 13\n\
                 [motion]\nenabled = false\n\
                 [source]\nkind = \"dir\"\npath = {frames:?}\nfps = 4.0\nloop = true\n\
                 [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testcam\"\n\
                 max_packet_bytes = 1048576\nstats_interval_secs = 1\n"
            ),
        )
        .expect("write config")
    };
    write_config("0.3");
    let mut daemon = start_daemon(&config);

    bus.wait_for("available", "`online`", |p| p == "online");
    let d = json(&bus.wait_for("default/detections", "a person box", |p| {
        json(p)["items"][0]["label"] == "person"
    }));
    let b = &d["items"][0]["box"];
    assert!(
        b[2].as_f64() > b[0].as_f64() && b[3].as_f64() > b[1].as_f64(),
        "{d}"
    );
    assert!(d["items"][0]["head"].is_null(), "no head yet: {d}");
    let e = json(
        &bus.wait_for("default/events", "a `new` event for the person", |p| {
            json(p)["type"] == "new" && json(p)["track"] == "person"
        }),
    );
    assert_eq!(e["track"], "person", "{e}");
    assert_eq!(
        e["after"], "person",
        "without a head, the detector's class: {e}"
    );

    // Labeling: a detector wants the box; the box of the latest frame becomes a sample.
    let r = bus.ask("cmd/label", r#"{"id": "l0", "label": "eileen"}"#);
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap_or("").contains("detection"),
        "{r}"
    );
    let r = bus.ask(
        "cmd/label",
        r#"{"id": "l1", "label": "eileen", "detection": 0}"#,
    );
    assert_eq!(r["ok"], true, "{r}");
    let r = bus.ask(
        "cmd/label",
        r#"{"id": "l2", "label": "eileen", "detection": 7}"#,
    );
    assert_eq!(r["ok"], false, "{r}");

    // Tracked objects: the person's box carries its object id, `objects` says `new`, and
    // labels can name the object or a box of a frame seen earlier.
    let d = json(
        &bus.wait_for("default/detections", "a person with an object id", |p| {
            json(p)["items"][0]["id"].is_string()
        }),
    );
    let first = d["items"][0]["id"].as_str().unwrap_or_default().to_owned();
    let frame_id = d["frame_id"].as_u64().unwrap_or_default();
    let (w, h) = (
        d["width"].as_u64().unwrap_or(0),
        d["height"].as_u64().unwrap_or(0),
    );
    let o = json(&bus.wait_for("default/objects", "the person's `new`", |p| {
        json(p)["after"]["label"] == "person"
    }));
    assert_eq!(o["type"], "new", "{o}");
    assert_eq!(o["after"]["id"], first.as_str(), "{o}");
    assert!(
        o["before"].is_null() && o["after"]["sub_label"].is_null(),
        "{o}"
    );
    let r = bus.ask(
        "cmd/label",
        &format!(r#"{{"id": "l3", "label": "eileen", "object": "{first}"}}"#),
    );
    assert_eq!(r["ok"], true, "{r}");
    let r = bus.ask(
        "cmd/label",
        &format!(
            r#"{{"id": "l4", "label": "eileen", "frame_id": {frame_id}, "box": [5, 5, {}, {}]}}"#,
            w - 5,
            h - 5
        ),
    );
    assert_eq!(r["ok"], true, "a box of a frame seen earlier: {r}");
    let r = bus.ask(
        "cmd/label",
        r#"{"id": "l5", "label": "eileen", "frame_id": 99999999, "detection": 0}"#,
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("no processed frame has that frame_id"),
        "{r}"
    );
    let r = bus.ask(
        "cmd/label",
        r#"{"id": "l6", "label": "eileen", "object": "1.000-nobody"}"#,
    );
    assert!(
        r["error"].as_str().unwrap_or("").contains("no object"),
        "{r}"
    );

    // 10 more samples make 13 new ones: [train].min_new_samples starts a run by itself.
    for (label, files) in [("eileen", &eileen), ("someone", &other)] {
        for f in files.iter() {
            bus.publish_file(&format!("samples/{label}"), f);
            let r = bus.reply("a sample reply", |v| v["cmd"] == "sample");
            assert_eq!(r["ok"], true, "{r}");
        }
    }
    let t = json(&bus.wait_for("training", "a scheduled start", |p| {
        json(p)["status"] == "started"
    }));
    assert_eq!(t["trigger"], "new samples", "{t}");
    let t = json(&bus.wait_for("training", "a finished run", |p| {
        json(p)["status"] == "finished"
    }));
    assert_eq!(t["deployed"], true, "{t}");
    let d = json(&bus.wait_for("default/detections", "the sub-label", |p| {
        json(p)["items"][0]["head"]["label"] == "eileen"
    }));
    assert_eq!(d["items"][0]["label"], "person", "{d}");
    assert_eq!(d["items"][0]["head"]["head_version"], t["version"], "{d}");
    let e = json(
        // Other classes (nanodet sometimes sees a `clock` on the suit) have tracks of their
        // own: wait for the person's.
        &bus.wait_for(
            "default/events",
            "an `update` of the person to the sub-label",
            |p| json(p)["type"] == "update" && json(p)["track"] == "person",
        ),
    );
    assert_eq!(
        (e["before"].clone(), e["after"].clone()),
        ("person".into(), "eileen".into()),
        "{e}"
    );
    let r = bus.ask("cmd/snapshot", r#"{"id": "s1"}"#);
    assert!(r["result"]["bytes"].as_u64().unwrap_or(0) > 1000, "{r}");

    // The name is the object's until it ends; `objects` said so once, and `events` has it.
    let o = json(&bus.wait_for("default/objects", "the person named", |p| {
        json(p)["after"]["sub_label"][0] == "eileen"
    }));
    assert_eq!(o["type"], "update", "{o}");
    let named = o["after"]["id"].as_str().unwrap_or_default().to_owned();
    let r = bus.ask("cmd/events", r#"{"id": "e1", "label": "person"}"#);
    assert!(
        r["result"]["events"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["id"] == named.as_str())),
        "{r}"
    );

    // Live settings: an unknown threshold of 1 rejects every sub-label, so the next object
    // (the camera paused for 2.6 s, longer than the config's max_lost_s and max_occluded_s of
    // 2 s, ends this one) gets no name; fps caps processing. Each `set` is sent while the
    // camera is paused, so it applies to the next object only (the one before ends unseen).
    let new_object = |bus: &mut Bus, after: &str, set: &str| {
        let r = bus.ask("cmd/pause", r#"{"id": "p1"}"#);
        assert_eq!(r["ok"], true, "{r}");
        let r = bus.ask("cmd/set", set);
        assert!(
            r["result"]["applied"]
                .as_array()
                .is_some_and(|a| a.contains(&"unknown_threshold".into())),
            "{r}"
        );
        std::thread::sleep(Duration::from_millis(2600));
        let r = bus.ask("cmd/resume", r#"{"id": "p2"}"#);
        assert_eq!(r["ok"], true, "{r}");
        let end = json(&bus.wait_for("default/objects", "the object's end", |p| {
            json(p)["type"] == "end" && json(p)["after"]["id"] == after
        }));
        let ended_at = end["after"]["end_time"].as_f64().unwrap_or(f64::INFINITY);
        assert!(ended_at.is_finite(), "{end}");
        // A person confirmed after the resume (an older `new`, the faint second person the
        // detector sometimes finds on the astronaut's arm, may still be in the queue); it may
        // have been first seen in the last frame before the pause.
        let o = json(&bus.wait_for("default/objects", "a new person", |p| {
            let v = json(p);
            v["type"] == "new"
                && v["after"]["label"] == "person"
                && v["after"]["start_time"]
                    .as_f64()
                    .is_some_and(|t| t >= ended_at)
        }));
        o["after"]["id"].as_str().unwrap_or_default().to_owned()
    };
    let stranger = new_object(
        &mut bus,
        &named,
        r#"{"id": "u1", "unknown_threshold": 1.0}"#,
    );
    for _ in 0..12 {
        let d = json(
            &bus.wait_for("default/detections", "the unnamed person", |p| {
                json(p)["items"][0]["label"] == "person"
            }),
        );
        assert!(d["items"][0]["head"].is_null(), "no name above 1.0: {d}");
    }
    new_object(
        &mut bus,
        &stranger,
        r#"{"id": "u2", "unknown_threshold": 0, "fps": 2}"#,
    );
    bus.wait_for("default/detections", "a known sub-label again", |p| {
        json(p)["items"][0]["head"]["label"] == "eileen"
    });
    bus.wait_for("stats", "throttled frames", |p| {
        cam_stats(p)["throttled_frames"].as_u64().unwrap_or(0) > 0
    });

    // forget: the label's samples go, from the store and from the state.
    let r = bus.ask("cmd/forget", r#"{"id": "f1", "label": "someone"}"#);
    assert_eq!(r["result"]["removed"], 6, "{r}");
    let st = bus.retained_where("state", "no `someone`", |s| {
        samples_of(s)["someone"].is_null()
    });
    assert_eq!(samples_of(&st)["eileen"], 7, "{st}");
    let backend = backend_of(model_keys);
    assert_eq!(st["cameras"][CAM]["backend"], backend, "{st}");
    assert_eq!(st["cameras"][CAM]["embedding_backend"], backend, "{st}");

    // SIGHUP: a new score threshold applies live; an invalid file keeps the running config.
    write_config("0.99");
    send_signal(&daemon, "-HUP");
    bus.wait_for("default/detections", "no box above 0.99", |p| {
        json(p)["items"].as_array().is_some_and(|a| a.is_empty())
    });
    std::fs::write(&config, "[model]\nbatch = \"many\"\n").expect("write bad config");
    send_signal(&daemon, "-HUP");
    std::thread::sleep(Duration::from_secs(1));
    bus.wait_for(
        "default/detections",
        "frames still flowing after a bad reload",
        |p| json(p)["items"].as_array().is_some_and(|a| a.is_empty()),
    );
    assert!(
        daemon.0.try_wait().expect("try_wait").is_none(),
        "a bad reload stopped the daemon"
    );
    write_config("0.3");
    send_signal(&daemon, "-HUP");
    bus.wait_for(
        "default/detections",
        "boxes again after a good reload",
        |p| json(p)["items"][0]["label"] == "person",
    );

    send_signal(&daemon, "-INT");
    bus.wait_for("available", "`stopped`", |p| p == "stopped");
    assert_eq!(wait_exit(&mut daemon, "adaptd", WAIT), Some(0));
    let stored = stored_counts(&state_dir, "mobilenetv2");
    assert_eq!(
        stored,
        serde_json::json!({"eileen": 7}),
        "store after the run"
    );
    // The objects outlive the daemon: `adaptd events` reads them from the state dir.
    let out = adaptd()
        .args(["events", "--state-dir"])
        .arg(&state_dir)
        .args(["list", "--label", "person", "--format", "json"])
        .output()
        .expect("adaptd events");
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).expect("events json");
    let ids: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(ids.len() >= 3 && ids.contains(&named.as_str()), "{listed}");
    let ended = listed
        .as_array()
        .and_then(|a| a.iter().find(|e| e["id"] == named.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ended["sub_label"][0], "eileen", "{ended}");
    assert!(
        ended["end_time"].as_f64() > ended["start_time"].as_f64(),
        "{ended}"
    );
    let out = adaptd()
        .args(["events", "--state-dir"])
        .arg(&state_dir)
        .args(["show", &stranger])
        .output()
        .expect("adaptd events show");
    assert!(
        stdout(&out).contains("\"sub_label\": null"),
        "{}",
        stdout(&out)
    );
}

/// The broker goes away and comes back: the daemon reconnects, republishes its retained
/// state, takes commands again, and every acknowledged sample is in the store. Then kill -9:
/// the broker publishes the last will, `offline`.
#[test]
fn daemon_survives_a_broker_restart_and_kill_9_leaves_offline() {
    let (tmp, frames, samples) = workdirs();
    write_crops("coffee.png", 2, &frames, "f");
    let cats = write_crops("chelsea.png", 8, &samples, "cat");

    let mut broker = TestBroker::start();
    let port = broker.port();
    let mut bus = self::bus(port);
    let state_dir = tmp.path().join("state");
    let config = tmp.path().join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state_dir:?}\n\
             [source]\nkind = \"dir\"\npath = {frames:?}\nfps = 4.0\nloop = true\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testcam\"\n\
             max_packet_bytes = 1048576\nstats_interval_secs = 1\n"
        ),
    )
    .expect("write config");
    let mut daemon = start_daemon(&config);
    bus.wait_for("available", "`online`", |p| p == "online");
    for f in &cats[..4] {
        bus.publish_file("samples/cat", f);
        let r = bus.reply("a sample reply", |v| v["cmd"] == "sample");
        assert_eq!(r["ok"], true, "{r}");
    }

    // kill -9 the broker (no persistence: its retained messages die with it), then bring
    // a new one up on the same port.
    drop(bus);
    broker.stop();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    let mut bus = self::bus(port);
    bus.wait_for(
        "default/detections",
        "detections after the reconnect",
        |_| true,
    );
    let st = bus.retained_where("state", "4 samples, republished", |s| {
        s["samples_total"] == 4
    });
    assert_eq!(samples_of(&st)["cat"], 4, "{st}");
    // Resubscribed: samples and commands are taken again.
    for f in &cats[4..] {
        bus.publish_file("samples/cat", f);
        let r = bus.reply("a sample reply after the reconnect", |v| {
            v["cmd"] == "sample"
        });
        assert_eq!(r["ok"], true, "{r}");
    }
    let r = bus.ask("cmd/status", r#"{"id": "st"}"#);
    assert!(
        r["result"]["cameras"][CAM]["source_state"].is_object(),
        "{r}"
    );
    bus.wait_for("stats", "a reconnect counted", |p| {
        json(p)["mqtt_reconnects"].as_u64().unwrap_or(0) >= 1
    });

    // kill -9: no `stopped`, the broker fires the will.
    send_signal(&daemon, "-KILL");
    wait_exit(&mut daemon, "adaptd after kill -9", WAIT);
    bus.wait_for("available", "the will, `offline`", |p| p == "offline");
    assert_eq!(
        stored_counts(&state_dir, "mobilenetv2"),
        serde_json::json!({"cat": 8})
    );
}

/// The README's first command: demo/adaptd.toml (directory replay of demo/frames, the
/// embedded broker), driven by `mosquitto_pub`/`mosquitto_sub` and shown by `adaptd watch`.
/// Only the state directory, the frames' absolute path and the broker's port are changed.
#[test]
fn demo_config_runs_on_the_embedded_broker_and_watch_shows_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let demo = std::fs::read_to_string(repo().join("demo/adaptd.toml")).expect("demo config");
    assert!(demo.contains("url = \"embedded\""), "{demo}");
    let config = tmp.path().join("adaptd.toml");
    let text = demo
        .replace(
            "state_dir = \"demo/state\"",
            &format!("state_dir = {:?}", tmp.path().join("state")),
        )
        .replace(
            "path = \"demo/frames\"",
            &format!("path = {:?}", repo().join("demo/frames")),
        )
        .replace(
            "device_id = \"demo\"",
            &format!("device_id = \"testcam\"\nembedded_bind = \"127.0.0.1:{port}\""),
        );
    std::fs::write(&config, text).expect("write config");
    let mut daemon = start_daemon(&config);
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the embedded broker never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut bus = self::bus(port);
    bus.wait_for("default/detections", "detections", |p| {
        json(p)["items"][0]["label"].is_string()
    });
    assert_eq!(
        bus.retained("state")["cameras"][CAM]["model"],
        "mobilenetv2"
    );

    // The README's teaching example: four samples start a training run by themselves.
    for (label, file) in [
        ("people", "03-astronaut.jpg"),
        ("people", "05-camera.jpg"),
        ("things", "02-coffee.jpg"),
        ("things", "04-rocket.jpg"),
    ] {
        bus.publish_file(
            &format!("samples/{label}"),
            &repo().join("demo/frames").join(file),
        );
        let r = bus.reply("a sample reply", |v| v["cmd"] == "sample");
        assert_eq!(r["ok"], true, "{r}");
    }
    let t = json(&bus.wait_for("training", "a finished run", |p| {
        json(p)["status"] == "finished"
    }));
    assert_eq!(t["deployed"], true, "{t}");
    bus.wait_for("default/detections", "a head label", |p| {
        let l = &json(p)["items"][0]["head"]["label"];
        l == "people" || l == "things"
    });

    // The terminal view, in plain mode: three screens, then it exits.
    let o = adaptd()
        .arg("--config")
        .arg(&config)
        .args([
            "watch",
            "--device",
            "testcam",
            "--plain",
            "--frames",
            "3",
            "--interval",
            "1",
        ])
        .output()
        .expect("run adaptd watch");
    let screen = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!screen.contains('\x1b'), "plain output has no escape codes");
    let last = screen.rsplit("adaptd watch · ").next().unwrap_or("");
    for needle in [
        "testcam · online",
        "mobilenetv2",
        "fps",
        "head v1",
        "people",
    ] {
        assert!(
            last.contains(needle),
            "{needle:?} not on the screen:\n{last}"
        );
    }

    send_signal(&daemon, "-TERM");
    assert_eq!(wait_exit(&mut daemon, "adaptd", WAIT), Some(0));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the embedded broker stops with the daemon"
    );
}

/// `flite -voice VOICE -t TEXT -o FILE`: a real speaker's voice (awb, rms and slt are built
/// from recordings of three people).
fn say(voice: &str, text: &str, out: &Path) {
    let ok = Command::new("flite")
        .args(["-voice", voice, "-t", text, "-o"])
        .arg(out)
        .status()
        .expect("run flite (apt-get install flite)");
    assert!(ok.success(), "flite -voice {voice}");
}

/// A WAV file as raw 16 kHz mono S16_LE, what `arecord -f S16_LE -r 16000 -c 1` writes.
fn raw_16k(wav: &Path) -> Vec<u8> {
    let o = Command::new("sox")
        .arg(wav)
        .args([
            "-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1", "-",
        ])
        .output()
        .expect("run sox (apt-get install sox)");
    assert!(o.status.success(), "sox {}", wav.display());
    o.stdout
}

/// A speaker daemon: voices enrolled with WAV clips over MQTT, a centroid head trained on
/// its own once enough arrived, then a microphone stream on stdin (raw PCM with pauses):
/// each utterance is identified in `detections`, `events` follow the speaker changes, an
/// utterance is labeled, Home Assistant sees a Speaker sensor, bad clips are refused.
#[test]
fn speaker_daemon_enrolls_voices_and_names_who_speaks() {
    speaker_daemon("");
}

/// The same on the onnxruntime backend (the GE2E encoder's LSTM there).
#[cfg(feature = "onnxruntime")]
#[test]
fn speaker_daemon_on_onnxruntime() {
    on_onnxruntime("speaker_daemon_on_onnxruntime", speaker_daemon);
}

/// `model_keys`: extra `[model]` lines (the backend).
fn speaker_daemon(model_keys: &str) {
    const ENROL: [&str; 2] = [
        "Please turn on the kitchen lights and close the garage door.",
        "Tomorrow it will rain in the morning and clear up by the evening.",
    ];
    const TEST: [&str; 2] = [
        "I left my keys on the table next to the window this afternoon.",
        "Could you remind me to call the plumber at nine o'clock?",
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    let clips = tmp.path().join("clips");
    std::fs::create_dir_all(&clips).expect("mkdir");
    let voices = ["awb", "rms", "slt"];
    let broker = TestBroker::start();
    let port = broker.port();
    let mut bus = self::bus(port);
    let config = tmp.path().join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\
             [model]\nname = \"resemblyzer-ge2e\"\n{model_keys}\
             [source]\nkind = \"audio\"\npath = \"-\"\n\
             [train]\nhead = \"centroid\"\nmin_new_samples = 6\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testcam\"\n\
             stats_interval_secs = 1\n",
            state = tmp.path().join("state"),
        ),
    )
    .expect("write config");
    let mut daemon = Guard(
        adaptd()
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start adaptd run"),
    );
    let mut mic = daemon.0.stdin.take().expect("stdin");
    bus.wait_for("available", "`online`", |p| p == "online");

    // Home Assistant: a Speaker sensor, no snapshot image.
    let disc = json(&retained_raw(port, "homeassistant/device/testcam/config"));
    assert_eq!(
        disc["cmps"][format!("{CAM}_speaker")]["p"],
        "sensor",
        "{disc}"
    );
    assert!(disc["cmps"][format!("{CAM}_snapshot")].is_null(), "{disc}");
    assert!(disc["cmps"][format!("{CAM}_label")].is_null(), "{disc}");

    // Enrolment: two clips per voice as WAV on samples/<voice>; the sixth starts training.
    for voice in voices {
        for (i, text) in ENROL.iter().enumerate() {
            let f = clips.join(format!("{voice}-enrol-{i}.wav"));
            say(voice, text, &f);
            bus.publish_file(&format!("samples/{voice}"), &f);
            let r = bus.reply("a sample reply", |v| v["cmd"] == "sample");
            assert_eq!(r["ok"], true, "{r}");
            assert_eq!(r["result"]["label"], voice, "{r}");
        }
    }
    let t = json(&bus.wait_for("training", "a finished training", |p| {
        json(p)["status"] == "finished"
    }));
    assert_eq!(t["deployed"], true, "{t}");

    // A clip that is not WAV, and a truncated WAV: clear refusals, nothing stored.
    bus.publish("samples/awb", "this is not a WAV file");
    let r = bus.reply("a not-WAV reply", |v| v["cmd"] == "sample");
    assert_eq!(r["ok"], false, "{r}");
    let whole = std::fs::read(clips.join("awb-enrol-0.wav")).expect("read");
    let cut = tmp.path().join("cut.wav");
    std::fs::write(&cut, &whole[..30]).expect("write");
    bus.publish_file("samples/awb", &cut);
    let r = bus.reply("a truncated-WAV reply", |v| v["cmd"] == "sample");
    assert_eq!(r["ok"], false, "{r}");
    assert!(!r["error"].as_str().unwrap_or("").is_empty(), "{r}");

    // The microphone: awb, slt, awb, with pauses (low background noise, as a room has).
    use std::io::Write;
    let pause = |secs: f64| -> Vec<u8> {
        let n = (secs * 16000.0) as usize;
        let mut seed = 7u32;
        (0..n)
            .flat_map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (((seed >> 16) as i32 % 60 - 30) as i16).to_le_bytes()
            })
            .collect()
    };
    let order = [("awb", TEST[0]), ("slt", TEST[1]), ("awb", TEST[1])];
    mic.write_all(&pause(1.0)).expect("write pcm");
    for (i, (voice, text)) in order.iter().enumerate() {
        let f = clips.join(format!("{voice}-test-{i}.wav"));
        say(voice, text, &f);
        mic.write_all(&raw_16k(&f)).expect("write pcm");
        mic.write_all(&pause(1.5)).expect("write pcm");
    }
    mic.flush().expect("flush");
    for (i, (voice, _)) in order.iter().enumerate() {
        let d = json(&bus.wait_for("default/detections", "an utterance", |p| {
            json(p)["frame_id"] == (i as u64 + 1)
        }));
        assert!(
            d["utterance"]["duration_s"].as_f64().unwrap_or(0.0) > 1.0,
            "{d}"
        );
        let head = &d["items"][0]["head"];
        assert_eq!(head["label"], *voice, "utterance {i}: {d}");
        assert_eq!(head["unknown"], false, "{d}");
    }
    let e = json(&bus.wait_for("default/events", "the first speaker", |p| {
        json(p)["after"] == "awb"
    }));
    assert_eq!(e["track"], "speaker", "{e}");
    assert_eq!(e["type"], "new", "{e}");
    let e = json(&bus.wait_for("default/events", "the change to slt", |p| {
        json(p)["after"] == "slt"
    }));
    assert_eq!(
        (e["type"].as_str(), e["before"].as_str()),
        (Some("update"), Some("awb")),
        "{e}"
    );
    let e = json(
        &bus.wait_for("default/events", "the change back to awb", |p| {
            json(p)["after"] == "awb" && json(p)["before"] == "slt"
        }),
    );
    assert_eq!(e["type"], "update", "{e}");
    let st = bus.retained_where("state", "speaker awb", |s| {
        s["cameras"][CAM]["label"] == "awb"
    });
    assert_eq!(
        st["cameras"][CAM]["backend"],
        backend_of(model_keys),
        "{st}"
    );

    // The last utterance becomes a sample; there is no picture to snapshot.
    let r = bus.ask("cmd/label", r#"{"id": "l1", "label": "awb"}"#);
    assert_eq!(r["ok"], true, "{r}");
    let r = bus.ask("cmd/snapshot", r#"{"id": "s1"}"#);
    assert_eq!(r["ok"], false, "{r}");
    let counts = stored_counts(&tmp.path().join("state"), "resemblyzer-ge2e");
    assert_eq!(counts["awb"], 3, "{counts}");
    assert_eq!(counts["slt"], 2, "{counts}");

    stop(&mut daemon, &mut bus);
}

/// Motion gating on a still scene (one photo, looped, no keep-alive): after the first frame
/// every frame is skipped and counted, and `label` gets the frame on screen analysed (the
/// keep-alive itself is covered by `vision::motion`'s unit tests).
#[test]
fn a_still_scene_is_gated_and_label_forces_a_frame() {
    let (tmp, frames, _) = workdirs();
    write_crops("chelsea.png", 1, &frames, "a");
    let broker = TestBroker::start();
    let port = broker.port();
    let mut bus = self::bus(port);
    let config = tmp.path().join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\
             [source]\nkind = \"dir\"\npath = {frames:?}\nfps = 10.0\nloop = true\n\
             [motion]\nkeepalive_secs = 0\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testcam\"\n\
             stats_interval_secs = 1\n",
            state = tmp.path().join("state"),
        ),
    )
    .expect("write config");
    let mut daemon = start_daemon(&config);
    bus.wait_for("available", "`online`", |p| p == "online");
    bus.wait_for("default/detections", "the first frame", |_| true);
    let s = cam_stats(&bus.wait_for("stats", "motion-skipped frames", |p| {
        cam_stats(p)["motion_skipped_frames"].as_u64().unwrap_or(0) >= 20
    }));
    assert_eq!(s["frames"], 1, "only the first frame was analysed: {s}");

    let r = bus.ask("cmd/label", r#"{"id": "l1", "label": "cat"}"#);
    assert_eq!(r["ok"], true, "{r}");
    // The forced frame's `detections` went out before the reply (the label waited for it);
    // the counters say it was analysed, and only it.
    let s = cam_stats(&bus.wait_for("stats", "stats after the label", |p| {
        cam_stats(p)["frames"].as_u64().unwrap_or(0) >= 2
    }));
    assert_eq!(s["frames"], 2, "exactly one forced frame: {s}");
    send_signal(&daemon, "-TERM");
    assert_eq!(
        wait_exit(&mut daemon, "adaptd after SIGTERM", WAIT),
        Some(0)
    );
}

/// A person who stands still stays one object while the motion gate skips the frames: one
/// photo looped, a keep-alive every second and objects that end after 0.5 s unseen. Without
/// the tracker's hold, every keep-alive would end the person and start a new one.
#[test]
fn a_still_person_stays_one_object_through_gated_frames() {
    let (tmp, frames, _) = workdirs();
    write_crops("astronaut.png", 1, &frames, "a");
    let broker = TestBroker::start();
    let port = broker.port();
    let mut bus = self::bus(port);
    let config = tmp.path().join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\
             [model]\nname = \"nanodet-m\"\n\
             [detect]\nscore_threshold = 0.3\n\
             [track]\nmax_lost_s = 0.5\nmax_occluded_s = 0.5\n\
             [source]\nkind = \"dir\"\npath = {frames:?}\nfps = 10.0\nloop = true\n\
             [motion]\nkeepalive_secs = 1\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testcam\"\n\
             stats_interval_secs = 1\n",
            state = tmp.path().join("state"),
        ),
    )
    .expect("write config");
    let mut daemon = start_daemon(&config);
    bus.wait_for("available", "`online`", |p| p == "online");
    let o = json(&bus.wait_for("default/objects", "the person's `new`", |p| {
        json(p)["type"] == "new" && json(p)["after"]["label"] == "person"
    }));
    let id = o["after"]["id"].as_str().unwrap_or_default().to_owned();
    // Six keep-alives later the frames are still gated, and the person is the same object.
    let s = cam_stats(&bus.wait_for("stats", "gated frames", |p| {
        cam_stats(p)["motion_skipped_frames"].as_u64().unwrap_or(0) >= 60
    }));
    assert!(
        s["frames"].as_u64().unwrap_or(0) >= 5,
        "keep-alives ran: {s}"
    );
    let d = json(
        &bus.wait_for("default/detections", "the person, tracked", |p| {
            json(p)["items"][0]["id"].is_string()
        }),
    );
    assert_eq!(d["items"][0]["id"], id.as_str(), "{d}");
    // (A faint second person, the astronaut's arm, may come and stay: it is held too.)
    let ends: Vec<String> = bus
        .drain("default/objects")
        .into_iter()
        .filter(|p| json(p)["type"] == "end")
        .collect();
    assert!(ends.is_empty(), "nobody ended: {ends:?}");
    send_signal(&daemon, "-TERM");
    assert_eq!(
        wait_exit(&mut daemon, "adaptd after SIGTERM", WAIT),
        Some(0)
    );
}

/// SIGTERM while a head trains: the trainer's own cancel stops the run between epochs,
/// `training` says it was cancelled, `stopped` follows and the exit code is 0. Nothing of the
/// cancelled run is on disk: no temporary file in the state directory, no new head version,
/// and the head in service before is still the one in service.
#[test]
fn sigterm_during_training_cancels_it_and_leaves_no_torn_file() {
    let (tmp, frames, samples) = workdirs();
    write_crops("chelsea.png", 2, &frames, "a");
    let cats = write_crops("chelsea.png", 6, &samples, "cat");
    let coffees = write_crops("coffee.png", 6, &samples, "coffee");
    let state_dir = tmp.path().join("state");
    let cli = |args: &[&str]| {
        let o = adaptd()
            .args(args)
            .args(["--model", "mobilenetv2", "--state-dir"])
            .arg(&state_dir)
            .output()
            .expect("run adaptd");
        assert!(o.status.success(), "adaptd {args:?}: {}", stderr(&o));
        stdout(&o)
    };
    // The head in service before the daemon starts: version 1, trained by the CLI with the
    // default (quick) settings.
    for (label, files) in [("cat", &cats), ("coffee", &coffees)] {
        let mut args = vec!["samples", "add", "--label", label];
        args.extend(files.iter().map(|p| p.to_str().expect("utf-8 path")));
        cli(&args);
    }
    let trained = json(&cli(&["train", "--json", "--seed", "3"]));
    assert_eq!(trained["version"], 1, "{trained}");
    assert_eq!(trained["decision"]["deployed"], true, "{trained}");

    let broker = TestBroker::start();
    let port = broker.port();
    let mut bus = self::bus(port);
    // A run that would go on for an hour: a wide MLP, one sample per step, no early stop.
    let config = tmp.path().join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state_dir:?}\n\
             [source]\nkind = \"dir\"\npath = {frames:?}\nfps = 2.0\nloop = true\n\
             [train]\nhead = \"mlp\"\nhidden = 1024\nbatch_size = 1\nepochs_max = 1000000\n\
             patience = 1000000\ntime_budget_secs = 3600\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testcam\"\n",
        ),
    )
    .expect("write config");
    let mut daemon = start_daemon(&config);
    bus.wait_for("available", "`online`", |p| p == "online");
    bus.wait_for("state", "head 1 in service", |p| {
        json(p)["learners"]["mobilenetv2"]["head_version"] == 1
    });

    let r = bus.ask("cmd/train", r#"{"id": "long", "force": true}"#);
    assert_eq!(r["ok"], true, "{r}");
    bus.wait_for("training", "the long run started", |p| {
        json(p)["status"] == "started"
    });
    // The run is under way (the state says so) when the signal arrives.
    bus.wait_for("state", "`training: true`", |p| json(p)["training"] == true);
    send_signal(&daemon, "-TERM");
    let t = json(&bus.wait_for("training", "the run's end", |p| {
        json(p)["status"] != "started"
    }));
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["deployed"], false, "{t}");
    assert!(
        t["error"].as_str().unwrap_or("").contains("cancelled"),
        "the run must say it was cancelled: {t}"
    );
    bus.wait_for("available", "`stopped`", |p| p == "stopped");
    assert_eq!(
        wait_exit(&mut daemon, "adaptd after SIGTERM", WAIT),
        Some(0)
    );

    let mut torn = Vec::new();
    let mut dirs = vec![state_dir.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read the state directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().contains(".tmp.") {
                torn.push(path);
            }
        }
    }
    assert!(torn.is_empty(), "temporary files left behind: {torn:?}");
    let heads = cli(&["heads", "list"]);
    let rows: Vec<&str> = heads.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "the cancelled run saved a head:\n{heads}");
    assert!(
        rows[0].starts_with('*') && rows[0].contains("v1"),
        "head 1 must still be in service:\n{heads}"
    );
}
