//! What `adaptd bench-track` measures on top of the detector: the per-object work of the
//! daemon ([`crate::daemon::objects`]) that runs the crop model, timed per frame.
//!
//! Two kinds of work, each on its own [`CameraObjects`] so their costs are told apart:
//! - **naming** (sub-labels): good crops of the classes the sub-label model applies to, a few
//!   attempts per object until the votes agree;
//! - **judging** (a false-positive filter in service for one class): at most a few verdicts
//!   per object of that class, the way the pipeline asks its filter.
//!
//! The filter judging here is a real head, trained by the daemon's trainer before the run on
//! crop embeddings of the scene (the person's picture as the class, grass and the cat as
//! `none`), so the measured cost is the real one: crop, embed, head. Each kind also counts
//! what the per-box way (every box of its classes in every frame through the crop model)
//! would have run, for the ratio that says what the per-object logic saves.

use std::time::Instant;

use anyhow::Context as _;
use image::{imageops, RgbImage};

use crate::adapt::{Dataset, Head, TrainConfig, BACKGROUND_LABEL};
use crate::daemon::objects::{At, CameraObjects, Heads};
use crate::daemon::pipeline::crop;
use crate::track::TrackerConfig;
use crate::vision::{AnalyzeOptions, VisionModel};

/// One detection as the tracker takes it: (class, score, box).
pub type Raw = (usize, f32, [f32; 4]);

/// Which work an [`ObjectWork`] does.
pub enum Kind {
    /// Sub-label attempts on the classes the model applies to.
    Naming,
    /// A false-positive filter's verdicts on objects of `class`.
    Judging { class: usize, filter: Box<Head> },
}

/// One kind of per-object work over a run, with its timings.
pub struct ObjectWork {
    objects: CameraObjects,
    kind: Kind,
    /// The classes the work is for (what the per-box way would run the crop model on).
    classes: Vec<usize>,
    /// Time per frame of the work (judging crops and crop-model runs), ms.
    pub frame_ms: Vec<f64>,
    /// Time of each crop-model run, ms.
    pub crop_ms: Vec<f64>,
    /// Crop-model runs made.
    pub runs: u64,
    /// Crop-model runs the per-box way would have made.
    pub every_box: u64,
    /// Objects the filter called false (judging only).
    pub judged_false: u64,
}

impl ObjectWork {
    /// `labels`: the detector's classes; `classes`: those the work is for.
    pub fn new(kind: Kind, labels: &[String], classes: Vec<usize>, cfg: TrackerConfig) -> Self {
        let applies_to: Vec<String> = match kind {
            Kind::Naming => classes
                .iter()
                .filter_map(|&c| labels.get(c).cloned())
                .collect(),
            Kind::Judging { .. } => Vec::new(),
        };
        ObjectWork {
            objects: CameraObjects::new("bench", labels.to_vec(), &applies_to, cfg, 50),
            kind,
            classes,
            frame_ms: Vec::new(),
            crop_ms: Vec::new(),
            runs: 0,
            every_box: 0,
            judged_false: 0,
        }
    }

    /// One frame's boxes: tracks them, offers their crops and runs the crop model (and the
    /// filter) where the daemon would.
    pub fn frame(
        &mut self,
        crops: &mut VisionModel,
        frame: &RgbImage,
        frame_id: u64,
        t: f64,
        raw: &[Raw],
        threshold: f32,
    ) -> anyhow::Result<()> {
        self.every_box += raw
            .iter()
            .filter(|d| d.1 >= threshold && self.classes.contains(&d.0))
            .count() as u64;
        let start = Instant::now();
        self.objects.set_frame_size(frame.width(), frame.height());
        let update = self.objects.track(t, raw, threshold);
        for (d, tid) in raw.iter().zip(&update.ids) {
            let Some(tid) = *tid else { continue };
            let heads = match &self.kind {
                Kind::Naming => Heads {
                    name: Some(1),
                    fp: None,
                },
                Kind::Judging { class, .. } => Heads {
                    name: None,
                    fp: (d.0 == *class).then_some(1),
                },
            };
            let at = At { frame_id, t };
            let Some(offer) = self.objects.offer(tid, d.0, at, frame, d.2, heads) else {
                continue;
            };
            if !(offer.name || offer.fp) {
                continue;
            }
            let c0 = Instant::now();
            let e = embed(crops, &crop(frame, d.2))?;
            self.crop_ms.push(c0.elapsed().as_secs_f64() * 1e3);
            self.runs += 1;
            match &self.kind {
                Kind::Naming => self.objects.record(tid, None, offer.quality, t, e),
                Kind::Judging { filter, .. } => {
                    let is_false = filter
                        .predict(&e)
                        .is_ok_and(|p| p.label == BACKGROUND_LABEL);
                    self.judged_false += u64::from(is_false);
                    self.objects.record_fp(tid, is_false, offer.quality, &e);
                }
            }
        }
        self.objects.events(frame_id, &update);
        self.frame_ms.push(start.elapsed().as_secs_f64() * 1e3);
        Ok(())
    }
}

/// The crop model's embedding of one crop.
fn embed(crops: &mut VisionModel, img: &RgbImage) -> anyhow::Result<Vec<f32>> {
    let opts = AnalyzeOptions {
        top_k: 0,
        detect: None,
    };
    crops
        .analyze(&[img], &opts)?
        .pop()
        .and_then(|a| a.embedding)
        .context("the crop model gave no embedding")
}

/// A false-positive filter for `class_name` trained by the daemon's trainer: the class's
/// picture, shifted and scaled, as the true side; patches of the background and the
/// `others` pictures as `none`.
pub fn train_filter(
    crops: &mut VisionModel,
    class_name: &str,
    picture: &RgbImage,
    background: &RgbImage,
    others: &[&RgbImage],
) -> anyhow::Result<Head> {
    let mut x = Vec::new();
    let mut y = Vec::new();
    let (pw, ph) = picture.dimensions();
    for i in 0..8u32 {
        // Sub-crops 80-100 % of the picture, at four corners and two scales.
        let s = 80 + 5 * (i % 5);
        let (w, h) = (pw * s / 100, ph * s / 100);
        let (ox, oy) = if i % 2 == 0 { (0, 0) } else { (pw - w, ph - h) };
        let sub = imageops::crop_imm(picture, ox, oy, w, h).to_image();
        x.extend(embed(crops, &sub)?);
        y.push(0);
    }
    let (bw, bh) = background.dimensions();
    for i in 0..6u32 {
        let side = 120 + 20 * (i % 3);
        let (ox, oy) = ((bw - side) * i / 6, (bh - side) * ((i * 3) % 6) / 6);
        let patch = imageops::crop_imm(background, ox, oy, side, side).to_image();
        x.extend(embed(crops, &patch)?);
        y.push(1);
    }
    for other in others {
        x.extend(embed(crops, other)?);
        y.push(1);
    }
    let dim = x.len() / y.len().max(1);
    let classes = vec![class_name.to_string(), BACKGROUND_LABEL.to_string()];
    let data = Dataset::new(dim, x, y, classes.clone())?;
    let holdout = Dataset::empty(dim, classes);
    let (head, _) = crate::adapt::trainer::train(&data, &holdout, &TrainConfig::default(), None)?;
    Ok(head)
}
