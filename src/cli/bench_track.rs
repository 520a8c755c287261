//! `adaptd bench-track`: how well the tracker keeps identities, on a generated sequence with
//! ground truth, through the real detector.
//!
//! The scene: a grass background and three objects cut from the public-domain photos (two
//! cats, one from `chelsea.png` and its mirror image, and a person from `astronaut.png`),
//! moving back and forth on lanes that cross, drawn back to front so the nearer one hides
//! the farther. Every frame goes through the detector (NanoDet by default), its boxes through
//! the tracker, and the tracked boxes are scored against the pasted rectangles with IDF1 and
//! identity switches ([`crate::track::metrics`]). Objects less than half visible are "don't
//! care" (neither a miss nor, for a box on them, a false positive), as MOT benchmarks treat
//! heavy occlusion.
//!
//! The reference, measured in the same run on the same detections: the IoU tracker
//! (Bochinski et al., 2017: greedy best-IoU to the previous frame, no prediction, no second
//! round), the baseline every tracking paper starts from.
//!
//! With `--sublabel-model` (default mobilenetv2) the run also measures what naming objects
//! costs: the daemon's per-object logic ([`crate::daemon::objects`]: good crops only, a few
//! attempts per object) on the same boxes through the crop model, against the detector alone,
//! and what the old way (the crop model on every box of a sub-labelled class in every frame)
//! would have cost, counted on the same frames. With `--fp-class` (default person) it measures
//! a false-positive filter in service for that class the same way ([`super::bench_objects`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use image::{imageops, RgbImage};
use serde::Serialize;

use super::bench_objects::{train_filter, Kind, ObjectWork, Raw};
use super::Context;
use crate::track::metrics::{evaluate, FrameBoxes, Scores};
use crate::track::{Observation, Tracker, TrackerConfig};
use crate::vision::detect::BBox;
use crate::vision::AnalyzeOptions;

/// Arguments of `adaptd bench-track`.
#[derive(Debug, clap::Args)]
pub struct TrackBenchArgs {
    /// The detector.
    #[arg(long, default_value = "nanodet-m")]
    model: String,
    /// Frames in the sequence.
    #[arg(long, default_value_t = 150)]
    frames: usize,
    /// The rate the sequence is "filmed" at (what the tracker's clock sees).
    #[arg(long, default_value_t = 5.0)]
    fps: f64,
    /// Folder with chelsea.png, astronaut.png and grass.png (the repository's test photos).
    #[arg(long, default_value = "../shared/images")]
    images: PathBuf,
    /// Write each frame with its truth and tracked boxes as JPEG here (to look at).
    #[arg(long)]
    save: Option<PathBuf>,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The detector classes tracked (as a camera's tracked objects list would); others are
    /// ignored. Empty: every class.
    #[arg(long, value_delimiter = ',', default_value = "person,cat,dog")]
    classes: Vec<String>,
    /// Print each frame's truth, detections and ids to stderr.
    #[arg(long)]
    trace: bool,
    /// The crop model of sub-labels, whose cost is measured (`""`: not measured).
    #[arg(long, default_value = "mobilenetv2")]
    sublabel_model: String,
    /// The classes the sub-label model applies to.
    #[arg(long, value_delimiter = ',', default_value = "person")]
    applies_to: Vec<String>,
    /// A class to measure a false-positive filter on (a head on the crop model's embeddings,
    /// trained before the run on the scene's pictures); `""`: not measured.
    #[arg(long, default_value = "person")]
    fp_class: String,
    /// For working on the tracker: a JSON file of every frame's detections. Written after a
    /// run through the detector when it does not exist; when it does, the frames' detections
    /// come from it instead of the detector (seconds instead of half a minute), and the
    /// detector and sub-label timings are not measured (they read 0 / absent). The file is
    /// only valid for the same --model, --frames, --fps and --images.
    #[arg(long)]
    detections_cache: Option<PathBuf>,
}

/// One frame's detections as `--detections-cache` stores them: (class, score, box).
type CachedFrame = Vec<(usize, f32, [f32; 4])>;

const W: u32 = 640;
const H: u32 = 480;

/// One object of the scene: its picture and its lane.
struct Actor {
    id: u64,
    /// The detector class it is (what a filter for that class is trained on).
    class: &'static str,
    picture: RgbImage,
    /// Lane: from (x0, y0) to (x1, y1), top-left corner, back and forth.
    from: (f32, f32),
    to: (f32, f32),
    /// Seconds for one way.
    period: f64,
    /// Phase offset, seconds.
    phase: f64,
}

impl Actor {
    fn corner(&self, t: f64) -> (f32, f32) {
        let u = ((t + self.phase) / self.period).rem_euclid(2.0);
        let s = if u <= 1.0 { u } else { 2.0 - u } as f32;
        (
            self.from.0 + (self.to.0 - self.from.0) * s,
            self.from.1 + (self.to.1 - self.from.1) * s,
        )
    }

    fn bbox(&self, t: f64) -> BBox {
        let (x, y) = self.corner(t);
        BBox {
            x1: x,
            y1: y,
            x2: x + self.picture.width() as f32,
            y2: y + self.picture.height() as f32,
        }
    }
}

fn load(dir: &Path, name: &str, w: u32, h: u32) -> anyhow::Result<RgbImage> {
    let path = dir.join(name);
    let img = image::open(&path)
        .with_context(|| {
            format!(
                "{}: cannot read it; --images must name the folder of the test photos \
                 (chelsea.png, astronaut.png, grass.png)",
                path.display()
            )
        })?
        .to_rgb8();
    Ok(imageops::resize(&img, w, h, imageops::FilterType::Triangle))
}

fn actors(dir: &Path) -> anyhow::Result<(RgbImage, Vec<Actor>)> {
    let background = load(dir, "grass.png", W, H)?;
    let cat = load(dir, "chelsea.png", 210, 140)?;
    let mirrored = imageops::flip_horizontal(&cat);
    let person = load(dir, "astronaut.png", 150, 150)?;
    // Back to front: the first is hidden by the others where they overlap.
    let list = vec![
        Actor {
            id: 1,
            class: "cat",
            picture: cat,
            from: (10.0, 60.0),
            to: (420.0, 90.0),
            period: 9.0,
            phase: 0.0,
        },
        Actor {
            id: 2,
            class: "person",
            picture: person,
            from: (250.0, 10.0),
            to: (230.0, 320.0),
            period: 7.0,
            phase: 3.0,
        },
        Actor {
            id: 3,
            class: "cat",
            picture: mirrored,
            from: (420.0, 150.0),
            to: (10.0, 120.0),
            period: 11.0,
            phase: 1.0,
        },
    ];
    Ok((background, list))
}

/// The picture of the scene's first object of `class`.
fn actor_picture<'a>(actors: &'a [Actor], class: &str) -> anyhow::Result<&'a RgbImage> {
    actors
        .iter()
        .find(|a| a.class == class)
        .map(|a| &a.picture)
        .with_context(|| {
            let classes: Vec<&str> = actors.iter().map(|a| a.class).collect();
            format!("--fp-class {class:?}: the scene has no such object; it has {classes:?}")
        })
}

/// The frame at `t`, and each actor's box with the share of it that is visible.
fn render(background: &RgbImage, actors: &[Actor], t: f64) -> (RgbImage, Vec<(u64, BBox, f32)>) {
    let mut frame = background.clone();
    let boxes: Vec<BBox> = actors.iter().map(|a| a.bbox(t)).collect();
    for (a, b) in actors.iter().zip(&boxes) {
        imageops::overlay(&mut frame, &a.picture, b.x1 as i64, b.y1 as i64);
    }
    let visible = boxes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let fronts = &boxes[i + 1..];
            let (mut seen, mut all) = (0u32, 0u32);
            // Sampled on a 4-pixel grid: exact enough for a 50 % rule.
            let mut y = b.y1;
            while y < b.y2 {
                let mut x = b.x1;
                while x < b.x2 {
                    let inside_frame = x >= 0.0 && y >= 0.0 && x < W as f32 && y < H as f32;
                    all += 1;
                    if inside_frame
                        && !fronts
                            .iter()
                            .any(|f| x >= f.x1 && x < f.x2 && y >= f.y1 && y < f.y2)
                    {
                        seen += 1;
                    }
                    x += 4.0;
                }
                y += 4.0;
            }
            seen as f32 / all.max(1) as f32
        })
        .collect::<Vec<_>>();
    let out = actors
        .iter()
        .zip(boxes)
        .zip(visible)
        .map(|((a, b), v)| (a.id, b, v))
        .collect();
    (frame, out)
}

/// The IoU tracker: each box takes the id of the previous frame's box it overlaps most
/// (greedy, IoU at least 0.3, same class), else a new id.
struct IouTracker {
    last: Vec<(u64, usize, BBox)>,
    next: u64,
}

impl IouTracker {
    fn update(&mut self, obs: &[Observation]) -> Vec<Option<u64>> {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (i, o) in obs.iter().enumerate() {
            for (k, (_, class, b)) in self.last.iter().enumerate() {
                let iou = b.iou(&o.bbox);
                if *class == o.class && iou >= 0.3 {
                    pairs.push((iou, i, k));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut ids = vec![None; obs.len()];
        let mut used = vec![false; self.last.len()];
        for (_, i, k) in pairs {
            if ids[i].is_none() && !used[k] {
                ids[i] = Some(self.last[k].0);
                used[k] = true;
            }
        }
        let mut now = Vec::new();
        for (i, o) in obs.iter().enumerate() {
            let id = match ids[i] {
                Some(id) => id,
                None => {
                    self.next += 1;
                    self.next
                }
            };
            ids[i] = Some(id);
            now.push((id, o.class, o.bbox));
        }
        self.last = now;
        ids
    }
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    frames: usize,
    fps: f64,
    /// Times two objects start to overlap.
    crossings: u32,
    tracker: Scores,
    iou_tracker: Scores,
    /// tracker IDF1 / IoU tracker IDF1.
    idf1_ratio: f64,
    switches_per_crossing: f64,
    detector_ms_median: f64,
    tracker_us_median: f64,
    /// Mean detector time per frame, ms (the reference of the sub-label ratio).
    detector_ms_mean: f64,
    /// What naming objects costs on top of the detector; `None` without a sub-label model.
    sublabels: Option<WorkCost>,
    /// What a false-positive filter in service costs; `None` without `--fp-class`.
    fp_filter: Option<WorkCost>,
}

/// The cost of one kind of per-object work, per frame, against the detector alone.
#[derive(Debug, Clone, Serialize)]
struct WorkCost {
    /// Mean time per frame of the work (crop judging and crop-model runs), ms.
    ms_mean: f64,
    /// (detector + the work) / detector, per frame, means.
    ratio: f64,
    /// Crop-model runs made, and those the per-box way would have made.
    crop_runs: u64,
    crop_runs_every_box: u64,
    /// The per-box way's ratio: (detector + every such box through the crop model) /
    /// detector, at the median crop-model time measured here.
    every_box_ratio: f64,
    /// Objects the filter called false (0 for naming).
    judged_false: u64,
}

impl WorkCost {
    fn of(w: &ObjectWork, det_mean: f64, frames: usize) -> WorkCost {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let ms_mean = mean(&w.frame_ms);
        // The one-crop run costs the same whatever the box.
        let crop_median = median(&mut w.crop_ms.clone());
        let det = det_mean.max(1e-9);
        WorkCost {
            ms_mean,
            ratio: (det_mean + ms_mean) / det,
            crop_runs: w.runs,
            crop_runs_every_box: w.every_box,
            every_box_ratio: (det_mean + w.every_box as f64 * crop_median / frames as f64) / det,
            judged_false: w.judged_false,
        }
    }

    fn line(&self, det_mean: f64) -> String {
        format!(
            "{:.1} ms/frame on top of the detector's {det_mean:.1} (mean): {:.2}x the detector \
             alone; {} crop-model runs where every box would take {} ({:.2}x)",
            self.ms_mean,
            self.ratio,
            self.crop_runs,
            self.crop_runs_every_box,
            self.every_box_ratio
        )
    }
}

pub fn run(ctx: &Context, args: &TrackBenchArgs) -> anyhow::Result<ExitCode> {
    let (background, actors) = actors(&args.images)?;
    let model = ctx.resolve_model(Some(&args.model))?;
    let mut vm = crate::vision::VisionModel::load(model, 1)?;
    let cfg = TrackerConfig::default();
    let Some(mut spec) = ctx.config.detect.for_manifest(&vm.model.manifest) else {
        anyhow::bail!("{} is not a detector; give one with --model", args.model);
    };
    // The tracker's second round needs the low-score boxes too.
    spec.score_threshold = cfg.low_score;
    let opts = AnalyzeOptions {
        top_k: 0,
        detect: Some(spec),
    };
    let labels = &vm.model.labels;
    let mut wanted = Vec::new();
    for c in args.classes.iter().filter(|c| !c.is_empty()) {
        match labels.iter().position(|l| l == c) {
            Some(i) => wanted.push(i),
            None => anyhow::bail!("--classes: {} has no class {c:?}", args.model),
        }
    }
    if let Some(dir) = &args.save {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    }
    let mut tracker = Tracker::new(cfg);
    let cached: Option<Vec<CachedFrame>> = match &args.detections_cache {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            let frames: Vec<CachedFrame> = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a --detections-cache file", path.display()))?;
            if frames.len() < args.frames.max(1) {
                anyhow::bail!(
                    "{} holds {} frames, fewer than --frames {}; delete it to rebuild it",
                    path.display(),
                    frames.len(),
                    args.frames
                );
            }
            Some(frames)
        }
        _ => None,
    };
    let mut to_cache: Vec<CachedFrame> = Vec::new();
    let mut crops_model = if args.sublabel_model.is_empty() || cached.is_some() {
        None
    } else {
        let m = ctx.resolve_model(Some(&args.sublabel_model))?;
        Some(crate::vision::VisionModel::load(m, 1)?)
    };
    let class_of = |name: &str, flag: &str| {
        labels
            .iter()
            .position(|l| l == name)
            .with_context(|| format!("{flag}: {} has no class {name:?}", args.model))
    };
    let applies = args
        .applies_to
        .iter()
        .map(|a| class_of(a, "--applies-to"))
        .collect::<anyhow::Result<Vec<usize>>>()?;
    // [naming, judging]: each on its own objects, so the two costs are told apart.
    let mut works = Vec::new();
    if let Some(cm) = crops_model.as_mut() {
        works.push(ObjectWork::new(Kind::Naming, labels, applies, cfg));
        if !args.fp_class.is_empty() {
            let class = class_of(&args.fp_class, "--fp-class")?;
            let picture = actor_picture(&actors, &args.fp_class)?;
            let others: Vec<&RgbImage> = actors
                .iter()
                .filter(|a| a.class != args.fp_class)
                .map(|a| &a.picture)
                .collect();
            let filter = train_filter(cm, &args.fp_class, picture, &background, &others)?;
            works.push(ObjectWork::new(
                Kind::Judging {
                    class,
                    filter: Box::new(filter),
                },
                labels,
                vec![class],
                cfg,
            ));
        }
    }
    let threshold = ctx
        .config
        .detect
        .for_manifest(&vm.model.manifest)
        .map_or(0.35, |d| d.score_threshold);
    let mut baseline = IouTracker {
        last: Vec::new(),
        next: 1_000_000,
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut det_ms, mut trk_us) = (Vec::new(), Vec::new());
    let mut crossings = 0u32;
    let mut overlapping = std::collections::BTreeSet::new();
    for n in 0..args.frames.max(1) {
        let t = n as f64 / args.fps.max(0.1);
        let (frame, truth) = render(&background, &actors, t);
        for (i, a) in truth.iter().enumerate() {
            for b in &truth[i + 1..] {
                let now = a.1.iou(&b.1) > 0.0;
                if now && overlapping.insert((a.0, b.0)) {
                    crossings += 1;
                } else if !now {
                    overlapping.remove(&(a.0, b.0));
                }
            }
        }
        let dets: CachedFrame = match &cached {
            Some(frames) => frames.get(n).cloned().unwrap_or_default(),
            None => {
                let t0 = Instant::now();
                let analysis = vm
                    .analyze(&[&frame], &opts)?
                    .pop()
                    .context("the detector returned nothing")?;
                det_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                analysis
                    .detections
                    .unwrap_or_default()
                    .iter()
                    .map(|d| (d.class, d.score, d.bbox))
                    .collect()
            }
        };
        if args.detections_cache.is_some() && cached.is_none() {
            to_cache.push(dets.clone());
        }
        let obs: Vec<Observation> = dets
            .iter()
            .filter(|d| wanted.is_empty() || wanted.contains(&d.0))
            .map(|&(class, score, b)| Observation {
                class,
                score,
                bbox: BBox {
                    x1: b[0],
                    y1: b[1],
                    x2: b[2],
                    y2: b[3],
                },
            })
            .collect();
        if let Some(cm) = crops_model.as_mut() {
            let raw: Vec<Raw> = obs
                .iter()
                .map(|o| {
                    (
                        o.class,
                        o.score,
                        [o.bbox.x1, o.bbox.y1, o.bbox.x2, o.bbox.y2],
                    )
                })
                .collect();
            for w in works.iter_mut() {
                w.frame(cm, &frame, n as u64, t, &raw, threshold)?;
            }
        }
        let t1 = Instant::now();
        let update = tracker.update(t, &obs);
        trk_us.push(t1.elapsed().as_secs_f64() * 1e6);
        // The IoU tracker has no low-score round: it sees the confident boxes only.
        let high: Vec<Observation> = obs
            .iter()
            .copied()
            .filter(|o| o.score >= cfg.high_score)
            .collect();
        let base_ids = baseline.update(&high);
        let tracked: Vec<(u64, BBox)> = update
            .ids
            .iter()
            .zip(&obs)
            .filter_map(|(id, o)| id.map(|id| (id, o.bbox)))
            .collect();
        let base: Vec<(u64, BBox)> = base_ids
            .iter()
            .zip(&high)
            .filter_map(|(id, o)| id.map(|id| (id, o.bbox)))
            .collect();
        if args.trace {
            let fmt = |b: &BBox| format!("[{:.0},{:.0},{:.0},{:.0}]", b.x1, b.y1, b.x2, b.y2);
            let truth_s: Vec<String> = truth
                .iter()
                .map(|(id, b, v)| format!("{id}:{}:{v:.2}", fmt(b)))
                .collect();
            let det_s: Vec<String> = obs
                .iter()
                .zip(&update.ids)
                .map(|(o, id)| format!("c{} {:.2} {} -> {id:?}", o.class, o.score, fmt(&o.bbox)))
                .collect();
            let ended: Vec<u64> = update.ended.iter().map(|e| e.id).collect();
            eprintln!(
                "frame {n} t={t:.1} truth {truth_s:?}\n    dets {det_s:?}\n    ended {ended:?}"
            );
        }
        ours.push(score_frame(&truth, tracked));
        theirs.push(score_frame(&truth, base));
        if let Some(dir) = &args.save {
            let path = dir.join(format!("frame{n:04}.jpg"));
            frame
                .save(&path)
                .with_context(|| format!("write {}", path.display()))?;
        }
    }
    if let (Some(path), None) = (&args.detections_cache, &cached) {
        std::fs::write(path, serde_json::to_string(&to_cache)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let det_mean = mean(&det_ms);
    let costs: Vec<WorkCost> = works
        .iter()
        .map(|w| WorkCost::of(w, det_mean, args.frames.max(1)))
        .collect();
    let tracker_scores = evaluate(&ours, 0.5);
    let iou_scores = evaluate(&theirs, 0.5);
    let report = Report {
        model: args.model.clone(),
        frames: args.frames,
        fps: args.fps,
        crossings,
        idf1_ratio: tracker_scores.idf1 / iou_scores.idf1.max(1e-9),
        switches_per_crossing: f64::from(tracker_scores.id_switches) / f64::from(crossings.max(1)),
        tracker: tracker_scores,
        iou_tracker: iou_scores,
        detector_ms_median: median(&mut det_ms),
        tracker_us_median: median(&mut trk_us),
        detector_ms_mean: det_mean,
        sublabels: costs.first().cloned(),
        fp_filter: costs.get(1).cloned(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} frames at {} fps, {} crossings, detector {}\n\
             tracker:     IDF1 {:.3}  ID switches {} ({:.2} per crossing)  MOTA {:.3}  {:.0} us/frame\n\
             IoU tracker: IDF1 {:.3}  ID switches {}  MOTA {:.3}\n\
             IDF1 ratio (tracker / IoU tracker): {:.2}x; detector {:.1} ms/frame",
            report.frames,
            report.fps,
            report.crossings,
            report.model,
            report.tracker.idf1,
            report.tracker.id_switches,
            report.switches_per_crossing,
            report.tracker.mota,
            report.tracker_us_median,
            report.iou_tracker.idf1,
            report.iou_tracker.id_switches,
            report.iou_tracker.mota,
            report.idf1_ratio,
            report.detector_ms_median,
        );
        if let Some(c) = &report.sublabels {
            println!(
                "sub-labels ({} on {}): {}",
                args.sublabel_model,
                args.applies_to.join(","),
                c.line(report.detector_ms_mean)
            );
        }
        if let Some(c) = &report.fp_filter {
            println!(
                "false-positive filter ({} on {}; {} judged false): {}",
                args.sublabel_model,
                args.fp_class,
                c.judged_false,
                c.line(report.detector_ms_mean)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Truth boxes at least half visible are scored; a tracked box on a hidden one is ignored.
fn score_frame(truth: &[(u64, BBox, f32)], tracked: Vec<(u64, BBox)>) -> FrameBoxes {
    let hidden: Vec<&BBox> = truth
        .iter()
        .filter(|(_, _, v)| *v < 0.5)
        .map(|(_, b, _)| b)
        .collect();
    FrameBoxes {
        truth: truth
            .iter()
            .filter(|(_, _, v)| *v >= 0.5)
            .map(|(id, b, _)| (*id, *b))
            .collect(),
        tracked: tracked
            .into_iter()
            .filter(|(_, b)| !hidden.iter().any(|h| h.iou(b) >= 0.5))
            .collect(),
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
