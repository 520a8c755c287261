//! The snapshot writer: a thread that owns the [`SnapshotStore`], so encoding JPEGs and
//! fsyncing them never stalls a frame.
//!
//! A camera's pipeline hands it a job when one of its objects has a snapshot due (its first
//! fit crop, then a clearly better one); the writer saves the annotated frame and the clean
//! crop, publishes the annotated JPEG retained on `<camera>/<label>/snapshot`, keeps it in
//! memory for republishing after a reconnect, and tells the pipeline which ids are on disk
//! (their next message says `has_snapshot`). Retention runs at start, every [`PRUNE_EVERY`]
//! (age) and whenever a save takes the folder over `[snapshots].max_mb` (size), so the size
//! cap holds at all times, not only after the next pass.
//!
//! It stops on [`SnapshotWriter::close`] or when every handle is dropped.
//!
//! The hand-over is a bounded queue: when the disk is so slow that it fills, the job is
//! dropped and counted (the object gets a snapshot with its next better crop).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use image::RgbImage;
use tracing::{debug, info, warn};

use super::snapshots::SnapshotStore;
use crate::mqtt::client::Publisher;

/// Jobs waiting, at most (each holds a frame: 16 x 1080p is 100 MB, so keep it short).
const QUEUE: usize = 8;
/// Time between two retention passes.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// One snapshot to write.
#[derive(Debug, Clone)]
pub struct SnapshotJob {
    pub camera: String,
    /// The object's id (the file's name).
    pub id: String,
    /// Its detector class (the topic level).
    pub label: String,
    /// What is written above the box: `person 0.82`, `alice (person) 0.82`.
    pub caption: String,
    /// The object has a name the head recognised (the caption's colour).
    pub known: bool,
    /// The frame its best crop was taken from, and the box in its pixels.
    pub frame: Arc<RgbImage>,
    pub bbox: [f32; 4],
}

/// (camera, label) and the latest annotated JPEG of an object with that label.
pub type LabelSnapshot = ((String, String), Arc<Vec<u8>>);

#[derive(Debug, Default)]
struct Shared {
    /// Per camera, ids saved since the pipeline last asked.
    saved: HashMap<String, Vec<String>>,
    /// (camera, label) -> the latest annotated JPEG, for republishing after a reconnect.
    latest: BTreeMap<(String, String), Arc<Vec<u8>>>,
}

/// The sending side, shared by the pipelines and the main loop.
#[derive(Debug, Clone)]
pub struct SnapshotWriter {
    /// `None` asks the thread to stop ([`SnapshotWriter::close`]).
    tx: SyncSender<Option<SnapshotJob>>,
    shared: Arc<Mutex<Shared>>,
    dropped: Arc<AtomicU64>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The data is plain maps: a panic elsewhere leaves nothing half-done worth refusing.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SnapshotWriter {
    /// Starts the writer thread; it stops when every [`SnapshotWriter`] is dropped, after
    /// writing what is queued.
    pub fn start(
        store: SnapshotStore,
        publisher: Publisher,
    ) -> std::io::Result<(SnapshotWriter, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(QUEUE);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("adaptd-snapshots".into())
            .spawn(move || write_loop(store, publisher, rx, thread_shared))?;
        Ok((
            SnapshotWriter {
                tx,
                shared,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            handle,
        ))
    }

    /// Queues a job; never blocks.
    pub fn submit(&self, job: SnapshotJob) {
        match self.tx.try_send(Some(job)) {
            Ok(()) => {}
            Err(TrySendError::Full(Some(job))) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    warn!(
                        camera = %job.camera,
                        dropped = n,
                        "the snapshot writer cannot keep up; snapshots dropped (a slow or failing disk?)"
                    );
                }
            }
            Err(TrySendError::Full(None) | TrySendError::Disconnected(_)) => {}
        }
    }

    /// Stops the thread after the jobs queued before (the control plane keeps a handle for
    /// reconnects, so the last sender is not the workers').
    pub fn close(&self) {
        let _ = self.tx.send(None);
    }

    /// Ids of `camera`'s objects whose snapshot was written since the last call.
    pub fn take_saved(&self, camera: &str) -> Vec<String> {
        lock(&self.shared).saved.remove(camera).unwrap_or_default()
    }

    /// The latest annotated JPEG per (camera, label), for `<camera>/<label>/snapshot`.
    pub fn latest(&self) -> Vec<LabelSnapshot> {
        lock(&self.shared)
            .latest
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Jobs dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn prune(store: &SnapshotStore) {
    match store.prune(SystemTime::now()) {
        Ok(0) => {}
        Ok(n) => info!(removed = n, "old snapshots removed (retention)"),
        Err(e) => warn!("snapshot retention failed: {e}"),
    }
}

fn on_disk(store: &SnapshotStore) -> u64 {
    store.total_bytes().unwrap_or_else(|e| {
        warn!("cannot measure the snapshots on disk: {e}");
        0
    })
}

fn write_loop(
    store: SnapshotStore,
    publisher: Publisher,
    rx: Receiver<Option<SnapshotJob>>,
    shared: Arc<Mutex<Shared>>,
) {
    prune(&store);
    // Bytes on disk, kept up to date with every save, so the size cap holds between the
    // periodic passes: a pass runs as soon as a save takes the total over it.
    let limit = store.config().max_mb.saturating_mul(1024 * 1024);
    let mut bytes = on_disk(&store);
    let mut failing = false;
    let mut last_prune = std::time::Instant::now();
    loop {
        let job = match rx.recv_timeout(PRUNE_EVERY) {
            Ok(Some(job)) => Some(job),
            Ok(None) => break,
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if last_prune.elapsed() >= PRUNE_EVERY {
            prune(&store);
            last_prune = std::time::Instant::now();
        }
        let Some(job) = job else { continue };
        match store.save(
            &job.camera,
            &job.id,
            &job.frame,
            job.bbox,
            &job.caption,
            job.known,
        ) {
            Ok(jpeg) => {
                if failing {
                    info!("snapshots are written again");
                    failing = false;
                }
                // A replaced snapshot counts twice here: a pass then comes early, and resets
                // the count from the disk.
                let clean = store
                    .path(&job.camera, &job.id, true)
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map_or(0, |m| m.len());
                bytes = bytes.saturating_add(jpeg.len() as u64 + clean);
                if bytes > limit {
                    prune(&store);
                    bytes = on_disk(&store);
                }
                let jpeg = Arc::new(jpeg);
                let topic = publisher
                    .topics()
                    .camera_label_snapshot(&job.camera, &job.label);
                if let Err(e) = publisher.try_publish(&topic, jpeg.to_vec(), true) {
                    debug!("snapshot not published on {topic}: {e}");
                }
                let mut s = lock(&shared);
                s.saved.entry(job.camera.clone()).or_default().push(job.id);
                s.latest.insert((job.camera, job.label), jpeg);
            }
            Err(e) if !failing => {
                warn!("snapshot of object {} not written: {e}", job.id);
                failing = true;
            }
            Err(e) => debug!("snapshot of object {} not written: {e}", job.id),
        }
    }
}
