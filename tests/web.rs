//! The web page and its API, on the real binary with a real Mosquitto, the real NanoDet +
//! MobileNetV2 on the two-person replay, and a real browser: Debian's chromium driven by pip's
//! playwright (tests/web/browser.py does the clicking; this file starts everything and checks
//! the results where the page cannot see them: the CLI, the head registry and MQTT).
//!
//! Needs `/usr/bin/chromium` and `python3 -m pip install playwright prometheus_client`
//! (`.ci/run` installs them). Set `ADAPTD_SCREENSHOTS=docs/screenshots` to refresh the
//! screenshots of docs/http.md.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::mosquitto::{json, Bus, TestBroker};
use common::turns::two_person_frames;
use common::*;

const BASE: &str = "adaptd/testweb";

/// Stored samples of `label` in `model`'s learner, as `adaptd samples list` counts them.
fn stored(cfg: &Path, model: &str, label: &str) -> u64 {
    let listed = adaptd()
        .arg("--config")
        .arg(cfg)
        .args(["samples", "list", "--model", model, "--format", "json"])
        .output()
        .expect("adaptd samples list");
    assert!(listed.status.success(), "{}", stderr(&listed));
    let samples = json(&stdout(&listed));
    samples["labels"]
        .as_array()
        .expect("the samples' labels")
        .iter()
        .filter(|l| l["label"] == label)
        .map(|l| l["train"].as_u64().unwrap_or(0) + l["holdout"].as_u64().unwrap_or(0))
        .sum()
}

/// Waits until something accepts connections on `port`.
fn wait_listening(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on the web port {port} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The browser's prerequisites, with what to install when one is missing.
/// Runs tests/web/browser.py with `args`; its last line of output, as JSON.
fn browser(args: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(repo().join("tests/web/browser.py"))
        .args(args)
        .output()
        .expect("run tests/web/browser.py");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{printed}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(printed.lines().last().unwrap_or("null"))
}

fn browser_ready() -> PathBuf {
    let chromium = PathBuf::from("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "the browser test needs Debian's chromium: apt-get install chromium"
    );
    let ok = Command::new("python3")
        .args(["-c", "import playwright, prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the browser test needs python3 -m pip install playwright prometheus_client"
    );
    chromium
}

fn config(dir: &Path, frames: &Path, mqtt_port: u16, http: &str) -> PathBuf {
    let state_dir = dir.join("state");
    let config = dir.join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state_dir:?}\n\
             [model]\nname = \"nanodet-m\"\nsublabel_model = \"mobilenetv2\"\n\
             [detect]\nsublabel_classes = [\"person\"]\n\
             [track]\nmax_lost_s = 1.0\n\
             [train]\ninterval_secs = 0\nmin_new_samples = 0\n\
             [[cameras]]\nname = \"front\"\nscore_threshold = 0.3\n\
             source = {{ kind = \"dir\", path = {frames:?}, fps = 4.0, loop = true }}\n\
             zones = [{{ name = \"left\", points = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]] }}]\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\ndevice_id = \"testweb\"\n\
             [http]\n{http}\n"
        ),
    )
    .expect("write config");
    config
}

#[test]
fn the_page_shows_live_frames_and_teaches_the_device_in_a_real_browser() {
    let chromium = browser_ready();
    let tmp = tempfile::tempdir().expect("tempdir");
    let frames = two_person_frames(tmp.path());
    let broker = TestBroker::start();
    let mut bus = Bus::subscribe(broker.port(), BASE, &["available", "training", "reply"]);
    let http_port = free_port();
    let cfg = config(
        tmp.path(),
        &frames,
        broker.port(),
        &format!("listen = \"127.0.0.1:{http_port}\"\nmax_upload_mb = 1"),
    );
    let mut daemon = start_daemon(&cfg);
    bus.wait_for("available", "`online`", |p| p == "online");
    wait_listening(http_port, Duration::from_secs(30));

    // Two names and a first head, over MQTT: the page then has a head 1 to roll back to.
    for (label, photo) in [
        ("alice", "astronaut.png"),
        ("bob", "camera.png"),
        ("bob", "camera.png"),
    ] {
        bus.publish_file(&format!("front/samples/{label}"), &image(photo));
        let r = bus.reply("a stored sample", |v| v["cmd"] == "sample");
        assert_eq!(r["ok"], true, "{r}");
    }
    let r = bus.ask("cmd/train", r#"{"id": "t1", "force": true}"#);
    assert_eq!(r["ok"], true, "{r}");
    bus.wait_for("training", "head 1", |p| {
        let t = json(p);
        t["status"] == "finished" && t["version"] == 1
    });

    let shots = std::env::var_os("ADAPTD_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("shots"));
    let url = format!("http://127.0.0.1:{http_port}");
    let (shots_s, chromium_s) = (shots.to_string_lossy(), chromium.to_string_lossy());
    let report = browser(&[
        "--url",
        &url,
        "--camera",
        "front",
        "--model",
        "mobilenetv2",
        "--shots",
        &shots_s,
        "--chromium",
        &chromium_s,
    ]);
    for page in [
        "live.png",
        "events.png",
        "samples.png",
        "training.png",
        "status.png",
        "live-phone.png",
    ] {
        let bytes = std::fs::metadata(shots.join(page)).map_or(0, |m| m.len());
        assert!(bytes > 10_000, "screenshot {page} is {bytes} bytes");
    }

    // "False positive" clicked on another event shows the daemon's answer on it.
    let fp = report["named"]["false_positive_reply"]
        .as_str()
        .unwrap_or_default();
    assert!(
        !fp.is_empty(),
        "no false-positive reply on the page: {report}"
    );

    // The event named on the page is a stored sample of `alice`, filed from that event.
    assert_eq!(
        stored(&cfg, "mobilenetv2", "alice"),
        2,
        "one over MQTT, one named on the page"
    );

    // The head trained from the page learned from both.
    let trained = report["training"]["trained"]
        .as_u64()
        .expect("trained version");
    let head = adaptd()
        .arg("--config")
        .arg(&cfg)
        .args([
            "heads",
            "show",
            &trained.to_string(),
            "--model",
            "mobilenetv2",
        ])
        .output()
        .expect("adaptd heads show");
    assert!(head.status.success(), "{}", stderr(&head));
    let meta = json(&stdout(&head));
    let classes = meta["report"]["classes"]
        .as_array()
        .expect("classes")
        .clone();
    let i = classes
        .iter()
        .position(|c| c == "alice")
        .expect("alice is a class of the new head");
    let seen = meta["report"]["samples_per_class_train"][i]
        .as_u64()
        .unwrap_or(0)
        + meta["report"]["samples_per_class_holdout"][i]
            .as_u64()
            .unwrap_or(0);
    assert_eq!(
        seen, 2,
        "the page's sample is in the next training run: {meta}"
    );

    // The relabel and the delete clicked on the Samples page: no bob left, one carol.
    assert_eq!(stored(&cfg, "mobilenetv2", "bob"), 0);
    assert_eq!(stored(&cfg, "mobilenetv2", "carol"), 1);
    // The event dropped on the page is gone from the store.
    let dropped = report["dropped"]["dropped"].as_str().expect("dropped id");
    let shown = adaptd()
        .arg("--config")
        .arg(&cfg)
        .args(["events", "show", dropped])
        .output()
        .expect("adaptd events show");
    assert!(
        !shown.status.success() && stderr(&shown).contains("no stored object"),
        "{}",
        stdout(&shown)
    );

    // The rollback clicked on the page put head 1 back in service, as MQTT says.
    bus.retained_where("front/state", "head_version 1", |s| s["head_version"] == 1);

    let _ = daemon.0.kill();
    let _ = daemon.0.wait();
}

#[test]
fn beyond_loopback_the_page_needs_a_password_and_the_browser_logs_in() {
    let chromium = browser_ready();
    let tmp = tempfile::tempdir().expect("tempdir");
    let frames = two_person_frames(tmp.path());
    let broker = TestBroker::start();

    // Reachable from the LAN without a login: refused before anything starts.
    let open = config(
        tmp.path(),
        &frames,
        broker.port(),
        "listen = \"0.0.0.0:8080\"",
    );
    let checked = adaptd()
        .arg("check-config")
        .arg(&open)
        .output()
        .expect("adaptd check-config");
    assert!(!checked.status.success(), "{}", stdout(&checked));
    let why = stderr(&checked);
    assert!(
        why.contains("[http].listen") && why.contains("password_hash"),
        "{why}"
    );

    // With a password (made by `adaptd http-password`), the browser logs in.
    let mut hashing = adaptd()
        .arg("http-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("adaptd http-password");
    {
        use std::io::Write as _;
        let mut stdin = hashing.stdin.take().expect("stdin");
        stdin
            .write_all(b"correct horse battery\n")
            .expect("write the password");
    }
    let hashed = hashing.wait_with_output().expect("http-password output");
    assert!(hashed.status.success(), "{}", stderr(&hashed));
    let line = stdout(&hashed);
    assert!(line.starts_with("password_hash = \"$argon2id$"), "{line}");
    let http_port = free_port();
    let cfg = config(
        tmp.path(),
        &frames,
        broker.port(),
        &format!("listen = \"127.0.0.1:{http_port}\"\n{}", line.trim()),
    );
    let mut bus = Bus::subscribe(broker.port(), BASE, &["available"]);
    let mut daemon = start_daemon(&cfg);
    bus.wait_for("available", "`online`", |p| p == "online");
    wait_listening(http_port, Duration::from_secs(30));
    let shots = tmp.path().join("shots");
    let report = browser(&[
        "--url",
        &format!("http://127.0.0.1:{http_port}"),
        "--camera",
        "front",
        "--shots",
        &shots.to_string_lossy(),
        "--chromium",
        &chromium.to_string_lossy(),
        "--password",
        "correct horse battery",
    ]);
    let error = report["login"]["wrong_password_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("wrong password"), "{report}");
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();
}

#[test]
fn voices_are_enrolled_on_the_speakers_page_and_the_page_says_who_spoke() {
    let chromium = browser_ready();
    let tmp = tempfile::tempdir().expect("tempdir");
    let wav = tmp.path().join("alice.wav");
    let said = Command::new("flite")
        .args([
            "-voice",
            "slt",
            "-t",
            "The train to the city leaves every hour.",
            "-o",
        ])
        .arg(&wav)
        .status()
        .expect("run flite (apt-get install flite)");
    assert!(said.success(), "flite");
    // The microphone: a FIFO the daemon reads raw 16 kHz PCM from, silent until the page has
    // enrolled the voices; then the browser script says alice's sentence into it.
    let fifo = tmp.path().join("hall.pcm");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo");
    let said_pcm = tmp.path().join("alice.raw");
    let converted = Command::new("sox")
        .arg(&wav)
        .args([
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
        ])
        .arg(&said_pcm)
        .status()
        .expect("run sox (apt-get install sox)");
    assert!(converted.success(), "sox");
    let pcm = fifo.clone();
    let broker = TestBroker::start();
    let http_port = free_port();
    let cfg = tmp.path().join("adaptd.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = {state:?}\n\
             [model]\nname = \"resemblyzer-ge2e\"\n\
             [train]\nhead = \"centroid\"\ninterval_secs = 0\nmin_new_samples = 0\n\
             [[microphones]]\nname = \"hall\"\n\
             source = {{ kind = \"audio\", path = {pcm:?}, sample_rate = 16000 }}\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testweb\"\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n",
            state = tmp.path().join("state"),
            port = broker.port(),
        ),
    )
    .expect("write config");
    let mut bus = Bus::subscribe(broker.port(), BASE, &["available"]);
    let mut daemon = start_daemon(&cfg);
    bus.wait_for("available", "`online`", |p| p == "online");
    wait_listening(http_port, Duration::from_secs(30));
    let shots = std::env::var_os("ADAPTD_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("shots"));
    let report = browser(&[
        "--url",
        &format!("http://127.0.0.1:{http_port}"),
        "--camera",
        "hall",
        "--model",
        "resemblyzer-ge2e",
        "--shots",
        &shots.to_string_lossy(),
        "--chromium",
        &chromium.to_string_lossy(),
        "--speakers-wav",
        &wav.to_string_lossy(),
        "--speak-fifo",
        &fifo.to_string_lossy(),
        "--speak-pcm",
        &said_pcm.to_string_lossy(),
    ]);
    assert!(report["speakers"]["uploaded"].is_string(), "{report}");
    let recent = report["speakers"]["recent"].to_string();
    assert!(recent.contains("alice"), "who spoke, on the page: {recent}");
    // Both voices are stored samples of the speaker model.
    for voice in ["alice", "bob"] {
        assert_eq!(
            stored(&cfg, "resemblyzer-ge2e", voice),
            1,
            "{voice} enrolled from the page"
        );
    }
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();
}
