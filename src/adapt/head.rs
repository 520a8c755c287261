//! The trainable classifier head that sits on top of frozen backbone
//! embeddings.
//!
//! Only this small head is retrained on the device, so it carries
//! everything needed to turn a raw embedding into a decision: the input
//! standardisation learned from the training split, the weights, the class
//! names and the open-set threshold. A head file is therefore
//! self-contained: loading it can never pair weights with the wrong
//! normalisation or class list.

use std::collections::HashMap;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Label reported when a prediction is rejected as not confidently any
/// class. Reserved: no class may be called this.
pub use crate::label::UNKNOWN as UNKNOWN_LABEL;

/// Name of the optional background class ("nothing of interest"). A
/// prediction of this class is flagged `unknown` (see [`Prediction`]).
pub const BACKGROUND_LABEL: &str = "none";

/// Standard deviations below this fraction of the mean standard deviation
/// across dimensions are raised to it. An absolute floor such as 1e-6 is not
/// enough for backbone embeddings: post-ReLU dimensions that were (almost)
/// always zero in the training data would turn a small activation at
/// inference into a huge standardised input and swamp the logits.
pub const STD_FLOOR_RELATIVE: f32 = 1e-2;

/// Absolute floor for the standard deviation, for the degenerate case where
/// every dimension is constant.
pub const STD_FLOOR_ABSOLUTE: f32 = 1e-6;

/// Value of the `format` metadata key, so that a random safetensors file
/// (for example a backbone exported to safetensors) is not mistaken for a
/// head.
const FORMAT_NAME: &str = "adaptd-head";
/// Bumped when the file layout changes incompatibly.
const FORMAT_VERSION: &str = "1";

/// Which classifier architecture a head uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HeadKind {
    /// Multinomial logistic regression: one linear layer and softmax. The
    /// default, because on good embeddings it is as accurate as anything
    /// else, trains in well under a second and cannot overfit badly.
    Softmax,
    /// One ReLU hidden layer, then softmax. For embeddings whose classes are
    /// not linearly separable; `dropout` is applied to the hidden layer at
    /// training time only and is kept here as a record.
    Mlp {
        /// Hidden units.
        hidden: usize,
        /// Dropout probability on the hidden layer during training, in [0, 1).
        dropout: f32,
    },
    /// Nearest centroid by cosine similarity: one unit-length mean direction
    /// per class, no training loop. For enrolment from one to three clips
    /// (a new voice, a new object), where a softmax fitted on three points
    /// per class is mostly noise, and for embeddings such as speaker voice
    /// prints that are built to be compared by cosine. Its per-class
    /// scores are cosine similarities in [-1, 1], not probabilities, and
    /// the open-set threshold applies to the best cosine.
    Centroid,
}

impl HeadKind {
    /// Short name used in file metadata and reports.
    pub fn name(&self) -> &'static str {
        match self {
            HeadKind::Softmax => "softmax",
            HeadKind::Mlp { .. } => "mlp",
            HeadKind::Centroid => "centroid",
        }
    }

    /// True when [`Head::probabilities`] returns softmax probabilities
    /// (summing to one); false for the centroid head's cosine similarities.
    pub fn is_probabilistic(&self) -> bool {
        !matches!(self, HeadKind::Centroid)
    }
}

/// What is wrong with a head, its input or its file.
#[derive(Debug, Error)]
pub enum HeadError {
    /// An embedding of the wrong length was given.
    #[error(
        "embedding has {found} values but this head expects {expected}: the head was trained on a different backbone output; retrain it for this model or pick the matching head"
    )]
    DimensionMismatch {
        /// Dimension the head was trained on.
        expected: usize,
        /// Length of the embedding given.
        found: usize,
    },
    /// A batch buffer does not hold `n` embeddings of the head's dimension.
    #[error(
        "a batch of {n} embeddings of dimension {dim} needs {n}*{dim} values but {found} were given: pass n row-major embeddings"
    )]
    BatchShape {
        /// Number of embeddings claimed.
        n: usize,
        /// Dimension of each.
        dim: usize,
        /// Length of the buffer given.
        found: usize,
    },
    /// The file is not a well-formed safetensors file (truncated, torn by a
    /// crash, or not safetensors at all).
    #[error(
        "head file is not a readable safetensors file ({0}): it is truncated or corrupt; roll back to another version or retrain"
    )]
    Format(String),
    /// The file is safetensors but lacks something every head has.
    #[error(
        "head file has no {what}: it was not written by adaptd or is corrupt; roll back to another version or retrain"
    )]
    Missing {
        /// What is missing, e.g. "tensor 'w1'".
        what: String,
    },
    /// A tensor's dtype or shape does not fit the rest of the head.
    #[error(
        "head file tensor '{name}' is {found} but {expected} is required: the file is inconsistent or corrupt; roll back to another version or retrain"
    )]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What the head needs, e.g. "F32 [10, 1280]".
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// A metadata entry cannot be parsed or contradicts the tensors.
    #[error(
        "head file metadata '{key}' is invalid ({reason}): the file is corrupt or from an incompatible version; roll back to another version or retrain"
    )]
    BadMetadata {
        /// Metadata key.
        key: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The parameters given to [`Head::from_params`] do not form a head.
    #[error("invalid head: {0}")]
    Invalid(String),
    /// Serialising the head failed (should not happen for a valid head).
    #[error("could not serialise the head: {0}")]
    Serialize(String),
}

/// Outcome of classifying one embedding.
///
/// Open-set rule: a prediction is `unknown` (not forced into a class) when
///
/// 1. the top probability is below the head's calibrated
///    [`Head::unknown_threshold`]: then `label` is [`UNKNOWN_LABEL`] and
///    `class_index` is `None`, because the head is not confident in any
///    class; or
/// 2. the top class is the background class [`BACKGROUND_LABEL`] (`none`):
///    then `label` stays `none` and `class_index` points at it, so
///    consumers can tell "confidently nothing there" from "unsure", while
///    anything that only checks `unknown` treats both as "no class".
///
/// `score` is always the top score and `probabilities` the scores of every
/// class in class order, whatever the decision. Scores are softmax
/// probabilities for softmax and MLP heads, and cosine similarities to each
/// class centroid for a [`HeadKind::Centroid`] head (see
/// [`HeadKind::is_probabilistic`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The class name, `unknown`, or `none`.
    pub label: String,
    /// The top score (probability, or cosine for a centroid head).
    pub score: f32,
    /// Index of the predicted class; `None` when rejected by the threshold.
    pub class_index: Option<usize>,
    /// True when the result must not be treated as a real class.
    pub unknown: bool,
    /// Per-class scores in class order: softmax probabilities, or cosine
    /// similarities for a centroid head.
    pub probabilities: Vec<f32>,
}

/// The raw parameters of a head, for [`Head::from_params`].
///
/// Matrices are row-major: `w1` is `[out1 x dim]` where `out1` is the number
/// of classes (softmax) or hidden units (MLP); `w2` is `[classes x hidden]`
/// and is empty, like `b2`, for softmax heads.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadParams {
    /// Class names in output order.
    pub classes: Vec<String>,
    /// Architecture.
    pub kind: HeadKind,
    /// Per-dimension mean of the training embeddings.
    pub mean: Vec<f32>,
    /// Per-dimension standard deviation (already floored).
    pub std: Vec<f32>,
    /// First layer weights.
    pub w1: Vec<f32>,
    /// First layer bias.
    pub b1: Vec<f32>,
    /// Second layer weights (MLP only).
    pub w2: Vec<f32>,
    /// Second layer bias (MLP only).
    pub b2: Vec<f32>,
    /// Open-set threshold on the top probability, in [0, 1].
    pub unknown_threshold: f32,
}

/// A trained, validated classifier head. Immutable apart from the threshold,
/// so a head that passed validation stays valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    p: HeadParams,
    dim: usize,
    /// `1 / std`, precomputed because a multiply is cheaper than a divide
    /// in the standardisation loop.
    inv_std: Vec<f32>,
}

/// Rows processed together during batch inference: big enough to amortise
/// the per-block overhead, small enough for the block to stay in cache.
const INFER_BLOCK: usize = 64;

impl Head {
    /// Validates raw parameters and builds a head.
    ///
    /// Every shape is checked against the class count, the dimension and the
    /// kind, and every value must be finite, so inference on a constructed
    /// head can neither panic nor produce NaN from the head itself.
    pub fn from_params(p: HeadParams) -> Result<Head, HeadError> {
        validate_class_names(&p.classes).map_err(|e| HeadError::Invalid(e.to_string()))?;
        let dim = p.mean.len();
        if dim == 0 {
            return Err(HeadError::Invalid(
                "the embedding dimension is 0 (empty mean vector)".into(),
            ));
        }
        let k = p.classes.len();
        let out1 = match p.kind {
            HeadKind::Softmax | HeadKind::Centroid => k,
            HeadKind::Mlp { hidden, dropout } => {
                if hidden == 0 {
                    return Err(HeadError::Invalid("an MLP head needs hidden >= 1".into()));
                }
                if !(0.0..1.0).contains(&dropout) {
                    return Err(HeadError::Invalid(format!(
                        "dropout {dropout} is outside [0, 1)"
                    )));
                }
                hidden
            }
        };
        let (w2_len, b2_len) = match p.kind {
            HeadKind::Softmax | HeadKind::Centroid => (0, 0),
            HeadKind::Mlp { hidden, .. } => (k.saturating_mul(hidden), k),
        };
        let check_len = |name: &str, v: &[f32], len: Option<usize>| -> Result<(), HeadError> {
            if Some(v.len()) != len {
                return Err(HeadError::Invalid(format!(
                    "'{name}' has {} values but {} are required",
                    v.len(),
                    len.map_or_else(|| "an overflowing number".to_string(), |l| l.to_string())
                )));
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(HeadError::Invalid(format!(
                    "'{name}' holds a non-finite value at index {i}"
                )));
            }
            Ok(())
        };
        check_len("std", &p.std, Some(dim))?;
        check_len("mean", &p.mean, Some(dim))?;
        check_len("w1", &p.w1, out1.checked_mul(dim))?;
        check_len("b1", &p.b1, Some(out1))?;
        check_len("w2", &p.w2, Some(w2_len))?;
        check_len("b2", &p.b2, Some(b2_len))?;
        if let Some(i) = p.std.iter().position(|&s| s <= 0.0) {
            return Err(HeadError::Invalid(format!(
                "'std' must be positive, index {i} is {}",
                p.std[i]
            )));
        }
        if !(0.0..=1.0).contains(&p.unknown_threshold) {
            return Err(HeadError::Invalid(format!(
                "unknown_threshold {} is outside [0, 1]",
                p.unknown_threshold
            )));
        }
        if p.kind == HeadKind::Centroid {
            validate_centroids(&p, dim)?;
        }
        let inv_std = p.std.iter().map(|s| 1.0 / s).collect();
        Ok(Head { p, dim, inv_std })
    }

    /// Class names in output order.
    pub fn classes(&self) -> &[String] {
        &self.p.classes
    }

    /// Architecture of this head.
    pub fn kind(&self) -> HeadKind {
        self.p.kind
    }

    /// Embedding dimension the head expects.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The calibrated open-set threshold on the top probability.
    pub fn unknown_threshold(&self) -> f32 {
        self.p.unknown_threshold
    }

    /// Overrides the open-set threshold (operator tuning); values outside
    /// [0, 1] or NaN are rejected because they would silently disable or
    /// force rejection.
    pub fn set_unknown_threshold(&mut self, t: f32) -> Result<(), HeadError> {
        if !(0.0..=1.0).contains(&t) {
            return Err(HeadError::Invalid(format!(
                "unknown_threshold {t} is outside [0, 1]"
            )));
        }
        self.p.unknown_threshold = t;
        Ok(())
    }

    /// The raw parameters (read-only), e.g. for inspection or export.
    pub fn params(&self) -> &HeadParams {
        &self.p
    }

    /// Per-class scores for one embedding, in class order: softmax
    /// probabilities, or cosine similarities for a centroid head.
    pub fn probabilities(&self, x: &[f32]) -> Result<Vec<f32>, HeadError> {
        if x.len() != self.dim {
            return Err(HeadError::DimensionMismatch {
                expected: self.dim,
                found: x.len(),
            });
        }
        self.probabilities_batch(x, 1)
    }

    /// Probabilities for `n` row-major embeddings in `xs`; the result is
    /// `n x classes`, row-major. Batching amortises weight loads across
    /// samples, which is what makes evaluating a holdout set cheap.
    pub fn probabilities_batch(&self, xs: &[f32], n: usize) -> Result<Vec<f32>, HeadError> {
        if n.checked_mul(self.dim) != Some(xs.len()) {
            return Err(HeadError::BatchShape {
                n,
                dim: self.dim,
                found: xs.len(),
            });
        }
        let k = self.p.classes.len();
        let out1 = self.p.b1.len();
        let mut out = vec![0.0f32; n * k];
        let block = INFER_BLOCK.min(n.max(1));
        let mut xstd = vec![0.0f32; block * self.dim];
        let mut hidden = vec![0.0f32; block * out1];
        for (xs_blk, out_blk) in xs.chunks(block * self.dim).zip(out.chunks_mut(block * k)) {
            let rows = xs_blk.len() / self.dim;
            if self.p.kind == HeadKind::Centroid {
                // Cosine: raw embeddings (no standardisation) against unit centroids,
                // divided by the embedding's own length.
                linear_forward(&self.p.w1, &self.p.b1, xs_blk, self.dim, out_blk);
                for (x, row) in xs_blk
                    .chunks_exact(self.dim)
                    .zip(out_blk.chunks_exact_mut(k))
                {
                    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
                    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
                    row.iter_mut()
                        .for_each(|s| *s = (*s * inv).clamp(-1.0, 1.0));
                }
                continue;
            }
            let xstd = &mut xstd[..rows * self.dim];
            standardize_rows(xs_blk, &self.p.mean, &self.inv_std, xstd);
            match self.p.kind {
                HeadKind::Softmax | HeadKind::Centroid => {
                    linear_forward(&self.p.w1, &self.p.b1, xstd, self.dim, out_blk);
                }
                HeadKind::Mlp { .. } => {
                    let h = &mut hidden[..rows * out1];
                    linear_forward(&self.p.w1, &self.p.b1, xstd, self.dim, h);
                    h.iter_mut().for_each(|v| *v = v.max(0.0));
                    linear_forward(&self.p.w2, &self.p.b2, h, out1, out_blk);
                }
            }
            for row in out_blk.chunks_exact_mut(k) {
                softmax_in_place(row);
            }
        }
        Ok(out)
    }

    /// Classifies one embedding, applying the open-set rule documented on
    /// [`Prediction`].
    pub fn predict(&self, x: &[f32]) -> Result<Prediction, HeadError> {
        Ok(self.decide(self.probabilities(x)?))
    }

    /// Applies the open-set rule to a probability vector produced by this
    /// head (e.g. one row of [`Head::probabilities_batch`]). A vector of the
    /// wrong length or without any number in it cannot name a class and is
    /// reported as `unknown`.
    pub fn decide(&self, probabilities: Vec<f32>) -> Prediction {
        let (top, score) = argmax(&probabilities);
        let valid = probabilities.len() == self.p.classes.len();
        let label = self.p.classes.get(top).filter(|_| valid);
        let (label, class_index, unknown) = match label {
            Some(label) if score >= self.p.unknown_threshold => {
                (label.clone(), Some(top), label == BACKGROUND_LABEL)
            }
            _ => (UNKNOWN_LABEL.to_string(), None, true),
        };
        Prediction {
            label,
            score,
            class_index,
            unknown,
            probabilities,
        }
    }

    /// Serialises the head to safetensors bytes.
    ///
    /// Tensors (all F32): `mean [dim]`, `std [dim]`, `w1 [out1, dim]`,
    /// `b1 [out1]` and, for MLP heads, `w2 [classes, hidden]`, `b2 [classes]`.
    /// String metadata: `format`, `format_version`, `kind`, `dim`,
    /// `classes` (JSON array), `unknown_threshold`, and for MLP `hidden`
    /// and `dropout`. Numbers are written in Rust's shortest round-trip
    /// form, so a save/load cycle reproduces the head bit for bit.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, HeadError> {
        let p = &self.p;
        let k = p.classes.len();
        let out1 = p.b1.len();
        let mut tensors: Vec<(&str, Vec<usize>, Vec<u8>)> = vec![
            ("mean", vec![self.dim], f32_bytes(&p.mean)),
            ("std", vec![self.dim], f32_bytes(&p.std)),
            ("w1", vec![out1, self.dim], f32_bytes(&p.w1)),
            ("b1", vec![out1], f32_bytes(&p.b1)),
        ];
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT_NAME.to_string());
        meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        meta.insert("kind".to_string(), p.kind.name().to_string());
        meta.insert("dim".to_string(), self.dim.to_string());
        meta.insert(
            "classes".to_string(),
            serde_json::to_string(&p.classes).map_err(|e| HeadError::Serialize(e.to_string()))?,
        );
        meta.insert(
            "unknown_threshold".to_string(),
            p.unknown_threshold.to_string(),
        );
        if let HeadKind::Mlp { hidden, dropout } = p.kind {
            meta.insert("hidden".to_string(), hidden.to_string());
            meta.insert("dropout".to_string(), dropout.to_string());
            tensors.push(("w2", vec![k, hidden], f32_bytes(&p.w2)));
            tensors.push(("b2", vec![k], f32_bytes(&p.b2)));
        }
        let mut views = Vec::with_capacity(tensors.len());
        for (name, shape, bytes) in &tensors {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map_err(|e| HeadError::Serialize(e.to_string()))?;
            views.push((*name, view));
        }
        safetensors::serialize(views, Some(meta)).map_err(|e| HeadError::Serialize(e.to_string()))
    }

    /// Parses and validates a head written by [`Head::to_safetensors`].
    ///
    /// Every tensor's dtype and shape is checked against the metadata and
    /// against each other, unexpected tensors are refused, and the values
    /// must be finite: a truncated, torn or foreign file is a clear error,
    /// never a panic or a head that silently computes garbage.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Head, HeadError> {
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| HeadError::Format(e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| HeadError::Format(e.to_string()))?;
        let empty = HashMap::new();
        let meta = header.metadata().as_ref().unwrap_or(&empty);
        let get = |key: &str| -> Result<&str, HeadError> {
            meta.get(key).map(String::as_str).ok_or(HeadError::Missing {
                what: format!("metadata entry '{key}'"),
            })
        };
        let bad = |key: &str, reason: String| HeadError::BadMetadata {
            key: key.to_string(),
            reason,
        };
        let format = get("format")?;
        if format != FORMAT_NAME {
            return Err(bad("format", format!("'{format}' is not '{FORMAT_NAME}'")));
        }
        let version = get("format_version")?;
        if version != FORMAT_VERSION {
            return Err(bad(
                "format_version",
                format!("version {version} is not supported, this build reads {FORMAT_VERSION}"),
            ));
        }
        let dim: usize = parse_meta(get("dim")?, "dim")?;
        let classes: Vec<String> =
            serde_json::from_str(get("classes")?).map_err(|e| bad("classes", e.to_string()))?;
        let unknown_threshold: f32 = parse_meta(get("unknown_threshold")?, "unknown_threshold")?;
        let kind = match get("kind")? {
            "softmax" => HeadKind::Softmax,
            "centroid" => HeadKind::Centroid,
            "mlp" => HeadKind::Mlp {
                hidden: parse_meta(get("hidden")?, "hidden")?,
                dropout: parse_meta(get("dropout")?, "dropout")?,
            },
            other => return Err(bad("kind", format!("unknown head kind '{other}'"))),
        };
        let k = classes.len();
        let out1 = match kind {
            HeadKind::Softmax | HeadKind::Centroid => k,
            HeadKind::Mlp { hidden, .. } => hidden,
        };

        let mut expected: Vec<(&str, Vec<usize>)> = vec![
            ("mean", vec![dim]),
            ("std", vec![dim]),
            ("w1", vec![out1, dim]),
            ("b1", vec![out1]),
        ];
        if let HeadKind::Mlp { hidden, .. } = kind {
            expected.push(("w2", vec![k, hidden]));
            expected.push(("b2", vec![k]));
        }
        for name in st.names() {
            if !expected.iter().any(|(n, _)| *n == name) {
                return Err(HeadError::BadTensor {
                    name: name.to_string(),
                    expected: "absent".into(),
                    found: "present".into(),
                });
            }
        }
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>, HeadError> {
            let view = st.tensor(name).map_err(|_| HeadError::Missing {
                what: format!("tensor '{name}'"),
            })?;
            if view.dtype() != Dtype::F32 || view.shape() != shape {
                return Err(HeadError::BadTensor {
                    name: name.to_string(),
                    expected: format!("F32 {shape:?}"),
                    found: format!("{:?} {:?}", view.dtype(), view.shape()),
                });
            }
            Ok(view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let mut tensors = Vec::with_capacity(expected.len());
        for (name, shape) in &expected {
            tensors.push(read(name, shape)?);
        }
        let mut it = tensors.into_iter();
        let mut next = || it.next().unwrap_or_default();
        let (mean, std, w1, b1, w2, b2) = (next(), next(), next(), next(), next(), next());
        Head::from_params(HeadParams {
            classes,
            kind,
            mean,
            std,
            w1,
            b1,
            w2,
            b2,
            unknown_threshold,
        })
        .map_err(|e| match e {
            HeadError::Invalid(reason) => HeadError::BadMetadata {
                key: "(tensors)".into(),
                reason,
            },
            other => other,
        })
    }
}

/// How far from 1 a stored centroid's length may be (rounding of the f32
/// normalisation, and of a save/load cycle, is far below this).
const CENTROID_NORM_TOLERANCE: f32 = 1e-3;

/// A centroid head compares raw embeddings by cosine: its stored
/// standardisation must be the identity (so nothing is silently ignored),
/// its bias zero and every centroid of unit length (so the score really is
/// a cosine).
fn validate_centroids(p: &HeadParams, dim: usize) -> Result<(), HeadError> {
    if p.mean.iter().any(|&m| m != 0.0) || p.std.iter().any(|&s| s != 1.0) {
        return Err(HeadError::Invalid(
            "a centroid head has no standardisation: 'mean' must be 0 and 'std' 1".into(),
        ));
    }
    if p.b1.iter().any(|&b| b != 0.0) {
        return Err(HeadError::Invalid(
            "a centroid head has no bias: 'b1' must be 0".into(),
        ));
    }
    for (c, row) in p.w1.chunks_exact(dim.max(1)).enumerate() {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if (norm - 1.0).abs() > CENTROID_NORM_TOLERANCE {
            return Err(HeadError::Invalid(format!(
                "centroid {c} has length {norm}, not 1"
            )));
        }
    }
    Ok(())
}

fn parse_meta<T: std::str::FromStr>(value: &str, key: &str) -> Result<T, HeadError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| HeadError::BadMetadata {
        key: key.to_string(),
        reason: format!("'{value}': {e}"),
    })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Checks that class names can be used as labels: non-empty, unique, and
/// not the reserved [`UNKNOWN_LABEL`] (a class called `unknown` could not be
/// told apart from a rejection). At least two are needed for a classifier.
pub(crate) fn validate_class_names(classes: &[String]) -> Result<(), ClassNamesError> {
    if classes.len() < 2 {
        return Err(ClassNamesError::TooFew(classes.len()));
    }
    for (i, c) in classes.iter().enumerate() {
        if c.trim().is_empty() {
            return Err(ClassNamesError::Empty(i));
        }
        if c == UNKNOWN_LABEL {
            return Err(ClassNamesError::Reserved);
        }
        if classes[..i].contains(c) {
            return Err(ClassNamesError::Twice(c.clone()));
        }
    }
    Ok(())
}

/// Why a list of class names cannot name a classifier's outputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassNamesError {
    #[error("a classifier needs at least two classes, got {0}")]
    TooFew(usize),
    #[error("class {0} has an empty name")]
    Empty(usize),
    #[error("'{UNKNOWN_LABEL}' is reserved for open-set rejections and cannot be a class name; rename that class")]
    Reserved,
    #[error("class name '{0}' appears twice")]
    Twice(String),
}

/// Index and value of the largest element (first one on ties); `(0, NaN)`
/// never happens for a softmax output, `(0, -inf)` for an empty slice.
pub(crate) fn argmax(v: &[f32]) -> (usize, f32) {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
}

/// Writes `(x - mean) * inv_std` for every row of `xs` into `out`.
pub(crate) fn standardize_rows(xs: &[f32], mean: &[f32], inv_std: &[f32], out: &mut [f32]) {
    let dim = mean.len();
    for (x, o) in xs.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        standardize_row(x, mean, inv_std, o);
    }
}

/// Writes `(x - mean) * inv_std` into `out` (one row).
#[inline]
pub(crate) fn standardize_row(x: &[f32], mean: &[f32], inv_std: &[f32], out: &mut [f32]) {
    for (((o, &x), &m), &s) in out.iter_mut().zip(x).zip(mean).zip(inv_std) {
        *o = (x - m) * s;
    }
}

/// Replaces logits by their softmax and returns log-sum-exp of the logits
/// (so the caller gets the cross-entropy `lse - z_y` without a `ln` of a
/// possibly underflowed probability).
#[inline]
pub(crate) fn softmax_in_place(z: &mut [f32]) -> f32 {
    let max = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sum = 0.0f32;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    z.iter_mut().for_each(|v| *v *= inv);
    max + sum.ln()
}

/// Lane count of the accumulators in the dot kernels. Eight `f32` lanes per
/// accumulator (two SSE/NEON registers, one AVX register) and several
/// independent accumulators hide the latency of the floating-point adds,
/// which a single running sum cannot (the compiler may not reorder float
/// additions on its own).
const LANES: usize = 8;

/// Dot product of two equally long slices.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ac, ar) = a[..n].as_chunks::<{ 2 * LANES }>();
    let (bc, br) = b[..n].as_chunks::<{ 2 * LANES }>();
    let mut acc = [0.0f32; 2 * LANES];
    for (x, y) in ac.iter().zip(bc) {
        for ((s, &p), &q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(p, q)| p * q).sum();
    acc.iter().sum::<f32>() + tail
}

/// Dots of one weight row with four input rows at once: the weight row is
/// loaded once for four products, halving memory traffic, and the four
/// accumulators are independent.
#[inline]
pub(crate) fn dot4(w: &[f32], x: [&[f32]; 4]) -> [f32; 4] {
    let n = x.iter().fold(w.len(), |m, r| m.min(r.len()));
    let (wc, wr) = w[..n].as_chunks::<LANES>();
    let (c0, r0) = x[0][..n].as_chunks::<LANES>();
    let (c1, r1) = x[1][..n].as_chunks::<LANES>();
    let (c2, r2) = x[2][..n].as_chunks::<LANES>();
    let (c3, r3) = x[3][..n].as_chunks::<LANES>();
    let mut acc = [[0.0f32; LANES]; 4];
    for ((((wv, v0), v1), v2), v3) in wc.iter().zip(c0).zip(c1).zip(c2).zip(c3) {
        for l in 0..LANES {
            // Constant trip count over fixed-size arrays: fully unrolled and
            // vectorised, no bounds checks.
            acc[0][l] += wv[l] * v0[l];
            acc[1][l] += wv[l] * v1[l];
            acc[2][l] += wv[l] * v2[l];
            acc[3][l] += wv[l] * v3[l];
        }
    }
    let mut out = acc.map(|a| a.iter().sum::<f32>());
    for ((((&wv, &v0), &v1), &v2), &v3) in wr.iter().zip(r0).zip(r1).zip(r2).zip(r3) {
        out[0] += wv * v0;
        out[1] += wv * v1;
        out[2] += wv * v2;
        out[3] += wv * v3;
    }
    out
}

/// `y += a * x`.
#[inline]
pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}

/// `y += a0*x0 + a1*x1 + a2*x2 + a3*x3`: one pass over `y` for four rank-1
/// updates, so the accumulator row is loaded and stored once instead of
/// four times.
#[inline]
pub(crate) fn axpy4(y: &mut [f32], a: [f32; 4], x: [&[f32]; 4]) {
    for ((((yv, &v0), &v1), &v2), &v3) in y.iter_mut().zip(x[0]).zip(x[1]).zip(x[2]).zip(x[3]) {
        *yv += a[0] * v0 + a[1] * v1 + a[2] * v2 + a[3] * v3;
    }
}

/// Dense layer on a block of rows: `out[i, o] = b[o] + w[o, :] . x[i, :]`,
/// where `x` is `rows x in_dim` and `out` is `rows x out_dim` with
/// `out_dim = b.len()` (`w` is `out_dim x in_dim`). Rows are taken four at a
/// time through [`dot4`].
pub(crate) fn linear_forward(w: &[f32], b: &[f32], x: &[f32], in_dim: usize, out: &mut [f32]) {
    let out_dim = b.len();
    if in_dim == 0 || out_dim == 0 {
        return;
    }
    let mut x_quads = x.chunks_exact(4 * in_dim);
    let mut out_quads = out.chunks_exact_mut(4 * out_dim);
    for (xq, oq) in x_quads.by_ref().zip(out_quads.by_ref()) {
        let (x0, rest) = xq.split_at(in_dim);
        let (x1, rest) = rest.split_at(in_dim);
        let (x2, x3) = rest.split_at(in_dim);
        let (o0, rest) = oq.split_at_mut(out_dim);
        let (o1, rest) = rest.split_at_mut(out_dim);
        let (o2, o3) = rest.split_at_mut(out_dim);
        for ((((w_o, &b_o), y0), y1), (y2, y3)) in w
            .chunks_exact(in_dim)
            .zip(b)
            .zip(o0.iter_mut())
            .zip(o1.iter_mut())
            .zip(o2.iter_mut().zip(o3.iter_mut()))
        {
            let [s0, s1, s2, s3] = dot4(w_o, [x0, x1, x2, x3]);
            *y0 = b_o + s0;
            *y1 = b_o + s1;
            *y2 = b_o + s2;
            *y3 = b_o + s3;
        }
    }
    for (xr, or) in x_quads
        .remainder()
        .chunks_exact(in_dim)
        .zip(out_quads.into_remainder().chunks_exact_mut(out_dim))
    {
        for ((w_o, &b_o), y) in w.chunks_exact(in_dim).zip(b).zip(or.iter_mut()) {
            *y = b_o + dot(w_o, xr);
        }
    }
}

/// Accumulates the weight and bias gradients of a dense layer:
/// `gw[o, :] += sum_i g[i, o] * x[i, :]`, `gb[o] += sum_i g[i, o]`, with
/// `g` the `rows x out_dim` gradient of the layer's output. Rows whose
/// gradient for `o` is zero in a whole group of four (ReLU units that were
/// off) are skipped.
pub(crate) fn linear_backward(gw: &mut [f32], gb: &mut [f32], g: &[f32], x: &[f32], in_dim: usize) {
    let out_dim = gb.len();
    if in_dim == 0 || out_dim == 0 {
        return;
    }
    for (o, (gw_o, gb_o)) in gw.chunks_exact_mut(in_dim).zip(gb.iter_mut()).enumerate() {
        let mut g_quads = g.chunks_exact(4 * out_dim);
        let mut x_quads = x.chunks_exact(4 * in_dim);
        for (gq, xq) in g_quads.by_ref().zip(x_quads.by_ref()) {
            // o < out_dim, so these indices are inside the 4-row chunk.
            let a = [
                gq[o],
                gq[out_dim + o],
                gq[2 * out_dim + o],
                gq[3 * out_dim + o],
            ];
            *gb_o += a[0] + a[1] + a[2] + a[3];
            if a.iter().any(|&v| v != 0.0) {
                let (x0, rest) = xq.split_at(in_dim);
                let (x1, rest) = rest.split_at(in_dim);
                let (x2, x3) = rest.split_at(in_dim);
                axpy4(gw_o, a, [x0, x1, x2, x3]);
            }
        }
        for (gr, xr) in g_quads
            .remainder()
            .chunks_exact(out_dim)
            .zip(x_quads.remainder().chunks_exact(in_dim))
        {
            let a = gr[o];
            *gb_o += a;
            if a != 0.0 {
                axpy(gw_o, a, xr);
            }
        }
    }
}

/// Gradient with respect to a dense layer's input:
/// `gx[i, :] = sum_o g[i, o] * w[o, :]` (`gx` is overwritten).
pub(crate) fn linear_input_grad(
    gx: &mut [f32],
    g: &[f32],
    w: &[f32],
    in_dim: usize,
    out_dim: usize,
) {
    if in_dim == 0 || out_dim == 0 {
        return;
    }
    for (gx_i, g_i) in gx.chunks_exact_mut(in_dim).zip(g.chunks_exact(out_dim)) {
        gx_i.fill(0.0);
        for (&a, w_o) in g_i.iter().zip(w.chunks_exact(in_dim)) {
            axpy(gx_i, a, w_o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A small deterministic head for tests: values follow a fixed pattern.
    fn sample_head(kind: HeadKind, classes: &[&str], dim: usize) -> Head {
        let k = classes.len();
        let out1 = match kind {
            HeadKind::Softmax | HeadKind::Centroid => k,
            HeadKind::Mlp { hidden, .. } => hidden,
        };
        let wave = |n: usize, s: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as f32 * 0.37 + s).sin()) * 0.5)
                .collect()
        };
        let (w2, b2) = match kind {
            HeadKind::Softmax | HeadKind::Centroid => (vec![], vec![]),
            HeadKind::Mlp { hidden, .. } => (wave(k * hidden, 3.0), wave(k, 4.0)),
        };
        Head::from_params(HeadParams {
            classes: names(classes),
            kind,
            mean: wave(dim, 0.1),
            std: (0..dim).map(|i| 0.5 + (i % 3) as f32 * 0.25).collect(),
            w1: wave(out1 * dim, 1.0),
            b1: wave(out1, 2.0),
            w2,
            b2,
            unknown_threshold: 0.4,
        })
        .unwrap()
    }

    /// Straightforward reference implementation of the forward pass.
    fn naive_probs(h: &Head, x: &[f32]) -> Vec<f32> {
        let p = h.params();
        let dim = h.dim();
        let xs: Vec<f32> = (0..dim).map(|d| (x[d] - p.mean[d]) / p.std[d]).collect();
        let lin = |w: &[f32], b: &[f32], v: &[f32]| -> Vec<f32> {
            (0..b.len())
                .map(|o| b[o] + (0..v.len()).map(|d| w[o * v.len() + d] * v[d]).sum::<f32>())
                .collect()
        };
        let z = match p.kind {
            HeadKind::Softmax | HeadKind::Centroid => lin(&p.w1, &p.b1, &xs),
            HeadKind::Mlp { .. } => {
                let h: Vec<f32> = lin(&p.w1, &p.b1, &xs).iter().map(|v| v.max(0.0)).collect();
                lin(&p.w2, &p.b2, &h)
            }
        };
        let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f32 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    fn input(dim: usize, s: f32) -> Vec<f32> {
        (0..dim).map(|i| ((i as f32) * 0.11 + s).cos()).collect()
    }

    #[test]
    fn matches_naive_forward_for_both_kinds_and_odd_sizes() {
        for kind in [
            HeadKind::Softmax,
            HeadKind::Mlp {
                hidden: 7,
                dropout: 0.2,
            },
        ] {
            // 37 is not a multiple of the kernel widths: exercises the tails.
            let h = sample_head(kind, &["a", "b", "none"], 37);
            for s in 0..9 {
                let x = input(37, s as f32);
                let got = h.probabilities(&x).unwrap();
                let want = naive_probs(&h, &x);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
                }
                assert!((got.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn batch_equals_single() {
        let h = sample_head(
            HeadKind::Mlp {
                hidden: 5,
                dropout: 0.0,
            },
            &["a", "b", "c"],
            19,
        );
        // 70 rows: more than one inference block plus a partial quad.
        let n = 70;
        let xs: Vec<f32> = (0..n).flat_map(|i| input(19, i as f32 * 0.3)).collect();
        let batch = h.probabilities_batch(&xs, n).unwrap();
        for i in 0..n {
            let single = h.probabilities(&xs[i * 19..(i + 1) * 19]).unwrap();
            for (a, b) in single.iter().zip(&batch[i * 3..(i + 1) * 3]) {
                assert!((a - b).abs() < 1e-6);
            }
        }
        assert!(h.probabilities_batch(&[], 0).unwrap().is_empty());
    }

    #[test]
    fn dimension_mismatch_is_an_error() {
        let h = sample_head(HeadKind::Softmax, &["a", "b"], 8);
        assert!(matches!(
            h.probabilities(&[0.0; 7]),
            Err(HeadError::DimensionMismatch {
                expected: 8,
                found: 7
            })
        ));
        assert!(h.predict(&[0.0; 9]).is_err());
        assert!(matches!(
            h.probabilities_batch(&[0.0; 15], 2),
            Err(HeadError::BatchShape { .. })
        ));
        assert!(h.probabilities_batch(&[0.0; 16], usize::MAX).is_err());
    }

    #[test]
    fn open_set_decisions() {
        let mut h = sample_head(HeadKind::Softmax, &["cat", "dog", "none"], 4);
        h.set_unknown_threshold(0.5).unwrap();
        let p = h.decide(vec![0.1, 0.8, 0.1]);
        assert_eq!(
            (p.label.as_str(), p.class_index, p.unknown),
            ("dog", Some(1), false)
        );
        let p = h.decide(vec![0.4, 0.35, 0.25]);
        assert_eq!(
            (p.label.as_str(), p.class_index, p.unknown),
            (UNKNOWN_LABEL, None, true)
        );
        assert!((p.score - 0.4).abs() < 1e-7);
        let p = h.decide(vec![0.1, 0.1, 0.8]);
        assert_eq!(
            (p.label.as_str(), p.class_index, p.unknown),
            (BACKGROUND_LABEL, Some(2), true)
        );
        // Malformed vectors cannot name a class.
        assert!(h.decide(vec![0.9, 0.1]).unknown);
        assert!(h.decide(vec![f32::NAN; 3]).unknown);
        assert!(h.set_unknown_threshold(1.5).is_err());
        assert!(h.set_unknown_threshold(f32::NAN).is_err());
    }

    #[test]
    fn safetensors_round_trip_is_exact() {
        for kind in [
            HeadKind::Softmax,
            HeadKind::Mlp {
                hidden: 6,
                dropout: 0.25,
            },
        ] {
            let h = sample_head(kind, &["a", "b \"quoted\"", "ünïcode"], 11);
            let bytes = h.to_safetensors().unwrap();
            let back = Head::from_safetensors(&bytes).unwrap();
            assert_eq!(back, h);
            let x = input(11, 0.7);
            assert_eq!(
                back.probabilities(&x).unwrap(),
                h.probabilities(&x).unwrap()
            );
        }
    }

    #[test]
    fn truncated_or_garbage_files_are_errors() {
        let h = sample_head(
            HeadKind::Mlp {
                hidden: 4,
                dropout: 0.1,
            },
            &["a", "b"],
            9,
        );
        let bytes = h.to_safetensors().unwrap();
        for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            let err = Head::from_safetensors(&bytes[..cut]).unwrap_err();
            assert!(matches!(err, HeadError::Format(_)), "cut {cut}: {err}");
        }
        assert!(Head::from_safetensors(b"not a safetensors file at all").is_err());
    }

    #[test]
    fn inconsistent_files_are_errors() {
        let h = sample_head(HeadKind::Softmax, &["a", "b"], 3);
        // Metadata claims three classes but w1 has two rows.
        let mut meta = HashMap::new();
        for (k, v) in [
            ("format", FORMAT_NAME),
            ("format_version", FORMAT_VERSION),
            ("kind", "softmax"),
            ("dim", "3"),
            ("classes", "[\"a\",\"b\",\"c\"]"),
            ("unknown_threshold", "0.4"),
        ] {
            meta.insert(k.to_string(), v.to_string());
        }
        let p = h.params();
        let blobs = [
            ("mean", vec![3], f32_bytes(&p.mean)),
            ("std", vec![3], f32_bytes(&p.std)),
            ("w1", vec![2, 3], f32_bytes(&p.w1)),
            ("b1", vec![2], f32_bytes(&p.b1)),
        ];
        let views: Vec<_> = blobs
            .iter()
            .map(|(n, s, b)| (*n, TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        let bytes = safetensors::serialize(views.clone(), Some(meta.clone())).unwrap();
        let err = Head::from_safetensors(&bytes).unwrap_err();
        assert!(matches!(err, HeadError::BadTensor { .. }), "{err}");
        assert!(err.to_string().contains("w1"));

        // Missing metadata.
        let bytes = safetensors::serialize(views.clone(), None).unwrap();
        assert!(matches!(
            Head::from_safetensors(&bytes),
            Err(HeadError::Missing { .. })
        ));

        // Wrong format tag.
        meta.insert("format".into(), "something-else".into());
        let bytes = safetensors::serialize(views, Some(meta)).unwrap();
        assert!(matches!(
            Head::from_safetensors(&bytes),
            Err(HeadError::BadMetadata { .. })
        ));
    }

    #[test]
    fn invalid_params_are_rejected() {
        let good = sample_head(HeadKind::Softmax, &["a", "b"], 3)
            .params()
            .clone();
        let mut p = good.clone();
        p.w1.pop();
        assert!(Head::from_params(p).is_err());
        let mut p = good.clone();
        p.std[0] = 0.0;
        assert!(Head::from_params(p).is_err());
        let mut p = good.clone();
        p.b1[1] = f32::NAN;
        assert!(Head::from_params(p).is_err());
        let mut p = good.clone();
        p.classes = names(&["a", "a"]);
        assert!(Head::from_params(p).is_err());
        let mut p = good.clone();
        p.classes = names(&["a", UNKNOWN_LABEL]);
        assert!(Head::from_params(p).is_err());
        let mut p = good;
        p.unknown_threshold = -0.1;
        assert!(Head::from_params(p).is_err());
    }

    #[test]
    fn kernels_match_naive() {
        let a: Vec<f32> = (0..45).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..45).map(|i| (i as f32).sin()).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
        let r = dot4(&a, [&b, &a, &b, &a]);
        assert!((r[0] - naive).abs() < 1e-3);
        assert!((r[1] - dot(&a, &a)).abs() < 1e-2);

        // linear_backward against a naive loop, 6 rows (one quad + 2 tail).
        let (rows, in_dim, out_dim) = (6, 5, 3);
        let x: Vec<f32> = (0..rows * in_dim).map(|i| (i as f32 * 0.7).cos()).collect();
        let g: Vec<f32> = (0..rows * out_dim)
            .map(|i| (i as f32 * 1.3).sin())
            .collect();
        let mut gw = vec![0.0; out_dim * in_dim];
        let mut gb = vec![0.0; out_dim];
        linear_backward(&mut gw, &mut gb, &g, &x, in_dim);
        for o in 0..out_dim {
            let sb: f32 = (0..rows).map(|i| g[i * out_dim + o]).sum();
            assert!((gb[o] - sb).abs() < 1e-5);
            for d in 0..in_dim {
                let s: f32 = (0..rows)
                    .map(|i| g[i * out_dim + o] * x[i * in_dim + d])
                    .sum();
                assert!((gw[o * in_dim + d] - s).abs() < 1e-5);
            }
        }
    }
}
