//! `<base>/<camera>/detections` and `<base>/<camera>/events`.

use serde::{Deserialize, Serialize};

/// A head's verdict on one embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadLabel {
    pub label: String,
    pub score: f32,
    pub unknown: bool,
    pub head_version: u32,
}

/// One detected object (or, for a classifier, the whole frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The backbone's own label (ImageNet class, COCO class).
    pub label: String,
    pub score: f32,
    /// `[x1, y1, x2, y2]` in frame pixels; absent for whole-frame classification.
    #[serde(rename = "box", default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    /// The trained head's label, when a head is in service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadLabel>,
}

/// The utterance of an audio `detections` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtteranceInfo {
    /// Start, seconds from the start of the stream.
    pub start_s: f64,
    pub duration_s: f64,
    /// Mean level of its voiced frames, dBFS.
    pub level_dbfs: f32,
    /// Level above the background, dB.
    pub snr_db: f32,
}

/// One processed frame (or utterance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detections {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    pub frame_id: u64,
    pub time_unix_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utterance: Option<UtteranceInfo>,
    #[serde(default)]
    pub items: Vec<Item>,
    pub inference_ms: f64,
}

/// Kind of a state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    New,
    Update,
    End,
}

/// A consensus state change of one track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub track: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub score: f32,
}
