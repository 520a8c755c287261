//! A learner: one embedding model's samples, heads and head in service.
//!
//! Cameras whose heads learn from the same embedding model share one learner (a kitchen
//! camera and a door camera both running MobileNetV2 learn the same `alice`). The learner
//! owns its [`Workspace`] (an SQLite connection and the head registry) behind a mutex that is
//! only ever held for one store operation, never for a training run: the trainer works on a
//! [`crate::adapt::workspace::TrainingSnapshot`] and takes the lock again only to save and
//! deploy. The head in service sits in a [`HeadSlot`], read lock-free by every frame.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tracing::{info, warn};

use super::pipeline::{HeadSlot, ServingHead};
use crate::adapt::workspace::{Workspace, WorkspaceError};
use crate::adapt::DeployDecision;
use crate::mqtt::commands::RollbackTarget;
use crate::runtime::BackendKind;
use crate::store::{AddOutcome, SampleSource};

/// Locks a mutex; a panic elsewhere while holding it (a bug) does not take the daemon down.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the training side needs to know about a learner's store (see the module docs).
pub struct Learner {
    /// The embedding model's name: the key of the learner.
    pub model: String,
    /// The engine that embeds its samples.
    pub backend: BackendKind,
    /// The engine slot (in the inference worker of the learner's medium) that embeds samples.
    pub engine: usize,
    /// Samples are WAV clips (a speaker encoder) rather than images.
    pub is_audio: bool,
    workspace: Mutex<Workspace>,
    pub slot: HeadSlot,
    counts: Mutex<BTreeMap<String, usize>>,
    /// Held-out (accuracy, macro-F1) of the head in service, read from its report when it
    /// was put in service (for `state` and `/metrics`, which must not read the registry).
    head_scores: Mutex<Option<(f64, f64)>>,
    /// `set unknown_threshold`: overrides the threshold of every head put in service.
    unknown_threshold: Mutex<Option<f32>>,
    /// Samples added since the last training run started.
    new_samples: AtomicU64,
    last_train: Mutex<Instant>,
    training: AtomicBool,
}

/// A head version to put in service, and why.
pub type Rollback = DeployDecision;

impl Learner {
    pub fn new(
        model: String,
        backend: BackendKind,
        engine: usize,
        is_audio: bool,
        ws: Workspace,
    ) -> Learner {
        let learner = Learner {
            model,
            backend,
            engine,
            is_audio,
            workspace: Mutex::new(ws),
            slot: HeadSlot::default(),
            counts: Mutex::new(BTreeMap::new()),
            head_scores: Mutex::new(None),
            unknown_threshold: Mutex::new(None),
            new_samples: AtomicU64::new(0),
            last_train: Mutex::new(Instant::now()),
            training: AtomicBool::new(false),
        };
        learner.refresh_counts(&lock(&learner.workspace));
        learner
    }

    /// Puts the registry's current head in service, if there is one.
    pub fn serve_current(&self) {
        let ws = lock(&self.workspace);
        match ws.registry.current_version() {
            Ok(Some(v)) => match self.serve_locked(&ws, v) {
                Ok(()) => info!(model = %self.model, "head v{v} in service"),
                Err(e) => warn!(
                    model = %self.model,
                    "head v{v} cannot be loaded, running without a head: {e}"
                ),
            },
            Ok(None) => info!(
                model = %self.model,
                "no head trained yet: labels are the backbone's own"
            ),
            Err(e) => warn!(model = %self.model, "head registry: {e}; running without a head"),
        }
    }

    fn serve_locked(&self, ws: &Workspace, version: u32) -> Result<(), WorkspaceError> {
        let (mut head, meta) = ws.registry.load(version)?;
        if let Some(t) = *lock(&self.unknown_threshold) {
            if let Err(e) = head.set_unknown_threshold(t) {
                warn!("the unknown_threshold set earlier ({t}) does not apply: {e}");
            }
        }
        let m = &meta.report.metrics;
        *lock(&self.head_scores) = Some((m.accuracy, m.macro_f1));
        self.slot
            .store(Some(Arc::new(ServingHead { version, head })));
        Ok(())
    }

    fn refresh_counts(&self, ws: &Workspace) {
        match ws.store.counts() {
            Ok(c) => *lock(&self.counts) = c.iter().map(|c| (c.label.clone(), c.total())).collect(),
            Err(e) => warn!(model = %self.model, "cannot count samples: {e}"),
        }
    }

    /// Stores one sample (durable when this returns). Blocking: call off the async workers.
    pub fn store_sample(
        &self,
        label: &str,
        embedding: Vec<f32>,
        thumbnail: Option<Vec<u8>>,
        source: SampleSource,
    ) -> Result<AddOutcome, WorkspaceError> {
        let mut ws = lock(&self.workspace);
        let sample = ws.sample(label, embedding, thumbnail, source);
        let out = ws.add(sample)?;
        self.refresh_counts(&ws);
        self.new_samples.fetch_add(1, Ordering::SeqCst);
        Ok(out)
    }

    /// Deletes every sample of `label`; how many. Blocking.
    pub fn forget(&self, label: &str) -> Result<usize, WorkspaceError> {
        let mut ws = lock(&self.workspace);
        let n = ws.store.remove_label(label)?;
        self.refresh_counts(&ws);
        Ok(n)
    }

    /// Deletes sample `id`; whether it existed. Blocking.
    pub fn remove_sample(&self, id: i64) -> Result<bool, WorkspaceError> {
        let mut ws = lock(&self.workspace);
        let removed = ws.store.remove(id).map_err(WorkspaceError::from)?;
        self.refresh_counts(&ws);
        Ok(removed)
    }

    /// Files sample `id` under `label` instead: stored again (same embedding, thumbnail and
    /// source) and the old one removed, so it takes the new label's split and caps. The new
    /// sample's outcome, or `None` when `id` does not exist. Blocking.
    pub fn relabel_sample(
        &self,
        id: i64,
        label: &str,
    ) -> Result<Option<AddOutcome>, WorkspaceError> {
        let mut ws = lock(&self.workspace);
        let Some(old) = ws.store.get(id).map_err(WorkspaceError::from)? else {
            return Ok(None);
        };
        let sample = ws.sample(label, old.embedding, old.thumbnail_jpeg, old.source);
        let out = ws.add(sample)?;
        ws.store.remove(id).map_err(WorkspaceError::from)?;
        self.refresh_counts(&ws);
        self.new_samples.fetch_add(1, Ordering::SeqCst);
        Ok(Some(out))
    }

    /// Deploys an earlier head and puts it in service. Blocking.
    pub fn rollback(&self, target: RollbackTarget) -> Result<Rollback, RollbackError> {
        let ws = lock(&self.workspace);
        let version = match target {
            RollbackTarget::Version(v) => v,
            RollbackTarget::Previous => {
                let current = ws
                    .registry
                    .current_version()
                    .map_err(WorkspaceError::from)?;
                let list = ws.registry.list().map_err(WorkspaceError::from)?;
                list.iter()
                    .filter(|m| m.deployed && Some(m.version) < current)
                    .map(|m| m.version)
                    .max()
                    .ok_or(RollbackError::NothingEarlier)?
            }
        };
        let decision = ws
            .registry
            .rollback(version)
            .map_err(WorkspaceError::from)?;
        self.serve_locked(&ws, version)?;
        info!(model = %self.model, "{}", decision.reason);
        Ok(decision)
    }

    /// Runs `f` on the workspace (one short store or registry operation). Blocking.
    pub fn with_workspace<T>(&self, f: impl FnOnce(&mut Workspace) -> T) -> T {
        f(&mut lock(&self.workspace))
    }

    /// Puts `version` in service after the trainer deployed it. Blocking.
    pub fn serve(&self, version: u32) -> Result<(), WorkspaceError> {
        let ws = lock(&self.workspace);
        self.serve_locked(&ws, version)
    }

    /// The unknown threshold in force: the head in service's (its calibrated one, or what
    /// `set unknown_threshold` made it); `None` without a head.
    pub fn unknown_threshold(&self) -> Option<f32> {
        self.slot
            .load()
            .as_ref()
            .map(|h| h.head.unknown_threshold())
    }

    /// `set unknown_threshold`: applies to the head in service and to every later one.
    pub fn set_unknown_threshold(&self, t: f32) -> Result<(), crate::adapt::HeadError> {
        *lock(&self.unknown_threshold) = Some(t);
        if let Some(h) = self.slot.load_full() {
            let mut head = h.head.clone();
            head.set_unknown_threshold(t)?;
            self.slot.store(Some(Arc::new(ServingHead {
                version: h.version,
                head,
            })));
        }
        Ok(())
    }

    pub fn counts(&self) -> BTreeMap<String, usize> {
        lock(&self.counts).clone()
    }

    pub fn head_version(&self) -> Option<u32> {
        self.slot.load().as_ref().map(|h| h.version)
    }

    pub fn head_macro_f1(&self) -> Option<f64> {
        lock(&self.head_scores).map(|(_, f1)| f1)
    }

    pub fn head_accuracy(&self) -> Option<f64> {
        lock(&self.head_scores).map(|(acc, _)| acc)
    }

    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::SeqCst)
    }

    /// Claims the learner for a training run; false when one is already running.
    pub fn begin_training(&self) -> bool {
        if self.training.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.new_samples.store(0, Ordering::SeqCst);
        *lock(&self.last_train) = Instant::now();
        true
    }

    pub fn end_training(&self) {
        self.training.store(false, Ordering::SeqCst);
    }

    /// Samples added since the last run started, and how long ago that was.
    pub fn since_last_run(&self) -> (u64, std::time::Duration) {
        (
            self.new_samples.load(Ordering::SeqCst),
            lock(&self.last_train).elapsed(),
        )
    }
}

/// Why a rollback did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("there is no earlier deployed head to roll back to")]
    NothingEarlier,
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}
