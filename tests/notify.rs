//! The systemd notify protocol of `adaptd run`, without systemd: the test binds the
//! `NOTIFY_SOCKET` datagram socket itself, sets `WATCHDOG_USEC`, feeds JPEG frames on the
//! daemon's standard input (an MJPEG pipe source, as `ffmpeg ... -f mjpeg -` would) and reads
//! what the daemon tells the service manager: READY once running, STATUS lines, WATCHDOG
//! pings only while frames are processed (a writer that stalls without closing the pipe must
//! get the service restarted), RELOADING + MONOTONIC_USEC then READY on SIGHUP, and STOPPING.
//! No broker is needed: the daemon runs (and keeps retrying) without one.

mod common;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Upper bound of every wait, so a broken daemon fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(60);

/// A config reading MJPEG from standard input, with a broker address nothing listens on (the
/// daemon keeps retrying it and runs meanwhile); `extra` goes under `[mqtt]`.
fn pipe_config(dir: &Path, dead_port: u16, device_id: &str, extra: &str) -> PathBuf {
    let config = dir.join("adaptd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[source]\nkind = \"mjpeg\"\npath = \"-\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{dead_port}\"\ndevice_id = \"{device_id}\"\n{extra}",
            dir.join("state")
        ),
    )
    .expect("write config");
    config
}

/// Datagrams from the daemon, each split into its `KEY=value` lines.
struct Socket(UnixDatagram);

impl Socket {
    fn next(&self, until: Instant) -> Option<Vec<String>> {
        let left = until.checked_duration_since(Instant::now())?;
        self.0
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let mut buf = [0u8; 4096];
        let n = self.0.recv(&mut buf).ok()?;
        Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_owned)
                .collect(),
        )
    }

    /// Reads until a datagram has a line starting with `prefix`; returns everything read.
    fn until(&self, prefix: &str) -> Vec<Vec<String>> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(msg) = self.next(deadline) {
            let hit = msg.iter().any(|l| l.starts_with(prefix));
            seen.push(msg);
            if hit {
                return seen;
            }
        }
        panic!("no {prefix} within {WAIT:?}; received {seen:?}");
    }

    /// Counts datagrams containing `line` during `d`.
    fn count_for(&self, d: Duration, line: &str) -> usize {
        let deadline = Instant::now() + d;
        let mut n = 0;
        while let Some(msg) = self.next(deadline) {
            n += msg.iter().filter(|l| *l == line).count();
        }
        n
    }
}

#[test]
fn notify_protocol_ready_status_watchdog_reload_stop() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sock_path = tmp.path().join("notify.sock");
    let socket = Socket(UnixDatagram::bind(&sock_path).expect("bind the notify socket"));
    let jpeg = {
        let img = image::open(image("coffee.png")).expect("photo").to_rgb8();
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg)
            .expect("encode jpeg");
        out.into_inner()
    };
    // A port nothing listens on: MQTT keeps retrying in the background, the pipeline runs.
    let dead_port = free_port();
    let config = pipe_config(
        tmp.path(),
        dead_port,
        "notifytest",
        "stats_interval_secs = 1\n",
    );
    let mut child = adaptd()
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start adaptd run");
    let mut stdin = child.stdin.take().expect("stdin");
    let daemon = Guard(child);

    // A writer thread that sends frames while `flowing` is set and keeps the pipe open.
    let flowing = Arc::new(AtomicBool::new(true));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (flowing, done) = (flowing.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if flowing.load(Ordering::SeqCst) && stdin.write_all(&jpeg).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            drop(stdin);
        })
    };

    let startup = socket.until("READY=1");
    let ready = startup.last().expect("the READY datagram");
    assert!(
        ready
            .iter()
            .any(|l| l.starts_with("STATUS=") && l.contains(" streams streaming, ")),
        "READY comes with a status: {ready:?}"
    );
    socket.until("WATCHDOG=1");
    let status = socket.until("STATUS=");
    let line = status
        .iter()
        .flatten()
        .find(|l| l.starts_with("STATUS="))
        .cloned()
        .unwrap_or_default();
    assert!(line.contains("fps"), "a readable status line: {line}");
    assert!(
        socket.count_for(Duration::from_secs(3), "WATCHDOG=1") >= 2,
        "pings every second while frames flow"
    );

    // The writer stalls without closing the pipe: the pings stop (systemd would restart us).
    flowing.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = socket.count_for(Duration::from_millis(100), "WATCHDOG=1");
    assert_eq!(
        socket.count_for(Duration::from_secs(4), "WATCHDOG=1"),
        0,
        "no ping while the pipeline is stalled"
    );
    flowing.store(true, Ordering::SeqCst);
    socket.until("WATCHDOG=1");

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC (systemd >= 253 insists), then READY=1.
    send_signal(&daemon, "-HUP");
    let reload = socket.until("RELOADING=1");
    let msg = reload.last().expect("the RELOADING datagram");
    assert!(
        msg.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{msg:?}"
    );
    socket.until("READY=1");

    send_signal(&daemon, "-TERM");
    socket.until("STOPPING=1");
    done.store(true, Ordering::SeqCst);
    let mut daemon = daemon;
    let code = wait_exit(&mut daemon, "adaptd after SIGTERM", WAIT);
    assert_eq!(code, Some(0));
    let _ = writer.join();
}

/// A pipe whose writer goes away (ffmpeg or rpicam-vid died) is a broken pipeline: the daemon
/// stops cleanly with status 1, so that systemd's `Restart=on-failure` starts it again.
#[test]
fn a_closed_pipe_stops_the_daemon_with_status_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dead_port = free_port();
    let config = pipe_config(tmp.path(), dead_port, "pipetest", "");
    let mut child = adaptd()
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start adaptd run");
    let jpeg = std::fs::read(image("rocket.jpg")).expect("photo");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&jpeg).expect("write a frame");
        stdin.write_all(&jpeg).expect("write a frame");
    }
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut daemon = Guard(child);
    let code = wait_exit(&mut daemon, "adaptd after its pipe closed", WAIT);
    let err = reader.join().unwrap_or_default();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("restarts the pipeline"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
