//! Tests of the embedded broker with real clients over loopback TCP: rumqttc's `AsyncClient`,
//! raw sockets speaking the packets a well-behaved client would not send, and Debian's
//! `mosquitto_pub` / `mosquitto_sub` as a foreign implementation.
//!
//! They live inside the module so that they travel with it. The interop tests need
//! `mosquitto-clients` (Debian: `apt-get install mosquitto-clients`); without it they fail
//! and say so. Timeouts only guard against hangs; nothing is timed. Where a test must show
//! that something did *not* happen, it waits on broker state or on a marker message sent
//! after the event, never on a sleep.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, PubRel, Publish, Subscribe,
    SubscribeFilter, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{BrokerError, BrokerOptions, EmbeddedBroker};

const WAIT: Duration = Duration::from_secs(20);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn broker_with(opts: BrokerOptions) -> EmbeddedBroker {
    EmbeddedBroker::start(loopback(0), opts)
        .await
        .expect("start the embedded broker")
}

async fn broker() -> EmbeddedBroker {
    broker_with(BrokerOptions::default()).await
}

fn port(b: &EmbeddedBroker) -> u16 {
    b.local_addr().port()
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

/// Polls `cond` until it holds; panics after [`WAIT`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A rumqttc client whose event loop runs in a task that forwards every event and stops at
/// the first error (no reconnect, so a closed connection stays closed).
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    /// Messages that arrived while waiting for something else, for `next_publish`.
    stash: VecDeque<Publish>,
    task: JoinHandle<()>,
}

impl Client {
    async fn connect(opts: MqttOptions) -> Client {
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(ev) => {
                        let done = matches!(ev, Event::Outgoing(Outgoing::Disconnect));
                        if tx.send(Ok(ev)).is_err() || done {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        break;
                    }
                }
            }
        });
        let mut c = Client {
            client,
            events,
            stash: VecDeque::new(),
            task,
        };
        let code = c
            .wait_for("CONNACK", |ev| match ev {
                Event::Incoming(Packet::ConnAck(a)) => Some(a.code),
                _ => None,
            })
            .await;
        assert_eq!(code, ConnectReturnCode::Success);
        c
    }

    async fn next_event(&mut self) -> Result<Event, String> {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("timed out waiting for an MQTT event")
            .unwrap_or_else(|| Err("event loop ended".to_owned()))
    }

    /// The first event `f` accepts; messages passed over are kept for `next_publish`.
    async fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        loop {
            match self.next_event().await {
                Ok(ev) => {
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                    if let Event::Incoming(Packet::Publish(p)) = ev {
                        self.stash.push_back(p);
                    }
                }
                Err(e) => panic!("waiting for {what}: connection failed: {e}"),
            }
        }
    }

    async fn next_publish(&mut self) -> Publish {
        if let Some(p) = self.stash.pop_front() {
            return p;
        }
        self.wait_for("PUBLISH", |ev| match ev {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        self.wait_for("SUBACK", |ev| match ev {
            Event::Incoming(Packet::SubAck(a)) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK, i.e. until it was routed.
    async fn publish_acked(&mut self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .expect("publish");
        self.wait_for("PUBACK", |ev| {
            matches!(ev, Event::Incoming(Packet::PubAck(_))).then_some(())
        })
        .await;
    }

    /// Waits until the connection fails; returns the error.
    async fn wait_closed(&mut self) -> String {
        loop {
            if let Err(e) = self.next_event().await {
                return e;
            }
        }
    }

    /// DISCONNECT, polled until it is sent (see shared/NOTES.md).
    async fn disconnect(mut self) {
        self.client.disconnect().await.expect("disconnect");
        self.wait_for("DISCONNECT sent", |ev| {
            matches!(ev, Event::Outgoing(Outgoing::Disconnect)).then_some(())
        })
        .await;
    }
}

impl Drop for Client {
    /// Drops the event loop and its socket without DISCONNECT: an abrupt close.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A bare TCP connection, to send what rumqttc would refuse to.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn open(port: u16) -> Raw {
        let stream = TcpStream::connect(loopback(port)).await.expect("connect");
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    async fn connect_with(port: u16, connect: Connect) -> Raw {
        let mut raw = Raw::open(port).await;
        raw.send(Packet::Connect(connect)).await;
        match raw.recv().await {
            Some(Packet::ConnAck(a)) => assert_eq!(a.code, ConnectReturnCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw
    }

    async fn connect(port: u16, id: &str) -> Raw {
        let mut c = Connect::new(id);
        c.keep_alive = 0;
        Raw::connect_with(port, c).await
    }

    async fn send(&mut self, packet: Packet) {
        let mut b = BytesMut::new();
        packet.write(&mut b, usize::MAX).expect("encode");
        self.send_bytes(&b).await;
    }

    /// Writes; a connection the broker already closed is not an error here.
    async fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next packet from the broker, or None once it closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buf, usize::MAX) {
                Ok(p) => return Some(p),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => panic!("the broker sent a malformed packet: {e}"),
            }
            match tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => panic!("timed out waiting for the broker"),
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn expect_closed(&mut self) {
        if let Some(p) = self.recv().await {
            panic!("expected the broker to close the connection, got {p:?}");
        }
    }
}

fn with_will(mut c: Connect, topic: &str, payload: &str, retain: bool) -> Connect {
    c.last_will = Some(LastWill::new(topic, payload, QoS::AtLeastOnce, retain));
    c
}

fn publish(topic: &str, qos: QoS, pkid: u16, payload: &[u8]) -> Publish {
    let mut p = Publish::new(topic, qos, payload.to_vec());
    p.pkid = pkid;
    p
}

// ---------------------------------------------------------------------------------------
// Routing

#[tokio::test]
async fn wildcard_subscriptions_receive_matching_messages() {
    let broker = broker().await;
    let mut sub = Client::connect(options("sub", port(&broker))).await;
    assert_eq!(
        sub.subscribe("a/+/c", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    // QoS 2 requested, QoS 1 granted.
    assert_eq!(
        sub.subscribe("x/#", QoS::ExactlyOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    sub.subscribe("end", QoS::AtMostOnce).await;
    let mut publisher = Client::connect(options("pub", port(&broker))).await;
    for topic in [
        "a/b/c", "a/b/d", "a/b/c/d", "x", "x/y/z", "y/x", "$SYS/x", "end",
    ] {
        publisher
            .publish_acked(topic, topic.as_bytes(), false)
            .await;
    }
    let mut got = Vec::new();
    loop {
        let p = sub.next_publish().await;
        assert!(!p.retain);
        // min(message QoS 1, granted): 0 for a/+/c, 1 for x/#.
        let expected_qos = if p.topic.starts_with('x') {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        assert_eq!(p.qos, expected_qos, "{}", p.topic);
        assert_eq!(p.payload, p.topic.as_bytes());
        if p.topic == "end" {
            break;
        }
        got.push(p.topic);
    }
    assert_eq!(got, ["a/b/c", "x", "x/y/z"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let broker = broker().await;
    let mut sub = Client::connect(options("sub", port(&broker))).await;
    sub.subscribe("o/#", QoS::AtMostOnce).await;
    sub.subscribe("o/+", QoS::AtLeastOnce).await;
    sub.subscribe("end", QoS::AtMostOnce).await;
    let mut publisher = Client::connect(options("pub", port(&broker))).await;
    publisher.publish_acked("o/1", b"1", false).await;
    publisher.publish_acked("end", b"", false).await;
    let first = sub.next_publish().await;
    assert_eq!((first.topic.as_str(), first.qos), ("o/1", QoS::AtLeastOnce));
    assert_eq!(sub.next_publish().await.topic, "end");
    broker.shutdown().await;
}

#[tokio::test]
async fn invalid_filters_get_the_failure_code() {
    let broker = broker().await;
    let mut raw = Raw::connect(port(&broker), "raw").await;
    let mut sub = Subscribe::new_many([
        SubscribeFilter::new("a/#/b".into(), QoS::AtMostOnce),
        SubscribeFilter::new("a/+".into(), QoS::ExactlyOnce),
        SubscribeFilter::new("".into(), QoS::AtMostOnce),
        SubscribeFilter::new("a+".into(), QoS::AtLeastOnce),
    ]);
    sub.pkid = 9;
    raw.send(Packet::Subscribe(sub)).await;
    match raw.recv().await {
        Some(Packet::SubAck(a)) => {
            assert_eq!(a.pkid, 9);
            assert_eq!(
                a.return_codes,
                [
                    SubscribeReasonCode::Failure,
                    SubscribeReasonCode::Success(QoS::AtLeastOnce),
                    SubscribeReasonCode::Failure,
                    SubscribeReasonCode::Failure,
                ]
            );
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // Still connected and served.
    raw.send(Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
    broker.shutdown().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = broker().await;
    let mut sub = Client::connect(options("sub", port(&broker))).await;
    sub.subscribe("u/#", QoS::AtLeastOnce).await;
    sub.subscribe("m", QoS::AtLeastOnce).await;
    sub.client.unsubscribe("u/#").await.expect("unsubscribe");
    sub.wait_for("UNSUBACK", |ev| {
        matches!(ev, Event::Incoming(Packet::UnsubAck(_))).then_some(())
    })
    .await;
    let mut publisher = Client::connect(options("pub", port(&broker))).await;
    publisher.publish_acked("u/1", b"x", false).await;
    publisher.publish_acked("m", b"marker", false).await;
    assert_eq!(sub.next_publish().await.topic, "m");
    broker.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// QoS

#[tokio::test]
async fn qos1_and_qos2_publishes_are_acknowledged() {
    let broker = broker().await;
    let mut sub = Client::connect(options("sub", port(&broker))).await;
    sub.subscribe("q/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(options("pub", port(&broker))).await;
    publisher.publish_acked("q/1", b"one", false).await;
    publisher
        .client
        .publish("q/2", QoS::ExactlyOnce, false, b"two".to_vec())
        .await
        .expect("publish");
    publisher
        .wait_for("PUBREC", |ev| {
            matches!(ev, Event::Incoming(Packet::PubRec(_))).then_some(())
        })
        .await;
    publisher
        .wait_for("PUBCOMP", |ev| {
            matches!(ev, Event::Incoming(Packet::PubComp(_))).then_some(())
        })
        .await;
    let p1 = sub.next_publish().await;
    assert_eq!((p1.topic.as_str(), p1.qos), ("q/1", QoS::AtLeastOnce));
    let p2 = sub.next_publish().await;
    assert_eq!((p2.topic.as_str(), p2.qos), ("q/2", QoS::AtLeastOnce));
    assert_eq!(p2.payload, &b"two"[..]);
    broker.shutdown().await;
}

#[tokio::test]
async fn qos2_resend_before_pubrel_is_routed_once() {
    let broker = broker().await;
    let mut sub = Client::connect(options("sub", port(&broker))).await;
    sub.subscribe("q2/#", QoS::AtLeastOnce).await;
    let mut raw = Raw::connect(port(&broker), "raw").await;
    let first = publish("q2/a", QoS::ExactlyOnce, 7, b"a");
    raw.send(Packet::Publish(first.clone())).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(r)) if r.pkid == 7));
    let mut again = first;
    again.dup = true;
    raw.send(Packet::Publish(again)).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(r)) if r.pkid == 7));
    raw.send(Packet::PubRel(PubRel::new(7))).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubComp(c)) if c.pkid == 7));
    // After PUBREL the id is free again: a new message with it is routed.
    raw.send(Packet::Publish(publish("q2/b", QoS::ExactlyOnce, 7, b"b")))
        .await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(r)) if r.pkid == 7));
    raw.send(Packet::PubRel(PubRel::new(7))).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubComp(c)) if c.pkid == 7));
    raw.send(Packet::Publish(publish("q2/end", QoS::AtLeastOnce, 8, b"")))
        .await;
    assert!(matches!(raw.recv().await, Some(Packet::PubAck(a)) if a.pkid == 8));
    let mut topics = Vec::new();
    loop {
        let p = sub.next_publish().await;
        if p.topic == "q2/end" {
            break;
        }
        topics.push(p.topic);
    }
    assert_eq!(topics, ["q2/a", "q2/b"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn outgoing_qos1_uses_distinct_packet_ids() {
    let broker = broker().await;
    let mut raw = Raw::connect(port(&broker), "raw").await;
    let mut sub = Subscribe::new("ids/#", QoS::AtLeastOnce);
    sub.pkid = 1;
    raw.send(Packet::Subscribe(sub)).await;
    assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
    let mut publisher = Client::connect(options("pub", port(&broker))).await;
    for i in 0..50 {
        publisher
            .publish_acked("ids/x", format!("{i}").as_bytes(), false)
            .await;
    }
    // Never acknowledged by `raw`, so no id may repeat.
    let mut seen = std::collections::HashSet::new();
    for i in 0..50 {
        match raw.recv().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.qos, QoS::AtLeastOnce);
                assert_eq!(p.payload, format!("{i}").as_bytes());
                assert!(
                    p.pkid != 0 && seen.insert(p.pkid),
                    "packet id {} reused",
                    p.pkid
                );
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    broker.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Retained messages

#[tokio::test]
async fn retained_message_reaches_later_subscribers_and_empty_payload_deletes_it() {
    let broker = broker().await;
    let mut early = Client::connect(options("early", port(&broker))).await;
    early.subscribe("r/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(options("pub", port(&broker))).await;
    publisher.publish_acked("r/1", b"v1", true).await;

    // Routed to an existing subscriber: retain flag cleared (§3.3.1.3).
    let p = early.next_publish().await;
    assert_eq!((p.topic.as_str(), p.retain), ("r/1", false));

    // Sent on SUBSCRIBE: retain flag set, QoS min(1, granted 0).
    let mut late = Client::connect(options("late", port(&broker))).await;
    late.subscribe("r/+", QoS::AtMostOnce).await;
    let p = late.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain, p.qos),
        ("r/1", &b"v1"[..], true, QoS::AtMostOnce)
    );

    // Latest value only.
    publisher.publish_acked("r/1", b"v2", true).await;
    let mut later = Client::connect(options("later", port(&broker))).await;
    later.subscribe("r/#", QoS::AtLeastOnce).await;
    let p = later.next_publish().await;
    assert_eq!((&p.payload[..], p.retain), (&b"v2"[..], true));

    // An empty retained payload deletes, and is still routed to current subscribers.
    publisher.publish_acked("r/1", b"", true).await;
    let p = early.next_publish().await; // v2
    assert_eq!(&p.payload[..], b"v2");
    let p = early.next_publish().await;
    assert_eq!((&p.payload[..], p.retain), (&b""[..], false));
    assert_eq!(broker.retained_bytes(), 0);
    let mut last = Client::connect(options("last", port(&broker))).await;
    last.subscribe("r/#", QoS::AtLeastOnce).await;
    publisher.publish_acked("r/marker", b"m", false).await;
    assert_eq!(last.next_publish().await.topic, "r/marker");
    broker.shutdown().await;
}

#[tokio::test]
async fn retained_bytes_are_bounded() {
    let broker = broker_with(BrokerOptions {
        max_retained_bytes: 100,
        ..BrokerOptions::default()
    })
    .await;
    let mut publisher = Client::connect(options("pub", port(&broker))).await;
    publisher.publish_acked("big/1", &[1; 60], true).await; // 65 bytes: kept
    publisher.publish_acked("big/2", &[2; 60], true).await; // would be 130: refused
    assert_eq!(broker.retained_bytes(), 65);
    let mut sub = Client::connect(options("sub", port(&broker))).await;
    sub.subscribe("big/#", QoS::AtLeastOnce).await;
    publisher.publish_acked("big/marker", b"", false).await;
    assert_eq!(sub.next_publish().await.topic, "big/1");
    assert_eq!(sub.next_publish().await.topic, "big/marker");
    // Replacing with a value too large removes the old one rather than keep it stale.
    publisher.publish_acked("big/1", &[3; 200], true).await;
    assert_eq!(broker.retained_bytes(), 0);
    broker.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Last will, takeover, keep-alive

#[tokio::test]
async fn last_will_is_published_on_abrupt_close_with_its_retain_flag() {
    let broker = broker().await;
    let mut watcher = Client::connect(options("watcher", port(&broker))).await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    let mut opts = options("dying", port(&broker));
    opts.set_last_will(LastWill::new("will/dying", "gone", QoS::AtLeastOnce, true));
    let dying = Client::connect(opts).await;
    drop(dying); // the socket closes without DISCONNECT
    let p = watcher.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.retain),
        ("will/dying", &b"gone"[..], QoS::AtLeastOnce, false)
    );
    // Retained as asked: a later subscriber sees it with the retain flag.
    let mut late = Client::connect(options("late", port(&broker))).await;
    late.subscribe("will/#", QoS::AtLeastOnce).await;
    let p = late.next_publish().await;
    assert_eq!((p.topic.as_str(), p.retain), ("will/dying", true));
    broker.shutdown().await;
}

#[tokio::test]
async fn no_last_will_after_a_clean_disconnect() {
    let broker = broker().await;
    let mut watcher = Client::connect(options("watcher", port(&broker))).await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    let mut opts = options("polite", port(&broker));
    opts.set_last_will(LastWill::new(
        "will/polite",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let polite = Client::connect(opts).await;
    polite.disconnect().await;
    // A will would be routed before the session is removed; then a marker behind it.
    wait_until("the client to be gone", || {
        !broker.client_connected("polite")
    })
    .await;
    watcher.publish_acked("will/marker", b"m", false).await;
    assert_eq!(watcher.next_publish().await.topic, "will/marker");
    broker.shutdown().await;
}

#[tokio::test]
async fn same_client_id_takes_over_and_the_old_will_fires() {
    let broker = broker().await;
    let mut watcher = Client::connect(options("watcher", port(&broker))).await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    let mut opts = options("dup", port(&broker));
    opts.set_last_will(LastWill::new("will/dup", "old", QoS::AtMostOnce, false));
    let mut old = Client::connect(opts).await;
    let mut new = Client::connect(options("dup", port(&broker))).await;
    old.wait_closed().await;
    let p = watcher.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("will/dup", &b"old"[..])
    );
    // The new connection owns the id and works.
    assert!(broker.client_connected("dup"));
    new.subscribe("dup/echo", QoS::AtLeastOnce).await;
    new.publish_acked("dup/echo", b"hi", false).await;
    assert_eq!(&new.next_publish().await.payload[..], b"hi");
    broker.shutdown().await;
}

#[tokio::test]
async fn keep_alive_timeout_closes_the_connection_and_fires_the_will() {
    let broker = broker().await;
    let mut watcher = Client::connect(options("watcher", port(&broker))).await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    let mut c = with_will(Connect::new("sleepy"), "will/sleepy", "timeout", false);
    c.keep_alive = 1;
    let mut raw = Raw::connect_with(port(&broker), c).await;
    // PINGREQ is answered and counts as activity...
    raw.send(Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
    // ...then silence for more than 1.5 s.
    raw.expect_closed().await;
    let p = watcher.next_publish().await;
    assert_eq!(&p.payload[..], b"timeout");
    broker.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Bad input

#[tokio::test]
async fn oversized_packet_closes_only_that_client() {
    let broker = broker_with(BrokerOptions {
        max_packet_bytes: 1024,
        ..BrokerOptions::default()
    })
    .await;
    let mut sub = Client::connect(options("sub", port(&broker))).await;
    sub.subscribe("#", QoS::AtLeastOnce).await;
    let mut opts = options("big", port(&broker));
    opts.set_last_will(LastWill::new(
        "will/big",
        "too big",
        QoS::AtLeastOnce,
        false,
    ));
    let mut big = Client::connect(opts).await;
    big.client
        .publish("data", QoS::AtLeastOnce, false, vec![0u8; 4096])
        .await
        .expect("publish");
    big.wait_closed().await;
    let p = sub.next_publish().await;
    assert_eq!(p.topic, "will/big");

    // Everyone else keeps working, including a packet just under the limit.
    let mut publisher = Client::connect(options("pub", port(&broker))).await;
    publisher.publish_acked("data", &[7u8; 1000], false).await;
    let p = sub.next_publish().await;
    assert_eq!((p.topic.as_str(), p.payload.len()), ("data", 1000));

    // A length announced far beyond the limit is refused on the header alone.
    let mut raw = Raw::open(port(&broker)).await;
    raw.send_bytes(&[0x10, 0xff, 0xff, 0xff, 0x7f]).await;
    raw.expect_closed().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn large_message_within_the_limit_is_delivered_intact() {
    let broker = broker().await; // 4 MiB limit
    let mut o = options("sub", port(&broker));
    o.set_max_packet_size(8 << 20, 8 << 20);
    let mut sub = Client::connect(o).await;
    sub.subscribe("big", QoS::AtLeastOnce).await;
    let mut o = options("pub", port(&broker));
    o.set_max_packet_size(8 << 20, 8 << 20);
    let mut publisher = Client::connect(o).await;
    let payload: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    publisher.publish_acked("big", &payload, false).await;
    let p = sub.next_publish().await;
    assert!(p.payload == payload, "payload corrupted");
    broker.shutdown().await;
}

#[tokio::test]
async fn garbage_and_non_connect_first_packets_are_closed_and_the_broker_keeps_serving() {
    let broker = broker().await;
    let cases: [&[u8]; 6] = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        &[0xc0, 0x00],                                   // PINGREQ before CONNECT
        &[0x82, 0x06, 0, 1, 0, 1, b'#', 0],              // SUBSCRIBE before CONNECT
        &[0x10, 0xff, 0xff, 0xff, 0xff, 0x01],           // malformed remaining length
        b"\x10\x0c\x00\x04HTTP\x04\x02\x00\x3c\x00\x00", // wrong protocol name
        b"\x10\x0a\x00\x04MQTT\x04\x02\x00", // CONNECT shorter than it says... then EOF below
    ];
    for case in cases {
        let mut raw = Raw::open(port(&broker)).await;
        raw.send_bytes(case).await;
        if case.starts_with(b"\x10\x0a") {
            // Truncated CONNECT: the broker waits for the rest, then sees EOF.
            raw.stream.shutdown().await.expect("shutdown write side");
        }
        raw.expect_closed().await;
    }
    // Garbage after a good CONNECT closes too.
    let mut raw = Raw::connect(port(&broker), "raw").await;
    raw.send_bytes(&[0xf0, 0x00]).await; // reserved packet type 15
    raw.expect_closed().await;
    let mut raw = Raw::connect(port(&broker), "raw2").await;
    raw.send(Packet::Connect(Connect::new("again"))).await; // second CONNECT
    raw.expect_closed().await;

    let mut c = Client::connect(options("still-here", port(&broker))).await;
    c.subscribe("ok", QoS::AtLeastOnce).await;
    c.publish_acked("ok", b"yes", false).await;
    assert_eq!(&c.next_publish().await.payload[..], b"yes");
    broker.shutdown().await;
}

#[tokio::test]
async fn invalid_topic_name_in_publish_closes_and_fires_the_will() {
    let broker = broker().await;
    let mut watcher = Client::connect(options("watcher", port(&broker))).await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    for (i, topic) in ["a/+", "a/#", ""].into_iter().enumerate() {
        let c = with_will(Connect::new(format!("bad{i}")), "will/bad", topic, false);
        let mut raw = Raw::connect_with(port(&broker), c).await;
        raw.send(Packet::Publish(publish(topic, QoS::AtMostOnce, 0, b"x")))
            .await;
        raw.expect_closed().await;
        assert_eq!(watcher.next_publish().await.payload, topic.as_bytes());
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn connect_variants() {
    let broker = broker().await;
    // MQTT 5 (level 5): refused with "unacceptable protocol version".
    let mut raw = Raw::open(port(&broker)).await;
    let mut c = Connect::new("v5");
    c.protocol = Protocol::V5;
    raw.send(Packet::Connect(c)).await;
    assert_eq!(
        raw.recv().await,
        Some(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::RefusedProtocolVersion,
            false
        )))
    );
    raw.expect_closed().await;

    // Empty client id without clean session: identifier rejected.
    let mut raw = Raw::open(port(&broker)).await;
    let mut c = Connect::new("");
    c.clean_session = false;
    raw.send(Packet::Connect(c)).await;
    assert_eq!(
        raw.recv().await,
        Some(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::BadClientId,
            false
        )))
    );
    raw.expect_closed().await;

    // Persistent session asked: accepted, but none is present.
    let mut raw = Raw::open(port(&broker)).await;
    let mut c = Connect::new("persistent");
    c.clean_session = false;
    c.set_login("user", "ignored");
    raw.send(Packet::Connect(c)).await;
    assert_eq!(
        raw.recv().await,
        Some(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false
        )))
    );

    // Empty client id with clean session: one is assigned, and it works.
    let mut anon = Client::connect(options("", port(&broker))).await;
    anon.subscribe("anon", QoS::AtLeastOnce).await;
    anon.publish_acked("anon", b"a", false).await;
    assert_eq!(anon.next_publish().await.topic, "anon");
    broker.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Slow subscribers

#[tokio::test]
async fn slow_subscriber_loses_messages_but_blocks_no_one() {
    const MESSAGES: usize = 20_000;
    const BATCH: usize = 200;
    let broker = broker().await; // default queue of 1024 messages per client
    let mut slow = Raw::connect(port(&broker), "slow").await;
    let mut sub = Subscribe::new("load/#", QoS::AtLeastOnce);
    sub.pkid = 1;
    slow.send(Packet::Subscribe(sub)).await;
    assert!(matches!(slow.recv().await, Some(Packet::SubAck(_))));
    // `slow` reads nothing from now on.

    let mut fast = Client::connect(options("fast", port(&broker))).await;
    fast.subscribe("load/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(options("pub", port(&broker))).await;
    let payload = vec![0x5a; 1024];
    // 20 MB in all: more than the slow client's socket buffers and queue can hold. In
    // batches, each waited for at the fast subscriber, so that it never lags by a queue.
    for batch in 0..MESSAGES / BATCH {
        for _ in 0..BATCH {
            publisher
                .client
                .publish("load/x", QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("publish");
        }
        for _ in 0..BATCH {
            publisher
                .wait_for("PUBACK", |ev| {
                    matches!(ev, Event::Incoming(Packet::PubAck(_))).then_some(())
                })
                .await;
        }
        for _ in 0..BATCH {
            let p = fast.next_publish().await;
            assert_eq!(p.payload.len(), 1024, "batch {batch}");
        }
    }
    assert!(broker.client_connected("slow"));
    let dropped = broker.dropped_for("slow");
    assert!(
        dropped > 0 && dropped < MESSAGES as u64,
        "dropped {dropped} of {MESSAGES}"
    );
    broker.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Lifecycle

#[tokio::test]
async fn binding_a_used_port_says_what_to_do() {
    let first = broker().await;
    let err = EmbeddedBroker::start(first.local_addr(), BrokerOptions::default())
        .await
        .expect_err("second broker on the same port");
    assert!(matches!(err, BrokerError::AddrInUse { .. }), "{err:?}");
    let msg = err.to_string();
    let addr = first.local_addr().to_string();
    for needle in [addr.as_str(), "in use", "embedded_bind", "mqtt://"] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    let err = EmbeddedBroker::start(
        loopback(0),
        BrokerOptions {
            client_queue: 0,
            ..BrokerOptions::default()
        },
    )
    .await
    .expect_err("zero queue");
    assert!(matches!(err, BrokerError::Options(_)));
    first.shutdown().await;
}

#[tokio::test]
async fn shutdown_disconnects_everyone_and_frees_the_port() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut client = Client::connect(options("c", addr.port())).await;
    client.subscribe("#", QoS::AtLeastOnce).await;
    let mut raw = Raw::connect(addr.port(), "raw").await;
    let mut idle = Raw::open(addr.port()).await; // no CONNECT yet
    tokio::time::timeout(WAIT, broker.shutdown())
        .await
        .expect("shutdown returns promptly");
    client.wait_closed().await;
    raw.expect_closed().await;
    idle.expect_closed().await;
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    let again = EmbeddedBroker::start(addr, BrokerOptions::default())
        .await
        .expect("the port is free again");
    again.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Interoperability with Mosquitto's command-line clients

fn mosquitto_tool(name: &str) -> PathBuf {
    let path = PathBuf::from("/usr/bin").join(name);
    if path.exists() {
        return path;
    }
    // Elsewhere than Debian: from PATH, and fail below with a clear message if absent.
    PathBuf::from(name)
}

/// Runs a mosquitto client to completion (each call passes its own timeout option too).
async fn run_tool(name: &str, args: &[&str]) -> Output {
    let path = mosquitto_tool(name);
    let child = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; install Debian's mosquitto-clients (apt-get install mosquitto-clients)",
                path.display()
            )
        });
    let out = tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} {args:?} did not finish"));
    out.expect("join").expect("wait for the child")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn mosquitto_sub_receives_what_rumqttc_publishes() {
    let broker = broker().await;
    let p = port(&broker).to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &p,
        "-i",
        "mosq-sub",
        "-t",
        "a/#",
        "-q",
        "1",
        "-C",
        "3",
        "-v",
        "-W",
        "20",
    ];
    let sub = tokio::spawn({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_tool("mosquitto_sub", &args).await
        }
    });
    wait_until("mosquitto_sub to subscribe", || {
        broker.subscription_count("mosq-sub") == 1
    })
    .await;
    let mut publisher = Client::connect(options("pub", port(&broker))).await;
    publisher.publish_acked("b/x", b"not for a/#", false).await;
    publisher.publish_acked("a", b"zero", false).await;
    publisher.publish_acked("a/1", b"one", false).await;
    publisher
        .client
        .publish("a/b/2", QoS::AtMostOnce, false, b"two".to_vec())
        .await
        .expect("publish");
    let out = sub.await.expect("join");
    assert!(out.status.success(), "mosquitto_sub failed: {out:?}");
    assert_eq!(stdout(&out), "a zero\na/1 one\na/b/2 two\n");
    broker.shutdown().await;
}

#[tokio::test]
async fn mosquitto_pub_retained_and_qos2_reach_later_subscribers() {
    let broker = broker().await;
    let p = port(&broker).to_string();
    let base = ["-h", "127.0.0.1", "-p", p.as_str()];
    // QoS 2: mosquitto_pub exits 0 only after PUBREC / PUBREL / PUBCOMP completed.
    let out = run_tool(
        "mosquitto_pub",
        &[&base[..], &["-t", "ret/x", "-m", "hello", "-r", "-q", "2"]].concat(),
    )
    .await;
    assert!(out.status.success(), "mosquitto_pub failed: {out:?}");

    let out = run_tool(
        "mosquitto_sub",
        &[&base[..], &["-t", "ret/#", "-C", "1", "-v", "-W", "20"]].concat(),
    )
    .await;
    assert!(out.status.success(), "mosquitto_sub failed: {out:?}");
    assert_eq!(stdout(&out), "ret/x hello\n");

    let mut sub = Client::connect(options("sub", port(&broker))).await;
    sub.subscribe("ret/#", QoS::AtLeastOnce).await;
    let m = sub.next_publish().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.retain),
        ("ret/x", &b"hello"[..], true)
    );

    // `-n -r`: an empty retained message deletes it.
    let out = run_tool(
        "mosquitto_pub",
        &[&base[..], &["-t", "ret/x", "-n", "-r", "-q", "1"]].concat(),
    )
    .await;
    assert!(out.status.success(), "mosquitto_pub failed: {out:?}");
    assert_eq!(broker.retained_bytes(), 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn mosquitto_clients_speaking_mqtt31_work_and_mqtt5_is_refused() {
    let broker = broker().await;
    let p = port(&broker).to_string();
    let base = ["-h", "127.0.0.1", "-p", p.as_str()];
    let mut sub = Client::connect(options("sub", port(&broker))).await;
    sub.subscribe("v31/#", QoS::AtLeastOnce).await;
    let out = run_tool(
        "mosquitto_pub",
        &[
            &base[..],
            &["-V", "mqttv31", "-t", "v31/a", "-m", "old", "-q", "1"],
        ]
        .concat(),
    )
    .await;
    assert!(
        out.status.success(),
        "mosquitto_pub -V mqttv31 failed: {out:?}"
    );
    let m = sub.next_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("v31/a", &b"old"[..]));

    let out = run_tool(
        "mosquitto_pub",
        &[
            &base[..],
            &["-V", "5", "-t", "v5/a", "-m", "new", "-q", "1"],
        ]
        .concat(),
    )
    .await;
    assert!(!out.status.success(), "MQTT 5 should be refused: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(stderr.contains("protocol version"), "{stderr}");
    // The broker is unaffected.
    sub.publish_acked("v31/b", b"still", false).await;
    assert_eq!(sub.next_publish().await.topic, "v31/b");
    broker.shutdown().await;
}
