//! `<base>/<camera>/objects`: the life of each tracked object, in Frigate's event shape
//! (`{"type": "new" | "update" | "end", "before": {...}, "after": {...}}`), so what already
//! reads `frigate/events` (automations, NVR glue) reads ours with a topic change. The same
//! objects are what `adaptd events` lists and `cmd/events` returns.

use serde::{Deserialize, Serialize};

use super::events::EventKind;
use super::lenient::{lenient, lenient_vec};

/// A tracked object as it stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrackedObject {
    /// Unique per object, kept in storage: `<start seconds>.<ms>-<6 letters>` like Frigate's.
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    #[serde(deserialize_with = "lenient")]
    pub camera: String,
    /// The detector class the object's detections voted for.
    #[serde(deserialize_with = "lenient")]
    pub label: String,
    /// Its latest detection's score, and the best so far.
    #[serde(deserialize_with = "lenient")]
    pub score: f32,
    #[serde(deserialize_with = "lenient")]
    pub top_score: f32,
    /// `[name, score]` once the sub-label attempts agree (`null` before, and for classes the
    /// sub-label model does not apply to).
    #[serde(deserialize_with = "lenient")]
    pub sub_label: Option<(String, f32)>,
    /// `[x1, y1, x2, y2]` in frame pixels, the tracker's filtered box.
    #[serde(rename = "box", deserialize_with = "lenient")]
    pub bbox: [f32; 4],
    /// The frame it was last seen in (`frame_id` of `detections`).
    #[serde(deserialize_with = "lenient")]
    pub frame_id: u64,
    #[serde(deserialize_with = "lenient_vec")]
    pub current_zones: Vec<String>,
    #[serde(deserialize_with = "lenient_vec")]
    pub entered_zones: Vec<String>,
    /// Unix seconds (with milliseconds) of its first and (once it ended) last detection.
    #[serde(deserialize_with = "lenient")]
    pub start_time: f64,
    #[serde(deserialize_with = "lenient")]
    pub end_time: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub has_snapshot: bool,
    /// Someone said it is not a real object.
    #[serde(deserialize_with = "lenient")]
    pub false_positive: bool,
    /// It has stopped moving (a parked car).
    #[serde(deserialize_with = "lenient")]
    pub stationary: bool,
}

/// One change of an object's life.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectEvent {
    #[serde(rename = "type", deserialize_with = "lenient")]
    pub kind: EventKind,
    /// As last published (`null` for `new`).
    #[serde(deserialize_with = "lenient")]
    pub before: Option<TrackedObject>,
    #[serde(deserialize_with = "lenient")]
    pub after: TrackedObject,
}

/// The reply of `cmd/events`: the stored objects, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventList {
    #[serde(deserialize_with = "lenient_vec")]
    pub events: Vec<TrackedObject>,
}

#[cfg(test)]
mod tests {
    use super::super::test_support::round_trip;
    use super::*;
    use serde_json::json;

    fn person() -> TrackedObject {
        TrackedObject {
            id: "1795987200.456-k3x9qa".into(),
            camera: "front".into(),
            label: "person".into(),
            score: 0.71,
            top_score: 0.78,
            sub_label: Some(("alice".into(), 0.91)),
            bbox: [15.5, 14.0, 364.5, 508.0],
            frame_id: 88,
            current_zones: vec![],
            entered_zones: vec![],
            start_time: 1795987200.456,
            end_time: None,
            has_snapshot: false,
            false_positive: false,
            stationary: false,
        }
    }

    #[test]
    fn object_event_json_is_frigates_shape() {
        let e = ObjectEvent {
            kind: EventKind::Update,
            before: Some(TrackedObject {
                sub_label: None,
                ..person()
            }),
            after: person(),
        };
        let obj = |sub: serde_json::Value| {
            json!({"id": "1795987200.456-k3x9qa", "camera": "front", "label": "person",
                "score": 0.71, "top_score": 0.78, "sub_label": sub,
                "box": [15.5, 14.0, 364.5, 508.0], "frame_id": 88,
                "current_zones": [], "entered_zones": [], "start_time": 1795987200.456,
                "end_time": null, "has_snapshot": false, "false_positive": false,
                "stationary": false})
        };
        round_trip(
            &e,
            json!({"type": "update", "before": obj(json!(null)), "after": obj(json!(["alice", 0.91]))}),
        );
    }

    #[test]
    fn odd_fields_read_as_missing() {
        let e: ObjectEvent = serde_json::from_str(
            r#"{"type": "end", "after": {"id": "x", "sub_label": "alice", "box": [1, 2], "end_time": 3.5}}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::End);
        assert_eq!(e.after.sub_label, None);
        assert_eq!(e.after.bbox, [0.0; 4]);
        assert_eq!(e.after.end_time, Some(3.5));
    }
}
