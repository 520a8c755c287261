//! Model manifests: everything adaptd must know to run an ONNX file correctly.
//!
//! An ONNX file says nothing about how its input was normalised during training, which
//! intermediate tensor is a good embedding, or what its outputs mean; getting any of these
//! wrong gives plausible but wrong answers rather than an error. The manifest states them
//! explicitly, next to the sha256 of the exact file it describes, so a manifest can never be
//! silently applied to a different model.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ModelError;

/// Vision or audio: decides which front end turns raw input into the model's tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    Vision,
    Audio,
}

/// What the network's own outputs are used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Class logits (and an embedding for the trainable head).
    Classify,
    /// Only an embedding (e.g. a speaker encoder).
    Embed,
    /// Boxes from a one-stage detector.
    Detect,
}

/// Memory layout of the image tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `[N, C, H, W]`, the PyTorch/ONNX convention.
    Nchw,
    /// `[N, H, W, C]`, the TensorFlow convention.
    Nhwc,
    /// `[N, frames, mels]` for audio models.
    FramesMels,
}

/// Channel order the network was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColorOrder {
    Rgb,
    Bgr,
}

/// How an arbitrary image is brought to the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// Shorter side to `resize_short`, then the centre `H x W` (the torchvision eval transform).
    CenterCrop,
    /// Straight to `H x W`, ignoring the aspect ratio.
    Stretch,
    /// Keep the aspect ratio, fit inside `H x W`, pad the rest with `pad_value` (centred).
    Letterbox,
}

/// The `[input]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub layout: Layout,
    #[serde(default = "default_color")]
    pub color: ColorOrder,
    #[serde(default = "default_resize")]
    pub resize: ResizeMode,
    /// For `center-crop`: the shorter side is resized to this before cropping.
    pub resize_short: Option<u32>,
    /// For `letterbox`: the pixel value (0..255) of the padding, before normalisation.
    #[serde(default)]
    pub pad_value: u8,
    /// Multiplier applied to 0..255 pixel values before mean/std (1/255 for [0, 1] inputs).
    #[serde(default = "one")]
    pub scale: f32,
    /// Per channel, in tensor channel order.
    #[serde(default = "zeros")]
    pub mean: [f32; 3],
    /// Per channel, in tensor channel order.
    #[serde(default = "ones")]
    pub std: [f32; 3],
}

fn default_color() -> ColorOrder {
    ColorOrder::Rgb
}
fn default_resize() -> ResizeMode {
    ResizeMode::Stretch
}
fn one() -> f32 {
    1.0
}
fn zeros() -> [f32; 3] {
    [0.0; 3]
}
fn ones() -> [f32; 3] {
    [1.0; 3]
}

/// The `[embedding]` table: where to cut the graph for the trainable head.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSpec {
    /// Tensor (or node) name inside the ONNX graph.
    pub tensor: String,
    pub dim: usize,
    /// True when the model already L2-normalises it.
    #[serde(default)]
    pub normalized: bool,
}

/// The `[finetune]` table: where the frozen trunk ends and the trainable tail begins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneSpec {
    /// The tail's input tensor: the trunk's activations there are cached per sample, and
    /// the ops from it to `[embedding].tensor` are trained with the head
    /// ([`crate::model::tail`]).
    pub cut: String,
    /// The cut tensor's shape for one sample, `[channels, height, width]`.
    pub cut_shape: [usize; 3],
}

impl FinetuneSpec {
    /// `(channels, positions)`: how the tail sees one sample's activations.
    pub fn cut_dims(&self) -> (usize, usize) {
        let [c, h, w] = self.cut_shape;
        (c, h * w)
    }
}

/// What an output tensor means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputRole {
    Logits,
    Probabilities,
    Embedding,
    /// NanoDet per-level class scores `[1, cells, classes]`.
    Scores,
    /// NanoDet per-level side distributions `[1, cells, 4 * (reg_max + 1)]`.
    Boxes,
    /// A YOLO head's single output tensor.
    Predictions,
}

/// One `[[outputs]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub role: OutputRole,
    /// Detector level stride, for `scores` / `boxes`.
    pub stride: Option<u32>,
}

/// Output layouts adaptd knows how to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decoder {
    Nanodet,
    Yolov5,
    Yolov8,
}

/// The `[detect]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectSpec {
    pub decoder: Decoder,
    #[serde(default = "default_reg_max")]
    pub reg_max: usize,
    #[serde(default)]
    pub center_offset: f32,
    #[serde(default = "default_score")]
    pub score_threshold: f32,
    #[serde(default = "default_iou")]
    pub iou_threshold: f32,
    #[serde(default = "default_max_det")]
    pub max_detections: usize,
}

fn default_reg_max() -> usize {
    7
}
fn default_score() -> f32 {
    0.35
}
fn default_iou() -> f32 {
    0.5
}
fn default_max_det() -> usize {
    100
}

/// The `[audio]` table (the speaker encoder's front end).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSpec {
    pub sample_rate: u32,
    pub n_fft: usize,
    pub hop: usize,
    pub n_mels: usize,
    pub fmin: f32,
    pub fmax: f32,
    pub mel_scale: String,
    pub mel_norm: String,
    pub power: f32,
    pub log: bool,
    pub target_dbfs: f32,
    pub window_frames: usize,
    pub window_step: usize,
}

/// A parsed model manifest plus where it came from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub file: String,
    pub sha256: String,
    pub kind: ModelKind,
    pub task: Task,
    pub labels: Option<String>,
    pub labels_sha256: Option<String>,
    pub licence: String,
    pub provenance: String,
    /// E.g. `int8-qdq`: tract needs a different loading path for these.
    pub quantized: Option<String>,
    pub input: InputSpec,
    pub embedding: Option<EmbeddingSpec>,
    /// Fine-tuning beyond the head; without it, only heads are trained.
    pub finetune: Option<FinetuneSpec>,
    #[serde(default)]
    pub outputs: Vec<OutputSpec>,
    pub detect: Option<DetectSpec>,
    pub audio: Option<AudioSpec>,
    /// Where the manifest was read from (`None` for the built-in ones).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// The manifests shipped with adaptd, so `--model mobilenetv2` works from anywhere.
const BUILTIN: &[(&str, &str)] = &[
    ("mobilenetv2", include_str!("../../models/mobilenetv2.toml")),
    (
        "mobilenetv2-int8",
        include_str!("../../models/mobilenetv2-int8.toml"),
    ),
    (
        "efficientnet-lite0",
        include_str!("../../models/efficientnet-lite0.toml"),
    ),
    ("nanodet-m", include_str!("../../models/nanodet-m.toml")),
    (
        "resemblyzer-ge2e",
        include_str!("../../models/resemblyzer-ge2e.toml"),
    ),
];

/// Names of the built-in manifests, for help texts and errors.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(n, _)| *n)
}

impl Manifest {
    /// Parses and validates manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ModelError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ModelError::Manifest {
            path: origin.to_string(),
            problem: e.to_string().trim_end().to_string(),
        })?;
        manifest.validate(origin)?;
        Ok(manifest)
    }

    /// Reads a manifest file.
    pub fn from_path(path: &Path) -> Result<Manifest, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            what: "read the manifest",
            source: e,
        })?;
        let mut m = Manifest::parse(&text, &path.display().to_string())?;
        m.origin = Some(path.to_path_buf());
        Ok(m)
    }

    /// A built-in manifest by name.
    pub fn builtin(name: &str) -> Option<Result<Manifest, ModelError>> {
        BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| Manifest::parse(text, &format!("built-in manifest '{n}'")))
    }

    /// Input height and width, from the pinned shape.
    pub fn input_hw(&self) -> (u32, u32) {
        let s = &self.input.shape;
        match self.input.layout {
            Layout::Nchw => (s[2] as u32, s[3] as u32),
            Layout::Nhwc => (s[1] as u32, s[2] as u32),
            Layout::FramesMels => (s[1] as u32, s[2] as u32),
        }
    }

    /// Outputs with a given role, in manifest order.
    pub fn outputs_with(&self, role: OutputRole) -> impl Iterator<Item = &OutputSpec> {
        self.outputs.iter().filter(move |o| o.role == role)
    }

    /// Checks the cross-field rules serde cannot express; the message says what to change.
    fn validate(&self, origin: &str) -> Result<(), ModelError> {
        let bad = |problem: String| ModelError::Manifest {
            path: origin.to_string(),
            problem,
        };
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "sha256 must be 64 hex digits (got {:?}); compute it with `sha256sum {}`",
                self.sha256, self.file
            )));
        }
        if let Some(f) = &self.finetune {
            if self.embedding.is_none() {
                return Err(bad(
                    "[finetune] needs an [embedding]: the tail runs from the cut to the embedding"
                        .into(),
                ));
            }
            if f.cut_shape.contains(&0) {
                return Err(bad(format!(
                    "[finetune].cut_shape {:?} must have three non-zero dimensions \
                     [channels, height, width]",
                    f.cut_shape
                )));
            }
        }
        let shape = &self.input.shape;
        let expected_rank = match self.input.layout {
            Layout::Nchw | Layout::Nhwc => 4,
            Layout::FramesMels => 3,
        };
        if shape.len() != expected_rank || shape.contains(&0) {
            return Err(bad(format!(
                "input.shape {shape:?} must have {expected_rank} non-zero dimensions for layout {:?}",
                self.input.layout
            )));
        }
        if self.kind == ModelKind::Vision {
            let channels = match self.input.layout {
                Layout::Nchw => shape[1],
                Layout::Nhwc => shape[3],
                Layout::FramesMels => {
                    return Err(bad("a vision model needs layout nchw or nhwc".into()));
                }
            };
            if channels != 3 {
                return Err(bad(format!(
                    "input has {channels} channels; adaptd feeds 3-channel colour images"
                )));
            }
            if self.input.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
                return Err(bad("input.std values must be finite and non-zero".into()));
            }
            if self.input.resize == ResizeMode::CenterCrop {
                let (h, w) = self.input_hw();
                match self.input.resize_short {
                    Some(s) if s >= h.max(w) => {}
                    Some(s) => {
                        return Err(bad(format!(
                            "input.resize_short = {s} is smaller than the crop {w}x{h}"
                        )))
                    }
                    None => {
                        return Err(bad(
                            "resize = \"center-crop\" needs input.resize_short".into()
                        ))
                    }
                }
            }
        }
        if self.kind == ModelKind::Audio && self.audio.is_none() {
            return Err(bad("an audio model needs an [audio] table".into()));
        }
        match self.task {
            Task::Detect => {
                let Some(detect) = &self.detect else {
                    return Err(bad("task = \"detect\" needs a [detect] table".into()));
                };
                if self.labels.is_none() {
                    return Err(bad("task = \"detect\" needs a labels file".into()));
                }
                match detect.decoder {
                    Decoder::Nanodet => {
                        let scores: Vec<_> = self.outputs_with(OutputRole::Scores).collect();
                        let boxes: Vec<_> = self.outputs_with(OutputRole::Boxes).collect();
                        if scores.is_empty() || scores.len() != boxes.len() {
                            return Err(bad("decoder nanodet needs one `scores` and one `boxes` output per stride".into()));
                        }
                        for s in &scores {
                            let Some(stride) = s.stride else {
                                return Err(bad(format!("output {} needs a stride", s.name)));
                            };
                            if !boxes.iter().any(|b| b.stride == Some(stride)) {
                                return Err(bad(format!("no `boxes` output for stride {stride}")));
                            }
                        }
                    }
                    Decoder::Yolov5 | Decoder::Yolov8 => {
                        if self.outputs_with(OutputRole::Predictions).count() != 1 {
                            return Err(bad(
                                "YOLO decoders need exactly one output with role = \"predictions\""
                                    .into(),
                            ));
                        }
                    }
                }
            }
            Task::Classify => {
                if self.outputs_with(OutputRole::Logits).count()
                    + self.outputs_with(OutputRole::Probabilities).count()
                    != 1
                {
                    return Err(bad(
                        "task = \"classify\" needs exactly one output with role logits or probabilities"
                            .into(),
                    ));
                }
                if self.labels.is_none() {
                    return Err(bad("task = \"classify\" needs a labels file".into()));
                }
            }
            Task::Embed => {
                if self.embedding.is_none() {
                    return Err(bad("task = \"embed\" needs an [embedding] table".into()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_manifest_parses() {
        for name in builtin_names() {
            let m = Manifest::builtin(name).unwrap().unwrap();
            assert_eq!(m.name, name);
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_the_key_named() {
        let text =
            include_str!("../../models/mobilenetv2.toml").replace("[input]", "colour = 1\n[input]");
        let err = Manifest::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("x.toml"), "{err}");
    }

    #[test]
    fn center_crop_needs_resize_short() {
        let text = include_str!("../../models/mobilenetv2.toml").replace("resize_short = 256", "");
        let err = Manifest::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("resize_short"), "{err}");
    }

    #[test]
    fn bad_sha_is_refused() {
        let text = include_str!("../../models/mobilenetv2.toml").replace("131a148e82c2bebd", "zz");
        let err = Manifest::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("sha256"), "{err}");
    }
}
