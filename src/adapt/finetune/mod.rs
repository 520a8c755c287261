//! Fine-tuning beyond the head: the backbone's last block trained with the head.
//!
//! Feature extraction (a frozen backbone, a new head) is half of transfer learning; the other
//! half unfreezes the top of the pretrained network and trains it with a smaller learning
//! rate. The whole backbone is far too large to train on a Raspberry Pi; its last block is
//! not, and it is where a scene unlike ImageNet (a grey corridor, infrared at night) gains
//! most. How it is done here, and why:
//!
//! - **The trunk runs once.** The activations at the manifest's cut (`[finetune].cut`,
//!   MobileNetV2's 320x7x7 before its last 1x1 convolution) are the training input, so an
//!   epoch costs the tail alone ([`crate::model::tail`] reads the tail out of the ONNX file).
//! - **Linear probe, then fine-tune (LP-FT, Kumar et al., ICLR 2022).** The head trained
//!   head-only is the starting point; training the tail under a freshly initialised head
//!   would push random gradients into good pretrained features.
//! - **A smaller learning rate for the tail** (`lr_ratio` times the head's, default 0.1) and
//!   **L2-SP** (Li et al., ICML 2018): weight decay towards the pretrained weights, not
//!   towards zero, so the tail cannot forget what it knew with 20 samples per class.
//! - **Biases only** (TinyTL, NeurIPS 2020) is the cheap option: no weight gradient (the
//!   larger GEMM of the backward pass) and a fraction of the optimizer state.
//! - **Random crops of the cut's feature map** as augmentation: with 20 samples per class
//!   the head alone fits the training set exactly within an epoch, leaving no gradient for
//!   the tail; a random 5x5 to 7x7 window of MobileNetV2's 7x7 map (a crop of the input image,
//!   seen at the cut) keeps the training loss honest at no extra trunk run.
//! - **Early stopping** on the held-out split's loss, keeping the best epoch's weights.
//!
//! Whether a fine-tuned tail is used at all is not decided here: the caller compares its
//! held-out macro-F1 against head-only and the model in service (negative transfer is real).
//!
//! # Layout
//! - [`ops`]: forward and backward of the tail's ops, gradient-checked.
//! - `net`: the tail as a network of shaped layers (forward, backward, embeddings).
//! - `train`: the joint Adam loop of tail and head.

pub mod ops;

mod net;
mod train;

use std::time::Duration;

use crate::adapt::head::{Head, HeadError};
use crate::adapt::TrainError;
use crate::model::tail::Tail;

pub use train::finetune;

/// Which of the tail's parameters train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TailParams {
    /// Weights and biases of every pointwise convolution.
    All,
    /// Biases only (TinyTL): far less memory and time.
    Biases,
}

/// How a tail is fine-tuned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinetuneConfig {
    pub epochs_max: usize,
    pub batch_size: usize,
    /// The head's learning rate (Adam).
    pub learning_rate: f32,
    /// The tail's learning rate as a share of the head's; 0 leaves the tail as it was.
    pub lr_ratio: f32,
    /// L2 on the head's weights (towards zero), as the head trainer has it.
    pub weight_decay: f32,
    /// L2-SP strength: `alpha / 2 * |w - w_pretrained|^2` on the tail's parameters.
    pub l2sp: f32,
    pub params: TailParams,
    /// Epochs without a better held-out loss before stopping.
    pub patience: usize,
    /// Keep the epoch with the best held-out loss (else the last one).
    pub early_stopping: bool,
    /// Train on random crops of the cut's (square) feature map, as image training uses
    /// random crops: a few samples per class are otherwise fitted exactly in one epoch and
    /// leave the tail no signal. Costs nothing: a crop of the map is a gather.
    pub crop_augment: bool,
    pub seed: u64,
    /// Class-balanced cross-entropy (as the head trainer).
    pub class_balanced: bool,
    /// Refuse to start when the estimate of [`memory_estimate`] is above this.
    pub max_memory_bytes: u64,
    pub time_budget: Duration,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            epochs_max: 20,
            batch_size: 16,
            learning_rate: 1e-3,
            lr_ratio: 0.1,
            weight_decay: 1e-4,
            l2sp: 1e-2,
            params: TailParams::All,
            patience: 5,
            early_stopping: true,
            crop_augment: true,
            seed: 0,
            class_balanced: true,
            max_memory_bytes: 150 << 20,
            time_budget: Duration::from_secs(600),
        }
    }
}

impl FinetuneConfig {
    /// Every out-of-range value, named.
    pub fn validate(&self) -> Result<(), FinetuneError> {
        let mut p = Vec::new();
        if !(1..=10_000).contains(&self.epochs_max) {
            p.push(format!("epochs_max = {} (1 to 10000)", self.epochs_max));
        }
        if !(1..=4096).contains(&self.batch_size) {
            p.push(format!("batch_size = {} (1 to 4096)", self.batch_size));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            p.push(format!(
                "learning_rate = {} (above 0, up to 1)",
                self.learning_rate
            ));
        }
        if !(0.0..=1.0).contains(&self.lr_ratio) {
            p.push(format!("lr_ratio = {} (0 to 1)", self.lr_ratio));
        }
        for (k, v) in [("weight_decay", self.weight_decay), ("l2sp", self.l2sp)] {
            if !(v.is_finite() && v >= 0.0) {
                p.push(format!("{k} = {v} (0 or more)"));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(FinetuneError::Config(p.join("; ")))
        }
    }
}

/// Cut activations of labeled samples: `n` rows of `channels * positions` values.
#[derive(Debug, Clone)]
pub struct CutSet {
    pub channels: usize,
    pub positions: usize,
    pub x: Vec<f32>,
    pub y: Vec<usize>,
    pub classes: Vec<String>,
}

impl CutSet {
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    fn check(&self, split: &str) -> Result<(), FinetuneError> {
        let row = self.channels * self.positions;
        if row == 0 || self.x.len() != row * self.y.len() {
            return Err(FinetuneError::Shape(format!(
                "{split}: {} values for {} samples of {} x {}",
                self.x.len(),
                self.y.len(),
                self.channels,
                self.positions
            )));
        }
        if let Some(&y) = self.y.iter().find(|&&y| y >= self.classes.len()) {
            return Err(FinetuneError::Shape(format!(
                "{split}: class index {y} of {} classes",
                self.classes.len()
            )));
        }
        if self.x.iter().any(|v| !v.is_finite()) {
            return Err(FinetuneError::Shape(format!(
                "{split}: a cut activation is not finite"
            )));
        }
        Ok(())
    }
}

/// What a fine-tuning run did.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneReport {
    pub epochs: usize,
    pub best_epoch: usize,
    /// Held-out cross-entropy before (the head-only start) and at the best epoch.
    pub start_loss: f32,
    pub best_loss: f32,
    /// Held-out and training cross-entropy after each epoch.
    pub holdout_losses: Vec<f32>,
    pub train_losses: Vec<f32>,
    pub train_time: Duration,
    /// The estimate checked against `max_memory_bytes`.
    pub memory_bytes: u64,
    /// Trainable values (tail, head).
    pub trained_values: (usize, usize),
    pub cancelled: bool,
}

/// Why fine-tuning did not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    #[error("fine-tuning configuration: {0}")]
    Config(String),
    #[error("the tail does not fit the data: {0}")]
    Shape(String),
    #[error(
        "fine-tuning needs about {needed_mb} MB (cached activations, activations of a batch, \
         gradients and optimizer state), over train.max_memory_mb = {limit_mb}; use \
         train.finetune_params = \"biases\", fewer samples, or raise the limit"
    )]
    Memory { needed_mb: u64, limit_mb: u64 },
    #[error("fine-tuning starts from a softmax head; this head is {0}")]
    HeadKind(&'static str),
    #[error("the held-out split is empty: fine-tuning needs it to stop early and to be judged")]
    NoHoldout,
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// Bytes a run needs beyond the model: the cached activations of both splits, one batch of
/// activations, the tail's gradients, Adam's two moments and the pretrained copy (L2-SP).
pub fn memory_estimate(
    tail: &Tail,
    cut: (usize, usize),
    dim: usize,
    samples: usize,
    cfg: &FinetuneConfig,
) -> Result<u64, FinetuneError> {
    Ok(estimate(&net::Net::new(tail, cut, dim)?, samples, cfg))
}

/// [`memory_estimate`] of a checked tail.
fn estimate(net: &net::Net, samples: usize, cfg: &FinetuneConfig) -> u64 {
    let acts: usize = net.layers.iter().map(net::Layer::out_len).sum();
    let (nw, nb) = net.param_count();
    let trained = match cfg.params {
        TailParams::All => nw + nb,
        TailParams::Biases => nb,
    };
    let floats = samples * net.in_len() + cfg.batch_size * acts + 4 * trained + nw + nb;
    floats as u64 * 4
}

/// The embeddings of `n` cut activations through `tail` (for evaluation and for training
/// the next head on a fine-tuned tail).
pub fn embed(
    tail: &Tail,
    cut: (usize, usize),
    dim: usize,
    x: &[f32],
) -> Result<Vec<f32>, FinetuneError> {
    let net = net::Net::new(tail, cut, dim)?;
    let row = net.in_len().max(1);
    if !x.len().is_multiple_of(row) {
        return Err(FinetuneError::Shape(format!(
            "{} activation values are not a whole number of {row}-value samples",
            x.len()
        )));
    }
    Ok(net.embed(x, x.len() / row))
}

/// Which model the negative-transfer guard keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    FineTuned,
    HeadOnly,
}

/// The negative-transfer guard: a fine-tuned tail is served only when its held-out macro-F1
/// beats both the head-only model trained on the same split and the model in service (when
/// there is one). A tie keeps head-only: a changed backbone is the larger change (every
/// stored embedding must be recomputed through it) and needs a reason. Returns the choice
/// and a sentence for the training report.
pub fn guard(finetuned: f64, head_only: f64, in_service: Option<f64>) -> (Choice, String) {
    if finetuned <= head_only {
        return (
            Choice::HeadOnly,
            format!(
                "kept head-only: the fine-tuned tail's held-out macro-F1 {finetuned:.3} does not \
                 beat head-only's {head_only:.3} (negative transfer guard)"
            ),
        );
    }
    if let Some(s) = in_service.filter(|s| finetuned <= *s) {
        return (
            Choice::HeadOnly,
            format!(
                "kept head-only: the fine-tuned tail's held-out macro-F1 {finetuned:.3} does not \
                 beat the model in service ({s:.3})"
            ),
        );
    }
    (
        Choice::FineTuned,
        format!(
            "fine-tuned tail: held-out macro-F1 {finetuned:.3} against head-only {head_only:.3}{}",
            in_service.map_or(String::new(), |s| format!(" and {s:.3} in service"))
        ),
    )
}

/// Fine-tuning starts from a head of this kind only.
fn softmax_head(head: &Head) -> Result<(), FinetuneError> {
    match head.kind() {
        crate::adapt::HeadKind::Softmax => Ok(()),
        other => Err(FinetuneError::HeadKind(other.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_serves_a_fine_tuned_tail_only_when_it_beats_both() {
        assert_eq!(guard(0.9, 0.8, None).0, Choice::FineTuned);
        assert_eq!(guard(0.9, 0.8, Some(0.85)).0, Choice::FineTuned);
        let (c, why) = guard(0.8, 0.8, None);
        assert_eq!(c, Choice::HeadOnly, "a tie keeps head-only");
        assert!(why.contains("negative transfer"), "{why}");
        let (c, why) = guard(0.9, 0.8, Some(0.95));
        assert_eq!(c, Choice::HeadOnly);
        assert!(why.contains("in service (0.950)"), "{why}");
    }

    #[test]
    fn embedding_a_partial_sample_is_an_error() {
        use crate::model::tail::{Tail, TailOp};
        let tail = Tail {
            cut: "c".into(),
            embedding: "e".into(),
            ops: vec![TailOp::GlobalAveragePool, TailOp::Flatten],
        };
        let e = embed(&tail, (2, 3), 2, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).expect("one sample");
        assert_eq!(e, [2.0, 5.0]);
        assert!(embed(&tail, (2, 3), 2, &[1.0; 7]).is_err());
    }

    #[test]
    fn config_ranges_are_checked() {
        assert!(FinetuneConfig::default().validate().is_ok());
        let bad = FinetuneConfig {
            lr_ratio: 2.0,
            epochs_max: 0,
            l2sp: f32::NAN,
            ..FinetuneConfig::default()
        };
        let e = bad.validate().expect_err("bad").to_string();
        assert!(
            e.contains("lr_ratio") && e.contains("epochs_max") && e.contains("l2sp"),
            "{e}"
        );
    }
}
