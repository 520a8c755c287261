//! Classification metrics for evaluating a head on held-out data.
//!
//! The deploy policy compares heads by macro-F1, so the numbers here follow
//! scikit-learn's conventions exactly: an operator who cross-checks a head
//! in a notebook must see the same value the daemon acted on.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why metrics could not be computed from the given labels.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MetricsError {
    /// The two label vectors must pair up sample by sample.
    #[error(
        "metrics need one prediction per true label, got {y_true} true labels and {y_pred} predictions: pass both for the same samples"
    )]
    LengthMismatch {
        /// Number of true labels.
        y_true: usize,
        /// Number of predictions.
        y_pred: usize,
    },
    /// A label index does not name any class.
    #[error(
        "label index {index} at sample {sample} is out of range for {n_classes} classes: labels must index the class list"
    )]
    LabelOutOfRange {
        /// Sample position.
        sample: usize,
        /// Offending label index.
        index: usize,
        /// Number of classes.
        n_classes: usize,
    },
}

/// Per-class precision, recall and F1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class name.
    pub label: String,
    /// TP / (TP + FP); 0 when the class was never predicted.
    pub precision: f64,
    /// TP / (TP + FN); 0 when the class has no true samples.
    pub recall: f64,
    /// 2TP / (2TP + FP + FN); 0 when that denominator is 0.
    pub f1: f64,
    /// Number of true samples of this class.
    pub support: u32,
}

/// Accuracy, macro-F1, per-class scores and the confusion matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Fraction of samples predicted correctly (0 when `n == 0`).
    pub accuracy: f64,
    /// Unweighted mean of per-class F1 over the classes that occur in the
    /// true labels or in the predictions (see [`Metrics::compute`]).
    pub macro_f1: f64,
    /// One entry per class, in class order, including absent classes.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[t][p]` counts samples of true class `t` predicted as `p`.
    pub confusion: Vec<Vec<u32>>,
    /// Number of samples evaluated.
    pub n: usize,
}

impl Metrics {
    /// Computes metrics from label indices into `classes`.
    ///
    /// Macro-F1 convention (identical to scikit-learn's
    /// `f1_score(y_true, y_pred, average="macro", zero_division=0)` with the
    /// default `labels=None`): the average runs over the classes that occur
    /// in `y_true` or in `y_pred`. A class that is predicted but has no true
    /// samples contributes F1 = 0; a class with true samples that is never
    /// predicted contributes F1 = 0; a class absent from both is left out of
    /// the average (it still appears in `per_class` with zeros). With no
    /// samples at all, accuracy and macro-F1 are 0 (scikit-learn would raise),
    /// so an empty evaluation can never win a deploy comparison.
    pub fn compute(
        y_true: &[usize],
        y_pred: &[usize],
        classes: &[String],
    ) -> Result<Metrics, MetricsError> {
        if y_true.len() != y_pred.len() {
            return Err(MetricsError::LengthMismatch {
                y_true: y_true.len(),
                y_pred: y_pred.len(),
            });
        }
        let k = classes.len();
        let mut confusion = vec![vec![0u32; k]; k];
        for (sample, (&t, &p)) in y_true.iter().zip(y_pred).enumerate() {
            for index in [t, p] {
                if index >= k {
                    return Err(MetricsError::LabelOutOfRange {
                        sample,
                        index,
                        n_classes: k,
                    });
                }
            }
            if let Some(cell) = confusion.get_mut(t).and_then(|row| row.get_mut(p)) {
                *cell += 1;
            }
        }

        let n = y_true.len();
        let correct: u64 = (0..k).map(|c| u64::from(confusion[c][c])).sum();
        let accuracy = if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        };

        let mut per_class = Vec::with_capacity(k);
        let mut f1_sum = 0.0;
        let mut present = 0usize;
        for (c, label) in classes.iter().enumerate() {
            let tp = f64::from(confusion[c][c]);
            let support: u32 = confusion[c].iter().sum();
            let predicted: u32 = confusion.iter().map(|row| row[c]).sum();
            let fn_ = f64::from(support) - tp;
            let fp = f64::from(predicted) - tp;
            let ratio = |num: f64, den: f64| if den > 0.0 { num / den } else { 0.0 };
            let m = ClassMetrics {
                label: label.clone(),
                precision: ratio(tp, f64::from(predicted)),
                recall: ratio(tp, f64::from(support)),
                f1: ratio(2.0 * tp, 2.0 * tp + fp + fn_),
                support,
            };
            if support > 0 || predicted > 0 {
                f1_sum += m.f1;
                present += 1;
            }
            per_class.push(m);
        }
        let macro_f1 = if present == 0 {
            0.0
        } else {
            f1_sum / present as f64
        };
        Ok(Metrics {
            accuracy,
            macro_f1,
            per_class,
            confusion,
            n,
        })
    }

    /// Renders the scores and the confusion matrix as a fixed-width table
    /// for the CLI, so an operator can see at a glance which classes the
    /// head mixes up.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "samples: {}  accuracy: {:.4}  macro-F1: {:.4}",
            self.n, self.accuracy, self.macro_f1
        );
        if self.per_class.is_empty() {
            return out;
        }
        let name_w = self
            .per_class
            .iter()
            .map(|c| c.label.chars().count())
            .chain(std::iter::once("true \\ predicted".len()))
            .max()
            .unwrap_or(0)
            .min(24);
        let short = |s: &str| -> String {
            let n = s.chars().count();
            if n <= name_w {
                s.to_string()
            } else {
                let mut t: String = s.chars().take(name_w.saturating_sub(1)).collect();
                t.push('~');
                t
            }
        };

        let _ = writeln!(
            out,
            "\n{:<name_w$}  {:>9}  {:>9}  {:>9}  {:>7}",
            "class", "precision", "recall", "f1", "support"
        );
        for c in &self.per_class {
            let _ = writeln!(
                out,
                "{:<name_w$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>7}",
                short(&c.label),
                c.precision,
                c.recall,
                c.f1,
                c.support
            );
        }

        // Columns are numbered (the header would be unreadable with long
        // class names); the row labels carry the same numbers.
        let max_count = self.confusion.iter().flatten().copied().max().unwrap_or(0);
        let cell_w = max_count
            .to_string()
            .len()
            .max(self.per_class.len().to_string().len() + 1)
            .max(3);
        let _ = write!(out, "\n{:<w$}", "true \\ predicted", w = name_w + 5);
        for j in 0..self.confusion.len() {
            let _ = write!(out, " {:>cell_w$}", format!("#{j}"));
        }
        out.push('\n');
        for (i, row) in self.confusion.iter().enumerate() {
            let label = self
                .per_class
                .get(i)
                .map(|c| short(&c.label))
                .unwrap_or_default();
            let _ = write!(out, "{:>3}: {:<name_w$}", format!("#{i}"), label);
            for v in row {
                let _ = write!(out, " {v:>cell_w$}");
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hand_computed_three_classes() {
        // y_true: a a a b b c ; y_pred: a a b b c c
        let classes = names(&["a", "b", "c"]);
        let m = Metrics::compute(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2], &classes).unwrap();
        assert_eq!(m.n, 6);
        assert!(close(m.accuracy, 4.0 / 6.0));
        assert_eq!(
            m.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        // a: tp 2 fp 0 fn 1 -> p 1, r 2/3, f1 0.8
        assert!(close(m.per_class[0].precision, 1.0));
        assert!(close(m.per_class[0].recall, 2.0 / 3.0));
        assert!(close(m.per_class[0].f1, 0.8));
        // b: tp 1 fp 1 fn 1 -> 0.5 / 0.5 / 0.5
        assert!(close(m.per_class[1].f1, 0.5));
        // c: tp 1 fp 1 fn 0 -> p 0.5 r 1 f1 2/3
        assert!(close(m.per_class[2].precision, 0.5));
        assert!(close(m.per_class[2].recall, 1.0));
        assert!(close(m.per_class[2].f1, 2.0 / 3.0));
        assert!(close(m.macro_f1, (0.8 + 0.5 + 2.0 / 3.0) / 3.0));
        assert_eq!(m.per_class[0].support, 3);
    }

    #[test]
    fn absent_classes_follow_sklearn_convention() {
        // Classes: a b c d. y_true uses a, b; y_pred uses a, c; d is absent.
        // scikit-learn: f1_score([0, 0, 1, 1], [0, 0, 2, 2], average="macro",
        // zero_division=0) averages over {a, b, c}: (1 + 0 + 0) / 3.
        let classes = names(&["a", "b", "c", "d"]);
        let m = Metrics::compute(&[0, 0, 1, 1], &[0, 0, 2, 2], &classes).unwrap();
        // a: f1 1; b: never predicted -> 0; c: never true -> 0; d: excluded.
        assert!(close(m.per_class[0].f1, 1.0));
        assert!(close(m.per_class[1].f1, 0.0));
        assert!(close(m.per_class[2].f1, 0.0));
        assert!(close(m.per_class[2].precision, 0.0));
        assert!(close(m.per_class[3].f1, 0.0));
        assert!(close(m.macro_f1, 1.0 / 3.0));
        assert!(close(m.accuracy, 0.5));
    }

    #[test]
    fn perfect_and_empty() {
        let classes = names(&["x", "y"]);
        let m = Metrics::compute(&[0, 1, 1], &[0, 1, 1], &classes).unwrap();
        assert!(close(m.accuracy, 1.0));
        assert!(close(m.macro_f1, 1.0));
        let e = Metrics::compute(&[], &[], &classes).unwrap();
        assert_eq!(e.n, 0);
        assert!(close(e.accuracy, 0.0));
        assert!(close(e.macro_f1, 0.0));
    }

    #[test]
    fn bad_input_is_an_error() {
        let classes = names(&["x", "y"]);
        assert_eq!(
            Metrics::compute(&[0], &[0, 1], &classes),
            Err(MetricsError::LengthMismatch {
                y_true: 1,
                y_pred: 2
            })
        );
        assert!(matches!(
            Metrics::compute(&[0, 2], &[0, 1], &classes),
            Err(MetricsError::LabelOutOfRange {
                sample: 1,
                index: 2,
                ..
            })
        ));
    }

    #[test]
    fn renders_a_table() {
        let classes = names(&["cat", "a-very-long-class-name-indeed-yes"]);
        let m = Metrics::compute(&[0, 1, 1], &[0, 1, 0], &classes).unwrap();
        let text = m.render_text();
        assert!(text.contains("accuracy: 0.6667"), "{text}");
        assert!(text.contains("cat"));
        assert!(text.contains("true \\ predicted"));
        assert!(text.contains("#1"));
        // Long names are shortened, not allowed to break the layout.
        assert!(!text.contains("a-very-long-class-name-indeed-yes"));
        let json = serde_json::to_string(&m).unwrap();
        let back: Metrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
