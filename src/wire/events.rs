//! `<base>/<camera>/events`: a track's stable label changed after consensus, in Frigate's
//! vocabulary (`new` / `update` / `end`, with `before` and `after`).

use serde::{Deserialize, Serialize};

use super::lenient::lenient;

/// Kind of a state change (the JSON key is `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A track got a stable label where it had none.
    New,
    /// A track's stable label changed.
    Update,
    /// A track lost its stable label.
    End,
    /// Read only: a kind this version does not know (a newer daemon), or none given.
    #[default]
    #[serde(other)]
    Unknown,
}

impl EventKind {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::New => "new",
            EventKind::Update => "update",
            EventKind::End => "end",
            EventKind::Unknown => "unknown",
        }
    }
}

/// A consensus state change of one track. `before` and `after` are always written (`null`
/// for no label): `new` has no `before`, `end` no `after`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    /// The stream's name.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub camera: Option<String>,
    #[serde(rename = "type", deserialize_with = "lenient")]
    pub kind: EventKind,
    /// `scene` for a classifier, the detector class (`person`) for boxes, `speaker` for audio.
    #[serde(deserialize_with = "lenient")]
    pub track: String,
    #[serde(deserialize_with = "lenient")]
    pub before: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub after: Option<String>,
    /// Mean score of the winning label over its supporting frames (0 for `end`).
    #[serde(deserialize_with = "lenient")]
    pub score: f32,
}

#[cfg(test)]
mod tests {
    use super::super::test_support::round_trip;
    use super::*;
    use serde_json::json;

    #[test]
    fn event_json() {
        let e = Event {
            camera: Some("front".into()),
            kind: EventKind::Update,
            track: "person".into(),
            before: Some("person".into()),
            after: Some("alice".into()),
            score: 0.93,
        };
        round_trip(
            &e,
            json!({"camera": "front", "type": "update", "track": "person",
                "before": "person", "after": "alice", "score": 0.93}),
        );
        let end = Event {
            kind: EventKind::End,
            after: None,
            score: 0.0,
            ..e
        };
        round_trip(
            &end,
            json!({"camera": "front", "type": "end", "track": "person",
                "before": "person", "after": null, "score": 0.0}),
        );
        for kind in [EventKind::New, EventKind::Update, EventKind::End] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn unknown_kinds_and_odd_fields_still_read() {
        let e: Event = serde_json::from_str(
            r#"{"type": "merge", "track": "scene", "before": 3, "after": "cat", "score": "x"}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::Unknown);
        assert_eq!(e.before, None);
        assert_eq!(e.after.as_deref(), Some("cat"));
        assert_eq!(e.score, 0.0);
        let e: Event = serde_json::from_str(r#"{"type": 5}"#).unwrap();
        assert_eq!(e.kind, EventKind::Unknown);
    }
}
