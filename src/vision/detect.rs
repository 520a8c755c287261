//! Decoding of one-stage object detector outputs (NanoDet, YOLOv5, YOLOv8) and
//! class-aware non-maximum suppression.
//!
//! Everything here is a pure function over row-major `&[f32]` slices as tract hands
//! them out. All coordinates are pixels of the network's *input* tensor (e.g. 416x416);
//! letterbox/resize undoing happens elsewhere.
//!
//! Design constraints, because this runs on every camera frame on a Raspberry Pi:
//! * the only allocation is the returned `Vec` (NMS even works in place);
//! * hot loops walk the tensors with `chunks_exact`/zipped iterators, so there is no
//!   per-element bounds check and no per-cell allocation;
//! * cheap rejections (score threshold, objectness) come before anything costly;
//! * malformed input never panics: shapes are validated up front (with overflow-checked
//!   arithmetic) and reported as [`DecodeError`]; NaN scores count as "below threshold"
//!   and candidates with non-finite coordinates are dropped, so a broken model yields
//!   fewer detections instead of poisoning NMS or the downstream coordinate mapping.
//!
//! Thresholds are inclusive everywhere: a candidate is kept when `score >= threshold`.

use thiserror::Error;

/// Axis-aligned box in input-tensor pixels, corners `(x1, y1)` top-left and `(x2, y2)`
/// bottom-right.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    /// Area; inverted boxes (x2 < x1 or y2 < y1) count as empty rather than negative, so a
    /// malformed box can never produce a negative union in [`BBox::iou`].
    #[inline]
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    /// Intersection over union. Returns 0 when the union is empty (two zero-area boxes),
    /// because "no overlap" is the only answer that cannot cause a suppression by accident.
    #[inline]
    pub fn iou(&self, other: &BBox) -> f32 {
        let iw = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let ih = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    /// True when every coordinate is finite. Used to drop candidates a broken model
    /// produced (NaN/inf coordinates would make IoU NaN, which never suppresses anything).
    #[inline]
    pub fn is_finite(&self) -> bool {
        self.x1.is_finite() && self.y1.is_finite() && self.x2.is_finite() && self.y2.is_finite()
    }
}

/// One detected object.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Class index into the model's label list.
    pub class: usize,
    /// Confidence in `[0, 1]` (for YOLOv5: objectness * class probability).
    pub score: f32,
    pub bbox: BBox,
}

/// Why a decoder rejected its input. Only returned for malformed tensors or parameters:
/// these are integration bugs (wrong model for the config, wrong output picked), so the
/// message names the tensor and says what was expected and what was got.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The slice length does not match the shape implied by the parameters.
    #[error("{tensor}: expected shape {expected_shape:?} ({expected_len} f32 values), got {got} f32 values")]
    ShapeMismatch {
        tensor: String,
        expected_shape: Vec<usize>,
        expected_len: usize,
        got: usize,
    },
    /// The shape implied by the parameters does not even fit in `usize`.
    #[error("{tensor}: shape {shape:?} overflows usize")]
    ShapeOverflow { tensor: String, shape: Vec<usize> },
    /// A parameter makes decoding meaningless (e.g. zero classes, zero stride, NaN threshold).
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
}

/// One NanoDet output level. `scores` is [cells, num_classes] (already sigmoid probabilities),
/// `boxes` is [cells, 4 * (reg_max + 1)]: for each of the sides left, top, right, bottom,
/// reg_max+1 logits of a distribution over distances 0..=reg_max (in units of the stride).
pub struct NanoDetLevel<'a> {
    pub stride: u32,
    pub scores: &'a [f32],
    pub boxes: &'a [f32],
}

/// Parameters shared by all NanoDet levels.
///
/// `center_offset` is where inside its cell a level's anchor point lies, in cells:
/// NanoDet-Plus uses `0.0` (point at the cell's top-left corner, `col * stride`), the
/// original NanoDet uses `0.5` (cell centre). Getting it wrong shifts every box by half a
/// stride, so it is explicit rather than guessed.
#[derive(Debug, Clone, PartialEq)]
pub struct NanoDetParams {
    pub num_classes: usize,
    pub reg_max: usize,
    pub input_w: u32,
    pub input_h: u32,
    pub center_offset: f32,
    pub score_threshold: f32,
}

/// Decode NanoDet / NanoDet-Plus outputs given as separate per-level score and box tensors.
///
/// Cells are row-major over a grid of `ceil(input_w / stride)` columns by
/// `ceil(input_h / stride)` rows (ceil, like the exporter, so inputs that are not a
/// multiple of the stride still line up). Output order is level order, then cell order,
/// which keeps NMS tie-breaking deterministic.
///
/// Each level's tensors are validated before any decoding, so an error never comes with
/// partial results.
pub fn decode_nanodet(
    levels: &[NanoDetLevel<'_>],
    p: &NanoDetParams,
) -> Result<Vec<Detection>, DecodeError> {
    let bins = validate_nanodet_params(p)?;
    let box_row = 4 * bins; // cannot overflow: checked in validate_nanodet_params
    let mut grids = Vec::with_capacity(levels.len());
    for (i, level) in levels.iter().enumerate() {
        let g = LevelGrid::new(level.stride, p, || format!("nanodet level {i}"))?;
        check_len(
            || {
                format!(
                    "nanodet level {i} scores (stride {}, grid {}x{})",
                    g.stride, g.cols, g.rows
                )
            },
            &[g.cells, p.num_classes],
            level.scores.len(),
        )?;
        check_len(
            || {
                format!(
                    "nanodet level {i} boxes (stride {}, grid {}x{})",
                    g.stride, g.cols, g.rows
                )
            },
            &[g.cells, box_row],
            level.boxes.len(),
        )?;
        grids.push(g);
    }

    let mut out = Vec::new();
    for (level, g) in levels.iter().zip(&grids) {
        let rows = level
            .scores
            .chunks_exact(p.num_classes)
            .zip(level.boxes.chunks_exact(box_row));
        decode_nanodet_cells(rows, g, bins, p, &mut out);
    }
    Ok(out)
}

/// Decode the packed NanoDet-Plus export: one tensor [1, total_cells, num_classes + 4 *
/// (reg_max + 1)] where each row holds the class scores followed by the box logits, and the
/// levels' cells are concatenated in the order of `strides` (e.g. `[8, 16, 32, 64]`).
///
/// This is the layout the official NanoDet-Plus ONNX export produces; because scores and box
/// logits are interleaved per row it cannot be expressed as [`NanoDetLevel`] slices without a
/// copy, hence this variant. Decoding is otherwise identical to [`decode_nanodet`].
pub fn decode_nanodet_packed(
    output: &[f32],
    strides: &[u32],
    p: &NanoDetParams,
) -> Result<Vec<Detection>, DecodeError> {
    let bins = validate_nanodet_params(p)?;
    let box_row = 4 * bins;
    let row_len = p
        .num_classes
        .checked_add(box_row)
        .ok_or_else(|| DecodeError::ShapeOverflow {
            tensor: "nanodet packed output row (num_classes + 4 * (reg_max + 1))".into(),
            shape: vec![p.num_classes, box_row],
        })?;
    let mut grids = Vec::with_capacity(strides.len());
    let mut total_cells = 0usize;
    for (i, &stride) in strides.iter().enumerate() {
        let g = LevelGrid::new(stride, p, || format!("nanodet packed output level {i}"))?;
        total_cells =
            total_cells
                .checked_add(g.cells)
                .ok_or_else(|| DecodeError::ShapeOverflow {
                    tensor: format!("nanodet packed output (cells of levels 0..={i})"),
                    shape: vec![total_cells, g.cells],
                })?;
        grids.push(g);
    }
    check_len(
        || format!("nanodet packed output (strides {strides:?})"),
        &[1, total_cells, row_len],
        output.len(),
    )?;

    let mut out = Vec::new();
    let mut rest = output;
    for g in &grids {
        // In bounds: the sum of all levels' cells * row_len equals output.len() (checked).
        let (level, tail) = rest.split_at(g.cells * row_len);
        rest = tail;
        let rows = level
            .chunks_exact(row_len)
            .map(|r| r.split_at(p.num_classes));
        decode_nanodet_cells(rows, g, bins, p, &mut out);
    }
    Ok(out)
}

/// YOLOv5 layout: one tensor [1, n, 5 + num_classes]: cx, cy, w, h (input pixels), objectness,
/// class probs (already sigmoid). score = objectness * class prob; keep the best class per row,
/// or with `multi_label` every class whose score reaches the threshold (one detection each).
///
/// Rows whose objectness is below the threshold are skipped without looking at the class
/// probabilities: with probabilities in `[0, 1]`, `objectness * prob <= objectness`, so no
/// class could pass, and on a typical frame this rejects almost every one of the ~25k rows
/// with a single compare.
///
/// Boxes are not clipped to the image; a negative width/height (garbage from a broken
/// model) becomes a zero-size box so that `x2 >= x1` and `y2 >= y1` always hold.
pub fn decode_yolov5(
    output: &[f32],
    n: usize,
    num_classes: usize,
    score_threshold: f32,
    multi_label: bool,
) -> Result<Vec<Detection>, DecodeError> {
    validate_yolo_params(num_classes, score_threshold)?;
    let row_len = num_classes
        .checked_add(5)
        .ok_or_else(|| DecodeError::ShapeOverflow {
            tensor: "yolov5 output".into(),
            shape: vec![1, n, usize::MAX],
        })?;
    check_len(|| "yolov5 output".into(), &[1, n, row_len], output.len())?;

    let mut out = Vec::new();
    for row in output.chunks_exact(row_len) {
        let (head, probs) = row.split_at(5);
        let &[cx, cy, w, h, obj] = head else {
            continue; // unreachable: row_len >= 5
        };
        if !passes(obj, score_threshold) {
            continue;
        }
        let Some(bbox) = centre_box(cx, cy, w, h) else {
            continue;
        };
        let scores = probs.iter().map(|&prob| obj * prob);
        push_classes(scores, bbox, score_threshold, multi_label, &mut out);
    }
    Ok(out)
}

/// YOLOv8 layout: one tensor [1, 4 + num_classes, n] (TRANSPOSED: channel-major): cx, cy, w, h,
/// then class scores (already sigmoid), no objectness. Same box conventions and output order
/// (anchor order, then class order) as [`decode_yolov5`], so the same scene decodes to the
/// same detections in either layout.
///
/// The anchor-major walk reads class scores with a stride of `n` floats; that is
/// `num_classes` cache lines in flight (~5 KiB for COCO), which stay in L1 for the next 15
/// anchors, so it costs about the same as a channel-major pass without needing scratch
/// buffers.
pub fn decode_yolov8(
    output: &[f32],
    n: usize,
    num_classes: usize,
    score_threshold: f32,
    multi_label: bool,
) -> Result<Vec<Detection>, DecodeError> {
    validate_yolo_params(num_classes, score_threshold)?;
    let channels = num_classes
        .checked_add(4)
        .ok_or_else(|| DecodeError::ShapeOverflow {
            tensor: "yolov8 output".into(),
            shape: vec![1, usize::MAX, n],
        })?;
    check_len(|| "yolov8 output".into(), &[1, channels, n], output.len())?;
    if n == 0 {
        return Ok(Vec::new());
    }

    // All in bounds: output.len() == (4 + num_classes) * n (checked above).
    let (cx, rest) = output.split_at(n);
    let (cy, rest) = rest.split_at(n);
    let (w, rest) = rest.split_at(n);
    let (h, class_rows) = rest.split_at(n);

    let mut out = Vec::new();
    let coords = cx.iter().zip(cy).zip(w).zip(h);
    for (i, (((&cx, &cy), &w), &h)) in coords.enumerate() {
        // Column `i` of the class block: exactly num_classes elements, since
        // class_rows.len() == num_classes * n and i < n.
        let column = || class_rows[i..].iter().step_by(n).copied();
        if !column().any(|s| passes(s, score_threshold)) {
            continue; // cheap reject before building a box
        }
        let Some(bbox) = centre_box(cx, cy, w, h) else {
            continue;
        };
        push_classes(column(), bbox, score_threshold, multi_label, &mut out);
    }
    Ok(out)
}

/// Class-aware NMS: sort by score descending, suppress same-class boxes with IoU > iou_threshold,
/// return at most max_detections, sorted by score descending. Stable for equal scores (the
/// earlier input wins, so decoder output order is the tie-break).
///
/// Works in place on the given Vec (no allocation) and stops as soon as `max_detections`
/// are kept, so its cost is O(n log n + n * max_detections) rather than O(n^2). Detections
/// with a NaN score are dropped, since they cannot be ranked.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32, max_detections: usize) -> Vec<Detection> {
    dets.retain(|d| !d.score.is_nan());
    // `sort_by` is stable; total_cmp gives a total order (no NaN left anyway).
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));

    let mut kept = 0usize;
    for i in 0..dets.len() {
        if kept >= max_detections {
            break;
        }
        let cand = &dets[i];
        let suppressed = dets[..kept]
            .iter()
            .any(|k| k.class == cand.class && k.bbox.iou(&cand.bbox) > iou_threshold);
        if !suppressed {
            // Everything in kept..i was suppressed, so swapping keeps the kept prefix in
            // score order.
            dets.swap(kept, i);
            kept += 1;
        }
    }
    dets.truncate(kept);
    dets
}

// ---------------------------------------------------------------------------------------
// internals

/// Geometry of one NanoDet level.
struct LevelGrid {
    stride: u32,
    cols: usize,
    rows: usize,
    cells: usize,
}

impl LevelGrid {
    fn new(stride: u32, p: &NanoDetParams, what: impl Fn() -> String) -> Result<Self, DecodeError> {
        if stride == 0 {
            return Err(DecodeError::InvalidParameter {
                name: "stride",
                reason: format!("{} has stride 0", what()),
            });
        }
        // u32 -> usize is lossless on every target tract supports (32 and 64 bit).
        let cols = p.input_w.div_ceil(stride) as usize;
        let rows = p.input_h.div_ceil(stride) as usize;
        let cells = cols
            .checked_mul(rows)
            .ok_or_else(|| DecodeError::ShapeOverflow {
                tensor: what(),
                shape: vec![rows, cols],
            })?;
        Ok(Self {
            stride,
            cols,
            rows,
            cells,
        })
    }
}

/// Returns the number of distribution bins per side, `reg_max + 1`.
fn validate_nanodet_params(p: &NanoDetParams) -> Result<usize, DecodeError> {
    if p.num_classes == 0 {
        return Err(DecodeError::InvalidParameter {
            name: "num_classes",
            reason: "must be at least 1".into(),
        });
    }
    if p.score_threshold.is_nan() {
        return Err(nan_threshold());
    }
    if !p.center_offset.is_finite() {
        return Err(DecodeError::InvalidParameter {
            name: "center_offset",
            reason: format!("must be finite, got {}", p.center_offset),
        });
    }
    p.reg_max
        .checked_add(1)
        .filter(|bins| bins.checked_mul(4).is_some())
        .ok_or_else(|| DecodeError::InvalidParameter {
            name: "reg_max",
            reason: format!("{} is too large", p.reg_max),
        })
}

fn validate_yolo_params(num_classes: usize, score_threshold: f32) -> Result<(), DecodeError> {
    if num_classes == 0 {
        return Err(DecodeError::InvalidParameter {
            name: "num_classes",
            reason: "must be at least 1".into(),
        });
    }
    if score_threshold.is_nan() {
        return Err(nan_threshold());
    }
    Ok(())
}

/// A NaN threshold would silently reject everything; that is a config bug worth surfacing.
fn nan_threshold() -> DecodeError {
    DecodeError::InvalidParameter {
        name: "score_threshold",
        reason: "is NaN".into(),
    }
}

/// Check `got` against the product of `shape`, naming the tensor only on failure (the name is
/// built lazily so the happy path does not allocate).
fn check_len(
    tensor: impl FnOnce() -> String,
    shape: &[usize],
    got: usize,
) -> Result<(), DecodeError> {
    match shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) {
        Some(expected) if expected == got => Ok(()),
        Some(expected) => Err(DecodeError::ShapeMismatch {
            tensor: tensor(),
            expected_shape: shape.to_vec(),
            expected_len: expected,
            got,
        }),
        None => Err(DecodeError::ShapeOverflow {
            tensor: tensor(),
            shape: shape.to_vec(),
        }),
    }
}

/// Decode the cells of one NanoDet level (`rows` yields each cell's scores and box logits).
fn decode_nanodet_cells<'r>(
    rows: impl Iterator<Item = (&'r [f32], &'r [f32])>,
    g: &LevelGrid,
    bins: usize,
    p: &NanoDetParams,
    out: &mut Vec<Detection>,
) {
    let stride = g.stride as f32;
    let (max_x, max_y) = (p.input_w as f32, p.input_h as f32);
    for (idx, (scores, logits)) in rows.enumerate() {
        // Threshold first: the argmax is num_classes compares, the box needs four softmaxes
        // (4 * (reg_max + 1) exps). On a real frame >99% of cells fail here, so the
        // expensive part runs only for a handful of cells.
        let Some((class, score)) = argmax(scores.iter().copied()) else {
            continue;
        };
        if !passes(score, p.score_threshold) {
            continue;
        }
        // Distances left, top, right, bottom in pixels.
        let mut d = [0.0f32; 4];
        for (dist, side) in d.iter_mut().zip(logits.chunks_exact(bins)) {
            *dist = softmax_expectation(side) * stride;
        }
        // Cell position only for kept cells (a division per kept cell, not per cell).
        let (col, row) = (idx % g.cols, idx / g.cols);
        let px = (col as f32 + p.center_offset) * stride;
        let py = (row as f32 + p.center_offset) * stride;
        let bbox = BBox {
            x1: (px - d[0]).max(0.0).min(max_x),
            y1: (py - d[1]).max(0.0).min(max_y),
            x2: (px + d[2]).max(0.0).min(max_x),
            y2: (py + d[3]).max(0.0).min(max_y),
        };
        // f32::max/min would turn a NaN distance into a border coordinate, so check the
        // distances themselves, not the clipped box.
        if d.iter().all(|v| v.is_finite()) {
            out.push(Detection { class, score, bbox });
        }
    }
}

/// Expected bin index under softmax(logits): the NanoDet/GFL "distribution focal loss"
/// integral. Subtracting the max keeps `exp` in range for any finite logits: f32 `exp`
/// overflows above ~88, so raw logits of 100 would give inf / inf = NaN. After the shift the
/// max bin contributes exp(0) = 1, so the denominator is >= 1. Non-finite logits yield NaN,
/// which the caller drops.
#[inline]
fn softmax_expectation(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    let mut weighted = 0.0f32;
    for (i, &l) in logits.iter().enumerate() {
        let e = (l - max).exp();
        sum += e;
        weighted += e * i as f32;
    }
    weighted / sum
}

/// Index and value of the largest non-NaN element; the first one wins ties. `None` if all
/// elements are NaN (or there are none).
#[inline]
fn argmax(values: impl Iterator<Item = f32>) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in values.enumerate() {
        match best {
            _ if v.is_nan() => {}
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best
}

/// `score >= threshold`, written once so the NaN rule is in one place: a NaN score never
/// passes (every comparison with NaN is false), so `!passes(..)` also rejects NaN, which a
/// `score < threshold` test would let through.
#[inline]
fn passes(score: f32, threshold: f32) -> bool {
    score >= threshold
}

/// Centre/size to corners. Negative sizes become 0 so that x2 >= x1, y2 >= y1. `None` for
/// non-finite inputs.
#[inline]
fn centre_box(cx: f32, cy: f32, w: f32, h: f32) -> Option<BBox> {
    if !(cx.is_finite() && cy.is_finite() && w.is_finite() && h.is_finite()) {
        return None;
    }
    let hw = (w * 0.5).max(0.0);
    let hh = (h * 0.5).max(0.0);
    Some(BBox {
        x1: cx - hw,
        y1: cy - hh,
        x2: cx + hw,
        y2: cy + hh,
    })
}

/// Emit the best class (or, with `multi_label`, every class) whose score reaches the
/// threshold. NaN scores never pass (`>=` is false for NaN).
#[inline]
fn push_classes(
    scores: impl Iterator<Item = f32>,
    bbox: BBox,
    threshold: f32,
    multi_label: bool,
    out: &mut Vec<Detection>,
) {
    if multi_label {
        for (class, score) in scores.enumerate() {
            if passes(score, threshold) {
                out.push(Detection { class, score, bbox });
            }
        }
    } else if let Some((class, score)) = argmax(scores) {
        if passes(score, threshold) {
            out.push(Detection { class, score, bbox });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THR: f32 = 0.25;

    fn bb(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox { x1, y1, x2, y2 }
    }

    fn det(class: usize, score: f32, bbox: BBox) -> Detection {
        Detection { class, score, bbox }
    }

    // ---- BBox ------------------------------------------------------------------------

    #[test]
    fn iou_disjoint_identical_contained() {
        let a = bb(0.0, 0.0, 10.0, 10.0);
        assert_eq!(a.area(), 100.0);
        assert_eq!(a.iou(&bb(20.0, 20.0, 30.0, 30.0)), 0.0, "disjoint");
        assert_eq!(a.iou(&bb(10.0, 0.0, 20.0, 10.0)), 0.0, "touching edge");
        assert_eq!(a.iou(&a), 1.0, "identical");
        let inner = bb(2.0, 2.0, 7.0, 7.0); // area 25, fully inside a
        assert_eq!(a.iou(&inner), 0.25, "contained");
        assert_eq!(inner.iou(&a), 0.25, "symmetric");
        // Half overlap: inter 50, union 150.
        let b = bb(5.0, 0.0, 15.0, 10.0);
        assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn iou_degenerate_boxes_are_zero_not_nan() {
        let p = bb(5.0, 5.0, 5.0, 5.0);
        assert_eq!(p.area(), 0.0);
        assert_eq!(p.iou(&p), 0.0);
        let inverted = bb(10.0, 10.0, 0.0, 0.0);
        assert_eq!(inverted.area(), 0.0);
        assert_eq!(inverted.iou(&bb(0.0, 0.0, 10.0, 10.0)), 0.0);
    }

    // ---- YOLO scene ------------------------------------------------------------------

    /// YOLOv5-style rows [cx, cy, w, h, obj, p0, p1, p2]; all values exactly representable.
    const NC: usize = 3;
    const SCENE: [[f32; 5 + NC]; 4] = [
        // class 0, score 0.9*0.8, box (75, 80, 125, 120)
        [100.0, 100.0, 50.0, 40.0, 0.9, 0.8, 0.1, 0.1],
        // class 0, score 0.8*0.7, box (80, 82, 130, 122): IoU with row 0 is 1710/2290
        [105.0, 102.0, 50.0, 40.0, 0.8, 0.7, 0.2, 0.1],
        // class 2, score 0.95*0.6, box (77, 80, 127, 120): overlaps row 0, other class
        [102.0, 100.0, 50.0, 40.0, 0.95, 0.1, 0.05, 0.6],
        // under threshold: 0.2 * 0.9 = 0.18
        [10.0, 10.0, 4.0, 4.0, 0.2, 0.9, 0.0, 0.0],
    ];

    fn scene_v5() -> Vec<f32> {
        SCENE.iter().flatten().copied().collect()
    }

    /// Transpose v5 rows into the v8 channel-major layout (dropping objectness, folding it
    /// into the class scores so the expected scores are identical).
    fn to_v8(rows: &[[f32; 5 + NC]]) -> Vec<f32> {
        let n = rows.len();
        let mut out = vec![0.0; (4 + NC) * n];
        for (i, r) in rows.iter().enumerate() {
            for c in 0..4 {
                out[c * n + i] = r[c];
            }
            for k in 0..NC {
                out[(4 + k) * n + i] = r[4] * r[5 + k];
            }
        }
        out
    }

    fn scene_expected_raw() -> Vec<Detection> {
        vec![
            det(0, 0.9 * 0.8, bb(75.0, 80.0, 125.0, 120.0)),
            det(0, 0.8 * 0.7, bb(80.0, 82.0, 130.0, 122.0)),
            det(2, 0.95 * 0.6, bb(77.0, 80.0, 127.0, 120.0)),
        ]
    }

    #[test]
    fn yolov5_decode_scene_exact() {
        let dets = decode_yolov5(&scene_v5(), 4, NC, THR, false).unwrap();
        assert_eq!(dets, scene_expected_raw());
    }

    #[test]
    fn yolov5_nms_is_class_aware() {
        let dets = decode_yolov5(&scene_v5(), 4, NC, THR, false).unwrap();
        let kept = nms(dets, 0.45, 100);
        assert_eq!(
            kept,
            vec![
                det(0, 0.9 * 0.8, bb(75.0, 80.0, 125.0, 120.0)),
                det(2, 0.95 * 0.6, bb(77.0, 80.0, 127.0, 120.0)),
            ]
        );
    }

    #[test]
    fn yolov5_multi_label_emits_every_class_over_threshold() {
        let row = [50.0, 50.0, 10.0, 10.0, 1.0, 0.5, 0.25, 0.75];
        let single = decode_yolov5(&row, 1, NC, 0.3, false).unwrap();
        assert_eq!(single, vec![det(2, 0.75, bb(45.0, 45.0, 55.0, 55.0))]);
        let multi = decode_yolov5(&row, 1, NC, 0.3, true).unwrap();
        assert_eq!(
            multi,
            vec![
                det(0, 0.5, bb(45.0, 45.0, 55.0, 55.0)),
                det(2, 0.75, bb(45.0, 45.0, 55.0, 55.0)),
            ]
        );
        // Threshold is inclusive.
        let multi = decode_yolov5(&row, 1, NC, 0.25, true).unwrap();
        assert_eq!(multi.len(), 3);
    }

    #[test]
    fn yolov8_transposed_scene_matches_yolov5() {
        let v8 = to_v8(&SCENE);
        for multi in [false, true] {
            let a = decode_yolov5(&scene_v5(), 4, NC, THR, multi).unwrap();
            let b = decode_yolov8(&v8, 4, NC, THR, multi).unwrap();
            assert_eq!(a, b, "multi_label={multi}");
            assert_eq!(nms(a, 0.45, 100), nms(b, 0.45, 100));
        }
        let dets = decode_yolov8(&v8, 4, NC, THR, false).unwrap();
        assert_eq!(dets, scene_expected_raw());
    }

    #[test]
    fn yolo_negative_size_gives_ordered_corners() {
        let row = [10.0, 20.0, -4.0, -6.0, 1.0, 1.0, 0.0, 0.0];
        let d = decode_yolov5(&row, 1, NC, THR, false).unwrap();
        assert_eq!(d, vec![det(0, 1.0, bb(10.0, 20.0, 10.0, 20.0))]);
        let d8 = decode_yolov8(&to_v8(&[row]), 1, NC, THR, false).unwrap();
        assert_eq!(d, d8);
        // Not clipped to non-negative.
        let row = [1.0, 1.0, 4.0, 4.0, 1.0, 1.0, 0.0, 0.0];
        let d = decode_yolov5(&row, 1, NC, THR, false).unwrap();
        assert_eq!(d[0].bbox, bb(-1.0, -1.0, 3.0, 3.0));
    }

    #[test]
    fn yolo_nan_scores_and_boxes_are_ignored() {
        let nan = f32::NAN;
        let rows = [
            [50.0, 50.0, 10.0, 10.0, nan, 0.9, 0.9, 0.9], // NaN objectness
            [50.0, 50.0, 10.0, 10.0, 0.9, nan, nan, nan], // all-NaN classes
            [50.0, 50.0, 10.0, 10.0, 0.9, nan, 0.5, nan], // one usable class
            [nan, 50.0, 10.0, 10.0, 0.9, 0.9, 0.0, 0.0],  // NaN coordinate
            [50.0, 50.0, f32::INFINITY, 10.0, 0.9, 0.9, 0.0, 0.0], // inf size
        ];
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let expect = vec![det(1, 0.9 * 0.5, bb(45.0, 45.0, 55.0, 55.0))];
        for multi in [false, true] {
            assert_eq!(decode_yolov5(&flat, 5, NC, THR, multi).unwrap(), expect);
            assert_eq!(
                decode_yolov8(&to_v8(&rows), 5, NC, THR, multi).unwrap(),
                expect
            );
        }
    }

    #[test]
    fn yolo_shape_errors_name_the_tensor() {
        let mut v = scene_v5();
        v.pop();
        let e = decode_yolov5(&v, 4, NC, THR, false).unwrap_err();
        assert_eq!(
            e,
            DecodeError::ShapeMismatch {
                tensor: "yolov5 output".into(),
                expected_shape: vec![1, 4, 8],
                expected_len: 32,
                got: 31,
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("yolov5 output") && msg.contains("[1, 4, 8]") && msg.contains("31"),
            "{msg}"
        );

        let e = decode_yolov8(&to_v8(&SCENE), 5, NC, THR, false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("yolov8 output") && msg.contains("[1, 7, 5]") && msg.contains("got 28"),
            "{msg}"
        );

        // Absurd n must not overflow or panic.
        let e = decode_yolov5(&v, usize::MAX, NC, THR, false).unwrap_err();
        assert!(matches!(e, DecodeError::ShapeOverflow { .. }), "{e}");
        let e = decode_yolov8(&v, usize::MAX, NC, THR, false).unwrap_err();
        assert!(matches!(e, DecodeError::ShapeOverflow { .. }), "{e}");
        let e = decode_yolov8(&v, 4, usize::MAX, THR, false).unwrap_err();
        assert!(matches!(e, DecodeError::ShapeOverflow { .. }), "{e}");
    }

    #[test]
    fn yolo_bad_params_and_empty_input() {
        assert!(matches!(
            decode_yolov5(&[], 0, 0, THR, false),
            Err(DecodeError::InvalidParameter {
                name: "num_classes",
                ..
            })
        ));
        assert!(matches!(
            decode_yolov8(&[], 0, 0, THR, false),
            Err(DecodeError::InvalidParameter {
                name: "num_classes",
                ..
            })
        ));
        assert!(matches!(
            decode_yolov5(&scene_v5(), 4, NC, f32::NAN, false),
            Err(DecodeError::InvalidParameter {
                name: "score_threshold",
                ..
            })
        ));
        assert_eq!(decode_yolov5(&[], 0, NC, THR, false).unwrap(), vec![]);
        assert_eq!(decode_yolov8(&[], 0, NC, THR, false).unwrap(), vec![]);
    }

    // ---- NanoDet ---------------------------------------------------------------------

    const ND_NC: usize = 2;
    const REG_MAX: usize = 3;
    const BINS: usize = REG_MAX + 1;

    fn nd_params(center_offset: f32) -> NanoDetParams {
        NanoDetParams {
            num_classes: ND_NC,
            reg_max: REG_MAX,
            input_w: 64,
            input_h: 64,
            center_offset,
            score_threshold: 0.5,
        }
    }

    /// Box logits for one cell: a one-hot distribution per side (logit 50 at the given bin).
    fn one_hot(sides: [usize; 4]) -> Vec<f32> {
        let mut v = vec![0.0; 4 * BINS];
        for (s, bin) in sides.iter().enumerate() {
            v[s * BINS + bin] = 50.0;
        }
        v
    }

    /// Two levels over a 64x64 input: stride 32 (2x2 grid) and stride 16 (4x4 grid).
    struct Toy {
        s32: Vec<f32>,
        b32: Vec<f32>,
        s16: Vec<f32>,
        b16: Vec<f32>,
    }

    fn toy() -> Toy {
        let mut t = Toy {
            s32: vec![0.1; 4 * ND_NC],
            b32: vec![0.0; 4 * 4 * BINS],
            s16: vec![0.1; 16 * ND_NC],
            b16: vec![0.0; 16 * 4 * BINS],
        };
        // Stride 32, cell (col 1, row 0): class 1 score 0.9, one-hot distances
        // left 1, top 0, right 2, bottom 1 (in strides).
        t.s32[ND_NC + 1] = 0.9;
        t.b32[4 * BINS..2 * 4 * BINS].copy_from_slice(&one_hot([1, 0, 2, 1]));
        // Stride 16, cell (col 0, row 3) = index 12: class 0 score 0.6, uniform
        // distribution (all logits 0) so every distance is reg_max/2 * 16 = 24.
        t.s16[12 * ND_NC] = 0.6;
        // Stride 16, cell index 5: under threshold, garbage logits that must not matter.
        t.s16[5 * ND_NC] = 0.49;
        t.b16[5 * 4 * BINS..6 * 4 * BINS].fill(f32::NAN);
        // Stride 16, cell index 6: NaN scores are ignored.
        t.s16[6 * ND_NC] = f32::NAN;
        t.s16[6 * ND_NC + 1] = f32::NAN;
        t
    }

    fn levels(t: &Toy) -> [NanoDetLevel<'_>; 2] {
        [
            NanoDetLevel {
                stride: 32,
                scores: &t.s32,
                boxes: &t.b32,
            },
            NanoDetLevel {
                stride: 16,
                scores: &t.s16,
                boxes: &t.b16,
            },
        ]
    }

    #[test]
    fn nanodet_two_levels_exact_boxes_with_clipping() {
        let t = toy();
        let dets = decode_nanodet(&levels(&t), &nd_params(0.5)).unwrap();
        assert_eq!(
            dets,
            vec![
                // point (1.5*32, 0.5*32) = (48, 16); box (48-32, 16-0, 48+64, 16+32),
                // right edge 112 clipped to 64.
                det(1, 0.9, bb(16.0, 16.0, 64.0, 48.0)),
                // point (0.5*16, 3.5*16) = (8, 56); distances 24: (-16, 32, 32, 80)
                // clipped to (0, 32, 32, 64).
                det(0, 0.6, bb(0.0, 32.0, 32.0, 64.0)),
            ]
        );
    }

    #[test]
    fn nanodet_center_offset_shifts_the_anchor_point() {
        let t = toy();
        let dets = decode_nanodet(&levels(&t), &nd_params(0.0)).unwrap();
        assert_eq!(
            dets,
            vec![
                // point (32, 0): (32-32, 0-0, 32+64, 0+32) -> x2 clipped to 64.
                det(1, 0.9, bb(0.0, 0.0, 64.0, 32.0)),
                // point (0, 48): (-24, 24, 24, 72) -> (0, 24, 24, 64).
                det(0, 0.6, bb(0.0, 24.0, 24.0, 64.0)),
            ]
        );
    }

    #[test]
    fn nanodet_softmax_is_stable_for_large_logits() {
        // Logits far beyond exp's f32 range (exp(100) = inf) still give the exact expectation.
        assert_eq!(softmax_expectation(&[1000.0, 1000.0, 1000.0, 1000.0]), 1.5);
        assert_eq!(softmax_expectation(&[0.0, 0.0, 100.0, 0.0]), 2.0);
        assert_eq!(
            softmax_expectation(&[-1000.0, -1000.0, -1000.0, 1000.0]),
            3.0
        );
        assert!(softmax_expectation(&[f32::NAN, 0.0]).is_nan());
    }

    #[test]
    fn nanodet_packed_matches_split_levels() {
        let t = toy();
        let row_len = ND_NC + 4 * BINS;
        let mut packed = Vec::new();
        for (s, b) in [(&t.s32, &t.b32), (&t.s16, &t.b16)] {
            for (sr, br) in s.chunks_exact(ND_NC).zip(b.chunks_exact(4 * BINS)) {
                packed.extend_from_slice(sr);
                packed.extend_from_slice(br);
            }
        }
        assert_eq!(packed.len(), 20 * row_len);
        let p = nd_params(0.5);
        let split = decode_nanodet(&levels(&t), &p).unwrap();
        assert_eq!(
            decode_nanodet_packed(&packed, &[32, 16], &p).unwrap(),
            split
        );

        packed.push(0.0);
        let e = decode_nanodet_packed(&packed, &[32, 16], &p).unwrap_err();
        assert_eq!(
            e,
            DecodeError::ShapeMismatch {
                tensor: "nanodet packed output (strides [32, 16])".into(),
                expected_shape: vec![1, 20, row_len],
                expected_len: 20 * row_len,
                got: 20 * row_len + 1,
            }
        );
    }

    #[test]
    fn nanodet_shape_errors_name_the_tensor() {
        let t = toy();
        let p = nd_params(0.5);

        let short = &t.s16[1..];
        let mut lv = levels(&t);
        lv[1].scores = short;
        let e = decode_nanodet(&lv, &p).unwrap_err();
        assert_eq!(
            e,
            DecodeError::ShapeMismatch {
                tensor: "nanodet level 1 scores (stride 16, grid 4x4)".into(),
                expected_shape: vec![16, ND_NC],
                expected_len: 32,
                got: 31,
            }
        );

        let mut lv = levels(&t);
        lv[0].boxes = &t.b16; // 16 cells' worth on a 4-cell level
        let msg = decode_nanodet(&lv, &p).unwrap_err().to_string();
        assert!(
            msg.contains("nanodet level 0 boxes")
                && msg.contains("[4, 16]")
                && msg.contains("got 256"),
            "{msg}"
        );

        // Levels swapped: stride 16 now gets the 4-cell tensors.
        let lv = [
            NanoDetLevel {
                stride: 16,
                scores: &t.s32,
                boxes: &t.b32,
            },
            NanoDetLevel {
                stride: 32,
                scores: &t.s16,
                boxes: &t.b16,
            },
        ];
        let msg = decode_nanodet(&lv, &p).unwrap_err().to_string();
        assert!(msg.contains("nanodet level 0 scores"), "{msg}");
    }

    #[test]
    fn nanodet_grid_uses_ceil_for_non_multiple_inputs() {
        // 70x40 at stride 32 -> 3 columns x 2 rows = 6 cells.
        let p = NanoDetParams {
            input_w: 70,
            input_h: 40,
            ..nd_params(0.5)
        };
        let mut scores = vec![0.0; 6 * ND_NC];
        let mut boxes = vec![0.0; 6 * 4 * BINS];
        // Last cell (col 2, row 1): point (80, 48), one-hot distances (0, 0, 1, 1) strides
        // -> (80, 48, 112, 80) clipped to the 70x40 input -> (70, 40, 70, 40).
        scores[5 * ND_NC] = 1.0;
        boxes[5 * 4 * BINS..].copy_from_slice(&one_hot([0, 0, 1, 1]));
        let lv = [NanoDetLevel {
            stride: 32,
            scores: &scores,
            boxes: &boxes,
        }];
        let d = decode_nanodet(&lv, &p).unwrap();
        assert_eq!(d, vec![det(0, 1.0, bb(70.0, 40.0, 70.0, 40.0))]);

        let lv = [NanoDetLevel {
            stride: 32,
            scores: &scores[..4 * ND_NC],
            boxes: &boxes[..4 * 4 * BINS],
        }];
        let msg = decode_nanodet(&lv, &p).unwrap_err().to_string();
        assert!(msg.contains("grid 3x2") && msg.contains("[6, 2]"), "{msg}");
    }

    #[test]
    fn nanodet_bad_params() {
        let t = toy();
        let mut lv = levels(&t);
        lv[1].stride = 0;
        assert!(matches!(
            decode_nanodet(&lv, &nd_params(0.5)),
            Err(DecodeError::InvalidParameter { name: "stride", .. })
        ));
        assert!(matches!(
            decode_nanodet_packed(&[], &[0], &nd_params(0.5)),
            Err(DecodeError::InvalidParameter { name: "stride", .. })
        ));
        let p = NanoDetParams {
            num_classes: 0,
            ..nd_params(0.5)
        };
        assert!(matches!(
            decode_nanodet(&levels(&t), &p),
            Err(DecodeError::InvalidParameter {
                name: "num_classes",
                ..
            })
        ));
        let p = NanoDetParams {
            reg_max: usize::MAX,
            ..nd_params(0.5)
        };
        assert!(matches!(
            decode_nanodet(&levels(&t), &p),
            Err(DecodeError::InvalidParameter {
                name: "reg_max",
                ..
            })
        ));
        let p = NanoDetParams {
            reg_max: usize::MAX / 4,
            ..nd_params(0.5)
        };
        assert!(decode_nanodet(&levels(&t), &p).is_err());
        let p = NanoDetParams {
            center_offset: f32::NAN,
            ..nd_params(0.5)
        };
        assert!(decode_nanodet(&levels(&t), &p).is_err());
        // No levels: nothing to decode, not an error.
        assert_eq!(decode_nanodet(&[], &nd_params(0.5)).unwrap(), vec![]);
    }

    // ---- NMS -------------------------------------------------------------------------

    #[test]
    fn nms_respects_max_detections_and_sorts() {
        let dets: Vec<Detection> = (0..10)
            .map(|i| {
                det(
                    0,
                    i as f32 / 10.0,
                    bb(i as f32 * 100.0, 0.0, i as f32 * 100.0 + 10.0, 10.0),
                )
            })
            .collect();
        let kept = nms(dets.clone(), 0.5, 3);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.8, 0.7]);
        assert_eq!(nms(dets.clone(), 0.5, 0), vec![]);
        assert_eq!(nms(dets, 0.5, 100).len(), 10);
        assert_eq!(nms(vec![], 0.5, 100), vec![]);
    }

    #[test]
    fn nms_is_stable_for_equal_scores() {
        let a = det(0, 0.5, bb(0.0, 0.0, 10.0, 10.0));
        let b = det(0, 0.5, bb(1.0, 0.0, 11.0, 10.0)); // IoU with a = 90/110
        let c = det(1, 0.5, bb(100.0, 0.0, 110.0, 10.0));
        assert_eq!(
            nms(vec![a.clone(), b.clone(), c.clone()], 0.5, 10),
            vec![a.clone(), c.clone()]
        );
        assert_eq!(
            nms(vec![b.clone(), a.clone(), c.clone()], 0.5, 10),
            vec![b, c.clone()]
        );
        // Non-overlapping equal scores keep input order.
        let d = det(1, 0.5, bb(200.0, 0.0, 210.0, 10.0));
        assert_eq!(
            nms(vec![d.clone(), c.clone(), a.clone()], 0.5, 10),
            vec![d, c, a]
        );
    }

    #[test]
    fn nms_threshold_is_strict_and_classes_are_separate() {
        let a = det(0, 0.9, bb(0.0, 0.0, 10.0, 10.0));
        let b = det(0, 0.8, bb(5.0, 0.0, 15.0, 10.0)); // IoU exactly 1/3 in f32
        let iou = a.bbox.iou(&b.bbox);
        assert_eq!(
            nms(vec![a.clone(), b.clone()], iou, 10).len(),
            2,
            "IoU == threshold keeps"
        );
        assert_eq!(nms(vec![a.clone(), b.clone()], 0.3, 10), vec![a.clone()]);
        let b_other = det(1, 0.8, b.bbox);
        assert_eq!(
            nms(vec![b_other.clone(), a.clone()], 0.3, 10),
            vec![a, b_other]
        );
    }

    #[test]
    fn nms_drops_nan_scores() {
        let good = det(0, 0.4, bb(0.0, 0.0, 10.0, 10.0));
        let bad = det(0, f32::NAN, bb(0.0, 0.0, 10.0, 10.0));
        assert_eq!(nms(vec![bad, good.clone()], 0.5, 10), vec![good]);
    }
}
