//! [`MqttLink`]: the connection to the broker and the task that drives it.
//!
//! rumqttc splits a connection into an `AsyncClient` (a queue of requests) and an `EventLoop`
//! that must be polled for anything to happen. The link owns both: one tokio task polls the
//! event loop for the life of the daemon, and [`Publisher`] handles (cheap clones of the
//! client) let any thread publish.
//!
//! # What the task does, and why
//! - **Last will.** The connection carries the will `<base>/available` = `offline` (retained,
//!   QoS 1), so the broker announces a crash or a lost network by itself.
//! - **On every ConnAck** it publishes `online` (retained), subscribes again to `cmd/+`,
//!   `samples/+` and, with discovery on, `<discovery_prefix>/status`; once the SubAck is in it
//!   publishes the Home Assistant discovery message (retained) and sends
//!   [`LinkEvent::Connected`] so the owner republishes its own retained state (`state`,
//!   `snapshot`): the sessions are clean (see below), so the broker forgets subscriptions on
//!   every disconnect, and a broker restarted without persistence forgets retained messages.
//! - **When Home Assistant says `online`** on `<discovery_prefix>/status` it publishes the
//!   discovery message again. The link does this itself, not the owner, because the message
//!   depends only on the config and adaptd's version.
//! - **Removed entities.** With discovery on it also subscribes to its own discovery topic.
//!   The broker hands over the retained message (from a previous run, or this run's previous
//!   connection) right after the SubAck; when it has components the current message lacks (a
//!   camera, zone or label removed from the config), the link publishes the current message
//!   again with a `{"p": <platform>}` stub for each, which makes Home Assistant delete them
//!   (see [`crate::mqtt::discovery::with_removals`]), and keeps that version for later
//!   republishing in this run. Only *retained* copies are compared: the link's own publishes
//!   come back live, and a stub is never counted as something to remove, so a republished
//!   message cannot trigger another one.
//! - **After an error** it sleeps with [`Backoff`] before polling again (rumqttc reconnects on
//!   the next poll and has no delay of its own: a bare loop spins) and logs one line per
//!   attempt. The backoff is reset when a connection has lasted [`STABLE_AFTER`], so a broker
//!   that accepts and then drops every connection is not hammered either.
//! - **Incoming publishes** go to the owner through a bounded tokio channel, with `try_send`:
//!   the task never waits for the owner. Waiting would deadlock an owner that is itself
//!   waiting in [`Publisher::publish`] for room in rumqttc's queue, which only this task
//!   drains. A full channel drops the message, logs it and counts it.
//! - **Retained commands and samples are ignored** (logged and counted): a retained
//!   `cmd/forget` would otherwise run again on every reconnect.
//!
//! # Oversized packets (observed with rumqttc 0.25.1 and Mosquitto 2.0)
//! rumqttc checks the length in an incoming packet's fixed header against the incoming
//! maximum (`set_max_packet_size`) before reading the body; a larger packet makes `poll()`
//! fail with `MqttState(Deserialization(PayloadSizeLimitExceeded(len)))` and **the connection
//! is dropped**; the next poll reconnects. With a clean session the broker discards the
//! message, so the reconnect is a one-off: the link logs the size and the limit, counts it,
//! sends [`LinkEvent::Oversized`] (the owner can publish an `ok: false` reply; the topic is
//! unknown because rumqttc stops at the header) and reconnects after the usual backoff. A
//! *retained* oversized message on a subscribed topic would come back on every subscription;
//! the backoff (which is not reset for connections shorter than [`STABLE_AFTER`]) limits that
//! to one attempt per 60 s at most, each logged, until someone clears the message.
//!
//! An *outgoing* packet over the limit would also fail the whole connection inside rumqttc
//! (the encoder errors, the event loop drops the connection and, with a clean session, every
//! queued message with it), so [`Publisher`] refuses such messages up front with
//! [`MqttError::PayloadTooLarge`].
//!
//! # Clean sessions
//! Sessions are clean: a command queued by the broker while adaptd was away (a `train` from an
//! hour ago) is better lost than run late, and keeping QoS 1 messages across a reconnect would
//! need a persistent broker session anyway.
//!
//! # Shutdown
//! [`MqttLink::shutdown`] publishes `stopped` (retained), sends DISCONNECT and waits until the
//! task has seen `Outgoing::Disconnect`, i.e. the packet was flushed: dropping the event loop
//! earlier makes the broker publish the will (`offline`) as if adaptd had crashed. Dropping an
//! `MqttLink` without `shutdown` aborts the task, which is exactly that crash.
//!
//! Never format rumqttc's `MqttOptions` with `{:?}`: its `Debug` prints the password.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    NetworkOptions, Outgoing, Packet, Publish, QoS, StateError, SubscribeFilter,
    SubscribeReasonCode, Transport,
};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::mqtt::config::{BrokerUrl, MqttConfig, MqttError};
use crate::mqtt::discovery::{device_discovery, with_removals, DiscoveredStream, Discovery};
use crate::mqtt::topics::{Incoming, Topics};

/// adaptd's version, for the discovery message (the package this module is compiled in).
pub const SW_VERSION: &str = env!("CARGO_PKG_VERSION");
/// A connection that lasted this long counts as healthy: the next failure starts the backoff
/// from its shortest delay again.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Capacity of the channel of [`LinkEvent`]s to the owner.
pub const EVENT_CAPACITY: usize = 64;
/// Capacity of rumqttc's request queue (publishes waiting for the event loop).
pub const REQUEST_CAPACITY: usize = 64;
/// How long [`Publisher::publish`] waits for room in the request queue.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one TCP (+ TLS) connect and MQTT handshake; generous for a Pi Zero's TLS.
const CONNECT_TIMEOUT_SECS: u64 = 10;
/// Fixed-header and topic-length overhead added to topic + payload when checking sizes (an
/// upper bound of rumqttc's own count).
const PUBLISH_OVERHEAD: usize = 1 + 4 + 2 + 2;

/// What the link tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Connected (again): `online` and the discovery message are published and the broker has
    /// acknowledged the renewed subscriptions, so commands sent from now on arrive. Publish the
    /// retained `state` and `snapshot` now.
    Connected {
        /// Connections made so far, this one included (1 for the first).
        connects: u64,
    },
    /// Home Assistant announced itself on `<discovery_prefix>/status`. The link has already
    /// republished the discovery message; nothing else is required.
    HomeAssistantOnline,
    /// A message on `cmd/+` or `samples/+`.
    Message {
        /// The full topic.
        topic: String,
        /// The topic, classified.
        incoming: Incoming,
        /// The raw payload.
        payload: Vec<u8>,
    },
    /// A message larger than `[mqtt].max_packet_bytes` arrived; it was lost and the connection
    /// was re-established (see the module docs). Its topic is unknown.
    Oversized {
        /// The packet's length as announced in its header.
        size: usize,
        /// The configured limit.
        max: usize,
    },
}

/// Connection options every adaptd client shares (the daemon's link, `adaptd watch`): broker
/// address, keep-alive, packet limit, credentials and TLS, all from `[mqtt]`. No last will:
/// only the daemon's link has one.
pub fn client_options(config: &MqttConfig, client_id: &str) -> Result<MqttOptions, MqttError> {
    let url = config.broker_url()?;
    let password = config.load_password()?;
    let tls = config.tls_client_config()?;
    let mut options = MqttOptions::new(client_id, url.host.clone(), url.port);
    options
        .set_keep_alive(Duration::from_secs(config.keep_alive_secs))
        .set_clean_session(true)
        .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
    if let Some(user) = &config.username {
        let pw = password.as_ref().map_or("", |p| p.expose());
        options.set_credentials(user.clone(), pw);
    }
    if let Some(tls) = tls {
        options.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    Ok(options)
}

/// Counters of the link, for the `stats` message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Connected right now.
    pub connected: bool,
    /// Connections made (ConnAcks received).
    pub connects: u64,
    /// Connections made after the first: how often the link had to reconnect.
    pub reconnects: u64,
    /// Failed connection attempts and lost connections.
    pub failures: u64,
    /// Messages handed to rumqttc.
    pub published: u64,
    /// Messages refused: queue full, not connected, or too large.
    pub dropped: u64,
    /// Incoming messages passed to the owner.
    pub received: u64,
    /// Incoming messages dropped because the owner's channel was full.
    pub received_dropped: u64,
    /// Incoming packets over the size limit.
    pub oversized: u64,
    /// Retained commands or samples ignored.
    pub retained_ignored: u64,
}

/// The link's state and counters, shared by the handle(s) and the event-loop task: the
/// connected flag is a watch channel (waiters wake on change), the rest are atomics.
#[derive(Debug)]
struct LinkState {
    connected: watch::Sender<bool>,
    shutting_down: AtomicBool,
    closed: AtomicBool,
    clean_disconnect: AtomicBool,
    connects: AtomicU64,
    failures: AtomicU64,
    published: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
    received_dropped: AtomicU64,
    oversized: AtomicU64,
    retained_ignored: AtomicU64,
    /// Every message offered to [`Publisher`], for in-process readers (the web page's live
    /// stream): see [`Publisher::mirror`].
    mirror: broadcast::Sender<Arc<Mirrored>>,
}

/// A message the daemon published (or tried to: the mirror sees it whether or not the broker
/// is reachable).
#[derive(Debug)]
pub struct Mirrored {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Messages a mirror reader may fall behind by before it skips (a slow viewer loses messages,
/// the daemon never waits for it).
const MIRROR_CAPACITY: usize = 256;

impl LinkState {
    fn new() -> LinkState {
        LinkState {
            connected: watch::Sender::new(false),
            shutting_down: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            clean_disconnect: AtomicBool::new(false),
            connects: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            received: AtomicU64::new(0),
            received_dropped: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
            retained_ignored: AtomicU64::new(0),
            mirror: broadcast::channel(MIRROR_CAPACITY).0,
        }
    }

    fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A handle for publishing, cheap to clone and usable from any thread (the inference thread
/// included).
#[derive(Debug, Clone)]
pub struct Publisher {
    client: AsyncClient,
    shared: Arc<LinkState>,
    topics: Topics,
    qos: QoS,
    max_packet: usize,
}

impl Publisher {
    /// The topics of this device.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Connected to the broker right now.
    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Waits until connected, at most `timeout`; true if connected.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.connected.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|c| *c)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LinkStats {
        let s = &self.shared;
        let connects = s.connects.load(Ordering::Relaxed);
        LinkStats {
            connected: self.is_connected(),
            connects,
            reconnects: connects.saturating_sub(1),
            failures: s.failures.load(Ordering::Relaxed),
            published: s.published.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            received: s.received.load(Ordering::Relaxed),
            received_dropped: s.received_dropped.load(Ordering::Relaxed),
            oversized: s.oversized.load(Ordering::Relaxed),
            retained_ignored: s.retained_ignored.load(Ordering::Relaxed),
        }
    }

    /// [`Self::check`], counting a refused message as dropped.
    /// A reader of every message offered to this publisher (and its clones) from now on,
    /// whether or not the broker takes it. With no reader, offering costs one atomic load.
    pub fn mirror(&self) -> broadcast::Receiver<Arc<Mirrored>> {
        self.shared.mirror.subscribe()
    }

    fn offer_mirror(&self, topic: &str, payload: &[u8]) {
        let m = &self.shared.mirror;
        if m.receiver_count() > 0 {
            // No receiver left between the check and the send is fine: the message is dropped.
            let _ = m.send(Arc::new(Mirrored {
                topic: topic.to_owned(),
                payload: payload.to_vec(),
            }));
        }
    }

    fn admit(&self, topic: &str, payload_len: usize) -> Result<(), MqttError> {
        self.check(topic, payload_len).inspect_err(|_| {
            LinkState::bump(&self.shared.dropped);
        })
    }

    fn check(&self, topic: &str, payload_len: usize) -> Result<(), MqttError> {
        // Once shutdown has begun, `stopped` must be the last word on the broker.
        if self.shared.closed.load(Ordering::Relaxed)
            || self.shared.shutting_down.load(Ordering::Relaxed)
        {
            return Err(MqttError::Closed);
        }
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(MqttError::InvalidTopic(topic.to_owned()));
        }
        let size = PUBLISH_OVERHEAD + topic.len() + payload_len;
        if size > self.max_packet {
            return Err(MqttError::PayloadTooLarge {
                topic: topic.to_owned(),
                size,
                max: self.max_packet,
            });
        }
        if !self.is_connected() {
            return Err(MqttError::NotConnected);
        }
        Ok(())
    }

    /// Publishes without ever blocking, for per-frame messages (`detections`, `events`,
    /// `stats`). When the link is down or rumqttc's queue is full the message is dropped and
    /// counted: stale detections are worth nothing, and the frame loop must not stall.
    pub fn try_publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        retain: bool,
    ) -> Result<(), MqttError> {
        let payload = payload.into();
        self.offer_mirror(topic, &payload);
        self.admit(topic, payload.len())?;
        match self.client.try_publish(topic, self.qos, retain, payload) {
            Ok(()) => {
                LinkState::bump(&self.shared.published);
                Ok(())
            }
            Err(_) => {
                LinkState::bump(&self.shared.dropped);
                if self.shared.closed.load(Ordering::Relaxed) {
                    Err(MqttError::Closed)
                } else {
                    Err(MqttError::QueueFull)
                }
            }
        }
    }

    /// Publishes, waiting up to [`PUBLISH_TIMEOUT`] for room in the queue: for replies, state
    /// and snapshots, which should not be dropped because of a short burst. While the link is
    /// down this fails at once with [`MqttError::NotConnected`] instead of queueing: retained
    /// state is republished on [`LinkEvent::Connected`], and a reply to a command received on
    /// a connection that is gone has no one to reach.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        retain: bool,
    ) -> Result<(), MqttError> {
        let payload = payload.into();
        self.offer_mirror(topic, &payload);
        self.admit(topic, payload.len())?;
        let sent = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            self.client.publish(topic, self.qos, retain, payload),
        )
        .await;
        match sent {
            Ok(Ok(())) => {
                LinkState::bump(&self.shared.published);
                Ok(())
            }
            Ok(Err(_)) => {
                LinkState::bump(&self.shared.dropped);
                Err(MqttError::Closed)
            }
            Err(_) => {
                LinkState::bump(&self.shared.dropped);
                Err(MqttError::Timeout(PUBLISH_TIMEOUT))
            }
        }
    }
}

/// The connection to the broker: the event loop task plus a [`Publisher`].
#[derive(Debug)]
pub struct MqttLink {
    publisher: Publisher,
    task: Option<JoinHandle<()>>,
    wake: Arc<Notify>,
}

/// Everything the event loop task needs.
struct LoopCtx {
    client: AsyncClient,
    shared: Arc<LinkState>,
    topics: Topics,
    qos: QoS,
    discovery: Option<Discovery>,
    max_packet: usize,
    url: BrokerUrl,
    /// `[mqtt].url = "embedded"`: the broker is adaptd's own, so "is the broker running?" is
    /// the wrong question to ask the user.
    embedded: bool,
    events: mpsc::Sender<LinkEvent>,
    wake: Arc<Notify>,
    /// The few helper tasks that wait for room in a full queue on this task's behalf (it must
    /// never wait itself: it is the one that drains rumqttc's queue). Tracked so that the link
    /// ends with them: [`run`] waits for them, bounded, once the event loop is gone.
    helpers: TaskTracker,
}

impl MqttLink {
    /// Validates `config`, reads the password and TLS files, and starts the event loop task on
    /// the current tokio runtime. Returns at once, without waiting for the broker: adaptd runs
    /// (and keeps trying to connect) while the broker is down. The receiver yields the
    /// [`LinkEvent`]s; keep draining it.
    pub fn start(config: &MqttConfig) -> Result<(MqttLink, mpsc::Receiver<LinkEvent>), MqttError> {
        Self::start_for(config, &[])
    }

    /// [`MqttLink::start`] for a kind of device (its Home Assistant entities differ).
    pub fn start_for(
        config: &MqttConfig,
        streams: &[DiscoveredStream],
    ) -> Result<(MqttLink, mpsc::Receiver<LinkEvent>), MqttError> {
        let errors = config.validate();
        if !errors.is_empty() {
            return Err(MqttError::Config(errors));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            MqttError::Config(vec![
                "MqttLink::start must be called inside a tokio runtime".to_owned(),
            ])
        })?;
        let url = config.broker_url()?;
        let topics = Topics::from_config(config);
        let qos = if config.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let mut options = client_options(config, &config.client_id())?;
        options.set_last_will(LastWill::new(
            topics.available(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let mut network = NetworkOptions::new();
        network.set_connection_timeout(CONNECT_TIMEOUT_SECS);
        eventloop.set_network_options(network);

        let shared = Arc::new(LinkState::new());
        let wake = Arc::new(Notify::new());
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        let ctx = LoopCtx {
            client: client.clone(),
            shared: shared.clone(),
            topics: topics.clone(),
            qos,
            discovery: config
                .discovery
                .then(|| device_discovery(&topics, SW_VERSION, config.qos, streams)),
            max_packet: config.max_packet_bytes,
            url,
            embedded: config.is_embedded(),
            events: events_tx,
            wake: wake.clone(),
            helpers: TaskTracker::new(),
        };
        info!(
            "MQTT: connecting to {} as {} (base topic {})",
            ctx.url,
            config.client_id(),
            topics.base()
        );
        let task = runtime.spawn(run(eventloop, ctx));
        let publisher = Publisher {
            client,
            shared,
            topics,
            qos,
            max_packet: config.max_packet_bytes,
        };
        Ok((
            MqttLink {
                publisher,
                task: Some(task),
                wake,
            },
            events_rx,
        ))
    }

    /// The publishing handle; clone it for other tasks and threads.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Publishes `stopped` (retained), disconnects and waits until the DISCONNECT is flushed,
    /// at most `timeout` in all. From the start of the call, [`Publisher`]s refuse new messages
    /// with [`MqttError::Closed`] (publish the last replies before calling this); messages
    /// already queued still go out before `stopped`. Returns true when the broker got the clean disconnect (and so
    /// will not publish the will); false when the link was down or the time ran out, in which
    /// case the task is aborted and the broker publishes `offline` itself.
    pub async fn shutdown(mut self, timeout: Duration) -> bool {
        let shared = self.publisher.shared.clone();
        shared.shutting_down.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let Some(mut task) = self.task.take() else {
            return false;
        };
        let client = self.publisher.client.clone();
        let available = self.publisher.topics.available();
        // Queued behind what is already queued, so replies sent before this still go out.
        let sequence = async {
            let _ = client
                .publish(available, QoS::AtLeastOnce, true, "stopped")
                .await;
            let _ = client.disconnect().await;
            (&mut task).await
        };
        let finished = tokio::time::timeout(timeout, sequence).await;
        let clean = shared.clean_disconnect.load(Ordering::SeqCst);
        match finished {
            Ok(Ok(())) if clean => info!("MQTT: published `stopped` and disconnected cleanly"),
            Ok(Ok(())) => warn!(
                "MQTT: the link was down at shutdown; the broker publishes `offline` (the last will)"
            ),
            Ok(Err(e)) => warn!("MQTT: the event loop task failed during shutdown: {e}"),
            Err(_) => {
                task.abort();
                warn!(
                    "MQTT: no clean disconnect within {timeout:?}; the broker will publish `offline` (the last will)"
                );
            }
        }
        shared.closed.store(true, Ordering::SeqCst);
        shared.connected.send_replace(false);
        clean
    }
}

impl Drop for MqttLink {
    /// Without [`MqttLink::shutdown`], stop the task abruptly: the broker then publishes the
    /// will (`offline`), which is the truth about a daemon that did not stop cleanly.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            self.publisher.shared.closed.store(true, Ordering::SeqCst);
        }
    }
}

async fn run(mut eventloop: EventLoop, mut ctx: LoopCtx) {
    let mut backoff = Backoff::broker();
    let mut connected_since: Option<Instant> = None;
    let mut awaiting_suback: Option<u64> = None;
    loop {
        let polled = eventloop.poll().await;
        let shutting_down = ctx.shared.shutting_down.load(Ordering::SeqCst);
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_since = Some(Instant::now());
                let connects = LinkState::bump(&ctx.shared.connects);
                ctx.shared.connected.send_replace(true);
                if connects == 1 {
                    info!("MQTT: connected to {}", ctx.url);
                } else {
                    info!(
                        "MQTT: connected to {} again (reconnect {})",
                        ctx.url,
                        connects - 1
                    );
                }
                if !shutting_down {
                    on_connected(&ctx);
                    awaiting_suback = Some(connects);
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => on_publish(&mut ctx, publish),
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                    warn!(
                        "MQTT: the broker refused a subscription under {} (return codes {:?}); check the broker's ACL for this user",
                        ctx.topics.base(),
                        ack.return_codes
                    );
                }
                // Only now are commands sent to us delivered: tell the owner.
                if let Some(connects) = awaiting_suback.take() {
                    publish_discovery(&ctx);
                    send_control(&ctx, LinkEvent::Connected { connects });
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                ctx.shared.clean_disconnect.store(true, Ordering::SeqCst);
                ctx.shared.connected.send_replace(false);
                break;
            }
            Ok(_) => {}
            Err(error) => {
                ctx.shared.connected.send_replace(false);
                awaiting_suback = None;
                let was_up = connected_since.take();
                if shutting_down {
                    debug!("MQTT: connection ended during shutdown: {error}");
                    break;
                }
                let failures = LinkState::bump(&ctx.shared.failures);
                if was_up.is_some_and(|since| since.elapsed() >= STABLE_AFTER) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                if let Some(size) = oversized(&error) {
                    LinkState::bump(&ctx.shared.oversized);
                    warn!(
                        "MQTT: dropped an incoming message of {size} bytes, over [mqtt].max_packet_bytes = {}; rumqttc closes the connection on such a packet, so the link reconnects in {:.1} s (failure {failures}; raise max_packet_bytes if such messages are expected)",
                        ctx.max_packet,
                        delay.as_secs_f64()
                    );
                    send_control(
                        &ctx,
                        LinkEvent::Oversized {
                            size,
                            max: ctx.max_packet,
                        },
                    );
                } else {
                    let what = if was_up.is_some() {
                        "lost the connection to"
                    } else {
                        "cannot connect to"
                    };
                    warn!(
                        "MQTT: {what} {}: {}; retrying in {:.1} s (failure {failures})",
                        ctx.url,
                        explain(&error, &ctx.url, ctx.embedded),
                        delay.as_secs_f64()
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.wake.notified() => {}
                }
            }
        }
    }
    // Without the event loop, a helper waiting for room in rumqttc's queue fails at once; one
    // waiting for the owner to take a control event waits as long as the owner lets it.
    drop(eventloop);
    ctx.helpers.close();
    if tokio::time::timeout(HELPERS_GRACE, ctx.helpers.wait())
        .await
        .is_err()
    {
        debug!(
            "MQTT: {} helper task(s) still waiting after {HELPERS_GRACE:?}; the runtime ends them",
            ctx.helpers.len()
        );
    }
    ctx.shared.closed.store(true, Ordering::SeqCst);
}

/// How long a closing link waits for its helper tasks.
const HELPERS_GRACE: Duration = Duration::from_secs(2);

/// Publishes `online` and renews the subscriptions ([`LinkEvent::Connected`] follows with
/// their SubAck). Uses the non-blocking `try_` calls, because this task is the one that drains
/// rumqttc's queue; if it is full, a helper task waits for room instead.
fn on_connected(ctx: &LoopCtx) {
    enqueue_publish(
        ctx,
        ctx.topics.available(),
        b"online".to_vec(),
        QoS::AtLeastOnce,
    );
    let mut filters = vec![
        SubscribeFilter::new(ctx.topics.cmd_filter(), ctx.qos),
        SubscribeFilter::new(ctx.topics.samples_filter(), ctx.qos),
        SubscribeFilter::new(ctx.topics.camera_samples_filter(), ctx.qos),
    ];
    if let Some(discovery) = &ctx.discovery {
        filters.push(SubscribeFilter::new(ctx.topics.ha_status(), ctx.qos));
        // For the retained message of an earlier run: see `on_discovery_message`.
        filters.push(SubscribeFilter::new(discovery.topic.clone(), ctx.qos));
    }
    if ctx.client.try_subscribe_many(filters.clone()).is_err() {
        let client = ctx.client.clone();
        ctx.helpers.spawn(async move {
            let _ = client.subscribe_many(filters).await;
        });
    }
}

/// Publishes the retained discovery message, when discovery is on.
fn publish_discovery(ctx: &LoopCtx) {
    if let Some(discovery) = &ctx.discovery {
        enqueue_publish(ctx, discovery.topic.clone(), discovery.to_json(), ctx.qos);
    }
}

/// Queues a retained publish from the event loop task without blocking it (see
/// [`on_connected`]), after the size check that [`Publisher`] does for everyone else.
fn enqueue_publish(ctx: &LoopCtx, topic: String, payload: Vec<u8>, qos: QoS) {
    let size = PUBLISH_OVERHEAD + topic.len() + payload.len();
    if size > ctx.max_packet {
        warn!(
            "MQTT: not publishing {topic}: {size} bytes, over [mqtt].max_packet_bytes = {}",
            ctx.max_packet
        );
        return;
    }
    if let Err(rumqttc::ClientError::TryRequest(rumqttc::Request::Publish(p))) =
        ctx.client.try_publish(topic.clone(), qos, true, payload)
    {
        let client = ctx.client.clone();
        ctx.helpers.spawn(async move {
            let _ = client.publish(topic, qos, true, p.payload.to_vec()).await;
        });
    }
}

fn on_publish(ctx: &mut LoopCtx, publish: Publish) {
    if ctx
        .discovery
        .as_ref()
        .is_some_and(|d| d.topic == publish.topic)
    {
        on_discovery_message(ctx, &publish);
        return;
    }
    let incoming = ctx.topics.parse(&publish.topic);
    match incoming {
        Incoming::HomeAssistantStatus => {
            if publish.payload.as_ref() == b"online" {
                publish_discovery(ctx);
                send_control(ctx, LinkEvent::HomeAssistantOnline);
            }
        }
        Incoming::Unknown => debug!("MQTT: ignored a message on {}", publish.topic),
        Incoming::Command(_) | Incoming::Sample { .. } if publish.retain => {
            LinkState::bump(&ctx.shared.retained_ignored);
            warn!(
                "MQTT: ignored a retained message on {topic}: commands and samples must not be retained (clear it with `mosquitto_pub -r -n -t '{topic}'`)",
                topic = publish.topic
            );
        }
        Incoming::Command(_) | Incoming::Sample { .. } => {
            let event = LinkEvent::Message {
                topic: publish.topic.clone(),
                incoming,
                payload: publish.payload.to_vec(),
            };
            match ctx.events.try_send(event) {
                Ok(()) => {
                    LinkState::bump(&ctx.shared.received);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    LinkState::bump(&ctx.shared.received_dropped);
                    warn!(
                        "MQTT: dropped a message on {}: the daemon is not keeping up with incoming messages",
                        publish.topic
                    );
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    debug!("MQTT: no one receives link events any more");
                }
            }
        }
    }
}

/// A message on our own discovery topic. A live copy is our own publish (or someone else's,
/// which the next connection's retained copy shows anyway) and is ignored; the retained copy,
/// delivered on subscription, is compared with the current message, and the removals it calls
/// for are published once and kept as the current message (so that a republish after Home
/// Assistant's birth still carries them).
fn on_discovery_message(ctx: &mut LoopCtx, publish: &Publish) {
    if !publish.retain {
        debug!("MQTT: our discovery message came back on {}", publish.topic);
        return;
    }
    let Some(current) = &ctx.discovery else {
        return;
    };
    match with_removals(current, &publish.payload) {
        Ok(None) => debug!(
            "MQTT: the retained discovery message on {} names no component that is gone",
            publish.topic
        ),
        Ok(Some(updated)) => {
            let gone = removed_keys(current, &updated);
            info!(
                "MQTT: removing {} Home Assistant entit{} no longer configured: {}",
                gone.len(),
                if gone.len() == 1 { "y" } else { "ies" },
                gone.join(", ")
            );
            ctx.discovery = Some(updated);
            publish_discovery(ctx);
        }
        Err(e) => warn!(
            "MQTT: ignored the retained message on {}: {e}; entities of removed cameras (if any) stay in Home Assistant until it is deleted there",
            publish.topic
        ),
    }
}

/// The component keys `updated` has and `current` lacks (the removal stubs), for the log.
fn removed_keys(current: &Discovery, updated: &Discovery) -> Vec<String> {
    let keys = |d: &Discovery| {
        d.payload
            .get("cmps")
            .and_then(serde_json::Value::as_object)
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let before = keys(current);
    keys(updated)
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect()
}

/// Control events must arrive (a lost `Connected` leaves the retained state unpublished), but
/// this task must not wait for the owner: when the channel is full, a helper task waits.
fn send_control(ctx: &LoopCtx, event: LinkEvent) {
    if let Err(mpsc::error::TrySendError::Full(event)) = ctx.events.try_send(event) {
        let tx = ctx.events.clone();
        ctx.helpers.spawn(async move {
            let _ = tx.send(event).await;
        });
    }
}

/// The length of an incoming packet that exceeded the limit, if that is what failed.
fn oversized(error: &ConnectionError) -> Option<usize> {
    match error {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(size),
        )) => Some(*size),
        _ => None,
    }
}

/// The error in words a user can act on (`embedded`: the broker is adaptd's own).
fn explain(error: &ConnectionError, url: &BrokerUrl, embedded: bool) -> String {
    match error {
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && embedded => {
            format!(
                "the embedded broker does not accept connections at {}:{}: it did not start \
                 (see the error logged at start-up: is [mqtt].embedded_bind taken by another \
                 broker?) or it has stopped",
                url.host, url.port
            )
        }
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "nothing accepts connections at {}:{} (is the broker running, and is [mqtt].url right?)",
            url.host, url.port
        ),
        ConnectionError::Io(e) => format!("{e} (check [mqtt].url and the network)"),
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => format!(
                "the broker refused the login ({code:?}): check [mqtt].username and the password file"
            ),
            ConnectReturnCode::BadClientId => format!(
                "the broker refused the client id ({code:?}): check [mqtt].client_id"
            ),
            other => format!("the broker refused the connection ({other:?})"),
        },
        ConnectionError::Tls(e) => format!(
            "TLS failed ({e}): check that [mqtt].ca_file signed the broker's certificate, that the host in [mqtt].url is named in it, and (mutual TLS) that the broker accepts [mqtt].client_cert"
        ),
        ConnectionError::NetworkTimeout => format!(
            "no answer within {CONNECT_TIMEOUT_SECS} s (a firewall, a wrong port, or TLS against a plain listener?)"
        ),
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            "the broker closed the connection".to_owned()
        }
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "the broker stopped answering keep-alive pings".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_to_the_embedded_broker_says_so() {
        let url = BrokerUrl {
            tls: false,
            host: "127.0.0.1".into(),
            port: 1883,
        };
        let refused =
            || ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let own = explain(&refused(), &url, true);
        assert!(
            own.contains("embedded broker") && !own.contains("is the broker running"),
            "{own}"
        );
        let other = explain(&refused(), &url, false);
        assert!(other.contains("is the broker running"), "{other}");
    }
}
