//! Per-camera zones and object masks, as in Frigate: polygons drawn on the camera's view.
//!
//! A zone says where an object is (`driveway`, `porch`) and keeps per-label occupancy counts;
//! a mask hides detections where nothing of interest can be (a parked car, a tree that moves in
//! the wind). Both are in normalised coordinates (0..1 of the frame's width and height), so a
//! camera's config survives a change of resolution or substream.
//!
//! An object's position is the bottom centre of its box, where it stands: a person walking
//! past the porch has a box that overlaps it, but feet on the pavement.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// Zone names a camera's own MQTT topics already use as a level (or that look like one):
/// zone occupancy is published under the camera (`<base>/<camera>/<zone>/<label>`), so a zone
/// named `state` would overwrite the camera's retained state.
pub const RESERVED_NAMES: &[&str] = &[
    "all",
    "availability",
    "available",
    "cmd",
    "detections",
    "embedding",
    "events",
    "label",
    "objects",
    "reply",
    "samples",
    "set",
    "snapshot",
    "state",
    "stats",
    "status",
    "training",
];

/// Most frames of inertia: at 5 fps, 100 is 20 s, already far beyond "debounce a jittery box".
pub const MAX_INERTIA: u32 = 100;

/// Least area (normalised, so a share of the frame) of a polygon. About 2 square pixels at
/// 1080p: a sliver smaller than that holds no object's anchor, so it is a mistake.
const MIN_AREA: f64 = 1e-6;

fn default_inertia() -> u32 {
    3
}

/// One `[[cameras.zones]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: String,
    /// Vertices [x, y], normalised 0..1, at least 3, in order (either winding), not
    /// self-intersecting.
    pub points: Vec<[f32; 2]>,
    /// Labels (detector class names) this zone counts; empty = every label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
    /// Consecutive frames an object's anchor must be inside before it is in the zone (Frigate's
    /// inertia, default 3): one jittery box on the border does not flap occupancy.
    #[serde(default = "default_inertia")]
    pub inertia: u32,
}

/// What a camera's config says about its scene: which detector classes become tracked
/// objects, its zones and masks (checked by [`validate`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SceneConfig {
    /// Tracked classes; `None`: the default (`[detect].objects`, else every class).
    pub objects: Option<Vec<String>>,
    pub zones: Vec<ZoneConfig>,
    pub masks: Vec<Vec<[f32; 2]>>,
    pub required_zones: Vec<String>,
}

/// What is wrong with a zone, a mask or `required_zones`; each message says what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ZoneError {
    #[error("{count} point(s); a polygon needs at least 3 corners")]
    TooFewPoints { count: usize },
    #[error(
        "point {index} = [{x}, {y}] is outside the frame; coordinates are shares of the \
         frame's width and height, 0.0 to 1.0"
    )]
    OutOfRange { index: usize, x: f32, y: f32 },
    #[error(
        "point {index} repeats point 0: the polygon closes by itself, leave the last point out"
    )]
    ClosingPoint { index: usize },
    #[error("point {index} repeats point {earlier}; remove one of them")]
    RepeatedPoint { index: usize, earlier: usize },
    #[error(
        "the points enclose no area (they lie on one line); give at least 3 corners that are \
         not in a line"
    )]
    NoArea,
    #[error(
        "edge {first} (point {first} to {first_end}) and edge {second} (point {second} to \
         {second_end}) cross or touch; list the corners in order around the outline"
    )]
    SelfIntersecting {
        first: usize,
        first_end: usize,
        second: usize,
        second_end: usize,
    },
    #[error("the name is empty; give the zone a name (it is used in MQTT topics and events)")]
    EmptyName,
    #[error(
        "the name must be lowercase letters, digits, `_` or `-` (it is an MQTT topic level); \
         for example \"{suggestion}\""
    )]
    InvalidName { suggestion: String },
    #[error(
        "the name is reserved: the camera's MQTT topics already use `{name}` as a level, so \
         the zone's occupancy would collide with them; choose another name"
    )]
    ReservedName { name: String },
    #[error("the name is used by an earlier zone of this camera; zone names must be unique")]
    DuplicateName,
    #[error(
        "inertia = {inertia} is out of range; allowed: 1 to {MAX_INERTIA} (frames an object \
         must be inside before it counts)"
    )]
    Inertia { inertia: u32 },
    #[error("objects: {label:?} is not a label of the detector; known labels: {known}")]
    UnknownLabel { label: String, known: String },
    #[error("required_zones: {zone:?} is not a zone of this camera; defined zones: {defined}")]
    UnknownRequiredZone { zone: String, defined: String },
    /// Any of the above, for one zone or mask (`zone "porch"`, `mask 2`).
    #[error("{what}: {problem}")]
    In {
        what: String,
        problem: Box<ZoneError>,
    },
}

impl ZoneError {
    fn within(self, what: &str) -> ZoneError {
        ZoneError::In {
            what: what.to_owned(),
            problem: Box::new(self),
        }
    }
}

/// Every problem with a camera's zones, masks and required_zones, as messages naming
/// the camera, the zone (or mask index), the problem and what to do (e.g.
/// "camera \"porch\": zone \"drive way\": the name must be lowercase letters, digits, `_` or `-` (it is an MQTT topic level)").
pub fn validate(
    camera: &str,
    zones: &[ZoneConfig],
    masks: &[Vec<[f32; 2]>],
    required_zones: &[String],
    known_labels: Option<&[String]>,
) -> Vec<String> {
    let mut problems = zone_problems(zones);
    if let Some(known) = known_labels {
        for (i, z) in zones.iter().enumerate() {
            for label in z.objects.iter().filter(|l| !known.contains(l)) {
                problems.push(
                    ZoneError::UnknownLabel {
                        label: label.clone(),
                        known: list(known.iter().map(String::as_str)),
                    }
                    .within(&zone_title(i, &z.name)),
                );
            }
        }
    }
    for (i, m) in masks.iter().enumerate() {
        problems.extend(
            polygon_problems(m)
                .into_iter()
                .map(|e| e.within(&format!("mask {i}"))),
        );
    }
    for zone in required_zones {
        if !zones.iter().any(|z| &z.name == zone) {
            problems.push(ZoneError::UnknownRequiredZone {
                zone: zone.clone(),
                defined: list(zones.iter().map(|z| z.name.as_str())),
            });
        }
    }
    problems
        .into_iter()
        .map(|e| format!("camera {camera:?}: {e}"))
        .collect()
}

/// Names, rules and geometry of each zone (not the labels: the detector's are not known here).
fn zone_problems(zones: &[ZoneConfig]) -> Vec<ZoneError> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for (i, z) in zones.iter().enumerate() {
        let title = zone_title(i, &z.name);
        let mut own = name_problems(&z.name);
        if !z.name.is_empty() && !seen.insert(z.name.as_str()) {
            own.push(ZoneError::DuplicateName);
        }
        if !(1..=MAX_INERTIA).contains(&z.inertia) {
            own.push(ZoneError::Inertia { inertia: z.inertia });
        }
        own.extend(polygon_problems(&z.points));
        problems.extend(own.into_iter().map(|e| e.within(&title)));
    }
    problems
}

/// `zone "porch"`, or `zone 2` for one without a name.
fn zone_title(index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("zone {index}")
    } else {
        format!("zone {name:?}")
    }
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = items.collect();
    if all.is_empty() {
        "(none)".to_owned()
    } else {
        all.join(", ")
    }
}

fn name_problems(name: &str) -> Vec<ZoneError> {
    if name.is_empty() {
        return vec![ZoneError::EmptyName];
    }
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if !name.chars().all(valid) {
        let suggestion: String = name
            .to_lowercase()
            .chars()
            .map(|c| if valid(c) { c } else { '_' })
            .collect();
        return vec![ZoneError::InvalidName { suggestion }];
    }
    if RESERVED_NAMES.contains(&name) {
        return vec![ZoneError::ReservedName {
            name: name.to_owned(),
        }];
    }
    Vec::new()
}

/// Every coordinate problem, or else the first shape problem: once a point is NaN or off the
/// frame, the shape is not worth judging.
fn polygon_problems(points: &[[f32; 2]]) -> Vec<ZoneError> {
    if points.len() < 3 {
        return vec![ZoneError::TooFewPoints {
            count: points.len(),
        }];
    }
    let off: Vec<ZoneError> = points
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.iter().all(|v| (0.0..=1.0).contains(v)))
        .map(|(index, p)| ZoneError::OutOfRange {
            index,
            x: p[0],
            y: p[1],
        })
        .collect();
    if !off.is_empty() {
        return off;
    }
    shape_problem(points).into_iter().collect()
}

/// Repeated corners, no area, or two edges that meet anywhere but at their shared corner.
fn shape_problem(points: &[[f32; 2]]) -> Option<ZoneError> {
    let n = points.len();
    for index in 1..n {
        if let Some(earlier) = (0..index).find(|&j| points[j] == points[index]) {
            return Some(if earlier == 0 && index == n - 1 {
                ZoneError::ClosingPoint { index }
            } else {
                ZoneError::RepeatedPoint { index, earlier }
            });
        }
    }
    let p: Vec<[f64; 2]> = points
        .iter()
        .map(|&[x, y]| [f64::from(x), f64::from(y)])
        .collect();
    // Before the edge tests: points on one line fold back over themselves, and "edges cross"
    // would be a puzzling way to say so.
    if on_one_line(&p) {
        return Some(ZoneError::NoArea);
    }
    let crossing = |first: usize, second: usize| ZoneError::SelfIntersecting {
        first,
        first_end: (first + 1) % n,
        second,
        second_end: (second + 1) % n,
    };
    for i in 0..n {
        let (a, b) = (p[i], p[(i + 1) % n]);
        // Adjacent edges share a corner; they are wrong only if the next one folds straight
        // back over this one (a spike with no width).
        let c = p[(i + 2) % n];
        if orient(a, b, c) == 0.0 && dot(sub(a, b), sub(c, b)) > 0.0 {
            return Some(crossing(i, (i + 1) % n));
        }
        for j in i + 2..n {
            if i == 0 && j == n - 1 {
                continue; // the closing edge is adjacent to the first
            }
            if segments_meet(a, b, p[j], p[(j + 1) % n]) {
                return Some(crossing(i, j));
            }
        }
    }
    // A simple polygon can still be a sliver too thin to hold anything. (Checked last: a
    // bow-tie's two halves cancel, and it has a better message.)
    let twice_area: f64 = (0..n)
        .map(|i| {
            let (a, b) = (p[i], p[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum();
    (twice_area.abs() / 2.0 < MIN_AREA).then_some(ZoneError::NoArea)
}

/// Every point within a hair (1e-5 of the frame, a hundredth of a pixel at 1080p) of the line
/// through the first point and the one farthest from it. Distinct points assumed.
fn on_one_line(p: &[[f64; 2]]) -> bool {
    let far = p
        .iter()
        .map(|&q| dot(sub(q, p[0]), sub(q, p[0])))
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some((k, len2)) = far else {
        return true;
    };
    let len = len2.sqrt();
    len == 0.0
        || p.iter()
            .all(|&q| (orient(p[0], p[k], q) / len).abs() < 1e-5)
}

fn sub(a: [f64; 2], b: [f64; 2]) -> [f64; 2] {
    [a[0] - b[0], a[1] - b[1]]
}

fn dot(a: [f64; 2], b: [f64; 2]) -> f64 {
    a[0] * b[0] + a[1] * b[1]
}

/// Twice the signed area of triangle abc: > 0 counter-clockwise, 0 on one line. In f64 from
/// f32 inputs the products are exact enough that 0 means collinear, without an epsilon.
fn orient(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
    let (u, v) = (sub(b, a), sub(c, a));
    u[0] * v[1] - u[1] * v[0]
}

/// Whether `p`, known to be on the line through a and b, is within the segment's box.
fn within_box(a: [f64; 2], b: [f64; 2], p: [f64; 2]) -> bool {
    (a[0].min(b[0])..=a[0].max(b[0])).contains(&p[0])
        && (a[1].min(b[1])..=a[1].max(b[1])).contains(&p[1])
}

/// Segments ab and cd share a point: they cross properly, one ends on the other, or they
/// overlap on one line (the orientation test of CLRS, 33.1).
fn segments_meet(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
    let (d1, d2) = (orient(c, d, a), orient(c, d, b));
    let (d3, d4) = (orient(a, b, c), orient(a, b, d));
    let opposite = |s: f64, t: f64| (s > 0.0 && t < 0.0) || (s < 0.0 && t > 0.0);
    (opposite(d1, d2) && opposite(d3, d4))
        || (d1 == 0.0 && within_box(c, d, a))
        || (d2 == 0.0 && within_box(c, d, b))
        || (d3 == 0.0 && within_box(a, b, c))
        || (d4 == 0.0 && within_box(a, b, d))
}

/// A validated polygon (normalised).
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    points: Vec<[f64; 2]>,
}

impl Polygon {
    /// The same checks as [`validate`]; the error is the first problem.
    pub fn new(points: &[[f32; 2]]) -> Result<Polygon, ZoneError> {
        match polygon_problems(points).into_iter().next() {
            Some(e) => Err(e),
            None => Ok(Polygon {
                points: points
                    .iter()
                    .map(|&[x, y]| [f64::from(x), f64::from(y)])
                    .collect(),
            }),
        }
    }

    /// Even-odd ray casting; points on the border count as inside (a zone drawn to the
    /// frame's bottom edge must hold the feet on that edge). Non-finite points are outside.
    pub fn contains(&self, p: [f32; 2]) -> bool {
        let p = [f64::from(p[0]), f64::from(p[1])];
        if !(p[0].is_finite() && p[1].is_finite()) {
            return false;
        }
        let n = self.points.len();
        let mut inside = false;
        for i in 0..n {
            let (a, b) = (self.points[i], self.points[(i + 1) % n]);
            if orient(a, b, p) == 0.0 && within_box(a, b, p) {
                return true;
            }
            // The edge straddles the horizontal line through p (half-open, so a vertex on
            // that line is counted once) and crosses it to the right of p.
            if (a[1] > p[1]) != (b[1] > p[1]) {
                let x = a[0] + (p[1] - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
                if x > p[0] {
                    inside = !inside;
                }
            }
        }
        inside
    }
}

/// Bottom centre of a pixel box, normalised by the frame size (None for non-finite boxes or zero
/// frame sizes).
///
/// Clamped to the frame: a detector's box overshoots the edge by a few pixels, and a zone
/// drawn to the edge should still hold an object standing there.
pub fn anchor(bbox: [f32; 4], width: u32, height: u32) -> Option<[f32; 2]> {
    if width == 0 || height == 0 || !bbox.iter().all(|v| v.is_finite()) {
        return None;
    }
    let [x1, y1, x2, y2] = bbox.map(f64::from);
    let x = (x1 + x2) / 2.0 / f64::from(width);
    let y = y1.max(y2) / f64::from(height);
    Some([x.clamp(0.0, 1.0) as f32, y.clamp(0.0, 1.0) as f32])
}

/// Object masks: a detection whose anchor is inside any mask is ignored (a parked car, a tree
/// that moves in the wind).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Masks {
    polygons: Vec<Polygon>,
}

impl Masks {
    /// The first problem is named `mask N` (its index in the config).
    pub fn new(masks: &[Vec<[f32; 2]>]) -> Result<Masks, ZoneError> {
        let polygons = masks
            .iter()
            .enumerate()
            .map(|(i, m)| Polygon::new(m).map_err(|e| e.within(&format!("mask {i}"))))
            .collect::<Result<_, _>>()?;
        Ok(Masks { polygons })
    }

    /// The box's bottom centre is inside a mask. A box that only reaches into a mask (a person
    /// walking in front of the parked car) is not hidden; a box with no anchor is not either
    /// (it is the tracker's to judge, not the mask's).
    pub fn hides(&self, bbox: [f32; 4], width: u32, height: u32) -> bool {
        anchor(bbox, width, height).is_some_and(|a| self.polygons.iter().any(|m| m.contains(a)))
    }

    pub fn is_empty(&self) -> bool {
        self.polygons.is_empty()
    }
}

/// One object of a frame, as the zones see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneInput<'a> {
    /// The object's id, stable across frames.
    pub key: u64,
    /// Its label now (the tracker's vote may change it).
    pub label: &'a str,
    /// Pixel box `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Detected in this frame. An object the tracker still keeps but did not see (behind a
    /// post) has only a predicted box: it keeps its zones and inertia as they are, so a short
    /// occlusion neither drops it from a zone nor lets a guessed box walk it into one.
    pub visible: bool,
}

/// What one frame changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZoneUpdate {
    /// key -> current zones of that object (only objects passed in).
    pub current: Vec<(u64, Vec<String>)>,
    /// (zone, label, new count) for every count that changed, in config order then label,
    /// including drops to 0 when an object leaves or ends (an object not passed in any more is
    /// gone, and its state with it).
    pub changed: Vec<(String, String, u32)>,
}

#[derive(Debug, Clone)]
struct Zone {
    name: String,
    polygon: Polygon,
    objects: Vec<String>,
    inertia: u32,
}

impl Zone {
    fn counts(&self, label: &str) -> bool {
        self.objects.is_empty() || self.objects.iter().any(|l| l == label)
    }
}

#[derive(Debug, Clone)]
struct Presence {
    label: String,
    /// Per zone, consecutive frames inside (saturating at the zone's inertia).
    streak: Vec<u32>,
}

/// One camera's zones and who is in them.
#[derive(Debug, Clone, Default)]
pub struct Zones {
    zones: Vec<Zone>,
    objects: HashMap<u64, Presence>,
    /// (zone index, label) -> objects in it; ordered so `changed` comes in config order.
    counts: BTreeMap<(usize, String), u32>,
}

impl Zones {
    /// The first problem [`validate`] would report (labels aside), named by zone.
    pub fn new(zones: &[ZoneConfig]) -> Result<Zones, ZoneError> {
        if let Some(e) = zone_problems(zones).into_iter().next() {
            return Err(e);
        }
        let zones = zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                Ok(Zone {
                    name: z.name.clone(),
                    polygon: Polygon::new(&z.points)
                        .map_err(|e| e.within(&zone_title(i, &z.name)))?,
                    objects: z.objects.clone(),
                    inertia: z.inertia,
                })
            })
            .collect::<Result<_, ZoneError>>()?;
        Ok(Zones {
            zones,
            objects: HashMap::new(),
            counts: BTreeMap::new(),
        })
    }

    /// Zone names, in config order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.zones.iter().map(|z| z.name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// Whether `zone` counts objects labelled `label` (false for an unknown zone): the caller
    /// publishes 0 for every counted (zone, label) at start, so a retained count is never stale.
    pub fn counts_label(&self, zone: &str, label: &str) -> bool {
        self.zones.iter().any(|z| z.name == zone && z.counts(label))
    }

    /// Current count for (zone, label) (0 when nobody).
    pub fn count(&self, zone: &str, label: &str) -> u32 {
        self.zones
            .iter()
            .position(|z| z.name == zone)
            .and_then(|i| self.counts.get(&(i, label.to_owned())))
            .copied()
            .unwrap_or(0)
    }

    /// Called once per processed frame with every live object plus the frame size.
    /// Updates per-object inertia counters; returns for each object its current zones (names,
    /// in config order), and the occupancy counts that changed since the last call.
    ///
    /// An object enters a zone after `inertia` consecutive frames with its anchor inside (if
    /// the zone counts its label) and leaves at once when it is outside, as in Frigate: late
    /// in, early out. A visible object with a box that has no anchor is outside everything.
    /// A key given twice in one frame counts once (the first).
    pub fn update(&mut self, objects: &[ZoneInput<'_>], width: u32, height: u32) -> ZoneUpdate {
        let mut seen = HashSet::with_capacity(objects.len());
        let mut current = Vec::with_capacity(objects.len());
        for o in objects {
            if !seen.insert(o.key) {
                continue;
            }
            let state = self.objects.entry(o.key).or_insert_with(|| Presence {
                label: o.label.to_owned(),
                streak: vec![0; self.zones.len()],
            });
            if state.label != o.label {
                state.label = o.label.to_owned();
            }
            if o.visible {
                let at = anchor(o.bbox, width, height);
                for (z, streak) in self.zones.iter().zip(state.streak.iter_mut()) {
                    let inside = z.counts(o.label) && at.is_some_and(|a| z.polygon.contains(a));
                    *streak = if inside {
                        (*streak + 1).min(z.inertia)
                    } else {
                        0
                    };
                }
            }
            let names = self
                .zones
                .iter()
                .zip(&state.streak)
                .filter(|(z, &s)| z.counts(&state.label) && s >= z.inertia)
                .map(|(z, _)| z.name.clone())
                .collect();
            current.push((o.key, names));
        }
        // Objects not passed in have ended.
        self.objects.retain(|key, _| seen.contains(key));

        // Recounted from scratch: a label that changed moves the object between counts, and
        // nothing can drift.
        let mut counts: BTreeMap<(usize, String), u32> = BTreeMap::new();
        for state in self.objects.values() {
            for (i, (z, &s)) in self.zones.iter().zip(&state.streak).enumerate() {
                if z.counts(&state.label) && s >= z.inertia {
                    *counts.entry((i, state.label.clone())).or_insert(0) += 1;
                }
            }
        }
        let mut changed = Vec::new();
        for (key, &old) in &self.counts {
            let new = counts.get(key).copied().unwrap_or(0);
            if new != old {
                changed.push((key.clone(), new));
            }
        }
        for (key, &new) in &counts {
            if !self.counts.contains_key(key) {
                changed.push((key.clone(), new));
            }
        }
        changed.sort();
        self.counts = counts;
        ZoneUpdate {
            current,
            changed: changed
                .into_iter()
                .map(|((i, label), n)| (self.zones[i].name.clone(), label, n))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARE: [[f32; 2]; 4] = [[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8]];

    fn zone(name: &str, points: &[[f32; 2]]) -> ZoneConfig {
        ZoneConfig {
            name: name.to_owned(),
            points: points.to_vec(),
            objects: Vec::new(),
            inertia: 3,
        }
    }

    /// A pixel box on a 1000x1000 frame whose bottom centre is at normalised (x, y).
    fn standing_at(x: f32, y: f32) -> [f32; 4] {
        [
            x * 1000.0 - 20.0,
            y * 1000.0 - 100.0,
            x * 1000.0 + 20.0,
            y * 1000.0,
        ]
    }

    fn input(key: u64, label: &str, x: f32, y: f32) -> ZoneInput<'_> {
        ZoneInput {
            key,
            label,
            bbox: standing_at(x, y),
            visible: true,
        }
    }

    fn joined(problems: &[String]) -> String {
        problems.join("\n")
    }

    #[test]
    fn a_square_contains_its_inside_and_not_its_outside() {
        let sq = Polygon::new(&SQUARE).expect("valid");
        assert!(sq.contains([0.5, 0.5]));
        assert!(!sq.contains([0.1, 0.5]));
        assert!(!sq.contains([0.5, 0.9]));
        assert!(!sq.contains([f32::NAN, 0.5]));
    }

    #[test]
    fn an_l_shape_does_not_contain_its_missing_corner() {
        // Clockwise, to show winding does not matter.
        let l = Polygon::new(&[
            [0.0, 0.0],
            [0.0, 1.0],
            [1.0, 1.0],
            [1.0, 0.5],
            [0.5, 0.5],
            [0.5, 0.0],
        ])
        .expect("valid");
        assert!(l.contains([0.25, 0.25]));
        assert!(l.contains([0.75, 0.75]));
        assert!(!l.contains([0.75, 0.25]), "the notch");
        // On the horizontal line through the inner corner: counted once, not twice.
        assert!(l.contains([0.25, 0.5]));
        assert!(!l.contains([1.25, 0.5]));
    }

    #[test]
    fn points_on_the_border_count_as_inside() {
        let sq = Polygon::new(&SQUARE).expect("valid");
        for p in [[0.2, 0.5], [0.5, 0.8], [0.8, 0.8], [0.2, 0.2], [0.8, 0.35]] {
            assert!(sq.contains(p), "{p:?}");
        }
        let frame = Polygon::new(&[[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]).expect("ok");
        assert!(
            frame.contains([0.5, 1.0]),
            "feet on the frame's bottom edge"
        );
    }

    #[test]
    fn a_bow_tie_is_rejected_naming_the_crossing_edges() {
        let e = Polygon::new(&[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]).unwrap_err();
        assert_eq!(
            e,
            ZoneError::SelfIntersecting {
                first: 0,
                first_end: 1,
                second: 2,
                second_end: 3
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("edge 0 (point 0 to 1) and edge 2 (point 2 to 3)"),
            "{msg}"
        );
    }

    #[test]
    fn overlapping_collinear_edges_and_spikes_are_rejected() {
        let (a, b) = ([0.0, 0.0], [0.6, 0.0]);
        assert!(
            segments_meet(a, b, [0.4, 0.0], [0.9, 0.0]),
            "overlap on one line"
        );
        assert!(
            segments_meet(a, b, [0.2, 0.0], [0.4, 0.0]),
            "one inside the other"
        );
        assert!(
            !segments_meet(a, b, [0.7, 0.0], [0.9, 0.0]),
            "same line, apart"
        );
        assert!(!segments_meet(a, b, [0.3, 0.1], [0.9, 0.1]), "parallel");
        assert!(
            segments_meet(a, b, [0.3, 0.0], [0.3, 0.5]),
            "one ends on the other"
        );
        // Point 3 sits on edge 0: the outline touches itself.
        let touch = [[0.0, 0.0], [0.6, 0.0], [0.6, 0.5], [0.3, 0.0], [0.0, 0.5]];
        assert!(matches!(
            Polygon::new(&touch),
            Err(ZoneError::SelfIntersecting {
                first: 0,
                second: 2,
                ..
            })
        ));
        // Point 2 goes straight back along edge 0-1.
        let spike = [[0.0, 0.0], [1.0, 0.0], [0.5, 0.0], [0.5, 1.0]];
        assert!(matches!(
            Polygon::new(&spike),
            Err(ZoneError::SelfIntersecting {
                first: 0,
                second: 1,
                ..
            })
        ));
    }

    #[test]
    fn collinear_and_repeated_point_polygons_are_rejected() {
        let line = Polygon::new(&[[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]);
        assert_eq!(line, Err(ZoneError::NoArea));
        // Not exactly on one line in f32, and folding back: still "no area", not "edges cross".
        let rounded = Polygon::new(&[[0.1, 0.3], [0.3, 0.9], [0.2, 0.6], [0.15, 0.45]]);
        assert_eq!(rounded, Err(ZoneError::NoArea));
        let repeated = Polygon::new(&[[0.1, 0.1], [0.5, 0.1], [0.5, 0.1], [0.5, 0.5]]);
        assert_eq!(
            repeated,
            Err(ZoneError::RepeatedPoint {
                index: 2,
                earlier: 1
            })
        );
        let closed = Polygon::new(&[[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.1, 0.1]]);
        assert_eq!(closed, Err(ZoneError::ClosingPoint { index: 3 }));
        assert_eq!(
            Polygon::new(&[[0.1, 0.1], [0.5, 0.1]]),
            Err(ZoneError::TooFewPoints { count: 2 })
        );
    }

    #[test]
    fn out_of_range_and_nan_coordinates_are_rejected_naming_the_point() {
        let p = validate(
            "porch",
            &[zone("yard", &[[0.0, 0.0], [1.5, 0.0], [1.0, f32::NAN]])],
            &[],
            &[],
            None,
        );
        let all = joined(&p);
        assert_eq!(p.len(), 2, "{all}");
        assert!(all.contains("zone \"yard\": point 1 = [1.5, 0]"), "{all}");
        assert!(all.contains("point 2 = [1, NaN]"), "{all}");
        assert!(all.contains("0.0 to 1.0"), "{all}");
    }

    #[test]
    fn invalid_reserved_and_duplicate_names_are_rejected() {
        let p = validate(
            "porch",
            &[
                zone("drive way", &SQUARE),
                zone("state", &SQUARE),
                zone("yard", &SQUARE),
                zone("yard", &SQUARE),
                zone("", &SQUARE),
            ],
            &[],
            &[],
            None,
        );
        let all = joined(&p);
        assert_eq!(p.len(), 4, "{all}");
        assert!(all.contains(
            "camera \"porch\": zone \"drive way\": the name must be lowercase letters, digits, \
             `_` or `-` (it is an MQTT topic level); for example \"drive_way\""
        ));
        assert!(
            all.contains("zone \"state\": the name is reserved"),
            "{all}"
        );
        assert!(all.contains("already use `state` as a level"), "{all}");
        assert!(
            all.contains("zone \"yard\": the name is used by an earlier zone"),
            "{all}"
        );
        assert!(all.contains("zone 4: the name is empty"), "{all}");
    }

    #[test]
    fn a_required_zone_that_does_not_exist_lists_the_defined_ones() {
        let zones = [zone("yard", &SQUARE), zone("porch", &SQUARE)];
        let p = validate(
            "cam",
            &zones,
            &[],
            &["yard".to_owned(), "gate".to_owned()],
            None,
        );
        assert_eq!(
            p,
            vec![
                "camera \"cam\": required_zones: \"gate\" is not a zone of this camera; defined \
                 zones: yard, porch"
            ]
        );
    }

    #[test]
    fn a_zone_object_label_unknown_to_the_detector_is_rejected() {
        let mut z = zone("yard", &SQUARE);
        z.objects = vec!["person".to_owned(), "persn".to_owned()];
        let known = ["person".to_owned(), "car".to_owned()];
        let p = validate("cam", &[z.clone()], &[], &[], Some(&known));
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("zone \"yard\": objects: \"persn\" is not a label"));
        assert!(p[0].contains("known labels: person, car"));
        assert!(
            validate("cam", &[z], &[], &[], None).is_empty(),
            "labels unknown: not checked"
        );
    }

    #[test]
    fn validate_reports_every_problem_at_once() {
        let mut bad = zone("Yard", &[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]);
        bad.inertia = 0;
        let p = validate(
            "porch",
            &[bad, zone("ok", &SQUARE)],
            &[SQUARE.to_vec(), vec![[0.1, 0.1], [0.2, 0.2]]],
            &["gate".to_owned()],
            None,
        );
        let all = joined(&p);
        assert_eq!(p.len(), 5, "{all}");
        for want in [
            "zone \"Yard\": the name must be lowercase",
            "zone \"Yard\": inertia = 0 is out of range; allowed: 1 to 100",
            "zone \"Yard\": edge 0 (point 0 to 1) and edge 2 (point 2 to 3) cross",
            "mask 1: 2 point(s); a polygon needs at least 3",
            "required_zones: \"gate\"",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        assert!(p.iter().all(|m| m.starts_with("camera \"porch\": ")));
        assert!(validate("porch", &[zone("ok", &SQUARE)], &[], &["ok".into()], None).is_empty());
    }

    #[test]
    fn the_anchor_is_the_bottom_centre_normalised_and_clamped() {
        assert_eq!(
            anchor([100.0, 50.0, 300.0, 450.0], 400, 500),
            Some([0.5, 0.9])
        );
        assert_eq!(
            anchor([380.0, 400.0, 420.0, 505.0], 400, 500),
            Some([1.0, 1.0])
        );
        assert_eq!(anchor([0.0, 0.0, f32::INFINITY, 1.0], 400, 500), None);
        assert_eq!(anchor([0.0, 0.0, 1.0, 1.0], 0, 500), None);
    }

    #[test]
    fn a_mask_hides_a_box_standing_in_it_but_not_one_reaching_into_it() {
        let masks = Masks::new(&[SQUARE.to_vec()]).expect("valid");
        assert!(!masks.is_empty());
        assert!(masks.hides(standing_at(0.5, 0.7), 1000, 1000));
        // Top inside the mask, feet below it.
        assert!(!masks.hides([480.0, 500.0, 520.0, 900.0], 1000, 1000));
        assert!(Masks::new(&[]).expect("none").is_empty());
        let e = Masks::new(&[SQUARE.to_vec(), vec![[0.0, 0.0]]]).unwrap_err();
        assert!(e.to_string().starts_with("mask 1: 1 point(s)"), "{e}");
    }

    #[test]
    fn an_object_enters_after_inertia_frames_and_leaves_at_once() {
        let mut zones = Zones::new(&[zone("yard", &SQUARE)]).expect("valid");
        let inside = [input(7, "person", 0.5, 0.5)];
        for frame in 0..2 {
            let u = zones.update(&inside, 1000, 1000);
            assert_eq!(u.current, vec![(7, vec![])], "frame {frame}: not yet");
            assert!(u.changed.is_empty());
        }
        let u = zones.update(&inside, 1000, 1000);
        assert_eq!(u.current, vec![(7, vec!["yard".to_owned()])]);
        assert_eq!(u.changed, vec![("yard".into(), "person".into(), 1)]);
        assert_eq!(zones.count("yard", "person"), 1);
        // Staying in changes nothing: the 0->1 is reported once.
        assert!(zones.update(&inside, 1000, 1000).changed.is_empty());
        // One frame outside and it is out.
        let u = zones.update(&[input(7, "person", 0.9, 0.5)], 1000, 1000);
        assert_eq!(u.current, vec![(7, vec![])]);
        assert_eq!(u.changed, vec![("yard".into(), "person".into(), 0)]);
        assert_eq!(zones.count("yard", "person"), 0);
    }

    #[test]
    fn an_object_that_ends_drops_the_count_to_zero() {
        let mut zones = Zones::new(&[zone("yard", &SQUARE)]).expect("valid");
        for _ in 0..3 {
            zones.update(&[input(1, "car", 0.5, 0.5)], 1000, 1000);
        }
        assert_eq!(zones.count("yard", "car"), 1);
        let u = zones.update(&[], 1000, 1000);
        assert_eq!(u.changed, vec![("yard".into(), "car".into(), 0)]);
        // Its inertia is gone too: back, it starts from the beginning.
        let u = zones.update(&[input(1, "car", 0.5, 0.5)], 1000, 1000);
        assert_eq!(u.current, vec![(1, vec![])]);
    }

    #[test]
    fn an_unseen_object_keeps_its_zone_until_seen_outside() {
        let mut zones = Zones::new(&[zone("yard", &SQUARE)]).expect("valid");
        for _ in 0..3 {
            zones.update(&[input(1, "person", 0.5, 0.5)], 1000, 1000);
        }
        let mut hidden = input(1, "person", 0.95, 0.5);
        hidden.visible = false;
        let u = zones.update(&[hidden], 1000, 1000);
        assert_eq!(u.current, vec![(1, vec!["yard".to_owned()])]);
        assert!(u.changed.is_empty());
    }

    #[test]
    fn a_person_only_zone_ignores_a_car() {
        let mut z = zone("porch", &SQUARE);
        z.objects = vec!["person".to_owned()];
        let mut zones = Zones::new(&[z]).expect("valid");
        assert!(zones.counts_label("porch", "person"));
        assert!(!zones.counts_label("porch", "car"));
        assert!(!zones.counts_label("garden", "person"));
        for _ in 0..5 {
            let u = zones.update(&[input(3, "car", 0.5, 0.5)], 1000, 1000);
            assert_eq!(u.current, vec![(3, vec![])]);
            assert!(u.changed.is_empty());
        }
        assert_eq!(zones.count("porch", "car"), 0);
    }

    #[test]
    fn two_objects_in_one_zone_count_two() {
        let mut zones = Zones::new(&[
            zone("yard", &SQUARE),
            zone("gate", &[[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]]),
        ])
        .expect("valid");
        assert_eq!(zones.names().collect::<Vec<_>>(), ["yard", "gate"]);
        let both = [input(1, "person", 0.4, 0.5), input(2, "person", 0.6, 0.5)];
        let mut changed = Vec::new();
        for _ in 0..3 {
            changed.extend(zones.update(&both, 1000, 1000).changed);
        }
        assert_eq!(changed, vec![("yard".into(), "person".into(), 2)]);
        assert_eq!(zones.count("yard", "person"), 2);
        assert_eq!(zones.count("gate", "person"), 0);
        let u = zones.update(&both[..1], 1000, 1000);
        assert_eq!(u.changed, vec![("yard".into(), "person".into(), 1)]);
    }

    #[test]
    fn zones_new_rejects_what_validate_rejects() {
        let e = Zones::new(&[zone("events", &SQUARE)]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("zone \"events\": the name is reserved"),
            "{e}"
        );
        let cfg: ZoneConfig =
            serde_json::from_str(r#"{"name": "yard", "points": [[0,0],[1,0],[1,1]]}"#)
                .expect("parses");
        assert_eq!((cfg.inertia, cfg.objects.len()), (3, 0), "defaults");
    }
}
