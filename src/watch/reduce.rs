//! The wire types, reduced to what the screen shows.
//!
//! A message is read into its [`crate::wire`] type and at once reduced to one of these:
//! every string cleaned and bounded ([`clean`]), lists and maps capped, large fields (a
//! training run's `confusion` and `outcome`) dropped. So a chatty or hostile publisher cannot
//! grow the view, and rendering never touches a payload again.

use std::collections::BTreeMap;

use serde_json::Value;

use super::text::clean;
use crate::wire;

/// Items kept from one frame; a detector can report dozens, the rest are only counted.
pub const MAX_ITEMS: usize = 64;
/// Labels kept from a `samples` map (the screen shows one line of them anyway).
pub const MAX_LABELS: usize = 256;
/// Learners kept from a `state`.
pub const MAX_LEARNERS: usize = 8;
/// Characters kept of any payload string: more than a screen line, and bounded memory.
pub const MAX_TEXT: usize = 240;
/// Characters kept of a name (model, backend, label, track).
const MAX_NAME: usize = 64;

/// Sample counts per label, sorted by count (largest first), then label.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    pub top: Vec<(String, u64)>,
    pub labels: usize,
    pub total: u64,
}

impl Samples {
    pub fn from_counts(counts: &BTreeMap<String, usize>) -> Samples {
        let mut all: Vec<(String, u64)> = counts
            .iter()
            .map(|(label, n)| (clean(label, MAX_NAME), *n as u64))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let labels = all.len();
        let total = all.iter().fold(0u64, |acc, (_, n)| acc.saturating_add(*n));
        all.truncate(MAX_LABELS);
        Samples {
            top: all,
            labels,
            total,
        }
    }
}

/// A source's state: its name and, from `<camera>/state`, the detail (attempt, error).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceLine {
    pub name: String,
    pub detail: Option<String>,
}

impl SourceLine {
    pub fn from_wire(s: &wire::SourceState) -> SourceLine {
        let detail = match s {
            wire::SourceState::Reconnecting {
                attempt,
                last_error,
                retry_in_s,
            } => {
                let when = match retry_in_s {
                    0 => format!("attempt {attempt}"),
                    s => format!("attempt {attempt}, retrying in {s} s"),
                };
                Some(if last_error.is_empty() {
                    when
                } else {
                    format!("{when}: {}", clean(last_error, MAX_TEXT))
                })
            }
            wire::SourceState::Failed { error } if !error.is_empty() => {
                Some(clean(error, MAX_TEXT))
            }
            _ => None,
        };
        SourceLine {
            name: s.name().to_owned(),
            detail,
        }
    }
}

/// One stream's `state` (from `<camera>/state` or `state.cameras`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CameraInfo {
    pub kind: String,
    pub enabled: bool,
    pub paused: bool,
    pub model: String,
    pub embedding_model: String,
    pub head_version: Option<u32>,
    pub source: String,
    pub source_state: SourceLine,
    pub label: Option<String>,
}

impl CameraInfo {
    pub fn from_wire(s: &wire::CameraState) -> CameraInfo {
        CameraInfo {
            kind: clean(&s.kind, 16),
            enabled: s.enabled,
            paused: s.paused,
            model: clean(&s.model, MAX_NAME),
            embedding_model: clean(&s.embedding_model, MAX_NAME),
            head_version: s.head_version,
            source: clean(&s.source, MAX_TEXT),
            source_state: SourceLine::from_wire(&s.source_state),
            label: s.label.as_deref().map(|l| clean(l, MAX_NAME)),
        }
    }
}

/// One stream's figures from `stats.cameras.<name>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CameraFigures {
    pub fps: f64,
    pub frames: u64,
    pub skipped: u64,
    pub p50: f64,
    pub p95: f64,
    pub paused: bool,
    pub source_state: String,
    pub head_version: Option<u32>,
    pub head_macro_f1: Option<f64>,
}

impl CameraFigures {
    pub fn from_wire(s: &wire::CameraStats) -> CameraFigures {
        CameraFigures {
            fps: s.fps,
            frames: s.frames,
            skipped: s.skipped_frames,
            p50: s.inference_ms_p50,
            p95: s.inference_ms_p95,
            paused: s.paused,
            source_state: clean(&s.source_state, 24),
            head_version: s.head_version,
            head_macro_f1: s.head_macro_f1,
        }
    }
}

/// The head's cell of a detections row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeadCell {
    pub label: String,
    pub score: f32,
    pub unknown: bool,
}

/// One row of the detections table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemRow {
    pub label: String,
    pub score: f32,
    pub bbox: Option<[f32; 4]>,
    pub head: Option<HeadCell>,
}

/// One `<camera>/detections` message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    pub frame_id: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub inference_ms: f64,
    /// The first [`MAX_ITEMS`], in the message's order (the `detection` index).
    pub items: Vec<ItemRow>,
    /// How many items the frame had.
    pub item_count: usize,
}

impl Frame {
    pub fn from_wire(d: &wire::Detections) -> Frame {
        let items = d
            .items
            .iter()
            .take(MAX_ITEMS)
            .map(|i| ItemRow {
                // A false positive stays in view, so the owner sees the filter at work.
                label: if i.suppressed {
                    format!("{} (suppressed)", clean(&i.label, MAX_NAME))
                } else {
                    clean(&i.label, MAX_NAME)
                },
                score: i.score,
                bbox: i.bbox,
                head: i.head.as_ref().map(|h| HeadCell {
                    label: clean(&h.label, MAX_NAME),
                    score: h.score,
                    unknown: h.unknown || h.label == "unknown",
                }),
            })
            .collect();
        Frame {
            frame_id: d.frame_id,
            width: d.width,
            height: d.height,
            inference_ms: d.inference_ms,
            items,
            item_count: d.items.len(),
        }
    }
}

/// One `<camera>/events` message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventRow {
    pub kind: wire::EventKind,
    pub track: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub score: f32,
}

impl EventRow {
    pub fn from_wire(e: &wire::Event) -> EventRow {
        EventRow {
            kind: e.kind,
            track: clean(&e.track, MAX_NAME),
            before: e.before.as_deref().map(|s| clean(s, MAX_NAME)),
            after: e.after.as_deref().map(|s| clean(s, MAX_NAME)),
            score: e.score,
        }
    }
}

/// One `training` message, without its large fields.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainingInfo {
    Started {
        model: String,
        trigger: String,
    },
    Finished {
        model: String,
        version: u32,
        deployed: bool,
        reason: String,
        accuracy: f64,
        macro_f1: f64,
        current_macro_f1: Option<f64>,
    },
    Failed {
        model: String,
        error: String,
    },
    /// A status this watch does not know.
    Unknown,
}

impl TrainingInfo {
    pub fn from_wire(t: &wire::Training) -> TrainingInfo {
        match t {
            wire::Training::Started { model, trigger, .. } => TrainingInfo::Started {
                model: clean(model, MAX_NAME),
                trigger: clean(trigger, MAX_NAME),
            },
            wire::Training::Finished {
                model,
                version,
                deployed,
                reason,
                accuracy,
                macro_f1,
                current_macro_f1,
                ..
            } => TrainingInfo::Finished {
                model: clean(model, MAX_NAME),
                version: *version,
                deployed: *deployed,
                reason: clean(reason, MAX_TEXT),
                accuracy: *accuracy,
                macro_f1: *macro_f1,
                current_macro_f1: *current_macro_f1,
            },
            wire::Training::Failed { model, error, .. } => TrainingInfo::Failed {
                model: clean(model, MAX_NAME),
                error: clean(error, MAX_TEXT),
            },
            wire::Training::Unknown => TrainingInfo::Unknown,
        }
    }
}

/// One `reply` message, reduced to what fits a line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplyInfo {
    pub id: Option<String>,
    pub cmd: Option<String>,
    pub ok: bool,
    /// The error message, or the result as compact JSON.
    pub detail: Option<String>,
}

impl ReplyInfo {
    pub fn from_wire(r: &wire::Reply) -> ReplyInfo {
        let id = r.id.as_ref().map(|id| match id {
            wire::RequestId::Text(s) => clean(s, 40),
            wire::RequestId::Number(n) => clean(&n.to_string(), 40),
        });
        let detail = match &r.outcome {
            Err(message) => Some(clean(message, MAX_TEXT)),
            Ok(Value::Null) => None,
            Ok(Value::String(s)) => Some(clean(s, MAX_TEXT)),
            Ok(other) => Some(clean(&other.to_string(), MAX_TEXT)),
        };
        ReplyInfo {
            id,
            cmd: r.cmd.as_deref().map(|c| clean(c, 40)),
            ok: r.outcome.is_ok(),
            detail,
        }
    }
}

/// One learner of `state.learners`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LearnerInfo {
    pub model: String,
    pub backend: String,
    pub head_version: Option<u32>,
    pub head_macro_f1: Option<f64>,
    pub samples: Samples,
}

/// The device-level part of `state`; its `cameras` go to the cameras' views.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceInfo {
    pub binary_version: String,
    pub training: bool,
    pub auto_train: bool,
    /// The first [`MAX_LEARNERS`], by model name.
    pub learners: Vec<LearnerInfo>,
    /// How many learners the state named.
    pub learner_count: usize,
}

impl DeviceInfo {
    pub fn from_wire(s: &wire::DeviceState) -> DeviceInfo {
        let learners = s
            .learners
            .iter()
            .take(MAX_LEARNERS)
            .map(|(model, l)| LearnerInfo {
                model: clean(model, MAX_NAME),
                backend: clean(&l.backend, 24),
                head_version: l.head_version,
                head_macro_f1: l.head_macro_f1,
                samples: Samples::from_counts(&l.samples),
            })
            .collect();
        DeviceInfo {
            binary_version: clean(&s.binary_version, 32),
            training: s.training,
            auto_train: s.auto_train,
            learners,
            learner_count: s.learners.len(),
        }
    }
}

/// The device-level part of `stats`; its `cameras` go to the cameras' views.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFigures {
    pub uptime_s: u64,
    pub cpu_temp_c: Option<f64>,
    pub mqtt_reconnects: u64,
    /// `running` / `idle`; `None` for a word this watch does not know.
    pub training: Option<bool>,
    pub samples: Samples,
}

impl DeviceFigures {
    pub fn from_wire(s: &wire::Stats) -> DeviceFigures {
        DeviceFigures {
            uptime_s: s.uptime_s,
            cpu_temp_c: s.cpu_temp_c,
            mqtt_reconnects: s.mqtt_reconnects,
            training: match s.training.as_str() {
                "running" => Some(true),
                "idle" => Some(false),
                _ => None,
            },
            samples: Samples::from_counts(&s.samples),
        }
    }
}

#[cfg(test)]
mod suppressed_tests {
    use super::*;

    #[test]
    fn a_suppressed_box_says_so() {
        let d = wire::Detections {
            items: vec![
                wire::Item {
                    label: "person".into(),
                    suppressed: true,
                    ..wire::Item::default()
                },
                wire::Item {
                    label: "cat".into(),
                    ..wire::Item::default()
                },
            ],
            ..wire::Detections::default()
        };
        let f = Frame::from_wire(&d);
        assert_eq!(f.items[0].label, "person (suppressed)");
        assert_eq!(f.items[1].label, "cat");
    }
}
