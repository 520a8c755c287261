//! Per-frame work on the inference thread.
//!
//! One backbone run per frame serves everything: the classifier's embedding goes through the
//! head in service (the user's own classes), a detector's boxes are each cropped and sent
//! through the classification backbone and head for a sub-label (person -> `alice`), and the
//! results go through consensus so labels do not flap. The head lives behind an `ArcSwap`:
//! the training thread swaps a new one in and the next frame uses it, without a lock on the
//! frame path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use image::RgbImage;

use crate::adapt::Head;
use crate::consensus::{Consensus, Event};
use crate::model::manifest::Task;
use crate::vision::motion::{MotionConfig, MotionGate};
use crate::vision::{AnalyzeOptions, VisionError, VisionModel};

/// The head in service and its version.
#[derive(Debug)]
pub struct ServingHead {
    pub version: u32,
    pub head: Head,
}

/// Shared slot for the head in service: written by training/rollback, read per frame.
pub type HeadSlot = Arc<ArcSwapOption<ServingHead>>;

pub use crate::wire::{HeadLabel, Item, UtteranceInfo};

/// Everything one frame produced: the `detections` message and what stays in the daemon.
#[derive(Debug, Clone)]
pub struct FrameResult {
    /// The frame's sequence number (for audio: the utterance's).
    pub frame_id: u64,
    pub time_unix_ms: i64,
    /// Frame size in pixels; 0 for audio.
    pub width: u32,
    pub height: u32,
    /// For audio: where the utterance lies in the stream and how loud it was.
    pub utterance: Option<UtteranceInfo>,
    pub items: Vec<Item>,
    pub inference_ms: f64,
    pub events: Vec<Event>,
    /// Embeddings of the frame (classifier: one) or of each item's crop (detector: one per
    /// item, in item order; `None` for a box whose class is not sub-labelled), kept so a
    /// `label` command can store the sample without re-running the backbone.
    pub embeddings: Vec<Option<Vec<f32>>>,
}

impl FrameResult {
    /// The `<camera>/detections` message.
    pub fn detections(&self, camera: &str) -> crate::wire::Detections {
        crate::wire::Detections {
            camera: Some(camera.to_owned()),
            frame_id: self.frame_id,
            time_unix_ms: self.time_unix_ms,
            width: (self.width > 0).then_some(self.width),
            height: (self.height > 0).then_some(self.height),
            utterance: self.utterance.clone(),
            items: self.items.clone(),
            inference_ms: self.inference_ms,
        }
    }
}

/// The loaded vision models of one inference worker, shared by every camera that names
/// them: a camera refers to a model by its index here.
pub type VisionEngines = Vec<VisionModel>;

/// The per-frame processor.
pub struct Pipeline {
    /// The backbone, an index into the worker's [`VisionEngines`].
    main: usize,
    /// For detectors: the classification backbone that embeds each box for the head. Loaded
    /// once, its input pinned to one image of the model's size: each crop, whatever its size,
    /// is resized to that by preprocessing, so no crop makes either backend re-plan or
    /// re-optimise the graph (tract's plan and onnxruntime's session are built at load only).
    crops: Option<usize>,
    head: HeadSlot,
    consensus: Consensus,
    opts: AnalyzeOptions,
    /// Detector classes whose boxes get a sub-label (empty = all).
    sublabel_classes: Vec<String>,
    /// Skips the backbone on still frames; off unless [`Pipeline::with_motion`] turns it on.
    motion: MotionGate,
}

impl Pipeline {
    pub fn new(
        main: usize,
        crops: Option<usize>,
        head: HeadSlot,
        consensus: Consensus,
        opts: AnalyzeOptions,
        sublabel_classes: Vec<String>,
    ) -> Pipeline {
        Pipeline {
            main,
            crops,
            head,
            consensus,
            opts,
            sublabel_classes,
            motion: MotionGate::new(MotionConfig {
                enabled: false,
                ..MotionConfig::default()
            }),
        }
    }

    /// Gates the backbone on motion (`[motion]`).
    pub fn with_motion(mut self, cfg: MotionConfig) -> Pipeline {
        self.motion = MotionGate::new(cfg);
        self
    }

    /// The motion gate, judged on every frame before [`Pipeline::process`].
    pub fn motion_mut(&mut self) -> &mut MotionGate {
        &mut self.motion
    }

    pub fn consensus_mut(&mut self) -> &mut Consensus {
        &mut self.consensus
    }

    pub fn options_mut(&mut self) -> &mut AnalyzeOptions {
        &mut self.opts
    }

    /// The engine whose embeddings the head is trained on (the classifier, or the crop model).
    pub fn embedding_engine(&self) -> usize {
        self.crops.unwrap_or(self.main)
    }

    /// Runs everything on one frame.
    pub fn process(
        &mut self,
        engines: &mut [VisionModel],
        frame_id: u64,
        time_unix_ms: i64,
        img: &RgbImage,
    ) -> Result<FrameResult, VisionError> {
        let start = Instant::now();
        let missing = |i: usize| VisionError::Output {
            model: format!("engine {i}"),
            problem: "no such engine in this worker (internal error)".into(),
        };
        let main = engines
            .get_mut(self.main)
            .ok_or_else(|| missing(self.main))?;
        let is_detector = main.model.manifest.task == Task::Detect;
        let analysis = main
            .analyze(&[img], &self.opts)?
            .into_iter()
            .next()
            .ok_or_else(|| VisionError::Output {
                model: main.model.manifest.name.clone(),
                problem: "no analysis for the frame".into(),
            })?;
        let head = self.head.load_full();
        let mut items = Vec::new();
        let mut embeddings = Vec::new();
        let mut observations = BTreeMap::new();
        if is_detector {
            for d in analysis.detections.unwrap_or_default() {
                let wanted =
                    self.sublabel_classes.is_empty() || self.sublabel_classes.contains(&d.label);
                let mut sub = None;
                let crops = match self.crops {
                    Some(i) => Some(engines.get_mut(i).ok_or_else(|| missing(i))?),
                    None => None,
                };
                if let (true, Some(crops)) = (wanted, crops) {
                    let crop = crop(img, d.bbox);
                    let e = crops
                        .analyze(
                            &[&crop],
                            &AnalyzeOptions {
                                top_k: 0,
                                detect: None,
                            },
                        )?
                        .into_iter()
                        .next()
                        .and_then(|a| a.embedding);
                    if let Some(e) = &e {
                        sub = head.as_deref().and_then(|h| head_label(h, e));
                    }
                    embeddings.push(e);
                } else {
                    embeddings.push(None);
                }
                let (label, score) = match &sub {
                    Some(h) if !h.unknown => (h.label.clone(), h.score),
                    _ => (d.label.clone(), d.score),
                };
                // One observation per detector class: the best-scoring item of that class.
                let e = observations
                    .entry(d.label.clone())
                    .or_insert((label.clone(), score));
                if score > e.1 {
                    *e = (label, score);
                }
                items.push(Item {
                    label: d.label,
                    score: d.score,
                    bbox: Some(d.bbox),
                    head: sub,
                });
            }
        } else {
            let top = analysis.top.first().cloned();
            let sub = match (&analysis.embedding, head.as_deref()) {
                (Some(e), Some(h)) => head_label(h, e),
                _ => None,
            };
            if analysis.embedding.is_some() {
                embeddings.push(analysis.embedding);
            }
            match &sub {
                Some(h) if !h.unknown => {
                    observations.insert("scene".to_string(), (h.label.clone(), h.score));
                }
                Some(_) => {}
                None => {
                    if let Some(t) = &top {
                        observations.insert("scene".to_string(), (t.label.clone(), t.score));
                    }
                }
            }
            if let Some(t) = top {
                items.push(Item {
                    label: t.label,
                    score: t.score,
                    bbox: None,
                    head: sub,
                });
            }
        }
        let events = self.consensus.observe(&observations);
        Ok(FrameResult {
            frame_id,
            time_unix_ms,
            width: img.width(),
            height: img.height(),
            utterance: None,
            items,
            inference_ms: start.elapsed().as_secs_f64() * 1e3,
            events,
            embeddings,
        })
    }
}

pub(crate) fn head_label(h: &ServingHead, embedding: &[f32]) -> Option<HeadLabel> {
    let p = h.head.predict(embedding).ok()?;
    Some(HeadLabel {
        label: p.label,
        score: p.score,
        unknown: p.unknown,
        head_version: h.version,
    })
}

/// The box's pixels (at least 1x1, clipped to the frame).
pub fn crop(img: &RgbImage, bbox: [f32; 4]) -> RgbImage {
    let (w, h) = img.dimensions();
    let x1 = (bbox[0].max(0.0) as u32).min(w.saturating_sub(1));
    let y1 = (bbox[1].max(0.0) as u32).min(h.saturating_sub(1));
    let x2 = (bbox[2].ceil().max(0.0) as u32).clamp(x1 + 1, w.max(x1 + 1));
    let y2 = (bbox[3].ceil().max(0.0) as u32).clamp(y1 + 1, h.max(y1 + 1));
    image::imageops::crop_imm(img, x1, y1, (x2 - x1).min(w - x1), (y2 - y1).min(h - y1)).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_are_clipped_and_never_empty() {
        let img = RgbImage::new(100, 50);
        assert_eq!(crop(&img, [10.0, 10.0, 20.5, 30.0]).dimensions(), (11, 20));
        assert_eq!(
            crop(&img, [-5.0, -5.0, 500.0, 500.0]).dimensions(),
            (100, 50)
        );
        assert_eq!(crop(&img, [99.9, 49.9, 99.9, 49.9]).dimensions(), (1, 1));
        assert_eq!(crop(&img, [f32::NAN, 0.0, 10.0, 10.0]).dimensions().1, 10);
    }
}
