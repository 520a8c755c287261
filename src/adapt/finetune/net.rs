//! The tail as a network: its ops with their shapes checked once, the forward pass (for
//! training, keeping every activation; for inference, only the embedding) and the backward
//! pass into parameter gradients.

use crate::model::tail::{Tail, TailOp};

use super::ops;
use super::FinetuneError;

/// One op with its input shape `[channels, positions]`.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub op: TailOp,
    pub c_in: usize,
    pub p_in: usize,
    pub c_out: usize,
    pub p_out: usize,
}

impl Layer {
    pub fn in_len(&self) -> usize {
        self.c_in * self.p_in
    }
    pub fn out_len(&self) -> usize {
        self.c_out * self.p_out
    }
}

/// Positions a layer works on when the cut has `p` of its positions: the pool's output and
/// everything after it has one.
fn positions(l: &Layer, p: usize) -> usize {
    if l.p_in == 1 {
        1
    } else {
        p.min(l.p_in)
    }
}

/// A tail ready to run on `[channels, positions]` cut activations.
#[derive(Debug, Clone)]
pub(crate) struct Net {
    pub layers: Vec<Layer>,
    /// The embedding's length (the last layer's output).
    pub dim: usize,
}

impl Net {
    /// Checks `tail` against the cut's shape and the embedding dimension.
    pub fn new(tail: &Tail, (c, p): (usize, usize), dim: usize) -> Result<Net, FinetuneError> {
        let mut layers = Vec::with_capacity(tail.ops.len());
        let (mut c_cur, mut p_cur) = (c, p);
        for op in &tail.ops {
            let (c_out, p_out) = match op {
                TailOp::Pointwise {
                    in_channels,
                    out_channels,
                    ..
                } => {
                    if *in_channels != c_cur {
                        return Err(FinetuneError::Shape(format!(
                            "a pointwise convolution takes {in_channels} channels, the tensor \
                             before it has {c_cur}"
                        )));
                    }
                    (*out_channels, p_cur)
                }
                TailOp::Clip { .. } | TailOp::Flatten => (c_cur, p_cur),
                TailOp::GlobalAveragePool => (c_cur, 1),
            };
            layers.push(Layer {
                op: op.clone(),
                c_in: c_cur,
                p_in: p_cur,
                c_out,
                p_out,
            });
            (c_cur, p_cur) = (c_out, p_out);
        }
        if c_cur * p_cur != dim || p_cur != 1 {
            return Err(FinetuneError::Shape(format!(
                "the tail ends in [{c_cur} x {p_cur}] values, the embedding has {dim}"
            )));
        }
        Ok(Net { layers, dim })
    }

    /// The input length of one sample.
    pub fn in_len(&self) -> usize {
        self.layers.first().map_or(self.dim, Layer::in_len)
    }

    /// The tail's ops with this network's weights.
    pub fn to_tail(&self, template: &Tail) -> Tail {
        Tail {
            cut: template.cut.clone(),
            embedding: template.embedding.clone(),
            ops: self.layers.iter().map(|l| l.op.clone()).collect(),
        }
    }

    /// Runs one sample, writing every layer's output into `acts[i]` (sized `out_len`).
    pub fn forward(&self, x: &[f32], acts: &mut [Vec<f32>]) {
        let p = self.layers.first().map_or(1, |l| l.p_in);
        self.forward_at(x, p, acts);
    }

    /// [`Net::forward`] on `p` positions (at most the cut's): a crop of the cut's feature
    /// map, for augmentation. Every op before the pool is per position, so only the counts
    /// change.
    pub fn forward_at(&self, x: &[f32], p: usize, acts: &mut [Vec<f32>]) {
        for (i, l) in self.layers.iter().enumerate() {
            let (before, after) = acts.split_at_mut(i);
            let q = positions(l, p);
            let input: &[f32] = if i == 0 {
                x
            } else {
                &before[i - 1][..l.c_in * q]
            };
            let out = &mut after[0][..l.c_out * if l.p_out == 1 { 1 } else { q }];
            match &l.op {
                TailOp::Pointwise { w, b, .. } => {
                    ops::pointwise_forward(w, b, (l.c_out, l.c_in, q), input, out)
                }
                TailOp::Clip { lo, hi } => ops::clip_forward(*lo, *hi, &input[..out.len()], out),
                TailOp::GlobalAveragePool => ops::gap_forward((l.c_in, q), input, out),
                TailOp::Flatten => out.copy_from_slice(&input[..out.len()]),
            }
        }
    }

    /// Fresh activation buffers for [`Net::forward`].
    pub fn buffers(&self) -> Vec<Vec<f32>> {
        self.layers.iter().map(|l| vec![0.0; l.out_len()]).collect()
    }

    /// Backward from `d_out` (the gradient at the embedding) into `grads` (per layer, `(dw,
    /// db)`, added to), with the activations of [`Net::forward_at`] on `p` positions. `weights` false: only
    /// biases get gradients (the weight GEMM is skipped).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        x: &[f32],
        p: usize,
        acts: &[Vec<f32>],
        d_out: &[f32],
        grads: &mut [(Vec<f32>, Vec<f32>)],
        weights: bool,
        scratch: &mut [Vec<f32>; 2],
    ) {
        // Nothing before the first trainable layer needs a gradient.
        let first = self
            .layers
            .iter()
            .position(|l| matches!(l.op, TailOp::Pointwise { .. }))
            .unwrap_or(self.layers.len());
        let [cur, next] = scratch;
        cur.clear();
        cur.extend_from_slice(d_out);
        for i in (first..self.layers.len()).rev() {
            let l = &self.layers[i];
            let q = positions(l, p);
            let input: &[f32] = if i == 0 {
                x
            } else {
                &acts[i - 1][..l.c_in * q]
            };
            next.clear();
            next.resize(l.c_in * q, 0.0);
            match &l.op {
                TailOp::Pointwise { w, .. } => {
                    let (dw, db) = &mut grads[i];
                    let dx = (i > first).then_some(next.as_mut_slice());
                    ops::pointwise_backward(
                        w,
                        (l.c_out, l.c_in, q),
                        input,
                        cur,
                        weights.then_some(dw.as_mut_slice()),
                        db,
                        dx,
                    );
                }
                TailOp::Clip { lo, hi } => ops::clip_backward(*lo, *hi, input, cur, next),
                TailOp::GlobalAveragePool => ops::gap_backward((l.c_in, q), cur, next),
                TailOp::Flatten => next.copy_from_slice(cur),
            }
            std::mem::swap(cur, next);
        }
    }

    /// Zeroed gradient buffers, one `(dw, db)` per layer (empty for layers without
    /// parameters).
    pub fn zero_grads(&self) -> Vec<(Vec<f32>, Vec<f32>)> {
        self.layers
            .iter()
            .map(|l| match &l.op {
                TailOp::Pointwise { w, b, .. } => (vec![0.0; w.len()], vec![0.0; b.len()]),
                _ => (Vec::new(), Vec::new()),
            })
            .collect()
    }

    /// Parameters in the tail (weights and biases).
    pub fn param_count(&self) -> (usize, usize) {
        self.layers.iter().fold((0, 0), |(nw, nb), l| match &l.op {
            TailOp::Pointwise { w, b, .. } => (nw + w.len(), nb + b.len()),
            _ => (nw, nb),
        })
    }

    /// The embeddings of `n` samples (`x` holds `n * in_len` values).
    pub fn embed(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut acts = self.buffers();
        let mut out = Vec::with_capacity(n * self.dim);
        for s in x.chunks_exact(self.in_len()).take(n) {
            self.forward(s, &mut acts);
            if let Some(e) = acts.last() {
                out.extend_from_slice(e);
            } else {
                out.extend_from_slice(s);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn tail(w: Vec<f32>, b: Vec<f32>) -> Tail {
        Tail {
            cut: "cut".into(),
            embedding: "e".into(),
            ops: vec![
                TailOp::Pointwise {
                    weight: "w".into(),
                    bias: Some("b".into()),
                    out_channels: 4,
                    in_channels: 3,
                    w,
                    b,
                },
                TailOp::Clip { lo: 0.0, hi: 6.0 },
                TailOp::GlobalAveragePool,
                TailOp::Flatten,
            ],
        }
    }

    /// The whole tail's weight and bias gradients, on a crop of 2 of its 4 positions,
    /// against finite differences of `sum(embedding * g)`.
    #[test]
    fn the_nets_gradients_on_a_crop_match_finite_differences() {
        let mut r = SplitMix64::new(9);
        let mut rnd = |n: usize, s: f32| -> Vec<f32> {
            (0..n).map(|_| (r.next_f32() * 2.0 - 1.0) * s).collect()
        };
        let (w, b, x, g) = (
            rnd(12, 1.0),
            rnd(4, 0.5).iter().map(|v| v + 1.0).collect::<Vec<_>>(),
            rnd(6, 2.0),
            rnd(4, 1.0),
        );
        let loss = |w: &[f32], b: &[f32]| -> f64 {
            let net = Net::new(&tail(w.to_vec(), b.to_vec()), (3, 4), 4).expect("net");
            let mut acts = net.buffers();
            net.forward_at(&x, 2, &mut acts);
            acts[3].iter().zip(&g).map(|(a, b)| f64::from(a * b)).sum()
        };
        let net = Net::new(&tail(w.clone(), b.clone()), (3, 4), 4).expect("net");
        let mut acts = net.buffers();
        net.forward_at(&x, 2, &mut acts);
        let mut grads = net.zero_grads();
        let mut scratch = [Vec::new(), Vec::new()];
        net.backward(&x, 2, &acts, &g, &mut grads, true, &mut scratch);
        // Central differences of one parameter tensor, `at`, against its analytic gradient.
        let check = |name: &str, at: &[f32], analytic: &[f32], f: &dyn Fn(&[f32]) -> f64| {
            let h = 1e-3f32;
            for (k, a) in analytic.iter().enumerate() {
                let (mut p, mut m) = (at.to_vec(), at.to_vec());
                p[k] += h;
                m[k] -= h;
                let numeric = (f(&p) - f(&m)) / (2.0 * f64::from(h));
                assert!(
                    (numeric - f64::from(*a)).abs() < 1e-3,
                    "{name}[{k}]: {numeric} vs {a}"
                );
            }
        };
        check("dw", &w, &grads[0].0, &|p| loss(p, &b));
        check("db", &b, &grads[0].1, &|p| loss(&w, p));
        // A tail that does not end in the embedding's length is refused.
        assert!(Net::new(&tail(w, b), (3, 4), 5).is_err());
    }
}
