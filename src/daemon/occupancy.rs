//! Where one camera's objects are: which detections become objects at all (the tracked
//! classes, outside the masks), which zones each object is in, whether it may be announced
//! (`required_zones`), and the occupancy counts per zone and label that go out retained on
//! `<camera>/<zone>/<label>` (zone `all`: the whole frame).
//!
//! Kept apart from [`super::objects`] (the objects' lives and messages) so that the geometry
//! and the counting have one owner: [`crate::track::zones`] does the polygons and the
//! inertia, this module decides what they are applied to.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use crate::mqtt::topics::ALL_ZONES;
use crate::track::zones::{Masks, SceneConfig, ZoneError, ZoneInput, Zones};

/// An occupancy count that changed (or its first value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// A zone's name, or [`ALL_ZONES`].
    pub zone: String,
    pub label: String,
    pub count: u32,
}

/// One object as the counting sees it.
#[derive(Debug, Clone, Copy)]
pub struct Present<'a> {
    pub key: u64,
    pub label: &'a str,
    pub bbox: [f32; 4],
    /// Seen in this frame (an object hidden for a moment keeps its zones).
    pub visible: bool,
}

/// One camera's scene.
#[derive(Debug, Clone)]
pub struct Scene {
    /// Class indices that become objects; `None`: every class.
    tracked: Option<Vec<usize>>,
    /// Their names, for the counts of the whole frame (empty when every class is tracked:
    /// then a label's count appears with its first object).
    tracked_names: Vec<String>,
    masks: Masks,
    zones: Zones,
    required: Vec<String>,
    all: BTreeMap<String, u32>,
    changes: Vec<Count>,
}

impl Default for Scene {
    /// Every class, no zone, no mask.
    fn default() -> Scene {
        Scene {
            tracked: None,
            tracked_names: Vec::new(),
            masks: Masks::default(),
            zones: Zones::default(),
            required: Vec::new(),
            all: BTreeMap::new(),
            changes: Vec::new(),
        }
    }
}

impl Scene {
    /// `tracked`: the classes (names of the detector's `classes`) that become objects,
    /// already checked against them; `None`: every class.
    pub fn new(
        classes: &[String],
        tracked: Option<&[String]>,
        cfg: &SceneConfig,
    ) -> Result<Scene, ZoneError> {
        let tracked_idx = tracked.map(|t| {
            t.iter()
                .filter_map(|name| classes.iter().position(|c| c == name))
                .collect::<Vec<_>>()
        });
        let mut scene = Scene {
            tracked: tracked_idx,
            tracked_names: tracked.map(<[String]>::to_vec).unwrap_or_default(),
            masks: Masks::new(&cfg.masks)?,
            zones: Zones::new(&cfg.zones)?,
            required: cfg.required_zones.clone(),
            all: BTreeMap::new(),
            changes: Vec::new(),
        };
        // A retained count from a previous run would otherwise stand until the label's next
        // object: every count this camera keeps starts at 0.
        for label in scene.tracked_names.clone() {
            scene.all.insert(label.clone(), 0);
            scene.changes.push(Count {
                zone: ALL_ZONES.to_owned(),
                label: label.clone(),
                count: 0,
            });
            for zone in scene.zones.names() {
                if scene.zones.counts_label(zone, &label) {
                    scene.changes.push(Count {
                        zone: zone.to_owned(),
                        label: label.clone(),
                        count: 0,
                    });
                }
            }
        }
        Ok(scene)
    }

    /// Whether a detection of `class` with box `bbox` (pixels of a `width` x `height` frame)
    /// may become or extend an object: a tracked class, its anchor outside every mask.
    pub fn keeps(&self, class: usize, bbox: [f32; 4], width: u32, height: u32) -> bool {
        self.tracked.as_ref().is_none_or(|t| t.contains(&class))
            && (self.masks.is_empty() || !self.masks.hides(bbox, width, height))
    }

    /// Whether an object that entered `entered` may be announced: it has been in one of the
    /// `required_zones` (always, without any).
    pub fn admits(&self, entered: &[String]) -> bool {
        self.required.is_empty() || entered.iter().any(|z| self.required.contains(z))
    }

    /// One frame's objects (false positives left out: they are nobody): each object's
    /// current zones, by key; the count changes are kept for [`Scene::take_changes`].
    pub fn update(
        &mut self,
        objects: &[Present<'_>],
        width: u32,
        height: u32,
    ) -> Vec<(u64, Vec<String>)> {
        let inputs: Vec<ZoneInput<'_>> = objects
            .iter()
            .map(|o| ZoneInput {
                key: o.key,
                label: o.label,
                bbox: o.bbox,
                visible: o.visible,
            })
            .collect();
        let update = self.zones.update(&inputs, width, height);
        let mut now: BTreeMap<String, u32> = self.all.keys().map(|l| (l.clone(), 0)).collect();
        for o in objects {
            *now.entry(o.label.to_owned()).or_insert(0) += 1;
        }
        for (label, n) in &now {
            if self.all.get(label) != Some(n) {
                self.changes.push(Count {
                    zone: ALL_ZONES.to_owned(),
                    label: label.clone(),
                    count: *n,
                });
            }
        }
        // Labels of an untracked-list camera stay at 0 once seen: their topic is retained.
        self.all = now;
        self.changes.extend(
            update
                .changed
                .into_iter()
                .map(|(zone, label, count)| Count { zone, label, count }),
        );
        update.current
    }

    /// The counts that changed since the last call (at first, every count at 0).
    pub fn take_changes(&mut self) -> Vec<Count> {
        std::mem::take(&mut self.changes)
    }
}

/// The counts a camera last published (or must still publish): kept to republish all of
/// them after a reconnect, and to retry one that could not be published (a full queue, the
/// link down) with the next frame, so the broker never keeps a stale retained count after a
/// burst. Shared by the camera's worker (writes) and the main loop (reads).
#[derive(Debug, Default)]
pub struct CountLedger {
    /// (zone, label) -> (objects there now, not yet published).
    counts: Mutex<BTreeMap<(String, String), (u32, bool)>>,
}

impl CountLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), (u32, bool)>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records counts that changed, as not yet published.
    pub fn record(&self, changed: &[Count]) {
        if changed.is_empty() {
            return;
        }
        let mut counts = self.lock();
        for c in changed {
            counts.insert((c.zone.clone(), c.label.clone()), (c.count, true));
        }
    }

    /// The counts not yet published, now marked published.
    pub fn take_unsent(&self) -> Vec<Count> {
        let mut counts = self.lock();
        counts
            .iter_mut()
            .filter(|(_, (_, unsent))| *unsent)
            .map(|((zone, label), (n, unsent))| {
                *unsent = false;
                Count {
                    zone: zone.clone(),
                    label: label.clone(),
                    count: *n,
                }
            })
            .collect()
    }

    /// `c` could not be published: retry it, unless a newer count replaced it meanwhile.
    pub fn unsent(&self, c: &Count) {
        let mut counts = self.lock();
        if let Some((n, unsent)) = counts.get_mut(&(c.zone.clone(), c.label.clone())) {
            if *n == c.count {
                *unsent = true;
            }
        }
    }

    /// Every count, published or not.
    pub fn all(&self) -> Vec<Count> {
        self.lock()
            .iter()
            .map(|((zone, label), (n, _))| Count {
                zone: zone.clone(),
                label: label.clone(),
                count: *n,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::zones::ZoneConfig;

    fn classes() -> Vec<String> {
        ["person", "bicycle", "car"].map(String::from).to_vec()
    }

    fn porch() -> SceneConfig {
        SceneConfig {
            objects: None,
            zones: vec![ZoneConfig {
                name: "porch".into(),
                points: vec![[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]],
                objects: vec!["person".into()],
                inertia: 1,
            }],
            // The top right quarter: a tree that moves.
            masks: vec![vec![[0.5, 0.0], [1.0, 0.0], [1.0, 0.5], [0.5, 0.5]]],
            required_zones: vec!["porch".into()],
        }
    }

    fn count(zone: &str, label: &str, count: u32) -> Count {
        Count {
            zone: zone.into(),
            label: label.into(),
            count,
        }
    }

    #[test]
    fn only_tracked_classes_outside_masks_are_kept() {
        let tracked = ["person".to_owned(), "car".to_owned()];
        let s = Scene::new(&classes(), Some(&tracked), &porch()).expect("scene");
        // Bottom centre (25, 80) of 100x100: outside the mask.
        assert!(s.keeps(0, [20.0, 60.0, 30.0, 80.0], 100, 100));
        assert!(!s.keeps(1, [20.0, 60.0, 30.0, 80.0], 100, 100), "bicycle");
        // Bottom centre (75, 40): in the masked quarter.
        assert!(!s.keeps(2, [70.0, 10.0, 80.0, 40.0], 100, 100), "masked");
        let every = Scene::new(&classes(), None, &SceneConfig::default()).expect("scene");
        assert!(every.keeps(1, [70.0, 10.0, 80.0, 40.0], 100, 100));
    }

    #[test]
    fn counts_start_at_zero_and_follow_objects_in_and_out() {
        let tracked = ["person".to_owned(), "car".to_owned()];
        let mut s = Scene::new(&classes(), Some(&tracked), &porch()).expect("scene");
        assert_eq!(
            s.take_changes(),
            vec![
                count("all", "person", 0),
                count("porch", "person", 0),
                count("all", "car", 0)
            ]
        );
        let on_porch = Present {
            key: 1,
            label: "person",
            bbox: [10.0, 60.0, 20.0, 90.0],
            visible: true,
        };
        let car = Present {
            key: 2,
            label: "car",
            bbox: [60.0, 60.0, 90.0, 90.0],
            visible: true,
        };
        let current = s.update(&[on_porch, car], 100, 100);
        assert_eq!(current[0], (1, vec!["porch".to_owned()]));
        assert_eq!(current[1], (2, vec![]));
        assert_eq!(
            s.take_changes(),
            vec![
                count("all", "car", 1),
                count("all", "person", 1),
                count("porch", "person", 1)
            ]
        );
        // Nothing changed: nothing to publish.
        s.update(&[on_porch, car], 100, 100);
        assert!(s.take_changes().is_empty());
        // The person leaves the frame.
        s.update(&[car], 100, 100);
        assert_eq!(
            s.take_changes(),
            vec![count("all", "person", 0), count("porch", "person", 0)]
        );
    }

    #[test]
    fn required_zones_gate_announcements() {
        let s = Scene::new(&classes(), None, &porch()).expect("scene");
        assert!(!s.admits(&[]));
        assert!(s.admits(&["porch".to_owned()]));
        let free = Scene::new(&classes(), None, &SceneConfig::default()).expect("scene");
        assert!(free.admits(&[]));
    }

    #[test]
    fn a_bad_polygon_is_an_error_not_a_panic() {
        let mut cfg = porch();
        cfg.masks = vec![vec![[0.0, 0.0], [1.0, 1.0]]];
        assert!(Scene::new(&classes(), None, &cfg).is_err());
    }

    #[test]
    fn a_count_that_could_not_be_published_is_retried_until_a_newer_one_replaces_it() {
        let ledger = CountLedger::default();
        ledger.record(&[count("all", "person", 1), count("door", "person", 1)]);
        assert_eq!(
            ledger.take_unsent(),
            vec![count("all", "person", 1), count("door", "person", 1)]
        );
        assert!(ledger.take_unsent().is_empty(), "sent once");
        // The door's count did not go out: the next frame sends it again.
        ledger.unsent(&count("door", "person", 1));
        assert_eq!(ledger.take_unsent(), vec![count("door", "person", 1)]);
        // A failed 1 that a 2 replaced meanwhile is not resent: the 2 is.
        ledger.record(&[count("door", "person", 2)]);
        ledger.unsent(&count("door", "person", 1));
        assert_eq!(ledger.take_unsent(), vec![count("door", "person", 2)]);
        ledger.unsent(&count("door", "person", 1));
        assert!(ledger.take_unsent().is_empty());
        assert_eq!(
            ledger.all(),
            vec![count("all", "person", 1), count("door", "person", 2)]
        );
    }
}
