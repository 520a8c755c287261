//! The joint Adam loop of the tail and the head (see the module above for the method).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::adapt::adam::Moments;
use crate::adapt::head::{
    argmax, linear_backward, linear_forward, linear_input_grad, softmax_in_place, standardize_row,
    Head, HeadKind, HeadParams,
};
use crate::adapt::trainer::calibrate_threshold;
use crate::model::tail::{Tail, TailOp};
use crate::rng::SplitMix64;

use super::net::Net;
use super::{softmax_head, CutSet, FinetuneConfig, FinetuneError, FinetuneReport, TailParams};

/// Relative improvement of the held-out loss that counts as better.
const MIN_REL_IMPROVEMENT: f32 = 1e-4;

/// The head's trainable part over fixed standardisation.
#[derive(Debug, Clone)]
struct Linear {
    k: usize,
    dim: usize,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Linear {
    /// Probabilities of one embedding into `probs`, its standardised form into `z`; returns
    /// the log-sum-exp of the logits.
    fn forward(&self, e: &[f32], z: &mut [f32], probs: &mut [f32]) -> f32 {
        standardize_row(e, &self.mean, &self.inv_std, z);
        linear_forward(&self.w, &self.b, z, self.dim, probs);
        softmax_in_place(probs)
    }

    /// Mean cross-entropy on `set` through `net`.
    fn loss(&self, net: &Net, set: &CutSet) -> f32 {
        let mut acts = net.buffers();
        let (mut z, mut probs) = (vec![0.0; self.dim], vec![0.0; self.k]);
        let mut total = 0f64;
        for (x, &y) in set.x.chunks_exact(net.in_len()).zip(&set.y) {
            net.forward(x, &mut acts);
            let e = acts.last().map_or(x, |a| a.as_slice());
            self.forward(e, &mut z, &mut probs);
            total -= f64::from(probs[y].max(1e-12).ln());
        }
        (total / set.len().max(1) as f64) as f32
    }
}

/// Trains `tail` and `start` (a head trained head-only on the embeddings of `tail`) together
/// on `train`, stopping early on `holdout`; returns the best epoch's tail and head (with its
/// open-set threshold calibrated on `holdout`). `lr_ratio = 0` leaves the tail bit-identical.
pub fn finetune(
    tail: &Tail,
    start: &Head,
    train: &CutSet,
    holdout: &CutSet,
    cfg: &FinetuneConfig,
    cancel: Option<&AtomicBool>,
) -> Result<(Tail, Head, FinetuneReport), FinetuneError> {
    let begun = Instant::now();
    cfg.validate()?;
    softmax_head(start)?;
    train.check("train")?;
    holdout.check("holdout")?;
    if holdout.is_empty() {
        return Err(FinetuneError::NoHoldout);
    }
    for (split, set) in [("train", train), ("holdout", holdout)] {
        if set.classes != start.classes() {
            return Err(FinetuneError::Shape(format!(
                "the {split} split's classes {:?} are not the head's {:?}",
                set.classes,
                start.classes()
            )));
        }
        if (set.channels, set.positions) != (train.channels, train.positions) {
            return Err(FinetuneError::Shape(format!(
                "the {split} split's activations are {} x {}, the train split's {} x {}",
                set.channels, set.positions, train.channels, train.positions
            )));
        }
    }
    let cut = (train.channels, train.positions);
    let dim = start.dim();
    let mut net = Net::new(tail, cut, dim)?;
    let memory = super::estimate(&net, train.len() + holdout.len(), cfg);
    if memory > cfg.max_memory_bytes {
        return Err(FinetuneError::Memory {
            needed_mb: memory.div_ceil(1 << 20),
            limit_mb: cfg.max_memory_bytes >> 20,
        });
    }
    let p = start.params();
    let k = p.classes.len();
    let mut head = Linear {
        k,
        dim,
        mean: p.mean.clone(),
        inv_std: p.std.iter().map(|s| 1.0 / s).collect(),
        w: p.w1.clone(),
        b: p.b1.clone(),
    };
    let weights = cfg.params == TailParams::All;
    let pretrained = net.clone();
    let mut grads = net.zero_grads();
    let mut tail_moments: Vec<(Moments, Moments)> = grads
        .iter()
        .map(|(w, b)| {
            (
                Moments::new(if weights { w.len() } else { 0 }),
                Moments::new(b.len()),
            )
        })
        .collect();
    let (mut hw_m, mut hb_m) = (Moments::new(head.w.len()), Moments::new(k));
    let (mut gw, mut gb) = (vec![0.0; head.w.len()], vec![0.0; k]);

    let mut counts = vec![0usize; k];
    for &y in &train.y {
        counts[y] += 1;
    }
    let class_weight: Vec<f32> = counts
        .iter()
        .map(|&c| {
            if cfg.class_balanced {
                train.len() as f32 / (k as f32 * c.max(1) as f32)
            } else {
                1.0
            }
        })
        .collect();

    let start_loss = head.loss(&net, holdout);
    let mut best = (start_loss, 0usize, net.clone(), head.clone());
    let mut since_best = 0;
    let mut rng = SplitMix64::new(cfg.seed ^ 0x6674_756e_6521);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut acts = net.buffers();
    let mut scratch = [Vec::new(), Vec::new()];
    let (mut z, mut probs, mut de, mut dz) =
        (vec![0.0; dim], vec![0.0; k], vec![0.0; dim], vec![0.0; dim]);
    let tail_lr = cfg.learning_rate * cfg.lr_ratio;
    let row = net.in_len();
    // The map's side when it is square (crops need it), e.g. 7 for MobileNetV2's 7x7.
    let side = (1..=train.positions)
        .find(|h| h * h == train.positions)
        .filter(|&h| h >= 3);
    let mut crop: Vec<f32> = Vec::with_capacity(row);
    let mut step = 0i32;
    let mut epochs = 0;
    let mut cancelled = false;
    let (mut holdout_losses, mut train_losses) = (Vec::new(), Vec::new());
    'epochs: for epoch in 1..=cfg.epochs_max {
        rng.shuffle(&mut order);
        for batch in order.chunks(cfg.batch_size) {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed))
                || begun.elapsed() > cfg.time_budget
            {
                cancelled = cancel.is_some_and(|c| c.load(Ordering::Relaxed));
                break 'epochs;
            }
            for (dw, db) in &mut grads {
                dw.fill(0.0);
                db.fill(0.0);
            }
            gw.fill(0.0);
            gb.fill(0.0);
            let scale = 1.0 / batch.len() as f32;
            for &i in batch {
                let full = &train.x[i * row..(i + 1) * row];
                let y = train.y[i];
                let (x, q) = match side.filter(|_| cfg.crop_augment) {
                    Some(h) => {
                        let s = h - rng.below(3.min(h));
                        let (oy, ox) = (rng.below(h - s + 1), rng.below(h - s + 1));
                        crop.clear();
                        for ch in full.chunks_exact(h * h) {
                            for r in oy..oy + s {
                                crop.extend_from_slice(&ch[r * h + ox..r * h + ox + s]);
                            }
                        }
                        (crop.as_slice(), s * s)
                    }
                    None => (full, train.positions),
                };
                net.forward_at(x, q, &mut acts);
                let e = acts.last().map_or(x, |a| a.as_slice());
                head.forward(e, &mut z, &mut probs);
                // d(loss)/d(logits) = weight * (p - onehot) / batch.
                let cw = class_weight[y] * scale;
                probs.iter_mut().for_each(|p| *p *= cw);
                probs[y] -= cw;
                linear_backward(&mut gw, &mut gb, &probs, &z, dim);
                linear_input_grad(&mut dz, &probs, &head.w, dim, k);
                if tail_lr > 0.0 {
                    for ((d, &g), &s) in de.iter_mut().zip(&dz).zip(&head.inv_std) {
                        *d = g * s;
                    }
                    net.backward(x, q, &acts, &de, &mut grads, weights, &mut scratch);
                }
            }
            step += 1;
            hw_m.step(&mut head.w, &gw, cfg.learning_rate, step, cfg.weight_decay);
            hb_m.step(&mut head.b, &gb, cfg.learning_rate, step, 0.0);
            if tail_lr > 0.0 {
                for (li, layer) in net.layers.iter_mut().enumerate() {
                    let TailOp::Pointwise { w, b, .. } = &mut layer.op else {
                        continue;
                    };
                    let TailOp::Pointwise { w: w0, b: b0, .. } = &pretrained.layers[li].op else {
                        continue;
                    };
                    let (dw, db) = &mut grads[li];
                    let (mw, mb) = &mut tail_moments[li];
                    for ((g, &v), &v0) in db.iter_mut().zip(b.iter()).zip(b0) {
                        *g += cfg.l2sp * (v - v0);
                    }
                    mb.step(b, db, tail_lr, step, 0.0);
                    if weights {
                        for ((g, &v), &v0) in dw.iter_mut().zip(w.iter()).zip(w0) {
                            *g += cfg.l2sp * (v - v0);
                        }
                        mw.step(w, dw, tail_lr, step, 0.0);
                    }
                }
            }
        }
        epochs = epoch;
        let loss = head.loss(&net, holdout);
        holdout_losses.push(loss);
        train_losses.push(head.loss(&net, train));
        if !cfg.early_stopping {
            best = (loss, epoch, net.clone(), head.clone());
            continue;
        }
        if loss < best.0 * (1.0 - MIN_REL_IMPROVEMENT) {
            best = (loss, epoch, net.clone(), head.clone());
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= cfg.patience {
                break;
            }
        }
    }
    let (best_loss, best_epoch, best_net, best_head) = best;
    let mut out = Head::from_params(HeadParams {
        classes: p.classes.clone(),
        kind: HeadKind::Softmax,
        mean: p.mean.clone(),
        std: p.std.clone(),
        w1: best_head.w.clone(),
        b1: best_head.b.clone(),
        w2: Vec::new(),
        b2: Vec::new(),
        unknown_threshold: 0.0,
    })?;
    // The open-set threshold, as the head trainer sets it: from the held-out samples the
    // fine-tuned model gets right.
    let emb = best_net.embed(&holdout.x, holdout.len());
    let probs_all = out.probabilities_batch(&emb, holdout.len())?;
    let correct: Vec<f32> = probs_all
        .chunks_exact(k)
        .zip(&holdout.y)
        .filter_map(|(p, &y)| {
            let (top, v) = argmax(p);
            (top == y).then_some(v)
        })
        .collect();
    out.set_unknown_threshold(calibrate_threshold(&correct, k).0)?;
    let (nw, nb) = best_net.param_count();
    let report = FinetuneReport {
        epochs,
        best_epoch,
        start_loss,
        best_loss,
        holdout_losses,
        train_losses,
        train_time: begun.elapsed(),
        memory_bytes: memory,
        trained_values: (if weights { nw + nb } else { nb }, head.w.len() + k),
        cancelled,
    };
    Ok((best_net.to_tail(tail), out, report))
}
