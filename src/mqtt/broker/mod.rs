//! A small in-process MQTT 3.1.1 broker for `[mqtt].url = "embedded"`.
//!
//! # Why it exists
//!
//! The demo and single-box setups should run with nothing installed: the daemon publishes its
//! results to this broker on loopback, and users point `adaptd watch`, `mosquitto_sub` or Home
//! Assistant at it. Production keeps using Mosquitto. It adds no dependency: packets are parsed
//! and written with the codec of rumqttc, which the daemon's MQTT client already links, and
//! everything else is tokio. (rumqttd would pull an HTTP server, a metrics exporter, clap and a
//! config loader, and runs its own threads.)
//!
//! It is meant to listen on loopback only, so it has no authentication: user names and
//! passwords in CONNECT are accepted and ignored.
//!
//! # What it does
//!
//! - MQTT 3.1.1 (protocol level 4), and 3.1 (`MQIsdp`, level 3), whose CONNECT is rewritten to
//!   the 3.1.1 form before parsing (the rest of the protocol is the same on the wire). Other
//!   levels, MQTT 5 included, get CONNACK "unacceptable protocol version".
//! - Clean sessions only: a client asking for a persistent session (`clean_session = false`)
//!   is accepted, but its CONNACK says `session_present = false` and nothing is kept after it
//!   disconnects. An empty client id is replaced by a unique one (with `clean_session = false`
//!   it is refused with "identifier rejected", as §3.1.3.1 requires).
//! - Takeover (§3.1.4): a CONNECT with the client id of a live connection closes that
//!   connection. The old connection ends without DISCONNECT, so its last will *is* published
//!   (§3.1.2.5); Mosquitto 2.0 does the same (checked with 2.0.11).
//! - Last will: published, with its QoS and retain flag, whenever a connection ends without a
//!   DISCONNECT packet: EOF or socket error, keep-alive timeout (1.5 x the keep-alive), protocol
//!   error, oversized packet, takeover. Not after DISCONNECT, and not when the broker itself
//!   shuts down (the other clients are being disconnected too).
//! - Incoming QoS 0, 1 and 2. QoS 1 is acknowledged after the message was routed. QoS 2 is
//!   routed when the PUBLISH arrives and its packet id remembered until PUBREL, so a
//!   retransmitted PUBLISH with that id is acknowledged (PUBREC) but not routed again.
//! - Outgoing QoS 0 and 1: subscriptions are granted at most QoS 1 (SUBACK returns
//!   min(requested, 1)) and messages are delivered at min(message QoS, granted QoS). Outgoing
//!   QoS 1 packet ids are unique per connection while unacknowledged; nothing is retransmitted,
//!   since a clean session's in-flight messages die with its connection anyway.
//! - Topic filters with `+` and `#` (see `topic.rs`); an invalid filter gets the SUBACK failure
//!   code 0x80, an invalid topic name in PUBLISH closes the connection.
//! - Retained messages, the latest per topic, in memory, up to
//!   [`BrokerOptions::max_retained_bytes`] (topic + payload bytes); an empty retained payload
//!   deletes. They are sent with the retain flag on SUBSCRIBE; routing to existing subscribers
//!   clears the flag (§3.3.1.3).
//!
//! # Bounds
//!
//! Nothing grows with what a client sends or fails to read:
//! - A packet longer than [`BrokerOptions::max_packet_bytes`] (remaining length, the same
//!   number as the client's `[mqtt].max_packet_bytes`) closes its connection as soon as its
//!   fixed header is read, before any of the body is buffered.
//! - Each connection has a queue of [`BrokerOptions::client_queue`] messages. A subscriber that
//!   does not keep up loses the messages that find its queue full, QoS 1 ones included, and the
//!   loss is counted and logged. This is Mosquitto's policy too (`max_queued_messages`): the
//!   publisher (the daemon's frame loop) and the other subscribers are never slowed down, and
//!   disconnecting the slow client instead would lose the same messages plus the connection.
//! - A client that does not read its socket stops being read once 64 KiB of output are pending
//!   (so it cannot queue unbounded acknowledgements either); its keep-alive then expires.
//! - At most [`MAX_CONNECTIONS`] connections; per client at most [`MAX_SUBSCRIPTIONS`]
//!   subscriptions (256 KiB of filters), 100,000 retained messages owed after one SUBSCRIBE,
//!   and 10 s to send CONNECT.
//!
//! # What it deliberately does not do
//!
//! No persistence (retained messages are lost on restart), no authentication or ACLs, no TLS,
//! no outgoing QoS 2, no persistent sessions or offline queues, no bridging, no `$SYS` topics,
//! no MQTT 5. Use Mosquitto for any of those. There is no topic index either: each message
//! is matched against every subscription of every client, which is plenty for the handful of
//! clients of a single box.

mod connection;
mod topic;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::SubscribeReasonCode;
use rumqttc::mqttbytes::QoS;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Connections beyond this are accepted and closed at once, so that a runaway client loop
/// cannot exhaust file descriptors or memory; far more than a single box needs.
pub const MAX_CONNECTIONS: usize = 1024;

/// Subscriptions one client may hold; further filters get the SUBACK failure code.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// Total length of the filters one client may hold, for the same reason.
const MAX_SUBSCRIPTION_BYTES: usize = 256 * 1024;

/// How long [`EmbeddedBroker::shutdown`] waits for connection tasks before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Limits of the embedded broker. The defaults suit the demo and a single box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerOptions {
    /// Largest packet accepted, counted as MQTT's "remaining length" (the packet less its 2 to
    /// 5 byte fixed header). Use the same number as the client's `[mqtt].max_packet_bytes`.
    pub max_packet_bytes: usize,
    /// Memory for retained messages (topic + payload bytes). When a new retained message
    /// would exceed it, it is not stored (and any older one on that topic is removed rather
    /// than left stale); a warning is logged.
    pub max_retained_bytes: usize,
    /// Messages queued per connection for a subscriber that has not read them yet; beyond
    /// that its messages are dropped (see the module documentation).
    pub client_queue: usize,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            max_packet_bytes: 4 * 1024 * 1024,
            max_retained_bytes: 64 * 1024 * 1024,
            client_queue: 1024,
        }
    }
}

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Another process (usually another MQTT broker) already listens on the address.
    #[error(
        "cannot start the embedded MQTT broker on {addr}: the address is already in use ({source}), \
         probably by another MQTT broker such as Mosquitto; stop that broker, or set \
         [mqtt].embedded_bind to a free address such as \"127.0.0.1:18830\", or use the running broker with \
         [mqtt].url = \"mqtt://{addr}\""
    )]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
        /// The error from `bind`.
        source: io::Error,
    },
    /// Any other failure to listen, e.g. a port below 1024 without the privilege.
    #[error(
        "cannot start the embedded MQTT broker on {addr}: {source}; choose another \
         [mqtt].embedded_bind, or use an external broker with [mqtt].url = \"mqtt://HOST:PORT\""
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The error from `bind` or `local_addr`.
        source: io::Error,
    },
    /// [`BrokerOptions`] with a zero limit, which would refuse every client.
    #[error("invalid embedded MQTT broker options: {0}")]
    Options(&'static str),
}

/// A running embedded broker. Dropping it stops it too, without waiting; prefer
/// [`EmbeddedBroker::shutdown`], which waits for the connections to close.
pub struct EmbeddedBroker {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    accept_task: Option<JoinHandle<()>>,
    #[cfg(test)]
    shared: Arc<BrokerCore>,
}

impl EmbeddedBroker {
    /// Binds and starts accepting on the current tokio runtime; returns once the socket is bound.
    pub async fn start(
        addr: SocketAddr,
        opts: BrokerOptions,
    ) -> Result<EmbeddedBroker, BrokerError> {
        if opts.max_packet_bytes == 0 {
            return Err(BrokerError::Options("max_packet_bytes must be at least 1"));
        }
        if opts.client_queue == 0 {
            return Err(BrokerError::Options("client_queue must be at least 1"));
        }
        let listener = TcpListener::bind(addr).await.map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                BrokerError::AddrInUse { addr, source }
            } else {
                BrokerError::Bind { addr, source }
            }
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BrokerError::Bind { addr, source })?;
        let shared = Arc::new(BrokerCore::new(opts));
        let (shutdown, shutdown_rx) = watch::channel(false);
        #[cfg(test)]
        let shared_for_tests = shared.clone();
        let accept_task = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
        tracing::info!("embedded MQTT broker listening on {local_addr}");
        Ok(EmbeddedBroker {
            local_addr,
            shutdown,
            accept_task: Some(accept_task),
            #[cfg(test)]
            shared: shared_for_tests,
        })
    }

    /// The address actually bound (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, disconnects every client, waits for the tasks (bounded time).
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.accept_task.take() {
            let abort = task.abort_handle();
            // The accept task itself gives the connections SHUTDOWN_GRACE, then aborts them.
            if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        tracing::info!("embedded MQTT broker on {} stopped", self.local_addr);
    }
}

/// Introspection for the tests, which wait on broker state instead of sleeping.
#[cfg(test)]
impl EmbeddedBroker {
    fn client_connected(&self, client_id: &str) -> bool {
        self.shared.lock().sessions.contains_key(client_id)
    }

    fn subscription_count(&self, client_id: &str) -> usize {
        let state = self.shared.lock();
        state
            .sessions
            .get(client_id)
            .map_or(0, |s| s.subscriptions.len())
    }

    fn dropped_for(&self, client_id: &str) -> u64 {
        let state = self.shared.lock();
        state.sessions.get(client_id).map_or(0, |s| s.dropped)
    }

    fn retained_bytes(&self) -> usize {
        self.shared.lock().retained_bytes
    }
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<BrokerCore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            // Err: the EmbeddedBroker is gone, which means stop as well.
            _ = shutdown.changed() => break,
            Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = res {
                    if e.is_panic() {
                        tracing::error!("embedded MQTT broker: a connection task panicked: {e}");
                    }
                }
            }
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    if tasks.len() >= MAX_CONNECTIONS {
                        tracing::warn!(
                            "embedded MQTT broker: refusing {peer}: already {MAX_CONNECTIONS} connections"
                        );
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    tasks.spawn(connection::run(stream, peer, shared.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning, and keep serving.
                    tracing::warn!("embedded MQTT broker: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    // Every connection task watches the same signal and closes its socket at once.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!("embedded MQTT broker: aborting connections that did not close in time");
        tasks.shutdown().await;
    }
}

/// A message on its way to subscribers. Cheap to clone: the topic and payload are shared.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) topic: Arc<str>,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
}

pub(crate) fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) {
        a
    } else {
        b
    }
}

/// State shared by all connections, behind one mutex held only for short, non-async work.
pub(crate) struct BrokerCore {
    pub(crate) opts: BrokerOptions,
    next_conn_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    retained: HashMap<Arc<str>, Retained>,
    retained_bytes: usize,
    /// Retained messages not stored for lack of room, for rate-limited warnings.
    retained_refused: u64,
}

struct Session {
    conn_id: u64,
    tx: mpsc::Sender<Message>,
    /// Fires when another connection takes the client id over.
    kick: Option<oneshot::Sender<()>>,
    subscriptions: HashMap<String, QoS>,
    subscription_bytes: usize,
    /// Messages lost because the queue was full.
    dropped: u64,
}

struct Retained {
    payload: Bytes,
    qos: QoS,
}

/// A client's registration, returned by [`BrokerCore::register`].
pub(crate) struct Registration {
    pub(crate) conn_id: u64,
    pub(crate) rx: mpsc::Receiver<Message>,
    pub(crate) kicked: oneshot::Receiver<()>,
    /// Whether a live connection with the same client id was closed for this one.
    pub(crate) took_over: bool,
}

impl BrokerCore {
    fn new(opts: BrokerOptions) -> BrokerCore {
        BrokerCore {
            opts,
            next_conn_id: AtomicU64::new(1),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave State half-updated in a way that matters more than
        // stopping the broker would.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes `conn_id` the connection of `client_id`, closing the previous one if any.
    pub(crate) fn register(&self, client_id: &str, conn_id: u64) -> Registration {
        let (tx, rx) = mpsc::channel(self.opts.client_queue);
        let (kick, kicked) = oneshot::channel();
        let session = Session {
            conn_id,
            tx,
            kick: Some(kick),
            subscriptions: HashMap::new(),
            subscription_bytes: 0,
            dropped: 0,
        };
        let old = self.lock().sessions.insert(client_id.to_owned(), session);
        let took_over = match old {
            Some(mut old) => {
                if let Some(kick) = old.kick.take() {
                    let _ = kick.send(());
                }
                log_dropped(client_id, &old);
                true
            }
            None => false,
        };
        Registration {
            conn_id,
            rx,
            kicked,
            took_over,
        }
    }

    /// Forgets the session of `client_id` if it still belongs to `conn_id` (after a takeover
    /// it belongs to the new connection).
    pub(crate) fn unregister(&self, client_id: &str, conn_id: u64) {
        let mut state = self.lock();
        if state
            .sessions
            .get(client_id)
            .is_some_and(|s| s.conn_id == conn_id)
        {
            if let Some(old) = state.sessions.remove(client_id) {
                drop(state);
                log_dropped(client_id, &old);
            }
        }
    }

    /// Adds subscriptions; returns the SUBACK codes and the retained messages to send, in
    /// filter order, each at min(its QoS, granted QoS) with the retain flag set.
    pub(crate) fn subscribe(
        &self,
        client_id: &str,
        conn_id: u64,
        filters: impl IntoIterator<Item = (String, QoS)>,
        max_retained_out: usize,
    ) -> (Vec<SubscribeReasonCode>, Vec<Message>) {
        let mut state = self.lock();
        let State {
            sessions, retained, ..
        } = &mut *state;
        let mut codes = Vec::new();
        let mut out = Vec::new();
        let session = sessions.get_mut(client_id).filter(|s| s.conn_id == conn_id);
        let Some(session) = session else {
            // Taken over meanwhile: this connection is closing anyway.
            codes.extend(filters.into_iter().map(|_| SubscribeReasonCode::Failure));
            return (codes, out);
        };
        let mut skipped = 0usize;
        for (filter, requested) in filters {
            if !topic::valid_filter(&filter) {
                codes.push(SubscribeReasonCode::Failure);
                continue;
            }
            let granted = min_qos(requested, QoS::AtLeastOnce);
            if let Some(q) = session.subscriptions.get_mut(&filter) {
                // §3.8.4: replace the existing subscription; retained messages are resent.
                *q = granted;
            } else if session.subscriptions.len() >= MAX_SUBSCRIPTIONS
                || session.subscription_bytes + filter.len() > MAX_SUBSCRIPTION_BYTES
            {
                tracing::warn!(
                    "embedded MQTT broker: client {client_id:?} holds too many subscriptions; refusing {filter:?}"
                );
                codes.push(SubscribeReasonCode::Failure);
                continue;
            } else {
                session.subscription_bytes += filter.len();
                session.subscriptions.insert(filter.clone(), granted);
            }
            codes.push(SubscribeReasonCode::Success(granted));
            for (topic, msg) in retained.iter() {
                if topic::matches(&filter, topic) {
                    if out.len() >= max_retained_out {
                        skipped += 1;
                        continue;
                    }
                    out.push(Message {
                        topic: topic.clone(),
                        payload: msg.payload.clone(),
                        qos: min_qos(msg.qos, granted),
                        retain: true,
                    });
                }
            }
        }
        if skipped > 0 {
            tracing::warn!(
                "embedded MQTT broker: client {client_id:?} subscribed to more retained messages than it can be sent at once; {skipped} not sent"
            );
        }
        (codes, out)
    }

    pub(crate) fn unsubscribe(&self, client_id: &str, conn_id: u64, filters: &[String]) {
        let mut state = self.lock();
        if let Some(session) = state
            .sessions
            .get_mut(client_id)
            .filter(|s| s.conn_id == conn_id)
        {
            for f in filters {
                if session.subscriptions.remove(f).is_some() {
                    session.subscription_bytes -= f.len();
                }
            }
        }
    }

    /// Stores `msg` if retained, then hands it to every matching subscriber's queue without
    /// waiting: a full queue loses the message (counted), it never blocks the publisher.
    pub(crate) fn publish(&self, msg: Message) {
        let mut state = self.lock();
        if msg.retain {
            state.store_retained(&msg, self.opts.max_retained_bytes);
        }
        for (client_id, session) in state.sessions.iter_mut() {
            let mut granted: Option<QoS> = None;
            for (filter, qos) in &session.subscriptions {
                if topic::matches(filter, &msg.topic) {
                    granted =
                        Some(granted.map_or(*qos, |g| if *qos as u8 > g as u8 { *qos } else { g }));
                    if granted == Some(QoS::AtLeastOnce) {
                        break;
                    }
                }
            }
            let Some(granted) = granted else { continue };
            let delivery = Message {
                topic: msg.topic.clone(),
                payload: msg.payload.clone(),
                qos: min_qos(msg.qos, granted),
                retain: false,
            };
            match session.tx.try_send(delivery) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    session.dropped += 1;
                    if session.dropped == 1 || session.dropped.is_multiple_of(1000) {
                        tracing::warn!(
                            "embedded MQTT broker: client {client_id:?} does not keep up; {} message(s) dropped so far (its queue holds {})",
                            session.dropped,
                            self.opts.client_queue
                        );
                    }
                }
                // The connection is closing; it unregisters itself.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

impl State {
    fn store_retained(&mut self, msg: &Message, limit: usize) {
        if let Some(old) = self.retained.remove(&msg.topic) {
            self.retained_bytes -= msg.topic.len() + old.payload.len();
        }
        if msg.payload.is_empty() {
            return;
        }
        let size = msg.topic.len() + msg.payload.len();
        if self.retained_bytes + size > limit {
            self.retained_refused += 1;
            if self.retained_refused == 1 || self.retained_refused.is_multiple_of(1000) {
                tracing::warn!(
                    "embedded MQTT broker: retained messages would exceed {limit} bytes; not retaining {:?} ({} refused so far)",
                    msg.topic,
                    self.retained_refused
                );
            }
            return;
        }
        // A copy, so that the retained payload does not keep the whole read buffer it was
        // parsed from alive, and the byte count above is the memory actually held.
        let retained = Retained {
            payload: Bytes::copy_from_slice(&msg.payload),
            qos: msg.qos,
        };
        self.retained.insert(msg.topic.clone(), retained);
        self.retained_bytes += size;
    }
}

fn log_dropped(client_id: &str, session: &Session) {
    if session.dropped > 0 {
        tracing::warn!(
            "embedded MQTT broker: client {client_id:?} left; {} message(s) were dropped for it because it did not keep up",
            session.dropped
        );
    }
}
