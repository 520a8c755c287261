//! Consensus over frames: a label changes only when it has held for N of the last M frames.
//!
//! Per-frame classifications flicker (a cat half out of frame, a car in shadow); an
//! automation that fires on every flicker is useless. A track's stable label changes only when
//! one label was seen, with at least `min_score`, in `n` of the last `m` frames; it ends when no
//! label has that support any more. Each change is an event in Frigate's vocabulary
//! (`new` / `update` / `end`, with `before` and `after`), which Home Assistant users already
//! automate against.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Consensus settings (`[consensus]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusConfig {
    /// Frames that must agree...
    pub n: usize,
    /// ...out of this many recent frames.
    pub m: usize,
    /// Observations below this score do not count.
    pub min_score: f32,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            n: 3,
            m: 5,
            min_score: 0.5,
        }
    }
}

impl ConsensusConfig {
    /// Messages naming `[consensus].key` for every invalid value.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.m == 0 || self.m > 1000 {
            p.push(format!(
                "[consensus].m = {} is out of range; allowed: 1 to 1000",
                self.m
            ));
        }
        if self.n == 0 || self.n > self.m {
            p.push(format!(
                "[consensus].n = {} must be between 1 and m ({})",
                self.n, self.m
            ));
        }
        if !(0.0..=1.0).contains(&self.min_score) {
            p.push(format!(
                "[consensus].min_score = {} is out of range; allowed: 0.0 to 1.0",
                self.min_score
            ));
        }
        p
    }
}

/// Kind of a state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A track got a stable label where it had none.
    New,
    /// A track's stable label changed.
    Update,
    /// A track lost its stable label.
    End,
}

/// A state change of one track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// What is being tracked: `scene` for a classifier, the detector class (`person`) for boxes.
    pub track: String,
    pub before: Option<String>,
    pub after: Option<String>,
    /// Mean score of the winning label over its supporting frames (0 for `end`).
    pub score: f32,
}

/// One track's recent observations and stable label.
#[derive(Debug, Clone)]
struct Track {
    window: VecDeque<Option<(String, f32)>>,
    stable: Option<String>,
}

/// All tracks of one stream.
#[derive(Debug, Clone)]
pub struct Consensus {
    config: ConsensusConfig,
    tracks: BTreeMap<String, Track>,
}

impl Consensus {
    pub fn new(config: ConsensusConfig) -> Consensus {
        Consensus {
            config,
            tracks: BTreeMap::new(),
        }
    }

    /// Changes the settings (the `set` command); windows are kept.
    pub fn set_config(&mut self, config: ConsensusConfig) {
        self.config = config;
        for t in self.tracks.values_mut() {
            while t.window.len() > config.m {
                t.window.pop_front();
            }
        }
    }

    pub fn config(&self) -> ConsensusConfig {
        self.config
    }

    /// Stable labels of every track that has one.
    pub fn stable(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tracks
            .iter()
            .filter_map(|(k, t)| t.stable.as_deref().map(|s| (k.as_str(), s)))
    }

    /// Records one frame: `observations` maps a track to its best (label, score) in this
    /// frame; tracks not mentioned saw nothing. Returns the state changes, in track order.
    pub fn observe(&mut self, observations: &BTreeMap<String, (String, f32)>) -> Vec<Event> {
        for track in observations.keys() {
            self.tracks.entry(track.clone()).or_insert_with(|| Track {
                window: VecDeque::with_capacity(self.config.m),
                stable: None,
            });
        }
        let cfg = self.config;
        let mut events = Vec::new();
        self.tracks.retain(|name, t| {
            let obs = observations
                .get(name)
                .filter(|(_, s)| *s >= cfg.min_score)
                .cloned();
            if t.window.len() == cfg.m {
                t.window.pop_front();
            }
            t.window.push_back(obs);
            let winner = winner(&t.window, cfg.n);
            match (&t.stable, winner) {
                (None, Some((label, score))) => {
                    events.push(Event {
                        kind: EventKind::New,
                        track: name.clone(),
                        before: None,
                        after: Some(label.clone()),
                        score,
                    });
                    t.stable = Some(label);
                }
                (Some(old), Some((label, score))) if *old != label => {
                    events.push(Event {
                        kind: EventKind::Update,
                        track: name.clone(),
                        before: Some(old.clone()),
                        after: Some(label.clone()),
                        score,
                    });
                    t.stable = Some(label);
                }
                // Hysteresis: a stable label that merely weakens below n of m stays until it
                // has not been seen at all for m frames, so a track does not flap new/end.
                (Some(old), None) if !t.window.iter().flatten().any(|(l, _)| l == old) => {
                    events.push(Event {
                        kind: EventKind::End,
                        track: name.clone(),
                        before: Some(old.clone()),
                        after: None,
                        score: 0.0,
                    });
                    t.stable = None;
                }
                _ => {}
            }
            // Forget tracks that are empty and idle, so memory stays flat.
            t.stable.is_some() || t.window.iter().any(Option::is_some)
        });
        events
    }
}

/// The label seen in at least `n` slots of the window (the most supported, ties broken by
/// the higher mean score), with its mean score.
fn winner(window: &VecDeque<Option<(String, f32)>>, n: usize) -> Option<(String, f32)> {
    let mut support: BTreeMap<&str, (usize, f32)> = BTreeMap::new();
    for (label, score) in window.iter().flatten() {
        let e = support.entry(label.as_str()).or_default();
        e.0 += 1;
        e.1 += score;
    }
    support
        .into_iter()
        .filter(|(_, (count, _))| *count >= n)
        .map(|(l, (count, sum))| (l, count, sum / count as f32))
        .max_by(|a, b| a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)))
        .map(|(l, _, mean)| (l.to_string(), mean))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(obs: &[(&str, &str, f32)]) -> BTreeMap<String, (String, f32)> {
        obs.iter()
            .map(|(t, l, s)| (t.to_string(), (l.to_string(), *s)))
            .collect()
    }

    fn kinds(events: &[Event]) -> Vec<(EventKind, Option<&str>, Option<&str>)> {
        events
            .iter()
            .map(|e| (e.kind, e.before.as_deref(), e.after.as_deref()))
            .collect()
    }

    #[test]
    fn a_label_needs_n_of_m_before_it_is_announced() {
        let mut c = Consensus::new(ConsensusConfig {
            n: 3,
            m: 5,
            min_score: 0.5,
        });
        assert!(c.observe(&frame(&[("scene", "cat", 0.9)])).is_empty());
        assert!(c.observe(&frame(&[("scene", "cat", 0.9)])).is_empty());
        let e = c.observe(&frame(&[("scene", "cat", 0.6)]));
        assert_eq!(kinds(&e), vec![(EventKind::New, None, Some("cat"))]);
        assert!((e[0].score - 0.8).abs() < 1e-6);
        // Already stable: no repeat.
        assert!(c.observe(&frame(&[("scene", "cat", 0.9)])).is_empty());
    }

    #[test]
    fn flicker_does_not_flap_and_a_real_change_is_an_update() {
        let mut c = Consensus::new(ConsensusConfig {
            n: 3,
            m: 5,
            min_score: 0.5,
        });
        for _ in 0..5 {
            c.observe(&frame(&[("scene", "day", 0.9)]));
        }
        // One odd frame: nothing happens.
        assert!(c.observe(&frame(&[("scene", "night", 0.9)])).is_empty());
        assert!(c.observe(&frame(&[("scene", "day", 0.9)])).is_empty());
        // A sustained change: exactly one update.
        let mut events = Vec::new();
        for _ in 0..5 {
            events.extend(c.observe(&frame(&[("scene", "night", 0.9)])));
        }
        assert_eq!(
            kinds(&events),
            vec![(EventKind::Update, Some("day"), Some("night"))]
        );
    }

    #[test]
    fn low_scores_do_not_count_and_absence_ends_the_track() {
        let mut c = Consensus::new(ConsensusConfig {
            n: 2,
            m: 3,
            min_score: 0.5,
        });
        for _ in 0..3 {
            assert!(c.observe(&frame(&[("person", "alice", 0.3)])).is_empty());
        }
        c.observe(&frame(&[("person", "alice", 0.9)]));
        let e = c.observe(&frame(&[("person", "alice", 0.9)]));
        assert_eq!(kinds(&e), vec![(EventKind::New, None, Some("alice"))]);
        let mut events = Vec::new();
        for _ in 0..3 {
            events.extend(c.observe(&frame(&[])));
        }
        assert_eq!(kinds(&events), vec![(EventKind::End, Some("alice"), None)]);
        // The idle track is forgotten.
        assert_eq!(c.tracks.len(), 0);
    }

    #[test]
    fn tracks_are_independent() {
        let mut c = Consensus::new(ConsensusConfig {
            n: 1,
            m: 1,
            min_score: 0.0,
        });
        let e = c.observe(&frame(&[("person", "alice", 0.9), ("car", "our_car", 0.8)]));
        assert_eq!(e.len(), 2);
        let e = c.observe(&frame(&[("person", "bob", 0.9)]));
        assert_eq!(
            kinds(&e),
            vec![
                (EventKind::End, Some("our_car"), None),
                (EventKind::Update, Some("alice"), Some("bob"))
            ]
        );
        assert_eq!(c.stable().collect::<Vec<_>>(), vec![("person", "bob")]);
    }

    #[test]
    fn validation_names_keys() {
        let p = ConsensusConfig {
            n: 6,
            m: 5,
            min_score: 2.0,
        }
        .validate();
        assert_eq!(p.len(), 2);
        assert!(p[0].contains("[consensus].n"));
    }
}
