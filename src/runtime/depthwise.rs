//! A depthwise-convolution kernel of ours, swapped into tract's graph.
//!
//! Why: tract 0.23 runs a depthwise convolution as a walk over "zones" of its patch (interior,
//! each border) with a small kernel per zone: AVX for stride 1 on x86_64, NEON on aarch64,
//! scalar for stride 2 and on 32-bit ARM. On MobileNetV2 that was measured at about 1.2 GMAC/s
//! on x86_64: more than half of tract's time for 7 % of the network's multiply-adds, and most
//! of the gap to onnxruntime (docs/PERFORMANCE.md). The kernel here treats a whole channel
//! plane as one contiguous loop (see `plane_with`): 2.5–10 GMAC/s on the same machine, which
//! makes MobileNetV2 1.6–1.8x and EfficientNet-Lite0 2.1–2.3x faster end to end; it also folds
//! the ReLU6 that follows every depthwise convolution in these networks into its stores
//! (tract runs it as a separate Max/Min pass over the tensor). Plain Rust the compiler vectorises, compiled once more with
//! AVX2 + FMA for the x86_64 CPUs that have them (chosen at run time).
//!
//! How: after tract's declutter pass (ONNX ops turned into tract's `Conv`, batch norm folded
//! into the weights) and before its codegen, every float NCHW (or batch-less CHW) convolution
//! with one group per channel, constant weights and no dilation becomes a [`Depthwise2d`] node
//! that holds the weights; `Max(x, lo)` / `Min(x, hi)` nodes with scalar constants right after
//! it (ONNX `Clip`, `Relu`) fold into it. Codegen then handles the rest of the graph as usual.
//! [`DepthwiseKernels`] (`[model].tract_depthwise`) chooses; the results agree with tract's
//! own kernel within float rounding (tests/pipeline.rs).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// The `[model].tract_depthwise` setting: whose depthwise convolution tract runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DepthwiseKernels {
    /// adaptd's kernel, except on aarch64 (tract's own there: see [`DepthwiseKernels::use_ours`]).
    #[default]
    Auto,
    /// Always adaptd's kernel.
    Adaptd,
    /// Always tract's own.
    Tract,
}

impl DepthwiseKernels {
    /// Whether the graph gets adaptd's kernel on this machine.
    ///
    /// `auto` takes ours where it was measured faster: x86_64 (MobileNetV2 1.6–1.8x faster end to
    /// end on one thread, docs/PERFORMANCE.md) and 32-bit ARM, where tract has no SIMD depthwise
    /// kernel at all. On aarch64 tract has a NEON one, and timings under emulation mean
    /// nothing, so tract's stays the default there until measured on a board
    /// (`adaptd bench --compare-depthwise`).
    pub fn use_ours(self) -> bool {
        match self {
            DepthwiseKernels::Auto => !cfg!(target_arch = "aarch64"),
            DepthwiseKernels::Adaptd => true,
            DepthwiseKernels::Tract => false,
        }
    }

    /// What this setting means on this machine: `adaptd` or `tract`, never `auto`.
    pub fn resolved(self) -> DepthwiseKernels {
        if self.use_ours() {
            DepthwiseKernels::Adaptd
        } else {
            DepthwiseKernels::Tract
        }
    }
}

impl std::fmt::Display for DepthwiseKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DepthwiseKernels::Auto => "auto",
            DepthwiseKernels::Adaptd => "adaptd",
            DepthwiseKernels::Tract => "tract",
        })
    }
}

/// The geometry of one depthwise convolution, batch and channels first (NCHW).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub channels: usize,
    pub in_hw: [usize; 2],
    pub out_hw: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Zero padding before each spatial axis (after-padding follows from the sizes).
    pub pad: [usize; 2],
}

impl Geometry {
    /// Output size along one axis, or `None` when the kernel does not fit.
    fn out_len(
        input: usize,
        kernel: usize,
        stride: usize,
        before: usize,
        after: usize,
    ) -> Option<usize> {
        let padded = input + before + after;
        (padded >= kernel && stride > 0).then(|| (padded - kernel) / stride + 1)
    }
}

/// A float depthwise convolution with its weights, optionally clamped (fused ReLU/ReLU6).
#[derive(Debug, Clone)]
pub struct Depthwise2d {
    geo: Geometry,
    /// `[channels][kh][kw]`.
    weights: Arc<[f32]>,
    /// One per channel.
    bias: Arc<[f32]>,
    /// Applied to every output: `lo.max(x).min(hi)`.
    clamp: (f32, f32),
}

impl PartialEq for Depthwise2d {
    /// Bit-wise on the floats, which is what "the same op" means for graph bookkeeping.
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &[f32], b: &[f32]| {
            a.iter()
                .map(|x| x.to_bits())
                .eq(b.iter().map(|x| x.to_bits()))
        };
        self.geo == other.geo
            && same(&self.weights, &other.weights)
            && same(&self.bias, &other.bias)
            && same(
                &[self.clamp.0, self.clamp.1],
                &[other.clamp.0, other.clamp.1],
            )
    }
}
impl Eq for Depthwise2d {}

impl Depthwise2d {
    /// The op for `geo`, or an error when the weights do not match it.
    pub fn new(geo: Geometry, weights: Vec<f32>, bias: Vec<f32>) -> TractResult<Depthwise2d> {
        let taps = geo.kernel[0] * geo.kernel[1];
        ensure!(
            weights.len() == geo.channels * taps && bias.len() == geo.channels,
            "depthwise weights {} / bias {} for {} channels of {taps} taps",
            weights.len(),
            bias.len(),
            geo.channels
        );
        ensure!(geo.stride[0] > 0 && geo.stride[1] > 0 && taps > 0);
        Ok(Depthwise2d {
            geo,
            weights: weights.into(),
            bias: bias.into(),
            clamp: (f32::NEG_INFINITY, f32::INFINITY),
        })
    }

    /// The same op with its output clamped to `[lo, hi]` as well.
    fn clamped(&self, lo: f32, hi: f32) -> Depthwise2d {
        Depthwise2d {
            clamp: (self.clamp.0.max(lo), self.clamp.1.min(hi)),
            ..self.clone()
        }
    }

    /// Computes the output planes `first, first + 1, ...` (plane `i` is channel `i % C` of
    /// batch item `i / C`) into `out`, a whole number of output planes; `input` is the whole
    /// `[N][C][H][W]` input.
    fn compute_planes(&self, input: &[f32], first: usize, out: &mut [f32]) {
        let g = &self.geo;
        let plane_in = g.in_hw[0] * g.in_hw[1];
        let plane_out = g.out_hw[0] * g.out_hw[1];
        let taps = g.kernel[0] * g.kernel[1];
        let mut scratch = Scratch::default();
        for (i, o) in out.chunks_exact_mut(plane_out).enumerate() {
            let ix = first + i;
            let c = ix % g.channels;
            let start = ix * plane_in;
            let ch = Channel {
                geo: g,
                input: &input[start..start + plane_in],
                weights: &self.weights[c * taps..(c + 1) * taps],
                bias: self.bias[c],
                clamp: self.clamp,
            };
            plane(&ch, o, &mut scratch);
        }
    }
}

/// How a multiply-add is computed: fused (one rounding, one instruction) where the CPU has it,
/// unfused elsewhere (`f32::mul_add` without hardware FMA is a libm call per element).
trait MulAdd {
    fn madd(acc: f32, w: f32, x: f32) -> f32;
}

#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
struct Fused;
impl MulAdd for Fused {
    #[inline(always)]
    fn madd(acc: f32, w: f32, x: f32) -> f32 {
        w.mul_add(x, acc)
    }
}

#[cfg_attr(all(target_arch = "aarch64", not(test)), allow(dead_code))]
struct Unfused;
impl MulAdd for Unfused {
    #[inline(always)]
    fn madd(acc: f32, w: f32, x: f32) -> f32 {
        acc + w * x
    }
}

/// Output points per block of the interior loop: 32 accumulators are four AVX or eight
/// SSE/NEON registers, enough independent chains to hide the adder's latency.
const LANES: usize = 32;

/// One channel's plane to compute: its input `[H][W]`, weights `[kh][kw]`, bias and clamp.
#[derive(Clone, Copy)]
struct Channel<'a> {
    geo: &'a Geometry,
    input: &'a [f32],
    weights: &'a [f32],
    bias: f32,
    clamp: (f32, f32),
}

/// Per-call buffers, reused from one plane to the next.
#[derive(Default)]
struct Scratch {
    /// The zero-padded phase planes of the input.
    phases: Vec<f32>,
    /// The output, `wq` columns per row.
    flat: Vec<f32>,
    /// (index in `phases` of the tap's input for output 0, weight), per tap.
    taps: Vec<(usize, f32)>,
}

/// One channel's plane, on the best kernel this CPU has.
fn plane(ch: &Channel<'_>, out: &mut [f32], scratch: &mut Scratch) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { plane_avx2_fma(ch, out, scratch) };
    }
    #[cfg(target_arch = "aarch64")]
    return plane_with::<Fused>(ch, out, scratch);
    #[cfg(not(target_arch = "aarch64"))]
    plane_with::<Unfused>(ch, out, scratch)
}

/// `plane_with` compiled for AVX2 and FMA (8-lane vectors, fused multiply-add), which the
/// baseline x86_64 target does not assume.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn plane_avx2_fma(ch: &Channel<'_>, out: &mut [f32], scratch: &mut Scratch) {
    plane_with::<Fused>(ch, out, scratch)
}

/// [`LANES`] consecutive outputs from output index `i` on: taps outer, outputs inner, the
/// accumulators in registers. A function, not a closure: closures do not inherit the caller's
/// `target_feature`s, and un-inlined `mul_add` without them is a libm call per element.
#[inline(always)]
fn block<M: MulAdd>(
    phases: &[f32],
    taps: &[(usize, f32)],
    bias: f32,
    clamp: (f32, f32),
    i: usize,
    dst: &mut [f32],
) {
    let mut acc = [bias; LANES];
    for &(at, wt) in taps {
        let x = &phases[at + i..at + i + LANES];
        for j in 0..LANES {
            acc[j] = M::madd(acc[j], wt, x[j]);
        }
    }
    for (o, a) in dst.iter_mut().zip(acc) {
        *o = a.max(clamp.0).min(clamp.1);
    }
}

/// One channel's plane into `out`, `[Ho][Wo]`.
///
/// The input is first copied, zero-padded, into `sh x sw` phase planes (phase `(ry, rx)` holds
/// the padded input's rows `ry, ry + sh, ...` and columns `rx, rx + sw, ...`), all `wq`
/// columns wide. In those, tap `(ky, kx)` of output point `(y, x)` is at flat index
/// `(y * wq + x) + (ky / sh) * wq + kx / sw` of phase `(ky % sh, kx % sw)`: a fixed offset from
/// the output's own flat index. So the whole plane is one contiguous loop, in blocks of
/// [`LANES`] outputs with the taps outer, whatever the stride and however narrow the rows
/// (7x7 and 14x14 planes are most of a MobileNet's channels). The `wq - Wo` extra columns
/// per row are computed and dropped.
#[inline(always)]
fn plane_with<M: MulAdd>(ch: &Channel<'_>, out: &mut [f32], scratch: &mut Scratch) {
    let Channel {
        geo: g,
        input,
        weights,
        bias,
        clamp,
    } = *ch;
    let [h, w] = g.in_hw;
    let [ho, wo] = g.out_hw;
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [pt, pl] = g.pad;
    let wq = wo + (kw - 1) / sw;
    let hq = ho + (kh - 1) / sh;
    // Reads run up to (kw - 1) / sw past the last phase row.
    let phase_len = hq * wq + kw;
    let Scratch { phases, flat, taps } = scratch;
    phases.clear();
    phases.resize(sh * sw * phase_len, 0.0);
    for ry in 0..sh {
        for rx in 0..sw {
            let phase = &mut phases[(ry * sw + rx) * phase_len..][..phase_len];
            // Phase columns b whose input column b * sw + rx - pl is inside the row.
            let b0 = pl.saturating_sub(rx).div_ceil(sw);
            let b1 = (w + pl).saturating_sub(rx).div_ceil(sw).min(wq);
            if b0 >= b1 {
                continue;
            }
            for a in 0..hq {
                let Some(iy) = (a * sh + ry).checked_sub(pt).filter(|&iy| iy < h) else {
                    continue;
                };
                let row = &input[iy * w..(iy + 1) * w];
                let dst = &mut phase[a * wq + b0..a * wq + b1];
                let first = b0 * sw + rx - pl;
                if sw == 1 {
                    dst.copy_from_slice(&row[first..first + dst.len()]);
                } else {
                    // Whole chunks of `sw` columns, the first of each taken: a loop the
                    // compiler turns into vector shuffles (an element-wise strided gather was
                    // most of the stride-2 layers' time), then the last, partial chunk.
                    let src = &row[first..];
                    let whole = (src.len() / sw).min(dst.len());
                    for (d, chunk) in dst[..whole].iter_mut().zip(src.chunks_exact(sw)) {
                        *d = chunk[0];
                    }
                    for (j, d) in dst.iter_mut().enumerate().skip(whole) {
                        *d = src[j * sw];
                    }
                }
            }
        }
    }
    taps.clear();
    for ky in 0..kh {
        for kx in 0..kw {
            let phase = (ky % sh) * sw + kx % sw;
            let at = phase * phase_len + (ky / sh) * wq + kx / sw;
            taps.push((at, weights[ky * kw + kx]));
        }
    }
    let n = ho * wq;
    flat.clear();
    flat.resize(n, 0.0);
    if n >= LANES {
        let mut i = 0;
        while i + LANES <= n {
            block::<M>(phases, taps, bias, clamp, i, &mut flat[i..i + LANES]);
            i += LANES;
        }
        // The tail as one more block that overlaps the last: every output is computed from
        // scratch, so computing some twice changes nothing.
        if i < n {
            block::<M>(phases, taps, bias, clamp, n - LANES, &mut flat[n - LANES..]);
        }
    } else {
        for (i, o) in flat.iter_mut().enumerate() {
            let mut acc = bias;
            for &(at, wt) in taps.iter() {
                acc = M::madd(acc, wt, phases[at + i]);
            }
            *o = acc.max(clamp.0).min(clamp.1);
        }
    }
    for (dst, src) in out.chunks_exact_mut(wo).zip(flat.chunks_exact(wq)) {
        dst.copy_from_slice(&src[..wo]);
    }
}

impl Op for Depthwise2d {
    fn name(&self) -> StaticName {
        "AdaptdDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        Ok(vec![format!(
            "{}x{} stride {:?} pad {:?} on {:?}x{}, clamp {:?}",
            g.kernel[0], g.kernel[1], g.stride, g.pad, g.in_hw, g.channels, self.clamp
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise2d {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let g = &self.geo;
        let shape = input.shape();
        let (n, chw) = match shape {
            [n, chw @ ..] if shape.len() == 4 => (*n, chw),
            chw => (1, chw),
        };
        ensure!(
            chw.len() == 3 && chw[0] == g.channels && chw[1..] == g.in_hw,
            "depthwise input {shape:?}, expected [N,] {}, {}, {}",
            g.channels,
            g.in_hw[0],
            g.in_hw[1]
        );
        let batch_axis = shape.len() == 4;
        let item_out = g.channels * g.out_hw[0] * g.out_hw[1];
        let plain = input.try_as_plain_ram()?;
        let data = plain.as_slice::<f32>()?;
        let mut output = vec![0f32; n * item_out];
        let plane_out = g.out_hw[0] * g.out_hw[1];
        // Planes are independent: split them over tract's intra-op pool when it has one
        // (inline on one thread, and for small tensors).
        let total = output.len();
        tract_linalg::multithread::par_chunks_mut(&mut output, plane_out, total, |first, out| {
            self.compute_planes(data, first, out);
            Ok(())
        })?;
        let chw_out = [g.channels, g.out_hw[0], g.out_hw[1]];
        let out_shape: TVec<usize> = batch_axis.then_some(n).into_iter().chain(chw_out).collect();
        let output = tract_ndarray::ArrayD::from_shape_vec(out_shape.as_slice(), output)?;
        Ok(tvec!(output.into_tensor().into_tvalue()))
    }
}

impl TypedOp for Depthwise2d {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let g = &self.geo;
        let input = &inputs[0].shape;
        let batch = (input.rank() == 4).then(|| input[0].clone());
        let chw = [g.channels, g.out_hw[0], g.out_hw[1]].map(|d| d.to_dim());
        Ok(tvec!(f32::fact(
            batch.into_iter().chain(chw).collect::<TVec<_>>()
        )))
    }
}

/// What [`swap_depthwise`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swapped {
    pub convolutions: usize,
    pub fused_clamps: usize,
}

/// Replaces tract's depthwise convolutions in a decluttered `model` by [`Depthwise2d`] nodes,
/// with the clamps that follow them fused. Convolutions it cannot take stay tract's.
pub fn swap_depthwise(model: &mut TypedModel) -> TractResult<Swapped> {
    let mut done = Swapped::default();
    for id in model.eval_order()? {
        let Some(op) = as_depthwise(model, id)? else {
            continue;
        };
        let node = &model.nodes()[id];
        let (op, last, fused) = fuse_clamps(model, OutletId::new(id, 0), op)?;
        let mut patch = TypedModelPatch::new(format!("adaptd-depthwise {}", node.name));
        let x = patch.tap_model(model, node.inputs[0])?;
        let y = patch.wire_node(&node.name, op, &[x])?[0];
        patch.shunt_outside(model, last, y)?;
        patch.apply(model)?;
        done.convolutions += 1;
        done.fused_clamps += fused;
    }
    Ok(done)
}

/// The replacement for node `id`, if it is a convolution this kernel takes.
fn as_depthwise(model: &TypedModel, id: usize) -> TractResult<Option<Depthwise2d>> {
    let node = &model.nodes()[id];
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let spec = &conv.pool_spec;
    if conv.q_params.is_some()
        || node.inputs.len() != 3
        || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.kernel_shape.len() != 2
        || conv.group < 2
        || conv.group != spec.input_channels
        || conv.group != spec.output_channels
        || spec.dilations().iter().any(|d| *d != 1)
    {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let (kernel, bias) = (
        model.outlet_fact(node.inputs[1])?,
        model.outlet_fact(node.inputs[2])?,
    );
    let (Some(shape), Some(kernel), Some(bias)) =
        (x.shape.as_concrete(), &kernel.konst, &bias.konst)
    else {
        return Ok(None);
    };
    if x.datum_type != f32::datum_type()
        || kernel.datum_type() != f32::datum_type()
        || bias.datum_type() != f32::datum_type()
        || shape.len() != spec.data_format.shape(shape)?.rank()
    {
        return Ok(None);
    }
    let channels = spec.input_channels;
    // NCHW, or CHW once tract's declutter has disposed of a batch axis of 1.
    let (batch, in_hw) = match *shape {
        [n, c, h, w] if c == channels => (Some(n), [h, w]),
        [c, h, w] if c == channels => (None, [h, w]),
        _ => return Ok(None),
    };
    let k = [spec.kernel_shape[0], spec.kernel_shape[1]];
    let stride = [spec.stride(0), spec.stride(1)];
    let computed = spec.computed_padding(&in_hw);
    let pads: Vec<(usize, usize)> = match &spec.padding {
        PaddingSpec::Valid
        | PaddingSpec::Explicit(..)
        | PaddingSpec::ExplicitOnnxPool(_, _, false)
        | PaddingSpec::SameUpper
        | PaddingSpec::SameLower => computed
            .iter()
            .map(|d| (d.pad_before, d.pad_after))
            .collect(),
        PaddingSpec::ExplicitOnnxPool(_, _, true) => return Ok(None),
    };
    let mut out_hw = [0; 2];
    for axis in 0..2 {
        let Some(len) = Geometry::out_len(
            in_hw[axis],
            k[axis],
            stride[axis],
            pads[axis].0,
            pads[axis].1,
        ) else {
            return Ok(None);
        };
        out_hw[axis] = len;
    }
    // The node's own output fact is the truth: any disagreement means a case not handled here.
    let expected: Vec<usize> = batch
        .into_iter()
        .chain([channels, out_hw[0], out_hw[1]])
        .collect();
    if node.outputs[0].fact.shape.as_concrete() != Some(&expected[..]) {
        return Ok(None);
    }
    if kernel.shape() != [channels, 1, k[0], k[1]] {
        return Ok(None);
    }
    let weights = kernel.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let bias_plain = bias.try_as_plain_ram()?;
    let bias_values = bias_plain.as_slice::<f32>()?;
    let bias = match bias.len() {
        1 => vec![bias_values[0]; channels],
        n if n == channels => bias_values.to_vec(),
        _ => return Ok(None),
    };
    let geo = Geometry {
        channels,
        in_hw,
        out_hw,
        kernel: k,
        stride,
        pad: [pads[0].0, pads[1].0],
    };
    Depthwise2d::new(geo, weights, bias).map(Some)
}

/// Folds `Max(x, lo)` / `Min(x, hi)` nodes with scalar constants that follow `outlet` alone.
/// Returns the op, the last outlet it now stands for, and how many were folded.
fn fuse_clamps(
    model: &TypedModel,
    mut outlet: OutletId,
    mut op: Depthwise2d,
) -> TractResult<(Depthwise2d, OutletId, usize)> {
    let mut fused = 0;
    loop {
        if model.output_outlets()?.contains(&outlet) {
            break;
        }
        let succ = model.outlet_successors(outlet);
        let [inlet] = succ else { break };
        let next = &model.nodes()[inlet.node];
        let Some(bin) = next.op_as::<TypedBinOp>() else {
            break;
        };
        if next.inputs.len() != 2 || next.outputs.len() != 1 || inlet.slot > 1 {
            break;
        }
        let other = next.inputs[1 - inlet.slot];
        let Some(bound) = model
            .outlet_fact(other)?
            .konst
            .as_ref()
            .filter(|t| t.len() == 1 && t.datum_type() == f32::datum_type())
            .and_then(|t| {
                t.try_as_plain_ram()
                    .ok()?
                    .as_slice::<f32>()
                    .ok()?
                    .first()
                    .copied()
            })
        else {
            break;
        };
        op = match bin.0.name() {
            "Max" => op.clamped(bound, f32::INFINITY),
            "Min" => op.clamped(f32::NEG_INFINITY, bound),
            _ => break,
        };
        // The clamp must not change the shape (a broadcast constant of rank > 4 would).
        if next.outputs[0].fact.shape != model.outlet_fact(outlet)?.shape {
            break;
        }
        outlet = OutletId::new(next.id, 0);
        fused += 1;
    }
    Ok((op, outlet, fused))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, written for clarity: every output sums its taps with bounds checks.
    fn reference(op: &Depthwise2d, input: &[f32]) -> Vec<f32> {
        let g = &op.geo;
        let [h, w] = g.in_hw;
        let [ho, wo] = g.out_hw;
        let mut out = Vec::new();
        for c in 0..g.channels {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = op.bias[c];
                    for ky in 0..g.kernel[0] {
                        for kx in 0..g.kernel[1] {
                            let iy = (oy * g.stride[0] + ky) as isize - g.pad[0] as isize;
                            let ix = (ox * g.stride[1] + kx) as isize - g.pad[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let wt = op.weights[(c * g.kernel[0] + ky) * g.kernel[1] + kx];
                            acc += wt * input[(c * h + iy as usize) * w + ix as usize];
                        }
                    }
                    out.push(acc.max(op.clamp.0).min(op.clamp.1));
                }
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_the_definition_on_every_geometry_in_the_models() {
        // 3x3 and 5x5, stride 1 and 2, symmetric and asymmetric padding, odd and even sizes,
        // planes narrower than the kernel, rectangular kernels.
        let cases = [
            (3, [7, 9], [3, 3], [1, 1], [1, 1], [1, 1]),
            (2, [8, 8], [3, 3], [2, 2], [1, 1], [1, 1]),
            (2, [9, 7], [3, 3], [2, 2], [1, 1], [0, 0]),
            (4, [10, 10], [5, 5], [1, 1], [2, 2], [2, 2]),
            (3, [11, 12], [5, 5], [2, 2], [2, 2], [1, 2]),
            (2, [2, 3], [3, 3], [1, 1], [1, 1], [1, 1]),
            (1, [6, 13], [1, 3], [1, 3], [0, 1], [0, 1]),
            (2, [4, 4], [3, 3], [2, 2], [0, 0], [1, 1]),
            // rows wider than one block of LANES columns, with a remainder
            (2, [5, 75], [3, 3], [1, 1], [1, 1], [1, 1]),
            (2, [6, 150], [5, 5], [2, 2], [2, 2], [2, 2]),
        ];
        for (i, (channels, in_hw, kernel, stride, before, after)) in cases.into_iter().enumerate() {
            let mut out_hw = [0; 2];
            for a in 0..2 {
                out_hw[a] =
                    Geometry::out_len(in_hw[a], kernel[a], stride[a], before[a], after[a]).unwrap();
            }
            let geo = Geometry {
                channels,
                in_hw,
                out_hw,
                kernel,
                stride,
                pad: before,
            };
            let taps = kernel[0] * kernel[1];
            let op = Depthwise2d::new(
                geo,
                pseudo_random(channels * taps, i as u32 + 1),
                pseudo_random(channels, i as u32 + 100),
            )
            .unwrap();
            let input = pseudo_random(channels * in_hw[0] * in_hw[1], i as u32 + 7);
            for op in [op.clone(), op.clamped(0.0, 0.5)] {
                let want = reference(&op, &input);
                let check = |got: &[f32], path: &str| {
                    for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                        let close = (g - w).abs() < 1e-5 * (1.0 + w.abs());
                        assert!(close, "{path}, case {i} element {j}: {g} vs {w}");
                    }
                };
                // The dispatched kernel (AVX2+FMA or NEON here, if the CPU has them)...
                let mut got = vec![f32::NAN; want.len()];
                op.compute_planes(&input, 0, &mut got);
                check(&got, "best kernel");
                // ...and the portable one every other CPU runs.
                let (plane_in, plane_out) = (in_hw[0] * in_hw[1], out_hw[0] * out_hw[1]);
                let mut scratch = Scratch::default();
                for c in 0..channels {
                    let ch = Channel {
                        geo: &op.geo,
                        input: &input[c * plane_in..(c + 1) * plane_in],
                        weights: &op.weights[c * taps..(c + 1) * taps],
                        bias: op.bias[c],
                        clamp: op.clamp,
                    };
                    plane_with::<Unfused>(
                        &ch,
                        &mut got[c * plane_out..(c + 1) * plane_out],
                        &mut scratch,
                    );
                }
                check(&got, "portable kernel");
            }
        }
    }

    #[test]
    fn weights_that_do_not_fit_the_geometry_are_an_error() {
        let geo = Geometry {
            channels: 2,
            in_hw: [4, 4],
            out_hw: [4, 4],
            kernel: [3, 3],
            stride: [1, 1],
            pad: [1, 1],
        };
        assert!(Depthwise2d::new(geo, vec![0.0; 17], vec![0.0; 2]).is_err());
        assert!(Depthwise2d::new(geo, vec![0.0; 18], vec![0.0; 1]).is_err());
    }

    #[test]
    fn auto_uses_ours_except_on_aarch64() {
        assert_eq!(
            DepthwiseKernels::Auto.use_ours(),
            !cfg!(target_arch = "aarch64")
        );
        assert!(DepthwiseKernels::Adaptd.use_ours());
        assert!(!DepthwiseKernels::Tract.use_ours());
    }
}
