//! Vision: image decoding, preprocessing, the backbone, classification and detection.
//!
//! [`VisionModel`] glues the stages together for one model: it owns the preprocessor and the
//! backbone state, so a frame loop or a CLI command calls one method per image (or batch) and
//! gets the embedding, the ranked classes or the boxes in original-image pixels, with the time
//! each stage took. The backbone itself (load and run a graph on a backend) lives in
//! [`crate::runtime::backbone`], below vision, because audio models run on it too.

pub mod classify;
pub mod detect;
pub mod image_io;
pub mod motion;
pub mod preprocess;

use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Serialize;

use crate::model::manifest::{Decoder, DetectSpec, ModelKind, OutputRole, Task};
use crate::model::ResolvedModel;
use crate::runtime::backbone::{self, Backbone, BackboneError, BackboneOutput};
use crate::runtime::BackendOptions;
use classify::Ranked;
use preprocess::{PreprocessError, Preprocessor, Transform};

/// Errors of the vision pipeline.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error(transparent)]
    Backbone(#[from] BackboneError),
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error("{model}: {problem}")]
    Output { model: String, problem: String },
    #[error(
        "model '{model}' is an audio model; vision commands need an image model (e.g. mobilenetv2)"
    )]
    NotVision { model: String },
}

/// A detected object in original-image pixels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectedBox {
    pub label: String,
    pub class: usize,
    pub score: f32,
    /// `[x1, y1, x2, y2]` in pixels of the original image.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// Time per stage for one image (batch stages are split evenly across the batch).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimes {
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
}

/// What one image produced.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub width: u32,
    pub height: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<Ranked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detections: Option<Vec<DetectedBox>>,
    pub timings: StageTimes,
}

/// Per-call options.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    pub top_k: usize,
    pub detect: Option<DetectSpec>,
}

/// One vision model ready to run: preprocessing, backbone and decoding.
pub struct VisionModel {
    pub model: ResolvedModel,
    pre: Preprocessor,
    backbone: Backbone,
    input: Vec<f32>,
}

impl VisionModel {
    /// Loads and optimises the backbone for `batch` images per run, with tract on one thread.
    pub fn load(model: ResolvedModel, batch: usize) -> Result<VisionModel, VisionError> {
        VisionModel::load_with(model, batch, &BackendOptions::default())
    }

    /// Loads the backbone for `batch` images per run on the backend `opts` selects.
    pub fn load_with(
        model: ResolvedModel,
        batch: usize,
        opts: &BackendOptions,
    ) -> Result<VisionModel, VisionError> {
        if model.manifest.kind != ModelKind::Vision {
            return Err(VisionError::NotVision {
                model: model.manifest.name.clone(),
            });
        }
        let backbone = Backbone::load_with(&model, batch, opts)?;
        let pre = Preprocessor::new(&model.manifest.input, model.manifest.input_hw());
        let input = vec![0f32; backbone.input_shape().iter().product()];
        Ok(VisionModel {
            model,
            pre,
            backbone,
            input,
        })
    }

    /// The backbone (shape and load time).
    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    /// The backbone (for profiling and threads).
    pub fn backbone_mut(&mut self) -> &mut Backbone {
        &mut self.backbone
    }

    /// The preprocessed tensor of the last batch (benchmarks hand it to onnxruntime).
    pub fn last_input(&self) -> &[f32] {
        &self.input
    }

    /// Images per backbone run.
    pub fn batch(&self) -> usize {
        self.backbone.batch()
    }

    /// Preprocesses one image into slot 0 of the input buffer (benchmarks time this alone).
    pub fn preprocess(&mut self, img: &RgbImage) -> Result<Transform, VisionError> {
        let n = self.pre.tensor_len();
        Ok(self.pre.run(img, &mut self.input[..n])?)
    }

    /// Runs the backbone on the current input buffer.
    pub fn infer(&mut self) -> Result<BackboneOutput, VisionError> {
        Ok(self.backbone.run(&self.input)?)
    }

    /// Analyses images, `batch` at a time; a short last batch is padded with zeros.
    pub fn analyze(
        &mut self,
        images: &[&RgbImage],
        opts: &AnalyzeOptions,
    ) -> Result<Vec<Analysis>, VisionError> {
        let batch = self.batch();
        let item = self.pre.tensor_len();
        let mut results = Vec::with_capacity(images.len());
        for chunk in images.chunks(batch) {
            let t0 = Instant::now();
            let mut transforms = Vec::with_capacity(chunk.len());
            for (img, slot) in chunk.iter().zip(self.input.chunks_exact_mut(item)) {
                transforms.push(self.pre.run(img, slot)?);
            }
            self.input[chunk.len() * item..].fill(0.0);
            let t1 = Instant::now();
            let out = self.backbone.run(&self.input)?;
            let t2 = Instant::now();
            for (i, (img, transform)) in chunk.iter().zip(&transforms).enumerate() {
                let t3 = Instant::now();
                let mut a = self.postprocess(&out, i, batch, img, transform, opts)?;
                let share = |d: Duration| d.as_secs_f64() * 1e3 / chunk.len() as f64;
                a.timings = StageTimes {
                    preprocess_ms: share(t1 - t0),
                    inference_ms: share(t2 - t1),
                    postprocess_ms: t3.elapsed().as_secs_f64() * 1e3,
                };
                results.push(a);
            }
        }
        Ok(results)
    }

    fn postprocess(
        &self,
        out: &BackboneOutput,
        item: usize,
        batch: usize,
        img: &RgbImage,
        transform: &Transform,
        opts: &AnalyzeOptions,
    ) -> Result<Analysis, VisionError> {
        let m = &self.model.manifest;
        let slice = |role: OutputRole| -> Option<&[f32]> {
            let t = out.role(role)?;
            let per = t.data.len() / batch;
            t.data.get(item * per..(item + 1) * per)
        };
        let embedding = m
            .embedding
            .as_ref()
            .and_then(|_| slice(OutputRole::Embedding))
            .map(|e| e.to_vec());
        if let (Some(spec), Some(e)) = (&m.embedding, &embedding) {
            if e.len() != spec.dim {
                return Err(self.output_error(format!(
                    "embedding tensor {} has {} values per image, the manifest says dim = {}",
                    spec.tensor,
                    e.len(),
                    spec.dim
                )));
            }
        }
        let mut top = Vec::new();
        if m.task == Task::Classify {
            let (scores, is_logits) = match slice(OutputRole::Logits) {
                Some(l) => (l, true),
                None => match slice(OutputRole::Probabilities) {
                    Some(p) => (p, false),
                    None => return Err(self.output_error("no logits output".into())),
                },
            };
            let mut probs = scores.to_vec();
            if is_logits {
                classify::softmax_in_place(&mut probs);
            }
            top = classify::top_k(&probs, &self.model.labels, opts.top_k);
        }
        let detections = match (&m.task, &opts.detect) {
            (Task::Detect, Some(spec)) => Some(self.detect(out, item, batch, spec, transform)?),
            _ => None,
        };
        Ok(Analysis {
            width: img.width(),
            height: img.height(),
            embedding,
            top,
            detections,
            timings: StageTimes::default(),
        })
    }

    fn detect(
        &self,
        out: &BackboneOutput,
        item: usize,
        batch: usize,
        spec: &DetectSpec,
        transform: &Transform,
    ) -> Result<Vec<DetectedBox>, VisionError> {
        let (h, w) = self.model.manifest.input_hw();
        let num_classes = self.model.labels.len();
        fn per_item(t: &backbone::OutputTensor, item: usize, batch: usize) -> &[f32] {
            let per = t.data.len() / batch;
            &t.data[item * per..(item + 1) * per]
        }
        let raw = match spec.decoder {
            Decoder::Nanodet => {
                let mut levels = Vec::new();
                for s in out.tensors.iter().filter(|t| t.role == OutputRole::Scores) {
                    let Some(b) = out
                        .tensors
                        .iter()
                        .find(|t| t.role == OutputRole::Boxes && t.stride == s.stride)
                    else {
                        return Err(self.output_error(format!("no box tensor for {}", s.name)));
                    };
                    levels.push(detect::NanoDetLevel {
                        stride: s.stride.unwrap_or(0),
                        scores: per_item(s, item, batch),
                        boxes: per_item(b, item, batch),
                    });
                }
                let params = detect::NanoDetParams {
                    num_classes,
                    reg_max: spec.reg_max,
                    input_w: w,
                    input_h: h,
                    center_offset: spec.center_offset,
                    score_threshold: spec.score_threshold,
                };
                detect::decode_nanodet(&levels, &params)
            }
            Decoder::Yolov5 | Decoder::Yolov8 => {
                let Some(t) = out.role(OutputRole::Predictions) else {
                    return Err(self.output_error("no predictions output".into()));
                };
                let data = per_item(t, item, batch);
                let rows = num_classes
                    + if spec.decoder == Decoder::Yolov5 {
                        5
                    } else {
                        4
                    };
                let n = data.len() / rows.max(1);
                if spec.decoder == Decoder::Yolov5 {
                    detect::decode_yolov5(data, n, num_classes, spec.score_threshold, false)
                } else {
                    detect::decode_yolov8(data, n, num_classes, spec.score_threshold, false)
                }
            }
        }
        .map_err(|e| self.output_error(e.to_string()))?;
        let kept = detect::nms(raw, spec.iou_threshold, spec.max_detections);
        Ok(kept
            .into_iter()
            .map(|d| DetectedBox {
                label: self
                    .model
                    .labels
                    .get(d.class)
                    .cloned()
                    .unwrap_or_else(|| format!("class_{}", d.class)),
                class: d.class,
                score: d.score,
                bbox: transform.to_original(d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2),
            })
            .collect())
    }

    fn output_error(&self, problem: String) -> VisionError {
        VisionError::Output {
            model: self.model.manifest.name.clone(),
            problem,
        }
    }
}
