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
        for (i, l) in self.layers.iter().enumerate() {
            let (before, after) = acts.split_at_mut(i);
            let input: &[f32] = if i == 0 { x } else { &before[i - 1] };
            let out = &mut after[0];
            match &l.op {
                TailOp::Pointwise { w, b, .. } => {
                    ops::pointwise_forward(w, b, (l.c_out, l.c_in, l.p_in), input, out)
                }
                TailOp::Clip { lo, hi } => ops::clip_forward(*lo, *hi, input, out),
                TailOp::GlobalAveragePool => ops::gap_forward((l.c_in, l.p_in), input, out),
                TailOp::Flatten => out.copy_from_slice(input),
            }
        }
    }

    /// Fresh activation buffers for [`Net::forward`].
    pub fn buffers(&self) -> Vec<Vec<f32>> {
        self.layers.iter().map(|l| vec![0.0; l.out_len()]).collect()
    }

    /// Backward from `d_out` (the gradient at the embedding) into `grads` (per layer, `(dw,
    /// db)`, added to), with the activations of [`Net::forward`]. `weights` false: only
    /// biases get gradients (the weight GEMM is skipped).
    pub fn backward(
        &self,
        x: &[f32],
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
            let input: &[f32] = if i == 0 { x } else { &acts[i - 1] };
            next.clear();
            next.resize(l.in_len(), 0.0);
            match &l.op {
                TailOp::Pointwise { w, .. } => {
                    let (dw, db) = &mut grads[i];
                    let dx = (i > first).then_some(next.as_mut_slice());
                    ops::pointwise_backward(
                        w,
                        (l.c_out, l.c_in, l.p_in),
                        input,
                        cur,
                        weights.then_some(dw.as_mut_slice()),
                        db,
                        dx,
                    );
                }
                TailOp::Clip { lo, hi } => ops::clip_backward(*lo, *hi, input, cur, next),
                TailOp::GlobalAveragePool => ops::gap_backward((l.c_in, l.p_in), cur, next),
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
