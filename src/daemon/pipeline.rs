//! Per-frame work on the inference thread.
//!
//! One backbone run per frame serves everything: the classifier's embedding goes through the
//! head in service (the user's own classes); a detector's boxes are tracked into objects
//! ([`super::objects`]), and an object of a class the sub-label model applies to has its good
//! crops sent through the classification backbone and head a few times for a sub-label
//! (person -> `alice`, agreed over the attempts), not every box of every frame; the results go
//! through consensus so labels do not flap. The frame is kept in a ring ([`super::frames`]) so
//! a `label` command can name it later ([`Pipeline::pinned`]). The head lives behind an `ArcSwap`:
//! the training thread swaps a new one in and the next frame uses it, without a lock on the
//! frame path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use image::RgbImage;

pub use super::frames::crop;
use super::frames::{FrameRing, KeptFrame};
use super::objects::{CameraObjects, SnapshotDue};
use super::occupancy::Count;
use super::snapshot_writer::{SnapshotJob, SnapshotWriter};
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

/// Detector class -> the head slot of its false-positive filter
/// ([`super::false_positives::FpFilters`] adds a class when it gets its first feedback).
pub type FpSlots = Arc<arc_swap::ArcSwap<BTreeMap<String, HeadSlot>>>;

pub use crate::wire::{HeadLabel, Item, ObjectEvent, UtteranceInfo};

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
    /// The `<camera>/objects` messages of the frame (detectors).
    pub objects: Vec<ObjectEvent>,
    /// Occupancy counts that changed with the frame, for `<camera>/<zone>/<label>`.
    pub counts: Vec<Count>,
    /// A classifier's embedding of the frame (a detector's boxes are embedded when a `label`
    /// command asks, from the frames ring), kept so a `label` command can store the sample
    /// without re-running the backbone.
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
    /// Capture time (seconds) of the last frame the gate skipped since the last analysed
    /// one: the tracker holds its objects through that stillness.
    still_until: Option<f64>,
    /// Detectors: the tracked objects ([`Pipeline::with_objects`]).
    objects: Option<CameraObjects>,
    /// The recent frames a `label` command may name.
    frames: FrameRing,
    /// Detectors: the false-positive filters of the crop embedder's classes.
    fp: Option<FpSlots>,
    /// Detectors: where objects' snapshots are written (`None`: `[snapshots]` off).
    snapshots: Option<SnapshotWriter>,
}

/// What a `label` command points at.
#[derive(Debug, Clone, PartialEq)]
pub enum Pin {
    /// A tracked object: its best crop.
    Object(String),
    /// Detection `index` of frame `frame_id` (the newest frame when `None`).
    Detection { frame_id: Option<u64>, index: u32 },
    /// A box drawn on frame `frame_id`, in its pixels.
    Box { frame_id: u64, bbox: [f32; 4] },
    /// A whole frame (classifiers).
    Frame { frame_id: Option<u64> },
}

/// A sample a `label` command pointed at: its embedding, and the picture to keep with it.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub embedding: Vec<f32>,
    pub picture: Arc<RgbImage>,
    /// The detector class of the crop; `None` for a whole frame.
    pub class: Option<String>,
    pub frame_id: u64,
    /// The object it belongs to, when there is one.
    pub object: Option<String>,
}

/// An object a person called a false positive: the crop to file as `none` under its class's
/// filter, and recent true objects of the class for the other side.
#[derive(Debug, Clone)]
pub struct FalsePositive {
    pub object: String,
    pub class: String,
    pub negative: Pinned,
    pub positives: Vec<Pinned>,
}

/// True examples harvested per correction: enough for the filter to see what the class looks
/// like here, few enough that one correction cannot flood the store.
const TRUE_EXAMPLES_PER_CORRECTION: usize = 4;

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
            still_until: None,
            objects: None,
            frames: FrameRing::new(0.0, 0),
            fp: None,
            snapshots: None,
        }
    }

    /// Writes a snapshot of each object (a detector's): its first fit crop's frame, then
    /// clearly better ones.
    pub fn set_snapshots(&mut self, writer: SnapshotWriter) {
        self.snapshots = Some(writer);
    }

    /// Judges a detector's objects with the false-positive filters of its crop embedder.
    pub fn with_false_positive_filters(mut self, fp: FpSlots) -> Pipeline {
        self.fp = Some(fp);
        self
    }

    /// Tracks a detector's boxes into objects.
    pub fn with_objects(mut self, objects: CameraObjects) -> Pipeline {
        self.objects = Some(objects);
        self
    }

    /// Keeps recent frames for `label` commands (`[frames]`).
    pub fn with_frames(mut self, frames: FrameRing) -> Pipeline {
        self.frames = frames;
        self
    }

    /// Keeps an analysed frame (the same picture the latest-frame slot holds).
    pub fn keep(&mut self, image: Arc<RgbImage>, result: &FrameResult) {
        self.frames.push(KeptFrame {
            frame_id: result.frame_id,
            time_unix_ms: result.time_unix_ms,
            image,
            items: result.items.clone(),
            embedding: result.embeddings.first().cloned().flatten(),
        });
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

    /// The gate skipped a frame captured at `unix_ms`: nothing moved up to then.
    pub fn still_at(&mut self, unix_ms: i64) {
        self.still_until = Some(unix_ms as f64 / 1000.0);
    }

    pub fn consensus_mut(&mut self) -> &mut Consensus {
        &mut self.consensus
    }

    /// The detector's score threshold for publishing (`None` for a classifier).
    pub fn score_threshold(&self) -> Option<f32> {
        self.opts.detect.as_ref().map(|d| d.score_threshold)
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
        // Tracking wants the boxes down to its low score (a half-hidden person scores low);
        // only those of an object are published below the user's threshold.
        let mut opts = self.opts.clone();
        let publish_threshold = opts.detect.as_ref().map_or(0.0, |d| d.score_threshold);
        if let (Some(d), Some(o)) = (opts.detect.as_mut(), self.objects.as_ref()) {
            d.score_threshold = d.score_threshold.min(o.low_score());
        }
        let analysis = main
            .analyze(&[img], &opts)?
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
        let mut objects = Vec::new();
        let mut counts = Vec::new();
        if is_detector {
            let dets = analysis.detections.unwrap_or_default();
            let t = time_unix_ms as f64 / 1000.0;
            let version = head.as_ref().map(|h| h.version);
            let ids = match self.objects.as_mut() {
                Some(o) => {
                    o.set_frame_size(img.width(), img.height());
                    if let Some(w) = &self.snapshots {
                        for id in w.take_saved(o.camera()) {
                            o.snapshot_saved(&id);
                        }
                    }
                    if let Some(still) = self.still_until.take() {
                        o.hold(still);
                    }
                    let raw: Vec<_> = dets.iter().map(|d| (d.class, d.score, d.bbox)).collect();
                    let update = o.track(t, &raw, publish_threshold);
                    // One copy of the frame for every snapshot it gives (usually none).
                    let mut frame: Option<Arc<RgbImage>> = None;
                    for (d, tid) in dets.iter().zip(&update.ids) {
                        let Some(tid) = *tid else { continue };
                        let at = super::objects::At { frame_id, t };
                        // The class's false-positive filter, when it has one in service.
                        let fp = self
                            .fp
                            .as_ref()
                            .map(|f| f.load())
                            .filter(|f| !f.is_empty())
                            .and_then(|f| {
                                let key = crate::label::slug(&d.label);
                                f.get(&key).and_then(|s| s.load_full())
                            });
                        let fp_version = fp.as_ref().map(|h| h.version);
                        let heads = super::objects::Heads {
                            name: version,
                            fp: fp_version,
                        };
                        let offer = o.offer(tid, d.class, at, img, d.bbox, heads);
                        if let Some(w) = &self.snapshots {
                            if let Some(due) = o.snapshot_due(tid, frame_id, t) {
                                let frame =
                                    frame.get_or_insert_with(|| Arc::new(img.clone())).clone();
                                w.submit(snapshot_job(o.camera(), due, d, frame));
                            }
                        }
                        let Some(offer) = offer else {
                            continue;
                        };
                        let name = head.as_deref().filter(|_| offer.name);
                        let judge = fp.as_deref().filter(|_| offer.fp);
                        let Some(ci) = self.crops.filter(|_| name.is_some() || judge.is_some())
                        else {
                            continue;
                        };
                        // One crop embedding serves both the filter and the sub-label head.
                        let e = embed(engines, ci, &crop(img, d.bbox))?;
                        if let Some(f) = judge {
                            let is_false = f
                                .head
                                .predict(&e)
                                .is_ok_and(|p| p.label == crate::adapt::BACKGROUND_LABEL);
                            o.record_fp(tid, is_false, offer.quality, &e);
                        }
                        if let Some(h) = name {
                            o.record(tid, head_label(h, &e).as_ref(), offer.quality, t, e);
                        }
                    }
                    objects = o.events(frame_id, &update);
                    counts = o.take_counts();
                    update.ids
                }
                None => vec![None; dets.len()],
            };
            for (d, tid) in dets.into_iter().zip(ids) {
                // Boxes under the camera's threshold were asked for only to keep objects
                // alive (`objects` has them); `detections` keeps its meaning.
                if d.score < publish_threshold {
                    continue;
                }
                let o = self.objects.as_ref();
                let sub = tid.and_then(|t| o.and_then(|o| o.sub_label(t)));
                let id = tid.and_then(|t| o.and_then(|o| o.object_id(t)).map(str::to_owned));
                let suppressed = tid.is_some_and(|t| o.is_some_and(|o| o.suppressed(t)));
                if suppressed {
                    items.push(Item {
                        label: d.label,
                        score: d.score,
                        bbox: Some(d.bbox),
                        id,
                        head: sub,
                        suppressed,
                    });
                    continue;
                }
                let (label, score) = match &sub {
                    Some(h) => (h.label.clone(), h.score),
                    None => (d.label.clone(), d.score),
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
                    id,
                    head: sub,
                    suppressed: false,
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
                    id: None,
                    head: sub,
                    suppressed: false,
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
            objects,
            counts,
            embeddings,
        })
    }

    /// Kept frame `frame_id` (the newest when `None`).
    fn kept(&self, frame_id: Option<u64>) -> Result<&KeptFrame, String> {
        match frame_id {
            Some(id) => self.frames.get(id).map_err(|m| m.to_string()),
            None => self.frames.latest().ok_or_else(|| {
                "no frame has been processed yet; wait for its `detections`".to_owned()
            }),
        }
    }

    /// Detection `index` of kept frame `frame_id`, with its frame.
    fn detection(&self, frame_id: Option<u64>, index: u32) -> Result<(&KeptFrame, &Item), String> {
        let f = self.kept(frame_id)?;
        let item = f.items.get(index as usize).ok_or_else(|| {
            format!(
                "detection {index} does not exist: frame {} has {} detection(s)",
                f.frame_id,
                f.items.len()
            )
        })?;
        Ok((f, item))
    }

    /// What a `label` command points at, embedded with the head's model.
    pub fn pinned(&self, engines: &mut [VisionModel], pin: &Pin) -> Result<Pinned, String> {
        let engine = self.embedding_engine();
        let detector = self.objects.is_some() || self.crops.is_some();
        let frame = |id: Option<u64>| self.kept(id);
        let embed_crop = |engines: &mut [VisionModel], crop: &RgbImage| {
            embed(engines, engine, crop).map_err(|e| e.to_string())
        };
        match pin {
            Pin::Object(id) => {
                let o = self.objects.as_ref().ok_or_else(|| {
                    "`object` names a tracked object, and this camera's model classifies whole \
                     frames: give `frame_id` (or nothing, for the latest frame)"
                        .to_owned()
                })?;
                let best = o.best_crop(id).ok_or_else(|| {
                    format!(
                        "no object {id:?} on this camera now or among its recently ended ones \
                         ([frames].keep_ended_objects); use an `id` from `detections` or `objects`"
                    )
                })?;
                let embedding = match &best.embedding {
                    Some(e) => e.clone(),
                    None => embed_crop(engines, &best.crop)?,
                };
                Ok(Pinned {
                    embedding,
                    picture: best.crop.clone(),
                    class: Some(best.class.clone()),
                    frame_id: best.frame_id,
                    object: Some(id.clone()),
                })
            }
            Pin::Frame { .. } if detector => Err(
                "this is a detector: give `object` (a tracked object's id), `detection` (an index \
                 into a frame's `detections` items, with its `frame_id`) or `box` with `frame_id`"
                    .into(),
            ),
            Pin::Frame { frame_id } => {
                let f = frame(*frame_id)?;
                let embedding = f
                    .embedding
                    .clone()
                    .ok_or_else(|| "the frame has no embedding".to_owned())?;
                Ok(Pinned {
                    embedding,
                    picture: f.image.clone(),
                    class: None,
                    frame_id: f.frame_id,
                    object: None,
                })
            }
            Pin::Detection { .. } | Pin::Box { .. } if !detector => Err(
                "`detection` and `box` are for detectors; this model classifies whole frames: \
                 give only `frame_id` (or nothing, for the latest frame)"
                    .into(),
            ),
            Pin::Detection { frame_id, index } => {
                let (f, item) = self.detection(*frame_id, *index)?;
                if !self.sublabel_classes.contains(&item.label) {
                    return Err(format!(
                        "detection {index} is a {:?} box, and the sub-label model applies to {} \
                         only (applies_to); label a box of one of those classes",
                        item.label,
                        self.sublabel_classes.join(", ")
                    ));
                }
                let b = item.bbox.unwrap_or([0.0; 4]);
                let picture = crop(&f.image, b);
                Ok(Pinned {
                    embedding: embed_crop(engines, &picture)?,
                    picture: Arc::new(picture),
                    class: Some(item.label.clone()),
                    frame_id: f.frame_id,
                    object: item.id.clone(),
                })
            }
            Pin::Box { frame_id, bbox } => {
                let f = frame(Some(*frame_id))?;
                let (w, h) = (f.image.width() as f32, f.image.height() as f32);
                let [x1, y1, x2, y2] = *bbox;
                if !(bbox.iter().all(|v| v.is_finite())
                    && x1 >= 0.0
                    && y1 >= 0.0
                    && x2 <= w
                    && y2 <= h
                    && x2 - x1 >= 8.0
                    && y2 - y1 >= 8.0)
                {
                    return Err(format!(
                        "box {bbox:?} is not inside frame {frame_id} ({w}x{h} pixels) or is \
                         smaller than 8x8: give [x1, y1, x2, y2] in the frame's pixels"
                    ));
                }
                // The class of the detection it covers, if any: a box drawn around something
                // the detector missed is a crop of no class.
                let b = crate::vision::detect::BBox { x1, y1, x2, y2 };
                let over = f
                    .items
                    .iter()
                    .filter_map(|i| {
                        let [a, c, d, e] = i.bbox?;
                        let iou = b.iou(&crate::vision::detect::BBox {
                            x1: a,
                            y1: c,
                            x2: d,
                            y2: e,
                        });
                        (iou >= 0.3).then_some((iou, i))
                    })
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, i)| i);
                let picture = crop(&f.image, *bbox);
                Ok(Pinned {
                    embedding: embed_crop(engines, &picture)?,
                    picture: Arc::new(picture),
                    class: Some(over.map_or("box".to_owned(), |i| i.label.clone())),
                    frame_id: f.frame_id,
                    object: over.and_then(|i| i.id.clone()),
                })
            }
        }
    }
}

impl Pipeline {
    /// `false_positive` / `label none`: marks the object `pin` points at (an object id, or a
    /// detection or box of a kept frame that belongs to one) and returns its crop and recent
    /// true objects of its class, embedded, for the class's filter.
    pub fn false_positive(
        &mut self,
        engines: &mut [VisionModel],
        pin: &Pin,
    ) -> Result<FalsePositive, String> {
        let id = match pin {
            Pin::Object(id) => id.clone(),
            Pin::Frame { .. } => {
                return Err(
                    "a false positive is a tracked object: give `object` (its id), or \
                     `detection` or `box` with the `frame_id` it was seen in"
                        .into(),
                )
            }
            Pin::Detection { frame_id, index } => {
                let (f, item) = self.detection(*frame_id, *index)?;
                item.id.clone().ok_or_else(|| {
                    format!(
                        "detection {index} of frame {} is not a tracked object yet (seen too \
                         briefly), so there is nothing to suppress; give the `id` of an object",
                        f.frame_id
                    )
                })?
            }
            Pin::Box { .. } => self.pinned(engines, pin)?.object.ok_or_else(|| {
                "that box is not a tracked object (too brief or under the camera's \
                     score_threshold), so there is nothing to suppress; give the `id` of an \
                     object from `detections` or `objects`"
                    .to_owned()
            })?,
        };
        let engine = self.embedding_engine();
        let objects = self.objects.as_mut().ok_or_else(|| {
            "this camera's model classifies whole frames; false positives are a detector's \
             objects (label the frame `none` instead)"
                .to_owned()
        })?;
        let (class, best) = objects.mark_false_positive(&id).ok_or_else(|| {
            format!(
                "no object {id:?} on this camera now or among its recently ended ones \
                 ([frames].keep_ended_objects); use an `id` from `detections` or `objects`"
            )
        })?;
        let examples = objects.true_examples(&class, &id, TRUE_EXAMPLES_PER_CORRECTION);
        let mut pinned = |object: String, b: super::objects::BestCrop| {
            let embedding = match b.embedding {
                Some(e) => e,
                None => embed(engines, engine, &b.crop).map_err(|e| e.to_string())?,
            };
            Ok::<_, String>(Pinned {
                embedding,
                picture: b.crop,
                class: Some(b.class),
                frame_id: b.frame_id,
                object: Some(object),
            })
        };
        let negative = pinned(id.clone(), best)?;
        let positives = examples
            .into_iter()
            .map(|(i, b)| pinned(i, b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FalsePositive {
            object: id,
            class,
            negative,
            positives,
        })
    }
}

/// The writer's job for an object's snapshot: the frame, the detection's box, and a caption
/// that names the object as `objects` does (`alice (person) 0.82`).
fn snapshot_job(
    camera: &str,
    due: SnapshotDue,
    d: &crate::vision::DetectedBox,
    frame: Arc<RgbImage>,
) -> SnapshotJob {
    let caption = match &due.sub_label {
        Some(name) => format!("{name} ({}) {:.2}", due.label, d.score),
        None => format!("{} {:.2}", due.label, d.score),
    };
    SnapshotJob {
        camera: camera.to_owned(),
        known: due.sub_label.is_some(),
        id: due.id,
        label: due.label,
        caption,
        frame,
        bbox: d.bbox,
    }
}

/// The embedding of one image by engine `i`.
fn embed(engines: &mut [VisionModel], i: usize, img: &RgbImage) -> Result<Vec<f32>, VisionError> {
    let engine = engines.get_mut(i).ok_or_else(|| VisionError::Output {
        model: format!("engine {i}"),
        problem: "no such engine in this worker (internal error)".into(),
    })?;
    let name = engine.model.manifest.name.clone();
    engine
        .analyze(
            &[img],
            &AnalyzeOptions {
                top_k: 0,
                detect: None,
            },
        )?
        .into_iter()
        .next()
        .and_then(|a| a.embedding)
        .ok_or(VisionError::Output {
            model: name,
            problem: "no embedding for the crop".into(),
        })
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
