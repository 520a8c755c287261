//! Tracked objects: one camera's detections associated across frames into objects with stable
//! ids, the unit that events, sub-labels, false positives and snapshots are about.
//!
//! The design is ByteTrack's (Zhang et al., 2022), on our own ~300 lines instead of a crate
//! (the Rust ones are young, and this must build for armv7 with nothing else):
//! 1. every track's box is predicted to the frame's time by a constant-velocity filter
//!    ([`motion`]);
//! 2. confident detections are matched to confirmed and recently lost tracks by IoU with the
//!    prediction, with an optimal assignment ([`assign`]), so two people crossing keep their
//!    ids where greedy matching swaps them. A detection of another class matches at a
//!    discount (small detectors call one cat `cat`, `dog` and `cow` in turn); the object's
//!    class is the one its detections voted for most, by score. A second box of another class
//!    on the same spot in the same frame is a duplicate, not a second object;
//! 3. tracks still unmatched get a second chance against the low-score detections (an object
//!    half hidden behind another scores low; dropping it is what breaks tracks);
//! 4. objects still unmatched are re-acquired by distance and size, with a gate that grows
//!    with the time they were lost (after a long occlusion the prediction has drifted off);
//! 5. new tracks start from confident leftovers and are confirmed after `min_hits`
//!    consecutive frames (a one-frame false detection never becomes an object); a box around
//!    two others (a small detector's "group" box) starts nothing;
//! 6. a track unseen in the open for `max_lost_s` seconds ends; time hidden behind an object
//!    seen in the frame only counts towards the longer `max_occluded_s`.
//!
//! Time is the frames' own (seconds), not a frame count: a camera capped at 2 fps and one at
//! 15 fps behave the same, and a stall does not age tracks by frames that never came.
//!
//! Layout: [`motion`] (the box filter), [`assign`] (Hungarian matching), [`sublabel`] (which
//! crops of an object are worth naming, and the consensus over the attempts), [`metrics`] (IDF1 and
//! identity switches against ground truth, for tests and `adaptd bench-track`), [`zones`] (per-camera
//! zones and object masks, and who is in which zone).

pub mod assign;
pub mod metrics;
pub mod motion;
pub mod sublabel;
pub mod zones;

use serde::{Deserialize, Serialize};

use crate::vision::detect::BBox;
use motion::BoxMotion;

/// The tracker's knobs; the defaults are ByteTrack's, with time in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// Detections at or above it are matched first and may start tracks.
    pub high_score: f32,
    /// Detections between this and `high_score` only extend existing tracks.
    pub low_score: f32,
    /// Least IoU between a prediction and a confident detection to match them.
    pub match_iou: f32,
    /// Least IoU for the second, low-score round (stricter: low scores are often wrong).
    pub low_match_iou: f32,
    /// Factor on the IoU of a detection whose class is not the track's: below 1, a detection
    /// of the same class wins a tie.
    pub class_change: f32,
    /// IoU above which a box of another class in the same frame is the same object seen
    /// twice (per-class NMS keeps both), and is dropped.
    pub duplicate_iou: f32,
    /// Consecutive frames a new track needs before it is an object.
    pub min_hits: u32,
    /// Seconds a track survives unseen in the open (a missed detection, an object gone out
    /// of view) before it ends. Time it spends hidden behind an object seen in the frame does
    /// not count here, only towards `max_occluded_s`.
    pub max_lost_s: f64,
    /// Seconds a track survives unseen in all, when part of that time it was behind
    /// something seen in the frame (its box at least a quarter covered by the boxes of the
    /// objects matched in that frame): a cat that walks behind a person for four seconds
    /// comes back as the same object, while one that left the picture still ends after
    /// `max_lost_s`. The longer of the two applies.
    pub max_occluded_s: f64,
    /// Sizes (square root of the box area) the centre of a lost object's detection may be
    /// from its prediction per second it was lost, in the re-association round that matches
    /// lost objects by distance and size when their prediction no longer overlaps them; the
    /// gate starts at half a size and stops growing at three.
    pub reacquire_sizes_per_s: f32,
    /// Speed, in box heights per second, under which an object counts as `stationary`.
    pub stationary_speed: f32,
    /// `[track.sublabel]`: when an object's crop is named.
    pub sublabel: sublabel::SubLabelConfig,
}

impl Default for TrackerConfig {
    /// ByteTrack's, with the score thresholds moved down to where a small detector's scores
    /// are (NanoDet-m: 0.35-0.6 on clear objects, `[detect].score_threshold` 0.35), and a
    /// lost-track life near Frigate's (5 s): a small detector misses a person outright for
    /// 2-3 s at a time (`adaptd bench-track`), and an object hidden behind another for 4 s
    /// should come back under its id; an object that left is reported ended 3 s later.
    fn default() -> Self {
        TrackerConfig {
            high_score: 0.35,
            low_score: 0.15,
            match_iou: 0.2,
            low_match_iou: 0.5,
            class_change: 0.75,
            duplicate_iou: 0.7,
            min_hits: 2,
            max_lost_s: 3.0,
            max_occluded_s: 5.0,
            reacquire_sizes_per_s: 0.5,
            stationary_speed: 0.1,
            sublabel: sublabel::SubLabelConfig::default(),
        }
    }
}

impl TrackerConfig {
    /// Range rules; each message names the key and what is allowed.
    pub fn validate(&self) -> Vec<String> {
        let mut p = self.sublabel.validate();
        if !(self.stationary_speed.is_finite() && self.stationary_speed >= 0.0) {
            p.push(format!(
                "[track].stationary_speed = {} is out of range; allowed: 0 or more",
                self.stationary_speed
            ));
        }
        for (key, v) in [
            ("high_score", self.high_score),
            ("low_score", self.low_score),
            ("match_iou", self.match_iou),
            ("low_match_iou", self.low_match_iou),
            ("class_change", self.class_change),
            ("duplicate_iou", self.duplicate_iou),
        ] {
            if !(0.0..=1.0).contains(&v) {
                p.push(format!(
                    "[track].{key} = {v} is out of range; allowed: 0.0 to 1.0"
                ));
            }
        }
        if self.low_score > self.high_score {
            p.push(format!(
                "[track].low_score = {} is above high_score = {}; it must be at most that",
                self.low_score, self.high_score
            ));
        }
        if !(1..=100).contains(&self.min_hits) {
            p.push(format!(
                "[track].min_hits = {} is out of range; allowed: 1 to 100",
                self.min_hits
            ));
        }
        if !(self.max_lost_s.is_finite() && self.max_lost_s > 0.0 && self.max_lost_s <= 600.0) {
            p.push(format!(
                "[track].max_lost_s = {} is out of range; allowed: above 0 up to 600",
                self.max_lost_s
            ));
        }
        if !(self.max_occluded_s.is_finite() && self.max_occluded_s <= 600.0) {
            p.push(format!(
                "[track].max_occluded_s = {} is out of range; allowed: up to 600",
                self.max_occluded_s
            ));
        }
        if !(self.reacquire_sizes_per_s.is_finite()
            && (0.0..=10.0).contains(&self.reacquire_sizes_per_s))
        {
            p.push(format!(
                "[track].reacquire_sizes_per_s = {} is out of range; allowed: 0 to 10 (0: off)",
                self.reacquire_sizes_per_s
            ));
        }
        p
    }
}

/// One detection of a frame, as the tracker sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub class: usize,
    pub score: f32,
    pub bbox: BBox,
}

/// A tracked object as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Unique for the tracker's life, never reused; 0 is never an id.
    pub id: u64,
    /// The class its detections voted for (summed scores).
    pub class: usize,
    /// The filtered box (smoother than the last detection).
    pub bbox: BBox,
    /// Score of the last matched detection, and the best so far.
    pub score: f32,
    pub top_score: f32,
    /// Frame times (seconds) of the first and the last match.
    pub first_seen: f64,
    pub last_seen: f64,
    /// Matched frames.
    pub hits: u32,
    /// An object once `min_hits` consecutive frames matched.
    pub confirmed: bool,
    motion: BoxMotion,
    /// Consecutive matches while tentative.
    streak: u32,
    /// Seconds unseen and not hidden behind a seen object, since the last match.
    open_lost: f64,
    /// Summed detection scores per class.
    votes: Vec<(usize, f32)>,
}

impl Track {
    fn vote(&mut self, class: usize, score: f32) {
        match self.votes.iter_mut().find(|(c, _)| *c == class) {
            Some((_, total)) => *total += score,
            None => self.votes.push((class, score)),
        }
        if let Some(&(c, _)) = self.votes.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            self.class = c;
        }
    }

    /// Speed of its centre in box heights per second.
    pub fn speed(&self) -> f32 {
        self.motion.speed_in_heights()
    }
}

/// What one frame changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// Per observation, in the order given: the id of the confirmed track it belongs to.
    pub ids: Vec<Option<u64>>,
    /// Tracks that became objects in this frame.
    pub started: Vec<u64>,
    /// Objects that ended in this frame (unseen for `max_lost_s`), as they last were.
    pub ended: Vec<Track>,
}

/// The tracks of one camera.
#[derive(Debug, Clone)]
pub struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
    /// The previous frame's time: what an unseen track's open-lost clock advances by.
    last_t: Option<f64>,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            cfg,
            tracks: Vec::new(),
            next_id: 1,
            last_t: None,
        }
    }

    /// Raises (or restores) the score a detection needs to start or first-match an object:
    /// the daemon ties it to the camera's `score_threshold`, so a user who raises that sees
    /// no new objects below it.
    pub fn set_high_score(&mut self, high: f32) {
        self.cfg.high_score = high.max(self.cfg.low_score);
    }

    /// The live tracks, tentative ones included.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// A live track by id.
    pub fn get(&self, id: u64) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// The scene stood still until `t` seconds: frames came but the motion gate skipped them
    /// (nothing moved), so what the last analysed frame saw is taken as seen through to `t`.
    ///
    /// Why: without it, an object that stops moving (a person on a sofa, a parked car) would
    /// age out over the skipped frames (`max_lost_s` is seconds, not analysed frames) and come
    /// back as a new object at the next keep-alive: a `new` and an `end` every keep-alive, its
    /// name and snapshot lost each time. Objects already lost before the stillness keep
    /// their clocks (`t - last_seen` still ends them), so nothing lingers because it is dark.
    pub fn hold(&mut self, t: f64) {
        let Some(last) = self.last_t.filter(|last| t > *last) else {
            return;
        };
        for tr in &mut self.tracks {
            if tr.last_seen >= last {
                tr.last_seen = t;
            }
        }
        self.last_t = Some(t);
    }

    /// Associates one frame's observations, taken at `t` seconds (any epoch, increasing).
    pub fn update(&mut self, t: f64, obs: &[Observation]) -> Update {
        let cfg = self.cfg;
        let mut ids: Vec<Option<u64>> = vec![None; obs.len()];
        let mut det_taken = vec![false; obs.len()];
        let mut track_hit = vec![false; self.tracks.len()];
        let predicted: Vec<BBox> = self
            .tracks
            .iter()
            .map(|tr| tr.motion.predict((t - tr.last_seen) as f32))
            .collect();

        let duplicate = duplicates(obs, cfg.duplicate_iou);
        let group = groups(obs, &duplicate, cfg.low_score);
        // A group box never starts or first-matches an object; it may still extend one it
        // fits closely (the low round's IoU), which is what a genuinely big object does.
        let high: Vec<usize> = (0..obs.len())
            .filter(|&i| !duplicate[i] && !group[i] && obs[i].score >= cfg.high_score)
            .collect();
        let low: Vec<usize> = (0..obs.len())
            .filter(|&i| {
                !duplicate[i]
                    && obs[i].score >= cfg.low_score
                    && (obs[i].score < cfg.high_score || group[i])
            })
            .collect();
        // An object unseen for longer than its life has ended: it matches nothing, even a
        // detection on the same spot after a long gap (a stall, a paused camera).
        let life = cfg.max_lost_s.max(cfg.max_occluded_s);
        let gap = self.last_t.map_or(0.0, |last| (t - last).max(0.0));
        self.last_t = Some(t);
        let confirmed: Vec<usize> = (0..self.tracks.len())
            .filter(|&k| {
                let tr = &self.tracks[k];
                tr.confirmed && t - tr.last_seen <= life && tr.open_lost + gap <= cfg.max_lost_s
            })
            .collect();
        let tentative: Vec<usize> = (0..self.tracks.len())
            .filter(|&k| !self.tracks[k].confirmed)
            .collect();

        // 1. Confident detections against objects (seen or lost).
        let pairs = self.match_round(&confirmed, &high, &predicted, obs, cfg.match_iou);
        self.apply(&pairs, t, obs, &mut track_hit, &mut det_taken, &mut ids);
        // 2. Objects still unmatched against the low-score detections.
        let waiting: Vec<usize> = confirmed
            .iter()
            .copied()
            .filter(|&k| !track_hit[k])
            .collect();
        let pairs = self.match_round(&waiting, &low, &predicted, obs, cfg.low_match_iou);
        self.apply(&pairs, t, obs, &mut track_hit, &mut det_taken, &mut ids);
        // 3. Objects still unmatched against the confident detections left, by distance and
        // size: after a long occlusion the prediction has drifted off the object (it turned,
        // or its speed was misjudged from half-hidden boxes), and IoU is zero. Before the
        // tentative tracks, so the object is not born again under a new id.
        let waiting: Vec<usize> = confirmed
            .iter()
            .copied()
            .filter(|&k| !track_hit[k])
            .collect();
        let left: Vec<usize> = high.iter().copied().filter(|&i| !det_taken[i]).collect();
        let pairs = self.reacquire_round(&waiting, &left, &predicted, obs, t);
        self.apply(&pairs, t, obs, &mut track_hit, &mut det_taken, &mut ids);
        // 4. Tentative tracks against the confident detections left.
        let left: Vec<usize> = high.iter().copied().filter(|&i| !det_taken[i]).collect();
        let pairs = self.match_round(&tentative, &left, &predicted, obs, cfg.match_iou);
        self.apply(&pairs, t, obs, &mut track_hit, &mut det_taken, &mut ids);

        let mut started = Vec::new();
        for (k, tr) in self.tracks.iter_mut().enumerate() {
            if !tr.confirmed && track_hit[k] && tr.streak >= cfg.min_hits {
                tr.confirmed = true;
                started.push(tr.id);
            }
        }
        // What hides a lost object: the objects seen in this frame.
        let seen: Vec<BBox> = (0..self.tracks.len())
            .filter(|&k| track_hit[k] && self.tracks[k].confirmed)
            .map(|k| self.tracks[k].bbox)
            .collect();
        // Tentative tracks that missed a frame are dropped (they were not objects); objects
        // unseen for too long end: after max_lost_s in the open, after max_occluded_s when
        // behind something seen now.
        let mut ended = Vec::new();
        let mut kept = Vec::with_capacity(self.tracks.len());
        for (k, mut tr) in std::mem::take(&mut self.tracks).into_iter().enumerate() {
            if !track_hit[k]
                && covered(&predicted[k], &seen) < OCCLUDED_SHARE
                && covered(&tr.bbox, &seen) < OCCLUDED_SHARE
            {
                tr.open_lost += gap;
            }
            let alive = track_hit[k]
                || (tr.confirmed && t - tr.last_seen <= life && tr.open_lost <= cfg.max_lost_s);
            if alive {
                kept.push(tr);
            } else if tr.confirmed {
                ended.push(tr);
            }
        }
        self.tracks = kept;
        // 5. New tracks from confident leftovers; with min_hits = 1 they are objects at once.
        for i in high {
            if det_taken[i] {
                continue;
            }
            let o = obs[i];
            let id = self.next_id;
            self.next_id += 1;
            let confirmed = cfg.min_hits <= 1;
            if confirmed {
                started.push(id);
            }
            ids[i] = Some(id);
            self.tracks.push(Track {
                id,
                class: o.class,
                bbox: o.bbox,
                score: o.score,
                top_score: o.score,
                first_seen: t,
                last_seen: t,
                hits: 1,
                confirmed,
                motion: BoxMotion::new(&o.bbox),
                streak: 1,
                open_lost: 0.0,
                votes: vec![(o.class, o.score)],
            });
            det_taken[i] = true;
        }
        // Only objects are reported: a tentative track's detection has no id yet.
        for id in ids.iter_mut() {
            if let Some(v) = *id {
                if !self.tracks.iter().any(|tr| tr.id == v && tr.confirmed) {
                    *id = None;
                }
            }
        }
        Update {
            ids,
            started,
            ended,
        }
    }

    /// Optimal pairs (track index, observation index) of lost objects and detections near
    /// them: the centre within a gate that grows with the time lost (from where the object
    /// was last seen or from where it was heading, whichever is nearer), a similar size, and
    /// a class the object has been called before.
    fn reacquire_round(
        &self,
        tracks: &[usize],
        dets: &[usize],
        predicted: &[BBox],
        obs: &[Observation],
        t: f64,
    ) -> Vec<(usize, usize)> {
        let rate = self.cfg.reacquire_sizes_per_s;
        if tracks.is_empty() || dets.is_empty() || rate <= 0.0 {
            return Vec::new();
        }
        let mut score = vec![0.0f32; tracks.len() * dets.len()];
        for (r, &k) in tracks.iter().enumerate() {
            let tr = &self.tracks[k];
            let size = tr.bbox.area().sqrt().max(1e-6);
            let lost = (t - tr.last_seen).max(0.0) as f32;
            let gate = (0.5 + rate * lost).min(3.0) * size;
            let votes: f32 = tr.votes.iter().map(|v| v.1).sum();
            for (c, &i) in dets.iter().enumerate() {
                let o = &obs[i];
                let class = if o.class == tr.class {
                    1.0
                } else if tr
                    .votes
                    .iter()
                    .any(|&(vc, v)| vc == o.class && v >= MIN_CLASS_SHARE * votes)
                {
                    self.cfg.class_change
                } else {
                    continue;
                };
                let area = o.bbox.area().max(1e-6);
                let ratio = area.min(tr.bbox.area()) / area.max(tr.bbox.area().max(1e-6));
                if ratio < MIN_SIZE_RATIO {
                    continue;
                }
                let d =
                    centre_distance(&o.bbox, &predicted[k]).min(centre_distance(&o.bbox, &tr.bbox));
                if d >= gate {
                    continue;
                }
                score[r * dets.len() + c] = (1.0 - d / gate) * ratio * class;
            }
        }
        assign::best_pairs(&score, tracks.len(), dets.len(), 1e-3)
            .into_iter()
            .map(|(r, c)| (tracks[r], dets[c]))
            .collect()
    }

    /// Optimal pairs (track index, observation index) of one round.
    fn match_round(
        &self,
        tracks: &[usize],
        dets: &[usize],
        predicted: &[BBox],
        obs: &[Observation],
        min_iou: f32,
    ) -> Vec<(usize, usize)> {
        if tracks.is_empty() || dets.is_empty() {
            return Vec::new();
        }
        let mut score = vec![0.0f32; tracks.len() * dets.len()];
        for (r, &k) in tracks.iter().enumerate() {
            for (c, &i) in dets.iter().enumerate() {
                let iou = predicted[k].iou(&obs[i].bbox);
                score[r * dets.len() + c] = if self.tracks[k].class == obs[i].class {
                    iou
                } else {
                    iou * self.cfg.class_change
                };
            }
        }
        assign::best_pairs(&score, tracks.len(), dets.len(), min_iou.max(1e-6))
            .into_iter()
            .map(|(r, c)| (tracks[r], dets[c]))
            .collect()
    }

    fn apply(
        &mut self,
        pairs: &[(usize, usize)],
        t: f64,
        obs: &[Observation],
        track_hit: &mut [bool],
        det_taken: &mut [bool],
        ids: &mut [Option<u64>],
    ) {
        for &(k, i) in pairs {
            let tr = &mut self.tracks[k];
            let o = &obs[i];
            tr.motion.update(&o.bbox, (t - tr.last_seen) as f32);
            tr.bbox = tr.motion.current();
            tr.score = o.score;
            tr.top_score = tr.top_score.max(o.score);
            tr.vote(o.class, o.score);
            tr.last_seen = t;
            tr.hits += 1;
            tr.streak += 1;
            tr.open_lost = 0.0;
            ids[i] = Some(tr.id);
            track_hit[k] = true;
            det_taken[i] = true;
        }
    }
}

/// Share of a lost object's box that this frame's objects must cover for it to count as
/// hidden behind them (and live up to `max_occluded_s`): a quarter, because a small
/// detector already loses a person a quarter hidden behind a cat.
const OCCLUDED_SHARE: f32 = 0.25;
/// Least share of an object's class votes a class needs for a detection of it to re-acquire
/// the object by distance (cat/dog flips are common; a person box taking a lost cat is not).
const MIN_CLASS_SHARE: f32 = 0.2;
/// Least ratio of the smaller to the larger area for a re-acquiring detection: a reappearing
/// object may be partly hidden still, or have been seen only as a sliver before it went,
/// but it is not a different size altogether.
const MIN_SIZE_RATIO: f32 = 0.3;
/// A box is a group box (see [`groups`]) when other boxes at least this much inside it...
const GROUP_INSIDE: f32 = 0.8;
/// ...each at most this share of its area...
const GROUP_PART_MAX: f32 = 0.7;
/// ...together cover at least this share of it...
const GROUP_COVER: f32 = 0.4;
/// ...and it scores at most this much above the best of them: a union box over two objects
/// is about as sure as they are, while a person found at 0.8 with faint fragments of herself
/// inside (0.2-0.4, as NanoDet-m gives on a close-up) is one person, not a group.
const GROUP_SCORE_MARGIN: f32 = 0.25;

/// Distance between two boxes' centres.
fn centre_distance(a: &BBox, b: &BBox) -> f32 {
    let dx = (a.x1 + a.x2 - b.x1 - b.x2) * 0.5;
    let dy = (a.y1 + a.y2 - b.y1 - b.y2) * 0.5;
    (dx * dx + dy * dy).sqrt()
}

/// Area of `a` inside `b`.
fn intersection(a: &BBox, b: &BBox) -> f32 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    iw * ih
}

/// Share of `b`'s area the boxes of `by` cover (overlaps counted twice, capped at 1).
fn covered(b: &BBox, by: &[BBox]) -> f32 {
    let area = b.area();
    if area <= 0.0 {
        return 0.0;
    }
    (by.iter().map(|o| intersection(b, o)).sum::<f32>() / area).min(1.0)
}

/// Marks each observation that is a box around two or more others: small detectors, on
/// objects side by side, also fire on the pair as a whole (NanoDet-m calls two cats one
/// `cat` at 0.3-0.6), and such a box, taken for an object, lives as long as the pair stays
/// together and steals the real objects' detections when their scores dip. A group box
/// holds at least two distinct boxes (not duplicates of each other) of this frame scoring
/// `min_score` or more, each mostly inside it and clearly smaller, that together make up a
/// good part of it; a car with two people in front of it covers far more than its people.
fn groups(obs: &[Observation], duplicate: &[bool], min_score: f32) -> Vec<bool> {
    let mut out = vec![false; obs.len()];
    for (i, o) in obs.iter().enumerate() {
        let area = o.bbox.area();
        if duplicate[i] || area <= 0.0 {
            continue;
        }
        let mut parts: Vec<&BBox> = Vec::new();
        let mut best = 0.0f32;
        for (j, p) in obs.iter().enumerate() {
            if j == i || duplicate[j] || p.score < min_score {
                continue;
            }
            let pa = p.bbox.area();
            if pa <= 0.0 || pa > GROUP_PART_MAX * area {
                continue;
            }
            if intersection(&p.bbox, &o.bbox) < GROUP_INSIDE * pa {
                continue;
            }
            if parts.iter().any(|q| q.iou(&p.bbox) >= 0.5) {
                continue;
            }
            parts.push(&p.bbox);
            best = best.max(p.score);
        }
        let cover: f32 = parts.iter().map(|p| p.area()).sum();
        out[i] =
            parts.len() >= 2 && cover >= GROUP_COVER * area && o.score <= best + GROUP_SCORE_MARGIN;
    }
    out
}

/// Marks each observation that overlaps a higher-scored one of another class by at least
/// `min_iou`: the detector's per-class NMS kept both, but it is one object.
fn duplicates(obs: &[Observation], min_iou: f32) -> Vec<bool> {
    let mut order: Vec<usize> = (0..obs.len()).collect();
    order.sort_by(|&a, &b| obs[b].score.total_cmp(&obs[a].score));
    let mut dup = vec![false; obs.len()];
    for (n, &i) in order.iter().enumerate() {
        if dup[i] {
            continue;
        }
        for &j in &order[n + 1..] {
            if !dup[j] && obs[j].class != obs[i].class && obs[i].bbox.iou(&obs[j].bbox) >= min_iou {
                dup[j] = true;
            }
        }
    }
    dup
}

#[cfg(test)]
mod tests {
    use super::metrics::{evaluate, FrameBoxes};
    use super::*;

    fn bx(cx: f32, cy: f32, w: f32, h: f32) -> BBox {
        BBox {
            x1: cx - w / 2.0,
            y1: cy - h / 2.0,
            x2: cx + w / 2.0,
            y2: cy + h / 2.0,
        }
    }

    fn obs(class: usize, score: f32, bbox: BBox) -> Observation {
        Observation { class, score, bbox }
    }

    /// Two people walking towards each other on one line, crossing in the middle; while they
    /// overlap the one behind is not detected (occluded) for `hidden` frames.
    fn crossing(hidden: usize) -> (Vec<Vec<(u64, Observation)>>, f64) {
        let dt = 0.2; // 5 fps
        let mut frames = Vec::new();
        for i in 0..40 {
            let x = i as f32 * 12.0;
            let a = bx(40.0 + x, 200.0, 60.0, 150.0);
            let b = bx(520.0 - x, 205.0, 60.0, 150.0);
            let mut f = vec![(1, obs(0, 0.8, a))];
            let overlap = a.iou(&b) > 0.0;
            let middle = (20usize.saturating_sub(hidden / 2)..20 + hidden.div_ceil(2)).contains(&i);
            if !(overlap && middle) {
                f.push((2, obs(0, 0.75, b)));
            }
            frames.push(f);
        }
        (frames, dt)
    }

    fn run(frames: &[Vec<(u64, Observation)>], dt: f64, cfg: TrackerConfig) -> Vec<FrameBoxes> {
        let mut t = Tracker::new(cfg);
        let mut out = Vec::new();
        for (n, f) in frames.iter().enumerate() {
            let o: Vec<Observation> = f.iter().map(|(_, o)| *o).collect();
            let u = t.update(n as f64 * dt, &o);
            out.push(FrameBoxes {
                truth: f.iter().map(|(g, o)| (*g, o.bbox)).collect(),
                tracked: u
                    .ids
                    .iter()
                    .zip(&o)
                    .filter_map(|(id, o)| id.map(|id| (id, o.bbox)))
                    .collect(),
            });
        }
        out
    }

    #[test]
    fn two_crossing_people_keep_their_ids_through_an_occlusion() {
        for hidden in [0, 2, 4] {
            let (frames, dt) = crossing(hidden);
            let s = evaluate(&run(&frames, dt, TrackerConfig::default()), 0.5);
            assert_eq!(s.id_switches, 0, "hidden {hidden}: {s:?}");
            // Only the first frame of each (tentative) is not reported.
            assert!(s.idf1 > 0.95, "hidden {hidden}: {s:?}");
        }
    }

    #[test]
    fn a_one_frame_false_detection_never_becomes_an_object() {
        let mut t = Tracker::new(TrackerConfig::default());
        let u = t.update(0.0, &[obs(2, 0.9, bx(50.0, 50.0, 20.0, 20.0))]);
        assert_eq!(u.ids, vec![None], "tentative: no id yet");
        let u = t.update(0.2, &[]);
        assert!(u.started.is_empty() && u.ended.is_empty());
        assert!(t.tracks().is_empty(), "dropped, not lost");
    }

    #[test]
    fn an_object_is_confirmed_then_ends_after_max_lost_s() {
        let mut t = Tracker::new(TrackerConfig::default());
        let b = bx(100.0, 100.0, 40.0, 80.0);
        t.update(0.0, &[obs(0, 0.9, b)]);
        let u = t.update(0.5, &[obs(0, 0.9, b)]);
        let id = u.ids[0].expect("confirmed on its second frame");
        assert_eq!(u.started, vec![id]);
        // Unseen in the open: still alive at 3.0 s past its last match, ended after.
        assert!(t.update(3.5, &[]).ended.is_empty());
        let u = t.update(3.6, &[]);
        assert_eq!(u.ended.len(), 1);
        assert_eq!(u.ended[0].id, id);
        assert_eq!((u.ended[0].hits, u.ended[0].last_seen), (2, 0.5));
        // Ids are never reused.
        t.update(4.0, &[obs(0, 0.9, b)]);
        let u = t.update(4.2, &[obs(0, 0.9, b)]);
        assert!(u.ids[0].is_some_and(|new| new > id));
    }

    #[test]
    fn an_object_held_through_a_still_scene_keeps_its_id_and_a_lost_one_still_ends() {
        let cfg = TrackerConfig {
            max_lost_s: 2.0,
            max_occluded_s: 2.0,
            ..TrackerConfig::default()
        };
        let mut t = Tracker::new(cfg);
        let sitting = obs(0, 0.9, bx(100.0, 100.0, 50.0, 120.0));
        let walking = obs(0, 0.9, bx(300.0, 100.0, 50.0, 120.0));
        let mut last = None;
        for k in 0..5 {
            last = t.update(k as f64 * 0.1, &[sitting, walking]).ids[0];
        }
        let id = last.expect("confirmed");
        // The walker leaves (motion: this frame is analysed), then the scene is still for 30 s.
        t.update(0.5, &[sitting]);
        t.hold(30.5);
        let u = t.update(30.6, &[sitting]);
        assert_eq!(u.ids, vec![Some(id)], "the sitter is the same object");
        assert_eq!(u.ended.len(), 1, "the walker ended: {:?}", u.ended);
        assert!(u.started.is_empty());
        // Without a hold, the same 30 s gap ends the sitter too.
        let mut t2 = Tracker::new(cfg);
        for k in 0..5 {
            t2.update(k as f64 * 0.1, &[sitting]);
        }
        let u = t2.update(30.0, &[sitting]);
        assert_eq!(u.ended.len(), 1);
        // A hold into the past changes nothing.
        t.hold(1.0);
        assert_eq!(t.update(30.7, &[sitting]).ids, vec![Some(id)]);
    }

    #[test]
    fn a_class_flip_keeps_the_object_and_the_vote_names_it() {
        let mut t = Tracker::new(TrackerConfig::default());
        let b = bx(100.0, 100.0, 60.0, 40.0);
        let (cat, dog) = (15, 16);
        t.update(0.0, &[obs(cat, 0.5, b)]);
        let id = t.update(0.2, &[obs(cat, 0.5, b)]).ids[0];
        assert!(id.is_some());
        // Called a dog once: the same object, still a cat by the votes.
        assert_eq!(t.update(0.4, &[obs(dog, 0.45, b)]).ids[0], id);
        assert_eq!(t.get(id.unwrap_or(0)).map(|tr| tr.class), Some(cat));
        // Both in one frame on the same spot: one object, the duplicate gets no id.
        let u = t.update(0.6, &[obs(dog, 0.4, b), obs(cat, 0.5, b)]);
        assert_eq!(u.ids, vec![None, id]);
        // A cat and a dog side by side are two objects, whatever they were called before.
        let side = bx(300.0, 100.0, 60.0, 40.0);
        t.update(0.8, &[obs(cat, 0.5, b), obs(dog, 0.6, side)]);
        let u = t.update(1.0, &[obs(cat, 0.5, b), obs(dog, 0.6, side)]);
        assert_eq!(u.ids[0], id);
        assert!(u.ids[1].is_some_and(|other| Some(other) != id));
    }

    #[test]
    fn a_low_score_detection_extends_an_object_but_starts_nothing() {
        let mut t = Tracker::new(TrackerConfig::default());
        let b = bx(100.0, 100.0, 40.0, 80.0);
        t.update(0.0, &[obs(0, 0.9, b)]);
        let id = t.update(0.2, &[obs(0, 0.9, b)]).ids[0];
        // Half hidden: it scores 0.2 now; a low score elsewhere starts nothing.
        let u = t.update(
            0.4,
            &[obs(0, 0.2, b), obs(0, 0.2, bx(400.0, 100.0, 40.0, 80.0))],
        );
        assert_eq!(u.ids, vec![id, None]);
        assert_eq!(t.tracks().len(), 1);
        assert_eq!(t.get(id.unwrap_or(0)).map(|tr| tr.top_score), Some(0.9));
    }

    /// Matches `b` for `frames` frames at 5 fps from `t0`; the id it got.
    fn confirm(t: &mut Tracker, t0: f64, frames: usize, o: Observation) -> Option<u64> {
        let mut id = None;
        for f in 0..frames {
            id = t.update(t0 + f as f64 * 0.2, &[o]).ids[0];
        }
        id
    }

    #[test]
    fn a_box_around_two_objects_never_becomes_a_third() {
        let mut t = Tracker::new(TrackerConfig::default());
        let (cat, person) = (15, 0);
        let mut union_ids = Vec::new();
        let mut objects = std::collections::BTreeSet::new();
        for f in 0..10 {
            let x = f as f32 * 5.0;
            let a = bx(100.0 + x, 100.0, 100.0, 70.0);
            let b = bx(200.0 + x, 120.0, 70.0, 70.0);
            // The union, scored above both (as NanoDet-m does on two cats side by side).
            let u = bx(155.0 + x, 110.0, 200.0, 100.0);
            let upd = t.update(
                f as f64 * 0.2,
                &[obs(cat, 0.55, u), obs(cat, 0.45, a), obs(person, 0.2, b)],
            );
            union_ids.push(upd.ids[0]);
            objects.extend(upd.ids[1]);
        }
        assert!(union_ids.iter().all(Option::is_none), "{union_ids:?}");
        assert_eq!(objects.len(), 1, "the cat, one id: {objects:?}");
        assert_eq!(
            t.tracks().len(),
            1,
            "the person box is low: it starts nothing"
        );
        // A big object with small ones in front of it that cover little of it is no group.
        let mut t = Tracker::new(TrackerConfig::default());
        let car = bx(300.0, 300.0, 400.0, 200.0);
        let people = [bx(200.0, 330.0, 30.0, 80.0), bx(400.0, 330.0, 30.0, 80.0)];
        for f in 0..3 {
            let mut o = vec![obs(2, 0.8, car)];
            o.extend(people.iter().map(|&p| obs(person, 0.7, p)));
            let upd = t.update(f as f64 * 0.2, &o);
            if f == 2 {
                assert!(upd.ids.iter().all(Option::is_some), "{upd:?}");
            }
        }
    }

    #[test]
    fn a_sure_person_with_faint_fragments_inside_is_one_person_not_a_group() {
        // NanoDet-m on a close-up of the astronaut: the person at 0.8, and fragments of her
        // (an arm, the torso) at 0.38 and 0.25 inside the box.
        let mut t = Tracker::new(TrackerConfig::default());
        let person = bx(140.0, 170.0, 280.0, 330.0);
        let arm = bx(55.0, 150.0, 107.0, 300.0);
        let torso = bx(180.0, 200.0, 120.0, 160.0);
        let mut ids = Vec::new();
        for f in 0..4 {
            let upd = t.update(
                f as f64 * 0.25,
                &[obs(0, 0.8, person), obs(0, 0.38, arm), obs(0, 0.25, torso)],
            );
            ids.push(upd.ids[0]);
        }
        assert!(ids[1..].iter().all(Option::is_some), "{ids:?}");
        assert!(ids[1..].windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    }

    #[test]
    fn an_object_hidden_behind_another_for_four_seconds_keeps_its_id() {
        let cfg = TrackerConfig::default();
        let mut t = Tracker::new(cfg);
        let post = obs(0, 0.8, bx(300.0, 200.0, 120.0, 200.0));
        let cat = |x: f32| obs(15, 0.5, bx(x, 230.0, 90.0, 60.0));
        let mut id = None;
        let mut x = 100.0;
        let mut n = 0;
        // The cat walks right at 50 px/s, 10 px a frame, to the post...
        while x < 240.0 {
            id = t.update(n as f64 * 0.2, &[post, cat(x)]).ids[1];
            x += 10.0;
            n += 1;
        }
        assert!(id.is_some());
        // ...is behind it for 4 s (twice max_lost_s)...
        let hidden_until = n + 20;
        while n < hidden_until {
            let upd = t.update(n as f64 * 0.2, &[post]);
            assert!(upd.ended.is_empty(), "frame {n}: {upd:?}");
            x += 10.0;
            n += 1;
        }
        // ...and comes out on the other side, slower than it went in, clear of the post.
        assert!(x > 400.0);
        let upd = t.update(n as f64 * 0.2, &[post, cat(420.0)]);
        assert_eq!(upd.ids[1], id, "the same cat");
        // Lost in the open for as long, it ends, and a cat there later is a new one.
        let gone = n as f64 * 0.2;
        let mut ended_at = None;
        for k in 1..=20 {
            let upd = t.update(gone + k as f64 * 0.2, &[post]);
            if upd.ended.iter().any(|e| Some(e.id) == id) {
                ended_at = Some(k);
            }
        }
        // max_lost_s = 3 s: the 15th or 16th frame, as 15 * 0.2 rounds.
        assert!(
            ended_at.is_some_and(|k| (15..=16).contains(&k)),
            "ends just after max_lost_s in the open: {ended_at:?}"
        );
        let again = confirm(&mut t, gone + 4.4, 2, cat(420.0));
        assert!(again.is_some() && again != id, "{again:?} vs {id:?}");
    }

    #[test]
    fn a_lost_object_is_reacquired_by_distance_when_its_prediction_misses() {
        let mut t = Tracker::new(TrackerConfig::default());
        let cat = 15;
        // Walking right at 50 px/s...
        let mut id = None;
        for f in 0..10 {
            let x = 100.0 + f as f32 * 10.0;
            id = t
                .update(f as f64 * 0.2, &[obs(cat, 0.5, bx(x, 100.0, 40.0, 80.0))])
                .ids[0];
        }
        assert!(id.is_some());
        // ...unseen for 1.4 s, in which it turned round: it is back left of where it was last
        // seen, overlapping neither that box nor the prediction.
        let back = bx(140.0, 100.0, 40.0, 80.0);
        let last = t.get(id.unwrap_or(0)).map(|tr| tr.bbox);
        assert!(last.is_some_and(|l| l.iou(&back) == 0.0), "{last:?}");
        let upd = t.update(3.2, &[obs(cat, 0.5, back)]);
        assert_eq!(upd.ids[0], id, "re-acquired");
        // A person box on the spot of a lost cat is not the cat.
        let mut t = Tracker::new(TrackerConfig::default());
        let id = confirm(&mut t, 0.0, 3, obs(cat, 0.5, bx(100.0, 100.0, 60.0, 60.0)));
        let upd = t.update(1.4, &[obs(0, 0.5, bx(160.0, 100.0, 60.0, 60.0))]);
        assert_eq!(upd.ids, vec![None], "a new, tentative track");
        assert!(t.get(id.unwrap_or(0)).is_some_and(|tr| tr.last_seen == 0.4));
        // Nor is a box of another size.
        let upd = t.update(1.6, &[obs(cat, 0.5, bx(160.0, 100.0, 200.0, 160.0))]);
        assert_ne!(upd.ids[0], id);
    }

    #[test]
    fn config_ranges_are_checked() {
        assert!(TrackerConfig::default().validate().is_empty());
        let bad = TrackerConfig {
            high_score: 0.3,
            low_score: 0.4,
            min_hits: 0,
            max_lost_s: f64::NAN,
            match_iou: 1.5,
            ..TrackerConfig::default()
        };
        let p = bad.validate().join("\n");
        for want in [
            "low_score = 0.4 is above",
            "min_hits = 0",
            "max_lost_s = NaN",
            "match_iou = 1.5",
        ] {
            assert!(p.contains(want), "missing {want:?} in {p}");
        }
    }
}
