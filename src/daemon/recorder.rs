//! The event recorder: a thread that owns the event store and writes each object change the
//! inference workers hand it, so a slow SD card never stalls a frame.
//!
//! The hand-over is a bounded queue; when the card is so slow that it fills, a change is
//! dropped, counted, and logged (the next change of the same object rewrites the whole row,
//! so a dropped `update` costs nothing once another comes). Retention by age runs every
//! [`PRUNE_EVERY`] writes and at start; the `max_events` cap whenever an insert takes the
//! store over it, so the store never holds more than the cap.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::{info, warn};

use crate::events::{EventStore, EventStoreError, EventsConfig};
use crate::wire::{ObjectEvent, TrackedObject};

/// Changes waiting to be written, at most.
const QUEUE: usize = 4096;
/// Writes between two retention passes.
const PRUNE_EVERY: u64 = 500;

/// The sending side, shared by the workers.
#[derive(Clone)]
pub struct Recorder {
    tx: SyncSender<TrackedObject>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// Opens the store (creating it) and starts the writer thread; it stops when every
    /// [`Recorder`] is dropped, after writing what is queued.
    pub fn start(
        path: PathBuf,
        cfg: EventsConfig,
    ) -> Result<(Recorder, JoinHandle<()>), EventStoreError> {
        let store = EventStore::open(&path)?;
        let removed = store.prune(&cfg, now_s())?;
        if removed > 0 {
            info!(path = %path.display(), removed, "old events removed (retention)");
        }
        let (tx, rx) = sync_channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name("adaptd-events".into())
            .spawn(move || write_loop(store, cfg, rx))
            .map_err(|e| EventStoreError::Sqlite {
                path: path.clone(),
                what: "starting the event writer thread",
                source: rusqlite::Error::InvalidParameterName(e.to_string()),
            })?;
        Ok((
            Recorder {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            handle,
        ))
    }

    /// Queues a change for writing; never blocks.
    pub fn record(&self, change: &ObjectEvent) {
        match self.tx.try_send(change.after.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    warn!(dropped = n, "the event store cannot keep up; object changes dropped (a slow or failing disk?)");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Changes dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn write_loop(store: EventStore, cfg: EventsConfig, rx: Receiver<TrackedObject>) {
    let mut writes = 0u64;
    let mut failing = false;
    // Rows in the store, kept up to date with every insert, so `max_events` holds at all
    // times: the cap runs as soon as an insert takes the store over it (one row out, one in).
    let mut rows = store.count().unwrap_or(0);
    while let Ok(object) = rx.recv() {
        match store.upsert(&object) {
            Ok(inserted) => {
                if failing {
                    info!("the event store is writable again");
                    failing = false;
                }
                rows += u64::from(inserted);
                if rows > u64::from(cfg.max_events) {
                    if let Err(e) = store.cap(cfg.max_events) {
                        warn!("event retention failed: {e}");
                    }
                    // Recounted: a person may have dropped events meanwhile.
                    rows = store.count().unwrap_or(0);
                }
            }
            Err(e) if !failing => {
                warn!("object {} not stored: {e}", object.id);
                failing = true;
            }
            Err(_) => {}
        }
        writes += 1;
        if writes.is_multiple_of(PRUNE_EVERY) {
            if let Err(e) = store.prune(&cfg, now_s()) {
                warn!("event retention failed: {e}");
            }
        }
    }
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EventKind;

    #[test]
    fn the_store_never_holds_more_than_max_events_between_retention_passes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = EventStore::path_in(dir.path());
        let cfg = EventsConfig {
            max_events: 3,
            ..EventsConfig::default()
        };
        let (recorder, thread) = Recorder::start(path.clone(), cfg).expect("start");
        for i in 0..8u32 {
            let after = TrackedObject {
                id: format!("1700000000.{i:03}-abcdef"),
                camera: "front".into(),
                label: "person".into(),
                start_time: 1_700_000_000.0 + f64::from(i),
                ..TrackedObject::default()
            };
            // A new object and an update of it: only the insert counts against the cap.
            for kind in [EventKind::New, EventKind::Update] {
                recorder.record(&ObjectEvent {
                    kind,
                    before: None,
                    after: after.clone(),
                });
            }
        }
        drop(recorder);
        thread.join().expect("the writer thread");
        let store = EventStore::open_read(&path).expect("open");
        assert_eq!(
            store.count().expect("count"),
            3,
            "8 objects, 16 writes, far under 500"
        );
        assert!(
            store.get("1700000000.007-abcdef").expect("get").is_some(),
            "the newest stay"
        );
    }
}
