//! What a training run takes and gives: the dataset, the configuration, the report and the
//! errors, shared by every way of fitting a head.
//!
//! Its own module so that the two fitters, the Adam loop in [`crate::adapt::trainer`] and the
//! nearest-centroid head in [`crate::adapt::centroid`], both depend on these types and neither
//! on the other's internals (they used to import each other).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::adapt::head::{self, HeadError, HeadKind};
use crate::adapt::metrics::{Metrics, MetricsError};

/// Head architecture to train. The same type as [`HeadKind`]: the `dropout`
/// of an MLP is a training setting that the trained head keeps as a record.
pub type HeadKindConfig = HeadKind;

/// Fraction of each class's training samples carved out for validation
/// when the caller's holdout is empty.
pub const CARVE_FRACTION: f64 = 0.2;

/// Percentile of the top probability of correctly classified validation
/// samples that becomes the open-set threshold (see
/// [`crate::adapt::trainer::calibrate_threshold`]).
pub const THRESHOLD_PERCENTILE: f64 = 0.05;

/// Below this many correctly classified validation samples the percentile
/// is too noisy and the fallback threshold is used.
pub const THRESHOLD_MIN_SAMPLES: usize = 20;

/// Upper clamp of the calibrated threshold: a very confident model must
/// still accept slightly unusual but correct inputs.
pub const THRESHOLD_MAX: f32 = 0.9;

/// Hyper-parameters of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Architecture: softmax (default) or a one-hidden-layer MLP.
    pub head: HeadKindConfig,
    /// Upper bound on passes over the training data.
    pub epochs_max: usize,
    /// Samples per Adam step.
    pub batch_size: usize,
    /// Adam step size.
    pub learning_rate: f32,
    /// L2 coefficient on the weights (not biases), added to the gradient.
    pub weight_decay: f32,
    /// Epochs without validation-loss improvement before stopping.
    pub patience: usize,
    /// Seed of every random choice; same seed, same head.
    pub seed: u64,
    /// Wall-clock budget; training stops (keeping the best weights so far)
    /// when it is used up, so a retrain can never stall the device.
    pub time_budget: Duration,
    /// Weight the loss by `n / (k * n_c)` so rare classes count as much as
    /// common ones.
    pub class_balanced: bool,
    /// Inverse L2 strength in scikit-learn's convention: when set, the weight decay is
    /// `1 / (c * n)` for `n` fitted samples (on top of `weight_decay`), the objective
    /// `LogisticRegression(C=c)` minimises, so the penalty shrinks as evidence grows.
    pub c: Option<f32>,
    /// Stop when the holdout loss stops improving. A regularised softmax head is convex
    /// with a unique optimum: stopping early there only leaves it under-fitted, so by
    /// default it trains to convergence; the MLP (non-convex, can overfit) stops early.
    pub early_stopping: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            head: HeadKind::Softmax,
            epochs_max: 200,
            batch_size: 32,
            learning_rate: 3e-3,
            weight_decay: 1e-4,
            patience: 10,
            seed: 0x5eed_ada9,
            time_budget: Duration::from_secs(30),
            class_balanced: true,
            // scikit-learn's default strength, and training to the optimum: measured on
            // Fashion-MNIST embeddings this matches LogisticRegression on the same training
            // split to within half a point, where early stopping at this learning rate
            // stopped 1.5 to 3 points short (docs/PERFORMANCE.md).
            c: Some(1.0),
            early_stopping: false,
        }
    }
}

impl TrainConfig {
    /// A default MLP configuration: 128 hidden units, dropout 0.2.
    pub fn mlp() -> Self {
        TrainConfig {
            head: HeadKind::Mlp {
                hidden: 128,
                dropout: 0.2,
            },
            // Non-convex and able to overfit: regularised by early stopping on the holdout.
            c: None,
            early_stopping: true,
            ..TrainConfig::default()
        }
    }

    /// Rejects settings that cannot train (zero batch, non-positive
    /// learning rate, ...), with the field named in the error.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |msg: String| Err(TrainError::InvalidConfig(msg));
        if self.epochs_max == 0 {
            return bad("epochs_max must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning_rate must be a positive number, got {}",
                self.learning_rate
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be zero or positive, got {}",
                self.weight_decay
            ));
        }
        if let Some(c) = self.c {
            if !(c.is_finite() && c > 0.0) {
                return bad(format!("c must be a positive number, got {c}"));
            }
        }
        if self.patience == 0 {
            return bad("patience must be at least 1 epoch".into());
        }
        if let HeadKind::Mlp { hidden, dropout } = self.head {
            if hidden == 0 {
                return bad("mlp hidden must be at least 1".into());
            }
            if !(0.0..1.0).contains(&dropout) {
                return bad(format!("mlp dropout must be in [0, 1), got {dropout}"));
            }
        }
        Ok(())
    }
}

/// Labelled embeddings: `x` holds `y.len()` rows of `dim` values,
/// row-major; `y[i]` indexes `classes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Embedding dimension.
    pub dim: usize,
    /// `n * dim` values, row-major.
    pub x: Vec<f32>,
    /// Class index per row.
    pub y: Vec<usize>,
    /// Class names; index = label.
    pub classes: Vec<String>,
}

impl Dataset {
    /// Builds a dataset, validating it (see [`Dataset::validate`]).
    pub fn new(
        dim: usize,
        x: Vec<f32>,
        y: Vec<usize>,
        classes: Vec<String>,
    ) -> Result<Dataset, TrainError> {
        let ds = Dataset { dim, x, y, classes };
        ds.validate("dataset")?;
        Ok(ds)
    }

    /// An empty dataset with the given shape, e.g. "no holdout".
    pub fn empty(dim: usize, classes: Vec<String>) -> Dataset {
        Dataset {
            dim,
            x: Vec::new(),
            y: Vec::new(),
            classes,
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Samples per class (labels out of range are not counted).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &c in &self.y {
            if let Some(n) = counts.get_mut(c) {
                *n += 1;
            }
        }
        counts
    }

    /// Row `i` (empty if out of range).
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        self.x
            .get(i * self.dim..(i + 1) * self.dim)
            .unwrap_or_default()
    }

    /// Checks shapes, labels, class names and that every value is finite.
    /// `split` names the dataset in errors ("train", "holdout").
    pub fn validate(&self, split: &str) -> Result<(), TrainError> {
        head::validate_class_names(&self.classes).map_err(|reason| TrainError::InvalidClasses {
            split: split.to_string(),
            reason,
        })?;
        if self.dim == 0 {
            return Err(TrainError::Shape {
                split: split.to_string(),
                detail: "the embedding dimension is 0".into(),
            });
        }
        if self.y.len().checked_mul(self.dim) != Some(self.x.len()) {
            return Err(TrainError::Shape {
                split: split.to_string(),
                detail: format!(
                    "{} labels of dimension {} need {} values but x holds {}",
                    self.y.len(),
                    self.dim,
                    self.y.len().saturating_mul(self.dim),
                    self.x.len()
                ),
            });
        }
        if let Some((sample, &label)) = self
            .y
            .iter()
            .enumerate()
            .find(|(_, &c)| c >= self.classes.len())
        {
            return Err(TrainError::LabelOutOfRange {
                split: split.to_string(),
                sample,
                label,
                n_classes: self.classes.len(),
            });
        }
        if let Some(pos) = self.x.iter().position(|v| !v.is_finite()) {
            return Err(TrainError::NonFinite {
                split: split.to_string(),
                sample: pos / self.dim,
                dim: pos % self.dim,
            });
        }
        Ok(())
    }
}

/// Why training stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The training loss stopped changing.
    Converged,
    /// The validation loss did not improve for `patience` epochs.
    EarlyStop,
    /// The time budget ran out.
    TimeBudget,
    /// The caller's cancel flag was set. The head is still returned (best
    /// weights so far) but is usually under-trained.
    Cancelled,
    /// `epochs_max` epochs ran.
    MaxEpochs,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Converged => "converged",
            StopReason::EarlyStop => "early-stop",
            StopReason::TimeBudget => "time-budget",
            StopReason::Cancelled => "cancelled",
            StopReason::MaxEpochs => "max-epochs",
        })
    }
}

/// Where the validation samples (early stopping, threshold, metrics) came
/// from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValidationSource {
    /// The caller's holdout split.
    Holdout,
    /// Carved out of the training split because the holdout was empty.
    CarvedFromTrain,
    /// Too few samples to validate: fixed epochs, fallback threshold,
    /// empty metrics.
    None,
    /// Centroid head without a holdout: each training sample is scored
    /// against its class centroid computed without it (classes with at
    /// least two samples).
    LeaveOneOut,
}

/// What a training run did and how good the result is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Architecture trained.
    pub head_kind: HeadKind,
    /// Class names in output order.
    pub classes: Vec<String>,
    /// Embedding dimension.
    pub dim: usize,
    /// Samples per class the weights were fitted on (after any carve-out).
    pub samples_per_class_train: Vec<usize>,
    /// Samples per class of the validation split.
    pub samples_per_class_holdout: Vec<usize>,
    /// Origin of the validation split.
    pub validation: ValidationSource,
    /// Completed epochs.
    pub epochs_run: usize,
    /// Epoch (1-based) whose weights were kept, when validated.
    pub best_epoch: Option<usize>,
    /// Why training stopped.
    pub stopped_because: StopReason,
    /// Per completed epoch: (mean training loss over the epoch's batches,
    /// validation loss after the epoch, if validated). Both are
    /// class-weighted cross-entropy without the L2 term.
    pub loss_curve: Vec<(f32, Option<f32>)>,
    /// Wall-clock duration of `train`.
    pub train_time_ms: u64,
    /// Closed-set (argmax) metrics on the validation split.
    pub metrics: Metrics,
    /// Calibrated open-set threshold stored in the head.
    pub threshold: f32,
    /// How the threshold was obtained, for operators.
    pub threshold_rule: String,
    /// Fraction of validation samples whose top probability is below the
    /// threshold (how often the head would answer `unknown` on known data).
    pub holdout_below_threshold: f64,
    /// The configuration used.
    pub config: TrainConfig,
}

/// Why training could not run.
#[derive(Debug, Error)]
pub enum TrainError {
    /// Nothing to learn from.
    #[error("the training split has no samples: label some embeddings before training")]
    EmptyTrain,
    /// Fewer than two classes have training samples.
    #[error(
        "need at least two labels with samples to train a classifier, found {}: label samples of another class (for example the background class \"none\")",
        if .with_samples.is_empty() { "none".to_string() } else { .with_samples.join(", ") }
    )]
    TooFewClasses {
        /// Classes that do have training samples.
        with_samples: Vec<String>,
    },
    /// A listed class has no training sample, so its output could only be
    /// pushed down.
    #[error(
        "class '{class}' has no training samples: add samples for it or remove it from the class list"
    )]
    ClassWithoutSamples {
        /// The class.
        class: String,
    },
    /// Train and holdout embeddings differ in dimension.
    #[error(
        "{split} embeddings have dimension {found} but the training embeddings have {expected}: all samples must come from the same backbone output; re-extract them"
    )]
    DimensionMismatch {
        /// Which split.
        split: String,
        /// Training dimension.
        expected: usize,
        /// This split's dimension.
        found: usize,
    },
    /// `x` and `y` do not fit together.
    #[error("{split} split is malformed: {detail}")]
    Shape {
        /// Which split.
        split: String,
        /// What does not fit.
        detail: String,
    },
    /// A label does not index the class list.
    #[error(
        "{split} sample {sample} has label {label} but there are only {n_classes} classes: labels must index the class list"
    )]
    LabelOutOfRange {
        /// Which split.
        split: String,
        /// Sample index.
        sample: usize,
        /// Offending label.
        label: usize,
        /// Number of classes.
        n_classes: usize,
    },
    /// NaN or infinity in an embedding.
    #[error(
        "{split} sample {sample} has a NaN or infinite value at dimension {dim}: the stored embedding is corrupt; delete and re-capture that sample"
    )]
    NonFinite {
        /// Which split.
        split: String,
        /// Sample index.
        sample: usize,
        /// Dimension index.
        dim: usize,
    },
    /// Class names unusable.
    #[error("{split} classes are invalid: {reason}")]
    InvalidClasses {
        /// Which split.
        split: String,
        /// Why.
        reason: head::ClassNamesError,
    },
    /// Train and holdout use different class lists.
    #[error(
        "the holdout's classes {holdout:?} differ from the training classes {train:?}: build both splits from the same class list"
    )]
    ClassesDiffer {
        /// Training classes.
        train: Vec<String>,
        /// Holdout classes.
        holdout: Vec<String>,
    },
    /// A configuration value is unusable.
    #[error("invalid training configuration: {0}")]
    InvalidConfig(String),
    /// Every embedding of a class is all zeros, so it has no direction to
    /// compare by cosine.
    #[error(
        "every sample of class '{class}' has an all-zero embedding, which a centroid (cosine) head cannot use: re-capture its samples, or train a softmax head"
    )]
    ZeroCentroid {
        /// The class.
        class: String,
    },
    /// The loss became NaN or infinite.
    #[error(
        "training diverged at epoch {epoch} (loss is not finite): lower learning_rate (currently {learning_rate})"
    )]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// Learning rate used.
        learning_rate: f32,
    },
    /// Building the head failed.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// Computing metrics failed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}
