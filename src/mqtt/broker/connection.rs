//! One client connection: CONNECT handshake, then a single task that reads packets, writes
//! replies and deliveries, and enforces keep-alive, all from one `select!` loop.
//!
//! One task and two buffers instead of separate reader and writer tasks, so that every bound
//! is visible here: the read buffer holds at most one packet (plus one read), the write
//! buffer stops being filled at [`HIGH_WATER`], and while it is that full the socket is not
//! read either, which pushes back on a client that sends without reading.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    Subscribe, UnsubAck, Unsubscribe,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{topic, BrokerCore, Message, Registration};

/// A client must send CONNECT within this time, or the socket is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes asked of the socket per read (more only to complete a larger packet).
const READ_CHUNK: usize = 8 * 1024;

/// Pending output beyond which neither more deliveries are encoded nor more input is read.
const HIGH_WATER: usize = 64 * 1024;

/// Retained messages waiting to be sent after one SUBSCRIBE, at most.
const MAX_PENDING_RETAINED: usize = 100_000;

/// How long a refusing CONNACK may take to write before the socket is dropped anyway.
const CONNACK_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection ended abnormally; logged, and the last will is published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("malformed packet: {0}")]
    Codec(CodecError),
    #[error("packet of {0} bytes exceeds max_packet_bytes")]
    TooLarge(usize),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("unsupported protocol level {0}")]
    ProtocolLevel(u8),
    #[error("no packet within 1.5 x the keep-alive of {0} s")]
    KeepAlive(u16),
    #[error("connection closed by the client without DISCONNECT")]
    Eof,
    #[error("taken over by a new connection with the same client id")]
    TakenOver,
}

/// How the connected phase ended.
enum End {
    /// DISCONNECT received: no will.
    Disconnect,
    /// Broker shutdown: no will (everyone is being disconnected).
    Shutdown,
    /// Anything else: the will is published.
    Abnormal(ConnError),
}

/// Serves one TCP connection until it ends. Never panics on input; every error ends only
/// this connection.
pub(crate) async fn run(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<BrokerCore>,
    mut shutdown: watch::Receiver<bool>,
) {
    if *shutdown.borrow_and_update() {
        return;
    }
    let max = shared.opts.max_packet_bytes;
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let handshake = tokio::select! {
        res = tokio::time::timeout(CONNECT_TIMEOUT, read_first_packet(&mut stream, &mut rbuf, max)) => res,
        _ = shutdown.changed() => return,
    };
    let connect = match handshake {
        Err(_) => {
            tracing::debug!("MQTT {peer}: no CONNECT within {CONNECT_TIMEOUT:?}; closing");
            return;
        }
        Ok(Ok(Packet::Connect(c))) if c.protocol == Protocol::V4 => c,
        Ok(Ok(Packet::Connect(_)))
        | Ok(Err(ConnError::ProtocolLevel(_)))
        | Ok(Err(ConnError::Codec(CodecError::InvalidProtocolLevel(_)))) => {
            tracing::debug!("MQTT {peer}: unsupported protocol level; refusing");
            refuse(&mut stream, ConnectReturnCode::RefusedProtocolVersion).await;
            return;
        }
        Ok(Ok(other)) => {
            tracing::debug!("MQTT {peer}: first packet is not CONNECT ({other:?}); closing");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!("MQTT {peer}: bad CONNECT: {e}; closing");
            return;
        }
    };
    let Connect {
        keep_alive,
        client_id,
        clean_session,
        last_will,
        login: _, // Ignored: loopback only, see the module documentation.
        ..
    } = connect;
    if client_id.is_empty() && !clean_session {
        refuse(&mut stream, ConnectReturnCode::BadClientId).await;
        return;
    }
    let will = match last_will {
        Some(w) if !topic::valid_topic_name(&w.topic) => {
            tracing::debug!("MQTT {peer}: invalid will topic {:?}; closing", w.topic);
            return;
        }
        Some(w) => Some(Message {
            topic: Arc::from(w.topic),
            // Copied: the will may wait for hours, and should not pin the read buffer.
            payload: bytes::Bytes::copy_from_slice(&w.message),
            qos: w.qos,
            retain: w.retain,
        }),
        None => None,
    };
    let conn_id = shared.next_conn_id();
    let client_id = if client_id.is_empty() {
        format!("adaptd-embedded-{conn_id}")
    } else {
        client_id
    };
    let Registration {
        conn_id,
        rx,
        kicked,
        took_over,
    } = shared.register(&client_id, conn_id);
    // Unregisters however this task ends, even by a panic or by being aborted at shutdown.
    let registered = Registered {
        shared: shared.clone(),
        client_id: client_id.clone(),
        conn_id,
    };
    tracing::debug!(
        "MQTT {peer}: client {client_id:?} connected (keep-alive {keep_alive} s{}{})",
        if clean_session {
            ""
        } else {
            ", persistent session asked: not kept"
        },
        if took_over {
            ", took over the previous connection"
        } else {
            ""
        }
    );

    let mut conn = Conn {
        shared: shared.clone(),
        client_id,
        conn_id,
        max_in: max,
        max_out: max.saturating_add(8),
        rbuf,
        wbuf: BytesMut::with_capacity(READ_CHUNK),
        read_need: 0,
        keep_alive,
        last_recv: Instant::now(),
        outbound_ids: PacketIds::default(),
        inbound_qos2: PacketIds::default(),
        pending_retained: VecDeque::new(),
    };
    conn.put(&Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        false,
    )));
    let end = conn.serve(&mut stream, rx, kicked, &mut shutdown).await;
    match end {
        End::Disconnect => {
            tracing::debug!("MQTT {peer}: client {:?} disconnected", conn.client_id);
        }
        End::Shutdown => {}
        End::Abnormal(e) => {
            tracing::debug!("MQTT {peer}: client {:?}: {e}; closing", conn.client_id);
            // Before unregistering, so that once a client id is gone its will has been
            // routed (the tests rely on that order; nothing else cares).
            if let Some(will) = will {
                shared.publish(will);
            }
        }
    }
    drop(registered);
}

/// A client's place in the session table, given up on drop.
struct Registered {
    shared: Arc<BrokerCore>,
    client_id: String,
    conn_id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.unregister(&self.client_id, self.conn_id);
    }
}

/// Sends a refusing CONNACK, then the caller drops the socket (§3.2.2.3).
async fn refuse(stream: &mut TcpStream, code: ConnectReturnCode) {
    let mut buf = BytesMut::with_capacity(4);
    if Packet::ConnAck(ConnAck::new(code, false))
        .write(&mut buf, 16)
        .is_ok()
    {
        let _ = tokio::time::timeout(CONNACK_WRITE_TIMEOUT, stream.write_all(&buf)).await;
    }
}

/// Reads the first packet, accepting an MQTT 3.1 CONNECT as well.
async fn read_first_packet(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    max: usize,
) -> Result<Packet, ConnError> {
    loop {
        // Decide on the first byte / the protocol header when possible, rather than wait
        // (up to CONNECT_TIMEOUT) for the rest of something that is not a CONNECT anyway.
        if rbuf.first().is_some_and(|&b| b != 0x10) {
            return Err(ConnError::Protocol("first packet is not CONNECT"));
        }
        upgrade_mqtt31_connect(rbuf);
        if let Some(level) = connect_protocol_level(rbuf) {
            if level != 4 {
                return Err(ConnError::ProtocolLevel(level));
            }
        }
        let need = match parse(rbuf, max)? {
            Parsed::Packet(p) => return Ok(p),
            Parsed::Need(n) => n,
        };
        ensure_spare(rbuf, need);
        if stream.read_buf(rbuf).await? == 0 {
            return Err(ConnError::Eof);
        }
    }
}

enum Parsed {
    Packet(Packet),
    /// At least this many more bytes are needed.
    Need(usize),
}

/// Takes one complete packet off the front of `rbuf`, if there is one.
fn parse(rbuf: &mut BytesMut, max: usize) -> Result<Parsed, ConnError> {
    match Packet::read(rbuf, max) {
        Ok(p) => Ok(Parsed::Packet(p)),
        Err(CodecError::InsufficientBytes(n)) => Ok(Parsed::Need(n)),
        Err(CodecError::PayloadSizeLimitExceeded(n)) => Err(ConnError::TooLarge(n)),
        Err(e) => Err(ConnError::Codec(e)),
    }
}

/// Makes room for reading at least `need` more bytes (at least [`READ_CHUNK`]), allocating
/// exactly that when the buffer cannot be reused, so that a large packet never costs more
/// than its own size (`BytesMut::reserve` may double).
fn ensure_spare(buf: &mut BytesMut, need: usize) {
    let want = need.max(READ_CHUNK);
    if buf.capacity() - buf.len() >= want || buf.try_reclaim(want) {
        return;
    }
    let mut fresh = BytesMut::with_capacity(buf.len() + want);
    fresh.extend_from_slice(buf);
    *buf = fresh;
}

/// If `buf` starts with an MQTT 3.1 CONNECT (protocol name `MQIsdp`, level 3), rewrites its
/// protocol name and level to the 3.1.1 ones, which is all the codec needs: the rest of the
/// CONNECT, and every other packet, is the same in both versions.
fn upgrade_mqtt31_connect(buf: &mut BytesMut) {
    const V31: &[u8] = b"\x00\x06MQIsdp\x03";
    const V311: &[u8] = b"\x00\x04MQTT\x04";
    if buf.first() != Some(&0x10) {
        return;
    }
    let Some((remaining, len_len)) = decode_remaining_length(&buf[1..]) else {
        return;
    };
    let body = 1 + len_len;
    if remaining < V31.len() || buf.len() < body + V31.len() || !buf[body..].starts_with(V31) {
        return;
    }
    let mut out = BytesMut::with_capacity(buf.len());
    out.put_u8(0x10);
    encode_remaining_length(&mut out, remaining - (V31.len() - V311.len()));
    out.extend_from_slice(V311);
    out.extend_from_slice(&buf[body + V31.len()..]);
    *buf = out;
}

/// The protocol level of a CONNECT named "MQTT" at the front of `buf`, once visible. Checked
/// before the codec sees the packet, because the codec would parse an MQTT 5 CONNECT with the
/// 3.1.1 layout and fail on its properties instead of letting us refuse it properly.
fn connect_protocol_level(buf: &[u8]) -> Option<u8> {
    const MQTT: &[u8] = b"\x00\x04MQTT";
    let (_, len_len) = decode_remaining_length(buf.get(1..)?)?;
    let body = buf.get(1 + len_len..)?;
    if body.starts_with(MQTT) {
        body.get(MQTT.len()).copied()
    } else {
        None
    }
}

/// MQTT's variable-length "remaining length": (value, bytes used), or None if incomplete or
/// longer than four bytes.
fn decode_remaining_length(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, b) in bytes.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn encode_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

struct Conn {
    shared: Arc<BrokerCore>,
    client_id: String,
    conn_id: u64,
    max_in: usize,
    max_out: usize,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Bytes still missing from the packet at the front of `rbuf`.
    read_need: usize,
    keep_alive: u16,
    last_recv: Instant,
    /// Ids of our QoS 1 deliveries not yet acknowledged.
    outbound_ids: PacketIds,
    /// Ids of QoS 2 publishes received (and routed) whose PUBREL has not arrived.
    inbound_qos2: PacketIds,
    /// Retained messages owed after a SUBSCRIBE; sent before further input is read.
    pending_retained: VecDeque<Message>,
}

impl Conn {
    async fn serve(
        &mut self,
        stream: &mut TcpStream,
        mut rx: mpsc::Receiver<Message>,
        mut kicked: oneshot::Receiver<()>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let (mut reader, mut writer) = stream.split();
        // §3.1.2.10: 1.5 x the keep-alive, measured from the last bytes received. (A client
        // that leaves all 65,535 QoS 1 ids unacknowledged while retained messages are owed
        // stops being read and written, and ends here too: bounded, and only that client.)
        let keep_alive =
            (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500));
        loop {
            if let Err(e) = self.process_input() {
                return e;
            }
            self.fill_output(&mut rx);
            let room = self.wbuf.len() < HIGH_WATER;
            let idle = self.pending_retained.is_empty();
            let read_more = room && idle;
            let take_more = room && idle && !self.outbound_ids.is_full();
            if read_more {
                ensure_spare(&mut self.rbuf, self.read_need);
            }
            let deadline = self.last_recv + keep_alive.unwrap_or(Duration::from_secs(86_400));
            tokio::select! {
                _ = &mut kicked => return End::Abnormal(ConnError::TakenOver),
                // Err: the broker handle is gone, which also means stop.
                _ = shutdown.changed() => return End::Shutdown,
                res = writer.write_buf(&mut self.wbuf), if !self.wbuf.is_empty() => match res {
                    Ok(0) => return End::Abnormal(ConnError::Io(io::ErrorKind::WriteZero.into())),
                    // While its input is not read (output full, or retained messages owed), a
                    // client consuming our output is alive even if its PINGREQ waits unread.
                    Ok(_) if !read_more => self.last_recv = Instant::now(),
                    Ok(_) => {}
                    Err(e) => return End::Abnormal(ConnError::Io(e)),
                },
                res = reader.read_buf(&mut self.rbuf), if read_more => match res {
                    Ok(0) => return End::Abnormal(ConnError::Eof),
                    Ok(_) => self.last_recv = Instant::now(),
                    Err(e) => return End::Abnormal(ConnError::Io(e)),
                },
                msg = rx.recv(), if take_more => match msg {
                    Some(msg) => self.deliver(msg),
                    // The session was replaced; `kicked` says so too.
                    None => return End::Abnormal(ConnError::TakenOver),
                },
                _ = tokio::time::sleep_until(deadline), if keep_alive.is_some() => {
                    return End::Abnormal(ConnError::KeepAlive(self.keep_alive));
                }
            }
        }
    }

    /// Handles the complete packets in the read buffer, pausing while retained messages are
    /// owed or the output is full (the rest stays buffered for the next round).
    fn process_input(&mut self) -> Result<(), End> {
        while self.pending_retained.is_empty() && self.wbuf.len() < HIGH_WATER {
            match parse(&mut self.rbuf, self.max_in) {
                Ok(Parsed::Need(n)) => {
                    self.read_need = n;
                    return Ok(());
                }
                Ok(Parsed::Packet(p)) => self.handle(p)?,
                Err(e) => return Err(End::Abnormal(e)),
            }
        }
        Ok(())
    }

    fn handle(&mut self, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Publish(p) => self.on_publish(p).map_err(End::Abnormal)?,
            Packet::PubAck(ack) => {
                self.outbound_ids.remove(ack.pkid);
            }
            Packet::PubRel(rel) => {
                // §4.3.3: PUBCOMP even for an unknown id (e.g. a PUBREL resent after PUBCOMP).
                self.inbound_qos2.remove(rel.pkid);
                self.put(&Packet::PubComp(PubComp::new(rel.pkid)));
            }
            // We never send QoS 2, so these can only be stray; harmless to ignore.
            Packet::PubRec(_) | Packet::PubComp(_) => {}
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u).map_err(End::Abnormal)?,
            Packet::PingReq => {
                self.put(&Packet::PingResp);
            }
            Packet::Disconnect => return Err(End::Disconnect),
            Packet::Connect(_) => {
                return Err(End::Abnormal(ConnError::Protocol("second CONNECT")));
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(End::Abnormal(ConnError::Protocol(
                    "server-to-client packet sent by the client",
                )));
            }
        }
        Ok(())
    }

    fn on_publish(&mut self, p: Publish) -> Result<(), ConnError> {
        if !topic::valid_topic_name(&p.topic) {
            return Err(ConnError::Protocol("invalid topic name in PUBLISH"));
        }
        let (qos, pkid) = (p.qos, p.pkid);
        let msg = Message {
            topic: Arc::from(p.topic),
            payload: p.payload,
            qos,
            retain: p.retain,
        };
        match qos {
            QoS::AtMostOnce => self.shared.publish(msg),
            QoS::AtLeastOnce => {
                self.shared.publish(msg);
                self.put(&Packet::PubAck(PubAck::new(pkid)));
            }
            QoS::ExactlyOnce => {
                // Routed on first receipt only; a resend before PUBREL just gets PUBREC.
                if self.inbound_qos2.insert(pkid) {
                    self.shared.publish(msg);
                }
                self.put(&Packet::PubRec(PubRec::new(pkid)));
            }
        }
        Ok(())
    }

    fn on_subscribe(&mut self, s: Subscribe) {
        let room = MAX_PENDING_RETAINED.saturating_sub(self.pending_retained.len());
        let filters = s.filters.into_iter().map(|f| (f.path, f.qos));
        let (codes, retained) = self
            .shared
            .subscribe(&self.client_id, self.conn_id, filters, room);
        self.put(&Packet::SubAck(SubAck::new(s.pkid, codes)));
        self.pending_retained.extend(retained);
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), ConnError> {
        if u.topics.is_empty() {
            return Err(ConnError::Protocol("UNSUBSCRIBE without topic filters"));
        }
        self.shared
            .unsubscribe(&self.client_id, self.conn_id, &u.topics);
        self.put(&Packet::UnsubAck(UnsubAck::new(u.pkid)));
        Ok(())
    }

    /// Encodes owed retained messages, then queued deliveries, while the output has room.
    fn fill_output(&mut self, rx: &mut mpsc::Receiver<Message>) {
        while self.wbuf.len() < HIGH_WATER && !self.outbound_ids.is_full() {
            if let Some(msg) = self.pending_retained.pop_front() {
                self.deliver(msg);
                continue;
            }
            match rx.try_recv() {
                Ok(msg) => self.deliver(msg),
                Err(_) => break,
            }
        }
    }

    /// Encodes one message for this client; its QoS is already at most the granted QoS.
    fn deliver(&mut self, msg: Message) {
        let pkid = match msg.qos {
            QoS::AtMostOnce => 0,
            _ => match self.outbound_ids.allocate() {
                Some(id) => id,
                // Callers check is_full first; if not, losing one message is the bounded answer.
                None => return,
            },
        };
        let publish = Publish {
            dup: false,
            qos: if pkid == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            retain: msg.retain,
            topic: msg.topic.to_string(),
            pkid,
            payload: msg.payload,
        };
        if !self.put(&Packet::Publish(publish)) && pkid != 0 {
            self.outbound_ids.remove(pkid);
        }
    }

    /// Appends `packet` to the output; false (and nothing appended) if it cannot be encoded.
    fn put(&mut self, packet: &Packet) -> bool {
        let before = self.wbuf.len();
        match packet.write(&mut self.wbuf, self.max_out) {
            Ok(_) => true,
            Err(e) => {
                self.wbuf.truncate(before);
                tracing::warn!(
                    "embedded MQTT broker: cannot encode a packet for client {:?}: {e}",
                    self.client_id
                );
                false
            }
        }
    }
}

/// A set of MQTT packet ids (1..=65535) as a bitmap, allocated on first use (8 KiB).
#[derive(Default)]
pub(crate) struct PacketIds {
    bits: Vec<u64>,
    count: usize,
    next: u16,
}

impl PacketIds {
    const CAPACITY: usize = u16::MAX as usize;

    fn is_full(&self) -> bool {
        self.count >= Self::CAPACITY
    }

    fn slot(id: u16) -> (usize, u64) {
        (usize::from(id / 64), 1u64 << (id % 64))
    }

    /// Adds `id`; false if it was already there (or is 0, which is never a packet id).
    pub(crate) fn insert(&mut self, id: u16) -> bool {
        if id == 0 {
            return false;
        }
        if self.bits.is_empty() {
            self.bits = vec![0; 1024];
        }
        let (word, bit) = Self::slot(id);
        let Some(w) = self.bits.get_mut(word) else {
            return false;
        };
        if *w & bit != 0 {
            return false;
        }
        *w |= bit;
        self.count += 1;
        true
    }

    pub(crate) fn remove(&mut self, id: u16) -> bool {
        let (word, bit) = Self::slot(id);
        match self.bits.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                self.count -= 1;
                true
            }
            _ => false,
        }
    }

    /// A free id, taken in turn after the last one given, so ids are not reused early.
    pub(crate) fn allocate(&mut self) -> Option<u16> {
        if self.is_full() {
            return None;
        }
        for _ in 0..=Self::CAPACITY {
            self.next = self.next.wrapping_add(1);
            if self.next == 0 {
                continue;
            }
            if self.insert(self.next) {
                return Some(self.next);
            }
        }
        None
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn packet_ids_are_unique_until_freed() {
        let mut ids = PacketIds::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..u16::MAX {
            let id = ids.allocate().expect("free id");
            assert_ne!(id, 0);
            assert!(seen.insert(id), "id {id} handed out twice");
        }
        assert!(ids.is_full());
        assert_eq!(ids.allocate(), None);
        assert!(ids.remove(1234));
        assert!(!ids.remove(1234));
        assert_eq!(ids.allocate(), Some(1234));
        assert!(!ids.insert(0));
        assert!(!ids.remove(0));
    }

    #[test]
    fn mqtt31_connect_is_rewritten_for_the_codec() {
        // CONNECT "MQIsdp" level 3, clean session, keep-alive 60, client id "c1".
        let body: &[u8] = b"\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x02c1";
        let mut buf = BytesMut::new();
        buf.put_u8(0x10);
        buf.put_u8(body.len() as u8);
        buf.extend_from_slice(body);
        buf.extend_from_slice(b"\xc0\x00"); // a PINGREQ right behind it
        upgrade_mqtt31_connect(&mut buf);
        match Packet::read(&mut buf, 1024) {
            Ok(Packet::Connect(c)) => {
                assert_eq!(c.client_id, "c1");
                assert_eq!(c.keep_alive, 60);
                assert!(c.clean_session);
            }
            other => panic!("expected CONNECT, got {other:?}"),
        }
        assert!(matches!(Packet::read(&mut buf, 1024), Ok(Packet::PingReq)));
        // A 3.1.1 CONNECT and partial input are left alone.
        let mut partial = BytesMut::from(&b"\x10\x10\x00\x06MQI"[..]);
        upgrade_mqtt31_connect(&mut partial);
        assert_eq!(&partial[..], b"\x10\x10\x00\x06MQI");
    }

    #[test]
    fn remaining_length_round_trips() {
        for len in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut out = BytesMut::new();
            encode_remaining_length(&mut out, len);
            assert_eq!(decode_remaining_length(&out), Some((len, out.len())));
        }
        assert_eq!(decode_remaining_length(&[0x80, 0x80]), None);
        assert_eq!(
            decode_remaining_length(&[0xff, 0xff, 0xff, 0xff, 0x01]),
            None
        );
    }

    /// Random bytes through the same parse path as the connection: errors, never panics,
    /// and never a frame over the limit.
    #[test]
    fn garbage_never_panics_the_parser() {
        let mut rng = crate::rng::SplitMix64::new(17);
        let mut next = move || rng.next_u64();
        for round in 0..200_000u32 {
            let len = (next() % 64) as usize;
            let mut buf = BytesMut::with_capacity(len);
            for i in 0..len {
                let r = next() as u8;
                // Bias the first byte towards valid packet types so parsing goes deep.
                buf.put_u8(if i == 0 && round % 2 == 0 {
                    (r & 0xf0) | (r & 0x03) << 1
                } else {
                    r
                });
            }
            upgrade_mqtt31_connect(&mut buf);
            for _ in 0..4 {
                match parse(&mut buf, 48) {
                    Ok(Parsed::Packet(_)) => {}
                    Ok(Parsed::Need(_)) | Err(_) => break,
                }
            }
        }
    }
}
