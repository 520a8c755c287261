//! Training a classifier head on stored embeddings.
//!
//! Design choices, and why:
//!
//! - **Standardisation** (per-dimension mean/std of the training split) is
//!   learned here and stored in the head: backbone embeddings have wildly
//!   different scales per dimension, and a single learning rate only works
//!   on standardised inputs.
//! - **Mini-batch Adam** with bias correction: robust to the learning rate,
//!   converges in a few dozen epochs on standardised embeddings.
//! - **L2 weight decay added to the gradient** (coupled, not AdamW's
//!   decoupled decay), on weights but not biases: the optimum is then
//!   exactly that of L2-regularised logistic regression, the objective
//!   scikit-learn's `LogisticRegression` minimises (its `C` corresponds to
//!   `1 / (weight_decay * n_samples)`), which makes results comparable.
//! - **Class-balanced cross-entropy** (weight `n / (k * n_c)` for class `c`,
//!   scikit-learn's `class_weight="balanced"`): data collected on a device
//!   is usually dominated by one or two classes.
//! - **Reproducibility**: all randomness (initialisation, shuffling,
//!   dropout, validation carve-out) comes from SplitMix64 streams derived
//!   from `TrainConfig::seed`; the same data and config give a bit-identical
//!   head on the same machine.
//! - **Early stopping** on the validation loss, keeping the best weights.
//!   When the caller's holdout is empty, 20% of each class's training
//!   samples (rounded, at least one sample left for training) are carved
//!   out as validation; when even that yields nothing (a handful of
//!   samples), training runs for `epochs_max` epochs (or until the training
//!   loss stops changing), the threshold falls back to its default and the
//!   report's metrics are empty (n = 0).
//! - **Cost**: forward and backward passes run on contiguous batch buffers
//!   through the register-blocked kernels in [`crate::adapt::head`]; nothing
//!   is allocated per sample or per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::adapt::adam::Moments;
use crate::adapt::head::{
    argmax, linear_backward, linear_forward, linear_input_grad, softmax_in_place, standardize_row,
    Head, HeadKind, HeadParams, STD_FLOOR_ABSOLUTE, STD_FLOOR_RELATIVE,
};
use crate::adapt::metrics::Metrics;
use crate::rng::SplitMix64;

pub use crate::adapt::dataset::{
    Dataset, HeadKindConfig, StopReason, TrainConfig, TrainError, TrainReport, ValidationSource,
    CARVE_FRACTION, THRESHOLD_MAX, THRESHOLD_MIN_SAMPLES, THRESHOLD_PERCENTILE,
};

/// Relative improvement of the validation loss needed to count as better.
const MIN_REL_IMPROVEMENT: f32 = 1e-4;

/// Training has converged when the epoch's training loss changes by less
/// than this (relative to `max(1, loss)`).
const CONVERGED_TOL: f32 = 1e-5;

/// Rows evaluated together on the validation split.
const EVAL_BLOCK: usize = 64;

/// Evaluates `head` on `data` with closed-set (argmax) predictions.
///
/// Classes are matched by name, so a head with a different class list (the
/// currently deployed one, before a class was added) can be scored on the
/// same holdout as a new head: holdout samples of a class the head does not
/// know count as errors, and macro-F1 follows [`Metrics::compute`]'s
/// convention over the union of class names. This is the number the deploy
/// policy compares.
pub fn evaluate(head: &Head, data: &Dataset) -> Result<Metrics, TrainError> {
    data.validate("evaluation")?;
    if data.dim != head.dim() {
        return Err(TrainError::DimensionMismatch {
            split: "evaluation".into(),
            expected: head.dim(),
            found: data.dim,
        });
    }
    let mut classes: Vec<String> = head.classes().to_vec();
    let mut y_true = Vec::with_capacity(data.len());
    let mut map = Vec::with_capacity(data.classes.len());
    for c in &data.classes {
        let idx = match classes.iter().position(|h| h == c) {
            Some(i) => i,
            None => {
                classes.push(c.clone());
                classes.len() - 1
            }
        };
        map.push(idx);
    }
    for &y in &data.y {
        y_true.push(map.get(y).copied().unwrap_or(0));
    }
    let probs = head.probabilities_batch(&data.x, data.len())?;
    let k = head.classes().len();
    let y_pred: Vec<usize> = probs.chunks_exact(k).map(|p| argmax(p).0).collect();
    Ok(Metrics::compute(&y_true, &y_pred, &classes)?)
}

/// The open-set threshold rule.
///
/// Input: the top probability of every correctly classified validation
/// sample. With at least [`THRESHOLD_MIN_SAMPLES`] of them, the threshold
/// is their [`THRESHOLD_PERCENTILE`] percentile (lower nearest rank), i.e.
/// about 95% of correct predictions on known data are accepted; it is then
/// clamped to `[1/k, THRESHOLD_MAX]` (below chance level it could never
/// fire; above the cap even slightly unusual correct inputs would be
/// rejected). With fewer samples the percentile is noise, and the fallback
/// is halfway between chance and certainty, `(1 + 1/k) / 2`.
///
/// Returns the threshold and a one-line description of how it was chosen.
pub fn calibrate_threshold(correct_top_probs: &[f32], n_classes: usize) -> (f32, String) {
    let chance = 1.0 / n_classes.max(1) as f32;
    let mut v: Vec<f32> = correct_top_probs
        .iter()
        .copied()
        .filter(|p| p.is_finite())
        .collect();
    if v.len() < THRESHOLD_MIN_SAMPLES {
        let t = 0.5 * (1.0 + chance);
        return (
            t,
            format!(
                "fallback (1 + 1/k) / 2 = {t:.4}: only {} correctly classified validation samples, {} needed to calibrate",
                v.len(),
                THRESHOLD_MIN_SAMPLES
            ),
        );
    }
    v.sort_by(f32::total_cmp);
    let rank = ((v.len() - 1) as f64 * THRESHOLD_PERCENTILE).floor() as usize;
    let q = v.get(rank).copied().unwrap_or(chance);
    let t = q.clamp(chance, THRESHOLD_MAX);
    (
        t,
        format!(
            "{:.0}th percentile of the top probability of {} correctly classified validation samples = {q:.4}, clamped to [1/k = {chance:.4}, {THRESHOLD_MAX}] -> {t:.4}",
            THRESHOLD_PERCENTILE * 100.0,
            v.len()
        ),
    )
}

/// Trains a head on `train`, validating on `holdout` (see the module docs
/// for what happens when it is empty), within `cfg.time_budget`, stopping
/// early when `cancel` becomes true.
///
/// The returned head has the best validation weights, its standardisation
/// and its calibrated open-set threshold; the report's metrics are those of
/// that head on the validation split.
pub fn train(
    train: &Dataset,
    holdout: &Dataset,
    cfg: &TrainConfig,
    cancel: Option<&AtomicBool>,
) -> Result<(Head, TrainReport), TrainError> {
    let start = Instant::now();
    cfg.validate()?;
    if train.is_empty() {
        return Err(TrainError::EmptyTrain);
    }
    if train.classes.len() < 2 {
        return Err(TrainError::TooFewClasses {
            with_samples: train.classes.clone(),
        });
    }
    train.validate("train")?;
    if holdout.dim != train.dim {
        return Err(TrainError::DimensionMismatch {
            split: "holdout".into(),
            expected: train.dim,
            found: holdout.dim,
        });
    }
    if holdout.classes != train.classes {
        return Err(TrainError::ClassesDiffer {
            train: train.classes.clone(),
            holdout: holdout.classes.clone(),
        });
    }
    holdout.validate("holdout")?;
    let counts = train.class_counts();
    let with_samples: Vec<String> = train
        .classes
        .iter()
        .zip(&counts)
        .filter(|(_, &n)| n > 0)
        .map(|(c, _)| c.clone())
        .collect();
    if with_samples.len() < 2 {
        return Err(TrainError::TooFewClasses { with_samples });
    }
    if let Some(i) = counts.iter().position(|&n| n == 0) {
        return Err(TrainError::ClassWithoutSamples {
            class: train.classes[i].clone(),
        });
    }
    if cfg.head == HeadKind::Centroid {
        return crate::adapt::centroid::fit(train, holdout, cfg, start);
    }

    // Validation split.
    let all: Vec<usize> = (0..train.len()).collect();
    let (fit_idx, val, validation) = if !holdout.is_empty() {
        let idx: Vec<usize> = (0..holdout.len()).collect();
        (all, Some((holdout, idx)), ValidationSource::Holdout)
    } else {
        let (fit, carved) = carve_validation(train, cfg.seed);
        if carved.is_empty() {
            (fit, None, ValidationSource::None)
        } else {
            (
                fit,
                Some((train, carved)),
                ValidationSource::CarvedFromTrain,
            )
        }
    };

    let k = train.classes.len();
    let dim = train.dim;
    let mut fit_counts = vec![0usize; k];
    for &i in &fit_idx {
        fit_counts[train.y[i]] += 1;
    }
    let val_counts = match &val {
        Some((ds, idx)) => {
            let mut c = vec![0usize; k];
            for &i in idx {
                c[ds.y[i]] += 1;
            }
            c
        }
        None => vec![0; k],
    };
    let class_weight: Vec<f32> = if cfg.class_balanced {
        let n = fit_idx.len() as f64;
        fit_counts
            .iter()
            .map(|&c| (n / (k as f64 * c.max(1) as f64)) as f32)
            .collect()
    } else {
        vec![1.0; k]
    };

    let (mean, std) = standardization(train, &fit_idx);
    let inv_std: Vec<f32> = std.iter().map(|s| 1.0 / s).collect();
    let norm = Norm {
        mean: &mean,
        inv_std: &inv_std,
    };

    let mut model = Model::init(cfg.head, dim, k, cfg.seed);
    let mut grads = model.p.zeros_like();
    let auto_decay = cfg
        .c
        .map_or(0.0, |c| 1.0 / (c * fit_idx.len().max(1) as f32));
    let mut adam = Adam::new(&model.p, cfg.learning_rate, cfg.weight_decay + auto_decay);
    let batch = cfg.batch_size.min(fit_idx.len()).max(1);
    let mut work = Work::new(batch.max(EVAL_BLOCK), dim, model.out1, k);
    let mut shuffle_rng = SplitMix64::new(cfg.seed ^ STREAM_SHUFFLE);
    let mut dropout_rng = SplitMix64::new(cfg.seed ^ STREAM_DROPOUT);
    let dropout = match cfg.head {
        HeadKind::Mlp { dropout, .. } => dropout,
        HeadKind::Softmax | HeadKind::Centroid => 0.0,
    };

    let mut order = fit_idx.clone();
    let mut loss_curve = Vec::new();
    let mut best: Option<(f32, Params, usize)> = None;
    let mut since_best = 0usize;
    let mut prev_train_loss: Option<f32> = None;
    let mut stop = StopReason::MaxEpochs;
    let mut epochs_run = 0usize;

    'epochs: for epoch in 1..=cfg.epochs_max {
        shuffle_rng.shuffle(&mut order);
        let mut loss_sum = 0.0f64;
        let mut weight_sum = 0.0f64;
        for chunk in order.chunks(batch) {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                stop = StopReason::Cancelled;
                break 'epochs;
            }
            if start.elapsed() >= cfg.time_budget {
                stop = StopReason::TimeBudget;
                break 'epochs;
            }
            let (l, w) = model.train_step(
                train,
                chunk,
                norm,
                &class_weight,
                &mut work,
                &mut grads,
                (&mut dropout_rng, dropout),
            );
            loss_sum += l;
            weight_sum += w;
            adam.step(&mut model.p, &grads);
        }
        epochs_run = epoch;
        let train_loss = (loss_sum / weight_sum.max(f64::MIN_POSITIVE)) as f32;
        if !train_loss.is_finite() {
            return Err(TrainError::Diverged {
                epoch,
                learning_rate: cfg.learning_rate,
            });
        }
        let val_loss = match &val {
            Some((ds, idx)) => {
                let l = model.loss(ds, idx, norm, &class_weight, &mut work);
                if !l.is_finite() {
                    return Err(TrainError::Diverged {
                        epoch,
                        learning_rate: cfg.learning_rate,
                    });
                }
                Some(l)
            }
            None => None,
        };
        loss_curve.push((train_loss, val_loss));

        if let Some(vl) = val_loss {
            let improved = match &best {
                None => true,
                Some((b, _, _)) => vl < b - MIN_REL_IMPROVEMENT * b.abs(),
            };
            if improved {
                best = Some((vl, model.p.clone(), epoch));
                since_best = 0;
            } else {
                since_best += 1;
                if cfg.early_stopping && since_best >= cfg.patience {
                    stop = StopReason::EarlyStop;
                    break;
                }
            }
        }
        if let Some(prev) = prev_train_loss {
            if (prev - train_loss).abs() <= CONVERGED_TOL * train_loss.max(1.0) {
                stop = StopReason::Converged;
                break;
            }
        }
        prev_train_loss = Some(train_loss);
    }

    let best_epoch = best.as_ref().map(|(_, _, e)| *e);
    let params = match best {
        Some((_, p, _)) if cfg.early_stopping => p,
        _ => model.p,
    };
    let (w1, b1, w2, b2) = (params.w1, params.b1, params.w2, params.b2);
    let mut head = Head::from_params(HeadParams {
        classes: train.classes.clone(),
        kind: cfg.head,
        mean,
        std,
        w1,
        b1,
        w2,
        b2,
        unknown_threshold: 0.0,
    })?;

    // Final evaluation through the head itself, so the report's numbers are
    // exactly what `evaluate(head, holdout)` gives.
    let (metrics, threshold, threshold_rule, below) = match &val {
        Some((ds, idx)) => {
            let mut xs = Vec::with_capacity(idx.len() * dim);
            let mut y_true = Vec::with_capacity(idx.len());
            for &i in idx {
                xs.extend_from_slice(ds.row(i));
                y_true.push(ds.y[i]);
            }
            let probs = head.probabilities_batch(&xs, idx.len())?;
            let mut y_pred = Vec::with_capacity(idx.len());
            let mut top = Vec::with_capacity(idx.len());
            let mut correct_top = Vec::new();
            for (p, &t) in probs.chunks_exact(k).zip(&y_true) {
                let (c, s) = argmax(p);
                y_pred.push(c);
                top.push(s);
                if c == t {
                    correct_top.push(s);
                }
            }
            let metrics = Metrics::compute(&y_true, &y_pred, &train.classes)?;
            let (t, rule) = calibrate_threshold(&correct_top, k);
            let below = top.iter().filter(|&&s| s < t).count() as f64 / top.len().max(1) as f64;
            (metrics, t, rule, below)
        }
        None => {
            let (t, rule) = calibrate_threshold(&[], k);
            (Metrics::compute(&[], &[], &train.classes)?, t, rule, 0.0)
        }
    };
    head.set_unknown_threshold(threshold)?;

    let report = TrainReport {
        head_kind: cfg.head,
        classes: train.classes.clone(),
        dim,
        samples_per_class_train: fit_counts,
        samples_per_class_holdout: val_counts,
        validation,
        epochs_run,
        best_epoch,
        stopped_because: stop,
        loss_curve,
        train_time_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        metrics,
        threshold,
        threshold_rule,
        holdout_below_threshold: below,
        config: cfg.clone(),
    };
    Ok((head, report))
}

/// Splits the training indices into (fit, validation): per class,
/// `round(CARVE_FRACTION * n_c)` samples, at most `n_c - 1`, chosen by a
/// seeded shuffle.
fn carve_validation(train: &Dataset, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = SplitMix64::new(seed ^ STREAM_CARVE);
    let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); train.classes.len()];
    for (i, &c) in train.y.iter().enumerate() {
        if let Some(v) = per_class.get_mut(c) {
            v.push(i);
        }
    }
    let mut fit = Vec::with_capacity(train.len());
    let mut val = Vec::new();
    for mut idx in per_class {
        rng.shuffle(&mut idx);
        let n = idx.len();
        let take = ((n as f64 * CARVE_FRACTION).round() as usize).min(n.saturating_sub(1));
        val.extend_from_slice(&idx[..take]);
        fit.extend_from_slice(&idx[take..]);
    }
    fit.sort_unstable();
    val.sort_unstable();
    (fit, val)
}

/// Per-dimension mean and population standard deviation over `idx`
/// (accumulated in f64), with the floors described at
/// [`STD_FLOOR_RELATIVE`].
fn standardization(ds: &Dataset, idx: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let dim = ds.dim;
    let n = idx.len().max(1) as f64;
    let mut sum = vec![0.0f64; dim];
    for &i in idx {
        for (s, &v) in sum.iter_mut().zip(ds.row(i)) {
            *s += f64::from(v);
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let mut sq = vec![0.0f64; dim];
    for &i in idx {
        for ((s, &v), &m) in sq.iter_mut().zip(ds.row(i)).zip(&mean) {
            let d = f64::from(v) - m;
            *s += d * d;
        }
    }
    let std: Vec<f64> = sq.iter().map(|s| (s / n).sqrt()).collect();
    let avg_std = std.iter().sum::<f64>() / dim.max(1) as f64;
    let floor = (f64::from(STD_FLOOR_RELATIVE) * avg_std).max(f64::from(STD_FLOOR_ABSOLUTE));
    (
        mean.iter().map(|&m| m as f32).collect(),
        std.iter().map(|&s| s.max(floor) as f32).collect(),
    )
}

/// Standardisation parameters, borrowed.
#[derive(Clone, Copy)]
struct Norm<'a> {
    mean: &'a [f32],
    inv_std: &'a [f32],
}

/// Trainable tensors; `w2`/`b2` are empty for softmax heads.
#[derive(Clone, Debug, PartialEq)]
struct Params {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

/// Which of [`Params::parts`] get weight decay: weights yes, biases no
/// (decaying biases only adds bias towards equal class priors).
const DECAYED: [bool; 4] = [true, false, true, false];

impl Params {
    fn zeros_like(&self) -> Params {
        Params {
            w1: vec![0.0; self.w1.len()],
            b1: vec![0.0; self.b1.len()],
            w2: vec![0.0; self.w2.len()],
            b2: vec![0.0; self.b2.len()],
        }
    }

    fn parts(&self) -> [&[f32]; 4] {
        [&self.w1, &self.b1, &self.w2, &self.b2]
    }

    fn parts_mut(&mut self) -> [&mut [f32]; 4] {
        [&mut self.w1, &mut self.b1, &mut self.w2, &mut self.b2]
    }

    fn fill_zero(&mut self) {
        for p in self.parts_mut() {
            p.fill(0.0);
        }
    }
}

/// Buffers for one batch (or evaluation block), allocated once per run.
struct Work {
    /// Standardised inputs, `rows x dim`.
    xb: Vec<f32>,
    /// Hidden activations after ReLU and dropout, `rows x hidden`.
    h: Vec<f32>,
    /// Derivative of the hidden activation w.r.t. its pre-activation
    /// (0, 1, or the inverted-dropout scale), `rows x hidden`.
    gate: Vec<f32>,
    /// Gradient w.r.t. the hidden layer, `rows x hidden`.
    gh: Vec<f32>,
    /// Logits, then probabilities, then output gradients, `rows x k`.
    z: Vec<f32>,
}

impl Work {
    fn new(rows: usize, dim: usize, out1: usize, k: usize) -> Work {
        Work {
            xb: vec![0.0; rows * dim],
            h: vec![0.0; rows * out1],
            gate: vec![0.0; rows * out1],
            gh: vec![0.0; rows * out1],
            z: vec![0.0; rows * k],
        }
    }
}

struct Model {
    kind: HeadKind,
    dim: usize,
    k: usize,
    /// Width of the first layer's output: classes (softmax) or hidden units.
    out1: usize,
    p: Params,
}

impl Model {
    /// Softmax: zero weights (the problem is convex, so symmetry does not
    /// need breaking and zero is the natural, seed-independent start).
    /// MLP: He-normal first layer (keeps ReLU activations' variance at
    /// depth), Xavier-normal output layer, zero biases.
    fn init(kind: HeadKind, dim: usize, k: usize, seed: u64) -> Model {
        let mut rng = SplitMix64::new(seed ^ STREAM_INIT);
        match kind {
            // A centroid head never reaches the training loop (see `train`).
            HeadKind::Softmax | HeadKind::Centroid => Model {
                kind,
                dim,
                k,
                out1: k,
                p: Params {
                    w1: vec![0.0; k * dim],
                    b1: vec![0.0; k],
                    w2: Vec::new(),
                    b2: Vec::new(),
                },
            },
            HeadKind::Mlp { hidden, .. } => {
                let he = (2.0 / dim as f64).sqrt();
                let xavier = (2.0 / (hidden + k) as f64).sqrt();
                let w1 = (0..hidden * dim)
                    .map(|_| (rng.normal() * he) as f32)
                    .collect();
                let w2 = (0..k * hidden)
                    .map(|_| (rng.normal() * xavier) as f32)
                    .collect();
                Model {
                    kind,
                    dim,
                    k,
                    out1: hidden,
                    p: Params {
                        w1,
                        b1: vec![0.0; hidden],
                        w2,
                        b2: vec![0.0; k],
                    },
                }
            }
        }
    }

    /// Copies rows `idx` of `ds`, standardised, into `work.xb`.
    fn gather(&self, ds: &Dataset, idx: &[usize], norm: Norm, work: &mut Work) {
        for (dst, &i) in work.xb.chunks_exact_mut(self.dim).zip(idx) {
            standardize_row(ds.row(i), norm.mean, norm.inv_std, dst);
        }
    }

    /// Logits of the first `rows` rows of `work.xb` into `work.z`, with
    /// inverted dropout on the hidden layer when `dropout.1 > 0`.
    fn forward(&self, rows: usize, work: &mut Work, dropout: Option<(&mut SplitMix64, f32)>) {
        let xb = &work.xb[..rows * self.dim];
        let z = &mut work.z[..rows * self.k];
        match self.kind {
            HeadKind::Softmax | HeadKind::Centroid => {
                linear_forward(&self.p.w1, &self.p.b1, xb, self.dim, z)
            }
            HeadKind::Mlp { .. } => {
                let h = &mut work.h[..rows * self.out1];
                let gate = &mut work.gate[..rows * self.out1];
                linear_forward(&self.p.w1, &self.p.b1, xb, self.dim, h);
                match dropout {
                    Some((rng, p)) if p > 0.0 => {
                        let keep = 1.0 - p;
                        let scale = 1.0 / keep;
                        for (hv, gv) in h.iter_mut().zip(gate.iter_mut()) {
                            if *hv > 0.0 && rng.next_f32() < keep {
                                *hv *= scale;
                                *gv = scale;
                            } else {
                                *hv = 0.0;
                                *gv = 0.0;
                            }
                        }
                    }
                    _ => {
                        for (hv, gv) in h.iter_mut().zip(gate.iter_mut()) {
                            if *hv > 0.0 {
                                *gv = 1.0;
                            } else {
                                *hv = 0.0;
                                *gv = 0.0;
                            }
                        }
                    }
                }
                linear_forward(&self.p.w2, &self.p.b2, h, self.out1, z);
            }
        }
    }

    /// One mini-batch: forward, class-weighted cross-entropy, backward into
    /// `grads`. The gradient is of `sum_i w_i * loss_i / rows`, so with
    /// balanced weights (mean 1 over the data) its scale does not depend on
    /// the class mix. Returns `(sum_i w_i * loss_i, sum_i w_i)`.
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &self,
        ds: &Dataset,
        idx: &[usize],
        norm: Norm,
        class_weight: &[f32],
        work: &mut Work,
        grads: &mut Params,
        dropout: (&mut SplitMix64, f32),
    ) -> (f64, f64) {
        let rows = idx.len();
        self.gather(ds, idx, norm, work);
        self.forward(rows, work, Some(dropout));
        let mut loss_sum = 0.0f64;
        let mut weight_sum = 0.0f64;
        let inv_rows = 1.0 / rows as f32;
        for (z, &i) in work.z.chunks_exact_mut(self.k).zip(idx) {
            let y = ds.y[i];
            let w = class_weight[y];
            let zy = z[y];
            let lse = softmax_in_place(z);
            loss_sum += f64::from(w) * f64::from(lse - zy);
            weight_sum += f64::from(w);
            z[y] -= 1.0;
            let scale = w * inv_rows;
            z.iter_mut().for_each(|g| *g *= scale);
        }
        self.backward(rows, work, grads);
        (loss_sum, weight_sum)
    }

    /// Gradients of the loss whose output gradient is in `work.z`.
    fn backward(&self, rows: usize, work: &mut Work, grads: &mut Params) {
        grads.fill_zero();
        let xb = &work.xb[..rows * self.dim];
        let gz = &work.z[..rows * self.k];
        match self.kind {
            HeadKind::Softmax | HeadKind::Centroid => {
                linear_backward(&mut grads.w1, &mut grads.b1, gz, xb, self.dim)
            }
            HeadKind::Mlp { .. } => {
                let h = &work.h[..rows * self.out1];
                linear_backward(&mut grads.w2, &mut grads.b2, gz, h, self.out1);
                let gh = &mut work.gh[..rows * self.out1];
                linear_input_grad(gh, gz, &self.p.w2, self.out1, self.k);
                for (g, &m) in gh.iter_mut().zip(&work.gate[..rows * self.out1]) {
                    *g *= m;
                }
                linear_backward(&mut grads.w1, &mut grads.b1, gh, xb, self.dim);
            }
        }
    }

    /// Class-weighted mean cross-entropy on rows `idx` of `ds` (no dropout).
    fn loss(
        &self,
        ds: &Dataset,
        idx: &[usize],
        norm: Norm,
        class_weight: &[f32],
        work: &mut Work,
    ) -> f32 {
        let mut loss_sum = 0.0f64;
        let mut weight_sum = 0.0f64;
        for block in idx.chunks(EVAL_BLOCK) {
            self.gather(ds, block, norm, work);
            self.forward(block.len(), work, None);
            for (z, &i) in work.z.chunks_exact_mut(self.k).zip(block) {
                let y = ds.y[i];
                let w = class_weight[y];
                let zy = z[y];
                let lse = softmax_in_place(z);
                loss_sum += f64::from(w) * f64::from(lse - zy);
                weight_sum += f64::from(w);
            }
        }
        (loss_sum / weight_sum.max(f64::MIN_POSITIVE)) as f32
    }
}

/// Adam optimiser state (Kingma & Ba): the moments of each of [`Params::parts`], with L2
/// weight decay added to the gradient of decayed tensors.
struct Adam {
    moments: [Moments; 4],
    t: i32,
    lr: f32,
    wd: f32,
}

impl Adam {
    fn new(p: &Params, lr: f32, wd: f32) -> Adam {
        Adam {
            moments: p.parts().map(|t| Moments::new(t.len())),
            t: 0,
            lr,
            wd,
        }
    }

    fn step(&mut self, p: &mut Params, g: &Params) {
        self.t = self.t.saturating_add(1);
        let tensors = p
            .parts_mut()
            .into_iter()
            .zip(g.parts())
            .zip(self.moments.iter_mut())
            .zip(DECAYED);
        for (((p, g), m), decayed) in tensors {
            let wd = if decayed { self.wd } else { 0.0 };
            m.step(p, g, self.lr, self.t, wd);
        }
    }
}

/// Independent random streams per purpose, so that e.g. changing dropout
/// does not change the shuffling order.
const STREAM_INIT: u64 = 0x1a2b_3c4d_5e6f_7081;
const STREAM_SHUFFLE: u64 = 0x2b3c_4d5e_6f70_8192;
const STREAM_DROPOUT: u64 = 0x3c4d_5e6f_7081_92a3;
const STREAM_CARVE: u64 = 0x4d5e_6f70_8192_a3b4;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("class{i}")).collect()
    }

    /// Gaussian blobs around random centres; `spread` controls overlap.
    fn blobs(n_per: &[usize], dim: usize, spread: f64, seed: u64) -> Dataset {
        let mut rng = SplitMix64::new(seed);
        let k = n_per.len();
        let mut crng = SplitMix64::new(12345);
        let centres: Vec<Vec<f64>> = (0..k)
            .map(|_| (0..dim).map(|_| crng.normal() * 2.0 + 3.0).collect())
            .collect();
        let mut x = Vec::new();
        let mut y = Vec::new();
        for (c, &n) in n_per.iter().enumerate() {
            for _ in 0..n {
                for (d, &centre) in centres[c].iter().enumerate() {
                    // Dimension scales differ, as in real embeddings.
                    let scale = 1.0 + (d % 7) as f64;
                    x.push(((centre + rng.normal() * spread) * scale) as f32);
                }
                y.push(c);
            }
        }
        Dataset::new(dim, x, y, names(k)).unwrap()
    }

    fn quick_cfg() -> TrainConfig {
        TrainConfig {
            time_budget: Duration::from_secs(60),
            ..TrainConfig::default()
        }
    }

    #[test]
    fn softmax_learns_separable_blobs() {
        let train_ds = blobs(&[60, 60, 60, 60], 32, 2.0, 1);
        let hold = blobs(&[20, 20, 20, 20], 32, 2.0, 2);
        let (head, report) = train(&train_ds, &hold, &quick_cfg(), None).unwrap();
        assert!(report.metrics.accuracy > 0.95, "{:?}", report.metrics);
        assert_eq!(report.validation, ValidationSource::Holdout);
        assert_eq!(report.samples_per_class_train, vec![60; 4]);
        assert_eq!(report.samples_per_class_holdout, vec![20; 4]);
        assert_eq!(report.loss_curve.len(), report.epochs_run);
        assert!(report.best_epoch.is_some());
        assert!(report.threshold >= 0.25 && report.threshold <= THRESHOLD_MAX);
        assert_eq!(head.unknown_threshold(), report.threshold);
        // The report's metrics are those of the returned head.
        let again = evaluate(&head, &hold).unwrap();
        assert_eq!(again, report.metrics);
        // Loss decreased.
        let first = report.loss_curve[0].0;
        let last = report.loss_curve[report.epochs_run - 1].0;
        assert!(last < first);
        // Serialisable.
        let json = serde_json::to_string(&report).unwrap();
        let back: TrainReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        assert!(json.contains("\"stopped_because\""));
    }

    #[test]
    fn training_is_reproducible() {
        let train_ds = blobs(&[30, 30, 30], 16, 3.0, 3);
        let hold = blobs(&[10, 10, 10], 16, 3.0, 4);
        for cfg in [quick_cfg(), TrainConfig::mlp()] {
            let (h1, r1) = train(&train_ds, &hold, &cfg, None).unwrap();
            let (h2, r2) = train(&train_ds, &hold, &cfg, None).unwrap();
            assert_eq!(h1, h2);
            assert_eq!(r1.loss_curve, r2.loss_curve);
        }
    }

    /// XOR-like data: two classes that no linear classifier separates.
    fn xor(n: usize, seed: u64) -> Dataset {
        let mut rng = SplitMix64::new(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            let a = rng.next_f64() * 2.0 - 1.0;
            let b = rng.next_f64() * 2.0 - 1.0;
            x.extend_from_slice(&[a as f32, b as f32, (rng.normal() * 0.1) as f32]);
            y.push(usize::from((a > 0.0) != (b > 0.0)));
        }
        Dataset::new(3, x, y, names(2)).unwrap()
    }

    #[test]
    fn mlp_learns_what_softmax_cannot() {
        let tr = xor(600, 5);
        let ho = xor(200, 6);
        let cfg = TrainConfig {
            head: HeadKind::Mlp {
                hidden: 32,
                dropout: 0.1,
            },
            learning_rate: 1e-2,
            patience: 20,
            ..quick_cfg()
        };
        let (head, report) = train(&tr, &ho, &cfg, None).unwrap();
        assert!(report.metrics.accuracy > 0.9, "{:?}", report.metrics);
        assert_eq!(head.kind(), cfg.head);
        let (_, linear) = train(&tr, &ho, &quick_cfg(), None).unwrap();
        assert!(linear.metrics.accuracy < 0.75, "{:?}", linear.metrics);
    }

    /// Central-difference gradient check of the analytic backward pass.
    #[test]
    fn gradients_match_finite_differences() {
        let ds = blobs(&[3, 3, 2], 6, 1.0, 7);
        let idx: Vec<usize> = (0..ds.len()).collect();
        let (mean, std) = standardization(&ds, &idx);
        let inv: Vec<f32> = std.iter().map(|s| 1.0 / s).collect();
        let norm = Norm {
            mean: &mean,
            inv_std: &inv,
        };
        let weights = vec![1.0, 0.5, 2.0];
        for kind in [
            HeadKind::Softmax,
            HeadKind::Mlp {
                hidden: 5,
                dropout: 0.0,
            },
        ] {
            let mut model = Model::init(kind, 6, 3, 9);
            // Non-zero softmax weights so the check is not at a symmetric point.
            let mut r = SplitMix64::new(1);
            for p in model.p.parts_mut() {
                p.iter_mut().for_each(|v| *v += (r.normal() * 0.3) as f32);
            }
            let mut work = Work::new(ds.len(), 6, model.out1, 3);
            let mut grads = model.p.zeros_like();
            let mut rng = SplitMix64::new(0);
            model.train_step(
                &ds,
                &idx,
                norm,
                &weights,
                &mut work,
                &mut grads,
                (&mut rng, 0.0),
            );
            // Objective whose gradient train_step computes.
            let objective = |m: &Model, work: &mut Work| -> f64 {
                let mut g = m.p.zeros_like();
                let mut rng = SplitMix64::new(0);
                let (l, _) = m.train_step(&ds, &idx, norm, &weights, work, &mut g, (&mut rng, 0.0));
                l / idx.len() as f64
            };
            let eps = 1e-2f32;
            for part in 0..4 {
                let len = model.p.parts()[part].len();
                for j in (0..len).step_by(3) {
                    let orig = model.p.parts()[part][j];
                    model.p.parts_mut()[part][j] = orig + eps;
                    let up = objective(&model, &mut work);
                    model.p.parts_mut()[part][j] = orig - eps;
                    let down = objective(&model, &mut work);
                    model.p.parts_mut()[part][j] = orig;
                    let numeric = (up - down) / (2.0 * f64::from(eps));
                    let analytic = f64::from(grads.parts()[part][j]);
                    assert!(
                        (numeric - analytic).abs() < 2e-3 + 2e-2 * analytic.abs(),
                        "{kind:?} part {part} index {j}: numeric {numeric} analytic {analytic}"
                    );
                }
            }
        }
    }

    #[test]
    fn input_errors_are_reported() {
        let good = blobs(&[5, 5], 4, 1.0, 1);
        let hold = Dataset::empty(4, names(2));
        let cfg = quick_cfg();

        let empty = Dataset::empty(4, names(2));
        assert!(matches!(
            train(&empty, &hold, &cfg, None),
            Err(TrainError::EmptyTrain)
        ));

        let mut one = good.clone();
        one.y.iter_mut().for_each(|y| *y = 0);
        let err = train(&one, &hold, &cfg, None).unwrap_err();
        assert!(matches!(err, TrainError::TooFewClasses { .. }));
        assert!(err
            .to_string()
            .contains("need at least two labels with samples"));

        let mut three = good.clone();
        three.classes.push("ghost".into());
        let hold3 = Dataset::empty(4, three.classes.clone());
        assert!(matches!(
            train(&three, &hold3, &cfg, None),
            Err(TrainError::ClassWithoutSamples { ref class }) if class == "ghost"
        ));

        let mut nan = good.clone();
        nan.x[4 * 3 + 2] = f32::NAN;
        assert!(matches!(
            train(&nan, &hold, &cfg, None),
            Err(TrainError::NonFinite {
                sample: 3,
                dim: 2,
                ..
            })
        ));
        let mut inf = good.clone();
        inf.x[0] = f32::INFINITY;
        assert!(train(&inf, &hold, &cfg, None).is_err());

        let other_dim = Dataset::empty(5, names(2));
        assert!(matches!(
            train(&good, &other_dim, &cfg, None),
            Err(TrainError::DimensionMismatch {
                expected: 4,
                found: 5,
                ..
            })
        ));

        let mut short = good.clone();
        short.x.pop();
        assert!(matches!(
            train(&short, &hold, &cfg, None),
            Err(TrainError::Shape { .. })
        ));

        let mut label = good.clone();
        label.y[0] = 7;
        assert!(matches!(
            train(&label, &hold, &cfg, None),
            Err(TrainError::LabelOutOfRange { label: 7, .. })
        ));

        let other_classes = Dataset::empty(4, vec!["x".into(), "y".into()]);
        assert!(matches!(
            train(&good, &other_classes, &cfg, None),
            Err(TrainError::ClassesDiffer { .. })
        ));

        let mut reserved = good.clone();
        reserved.classes[1] = "unknown".into();
        assert!(matches!(
            train(
                &reserved,
                &Dataset::empty(4, reserved.classes.clone()),
                &cfg,
                None
            ),
            Err(TrainError::InvalidClasses { .. })
        ));

        for bad in [
            TrainConfig {
                batch_size: 0,
                ..cfg.clone()
            },
            TrainConfig {
                learning_rate: f32::NAN,
                ..cfg.clone()
            },
            TrainConfig {
                patience: 0,
                ..cfg.clone()
            },
            TrainConfig {
                head: HeadKind::Mlp {
                    hidden: 4,
                    dropout: 1.0,
                },
                ..cfg.clone()
            },
        ] {
            assert!(matches!(
                train(&good, &hold, &bad, None),
                Err(TrainError::InvalidConfig(_))
            ));
        }
    }

    #[test]
    fn cancel_and_time_budget_stop_training() {
        let tr = blobs(&[40, 40], 8, 2.0, 1);
        let ho = blobs(&[10, 10], 8, 2.0, 2);
        let flag = AtomicBool::new(true);
        let (_, r) = train(&tr, &ho, &quick_cfg(), Some(&flag)).unwrap();
        assert_eq!(r.stopped_because, StopReason::Cancelled);
        assert_eq!(r.epochs_run, 0);
        let cfg = TrainConfig {
            time_budget: Duration::ZERO,
            ..quick_cfg()
        };
        let (head, r) = train(&tr, &ho, &cfg, None).unwrap();
        assert_eq!(r.stopped_because, StopReason::TimeBudget);
        assert_eq!(r.best_epoch, None);
        // Still a valid, usable head.
        assert_eq!(head.probabilities(&tr.x[..8]).unwrap().len(), 2);
    }

    #[test]
    fn early_stopping_and_max_epochs() {
        // Heavily overlapping classes: validation loss bottoms out early.
        let tr = blobs(&[30, 30], 64, 12.0, 1);
        let ho = blobs(&[30, 30], 64, 12.0, 2);
        let cfg = TrainConfig {
            patience: 3,
            learning_rate: 1e-2,
            weight_decay: 0.0,
            c: None,
            early_stopping: true,
            ..quick_cfg()
        };
        let (_, r) = train(&tr, &ho, &cfg, None).unwrap();
        assert_eq!(r.stopped_because, StopReason::EarlyStop, "{r:?}");
        assert_eq!(r.epochs_run, r.best_epoch.unwrap() + 3);
        // The kept weights are those of the best validation loss.
        let best = r
            .loss_curve
            .iter()
            .filter_map(|(_, v)| *v)
            .fold(f32::INFINITY, f32::min);
        assert_eq!(r.loss_curve[r.best_epoch.unwrap() - 1].1, Some(best));

        let cfg = TrainConfig {
            epochs_max: 2,
            ..quick_cfg()
        };
        let (_, r) = train(&tr, &ho, &cfg, None).unwrap();
        assert_eq!(r.stopped_because, StopReason::MaxEpochs);
        assert_eq!(r.epochs_run, 2);
    }

    #[test]
    fn empty_holdout_carves_validation_or_runs_fixed_epochs() {
        let tr = blobs(&[50, 20, 3], 8, 1.0, 1);
        let empty = Dataset::empty(8, names(3));
        let (_, r) = train(&tr, &empty, &quick_cfg(), None).unwrap();
        assert_eq!(r.validation, ValidationSource::CarvedFromTrain);
        assert_eq!(r.samples_per_class_holdout, vec![10, 4, 1]);
        assert_eq!(r.samples_per_class_train, vec![40, 16, 2]);
        assert_eq!(r.metrics.n, 15);

        let tiny = blobs(&[2, 2], 4, 1.0, 1);
        let empty = Dataset::empty(4, names(2));
        let cfg = TrainConfig {
            epochs_max: 7,
            ..quick_cfg()
        };
        let (head, r) = train(&tiny, &empty, &cfg, None).unwrap();
        assert_eq!(r.validation, ValidationSource::None);
        assert!(matches!(
            r.stopped_because,
            StopReason::MaxEpochs | StopReason::Converged
        ));
        assert_eq!(r.metrics.n, 0);
        assert!(r.loss_curve.iter().all(|(_, v)| v.is_none()));
        assert!((head.unknown_threshold() - 0.75).abs() < 1e-6);
    }

    #[test]
    fn class_balancing_helps_the_minority_class() {
        // 200 vs 12 samples with overlap: unweighted training favours the
        // majority; balanced weights raise minority recall.
        let tr = blobs(&[200, 12], 16, 6.0, 1);
        let ho = blobs(&[100, 100], 16, 6.0, 2);
        let recall = |balanced: bool| {
            let cfg = TrainConfig {
                class_balanced: balanced,
                ..quick_cfg()
            };
            let (_, r) = train(&tr, &ho, &cfg, None).unwrap();
            r.metrics.per_class[1].recall
        };
        let (plain, balanced) = (recall(false), recall(true));
        assert!(balanced > plain, "balanced {balanced} plain {plain}");
    }

    #[test]
    fn threshold_rule() {
        // Fallback below the minimum sample count: (1 + 1/4) / 2.
        let (t, rule) = calibrate_threshold(&[0.9; 5], 4);
        assert!((t - 0.625).abs() < 1e-6);
        assert!(rule.contains("fallback"));
        // 100 values 0.500, 0.505, ...: rank floor(99 * 0.05) = 4 -> 0.52.
        let v: Vec<f32> = (0..100).map(|i| 0.5 + i as f32 * 0.005).collect();
        let (t, rule) = calibrate_threshold(&v, 4);
        assert!((t - 0.52).abs() < 1e-6, "{t}");
        assert!(rule.contains("percentile"), "{rule}");
        // Clamped from above and from below (chance level 1/k).
        let (t, _) = calibrate_threshold(&[0.999; 50], 4);
        assert_eq!(t, THRESHOLD_MAX);
        let (t, _) = calibrate_threshold(&[0.3; 50], 2);
        assert_eq!(t, 0.5);
        // Non-finite inputs are ignored rather than poisoning the sort.
        let mut v = vec![0.8f32; 30];
        v.push(f32::NAN);
        assert!((calibrate_threshold(&v, 4).0 - 0.8).abs() < 1e-6);
    }

    #[test]
    fn evaluate_matches_classes_by_name() {
        let tr = blobs(&[40, 40], 8, 1.0, 1);
        let ho = blobs(&[10, 10], 8, 1.0, 2);
        let (head, _) = train(&tr, &ho, &quick_cfg(), None).unwrap();
        // A holdout with an extra class the head does not know.
        let mut ho3 = ho.clone();
        ho3.classes.push("new".into());
        ho3.x.extend_from_slice(&ho.x[..16]);
        ho3.y.extend_from_slice(&[2, 2]);
        let m = evaluate(&head, &ho3).unwrap();
        assert_eq!(m.n, 22);
        assert_eq!(m.per_class[2].label, "new");
        assert_eq!(m.per_class[2].recall, 0.0);
        // Reordered classes give the same scores.
        let mut swapped = ho.clone();
        swapped.classes.swap(0, 1);
        swapped.y.iter_mut().for_each(|y| *y = 1 - *y);
        let a = evaluate(&head, &ho).unwrap();
        let b = evaluate(&head, &swapped).unwrap();
        assert_eq!(a.accuracy, b.accuracy);
        assert_eq!(a.macro_f1, b.macro_f1);
        let wrong_dim = Dataset::empty(9, names(2));
        assert!(evaluate(&head, &wrong_dim).is_err());
    }

    #[test]
    fn stop_reason_serialises_kebab_case() {
        assert_eq!(
            serde_json::to_string(&StopReason::EarlyStop).unwrap(),
            "\"early-stop\""
        );
        assert_eq!(StopReason::TimeBudget.to_string(), "time-budget");
        let cfg: TrainConfig = serde_json::from_str("{\"epochs_max\": 5}").unwrap();
        assert_eq!(cfg.epochs_max, 5);
        assert_eq!(cfg.batch_size, TrainConfig::default().batch_size);
    }

    /// Timing of the performance target: 2000 x 1280 x 10 softmax.
    /// Run with `cargo test --release -- --ignored timing --nocapture`.
    #[test]
    #[ignore]
    fn timing_softmax_2000x1280x10() {
        // Hard (overlapping, early stop comes quickly) and easy (separable,
        // the validation loss keeps creeping down) data.
        for spread in [25.0, 12.0, 4.0] {
            let tr = blobs(&[200; 10], 1280, spread, 1);
            let ho = blobs(&[50; 10], 1280, spread, 2);
            let t0 = Instant::now();
            let (_, r) = train(&tr, &ho, &TrainConfig::default(), None).unwrap();
            let dt = t0.elapsed();
            println!(
                "softmax 2000x1280x10 spread {spread}: {:?} total, {} epochs ({}), best {:?}, {:.2} ms/epoch, holdout acc {:.4} macro-F1 {:.4}",
                dt,
                r.epochs_run,
                r.stopped_because,
                r.best_epoch,
                dt.as_secs_f64() * 1e3 / r.epochs_run.max(1) as f64,
                r.metrics.accuracy,
                r.metrics.macro_f1
            );
            if std::env::var_os("ADAPT_SHOW_CURVE").is_some() {
                println!("{:?}", r.loss_curve);
            }
        }
        let tr = blobs(&[200; 10], 1280, 12.0, 1);
        let ho = blobs(&[50; 10], 1280, 12.0, 2);
        let t0 = Instant::now();
        let (_, r) = train(&tr, &ho, &TrainConfig::mlp(), None).unwrap();
        println!(
            "mlp(128) 2000x1280x10 spread 12: {:?} total, {} epochs ({})",
            t0.elapsed(),
            r.epochs_run,
            r.stopped_because
        );
    }
}
