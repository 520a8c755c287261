//! The nearest-centroid (cosine) head: enrolment from a handful of samples.
//!
//! With one to three samples per class, a softmax fitted by gradient descent
//! mostly learns the noise of those few points, and its probabilities say
//! little about how far an input is from anything enrolled. The centroid of
//! each class's unit-length embeddings, compared by cosine, needs no fitting
//! at all, works from a single sample, and gives a score with a fixed
//! meaning (the cosine to the closest enrolled class) that an open-set
//! threshold can be put on. Speaker encoders such as GE2E are trained for
//! exactly this comparison.
//!
//! Validation: the caller's holdout when there is one; otherwise every
//! training sample of a class with at least two samples is scored against
//! its class centroid computed *without* it (leave-one-out), which is what a
//! new clip of an enrolled speaker looks like to the head.
//!
//! Threshold, in order of preference:
//! 1. with [`THRESHOLD_MIN_SAMPLES`] correctly classified validation
//!    samples, the [`THRESHOLD_PERCENTILE`] percentile of their cosines;
//! 2. with a few genuine cosines (own class) and a few impostor cosines
//!    (closest other class), halfway between their medians;
//! 3. otherwise [`DEFAULT_THRESHOLD`];
//!
//! always clamped to [`[THRESHOLD_MIN, THRESHOLD_MAX]`](THRESHOLD_MIN).

use std::time::Instant;

use crate::adapt::dataset::{
    Dataset, StopReason, TrainConfig, TrainError, TrainReport, ValidationSource,
    THRESHOLD_MIN_SAMPLES, THRESHOLD_PERCENTILE,
};
use crate::adapt::head::{argmax, Head, HeadKind, HeadParams};
use crate::adapt::metrics::Metrics;

/// Threshold when there is too little validation data to calibrate one:
/// the best cosine an input must reach to be named. Chosen on GE2E voice
/// prints of real and synthetic voices (docs/PERFORMANCE.md, speaker
/// evaluation), where clips of an enrolled speaker score 0.80-0.95 against
/// their centroid and other voices mostly below 0.75.
pub const DEFAULT_THRESHOLD: f32 = 0.75;

/// Lowest threshold calibration may choose: below it, voices (or objects)
/// that merely share a language or a setting would be accepted.
pub const THRESHOLD_MIN: f32 = 0.5;

/// Highest threshold calibration may choose: above it, ordinary variation
/// of an enrolled class (another sentence, another angle) would be refused.
pub const THRESHOLD_MAX: f32 = 0.95;

/// Fewest genuine and impostor scores for the midpoint rule (rule 2).
const MIDPOINT_MIN_SAMPLES: usize = 3;

/// Fits a centroid head on `train` (see the module docs). Called by
/// [`crate::adapt::train`] once the datasets are validated, so every class
/// has samples and the dimensions agree.
pub fn fit(
    train: &Dataset,
    holdout: &Dataset,
    cfg: &TrainConfig,
    start: Instant,
) -> Result<(Head, TrainReport), TrainError> {
    let k = train.classes.len();
    let dim = train.dim;
    let mut sums = vec![0.0f64; k * dim];
    let mut counts = vec![0usize; k];
    for i in 0..train.len() {
        let c = train.y[i];
        counts[c] += 1;
        add_unit(&mut sums[c * dim..(c + 1) * dim], train.row(i), 1.0);
    }
    let mut w1 = vec![0.0f32; k * dim];
    for c in 0..k {
        let unit =
            normalize(&sums[c * dim..(c + 1) * dim]).ok_or_else(|| TrainError::ZeroCentroid {
                class: train.classes[c].clone(),
            })?;
        w1[c * dim..(c + 1) * dim].copy_from_slice(&unit);
    }
    let mut head = Head::from_params(HeadParams {
        classes: train.classes.clone(),
        kind: HeadKind::Centroid,
        mean: vec![0.0; dim],
        std: vec![1.0; dim],
        w1,
        b1: vec![0.0; k],
        w2: Vec::new(),
        b2: Vec::new(),
        unknown_threshold: 0.0,
    })?;

    // (true class, per-class cosines) of every validation sample.
    let (validation, scored, holdout_counts) = if !holdout.is_empty() {
        let scores = head.probabilities_batch(&holdout.x, holdout.len())?;
        let rows = holdout
            .y
            .iter()
            .copied()
            .zip(scores.chunks_exact(k).map(<[f32]>::to_vec))
            .collect();
        (ValidationSource::Holdout, rows, holdout.class_counts())
    } else {
        let rows = leave_one_out(train, &head, &sums, &counts)?;
        let source = if rows.is_empty() {
            ValidationSource::None
        } else {
            ValidationSource::LeaveOneOut
        };
        (source, rows, vec![0; k])
    };

    let mut y_true = Vec::with_capacity(scored.len());
    let mut y_pred = Vec::with_capacity(scored.len());
    let mut genuine_correct = Vec::new();
    let mut genuine = Vec::new();
    let mut impostor = Vec::new();
    for (t, s) in &scored {
        let (p, top) = argmax(s);
        y_true.push(*t);
        y_pred.push(p);
        if p == *t {
            genuine_correct.push(top);
        }
        if let Some(&g) = s.get(*t) {
            genuine.push(g);
        }
        let best_other = s
            .iter()
            .enumerate()
            .filter(|&(c, _)| c != *t)
            .map(|(_, &v)| v)
            .fold(f32::NEG_INFINITY, f32::max);
        if best_other.is_finite() {
            impostor.push(best_other);
        }
    }
    let metrics = Metrics::compute(&y_true, &y_pred, &train.classes)?;
    let (threshold, rule) = calibrate(&genuine_correct, &genuine, &impostor);
    head.set_unknown_threshold(threshold)?;
    let below = scored
        .iter()
        .filter(|(_, s)| argmax(s).1 < threshold)
        .count() as f64
        / scored.len().max(1) as f64;

    let report = TrainReport {
        head_kind: HeadKind::Centroid,
        classes: train.classes.clone(),
        dim,
        samples_per_class_train: counts,
        samples_per_class_holdout: holdout_counts,
        validation,
        epochs_run: 0,
        best_epoch: None,
        stopped_because: StopReason::Converged,
        loss_curve: Vec::new(),
        train_time_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        metrics,
        threshold,
        threshold_rule: rule,
        holdout_below_threshold: below,
        config: cfg.clone(),
    };
    Ok((head, report))
}

/// Scores each training sample of a class with two or more samples against
/// its own class centroid recomputed without it (the other centroids are the
/// head's). Returns (true class, per-class cosines) rows.
fn leave_one_out(
    train: &Dataset,
    head: &Head,
    sums: &[f64],
    counts: &[usize],
) -> Result<Vec<(usize, Vec<f32>)>, TrainError> {
    let dim = train.dim;
    let mut rows = Vec::new();
    let mut without = vec![0.0f64; dim];
    for i in 0..train.len() {
        let c = train.y[i];
        if counts[c] < 2 {
            continue;
        }
        let x = train.row(i);
        let mut scores = head.probabilities(x)?;
        without.copy_from_slice(&sums[c * dim..(c + 1) * dim]);
        add_unit(&mut without, x, -1.0);
        scores[c] = match normalize(&without) {
            Some(centroid) => cosine(&centroid, x),
            // The other samples of the class are all zero: nothing to match.
            None => 0.0,
        };
        rows.push((c, scores));
    }
    Ok(rows)
}

/// The threshold rule of the module docs; returns it with a one-line
/// description of how it was chosen (kept in the training report).
pub fn calibrate(genuine_correct: &[f32], genuine: &[f32], impostor: &[f32]) -> (f32, String) {
    let clamp = |t: f32| t.clamp(THRESHOLD_MIN, THRESHOLD_MAX);
    if genuine_correct.len() >= THRESHOLD_MIN_SAMPLES {
        let q = quantile(genuine_correct, THRESHOLD_PERCENTILE);
        let t = clamp(q);
        return (
            t,
            format!(
                "{:.0}th percentile of the cosine of {} correctly classified validation samples = {q:.4}, clamped to [{THRESHOLD_MIN}, {THRESHOLD_MAX}] -> {t:.4}",
                THRESHOLD_PERCENTILE * 100.0,
                genuine_correct.len()
            ),
        );
    }
    if genuine.len() >= MIDPOINT_MIN_SAMPLES && impostor.len() >= MIDPOINT_MIN_SAMPLES {
        let (g, i) = (quantile(genuine, 0.5), quantile(impostor, 0.5));
        let t = clamp(0.5 * (g + i));
        return (
            t,
            format!(
                "halfway between the median cosine to the own class ({g:.4}, {} samples) and to the closest other class ({i:.4}), clamped to [{THRESHOLD_MIN}, {THRESHOLD_MAX}] -> {t:.4}",
                genuine.len()
            ),
        );
    }
    (
        DEFAULT_THRESHOLD,
        format!(
            "default cosine {DEFAULT_THRESHOLD}: too few validation samples to calibrate ({} own-class, {} other-class scores; {MIDPOINT_MIN_SAMPLES} of each needed)",
            genuine.len(),
            impostor.len()
        ),
    )
}

/// Lower nearest-rank quantile of the finite values (0 for none).
fn quantile(v: &[f32], q: f64) -> f32 {
    let mut v: Vec<f32> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    let rank = ((v.len() - 1) as f64 * q).floor() as usize;
    v.get(rank).copied().unwrap_or(0.0)
}

/// `acc += sign * x / |x|` (in f64); an all-zero `x` adds nothing.
fn add_unit(acc: &mut [f64], x: &[f32], sign: f64) {
    let norm = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        let s = sign / norm;
        for (a, &v) in acc.iter_mut().zip(x) {
            *a += s * f64::from(v);
        }
    }
}

/// `v / |v|` as f32, or `None` for a (numerically) zero vector.
fn normalize(v: &[f64]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    (norm > 1e-12).then(|| v.iter().map(|x| (x / norm) as f32).collect())
}

/// Cosine of a unit vector and any vector (0 when `x` is zero).
fn cosine(unit: &[f32], x: &[f32]) -> f32 {
    let dot: f32 = unit.iter().zip(x).map(|(a, b)| a * b).sum();
    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        (dot / norm).clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::trainer::train as train_head;

    fn ds(rows: &[(&[f32], usize)], classes: &[&str]) -> Dataset {
        let dim = rows.first().map_or(0, |r| r.0.len());
        Dataset {
            dim,
            x: rows.iter().flat_map(|r| r.0.iter().copied()).collect(),
            y: rows.iter().map(|r| r.1).collect(),
            classes: classes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn cfg() -> TrainConfig {
        TrainConfig {
            head: HeadKind::Centroid,
            ..TrainConfig::default()
        }
    }

    fn empty(dim: usize, classes: &[&str]) -> Dataset {
        Dataset::empty(dim, classes.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn one_sample_per_class_gives_unit_centroids_and_the_default_threshold() {
        let train = ds(&[(&[3.0, 0.0, 0.0], 0), (&[0.0, 0.0, 0.5], 1)], &["a", "b"]);
        let (head, report) = train_head(&train, &empty(3, &["a", "b"]), &cfg(), None).unwrap();
        assert_eq!(head.kind(), HeadKind::Centroid);
        assert_eq!(head.params().w1, vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(report.validation, ValidationSource::None);
        assert_eq!(head.unknown_threshold(), DEFAULT_THRESHOLD);
        // Cosine, whatever the input's length.
        let p = head.predict(&[10.0, 1.0, 0.0]).unwrap();
        assert_eq!(p.label, "a");
        assert!((p.score - 10.0 / 101f32.sqrt()).abs() < 1e-6);
        // Far from both: unknown, not forced into a class.
        let p = head.predict(&[0.0, 1.0, 0.0]).unwrap();
        assert!(p.unknown);
        assert_eq!(p.label, "unknown");
        // The zero vector is unknown too, not NaN.
        let p = head.predict(&[0.0, 0.0, 0.0]).unwrap();
        assert!(p.unknown && p.score == 0.0);
    }

    #[test]
    fn leave_one_out_scores_a_sample_against_the_others_of_its_class() {
        // Class a: two samples 90 degrees apart; leaving one out, its own centroid is the
        // other sample, at cosine 0 (while the full centroid would be at 0.707).
        let train = ds(
            &[
                (&[1.0, 0.0, 0.0], 0),
                (&[0.0, 1.0, 0.0], 0),
                (&[0.0, 0.0, 1.0], 1),
            ],
            &["a", "b"],
        );
        let (_, report) = train_head(&train, &empty(3, &["a", "b"]), &cfg(), None).unwrap();
        assert_eq!(report.validation, ValidationSource::LeaveOneOut);
        // Two validated samples (class b has one: skipped), both with cosine 0 to their
        // own left-out centroid and 0 to b: argmax picks index 0 = a, "correct".
        assert_eq!(report.metrics.n, 2);
    }

    #[test]
    fn holdout_calibrates_with_enough_samples() {
        let mut rows: Vec<(Vec<f32>, usize)> = Vec::new();
        for i in 0..30 {
            let e = i as f32 * 0.01;
            rows.push((vec![1.0, e, 0.0], 0));
            rows.push((vec![0.0, e, 1.0], 1));
        }
        let refs: Vec<(&[f32], usize)> = rows.iter().map(|(v, y)| (v.as_slice(), *y)).collect();
        let all = ds(&refs, &["a", "b"]);
        let (head, report) = train_head(&all, &all, &cfg(), None).unwrap();
        assert_eq!(report.validation, ValidationSource::Holdout);
        assert_eq!(report.metrics.accuracy, 1.0);
        assert!(
            report.threshold_rule.contains("percentile"),
            "{}",
            report.threshold_rule
        );
        let t = head.unknown_threshold();
        assert!((THRESHOLD_MIN..=THRESHOLD_MAX).contains(&t), "{t}");
        // A save/load round trip keeps the kind and the scores bit for bit.
        let back = Head::from_safetensors(&head.to_safetensors().unwrap()).unwrap();
        assert_eq!(back, head);
    }

    #[test]
    fn midpoint_rule_and_clamps() {
        let (t, rule) = calibrate(&[], &[0.9, 0.85, 0.95], &[0.5, 0.6, 0.55]);
        assert!((t - 0.725).abs() < 1e-6, "{t}");
        assert!(rule.contains("halfway"), "{rule}");
        let (t, _) = calibrate(&[], &[0.2, 0.2, 0.2], &[0.1, 0.1, 0.1]);
        assert_eq!(t, THRESHOLD_MIN);
        let (t, _) = calibrate(&[0.99; 25], &[], &[]);
        assert_eq!(t, THRESHOLD_MAX);
    }

    #[test]
    fn a_class_of_zero_embeddings_is_a_clear_error() {
        let train = ds(&[(&[0.0, 0.0], 0), (&[1.0, 0.0], 1)], &["a", "b"]);
        let err = train_head(&train, &empty(2, &["a", "b"]), &cfg(), None).unwrap_err();
        assert!(
            matches!(err, TrainError::ZeroCentroid { ref class } if class == "a"),
            "{err}"
        );
    }

    #[test]
    fn a_centroid_file_with_a_non_unit_centroid_is_refused() {
        let bad = HeadParams {
            classes: vec!["a".into(), "b".into()],
            kind: HeadKind::Centroid,
            mean: vec![0.0; 2],
            std: vec![1.0; 2],
            w1: vec![2.0, 0.0, 0.0, 1.0],
            b1: vec![0.0; 2],
            w2: vec![],
            b2: vec![],
            unknown_threshold: 0.5,
        };
        assert!(Head::from_params(bad.clone()).is_err());
        let standardised = HeadParams {
            w1: vec![1.0, 0.0, 0.0, 1.0],
            std: vec![2.0; 2],
            ..bad
        };
        assert!(Head::from_params(standardised).is_err());
    }
}
