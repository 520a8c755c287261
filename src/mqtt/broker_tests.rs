//! Tests of [`MqttLink`] against a real Mosquitto that each test starts on a free loopback
//! port (and kills on drop), observed by a second client (rumqttc itself).
//!
//! They live inside the module, not under `tests/`, so they travel with the code. They need
//! the `mosquitto` binary (Debian: `apt-get install mosquitto`; another path can be given in
//! `ADAPTD_MOSQUITTO`) and, for the TLS test, `openssl`; without them they fail and say so.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use tokio::sync::mpsc;

use crate::mqtt::client::LinkEvent;
use crate::mqtt::commands::Request;
use crate::mqtt::config::{MqttConfig, MqttError};
use crate::mqtt::discovery::{device_discovery, with_removals, DeviceKind, DiscoveredStream};
use crate::mqtt::topics::{Incoming, Topics};
use crate::mqtt::MqttLink;

/// The one Mosquitto harness, shared with the integration tests.
#[path = "../../tests/common/mosquitto.rs"]
mod mosquitto;
use mosquitto::{set_mode, TestBroker};

const WAIT: Duration = Duration::from_secs(10);
const CHILD_PORT_ENV: &str = "ADAPTD_MQTT_TEST_CHILD_PORT";
const CHILD_DEVICE_ENV: &str = "ADAPTD_MQTT_TEST_CHILD_DEVICE";

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    u64::from(std::process::id()) * 1000 + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A second client that records what it receives.
struct Observer {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    async fn connect(port: u16, filters: &[String]) -> Observer {
        let mut opts = MqttOptions::new(format!("observer-{}", unique()), "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        if !filters.is_empty() {
            let f = filters
                .iter()
                .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
            client.subscribe_many(f).await.expect("subscribe");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let want_suback = !filters.is_empty();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec(), p.retain));
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) if !want_suback => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready_rx.recv())
            .await
            .expect("observer connected and subscribed in time");
        Observer { client, rx, task }
    }

    /// The next message on `topic` (others are skipped), or None after `within`.
    async fn next_on(&mut self, topic: &str, within: Duration) -> Option<(Vec<u8>, bool)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((t, payload, retain))) if t == topic => return Some((payload, retain)),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Waits for `payload` on `topic`, skipping other messages; returns the retain flag.
    async fn expect(&mut self, topic: &str, payload: &str) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((t, p, retain))) if t == topic && p == payload.as_bytes() => return retain,
                Ok(Some((t, p, _))) => seen.push(format!("{t}: {}", String::from_utf8_lossy(&p))),
                Ok(None) | Err(_) => {
                    panic!("no {payload:?} on {topic} within {WAIT:?}; saw {seen:?}")
                }
            }
        }
    }

    async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("observer publish");
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The retained message on `topic`, as a fresh subscriber sees it.
async fn retained(port: u16, topic: &str) -> Option<String> {
    let mut o = Observer::connect(port, &[topic.to_owned()]).await;
    let (payload, retain) = o.next_on(topic, Duration::from_secs(2)).await?;
    assert!(
        retain,
        "a fresh subscriber got a live message on {topic}, not the retained one"
    );
    Some(String::from_utf8_lossy(&payload).into_owned())
}

fn config(port: u16) -> MqttConfig {
    MqttConfig {
        url: format!("mqtt://127.0.0.1:{port}"),
        device_id: Some(format!("t{}", unique())),
        keep_alive_secs: 5,
        ..MqttConfig::default()
    }
}

/// The next event that `pick` accepts (others are skipped).
async fn wait_event<T>(
    rx: &mut mpsc::Receiver<LinkEvent>,
    mut pick: impl FnMut(&LinkEvent) -> Option<T>,
    within: Duration,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) => {
                if let Some(t) = pick(&ev) {
                    return Some(t);
                }
            }
            Ok(None) | Err(_) => return None,
        }
    }
}

async fn connected(rx: &mut mpsc::Receiver<LinkEvent>, within: Duration) -> Option<u64> {
    wait_event(
        rx,
        |e| match e {
            LinkEvent::Connected { connects } => Some(*connects),
            _ => None,
        },
        within,
    )
    .await
}

async fn message(rx: &mut mpsc::Receiver<LinkEvent>) -> (String, Incoming, Vec<u8>) {
    wait_event(
        rx,
        |e| match e {
            LinkEvent::Message {
                topic,
                incoming,
                payload,
            } => Some((topic.clone(), incoming.clone(), payload.clone())),
            _ => None,
        },
        WAIT,
    )
    .await
    .expect("a message reaches the owner")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_publishes_online_retained() {
    let broker = TestBroker::start();
    let cfg = config(broker.port());
    let topics = Topics::from_config(&cfg);
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    assert_eq!(connected(&mut events, WAIT).await, Some(1));
    assert!(link.publisher().is_connected());
    assert_eq!(
        retained(broker.port(), &topics.available())
            .await
            .as_deref(),
        Some("online")
    );
    let stats = link.publisher().stats();
    assert!(stats.connected);
    assert_eq!((stats.connects, stats.reconnects), (1, 0));
    assert!(link.shutdown(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_publishes_stopped_and_no_will() {
    let broker = TestBroker::start();
    let cfg = config(broker.port());
    let topics = Topics::from_config(&cfg);
    let mut obs = Observer::connect(broker.port(), &[topics.available()]).await;
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    assert!(connected(&mut events, WAIT).await.is_some());
    obs.expect(&topics.available(), "online").await;
    let publisher = link.publisher().clone();
    assert!(link.shutdown(WAIT).await, "clean disconnect");
    assert!(
        !obs.expect(&topics.available(), "stopped").await,
        "live message"
    );
    // Had the DISCONNECT not been flushed, the broker would publish the will right away.
    let after = obs
        .next_on(&topics.available(), Duration::from_secs(2))
        .await;
    assert_eq!(after, None, "nothing may follow `stopped`");
    assert_eq!(
        retained(broker.port(), &topics.available())
            .await
            .as_deref(),
        Some("stopped")
    );
    assert!(matches!(
        publisher.publish(&topics.state(), "x", false).await,
        Err(MqttError::Closed)
    ));
}

/// Runs a link in a child process (the test binary itself), which the parent test kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: run in a child process by lwt_offline_after_crash"]
async fn lwt_child_process() {
    let (Ok(port), Ok(device)) = (
        std::env::var(CHILD_PORT_ENV),
        std::env::var(CHILD_DEVICE_ENV),
    ) else {
        return;
    };
    let cfg = MqttConfig {
        url: format!("mqtt://127.0.0.1:{port}"),
        device_id: Some(device),
        keep_alive_secs: 5,
        ..MqttConfig::default()
    };
    let (link, _events) = MqttLink::start(&cfg).expect("start");
    assert!(link.publisher().wait_connected(WAIT).await);
    println!("CHILD_READY");
    tokio::time::sleep(Duration::from_secs(120)).await;
    drop(link);
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lwt_offline_after_crash() {
    let broker = TestBroker::start();
    let device = format!("crash{}", unique());
    let topics = Topics::new("adaptd", &device);
    let mut obs = Observer::connect(broker.port(), &[topics.available()]).await;

    let exe = std::env::current_exe().expect("current exe");
    // Under qemu-user without binfmt_misc the kernel cannot start a foreign ELF, and qemu
    // reports that only as the child's exit status 127: say why instead of "did not connect".
    let probe = Command::new(&exe)
        .args(["--list", "--exact", "no_such_test"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!(
            "lwt_offline_after_crash skipped: this test binary cannot start a copy of itself \
             ({probe:?}); under qemu-user, register binfmt_misc first (sudo cross/binfmt)"
        );
        return;
    }
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, m)| m);
    let mut child = KillOnDrop(
        Command::new(exe)
            .args([
                &format!("{module}::lwt_child_process"),
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_PORT_ENV, broker.port().to_string())
            .env(CHILD_DEVICE_ENV, &device)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the test binary"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("CHILD_READY"))
    });
    let ready = tokio::time::timeout(Duration::from_secs(30), ready).await;
    assert!(
        matches!(ready, Ok(Ok(true))),
        "the child link did not connect"
    );
    obs.expect(&topics.available(), "online").await;

    child.0.kill().expect("SIGKILL the child");
    let _ = child.0.wait();
    assert!(
        !obs.expect(&topics.available(), "offline").await,
        "will arrives live"
    );
    assert_eq!(
        retained(broker.port(), &topics.available())
            .await
            .as_deref(),
        Some("offline")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_broker_restart() {
    let mut broker = TestBroker::start();
    let cfg = config(broker.port());
    let topics = Topics::from_config(&cfg);
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    let publisher = link.publisher().clone();
    assert_eq!(connected(&mut events, WAIT).await, Some(1));

    broker.stop();
    let deadline = Instant::now() + WAIT;
    while publisher.is_connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !publisher.is_connected(),
        "the link noticed the broker is gone"
    );
    assert!(matches!(
        publisher.publish(&topics.state(), "{}", true).await,
        Err(MqttError::NotConnected)
    ));
    assert!(publisher
        .try_publish(&topics.camera_detections("default"), "{}", false)
        .is_err());
    // Let a few attempts fail against the closed port.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(publisher.stats().failures >= 2, "{:?}", publisher.stats());

    broker.restart();
    assert_eq!(
        connected(&mut events, Duration::from_secs(30)).await,
        Some(2)
    );
    let stats = publisher.stats();
    assert_eq!((stats.connects, stats.reconnects), (2, 1));
    assert!(stats.dropped >= 2);
    // The restarted broker lost its retained messages: `online` is there because the link
    // published it again.
    assert_eq!(
        retained(broker.port(), &topics.available())
            .await
            .as_deref(),
        Some("online")
    );
    // The subscriptions were renewed: a command published now arrives.
    let obs = Observer::connect(broker.port(), &[]).await;
    obs.publish(&topics.cmd("status"), "{\"id\": 1}", false)
        .await;
    let (topic, incoming, payload) = message(&mut events).await;
    assert_eq!(topic, topics.cmd("status"));
    assert_eq!(incoming, Incoming::Command("status".into()));
    assert_eq!(payload, b"{\"id\": 1}");
    assert!(link.shutdown(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_command_gets_an_error_reply() {
    let broker = TestBroker::start();
    let cfg = config(broker.port());
    let topics = Topics::from_config(&cfg);
    let mut obs = Observer::connect(broker.port(), &[topics.reply()]).await;
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    assert!(connected(&mut events, WAIT).await.is_some());

    obs.publish(&topics.cmd("train"), "{force: yes", false)
        .await;
    let (_, incoming, payload) = message(&mut events).await;
    let Incoming::Command(verb) = incoming else {
        panic!("expected a command, got {incoming:?}");
    };
    let rejected = Request::parse(&verb, &payload).expect_err("malformed");
    link.publisher()
        .publish(&topics.reply(), rejected.reply().to_json(), false)
        .await
        .expect("reply");
    let (reply, _) = obs.next_on(&topics.reply(), WAIT).await.expect("a reply");
    let reply: serde_json::Value = serde_json::from_slice(&reply).expect("reply is JSON");
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["cmd"], "train");
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("not valid JSON")),
        "{reply}"
    );

    // A labeled sample arrives as such.
    obs.publish(&topics.sample("cat"), vec![0xff, 0xd8, 0xff], false)
        .await;
    let (_, incoming, payload) = message(&mut events).await;
    assert_eq!(
        incoming,
        Incoming::Sample {
            camera: None,
            label: "cat".into()
        }
    );
    assert_eq!(payload, [0xff, 0xd8, 0xff]);
    assert!(link.shutdown(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_do_not_kill_the_link() {
    let broker = TestBroker::start();
    let mut cfg = config(broker.port());
    cfg.max_packet_bytes = 16384;
    let topics = Topics::from_config(&cfg);
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    let publisher = link.publisher().clone();
    assert_eq!(connected(&mut events, WAIT).await, Some(1));
    let obs = Observer::connect(broker.port(), &[]).await;

    // Incoming: rumqttc drops the connection at the header; the link reports and reconnects.
    obs.publish(&topics.cmd("label"), vec![b' '; 40_000], false)
        .await;
    let (size, max) = wait_event(
        &mut events,
        |e| match e {
            LinkEvent::Oversized { size, max } => Some((*size, *max)),
            _ => None,
        },
        WAIT,
    )
    .await
    .expect("an Oversized event");
    assert!(size > 40_000 && max == 16384, "{size} {max}");
    assert_eq!(connected(&mut events, WAIT).await, Some(2));
    assert_eq!(publisher.stats().oversized, 1);
    // The message was lost (clean session), not redelivered: the next one is a normal command.
    obs.publish(&topics.cmd("status"), "{}", false).await;
    let (topic, _, _) = message(&mut events).await;
    assert_eq!(topic, topics.cmd("status"));

    // Outgoing: refused before rumqttc, which would otherwise drop the connection.
    let err = publisher
        .publish(&topics.camera_snapshot("default"), vec![0u8; 20_000], true)
        .await
        .expect_err("too large");
    assert!(
        matches!(err, MqttError::PayloadTooLarge { max: 16384, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("max_packet_bytes"));
    assert!(matches!(
        publisher.try_publish(
            &topics.camera_detections("default"),
            vec![0u8; 20_000],
            false
        ),
        Err(MqttError::PayloadTooLarge { .. })
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = publisher.stats();
    assert!(stats.connected);
    assert_eq!(stats.connects, 2, "no reconnect from the refused publishes");
    assert!(link.shutdown(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_commands_are_ignored() {
    let broker = TestBroker::start();
    let cfg = config(broker.port());
    let topics = Topics::from_config(&cfg);
    let obs = Observer::connect(broker.port(), &[]).await;
    obs.publish(&topics.cmd("forget"), r#"{"label": "cat"}"#, true)
        .await;
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    assert!(connected(&mut events, WAIT).await.is_some());
    obs.publish(&topics.cmd("pause"), "", false).await;
    let (topic, _, _) = message(&mut events).await;
    assert_eq!(
        topic,
        topics.cmd("pause"),
        "the retained forget was skipped"
    );
    assert_eq!(link.publisher().stats().retained_ignored, 1);
    assert!(link.shutdown(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_is_published_on_connect_and_on_home_assistant_birth() {
    let broker = TestBroker::start();
    let cfg = config(broker.port());
    let topics = Topics::from_config(&cfg);
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    assert!(connected(&mut events, WAIT).await.is_some());
    let discovery = device_discovery(&topics, crate::mqtt::client::SW_VERSION, cfg.qos, &[]);
    // `Connected` comes before the link's first publishes reach the broker: an observer that
    // subscribes in between gets the discovery live, not retained. A fresh observer per try
    // sees what the broker retained.
    let deadline = std::time::Instant::now() + WAIT;
    let (mut obs, payload) = loop {
        let mut obs =
            Observer::connect(broker.port(), std::slice::from_ref(&discovery.topic)).await;
        let (payload, retain) = obs
            .next_on(&discovery.topic, WAIT)
            .await
            .expect("discovery");
        if retain {
            break (obs, payload);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the discovery message is never retained"
        );
    };
    let v: serde_json::Value = serde_json::from_slice(&payload).expect("json");
    assert_eq!(v, discovery.payload);

    obs.publish(&topics.ha_status(), "online", false).await;
    let (payload, retain) = obs
        .next_on(&discovery.topic, WAIT)
        .await
        .expect("republished");
    assert!(!retain, "a live copy after Home Assistant's birth message");
    assert_eq!(payload, discovery.to_json());
    let told = wait_event(
        &mut events,
        |e| (*e == LinkEvent::HomeAssistantOnline).then_some(()),
        WAIT,
    )
    .await;
    assert!(told.is_some(), "HomeAssistantOnline event");
    // Home Assistant going offline asks for nothing.
    obs.publish(&topics.ha_status(), "offline", false).await;
    assert!(obs
        .next_on(&discovery.topic, Duration::from_secs(1))
        .await
        .is_none());
    assert!(link.shutdown(WAIT).await);
}

/// Whether a discovery payload carries removal stubs (components with only `p`).
fn has_stubs(payload: &[u8]) -> bool {
    let v: serde_json::Value = serde_json::from_slice(payload).expect("discovery json");
    v["cmps"].as_object().expect("cmps").values().any(|c| {
        c.as_object()
            .is_some_and(|o| o.len() == 1 && o.contains_key("p"))
    })
}

/// Every message on `topic` within `within`.
async fn all_on(obs: &mut Observer, topic: &str, within: Duration) -> Vec<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while let Some((payload, _)) = obs
        .next_on(
            topic,
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        )
        .await
    {
        out.push(payload);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_camera_is_removed_from_home_assistant_once() {
    let broker = TestBroker::start();
    let cfg = config(broker.port());
    let topics = Topics::from_config(&cfg);
    let camera = |name: &str| DiscoveredStream {
        name: name.into(),
        kind: DeviceKind::Camera,
        labels: vec!["person".into()],
        zones: Vec::new(),
        is_detector: true,
    };
    let sw = crate::mqtt::client::SW_VERSION;
    // A previous run had a camera `gone` that the config no longer has.
    let old = device_discovery(&topics, sw, cfg.qos, &[camera("front"), camera("gone")]);
    let streams = [camera("front")];
    let current = device_discovery(&topics, sw, cfg.qos, &streams);
    let expected = with_removals(&current, &old.to_json())
        .expect("valid")
        .expect("stubs for `gone`");
    let mut obs = Observer::connect(broker.port(), std::slice::from_ref(&old.topic)).await;
    obs.publish(&old.topic, old.to_json(), true).await;
    assert_eq!(
        obs.next_on(&old.topic, WAIT).await.map(|(p, _)| p),
        Some(old.to_json())
    );

    let (link, mut events) = MqttLink::start_for(&cfg, &streams).expect("start");
    assert!(connected(&mut events, WAIT).await.is_some());
    // The plain message on connect, then the one with the stubs, and nothing after it: the
    // link sees its own republished message come back and leaves it at that.
    let deadline = Instant::now() + WAIT;
    let mut seen: Vec<Vec<u8>> = Vec::new();
    while !seen.iter().any(|p| has_stubs(p)) {
        assert!(Instant::now() < deadline, "no removal published");
        let (p, _) = obs
            .next_on(&old.topic, WAIT)
            .await
            .expect("a discovery message");
        seen.push(p);
    }
    seen.extend(all_on(&mut obs, &old.topic, Duration::from_secs(2)).await);
    let with_stubs: Vec<&Vec<u8>> = seen.iter().filter(|p| has_stubs(p)).collect();
    assert_eq!(with_stubs.len(), 1, "the removal is published once");
    let v: serde_json::Value = serde_json::from_slice(with_stubs[0]).expect("json");
    assert_eq!(v, expected.payload);
    assert_eq!(v["cmps"]["gone_objects"], serde_json::json!({"p": "event"}));
    assert!(seen.iter().all(|p| *p == current.to_json() || has_stubs(p)));
    // It is what the broker keeps, so a Home Assistant that starts later still removes them,
    // and Home Assistant's birth gets the same.
    let kept = retained(broker.port(), &old.topic).await.expect("retained");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&kept).expect("json"),
        expected.payload
    );
    obs.publish(&topics.ha_status(), "online", false).await;
    let (p, _) = obs.next_on(&old.topic, WAIT).await.expect("republished");
    assert!(has_stubs(&p));
    assert!(all_on(&mut obs, &old.topic, Duration::from_secs(1))
        .await
        .is_empty());
    assert!(link.shutdown(WAIT).await);

    // The next run finds its own stubs retained: nothing more to remove, and it leaves the
    // plain message behind.
    let (link, mut events) = MqttLink::start_for(&cfg, &streams).expect("restart");
    assert!(connected(&mut events, WAIT).await.is_some());
    let again = all_on(&mut obs, &old.topic, Duration::from_secs(3)).await;
    assert_eq!(again, vec![current.to_json()]);
    let kept = retained(broker.port(), &old.topic).await.expect("retained");
    assert_eq!(kept.into_bytes(), current.to_json());
    assert!(link.shutdown(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_retained_discovery_message_is_replaced() {
    let broker = TestBroker::start();
    let cfg = config(broker.port());
    let topics = Topics::from_config(&cfg);
    let mut obs = Observer::connect(broker.port(), &[topics.discovery_config()]).await;
    obs.publish(&topics.discovery_config(), "{not json", true)
        .await;
    assert!(obs
        .next_on(&topics.discovery_config(), WAIT)
        .await
        .is_some());
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    assert!(connected(&mut events, WAIT).await.is_some());
    let current = device_discovery(&topics, crate::mqtt::client::SW_VERSION, cfg.qos, &[]);
    let seen = all_on(&mut obs, &topics.discovery_config(), Duration::from_secs(2)).await;
    assert_eq!(seen, vec![current.to_json()]);
    assert!(link.publisher().is_connected());
    assert!(link.shutdown(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_discovery_when_disabled() {
    let broker = TestBroker::start();
    let mut cfg = config(broker.port());
    cfg.discovery = false;
    let topics = Topics::from_config(&cfg);
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    assert!(connected(&mut events, WAIT).await.is_some());
    assert_eq!(
        retained(broker.port(), &topics.discovery_config()).await,
        None
    );
    assert!(link.shutdown(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_the_broker_is_down_is_bounded() {
    let mut broker = TestBroker::start();
    let cfg = config(broker.port());
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    assert!(connected(&mut events, WAIT).await.is_some());
    broker.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert!(!link.shutdown(Duration::from_secs(3)).await);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// CA, server certificate for 127.0.0.1 and a client certificate, made by `openssl`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl: {e}; install it (apt-get install openssl)")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_pki(dir: &Path, name: &str) -> Pki {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let s = |f: &str| format!("{name}-{f}");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (ca_key, ca) = (s("ca.key"), s("ca.pem"));
    args.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        "/CN=adaptd test CA",
    ]);
    openssl(dir, &args);
    for (who, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, cert, extf) = (
            s(&format!("{who}.key")),
            s(&format!("{who}.csr")),
            s(&format!("{who}.pem")),
            s(&format!("{who}.ext")),
        );
        std::fs::write(dir.join(&extf), ext).expect("ext file");
        let mut args = vec!["req"];
        args.extend(ec);
        let subj = format!("/CN=adaptd test {who}");
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &extf,
            ],
        );
    }
    for f in std::fs::read_dir(dir).expect("read_dir").flatten() {
        set_mode(&f.path(), 0o644);
    }
    Pki {
        ca: p("ca.pem"),
        server_cert: p("server.pem"),
        server_key: p("server.key"),
        client_cert: p("client.pem"),
        client_key: p("client.key"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_from_configured_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    set_mode(dir.path(), 0o755);
    let pki = make_pki(dir.path(), "good");
    let other = make_pki(dir.path(), "other");
    let broker = TestBroker::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        pki.ca.display(),
        pki.server_cert.display(),
        pki.server_key.display()
    ));
    let mut cfg = config(broker.port());
    cfg.url = format!("mqtts://127.0.0.1:{}", broker.port());
    cfg.ca_file = Some(pki.ca.clone());
    cfg.client_cert = Some(pki.client_cert.clone());
    cfg.client_key = Some(pki.client_key.clone());
    assert_eq!(cfg.validate(), Vec::<String>::new());
    let topics = Topics::from_config(&cfg);
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    assert_eq!(
        connected(&mut events, WAIT).await,
        Some(1),
        "TLS connection"
    );
    // Round trip over TLS: the link receives its own command.
    link.publisher()
        .publish(&topics.cmd("status"), "{}", false)
        .await
        .expect("publish");
    let (topic, _, _) = message(&mut events).await;
    assert_eq!(topic, topics.cmd("status"));
    assert!(link.shutdown(WAIT).await);

    // A CA that did not sign the broker's certificate: no connection, failures counted.
    let mut wrong = cfg.clone();
    wrong.ca_file = Some(other.ca.clone());
    let (link, _events) = MqttLink::start(&wrong).expect("start");
    assert!(
        !link
            .publisher()
            .wait_connected(Duration::from_secs(2))
            .await
    );
    assert!(link.publisher().stats().failures >= 1);
    drop(link);

    // A key that does not belong to the certificate is refused before connecting.
    let mut mismatched = cfg.clone();
    mismatched.client_key = Some(other.client_key.clone());
    let err = MqttLink::start(&mismatched).expect_err("key mismatch");
    assert!(err.to_string().contains("client_key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_from_file_logs_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    set_mode(dir.path(), 0o755);
    let passwd = dir.path().join("passwd");
    let out = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwd)
        .args(["adaptd", "s3cr3t-Pw"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run mosquitto_passwd: {e}; install mosquitto"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    set_mode(&passwd, 0o644);
    let broker = TestBroker::start_with(&format!(
        "allow_anonymous false\npassword_file {}\n",
        passwd.display()
    ));

    let secret = dir.path().join("mqtt-password");
    std::fs::write(&secret, "s3cr3t-Pw\n").expect("write");
    set_mode(&secret, 0o600);
    let mut cfg = config(broker.port());
    cfg.username = Some("adaptd".into());
    cfg.password_file = Some(secret.clone());
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    assert_eq!(connected(&mut events, WAIT).await, Some(1), "logged in");
    assert!(!format!("{link:?} {cfg:?}").contains("s3cr3t"));
    assert!(link.shutdown(WAIT).await);

    std::fs::write(&secret, "wrong\n").expect("write");
    let (link, _events) = MqttLink::start(&cfg).expect("start");
    assert!(
        !link
            .publisher()
            .wait_connected(Duration::from_secs(2))
            .await
    );
    assert!(link.publisher().stats().failures >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_frame_publishing_never_blocks() {
    let broker = TestBroker::start();
    let cfg = config(broker.port());
    let topics = Topics::from_config(&cfg);
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    assert!(connected(&mut events, WAIT).await.is_some());
    let publisher = link.publisher().clone();
    let before = publisher.stats();
    // From a plain thread, like the inference thread.
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        for i in 0..5000 {
            let _ = publisher.try_publish(
                &topics.camera_detections("default"),
                vec![b'x'; 1000 + i % 7],
                false,
            );
        }
        (started.elapsed(), publisher.stats())
    });
    let (elapsed, after) = tokio::task::spawn_blocking(move || handle.join().expect("thread"))
        .await
        .expect("join");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let sent = (after.published - before.published) + (after.dropped - before.dropped);
    assert_eq!(sent, 5000);
    assert!(link.shutdown(WAIT).await);
}

/// An owner that does not drain its events must not stall the link: messages beyond the
/// channel are dropped and counted, and the owner can still publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_owner_does_not_deadlock_the_link() {
    let broker = TestBroker::start();
    let cfg = config(broker.port());
    let topics = Topics::from_config(&cfg);
    let mut reply_obs = Observer::connect(broker.port(), &[topics.reply()]).await;
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    assert!(connected(&mut events, WAIT).await.is_some());
    let obs = Observer::connect(broker.port(), &[]).await;
    let flood = 3 * crate::mqtt::client::EVENT_CAPACITY;
    for i in 0..flood {
        obs.publish(&topics.cmd("status"), format!("{{\"id\": {i}}}"), false)
            .await;
    }
    let deadline = Instant::now() + WAIT;
    while link.publisher().stats().received + link.publisher().stats().received_dropped
        < flood as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = link.publisher().stats();
    assert_eq!(
        stats.received,
        crate::mqtt::client::EVENT_CAPACITY as u64,
        "{stats:?}"
    );
    assert_eq!(
        stats.received_dropped,
        (flood - crate::mqtt::client::EVENT_CAPACITY) as u64
    );
    link.publisher()
        .publish(&topics.reply(), "{\"ok\": true}", false)
        .await
        .expect("publishing still works");
    assert!(reply_obs.next_on(&topics.reply(), WAIT).await.is_some());
    assert!(link.shutdown(WAIT).await);
}

/// A retained oversized message comes back on every subscription: the link keeps going, each
/// round logged, and the backoff keeps the rounds apart instead of spinning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_oversized_message_is_retried_with_backoff_not_spun() {
    let broker = TestBroker::start();
    let mut cfg = config(broker.port());
    cfg.max_packet_bytes = 16384;
    let topics = Topics::from_config(&cfg);
    let obs = Observer::connect(broker.port(), &[]).await;
    obs.publish(&topics.sample("cat"), vec![0u8; 40_000], true)
        .await;
    let (link, mut events) = MqttLink::start(&cfg).expect("start");
    let mut rounds = 0;
    while rounds < 2 {
        let ev = wait_event(
            &mut events,
            |e| matches!(e, LinkEvent::Oversized { .. }).then_some(()),
            Duration::from_secs(15),
        )
        .await;
        assert!(ev.is_some(), "the link keeps reconnecting (round {rounds})");
        rounds += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = link.publisher().stats();
    assert!(
        stats.connects <= 10,
        "a spinning loop would reconnect far more: {stats:?}"
    );
    assert_eq!(stats.failures, stats.oversized);
    // Clearing the retained message ends it.
    obs.publish(&topics.sample("cat"), Vec::new(), true).await;
    drop(link);
}

/// What the up-front size check in `Publisher` protects against: rumqttc fails the whole
/// connection when asked to send a packet over its outgoing limit (a canary: if this starts
/// failing, rumqttc changed its behaviour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_drops_the_connection_on_an_oversized_outgoing_packet() {
    let broker = TestBroker::start();
    let mut opts = MqttOptions::new(format!("canary-{}", unique()), "127.0.0.1", broker.port());
    opts.set_max_packet_size(4096, 4096);
    let (client, mut eventloop) = AsyncClient::new(opts, 8);
    client
        .publish("canary/big", QoS::AtLeastOnce, false, vec![0u8; 8000])
        .await
        .expect("queued");
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("poll fails within the timeout");
    assert!(
        matches!(
            outcome,
            rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                rumqttc::Error::OutgoingPacketTooLarge { .. }
            ))
        ),
        "{outcome:?}"
    );
}
