//! Real camera inputs end to end, with the real binary, a real Mosquitto and real models:
//! RTSP cameras against GStreamer's RTSP server (tests/rtsp/server.py, a live x264/x265 test
//! pattern; Debian's gir1.2-gst-rtsp-server-1.0, python3-gst-1.0, gstreamer1.0-plugins-ugly
//! and -bad, installed by .ci/run), and a supervised camera command.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::mosquitto::{json, retained_raw, Bus, TestBroker, WAIT};
use common::*;
use serde_json::Value;

/// One test camera: `server.py PORT ARGS...`, killed on drop.
struct Camera {
    _child: Guard,
}

impl Camera {
    fn start(port: u16, args: &[&str]) -> Camera {
        let python = Path::new("/usr/bin/python3");
        assert!(
            python.exists(),
            "Debian's /usr/bin/python3 with the GStreamer bindings is needed (.ci/run installs them)"
        );
        let mut child = Guard(
            Command::new(python)
                .arg(repo().join("tests/rtsp/server.py"))
                .arg(port.to_string())
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start the RTSP test server"),
        );
        let stdout = child.0.stdout.take().expect("server stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        assert_eq!(
            line.trim(),
            "ready",
            "the RTSP test server did not start (gir1.2-gst-rtsp-server-1.0 installed?)"
        );
        Camera { _child: child }
    }
}

/// The `source_state` of a `<camera>/state` payload.
fn source_state(p: &str) -> Value {
    json(p)["source_state"].clone()
}

#[test]
fn rtsp_cameras_stream_reconnect_and_say_what_is_wrong() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (port_a, port_b, port_c) = (free_port(), free_port(), free_port());
    let server_a = Camera::start(port_a, &[]);
    let _locked = Camera::start(port_b, &["--auth", "digest", "viewer", "right-password"]);
    let _hevc = Camera::start(port_c, &["--codec", "h265"]);
    let password_file = tmp.path().join("locked.pass");
    std::fs::write(&password_file, "wrong-password\n").expect("write password file");

    let broker = TestBroker::start();
    let port = broker.port();
    let mut bus = Bus::subscribe(
        port,
        "adaptd/testcam",
        &[
            "available",
            "ipcam/detections",
            "ipcam/state",
            "locked/state",
            "hevc/state",
        ],
    );
    let config = tmp.path().join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\
             [model]\nname = \"mobilenetv2\"\n\
             [[cameras]]\nname = \"ipcam\"\nfps = 2\n\
             source = {{ kind = \"rtsp\", url = \"rtsp://127.0.0.1:{port_a}/cam\" }}\n\
             [[cameras]]\nname = \"locked\"\n\
             source = {{ kind = \"rtsp\", url = \"rtsp://viewer@127.0.0.1:{port_b}/cam\", \
             password_file = {password_file:?} }}\n\
             [[cameras]]\nname = \"hevc\"\n\
             source = {{ kind = \"rtsp\", url = \"rtsp://127.0.0.1:{port_c}/cam\", \
             decode = \"keyframes\" }}\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testcam\"\n\
             stats_interval_secs = 1\n",
            state = tmp.path().join("state"),
        ),
    )
    .expect("write config");
    let log = tmp.path().join("adaptd.log");
    let mut daemon = Guard(
        adaptd()
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start adaptd run"),
    );
    bus.wait_for("available", "`online`", |p| p == "online");

    // Frames arrive over RTSP, are decoded and classified.
    let d = json(
        &bus.wait_for("ipcam/detections", "a classified RTSP frame", |p| {
            json(p)["items"][0]["label"].is_string()
        }),
    );
    assert_eq!(d["width"], 640, "{d}");
    assert_eq!(d["height"], 360, "{d}");
    bus.wait_for("ipcam/state", "`streaming`", |p| {
        source_state(p)["state"] == "streaming"
    });

    // A wrong password: a clear state, no crash, and the password nowhere.
    let s = bus.wait_for("locked/state", "a refused login", |p| {
        source_state(p)["state"] == "reconnecting"
            && source_state(p)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("refused the login"))
    });
    assert!(!s.contains("wrong-password"), "{s}");
    assert!(
        source_state(&s)["retry_in_s"].as_u64().is_some(),
        "the next try is announced: {s}"
    );
    let s = json(&bus.wait_for("locked/state", "the masked URL", |p| {
        json(p)["source"].is_string()
    }));
    assert!(!s.to_string().contains("wrong-password"), "{s}");

    // H.265: failed at once, saying what to do.
    let s = bus.wait_for("hevc/state", "H.265 refused", |p| {
        source_state(p)["state"] == "failed"
    });
    let error = source_state(&s)["error"].as_str().unwrap_or("").to_owned();
    assert!(
        error.contains("H.264") && error.contains("sub-stream"),
        "{error}"
    );

    // The server goes away and comes back: the camera reconnects and frames flow again.
    drop(server_a);
    bus.wait_for("ipcam/state", "`reconnecting` after the server died", |p| {
        source_state(p)["state"] == "reconnecting"
    });
    let _server_a = Camera::start(port_a, &[]);
    bus.wait_for("ipcam/state", "`streaming` again", |p| {
        source_state(p)["state"] == "streaming"
    });
    bus.wait_for("ipcam/detections", "frames after the restart", |p| {
        json(p)["items"][0]["label"].is_string()
    });

    assert!(
        daemon.0.try_wait().expect("try_wait").is_none(),
        "the daemon exited"
    );
    send_signal(&daemon, "-TERM");
    bus.wait_for("available", "`stopped`", |p| p == "stopped");
    assert_eq!(
        wait_exit(&mut daemon, "adaptd after SIGTERM", WAIT),
        Some(0)
    );
    let log = std::fs::read_to_string(&log).expect("read log");
    assert!(
        !log.contains("wrong-password"),
        "the log shows the password"
    );
    assert!(
        log.contains("rtsp://viewer:***@127.0.0.1") || log.contains("rtsp://viewer@127.0.0.1"),
        "the log names the camera by its masked URL"
    );
}

#[test]
fn a_url_that_is_not_rtsp_is_a_config_error_naming_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("adaptd.toml");
    std::fs::write(
        &config,
        "[model]\nname = \"mobilenetv2\"\n\
         [[cameras]]\nname = \"front\"\n\
         source = { kind = \"rtsp\", url = \"http://admin:secret@cam.lan/video.mjpg\" }\n",
    )
    .expect("write config");
    let o = adaptd()
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("run check-config");
    assert!(!o.status.success(), "check-config accepted an http:// URL");
    let e = stderr(&o);
    assert!(
        e.contains("http://admin:***@cam.lan/video.mjpg") && e.contains("not rtsp://"),
        "{e}"
    );
    assert!(!e.contains("secret"), "the password is shown: {e}");
}

/// Whether process `pid` exists.
fn alive(pid: &str) -> bool {
    Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_camera_command_is_read_restarted_when_it_exits_and_stopped_with_adaptd() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut jpegs = Vec::new();
    for (i, photo) in ["chelsea.png", "coffee.png", "chelsea.png"]
        .iter()
        .enumerate()
    {
        let p = tmp.path().join(format!("{i}.jpg"));
        image::open(image(photo))
            .expect("photo")
            .to_rgb8()
            .save(&p)
            .expect("write jpeg");
        jpegs.push(p.display().to_string());
    }
    let pids = tmp.path().join("pids");
    // The first run writes three frames and dies like a camera program losing its sensor;
    // the second writes them and keeps running until adaptd stops it.
    let script = format!(
        "echo $$ >> {pids}; cat {jpegs}; \
         if [ $(wc -l < {pids}) -lt 2 ]; then echo 'sensor went away' >&2; exit 3; fi; \
         exec sleep 120",
        pids = pids.display(),
        jpegs = jpegs.join(" ")
    );
    let broker = TestBroker::start();
    let port = broker.port();
    let mut bus = Bus::subscribe(
        port,
        "adaptd/testcam",
        &["available", "pi/detections", "pi/state"],
    );
    let config = tmp.path().join("adaptd.toml");
    let argv = serde_json::to_string(&["sh", "-c", &script]).expect("argv");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\
             [model]\nname = \"mobilenetv2\"\n\
             [[cameras]]\nname = \"pi\"\n\
             source = {{ kind = \"command\", argv = {argv} }}\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testcam\"\n",
            state = tmp.path().join("state"),
        ),
    )
    .expect("write config");
    let mut daemon = start_daemon(&config);
    bus.wait_for("available", "`online`", |p| p == "online");
    bus.wait_for("pi/detections", "a frame from the command", |p| {
        json(p)["items"][0]["label"].is_string()
    });
    let s = bus.wait_for(
        "pi/state",
        "the exit, with its status and last words",
        |p| source_state(p)["state"] == "reconnecting",
    );
    let why = source_state(&s)["last_error"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        why.contains("exit status: 3") && why.contains("sensor went away"),
        "{why}"
    );
    bus.wait_for("pi/state", "`streaming` after the restart", |p| {
        source_state(p)["state"] == "streaming"
    });
    let started = std::fs::read_to_string(&pids).expect("pids");
    let runs: Vec<&str> = started.lines().collect();
    assert_eq!(runs.len(), 2, "started once, restarted once: {runs:?}");
    assert!(alive(runs[1]), "the second run is still going");

    send_signal(&daemon, "-TERM");
    bus.wait_for("available", "`stopped`", |p| p == "stopped");
    assert_eq!(
        wait_exit(&mut daemon, "adaptd after SIGTERM", WAIT),
        Some(0)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive(runs[1]) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!alive(runs[1]), "adaptd left its camera command running");
}

#[test]
fn a_stdin_source_under_a_service_manager_is_refused_at_start_with_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n[model]\nname = \"mobilenetv2\"\n\
             [source]\nkind = \"mjpeg\"\npath = \"-\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n",
            state = tmp.path().join("state"),
            port = free_port(),
        ),
    )
    .expect("write config");
    // systemd gives a service /dev/null as standard input.
    let o = adaptd()
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdin(Stdio::null())
        .output()
        .expect("run adaptd");
    assert_clean_failure(&o, 2, "/dev/null");
    assert!(stderr(&o).contains("kind = \"command\""), "{}", stderr(&o));
}

/// A home whose `~/.asoundrc` defines `adaptd_mic`: ALSA's `file` plugin reading `infile`
/// as the captured sound, through the real ALSA library (no sound card needed). Its slave,
/// `null`, is not clocked: the audio comes as fast as it is read, and once the file is read
/// the plugin repeats the last period (the trailing room noise).
fn alsa_home(dir: &Path, infile: &Path) -> std::path::PathBuf {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("mkdir home");
    std::fs::write(
        home.join(".asoundrc"),
        format!(
            "pcm.adaptd_mic {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  \
             infile \"{}\"\n  format \"raw\"\n  \
             hint {{ show on\n description \"adaptd test microphone\" }}\n}}\n",
            infile.display()
        ),
    )
    .expect("write .asoundrc");
    home
}

/// Raw 16 kHz mono S16_LE: room noise, a flite sentence, room noise.
fn spoken_pcm(dir: &Path) -> Vec<u8> {
    let wav = dir.join("said.wav");
    let ok = Command::new("flite")
        .args([
            "-voice",
            "slt",
            "-t",
            "Please turn on the lights in the kitchen.",
        ])
        .arg("-o")
        .arg(&wav)
        .status()
        .expect("run flite (apt-get install flite)");
    assert!(ok.success());
    let o = Command::new("sox")
        .arg(&wav)
        .args([
            "-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1", "-",
        ])
        .output()
        .expect("run sox (apt-get install sox)");
    assert!(o.status.success());
    let noise = |secs: f64, seed: &mut u32| -> Vec<u8> {
        (0..(secs * 16000.0) as usize)
            .flat_map(|_| {
                *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (((*seed >> 16) as i32 % 60 - 30) as i16).to_le_bytes()
            })
            .collect()
    };
    let mut seed = 7u32;
    let mut pcm = noise(1.0, &mut seed);
    pcm.extend_from_slice(&o.stdout);
    pcm.extend(noise(2.0, &mut seed));
    pcm
}

/// A microphone on ALSA whose device is not there at start (a USB microphone plugged in
/// later): the state says `reconnecting` with ALSA's reason and when it retries; once the
/// device exists it is opened on the next retry, the state turns `streaming`, and the
/// sentence spoken into it comes out as one utterance on `detections`.
#[test]
fn an_alsa_microphone_waits_for_its_device_then_hears_the_sentence() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let infile = tmp.path().join("mic.raw");
    let home = alsa_home(tmp.path(), &infile);
    let broker = TestBroker::start();
    let port = broker.port();
    let mut bus = Bus::subscribe(
        port,
        "adaptd/testcam",
        &["available", "kitchen/detections", "kitchen/state"],
    );
    let config = tmp.path().join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\
             [model]\nname = \"resemblyzer-ge2e\"\n\
             [[microphones]]\nname = \"kitchen\"\n\
             source = {{ kind = \"alsa\", device = \"adaptd_mic\" }}\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"testcam\"\n\
             stats_interval_secs = 1\n",
            state = tmp.path().join("state"),
        ),
    )
    .expect("write config");
    let check = adaptd()
        .arg("check-config")
        .arg(&config)
        .env("HOME", &home)
        .output()
        .expect("run check-config");
    assert!(check.status.success(), "{}", stderr(&check));
    let log = tmp.path().join("adaptd.log");
    let mut daemon = Guard(
        adaptd()
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("HOME", &home)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start adaptd run"),
    );
    bus.wait_for("available", "`online`", |p| p == "online");
    let s = bus.wait_for("kitchen/state", "`reconnecting` without the device", |p| {
        source_state(p)["state"] == "reconnecting"
    });
    let error = source_state(&s)["last_error"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        error.contains("adaptd_mic") && error.contains("adaptd devices"),
        "{error}"
    );
    assert!(source_state(&s)["retry_in_s"].as_u64().is_some(), "{s}");

    // The device appears (written whole, then renamed, as a device node appears at once).
    let part = tmp.path().join("mic.raw.part");
    std::fs::write(&part, spoken_pcm(tmp.path())).expect("write pcm");
    std::fs::rename(&part, &infile).expect("rename");
    // The utterance comes within milliseconds of the open (the file plugin is not clocked),
    // before the next state message: wait for it first (the bus does not keep per-frame
    // messages that arrive while it waits for another topic).
    let d = json(&bus.wait_for("kitchen/detections", "the sentence", |p| {
        json(p)["frame_id"] == 1
    }));
    bus.wait_for("kitchen/state", "`streaming` once it exists", |p| {
        source_state(p)["state"] == "streaming"
    });
    let secs = d["utterance"]["duration_s"].as_f64().unwrap_or(0.0);
    assert!(
        (1.5..4.5).contains(&secs),
        "one sentence of about 2.5 s: {d}"
    );
    let st = json(&retained_raw(port, "adaptd/testcam/kitchen/state"));
    assert_eq!(st["source"], "alsa adaptd_mic (16000 Hz, 1 ch)", "{st}");

    send_signal(&daemon, "-TERM");
    assert_eq!(
        wait_exit(&mut daemon, "adaptd", WAIT),
        Some(0),
        "{}",
        read(&log)
    );
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// `adaptd devices`: ALSA's capture devices (here the asoundrc's, with its description),
/// a config entry for one, and what to do about cameras when there is none; `--format json`
/// for programs.
#[test]
fn devices_lists_alsa_capture_devices_and_says_what_to_do_without_cameras() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = alsa_home(tmp.path(), &tmp.path().join("mic.raw"));
    let o = adaptd()
        .args(["devices", "--format", "json"])
        .env("HOME", &home)
        .output()
        .expect("run adaptd devices");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let mics = v["microphones"].as_array().expect("microphones");
    let mic = mics
        .iter()
        .find(|m| m["name"] == "adaptd_mic")
        .unwrap_or_else(|| panic!("adaptd_mic listed: {v}"));
    assert_eq!(mic["description"], "adaptd test microphone", "{v}");
    assert!(v["cameras"].is_array(), "{v}");

    let o = adaptd()
        .arg("devices")
        .env("HOME", &home)
        .output()
        .expect("run adaptd devices");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("Microphones (ALSA capture)"), "{text}");
    assert!(
        text.contains("adaptd_mic") && text.contains("adaptd test microphone"),
        "{text}"
    );
    assert!(text.contains("kind = \"alsa\", device = \""), "{text}");
    if v["cameras"].as_array().is_some_and(|c| c.is_empty()) {
        assert!(text.contains("kind = \"command\""), "{text}");
    }
}

/// Every recipe of docs/configuration.md ("Recipes": an IP camera, a Pi camera module, a USB
/// webcam, a USB microphone) is a file `check-config` accepts, as the page promises.
#[test]
fn the_configuration_recipes_pass_check_config() {
    let doc = std::fs::read_to_string(repo().join("docs/configuration.md")).expect("read docs");
    let section = doc
        .split("\n## Recipes\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Recipes section");
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .collect();
    assert_eq!(blocks.len(), 4, "four recipes: {blocks:?}");
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, block) in blocks.iter().enumerate() {
        let file = tmp.path().join(format!("recipe{i}.toml"));
        std::fs::write(&file, block).expect("write recipe");
        let o = adaptd()
            .arg("check-config")
            .arg(&file)
            .env("ADAPTD_MODEL_DIR", models_dir())
            .output()
            .expect("run check-config");
        assert!(o.status.success(), "recipe {i}:\n{block}\n{}", stderr(&o));
    }
    for kind in ["rtsp", "command", "v4l2", "alsa"] {
        assert!(
            blocks
                .iter()
                .any(|b| b.contains(&format!("kind = \"{kind}\""))),
            "a recipe for {kind}"
        );
    }
}
