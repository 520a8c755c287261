//! One handle per camera or microphone: what it is, and its live state.
//!
//! Ownership: the fixed part (name, models, source description) is set at start; of the live
//! part, the inference worker of the stream's medium is the only writer of `latest` and
//! `label`, and the control plane the only writer of `paused` and `force_frame`. Readers (the
//! `state` and `stats` builders, `label` and `snapshot` commands) never wait for the worker:
//! `latest` and `label` sit behind atomic pointer swaps.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use image::RgbImage;

use super::learner::Learner;
use super::occupancy::CountLedger;
use super::pipeline::FrameResult;
use crate::runtime::BackendKind;
use crate::source::{SlotCounters, SourceState, SourceStats, StreamKind};
use crate::wire;

/// The latest processed frame (or utterance) of a stream, for `label` and `snapshot`.
/// [`StreamHandle`]'s "no score threshold" (the bits of a NaN no threshold can be).
const NO_THRESHOLD: u32 = u32::MAX;

pub struct Latest {
    /// The frame; `None` for an utterance.
    pub image: Option<Arc<RgbImage>>,
    pub result: FrameResult,
}

/// A camera or microphone of the running daemon.
pub struct StreamHandle {
    /// Position in the daemon's list (the index notices and jobs use).
    pub index: usize,
    pub name: String,
    pub kind: StreamKind,
    /// The backbone that processes its frames, and the one whose embeddings its head reads.
    pub model: String,
    pub embedding_model: String,
    pub backend: BackendKind,
    pub embedding_backend: BackendKind,
    pub is_detector: bool,
    /// The source in words (`dir /data (2 fps, loop)`).
    pub source: String,
    pub source_stats: Arc<SourceStats>,
    pub slot: Arc<SlotCounters>,
    pub learner: Arc<Learner>,
    /// A source whose end is finished work (a folder replay, a recording), not a failure.
    pub replay: bool,
    paused: AtomicBool,
    /// The detector's score threshold as f32 bits ([`NO_THRESHOLD`]: not a detector), for
    /// `state`: `set score_threshold` changes it here and in the worker's lane.
    score_threshold: AtomicU32,
    force_frame: AtomicBool,
    latest: ArcSwapOption<Latest>,
    label: ArcSwapOption<String>,
    /// The retained `<camera>/<zone>/<label>` counts (the worker writes, the main loop reads
    /// to republish after a reconnect).
    pub counts: CountLedger,
    /// Its zones, for viewers.
    zones: Vec<wire::ZoneShape>,
}

/// The fixed part of a [`StreamHandle`].
pub struct StreamInfo {
    pub index: usize,
    pub name: String,
    pub kind: StreamKind,
    pub model: String,
    pub embedding_model: String,
    pub backend: BackendKind,
    pub embedding_backend: BackendKind,
    pub is_detector: bool,
    pub source: String,
    pub source_stats: Arc<SourceStats>,
    pub slot: Arc<SlotCounters>,
    pub learner: Arc<Learner>,
    pub replay: bool,
    /// The detector's score threshold at start (`None`: not a detector).
    pub score_threshold: Option<f32>,
    /// Its zones, for viewers (`state`).
    pub zones: Vec<wire::ZoneShape>,
}

impl StreamHandle {
    pub fn new(i: StreamInfo) -> StreamHandle {
        StreamHandle {
            index: i.index,
            name: i.name,
            kind: i.kind,
            model: i.model,
            embedding_model: i.embedding_model,
            backend: i.backend,
            embedding_backend: i.embedding_backend,
            is_detector: i.is_detector,
            source: i.source,
            source_stats: i.source_stats,
            slot: i.slot,
            learner: i.learner,
            replay: i.replay,
            paused: AtomicBool::new(false),
            score_threshold: AtomicU32::new(i.score_threshold.map_or(NO_THRESHOLD, f32::to_bits)),
            force_frame: AtomicBool::new(false),
            latest: ArcSwapOption::empty(),
            label: ArcSwapOption::empty(),
            counts: CountLedger::default(),
            zones: i.zones,
        }
    }

    pub fn is_audio(&self) -> bool {
        self.kind == StreamKind::Microphone
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// The detector's score threshold in force (`None`: not a detector).
    pub fn score_threshold(&self) -> Option<f32> {
        match self.score_threshold.load(Ordering::SeqCst) {
            NO_THRESHOLD => None,
            bits => Some(f32::from_bits(bits)),
        }
    }

    /// Records `set score_threshold` (the worker's lane is told separately).
    pub fn set_score_threshold(&self, t: f32) {
        if self.is_detector {
            self.score_threshold.store(t.to_bits(), Ordering::SeqCst);
        }
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Asks the worker to analyse the next frame whatever the motion gate thinks.
    pub fn force_next_frame(&self) {
        self.force_frame.store(true, Ordering::SeqCst);
    }

    /// Takes the request made by [`StreamHandle::force_next_frame`] (the worker's side).
    pub fn take_force(&self) -> bool {
        self.force_frame.swap(false, Ordering::SeqCst)
    }

    pub fn latest(&self) -> Option<Arc<Latest>> {
        self.latest.load_full()
    }

    /// The id of the latest processed frame.
    pub fn latest_frame_id(&self) -> Option<u64> {
        self.latest.load().as_ref().map(|l| l.result.frame_id)
    }

    pub(super) fn set_latest(&self, latest: Latest) {
        self.latest.store(Some(Arc::new(latest)));
    }

    /// The first stable label after consensus.
    pub fn label(&self) -> Option<String> {
        self.label.load().as_deref().cloned()
    }

    pub(super) fn set_label(&self, label: Option<String>) {
        self.label.store(label.map(Arc::new));
    }

    /// Whether no frame can come now (paused, or the source is down or done): callers that
    /// wait for a fresh frame stop waiting.
    pub fn idle(&self) -> bool {
        self.is_paused()
            || matches!(
                self.source_stats.state(),
                SourceState::Ended | SourceState::Failed { .. } | SourceState::Reconnecting { .. }
            )
    }

    /// The retained `<camera>/state` document.
    pub fn state(&self) -> wire::CameraState {
        wire::CameraState {
            camera: Some(self.name.clone()),
            kind: self.kind.as_str().to_owned(),
            enabled: true,
            paused: self.is_paused(),
            model: self.model.clone(),
            embedding_model: self.embedding_model.clone(),
            backend: self.backend.to_string(),
            embedding_backend: self.embedding_backend.to_string(),
            head_version: self.learner.head_version(),
            source: self.source.clone(),
            source_state: self.source_stats.state(),
            label: self.label(),
            score_threshold: self.score_threshold(),
            unknown_threshold: self.learner.unknown_threshold(),
            zones: self.zones.clone(),
        }
    }
}
