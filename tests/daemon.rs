//! `adaptd run` end to end: a real Mosquitto on a free loopback port, the real binary with
//! real models replaying a folder of photo crops, driven and observed over MQTT with the
//! `mosquitto_pub` / `mosquitto_sub` clients. Needs the Mosquitto broker and clients
//! (Debian: `apt-get install mosquitto mosquitto-clients`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Upper bound of every wait, so a broken daemon fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(90);
const BASE: &str = "adaptd/testcam";

/// A child process killed on drop (broker, subscriber, daemon after a failed assertion).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto_bin() -> PathBuf {
    std::env::var_os("ADAPTD_MOSQUITTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let debian = Path::new("/usr/sbin/mosquitto");
            if debian.exists() {
                debian.to_owned()
            } else {
                PathBuf::from("mosquitto")
            }
        })
}

/// Mosquitto on 127.0.0.1 on a free port (retried: another process may take the port).
fn start_broker(dir: &Path) -> (Guard, u16) {
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .expect("write mosquitto.conf");
        let mut child = Guard(
            Command::new(mosquitto_bin())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run mosquitto (apt-get install mosquitto)"),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (child, port);
            }
            if let Ok(Some(_)) = child.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("mosquitto did not start on a free port three times in a row");
}

/// `mosquitto_sub -v` on the device's text topics; each line becomes (topic, payload).
fn subscribe(port: u16) -> (Guard, Receiver<(String, String)>) {
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v"]);
    for t in [
        "available",
        "state",
        "detections",
        "events",
        "training",
        "reply",
        "stats",
    ] {
        cmd.args(["-t", &format!("{BASE}/{t}")]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run mosquitto_sub (apt-get install mosquitto-clients)");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some((t, p)) = line.split_once(' ') {
                if tx.send((t.to_owned(), p.to_owned())).is_err() {
                    break;
                }
            }
        }
    });
    (Guard(child), rx)
}

/// The messages received, as a mailbox: a wait takes the first matching message, received
/// before or during the wait, and leaves the others for later waits (replies, `state` and
/// `training` messages from different tasks may arrive in any order).
struct Bus {
    rx: Receiver<(String, String)>,
    kept: Vec<(String, String)>,
}

impl Bus {
    /// The first message on `topic` (under the base) whose payload satisfies `pred`.
    fn wait_for(&mut self, topic: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let full = format!("{BASE}/{topic}");
        if let Some(i) = self.kept.iter().position(|(t, p)| *t == full && pred(p)) {
            return self.kept.remove(i).1;
        }
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok((t, p)) if t == full && pred(&p) => return p,
                // Per-frame messages are only ever awaited fresh: do not hoard them.
                Ok((t, _)) if t.ends_with("/detections") || t.ends_with("/stats") => {}
                Ok(m) => self.kept.push(m),
                Err(_) => break,
            }
        }
        panic!("no {what} on {full} within {WAIT:?}");
    }

    fn reply(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        json(&self.wait_for("reply", what, |p| pred(&json(p))))
    }
}

fn json(p: &str) -> Value {
    serde_json::from_str(p).unwrap_or(Value::Null)
}

fn publish_file(port: u16, topic: &str, file: &Path) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", &format!("{BASE}/{topic}"), "-f"])
        .arg(file)
        .status()
        .expect("run mosquitto_pub");
    assert!(ok.success(), "mosquitto_pub to {topic}");
}

fn publish(port: u16, topic: &str, payload: &str, dir: &Path) {
    let f = dir.join("payload.bin");
    std::fs::write(&f, payload).expect("write payload");
    publish_file(port, topic, &f);
}

/// The retained `state`, as a new subscriber (Home Assistant after a restart) gets it.
fn retained_state(port: u16) -> Value {
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-C",
            "1",
            "-W",
            "10",
        ])
        .args(["-t", &format!("{BASE}/state")])
        .output()
        .expect("run mosquitto_sub");
    json(String::from_utf8_lossy(&out.stdout).trim())
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

#[test]
fn daemon_runs_learns_over_mqtt_and_stops_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let frames = tmp.path().join("frames");
    let samples = tmp.path().join("samples");
    std::fs::create_dir_all(&frames).expect("mkdir");
    std::fs::create_dir_all(&samples).expect("mkdir");
    write_crops("chelsea.png", 3, &frames, "a");
    write_crops("coffee.png", 3, &frames, "b");
    let cats = write_crops("chelsea.png", 6, &samples, "cat");
    let coffees = write_crops("coffee.png", 6, &samples, "coffee");

    let (_broker, port) = start_broker(tmp.path());
    let (_sub, rx) = subscribe(port);
    let mut bus = Bus {
        rx,
        kept: Vec::new(),
    };
    std::thread::sleep(Duration::from_millis(500));
    let config = tmp.path().join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\
             [source]\nkind = \"dir\"\npath = {frames:?}\nfps = 5.0\nloop = true\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testcam\"\n\
             max_packet_bytes = 1048576\nstats_interval_secs = 1\n",
            state = tmp.path().join("state"),
        ),
    )
    .expect("write config");
    let mut daemon = Guard(
        adaptd()
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start adaptd run"),
    );

    bus.wait_for("available", "`online`", |p| p == "online");
    let d = json(&bus.wait_for("detections", "detections", |p| json(p)["items"].is_array()));
    assert!(d["frame_id"].is_u64(), "{d}");
    bus.wait_for("stats", "stats", |p| json(p)["fps"].is_number());

    // Labeled images over MQTT.
    for (label, files) in [("cat", &cats), ("coffee", &coffees)] {
        for f in files.iter() {
            publish_file(port, &format!("samples/{label}"), f);
            let r = bus.reply("a sample reply", |v| v["cmd"] == "sample");
            assert_eq!(r["ok"], true, "{r}");
            assert_eq!(r["result"]["label"], label, "{r}");
        }
    }
    // The state follows the last reply closely, not necessarily before it.
    let mut state = retained_state(port);
    for _ in 0..20 {
        if state["samples_total"] == 12 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        state = retained_state(port);
    }
    assert_eq!(state["samples_total"], 12, "{state}");
    assert_eq!(state["samples"]["cat"], 6, "{state}");
    assert_eq!(state["paused"], false, "{state}");

    // Train: the first head is deployed and swapped in while frames keep flowing.
    publish(port, "cmd/train", r#"{"id": "t1"}"#, tmp.path());
    let r = bus.reply("the train reply", |v| v["id"] == "t1");
    assert_eq!(r["ok"], true, "{r}");
    let t = json(&bus.wait_for("training", "a finished training", |p| {
        json(p)["status"] == "finished"
    }));
    assert_eq!(t["deployed"], true, "{t}");
    let version = t["version"].clone();
    let d = json(
        &bus.wait_for("detections", "detections with a head label", |p| {
            json(p)["items"][0]["head"].is_object()
        }),
    );
    let head = &d["items"][0]["head"];
    assert_eq!(head["head_version"], version, "{d}");
    assert!(head["label"] == "cat" || head["label"] == "coffee", "{d}");

    // Bad input: each gets an error reply, and the daemon keeps going.
    publish(port, "cmd/train", "{not json", tmp.path());
    let r = bus.reply("a malformed-JSON reply", |v| v["cmd"] == "train");
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap_or("").contains("JSON"), "{r}");
    publish(port, "cmd/frobnicate", "{}", tmp.path());
    let r = bus.reply("an unknown-verb reply", |v| v["cmd"] == "frobnicate");
    assert_eq!(r["ok"], false, "{r}");
    publish_file(port, "samples/Cat", &cats[0]);
    let r = bus.reply("a bad-label reply", |v| v["cmd"] == "sample");
    assert_eq!(r["ok"], false, "{r}");
    publish(port, "samples/cat", "this is not an image", tmp.path());
    let r = bus.reply("an undecodable-image reply", |v| v["cmd"] == "sample");
    assert_eq!(r["ok"], false, "{r}");
    let big = tmp.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 2 << 20]).expect("write big payload");
    publish_file(port, "samples/cat", &big);
    let r = bus.reply("an oversized-message reply", |v| {
        v["ok"] == false
            && v["error"]
                .as_str()
                .unwrap_or("")
                .contains("max_packet_bytes")
    });
    assert!(r["cmd"].is_null(), "{r}");
    publish(port, "cmd/status", r#"{"id": 2}"#, tmp.path());
    let r = bus.reply("the status reply", |v| v["id"] == 2);
    assert_eq!(r["result"]["samples_total"], 12, "{r}");

    // Other commands, each answered.
    publish(
        port,
        "cmd/label",
        r#"{"id": "l1", "label": "cat"}"#,
        tmp.path(),
    );
    let r = bus.reply("the label reply", |v| v["id"] == "l1");
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["result"]["id"].is_i64(), "{r}");
    publish(
        port,
        "cmd/label",
        r#"{"id": "l2", "label": "cat", "detection": 0}"#,
        tmp.path(),
    );
    let r = bus.reply("the label-detection reply", |v| v["id"] == "l2");
    assert_eq!(r["ok"], false, "a classifier has no detections: {r}");
    publish(port, "cmd/snapshot", r#"{"id": "s1"}"#, tmp.path());
    let r = bus.reply("the snapshot reply", |v| v["id"] == "s1");
    assert!(r["result"]["bytes"].as_u64().unwrap_or(0) > 0, "{r}");
    publish(
        port,
        "cmd/rollback",
        r#"{"id": "r1", "version": "previous"}"#,
        tmp.path(),
    );
    let r = bus.reply("the rollback reply", |v| v["id"] == "r1");
    assert_eq!(r["ok"], false, "only one head exists: {r}");
    publish(port, "cmd/pause", r#"{"id": "p1"}"#, tmp.path());
    let r = bus.reply("the pause reply", |v| v["id"] == "p1");
    assert_eq!(r["result"]["paused"], true, "{r}");
    publish(port, "cmd/resume", r#"{"id": "p2"}"#, tmp.path());
    let r = bus.reply("the resume reply", |v| v["id"] == "p2");
    assert_eq!(r["result"]["paused"], false, "{r}");
    bus.wait_for("detections", "detections after the errors", |_| true);
    assert!(
        daemon.0.try_wait().expect("try_wait").is_none(),
        "the daemon exited"
    );

    // SIGTERM: `stopped` (retained) and exit code 0.
    let killed = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    bus.wait_for("available", "`stopped`", |p| p == "stopped");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = daemon.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "adaptd did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}
