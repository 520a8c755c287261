//! `<base>/<camera>/detections`: one message per processed frame (or utterance).
//!
//! Optional parts are left out, not written as `null`, exactly where the daemon has always
//! left them out: `box` for whole-frame classification, `head` before a head is trained,
//! `width`/`height` for audio, `utterance` for pictures.

use serde::{Deserialize, Serialize};

use super::lenient::{lenient, lenient_vec};

/// A head's verdict on one embedding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeadLabel {
    /// The user's label, or `unknown`.
    #[serde(deserialize_with = "lenient")]
    pub label: String,
    #[serde(deserialize_with = "lenient")]
    pub score: f32,
    /// The head is not confident, or its best class is the background class `none`.
    #[serde(deserialize_with = "lenient")]
    pub unknown: bool,
    #[serde(deserialize_with = "lenient")]
    pub head_version: u32,
}

/// One detected object (or, for a classifier, the whole frame).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Item {
    /// The backbone's own label (ImageNet class, COCO class).
    #[serde(deserialize_with = "lenient")]
    pub label: String,
    #[serde(deserialize_with = "lenient")]
    pub score: f32,
    /// `[x1, y1, x2, y2]` in frame pixels; absent for whole-frame classification.
    #[serde(
        rename = "box",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub bbox: Option<[f32; 4]>,
    /// The tracked object the box belongs to (`<camera>/objects`); absent for a box not (yet)
    /// an object, and for whole-frame classification.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub id: Option<String>,
    /// The trained head's label, when a head is in service.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub head: Option<HeadLabel>,
    /// A false positive: its object was marked so, or its class's false-positive filter
    /// says so. Shown, so a person can see the filter at work, but no event, zone count or
    /// Home Assistant state comes of it.
    #[serde(
        skip_serializing_if = "std::ops::Not::not",
        deserialize_with = "lenient"
    )]
    pub suppressed: bool,
}

/// The utterance of an audio `detections` message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UtteranceInfo {
    /// Start, seconds from the start of the stream.
    #[serde(deserialize_with = "lenient")]
    pub start_s: f64,
    #[serde(deserialize_with = "lenient")]
    pub duration_s: f64,
    /// Mean level of its voiced frames, dBFS.
    #[serde(deserialize_with = "lenient")]
    pub level_dbfs: f32,
    /// Level above the background, dB.
    #[serde(deserialize_with = "lenient")]
    pub snr_db: f32,
}

/// One processed frame (or utterance).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Detections {
    /// The stream's name (also the topic's level, for readers of `<base>/#`).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub camera: Option<String>,
    /// The frame's sequence number (for audio: the utterance's).
    #[serde(deserialize_with = "lenient")]
    pub frame_id: u64,
    #[serde(deserialize_with = "lenient")]
    pub time_unix_ms: i64,
    /// Frame size in pixels; absent for audio.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub height: Option<u32>,
    /// For audio: where the utterance lies in the stream and how loud it was.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub utterance: Option<UtteranceInfo>,
    /// In the detector's order: the `label` command's `detection` is an index into this.
    #[serde(deserialize_with = "lenient_vec")]
    pub items: Vec<Item>,
    /// Processing time of the frame (backbone, head, sub-labels).
    #[serde(deserialize_with = "lenient")]
    pub inference_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::super::test_support::round_trip;
    use super::*;
    use serde_json::json;

    fn detector_frame() -> Detections {
        Detections {
            camera: Some("front".into()),
            frame_id: 88,
            time_unix_ms: 1_795_987_200_456,
            width: Some(512),
            height: Some(512),
            utterance: None,
            items: vec![
                Item {
                    label: "person".into(),
                    score: 0.73,
                    bbox: Some([15.2, 14.0, 364.8, 508.1]),
                    id: None,
                    head: Some(HeadLabel {
                        label: "alice".into(),
                        score: 0.93,
                        unknown: false,
                        head_version: 3,
                    }),
                    suppressed: false,
                },
                Item {
                    label: "dog".into(),
                    score: 0.5,
                    bbox: Some([1.0, 2.0, 3.0, 4.0]),
                    id: None,
                    head: None,
                    suppressed: true,
                },
            ],
            inference_ms: 131.9,
        }
    }

    #[test]
    fn detector_json() {
        round_trip(
            &detector_frame(),
            json!({"camera": "front", "frame_id": 88, "time_unix_ms": 1_795_987_200_456_i64,
                "width": 512, "height": 512,
                "items": [{"label": "person", "score": 0.73, "box": [15.2, 14.0, 364.8, 508.1],
                           "head": {"label": "alice", "score": 0.93, "unknown": false,
                                    "head_version": 3}},
                          {"label": "dog", "score": 0.5, "box": [1.0, 2.0, 3.0, 4.0],
                           "suppressed": true}],
                "inference_ms": 131.9}),
        );
    }

    #[test]
    fn audio_json_has_no_size_and_no_box() {
        let utterance = Detections {
            camera: Some("hall".into()),
            frame_id: 3,
            time_unix_ms: 7,
            width: None,
            height: None,
            utterance: Some(UtteranceInfo {
                start_s: 7.42,
                duration_s: 3.1,
                level_dbfs: -24.6,
                snr_db: 41.7,
            }),
            items: vec![Item {
                label: "speech".into(),
                score: 1.0,
                bbox: None,
                id: None,
                head: None,
                suppressed: false,
            }],
            inference_ms: 214.0,
        };
        round_trip(
            &utterance,
            json!({"camera": "hall", "frame_id": 3, "time_unix_ms": 7,
                "utterance": {"start_s": 7.42, "duration_s": 3.1, "level_dbfs": -24.6,
                              "snr_db": 41.7},
                "items": [{"label": "speech", "score": 1.0}], "inference_ms": 214.0}),
        );
    }

    #[test]
    fn odd_items_keep_their_place() {
        let d: Detections = super::super::decode(
            br#"{"frame_id": "x", "width": -1, "items": [
                  {"label": "person", "score": 0.6, "box": [1, 2, 3], "head": "alice"},
                  7,
                  {"label": "cat", "head": {"label": "tom", "score": "high"}, "extra": 1}]}"#,
        )
        .unwrap();
        assert_eq!(d.frame_id, 0);
        assert_eq!(d.width, None);
        assert_eq!(d.items.len(), 3, "the `detection` indices stay valid");
        assert_eq!(d.items[0].label, "person");
        assert_eq!(d.items[0].bbox, None, "a box of three numbers is no box");
        assert_eq!(d.items[0].head, None);
        assert_eq!(d.items[1], Item::default());
        let head = d.items[2].head.as_ref().unwrap();
        assert_eq!((head.label.as_str(), head.score), ("tom", 0.0));
        let d: Detections = super::super::decode(br#"{"items": 5}"#).unwrap();
        assert!(d.items.is_empty());
    }
}
