//! The one Mosquitto test harness: a real broker on a free loopback port, and a mailbox of
//! what `mosquitto_sub` receives, with waits on a predicate instead of fixed sleeps.
//!
//! Shared by the integration tests (`tests/common`) and by the MQTT client's unit tests
//! (`src/mqtt/broker_tests.rs` includes this file by path), so it depends on nothing but std,
//! `tempfile` and `serde_json`. Needs Debian's `mosquitto` and `mosquitto-clients`; another
//! broker binary can be given in `ADAPTD_MOSQUITTO`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound of every wait, so a broken daemon fails the test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(90);

/// The broker binary: `ADAPTD_MOSQUITTO`, else Debian's path, else `mosquitto` on the PATH.
pub fn mosquitto_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ADAPTD_MOSQUITTO") {
        return PathBuf::from(p);
    }
    let debian = Path::new("/usr/sbin/mosquitto");
    if debian.exists() {
        debian.to_owned()
    } else {
        PathBuf::from("mosquitto")
    }
}

/// A Mosquitto process on 127.0.0.1:`port` (no persistence, anonymous), killed on drop.
pub struct TestBroker {
    port: u16,
    dir: tempfile::TempDir,
    extra_config: String,
    child: Option<Child>,
}

impl TestBroker {
    pub fn start() -> TestBroker {
        TestBroker::start_with("")
    }

    /// A broker whose configuration file ends with `extra_config` (TLS, passwords...).
    /// Retried on another port when the first one is taken meanwhile by another process.
    pub fn start_with(extra_config: &str) -> TestBroker {
        let mut dir = tempfile::tempdir().expect("tempdir");
        // Mosquitto started as root drops to the `mosquitto` user before loading TLS files.
        set_mode(dir.path(), 0o755);
        for _ in 0..3 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").port()
            };
            let mut broker = TestBroker {
                port,
                dir,
                extra_config: extra_config.to_owned(),
                child: None,
            };
            if broker.spawn() {
                return broker;
            }
            dir = broker.take_dir();
        }
        panic!("mosquitto did not start on a free port three times in a row");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's own directory (its config and log live there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.stop();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    fn spawn(&mut self) -> bool {
        let conf = self.dir.path().join("mosquitto.conf");
        let text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n{}",
            self.port, self.extra_config
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).expect("log");
        let log2 = log.try_clone().expect("log");
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}; install Mosquitto (apt-get install mosquitto) or set ADAPTD_MOSQUITTO",
                    mosquitto_bin().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Some(child) = &mut self.child {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "mosquitto did not listen on {} within 5 s:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// kill -9: retained messages die with it (no persistence), clients see the link drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port (after [`TestBroker::stop`]); retried for a few
    /// seconds while the kernel still holds the port.
    pub fn restart(&mut self) {
        for _ in 0..10 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "mosquitto did not restart on {}:\n{}",
            self.port,
            self.log()
        );
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A payload as JSON, `Null` when it is not JSON (a predicate then simply does not match).
pub fn json(p: &str) -> Value {
    serde_json::from_str(p).unwrap_or(Value::Null)
}

/// What `mosquitto_sub -v` receives on some topics under a base, as a mailbox: a wait takes
/// the first matching message, received before or during the wait, and leaves the others for
/// later waits (replies, `state` and `training` messages from different tasks may arrive in
/// any order). Publishing goes through `mosquitto_pub`, a foreign client.
pub struct Bus {
    port: u16,
    base: String,
    rx: Receiver<(String, String)>,
    kept: Vec<(String, String)>,
    sub: Child,
    scratch: tempfile::TempDir,
}

impl Bus {
    /// Subscribes to `base/<topic>` for each of `topics` (filters with `+` allowed) and
    /// returns once the subscription is live: a probe message has made the round trip.
    pub fn subscribe(port: u16, base: &str, topics: &[&str]) -> Bus {
        let probe = format!("{base}/test-harness-probe");
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v"]);
        for t in topics {
            cmd.args(["-t", &format!("{base}/{t}")]);
        }
        cmd.args(["-t", &probe]);
        let mut sub = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run mosquitto_sub (apt-get install mosquitto-clients)");
        let out = sub.stdout.take().expect("stdout");
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
        let mut bus = Bus {
            port,
            base: base.to_owned(),
            rx,
            kept: Vec::new(),
            sub,
            scratch: tempfile::tempdir().expect("tempdir"),
        };
        bus.until_live(&probe);
        bus
    }

    /// mosquitto_sub has no "subscribed" signal: publish probes until one comes back.
    fn until_live(&mut self, probe: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // A refused publish (the broker still binding, a loaded machine) is tried again
            // in the next round, like a probe that got no echo.
            if !try_publish_raw(self.port, probe, &["-m", "probe"]) {
                std::thread::sleep(Duration::from_millis(300));
                continue;
            }
            let round = Instant::now() + Duration::from_millis(300);
            while let Some(left) = round.checked_duration_since(Instant::now()) {
                match self.rx.recv_timeout(left) {
                    Ok((t, _)) if t == probe => return,
                    Ok(m) => self.kept.push(m),
                    Err(_) => break,
                }
            }
        }
        panic!("mosquitto_sub on port {} never received a probe", self.port);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The first message on `topic` (under the base) whose payload satisfies `pred`.
    pub fn wait_for(&mut self, topic: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let full = format!("{}/{topic}", self.base);
        if let Some(i) = self.kept.iter().position(|(t, p)| *t == full && pred(p)) {
            return self.kept.remove(i).1;
        }
        let deadline = Instant::now() + WAIT;
        // The last payloads on the topic that did not match, for the failure message: what
        // did come says more than what did not.
        let mut seen: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok((t, p)) if t == full && pred(&p) => return p,
                Ok((t, p)) if t == full => {
                    if seen.len() == 6 {
                        seen.pop_front();
                    }
                    let per_frame = t.ends_with("/detections") || t.ends_with("/stats");
                    seen.push_back(p.chars().take(600).collect());
                    if !per_frame {
                        self.kept.push((t, p));
                    }
                }
                // Per-frame messages are only ever awaited fresh: do not hoard them.
                Ok((t, _)) if t.ends_with("/detections") || t.ends_with("/stats") => {}
                Ok(m) => self.kept.push(m),
                Err(_) => break,
            }
        }
        let seen: Vec<String> = seen.into_iter().collect();
        panic!(
            "no {what} on {full} within {WAIT:?}; the last payloads there:\n{}",
            seen.join("\n")
        );
    }

    /// Every message on `topic` received so far and not yet awaited, oldest first.
    pub fn drain(&mut self, topic: &str) -> Vec<String> {
        let full = format!("{}/{topic}", self.base);
        while let Ok(m) = self.rx.try_recv() {
            self.kept.push(m);
        }
        let (out, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.kept)
            .into_iter()
            .partition(|(t, _)| *t == full);
        self.kept = rest;
        out.into_iter().map(|(_, p)| p).collect()
    }

    /// The first `reply` whose JSON satisfies `pred`.
    pub fn reply(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        json(&self.wait_for("reply", what, |p| pred(&json(p))))
    }

    /// Publishes `payload` (QoS 1) on `base/<topic>`.
    pub fn publish(&self, topic: &str, payload: &str) {
        let f = self.scratch.path().join("payload.bin");
        std::fs::write(&f, payload).expect("write payload");
        self.publish_file(topic, &f);
    }

    /// Publishes a file's bytes (QoS 1) on `base/<topic>`.
    pub fn publish_file(&self, topic: &str, file: &Path) {
        let t = format!("{}/{topic}", self.base);
        let f = file.to_string_lossy();
        publish_raw(self.port, &t, &["-q", "1", "-f", &f]);
    }

    /// Sends a command whose JSON payload carries an `id`; returns the reply with that id.
    pub fn ask(&mut self, topic: &str, payload: &str) -> Value {
        let id = json(payload)["id"].clone();
        self.publish(topic, payload);
        self.reply(&format!("the reply to {topic} {payload}"), |v| {
            v["id"] == id
        })
    }

    /// The retained message on `topic`, as a new subscriber (Home Assistant after a restart)
    /// gets it; `Null` when there is none within 10 s.
    pub fn retained(&self, topic: &str) -> Value {
        let full = format!("{}/{topic}", self.base);
        json(&retained_raw(self.port, &full))
    }

    /// Polls the retained message on `topic` until `pred` holds (it follows replies closely,
    /// not at once).
    pub fn retained_where(&self, topic: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.retained(topic);
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no retained {topic} with {what}: {s}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.sub.kill();
        let _ = self.sub.wait();
    }
}

/// The retained payload of an absolute topic, as text (empty when none within 10 s).
pub fn retained_raw(port: u16, topic: &str) -> String {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-C", "1", "-W", "10", "-t", topic])
        .output()
        .expect("run mosquitto_sub (apt-get install mosquitto-clients)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn publish_raw(port: u16, topic: &str, args: &[&str]) {
    assert!(
        try_publish_raw(port, topic, args),
        "mosquitto_pub to {topic}"
    );
}

fn try_publish_raw(port: u16, topic: &str, args: &[&str]) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(args)
        .status()
        .expect("run mosquitto_pub (apt-get install mosquitto-clients)")
        .success()
}
