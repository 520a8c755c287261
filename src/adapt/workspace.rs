//! One model's adaptation state: its samples, its heads, and the operations that tie them
//! together (add a labeled sample, train and deploy by policy, classify with the current head).
//!
//! The CLI and the daemon both go through this type, so "train" means exactly the same thing
//! whether a person types it or an MQTT command asks for it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use super::head::{Head, Prediction};
use super::registry::{DeployDecision, HeadMeta, Registry, RegistryError};
use super::trainer::{self, Dataset, StopReason, TrainConfig, TrainError, TrainReport};
use crate::model::ResolvedModel;
use crate::store::{
    AddOutcome, BackboneId, NewSample, SampleSource, SampleStore, Split, StoreError, StoreOptions,
};

/// Errors of adaptation operations.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("{path}: could not create the state directory: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "model '{model}' has no [embedding] in its manifest, so it cannot carry a trainable head; \
         use a classification backbone such as mobilenetv2"
    )]
    NoEmbedding { model: String },
    #[error(
        "no head has been trained for model '{model}' yet; add samples and run `adaptd train`"
    )]
    NoHead { model: String },
    #[error("training thread: {0}")]
    Thread(String),
    /// Cancelled (the daemon is stopping): a head stopped at an arbitrary epoch is no
    /// candidate, so nothing is judged, saved or deployed.
    #[error("training was cancelled before it finished; nothing was saved")]
    Cancelled,
    #[error(
        "{stale} stored sample(s) were embedded by another backbone and are ignored; \
         they need re-embedding from their thumbnails"
    )]
    Stale { stale: usize },
}

/// What a training run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    pub version: u32,
    pub report: TrainReport,
    /// The current head's macro-F1 on the same holdout, when there was a current head.
    pub current_macro_f1: Option<f64>,
    pub decision: DeployDecision,
    /// Samples of other backbones that were left out.
    pub stale_samples: usize,
}

/// A copy of the samples one training run learns from ([`Workspace::snapshot`]).
pub struct TrainingSnapshot {
    pub train: Dataset,
    pub holdout: Dataset,
    /// Samples of other backbones that were left out.
    pub stale_samples: usize,
}

/// A head trained on a snapshot, not yet judged or saved ([`Workspace::conclude`]).
pub struct FittedHead {
    head: Head,
    report: TrainReport,
    holdout: Dataset,
    stale_samples: usize,
}

impl TrainingSnapshot {
    /// Trains a head on the snapshot; no store or registry is touched, so the caller holds no
    /// lock. `cancel` stops it between epochs.
    pub fn fit(
        self,
        config: &TrainConfig,
        cancel: Option<&AtomicBool>,
    ) -> Result<FittedHead, WorkspaceError> {
        let TrainingSnapshot {
            train,
            holdout,
            stale_samples,
        } = self;
        // Training runs on its own named thread so that a caller on an inference or async
        // thread is never the one burning the CPU, and a panic in the numeric code (a bug)
        // is reported as an error instead of taking the caller down.
        let (head, report) = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("adaptd-train".into())
                .spawn_scoped(s, || trainer::train(&train, &holdout, config, cancel))
                .map_err(|e| WorkspaceError::Thread(e.to_string()))?
                .join()
                .map_err(|_| WorkspaceError::Thread("the training thread panicked".into()))?
                .map_err(WorkspaceError::from)
        })?;
        if report.stopped_because == StopReason::Cancelled {
            return Err(WorkspaceError::Cancelled);
        }
        Ok(FittedHead {
            head,
            report,
            holdout,
            stale_samples,
        })
    }
}

/// Samples and heads of one model in one state directory.
pub struct Workspace {
    pub model_key: String,
    pub backbone: BackboneId,
    pub store: SampleStore,
    pub registry: Registry,
}

impl Workspace {
    /// Opens (creating when needed) `<state_dir>/samples.db` and `<state_dir>/heads/<model>/`.
    pub fn open(
        state_dir: &Path,
        model: &ResolvedModel,
        options: StoreOptions,
    ) -> Result<Workspace, WorkspaceError> {
        let m = &model.manifest;
        let Some(embedding) = &m.embedding else {
            return Err(WorkspaceError::NoEmbedding {
                model: m.name.clone(),
            });
        };
        std::fs::create_dir_all(state_dir).map_err(|source| WorkspaceError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let backbone = BackboneId {
            model_sha256: m.sha256.to_ascii_lowercase(),
            embedding_tensor: embedding.tensor.clone(),
        };
        let store = SampleStore::open_with(&state_dir.join("samples.db"), options)?;
        let registry = Registry::open(Registry::model_dir(state_dir, &m.name)?, backbone.clone())?;
        Ok(Workspace {
            model_key: m.name.clone(),
            backbone,
            store,
            registry,
        })
    }

    /// A labeled sample for this backbone, durable when this returns.
    pub fn sample(
        &self,
        label: &str,
        embedding: Vec<f32>,
        thumbnail: Option<Vec<u8>>,
        source: SampleSource,
    ) -> NewSample {
        NewSample {
            label: label.to_string(),
            embedding,
            backbone: self.backbone.clone(),
            source,
            created_unix_ms: now_ms(),
            thumbnail_jpeg: thumbnail,
        }
    }

    /// Adds one sample (committed with a full fsync before returning).
    pub fn add(&mut self, sample: NewSample) -> Result<AddOutcome, WorkspaceError> {
        Ok(self.store.add(sample)?)
    }

    /// Train and holdout datasets of this backbone's samples, with shared class indices.
    pub fn datasets(&self) -> Result<(Dataset, Dataset, usize), WorkspaceError> {
        let set = self.store.embeddings(&self.backbone, None)?;
        let stale = self.store.count_other_backbones(&self.backbone)?.samples;
        let mut train = Dataset::empty(set.dim, set.labels.clone());
        let mut holdout = Dataset::empty(set.dim, set.labels.clone());
        for row in set.samples {
            let d = match row.split {
                Split::Train => &mut train,
                Split::Holdout => &mut holdout,
            };
            d.x.extend_from_slice(&row.embedding);
            d.y.push(row.label_index);
        }
        Ok((train, holdout, stale))
    }

    /// Trains a new head, evaluates it and the current one on the same holdout, saves it and
    /// deploys it only if it is not worse (or `force`). Holds `self` for the whole run: the
    /// CLI's way. The daemon uses [`Workspace::snapshot`], [`TrainingSnapshot::fit`] and
    /// [`Workspace::conclude`] instead, so that samples keep arriving while a head trains.
    pub fn train(
        &mut self,
        config: &TrainConfig,
        force: bool,
        cancel: Option<&AtomicBool>,
    ) -> Result<TrainOutcome, WorkspaceError> {
        let snapshot = self.snapshot()?;
        let fitted = snapshot.fit(config, cancel)?;
        self.conclude(fitted, force)
    }

    /// The samples a training run learns from, copied out of the store: the run needs no
    /// access to the store until [`Workspace::conclude`].
    pub fn snapshot(&self) -> Result<TrainingSnapshot, WorkspaceError> {
        let (train, holdout, stale_samples) = self.datasets()?;
        Ok(TrainingSnapshot {
            train,
            holdout,
            stale_samples,
        })
    }

    /// Judges a fitted head against the one in service on the same holdout, saves it and
    /// deploys it by policy.
    pub fn conclude(
        &mut self,
        fitted: FittedHead,
        force: bool,
    ) -> Result<TrainOutcome, WorkspaceError> {
        let FittedHead {
            head,
            report,
            holdout,
            stale_samples,
        } = fitted;
        // The current head is judged on exactly the data the new one was judged on: the
        // stored holdout, or the new head's own carve-out when there is no stored holdout.
        let current_macro_f1 = match self.registry.current() {
            Ok(Some((_, current, _))) if !holdout.is_empty() => {
                trainer::evaluate(&current, &holdout)
                    .ok()
                    .map(|m| m.macro_f1)
            }
            Ok(Some(_)) => Some(report.metrics.macro_f1),
            _ => None,
        };
        let version = self.registry.save(&head, &report)?;
        let decision =
            self.registry
                .deploy(version, report.metrics.macro_f1, current_macro_f1, force)?;
        Ok(TrainOutcome {
            version,
            report,
            current_macro_f1,
            decision,
            stale_samples,
        })
    }

    /// The head in service.
    pub fn current_head(&self) -> Result<(u32, Head, HeadMeta), WorkspaceError> {
        self.registry
            .current()?
            .ok_or_else(|| WorkspaceError::NoHead {
                model: self.model_key.clone(),
            })
    }
}

/// Predicts with `head`, reporting a dimension mismatch as an error.
pub fn predict(head: &Head, embedding: &[f32]) -> Result<Prediction, WorkspaceError> {
    head.predict(embedding)
        .map_err(|e| WorkspaceError::Train(TrainError::from(e)))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
