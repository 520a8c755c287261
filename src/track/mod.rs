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
//! 4. new tracks start from confident leftovers and are confirmed after `min_hits`
//!    consecutive frames (a one-frame false detection never becomes an object);
//! 5. a track not seen for `max_lost_s` seconds ends.
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
    /// Seconds a track survives unseen (an occlusion, a missed detection) before it ends.
    pub max_lost_s: f64,
    /// Speed, in box heights per second, under which an object counts as `stationary`.
    pub stationary_speed: f32,
    /// `[track.sublabel]`: when an object's crop is named.
    pub sublabel: sublabel::SubLabelConfig,
}

impl Default for TrackerConfig {
    /// ByteTrack's, with the score thresholds moved down to where a small detector's scores
    /// are (NanoDet-m: 0.35-0.6 on clear objects, `[detect].score_threshold` 0.35).
    fn default() -> Self {
        TrackerConfig {
            high_score: 0.35,
            low_score: 0.15,
            match_iou: 0.2,
            low_match_iou: 0.5,
            class_change: 0.75,
            duplicate_iou: 0.7,
            min_hits: 2,
            max_lost_s: 2.0,
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
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            cfg,
            tracks: Vec::new(),
            next_id: 1,
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
        let high: Vec<usize> = (0..obs.len())
            .filter(|&i| !duplicate[i] && obs[i].score >= cfg.high_score)
            .collect();
        let low: Vec<usize> = (0..obs.len())
            .filter(|&i| {
                !duplicate[i] && obs[i].score >= cfg.low_score && obs[i].score < cfg.high_score
            })
            .collect();
        // An object unseen for longer than max_lost_s has ended: it matches nothing, even
        // a detection on the same spot after a long gap (a stall, a paused camera).
        let confirmed: Vec<usize> = (0..self.tracks.len())
            .filter(|&k| self.tracks[k].confirmed && t - self.tracks[k].last_seen <= cfg.max_lost_s)
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
        // 3. Tentative tracks against the confident detections left.
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
        // Tentative tracks that missed a frame are dropped (they were not objects); objects
        // unseen for too long end.
        let mut ended = Vec::new();
        let mut kept = Vec::with_capacity(self.tracks.len());
        for (k, tr) in std::mem::take(&mut self.tracks).into_iter().enumerate() {
            let alive = track_hit[k] || (tr.confirmed && t - tr.last_seen <= cfg.max_lost_s);
            if alive {
                kept.push(tr);
            } else if tr.confirmed {
                ended.push(tr);
            }
        }
        self.tracks = kept;
        // 4. New tracks from confident leftovers; with min_hits = 1 they are objects at once.
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
            ids[i] = Some(tr.id);
            track_hit[k] = true;
            det_taken[i] = true;
        }
    }
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
        // Unseen: still alive at 2.0 s past its last match, ended after.
        assert!(t.update(2.5, &[]).ended.is_empty());
        let u = t.update(2.6, &[]);
        assert_eq!(u.ended.len(), 1);
        assert_eq!(u.ended[0].id, id);
        assert_eq!((u.ended[0].hits, u.ended[0].last_seen), (2, 0.5));
        // Ids are never reused.
        t.update(3.0, &[obs(0, 0.9, b)]);
        let u = t.update(3.2, &[obs(0, 0.9, b)]);
        assert!(u.ids[0].is_some_and(|new| new > id));
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
