//! One camera's tracked objects as the daemon reports them: the [`Tracker`] underneath, each
//! object's sub-label attempts and agreed name, its best crop (what `label {"id": ...}`
//! files), and the `new` / `update` / `end` messages of `<camera>/objects`.
//!
//! An `update` is sent when something a person acts on changed (the class the detections
//! voted for, the agreed name, standing still or moving again) at once, and when only the box
//! or the top score moved, at most once a second: an automation wants to know that `alice`
//! arrived, not where her box was on every frame.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use image::RgbImage;

use super::occupancy::{Count, Present, Scene};
use crate::rng::SplitMix64;
use crate::track::sublabel::{crop_quality, SubLabelConfig, Votes};
use crate::track::zones::{SceneConfig, ZoneError};
use crate::track::{Observation, Track, Tracker, TrackerConfig, Update};
use crate::vision::detect::BBox;
use crate::wire::{EventKind, HeadLabel, ObjectEvent, TrackedObject};

/// Seconds between two updates that only move the box or the score.
const MINOR_UPDATE_S: f64 = 1.0;
/// Least seconds between two snapshots of one object (each is a JPEG written to disk).
pub const SNAPSHOT_INTERVAL_S: f64 = 2.0;
/// Seconds an object must have lived before it can be called stationary.
const STATIONARY_AFTER_S: f64 = 2.0;
/// Seconds a new object of a class with a false-positive filter waits for the filter's first
/// verdict before it is announced anyway (no crop fit to judge came in that time).
const FP_WAIT_S: f64 = 1.0;
/// Verdicts of a false-positive filter asked per object: enough to outvote one odd crop.
const FP_ATTEMPTS: u32 = 3;
/// Longest side of an ended object's kept crop. Ended objects are kept by count
/// (`[frames].keep_ended_objects`), so their memory must not scale with the camera's
/// resolution: 50 crops of a person filling a 1080p frame are 90 MB at full size (a soak
/// measured the step), 15 MB at this size, which still serves what they are kept for (a
/// label command embeds them at the crop model's 224 x 224, a sample keeps a 160-pixel
/// thumbnail).
const ENDED_CROP_SIDE: u32 = 320;

/// Which frame a detection was seen in, and when (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct At {
    pub frame_id: u64,
    pub t: f64,
}

/// The best crop seen of an object: what a `label {"id": ...}` command files.
#[derive(Debug, Clone)]
pub struct BestCrop {
    pub quality: f32,
    pub crop: Arc<RgbImage>,
    /// The crop model's embedding of it, when a sub-label attempt ran on it.
    pub embedding: Option<Vec<f32>>,
    /// The detector class when it was taken.
    pub class: String,
    pub frame_id: u64,
}

/// What is known about an object being a false positive.
#[derive(Debug, Clone, Copy)]
struct FpState {
    /// A person said so (`label none`, `false_positive`).
    marked: bool,
    /// The class's filter verdicts on this object's crops.
    said_false: u32,
    said_true: u32,
    /// The filter version in service when the object was last offered (`None`: no filter).
    head: Option<u32>,
    last_try: f64,
}

impl Default for FpState {
    fn default() -> FpState {
        FpState {
            marked: false,
            said_false: 0,
            said_true: 0,
            head: None,
            last_try: f64::NEG_INFINITY,
        }
    }
}

impl FpState {
    fn suppressed(&self) -> bool {
        self.marked || self.said_false > self.said_true
    }

    fn verdicts(&self) -> u32 {
        self.said_false + self.said_true
    }
}

/// The heads in service an object's crop may be put through: their versions (a new version
/// starts the object's count of attempts again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heads {
    /// The sub-label head.
    pub name: Option<u32>,
    /// The false-positive filter of the object's class.
    pub fp: Option<u32>,
}

/// What [`CameraObjects::offer`] asks the caller to run on a fit crop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offer {
    /// The crop's quality (for [`CameraObjects::record`]).
    pub quality: f32,
    /// A sub-label attempt is due.
    pub name: bool,
    /// The class's false-positive filter should judge it.
    pub fp: bool,
}

/// A snapshot to write, from [`CameraObjects::snapshot_due`].
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotDue {
    /// The object's id.
    pub id: String,
    pub label: String,
    /// Its agreed name so far, for the caption.
    pub sub_label: Option<String>,
}

/// A recently ended object, kept for late `label` commands.
#[derive(Debug, Clone)]
pub struct Ended {
    pub id: String,
    pub best: BestCrop,
    pub false_positive: bool,
    /// What its `end` said (none when it was never announced).
    pub last: Option<TrackedObject>,
}

#[derive(Debug)]
struct Live {
    id: String,
    fp: FpState,
    votes: Votes,
    /// The head version the votes were cast with: a new head starts the count again.
    votes_head: Option<u32>,
    best: Option<BestCrop>,
    published: Option<TrackedObject>,
    published_at: f64,
    /// Zones it is in now, and every zone it has been in (in the order it entered them).
    zones: Vec<String>,
    entered: Vec<String>,
    /// A snapshot of it is on disk (the writer said so).
    has_snapshot: bool,
    /// When the last snapshot was asked for, and the quality of its crop.
    snapshot_at: f64,
    snapshot_quality: f32,
}

/// The objects of one camera.
pub struct CameraObjects {
    camera: String,
    classes: Vec<String>,
    /// Class indices the sub-label model applies to.
    applies_to: Vec<usize>,
    cfg: TrackerConfig,
    tracker: Tracker,
    live: HashMap<u64, Live>,
    /// Best crops of ended objects, newest last, for a late `label {"id": ...}`.
    ended: VecDeque<Ended>,
    keep_ended: usize,
    /// Changes made between frames (an ended object marked false), sent with the next frame.
    pending: Vec<ObjectEvent>,
    rng: SplitMix64,
    /// Tracked classes, masks, zones and their counts.
    scene: Scene,
    /// The size of the frame being tracked (zones and masks are normalised).
    size: (u32, u32),
}

impl CameraObjects {
    /// `classes`: the detector's labels; `applies_to`: the ones the sub-label model names.
    pub fn new(
        camera: &str,
        classes: Vec<String>,
        applies_to: &[String],
        cfg: TrackerConfig,
        keep_ended: usize,
    ) -> CameraObjects {
        let applies_to = applies_to
            .iter()
            .filter_map(|a| classes.iter().position(|c| c == a))
            .collect();
        CameraObjects {
            camera: camera.to_owned(),
            classes,
            applies_to,
            cfg,
            tracker: Tracker::new(cfg),
            live: HashMap::new(),
            ended: VecDeque::new(),
            keep_ended,
            pending: Vec::new(),
            rng: SplitMix64::from_clock(),
            scene: Scene::default(),
            size: (0, 0),
        }
    }

    /// Only `tracked` classes become objects (`None`: every class), in `scene`'s zones and
    /// outside its masks.
    pub fn with_scene(
        mut self,
        tracked: Option<&[String]>,
        scene: &SceneConfig,
    ) -> Result<CameraObjects, ZoneError> {
        self.scene = Scene::new(&self.classes, tracked, scene)?;
        Ok(self)
    }

    /// The occupancy counts that changed since the last call (the first call: every count
    /// the camera keeps, at 0), for `<camera>/<zone>/<label>`.
    pub fn take_counts(&mut self) -> Vec<Count> {
        self.scene.take_changes()
    }

    /// A snapshot of `id` is on disk: its next message says `has_snapshot`.
    pub fn snapshot_saved(&mut self, id: &str) {
        if let Some(live) = self.live.values_mut().find(|l| l.id == id) {
            live.has_snapshot = true;
        }
    }

    /// Whether `track`'s best crop, taken in `frame_id` at `t`, deserves a snapshot: its
    /// first fit one, then one clearly better (a fifth) at most every
    /// [`SNAPSHOT_INTERVAL_S`]. The caller writes it; [`CameraObjects::snapshot_saved`] says
    /// it was.
    pub fn snapshot_due(&mut self, track: u64, frame_id: u64, t: f64) -> Option<SnapshotDue> {
        let label = self
            .tracker
            .get(track)
            .map(|tr| self.class_name(tr.class))?;
        let live = self.live.get_mut(&track)?;
        if live.fp.suppressed() {
            return None;
        }
        let best = live.best.as_ref()?;
        let first = live.snapshot_at == f64::NEG_INFINITY;
        let due = best.frame_id == frame_id
            && (first
                || (best.quality > live.snapshot_quality * 1.2
                    && t - live.snapshot_at >= SNAPSHOT_INTERVAL_S));
        if !due {
            return None;
        }
        live.snapshot_at = t;
        live.snapshot_quality = best.quality;
        let sub_label = live.votes.agreed().map(|(l, _)| l.to_owned());
        Some(SnapshotDue {
            id: live.id.clone(),
            label,
            sub_label,
        })
    }

    /// The camera's name.
    pub fn camera(&self) -> &str {
        &self.camera
    }

    /// The detections below this score are only worth asking for to extend objects.
    pub fn low_score(&self) -> f32 {
        self.cfg.low_score
    }

    /// The size of the frames tracked from now on (masks and zones are in fractions of it).
    pub fn set_frame_size(&mut self, width: u32, height: u32) {
        self.size = (width, height);
    }

    /// Associates one frame's detections, taken at unix `t` seconds, with the camera's score
    /// threshold `threshold` (new objects need it); per detection, its object's track id.
    /// The motion gate skipped every frame up to `t` seconds: the objects seen last are
    /// still there ([`crate::track::Tracker::hold`]).
    pub fn hold(&mut self, t: f64) {
        self.tracker.hold(t);
    }

    pub fn track(&mut self, t: f64, dets: &[(usize, f32, [f32; 4])], threshold: f32) -> Update {
        self.tracker
            .set_high_score(self.cfg.high_score.max(threshold));
        let (w, h) = self.size;
        let kept: Vec<bool> = dets
            .iter()
            .map(|&(class, _, b)| self.scene.keeps(class, b, w, h))
            .collect();
        let obs: Vec<Observation> = dets
            .iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .map(|(&(class, score, b), _)| Observation {
                class,
                score,
                bbox: bbox(b),
            })
            .collect();
        let mut update = self.tracker.update(t, &obs);
        // Back to one id per detection given: an untracked class or a masked box has none.
        let mut ids = update.ids.into_iter();
        update.ids = kept
            .iter()
            .map(|k| if *k { ids.next().flatten() } else { None })
            .collect();
        for tid in &update.started {
            let first = self.tracker.get(*tid).map_or(t, |tr| tr.first_seen);
            let id = self.new_id(first);
            self.live.insert(
                *tid,
                Live {
                    id,
                    fp: FpState::default(),
                    votes: Votes::default(),
                    votes_head: None,
                    best: None,
                    published: None,
                    published_at: f64::NEG_INFINITY,
                    zones: Vec::new(),
                    entered: Vec::new(),
                    has_snapshot: false,
                    snapshot_at: f64::NEG_INFINITY,
                    snapshot_quality: 0.0,
                },
            );
        }
        update
    }

    /// The object id of a track (what `detections` items and `objects` messages carry).
    pub fn object_id(&self, track: u64) -> Option<&str> {
        self.live.get(&track).map(|l| l.id.as_str())
    }

    /// Whether `class` gets a sub-label.
    pub fn applies(&self, class: usize) -> bool {
        self.applies_to.contains(&class)
    }

    /// Judges a crop of `track`'s detection: offers it as the object's best crop, and, when
    /// it is fit, says whether a sub-label attempt or a false-positive verdict should run on
    /// it (with the `heads` in service).
    pub fn offer(
        &mut self,
        track: u64,
        class: usize,
        at: At,
        img: &RgbImage,
        b: [f32; 4],
        heads: Heads,
    ) -> Option<Offer> {
        let Heads {
            name: head_version,
            fp: fp_version,
        } = heads;
        let At { frame_id, t } = at;
        let sub = self.cfg.sublabel;
        let class_name = self.class_name(class);
        let wants_name = self.applies(class);
        let live = self.live.get_mut(&track)?;
        let q = crop_quality(img, &bbox(b), &sub);
        // An unfit crop is still a crop: the largest one stands in until a good one comes.
        let quality = match q {
            Ok(q) => q,
            Err(_) => 1e-3 * ((b[2] - b[0]) * (b[3] - b[1])).max(0.0).sqrt(),
        };
        if live.best.as_ref().is_none_or(|best| quality > best.quality) {
            live.best = Some(BestCrop {
                quality,
                crop: Arc::new(super::frames::crop(img, b)),
                embedding: None,
                class: class_name,
                frame_id,
            });
        }
        if live.votes_head != head_version {
            live.votes = Votes::default();
            live.votes_head = head_version;
        }
        if live.fp.head != fp_version {
            // A new filter judges afresh; a person's word stands.
            live.fp = FpState {
                marked: live.fp.marked,
                head: fp_version,
                ..FpState::default()
            };
        }
        let q = q.ok()?;
        let fp = fp_version.is_some()
            && !live.fp.marked
            && live.fp.verdicts() < FP_ATTEMPTS
            && t - live.fp.last_try >= sub.min_interval_s;
        if fp {
            live.fp.last_try = t;
        }
        Some(Offer {
            quality: q,
            name: wants_name && head_version.is_some() && live.votes.wants(q, t, &sub),
            fp,
        })
    }

    /// Records the false-positive filter's verdict on a crop of `track` (with the crop's
    /// quality and embedding, which become the best crop's when it is that crop).
    pub fn record_fp(&mut self, track: u64, is_false: bool, q: f32, embedding: &[f32]) {
        let Some(live) = self.live.get_mut(&track) else {
            return;
        };
        if is_false {
            live.fp.said_false += 1;
        } else {
            live.fp.said_true += 1;
        }
        if let Some(best) = live.best.as_mut() {
            if best.embedding.is_none()
                && (best.quality - q).abs() <= f32::EPSILON * q.abs().max(1.0)
            {
                best.embedding = Some(embedding.to_vec());
            }
        }
    }

    /// Whether `track` is a false positive (a person said so, or its class's filter does):
    /// it gets no events and its detections are marked `suppressed`.
    pub fn suppressed(&self, track: u64) -> bool {
        self.live.get(&track).is_some_and(|l| l.fp.suppressed())
    }

    /// A person says object `id` is a false positive: it is marked (a live one gets its
    /// `update` with `false_positive` and no further events); its class and best crop are
    /// returned for the filter's samples.
    pub fn mark_false_positive(&mut self, id: &str) -> Option<(String, BestCrop)> {
        if let Some(live) = self.live.values_mut().find(|l| l.id == id) {
            live.fp.marked = true;
            let best = live.best.clone()?;
            return Some((best.class.clone(), best));
        }
        let e = self.ended.iter_mut().rev().find(|e| e.id == id)?;
        if !e.false_positive {
            if let Some(last) = &e.last {
                let mut after = last.clone();
                after.false_positive = true;
                self.pending.push(ObjectEvent {
                    kind: EventKind::Update,
                    before: Some(last.clone()),
                    after: after.clone(),
                });
                e.last = Some(after);
            }
        }
        e.false_positive = true;
        Some((e.best.class.clone(), e.best.clone()))
    }

    /// Recent objects of `class` nobody objected to, newest first, at most `n`, other than
    /// `except`: the true side of a false-positive filter.
    pub fn true_examples(&self, class: &str, except: &str, n: usize) -> Vec<(String, BestCrop)> {
        // An unfit crop's stand-in quality is under 1 (see `offer`); a fit one is far above.
        let fit = 1.0;
        let live = self
            .live
            .values()
            .filter(|l| l.id != except && !l.fp.suppressed())
            .filter_map(|l| l.best.as_ref().map(|b| (&l.id, b)));
        let ended = self
            .ended
            .iter()
            .rev()
            .filter(|e| e.id != except && !e.false_positive)
            .map(|e| (&e.id, &e.best));
        live.chain(ended)
            .filter(|(_, b)| b.class == class && b.quality > fit)
            .take(n)
            .map(|(id, b)| (id.clone(), b.clone()))
            .collect()
    }

    /// Records a sub-label attempt on `track` (the head's verdict on a crop of quality `q`),
    /// with the crop's embedding, which becomes the best crop's when it is that crop.
    pub fn record(
        &mut self,
        track: u64,
        verdict: Option<&HeadLabel>,
        q: f32,
        t: f64,
        embedding: Vec<f32>,
    ) {
        let sub: SubLabelConfig = self.cfg.sublabel;
        let Some(live) = self.live.get_mut(&track) else {
            return;
        };
        let (label, score) = match verdict {
            Some(h) if !h.unknown => (Some(h.label.clone()), h.score),
            Some(h) => (None, h.score),
            None => (None, 0.0),
        };
        live.votes.record(label, score, q, t, &sub);
        if let Some(best) = live.best.as_mut() {
            if (best.quality - q).abs() <= f32::EPSILON * q.abs().max(1.0) {
                best.embedding = Some(embedding);
            }
        }
    }

    /// The agreed sub-label of a track, as a head verdict.
    pub fn sub_label(&self, track: u64) -> Option<HeadLabel> {
        let live = self.live.get(&track)?;
        let (label, score) = live.votes.agreed()?;
        Some(HeadLabel {
            label: label.to_owned(),
            score,
            unknown: false,
            head_version: live.votes_head.unwrap_or(0),
        })
    }

    /// The `objects` messages of the frame just tracked.
    pub fn events(&mut self, frame_id: u64, update: &Update) -> Vec<ObjectEvent> {
        let mut out = std::mem::take(&mut self.pending);
        let tracks: Vec<Track> = self
            .tracker
            .tracks()
            .iter()
            .filter(|t| t.confirmed)
            .cloned()
            .collect();
        self.place(&tracks, update);
        for tr in &tracks {
            let seen_now = update.ids.contains(&Some(tr.id));
            let Some(now) = self.object(tr, None) else {
                continue;
            };
            let Some(live) = self.live.get_mut(&tr.id) else {
                continue;
            };
            let fp = live.fp;
            // A false positive is silent; one announced before a person said so gets the
            // update that says it, so whoever acted on it can take it back.
            if fp.suppressed() && live.published.as_ref().is_none_or(|p| p.false_positive) {
                continue;
            }
            // Announced only once it entered a required zone (and from then on, wherever).
            if live.published.is_none() && !self.scene.admits(&live.entered) {
                continue;
            }
            // A class with a filter: the object is announced once the filter had its say.
            if live.published.is_none()
                && fp.head.is_some()
                && fp.verdicts() == 0
                && tr.last_seen - tr.first_seen < FP_WAIT_S
            {
                continue;
            }
            let mut now = now;
            if seen_now {
                now.frame_id = frame_id;
            } else if let Some(p) = &live.published {
                now.frame_id = p.frame_id;
            }
            let kind = match &live.published {
                None => Some(EventKind::New),
                Some(p) if major_change(p, &now) => Some(EventKind::Update),
                Some(p)
                    if tr.last_seen - live.published_at >= MINOR_UPDATE_S
                        && minor_change(p, &now) =>
                {
                    Some(EventKind::Update)
                }
                Some(_) => None,
            };
            if let Some(kind) = kind {
                out.push(ObjectEvent {
                    kind,
                    before: live.published.clone(),
                    after: now.clone(),
                });
                live.published = Some(now);
                live.published_at = tr.last_seen;
            }
        }
        for tr in &update.ended {
            let Some(mut now) = self.object(tr, Some(tr.last_seen)) else {
                continue;
            };
            let Some(live) = self.live.remove(&tr.id) else {
                continue;
            };
            let mut last = None;
            if let Some(p) = &live.published {
                now.frame_id = p.frame_id;
                out.push(ObjectEvent {
                    kind: EventKind::End,
                    before: live.published.clone(),
                    after: now.clone(),
                });
                last = Some(now);
            }
            if let Some(mut best) = live.best {
                best.crop = shrunk(best.crop, ENDED_CROP_SIDE);
                self.ended.push_back(Ended {
                    id: live.id,
                    best,
                    false_positive: live.fp.suppressed(),
                    last,
                });
                while self.ended.len() > self.keep_ended {
                    self.ended.pop_front();
                }
            }
        }
        out
    }

    /// The best crop of a live or recently ended object (an ended one's at most
    /// [`ENDED_CROP_SIDE`] on its longest side).
    pub fn best_crop(&self, id: &str) -> Option<&BestCrop> {
        self.live
            .values()
            .find(|l| l.id == id)
            .and_then(|l| l.best.as_ref())
            .or_else(|| {
                self.ended
                    .iter()
                    .rev()
                    .find(|e| e.id == id)
                    .map(|e| &e.best)
            })
    }

    /// Objects live now.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    fn object(&self, tr: &Track, end: Option<f64>) -> Option<TrackedObject> {
        let live = self.live.get(&tr.id)?;
        let b = tr.bbox;
        Some(TrackedObject {
            id: live.id.clone(),
            camera: self.camera.clone(),
            label: self.class_name(tr.class),
            score: tr.score,
            top_score: tr.top_score,
            sub_label: live
                .votes
                .agreed()
                .map(|(l, s)| (l.to_owned(), (s * 1000.0).round() / 1000.0)),
            bbox: [b.x1, b.y1, b.x2, b.y2].map(|v| (v * 10.0).round() / 10.0),
            frame_id: 0,
            current_zones: if end.is_some() {
                Vec::new()
            } else {
                live.zones.clone()
            },
            entered_zones: live.entered.clone(),
            start_time: millis(tr.first_seen),
            end_time: end.map(millis),
            has_snapshot: live.has_snapshot,
            false_positive: live.fp.suppressed(),
            stationary: tr.last_seen - tr.first_seen >= STATIONARY_AFTER_S
                && tr.speed() < self.cfg.stationary_speed,
        })
    }

    /// Zones and counts for this frame's objects: every confirmed live object but the false
    /// positives (an object the filter still has to judge counts: it is most likely real).
    fn place(&mut self, tracks: &[Track], update: &Update) {
        let names: Vec<String> = tracks.iter().map(|tr| self.class_name(tr.class)).collect();
        let present: Vec<Present<'_>> = tracks
            .iter()
            .zip(&names)
            .filter(|(tr, _)| self.live.get(&tr.id).is_some_and(|l| !l.fp.suppressed()))
            .map(|(tr, label)| Present {
                key: tr.id,
                label,
                bbox: [tr.bbox.x1, tr.bbox.y1, tr.bbox.x2, tr.bbox.y2],
                visible: update.ids.contains(&Some(tr.id)),
            })
            .collect();
        let (w, h) = self.size;
        let current = self.scene.update(&present, w, h);
        for live in self.live.values_mut() {
            live.zones.clear();
        }
        for (key, zones) in current {
            if let Some(live) = self.live.get_mut(&key) {
                for z in &zones {
                    if !live.entered.contains(z) {
                        live.entered.push(z.clone());
                    }
                }
                live.zones = zones;
            }
        }
    }

    fn class_name(&self, class: usize) -> String {
        self.classes
            .get(class)
            .cloned()
            .unwrap_or_else(|| format!("class_{class}"))
    }

    /// `<start seconds>.<ms>-<6 letters>`, Frigate's form: unique across restarts and
    /// cameras without a counter to persist.
    fn new_id(&mut self, t: f64) -> String {
        let letters: String = (0..6)
            .map(|_| (b'a' + self.rng.below(26) as u8) as char)
            .collect();
        format!("{:.3}-{letters}", t)
    }
}

fn millis(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

fn bbox(b: [f32; 4]) -> BBox {
    BBox {
        x1: b[0],
        y1: b[1],
        x2: b[2],
        y2: b[3],
    }
}

/// A change a person acts on.
fn major_change(a: &TrackedObject, b: &TrackedObject) -> bool {
    a.label != b.label
        || a.sub_label.as_ref().map(|s| &s.0) != b.sub_label.as_ref().map(|s| &s.0)
        || a.stationary != b.stationary
        || a.false_positive != b.false_positive
        || a.current_zones != b.current_zones
        || a.has_snapshot != b.has_snapshot
}

/// A change worth a rate-limited update: the box moved off where it was, or a better score.
fn minor_change(a: &TrackedObject, b: &TrackedObject) -> bool {
    b.top_score >= a.top_score + 0.05 || bbox(a.bbox).iou(&bbox(b.bbox)) < 0.5
}

/// `img` with its longest side at most `side` (aspect kept; never enlarged, never copied when
/// it fits).
fn shrunk(img: Arc<RgbImage>, side: u32) -> Arc<RgbImage> {
    crate::vision::image_io::fit_within(&img, side).map_or(img, Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn scene() -> RgbImage {
        RgbImage::from_fn(320, 240, |x, y| {
            if (x / 3 + y / 3) % 2 == 0 {
                Rgb([230, 230, 230])
            } else {
                Rgb([30, 30, 30])
            }
        })
    }

    fn objects() -> CameraObjects {
        CameraObjects::new(
            "front",
            vec!["person".into(), "cup".into()],
            &["person".into()],
            TrackerConfig::default(),
            2,
        )
    }

    fn heads(name: Option<u32>, fp: Option<u32>) -> Heads {
        Heads { name, fp }
    }

    fn head(label: &str) -> HeadLabel {
        HeadLabel {
            label: label.into(),
            score: 0.9,
            unknown: false,
            head_version: 1,
        }
    }

    #[test]
    fn an_object_is_new_named_after_three_agreeing_crops_and_ends() {
        let img = scene();
        let mut o = objects();
        let mut all = Vec::new();
        let mut attempts = 0;
        for f in 0..12u64 {
            let t = 100.0 + f as f64 * 0.25;
            let x = 40.0 + f as f32 * 4.0;
            let dets = [
                (0usize, 0.8f32, [x, 40.0, x + 60.0, 200.0]),
                (1usize, 0.7f32, [250.0, 150.0, 290.0, 200.0]),
            ];
            let upd = o.track(t, &dets, 0.0);
            for (i, d) in dets.iter().enumerate() {
                let Some(tid) = upd.ids[i] else { continue };
                let at = At { frame_id: f, t };
                let Some(offer) = o.offer(tid, d.0, at, &img, d.2, heads(Some(1), None)) else {
                    continue;
                };
                assert!(!offer.fp, "no filter, no verdicts asked");
                if offer.name {
                    assert_eq!(d.0, 0, "the cup is never sub-labelled");
                    attempts += 1;
                    o.record(tid, Some(&head("alice")), offer.quality, t, vec![1.0, 2.0]);
                }
            }
            all.extend(o.events(f, &upd));
        }
        assert!(
            (3..11).contains(&attempts),
            "three attempts, then only clearly better crops: {attempts}"
        );
        let kinds: Vec<(EventKind, String)> = all
            .iter()
            .map(|e| (e.kind, e.after.label.clone()))
            .collect();
        assert_eq!(
            &kinds[..2],
            [
                (EventKind::New, "person".to_string()),
                (EventKind::New, "cup".to_string())
            ]
        );
        let named = all
            .iter()
            .find(|e| e.after.sub_label.is_some())
            .expect("named");
        assert_eq!(named.kind, EventKind::Update);
        assert_eq!(
            named.after.sub_label.as_ref().map(|s| s.0.as_str()),
            Some("alice")
        );
        assert!(named.before.as_ref().is_some_and(|b| b.sub_label.is_none()));
        let person_id = named.after.id.clone();
        assert!(person_id.starts_with("100.000-"), "{person_id}");
        let best = o.best_crop(&person_id).expect("best crop");
        assert_eq!(best.class, "person");
        assert!(best.embedding.is_some(), "the best crop was tried");
        // Nothing seen for longer than max_lost_s: both end.
        let upd = o.track(110.0, &[], 0.0);
        let ends: Vec<_> = o.events(99, &upd);
        assert_eq!(ends.len(), 2);
        assert!(ends
            .iter()
            .all(|e| e.kind == EventKind::End && e.after.end_time.is_some() && e.before.is_some()));
        assert_eq!(o.live_count(), 0);
        assert!(o.best_crop(&person_id).is_some(), "kept after the end");
    }

    #[test]
    fn a_still_object_becomes_stationary_and_ended_crops_are_bounded() {
        let img = scene();
        let mut o = objects();
        let mut events = Vec::new();
        for f in 0..20u64 {
            let t = f as f64 * 0.2;
            let upd = o.track(t, &[(1, 0.9, [100.0, 100.0, 140.0, 150.0])], 0.0);
            if let Some(tid) = upd.ids[0] {
                let offer = o.offer(
                    tid,
                    1,
                    At { frame_id: f, t },
                    &img,
                    [100.0, 100.0, 140.0, 150.0],
                    heads(Some(1), None),
                );
                assert!(offer.is_none_or(|x| !x.name && !x.fp), "a cup is not named");
            }
            events.extend(o.events(f, &upd));
        }
        let kinds: Vec<(EventKind, bool)> = events
            .iter()
            .map(|e| (e.kind, e.after.stationary))
            .collect();
        assert_eq!(kinds, [(EventKind::New, false), (EventKind::Update, true)]);
        // Three objects end one after another; only the last two crops stay.
        let mut ids = Vec::new();
        for k in 0..3 {
            let t = 100.0 + k as f64 * 10.0;
            for f in 0..3 {
                let upd = o.track(
                    t + f as f64 * 0.1,
                    &[(1, 0.9, [10.0, 10.0, 60.0, 60.0])],
                    0.0,
                );
                if let Some(tid) = upd.ids[0] {
                    o.offer(
                        tid,
                        1,
                        At { frame_id: f, t },
                        &img,
                        [10.0, 10.0, 60.0, 60.0],
                        Heads::default(),
                    );
                    ids.push(o.object_id(tid).map(str::to_owned));
                }
                o.events(f, &upd);
            }
        }
        let upd = o.track(1000.0, &[], 0.0);
        o.events(0, &upd);
        let ids: Vec<String> = ids.into_iter().flatten().collect();
        assert!(o.best_crop(&ids[0]).is_none(), "the oldest ended crop went");
        assert!(o.best_crop(ids.last().expect("ids")).is_some());
    }

    #[test]
    fn ended_crops_are_kept_small_whatever_the_resolution() {
        let big = Arc::new(RgbImage::new(1200, 800));
        let small = shrunk(big, ENDED_CROP_SIDE);
        assert_eq!(small.dimensions(), (ENDED_CROP_SIDE, 213));
        let tiny = Arc::new(RgbImage::new(40, 90));
        assert_eq!(shrunk(tiny.clone(), ENDED_CROP_SIDE).dimensions(), (40, 90));
        assert!(
            Arc::ptr_eq(&shrunk(tiny.clone(), ENDED_CROP_SIDE), &tiny),
            "not copied"
        );
    }

    /// Runs `frames` frames of one cup at `x`, starting at `t0`, asking the filter (version 1)
    /// and answering `is_false`; the events.
    fn cup_frames(
        o: &mut CameraObjects,
        img: &RgbImage,
        t0: f64,
        x: f32,
        frames: u64,
        is_false: Option<bool>,
    ) -> Vec<ObjectEvent> {
        let mut out = Vec::new();
        for f in 0..frames {
            let t = t0 + f as f64 * 0.25;
            let b = [x, 60.0, x + 80.0, 200.0];
            let upd = o.track(t, &[(1, 0.9, b)], 0.0);
            if let Some(tid) = upd.ids[0] {
                let at = At { frame_id: f, t };
                let version = is_false.map(|_| 1);
                if let Some(offer) = o.offer(tid, 1, at, img, b, heads(Some(1), version)) {
                    if let (true, Some(v)) = (offer.fp, is_false) {
                        o.record_fp(tid, v, offer.quality, &[0.5; 4]);
                    }
                }
            }
            out.extend(o.events(f, &upd));
        }
        out
    }

    #[test]
    fn a_look_alike_the_filter_calls_false_is_silent_and_a_true_one_is_announced() {
        let img = scene();
        let mut o = objects();
        let silent = cup_frames(&mut o, &img, 0.0, 20.0, 8, Some(true));
        assert!(silent.is_empty(), "no new, no update: {silent:?}");
        let upd = o.track(100.0, &[], 0.0);
        assert!(o.events(0, &upd).is_empty(), "and no end either");
        let announced = cup_frames(&mut o, &img, 200.0, 120.0, 8, Some(false));
        assert_eq!(announced.first().map(|e| e.kind), Some(EventKind::New));
        assert!(!announced[0].after.false_positive);
        let id = announced[0].after.id.clone();
        // The false one is kept as ended (for a late label) but is no true example.
        assert_eq!(
            o.true_examples("cup", "", 5)
                .iter()
                .map(|(i, _)| i.as_str())
                .collect::<Vec<_>>(),
            [id.as_str()]
        );
    }

    #[test]
    fn marking_an_announced_object_says_so_once_then_it_is_silent_until_it_ends() {
        let img = scene();
        let mut o = objects();
        let first = cup_frames(&mut o, &img, 0.0, 20.0, 4, None);
        let id = first[0].after.id.clone();
        let (class, best) = o.mark_false_positive(&id).expect("marked");
        assert_eq!((class.as_str(), best.class.as_str()), ("cup", "cup"));
        let after = cup_frames(&mut o, &img, 1.0, 20.0, 6, None);
        assert_eq!(after.len(), 1, "one update: {after:?}");
        assert!(after[0].kind == EventKind::Update && after[0].after.false_positive);
        let upd = o.track(100.0, &[], 0.0);
        let end = o.events(0, &upd);
        assert!(end.len() == 1 && end[0].kind == EventKind::End && end[0].after.false_positive);
        assert!(o.true_examples("cup", "", 5).is_empty());
        assert!(o.mark_false_positive("1.000-nobody").is_none());
    }

    #[test]
    fn an_ended_object_marked_false_gets_its_update_with_the_next_frame() {
        let img = scene();
        let mut o = objects();
        let first = cup_frames(&mut o, &img, 0.0, 20.0, 4, None);
        let id = first[0].after.id.clone();
        let upd = o.track(100.0, &[], 0.0);
        assert_eq!(o.events(0, &upd).len(), 1, "the end");
        assert!(o.mark_false_positive(&id).is_some());
        assert!(
            o.mark_false_positive(&id).is_some(),
            "twice is no second update"
        );
        let upd = o.track(101.0, &[], 0.0);
        let next = o.events(1, &upd);
        assert_eq!(next.len(), 1, "{next:?}");
        assert!(next[0].after.false_positive && next[0].after.end_time.is_some());
        assert_eq!(next[0].after.id, id);
    }

    #[test]
    fn a_new_object_of_a_filtered_class_waits_for_a_verdict_only_so_long() {
        let img = RgbImage::new(320, 240); // flat: no crop is fit, so no verdict ever comes
        let mut o = objects();
        let events = cup_frames(&mut o, &img, 0.0, 20.0, 8, Some(true));
        let new = events
            .iter()
            .find(|e| e.kind == EventKind::New)
            .expect("new");
        // Frames come every 0.25 s from t = 0: held for FP_WAIT_S, then announced as true.
        assert!(
            new.after.frame_id as f64 * 0.25 >= FP_WAIT_S && !new.after.false_positive,
            "{new:?}"
        );
        assert!(
            o.true_examples("cup", "", 5).is_empty(),
            "unfit crops are no examples"
        );
    }
}
