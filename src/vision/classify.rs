//! Class probabilities and top-k from a classifier's logits.

use serde::Serialize;

/// One ranked class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    pub index: usize,
    pub label: String,
    pub score: f32,
}

/// Numerically stable softmax in place (subtracts the maximum first).
pub fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 && sum.is_finite() {
        x.iter_mut().for_each(|v| *v /= sum);
    }
}

/// The `k` highest scores, best first; labels past the end of `labels` are named by index.
/// NaN scores sort last so a broken model cannot hide real classes.
pub fn top_k(scores: &[f32], labels: &[String], k: usize) -> Vec<Ranked> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let key = |i: usize| {
        if scores[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            scores[i]
        }
    };
    let k = k.min(order.len());
    if k == 0 {
        return Vec::new();
    }
    order.select_nth_unstable_by(k - 1, |&a, &b| key(b).total_cmp(&key(a)));
    order.truncate(k);
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    order
        .into_iter()
        .map(|i| Ranked {
            index: i,
            label: labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("class_{i}")),
            score: scores[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let mut x = vec![1000.0, 1001.0, 999.0];
        softmax_in_place(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[1] > x[0] && x[0] > x[2]);
    }

    #[test]
    fn top_k_orders_and_names() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let r = top_k(&[0.1, f32::NAN, 0.7, 0.2], &labels, 3);
        let got: Vec<_> = r.iter().map(|r| (r.index, r.label.as_str())).collect();
        assert_eq!(got, vec![(2, "c"), (3, "class_3"), (0, "a")]);
        assert!(top_k(&[], &labels, 5).is_empty());
    }
}
