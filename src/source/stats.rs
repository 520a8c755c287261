//! Counters and state of a source, shared with whoever publishes `state` and `stats`.
//!
//! The source itself lives on the capture thread and is borrowed mutably while it blocks in
//! `next_frame`, so the MQTT side cannot ask it for numbers. Instead each source owns an
//! `Arc<SourceStats>` of atomics that the daemon clones once (via [`crate::source::Source::stats`])
//! and reads whenever it likes, without locking the capture path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use crate::wire::SourceState;

/// Live counters; all updated by the capture thread only, read from anywhere.
#[derive(Debug)]
pub struct SourceStats {
    frames: AtomicU64,
    decode_errors: AtomicU64,
    rate_dropped: AtomicU64,
    resyncs: AtomicU64,
    garbage_bytes: AtomicU64,
    reconnects: AtomicU64,
    /// Time spent decoding delivered and skipped frames (JPEG, PNG, H.264), nanoseconds.
    decode_ns: AtomicU64,
    state: Mutex<SourceState>,
    last_skip: Mutex<Option<String>>,
    negotiated: Mutex<Option<String>>,
}

impl Default for SourceStats {
    fn default() -> Self {
        SourceStats {
            frames: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            rate_dropped: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            garbage_bytes: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            decode_ns: AtomicU64::new(0),
            state: Mutex::new(SourceState::Starting),
            last_skip: Mutex::new(None),
            negotiated: Mutex::new(None),
        }
    }
}

/// A copy of [`SourceStats`] at one moment, ready to be serialised into `stats` / `state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatsSnapshot {
    /// Frames delivered by the source.
    pub frames: u64,
    /// Files or frames that could not be decoded and were skipped.
    pub decode_errors: u64,
    /// MJPEG frames read and discarded to honour `fps_limit` (never decoded).
    pub rate_dropped: u64,
    /// Times the MJPEG splitter lost a frame boundary (truncated, oversized or malformed frame)
    /// and searched for the next start-of-image.
    pub resyncs: u64,
    /// Bytes between frames that were not part of any JPEG.
    pub garbage_bytes: u64,
    /// Times a streaming camera was lost (each loss starts a round of reopening).
    pub reconnects: u64,
    #[serde(flatten)]
    pub state: SourceState,
    /// Why the most recent frame or file was skipped.
    pub last_skip: Option<String>,
    /// What the camera driver granted, e.g. `MJPG 640x480 @ 15 fps`.
    pub negotiated: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SourceStats {
    pub fn new() -> Arc<SourceStats> {
        Arc::new(SourceStats::default())
    }

    pub fn snapshot(&self) -> SourceStatsSnapshot {
        SourceStatsSnapshot {
            frames: self.frames.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            rate_dropped: self.rate_dropped.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            garbage_bytes: self.garbage_bytes.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            state: self.state(),
            last_skip: lock(&self.last_skip).clone(),
            negotiated: lock(&self.negotiated).clone(),
        }
    }

    pub fn state(&self) -> SourceState {
        lock(&self.state).clone()
    }

    pub(crate) fn set_state(&self, s: SourceState) {
        *lock(&self.state) = s;
    }

    /// Counts a delivered frame and marks the source as streaming.
    pub(crate) fn frame_delivered(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        let mut state = lock(&self.state);
        if *state != SourceState::Streaming {
            *state = SourceState::Streaming;
        }
    }

    /// Counts a skipped, undecodable file or frame; returns the new count so the caller can
    /// decide whether to log (see [`should_log`]).
    pub(crate) fn decode_error(&self, why: String) -> u64 {
        *lock(&self.last_skip) = Some(why);
        self.decode_errors.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Adds the time one decode took (whether it succeeded or not).
    pub(crate) fn decoded(&self, took: std::time::Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.decode_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Seconds spent decoding since start (`/metrics`: divided by the frames read, the mean
    /// decode time).
    pub fn decode_seconds(&self) -> f64 {
        self.decode_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    pub(crate) fn rate_dropped(&self) {
        self.rate_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_splitter(&self, resyncs: u64, garbage_bytes: u64) {
        self.resyncs.store(resyncs, Ordering::Relaxed);
        self.garbage_bytes.store(garbage_bytes, Ordering::Relaxed);
    }

    pub(crate) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
    pub(crate) fn set_negotiated(&self, what: String) {
        *lock(&self.negotiated) = Some(what);
    }
}

/// Rate limit for per-frame warnings: a camera sending corrupt frames at 30 fps must not fill
/// the journal. Logs the first 3 occurrences, then every 100th.
pub(crate) fn should_log(count: u64) -> bool {
    count <= 3 || count.is_multiple_of(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_serialises_flat() {
        let s = SourceStats::new();
        s.frame_delivered();
        s.decode_error("x.jpg: corrupt".into());
        s.set_state(SourceState::Reconnecting {
            attempt: 2,
            last_error: "gone".into(),
            retry_in_s: 4,
        });
        let snap = s.snapshot();
        assert_eq!(snap.frames, 1);
        assert_eq!(snap.decode_errors, 1);
        assert_eq!(snap.last_skip.as_deref(), Some("x.jpg: corrupt"));
        let json = serde_json::to_value(&snap).expect("serialisable");
        assert_eq!(json["state"], "reconnecting");
        assert_eq!(json["attempt"], 2);
        assert_eq!(json["last_error"], "gone");
        assert_eq!(json["frames"], 1);
    }

    #[test]
    fn log_rate_limit() {
        let logged: Vec<u64> = (1..=300).filter(|&n| should_log(n)).collect();
        assert_eq!(logged, vec![1, 2, 3, 100, 200, 300]);
    }
}
