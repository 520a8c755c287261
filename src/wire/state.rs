//! The retained topics: `available`, `state` (the device) and `<camera>/state`.
//!
//! `state` is what Home Assistant and `adaptd watch` read first and most often (the broker
//! replays it on subscribe), so every field is always written, `null` included where the
//! contract says so: a reader can tell "no head yet" (`head_version: null`) from a field an
//! older daemon did not have (absent, read as the default).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::lenient::{lenient, lenient_map, lenient_vec};

/// The retained `<base>/available` word. Not JSON: plain words, as Home Assistant's
/// availability template expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Connected (published on every connect).
    Online,
    /// A clean exit (SIGTERM, `systemctl stop`).
    Stopped,
    /// The broker's last will: the process died or lost the network.
    Offline,
}

impl Availability {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Online => "online",
            Availability::Stopped => "stopped",
            Availability::Offline => "offline",
        }
    }

    /// Reads the payload of `available` (surrounding whitespace and case are tolerated);
    /// `Ok(None)` for an empty payload, which is how a retained topic is cleared. The error is
    /// the text received, for the reader to show.
    pub fn from_payload(payload: &[u8]) -> Result<Option<Availability>, AvailabilityError> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| AvailabilityError::NotText)?
            .trim();
        if text.is_empty() {
            return Ok(None);
        }
        [
            Availability::Online,
            Availability::Stopped,
            Availability::Offline,
        ]
        .into_iter()
        .find(|a| text.eq_ignore_ascii_case(a.as_str()))
        .map(Some)
        .ok_or_else(|| AvailabilityError::UnknownWord(text.to_owned()))
    }
}

/// An `available` payload that is none of the three words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvailabilityError {
    /// Bytes that are not UTF-8.
    #[error("not UTF-8 text (expected online, offline or stopped)")]
    NotText,
    /// Another word (the text as received: a reader must clean it before showing it).
    #[error("unexpected {0:?} (expected online, offline or stopped)")]
    UnknownWord(String),
}

/// What a source is doing: `{"state": "streaming"}`, `{"state": "reconnecting", "attempt": 3,
/// "last_error": "..."}`, `{"state": "failed", "error": "..."}`. Written by the sources
/// themselves ([`crate::source::SourceStats`]), read by `watch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SourceState {
    /// Opened, no frame yet.
    Starting,
    /// Connecting to a network camera (RTSP: DESCRIBE, SETUP, PLAY), no frame yet.
    Connecting,
    /// Frames are flowing.
    Streaming,
    /// The camera is gone or not there yet; `attempt` counts failed opens since the last frame,
    /// the next one is in `retry_in_s` seconds (0: at once, or not known).
    Reconnecting {
        #[serde(default, deserialize_with = "lenient")]
        attempt: u32,
        #[serde(default, deserialize_with = "lenient")]
        last_error: String,
        #[serde(default, deserialize_with = "lenient")]
        retry_in_s: u32,
    },
    /// End of stream: a non-looping folder finished, or the pipe was closed by its writer.
    Ended,
    /// A fatal error ended the source (the message says what to fix).
    Failed {
        #[serde(default, deserialize_with = "lenient")]
        error: String,
    },
    /// Read only: a state this version does not know (a newer daemon), or none given. Never
    /// written by a source.
    #[default]
    #[serde(other)]
    Unknown,
}

impl SourceState {
    /// The state's name, as `stats.cameras.<name>.source_state` carries it.
    pub fn name(&self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Connecting => "connecting",
            SourceState::Streaming => "streaming",
            SourceState::Reconnecting { .. } => "reconnecting",
            SourceState::Ended => "ended",
            SourceState::Failed { .. } => "failed",
            SourceState::Unknown => "unknown",
        }
    }
}

/// One stream's state: the retained `<base>/<camera>/state`, and (without `camera`) the
/// values of [`DeviceState::cameras`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CameraState {
    /// The stream's name; `None` inside [`DeviceState::cameras`], where it is the key.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub camera: Option<String>,
    /// `camera` or `microphone`.
    #[serde(deserialize_with = "lenient")]
    pub kind: String,
    /// False for a configured stream that is switched off.
    #[serde(deserialize_with = "lenient")]
    pub enabled: bool,
    #[serde(deserialize_with = "lenient")]
    pub paused: bool,
    /// The backbone that processes frames.
    #[serde(deserialize_with = "lenient")]
    pub model: String,
    /// The backbone whose embeddings the head is trained on (names the learner).
    #[serde(deserialize_with = "lenient")]
    pub embedding_model: String,
    /// `tract` or `onnxruntime`: the engine that runs `model`...
    #[serde(deserialize_with = "lenient")]
    pub backend: String,
    /// ...and `embedding_model`.
    #[serde(deserialize_with = "lenient")]
    pub embedding_backend: String,
    /// The head in service; `null` before the first one is trained.
    #[serde(deserialize_with = "lenient")]
    pub head_version: Option<u32>,
    /// The source, described for people: `dir /var/lib/adaptd/demo (2 fps, loop)`.
    #[serde(deserialize_with = "lenient")]
    pub source: String,
    #[serde(deserialize_with = "lenient")]
    pub source_state: SourceState,
    /// The first stable label after consensus; `null` when nothing is stable.
    #[serde(deserialize_with = "lenient")]
    pub label: Option<String>,
    /// A detector's score threshold in force (`set score_threshold`); `null` for a classifier.
    #[serde(deserialize_with = "lenient")]
    pub score_threshold: Option<f32>,
    /// The head's unknown threshold in force (calibrated at training, or `set
    /// unknown_threshold`); `null` without a head.
    #[serde(deserialize_with = "lenient")]
    pub unknown_threshold: Option<f32>,
    /// A detector camera's zones (config order), for drawing them over its frames; left out
    /// when it has none.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient"
    )]
    pub zones: Vec<ZoneShape>,
}

/// A zone as a viewer draws it: its name and polygon, in coordinates normalised to the frame
/// (0..1, origin top left).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ZoneShape {
    pub name: String,
    pub points: Vec<[f32; 2]>,
}

impl Default for CameraState {
    /// What a reader assumes of fields an older daemon did not send: enabled, not paused.
    fn default() -> CameraState {
        CameraState {
            camera: None,
            kind: String::new(),
            enabled: true,
            paused: false,
            model: String::new(),
            embedding_model: String::new(),
            backend: String::new(),
            embedding_backend: String::new(),
            head_version: None,
            source: String::new(),
            source_state: SourceState::Unknown,
            label: None,
            score_threshold: None,
            unknown_threshold: None,
            zones: Vec::new(),
        }
    }
}

/// One learner: an embedding model's samples, head registry and head in service, shared by
/// the cameras whose `embedding_model` it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LearnerState {
    /// The engine running the embedding model.
    #[serde(deserialize_with = "lenient")]
    pub backend: String,
    /// The head in service; `null` before the first one.
    #[serde(deserialize_with = "lenient")]
    pub head_version: Option<u32>,
    /// That head's macro-F1 on its held-out samples when it was trained.
    #[serde(deserialize_with = "lenient")]
    pub head_macro_f1: Option<f64>,
    /// Samples per label.
    #[serde(deserialize_with = "lenient_map")]
    pub samples: BTreeMap<String, usize>,
    #[serde(deserialize_with = "lenient")]
    pub samples_total: usize,
}

/// The retained `<base>/state`, also the result of the `status` command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceState {
    #[serde(deserialize_with = "lenient")]
    pub binary_version: String,
    /// The device id (the second topic level).
    #[serde(deserialize_with = "lenient")]
    pub device: String,
    /// A training run is going on (any learner).
    #[serde(deserialize_with = "lenient")]
    pub training: bool,
    /// Retraining on the `[train]` schedule (`set auto_train`).
    #[serde(deserialize_with = "lenient")]
    pub auto_train: bool,
    /// Every stream, by name (cameras and microphones).
    #[serde(deserialize_with = "lenient_map")]
    pub cameras: BTreeMap<String, CameraState>,
    /// Every learner, by embedding model.
    #[serde(deserialize_with = "lenient_map")]
    pub learners: BTreeMap<String, LearnerState>,
    /// Samples over all learners.
    #[serde(deserialize_with = "lenient")]
    pub samples_total: usize,
    /// The models loaded (each once) and the streams sharing each.
    #[serde(deserialize_with = "lenient_vec")]
    pub engines: Vec<EngineState>,
}

/// A model loaded once and the streams sharing it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineState {
    #[serde(deserialize_with = "lenient")]
    pub model: String,
    /// `tract` or `onnxruntime`.
    #[serde(deserialize_with = "lenient")]
    pub backend: String,
    /// The streams whose frames (or crops) it runs on.
    #[serde(deserialize_with = "lenient")]
    pub cameras: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{round_trip, wire_json};
    use super::*;
    use serde_json::json;

    fn front() -> CameraState {
        CameraState {
            camera: Some("front".into()),
            kind: "camera".into(),
            enabled: true,
            paused: false,
            model: "nanodet-m".into(),
            embedding_model: "mobilenetv2".into(),
            backend: "onnxruntime".into(),
            embedding_backend: "tract".into(),
            head_version: None,
            source: "dir /srv/demo (2 fps, loop)".into(),
            source_state: SourceState::Reconnecting {
                attempt: 2,
                last_error: "no such device".into(),
                retry_in_s: 8,
            },
            label: None,
            score_threshold: Some(0.35),
            unknown_threshold: None,
            zones: Vec::new(),
        }
    }

    #[test]
    fn camera_state_json() {
        let expected = json!({"camera": "front", "kind": "camera", "enabled": true,
            "paused": false, "model": "nanodet-m", "embedding_model": "mobilenetv2",
            "backend": "onnxruntime", "embedding_backend": "tract", "head_version": null,
            "source": "dir /srv/demo (2 fps, loop)",
            "source_state": {"state": "reconnecting", "attempt": 2, "last_error": "no such device",
                             "retry_in_s": 8},
            "label": null, "score_threshold": 0.35, "unknown_threshold": null});
        round_trip(&front(), expected);
        // Inside `state.cameras` the name is the key, not a field.
        let inner = CameraState {
            camera: None,
            ..front()
        };
        assert!(wire_json(&inner).get("camera").is_none());
        // Zones, when it has some, for drawing.
        let zoned = CameraState {
            zones: vec![ZoneShape {
                name: "driveway".into(),
                points: vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0]],
            }],
            ..front()
        };
        let mut expected = wire_json(&front());
        expected["zones"] =
            json!([{"name": "driveway", "points": [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0]]}]);
        round_trip(&zoned, expected);
    }

    #[test]
    fn device_state_json() {
        let mut samples = BTreeMap::new();
        samples.insert("alice".to_string(), 14);
        samples.insert("bob".to_string(), 9);
        let state = DeviceState {
            binary_version: "0.1.0".into(),
            device: "shed".into(),
            training: true,
            auto_train: false,
            cameras: [(
                "front".to_string(),
                CameraState {
                    camera: None,
                    ..front()
                },
            )]
            .into(),
            learners: [(
                "mobilenetv2".to_string(),
                LearnerState {
                    backend: "tract".into(),
                    head_version: Some(3),
                    head_macro_f1: Some(0.94),
                    samples,
                    samples_total: 23,
                },
            )]
            .into(),
            samples_total: 23,
            engines: vec![EngineState {
                model: "mobilenetv2".into(),
                backend: "tract".into(),
                cameras: vec!["front".into()],
            }],
        };
        let v = wire_json(&state);
        assert_eq!(
            v["cameras"]["front"]["source_state"]["state"],
            "reconnecting"
        );
        assert_eq!(v["learners"]["mobilenetv2"]["samples"]["alice"], 14);
        assert_eq!(v["learners"]["mobilenetv2"]["head_macro_f1"], 0.94);
        round_trip(&state, v);
        let empty = json!({"binary_version": "", "device": "", "training": false,
            "auto_train": false, "cameras": {}, "learners": {}, "samples_total": 0, "engines": []});
        round_trip(&DeviceState::default(), empty);
    }

    #[test]
    fn source_states() {
        for (state, expected) in [
            (SourceState::Starting, json!({"state": "starting"})),
            (SourceState::Streaming, json!({"state": "streaming"})),
            (SourceState::Ended, json!({"state": "ended"})),
            (
                SourceState::Failed {
                    error: "gone".into(),
                },
                json!({"state": "failed", "error": "gone"}),
            ),
        ] {
            assert_eq!(
                serde_json::to_value(state.name()).unwrap(),
                expected["state"]
            );
            round_trip(&state, expected);
        }
        // A newer daemon's state, or a reconnect without its details, still reads.
        let s: SourceState = serde_json::from_str(r#"{"state": "sleeping", "until": 3}"#).unwrap();
        assert_eq!(s, SourceState::Unknown);
        let s: SourceState =
            serde_json::from_str(r#"{"state": "reconnecting", "attempt": "x"}"#).unwrap();
        assert_eq!(
            s,
            SourceState::Reconnecting {
                attempt: 0,
                last_error: String::new(),
                retry_in_s: 0,
            }
        );
    }

    #[test]
    fn readers_are_lenient() {
        let s: DeviceState = super::super::decode(
            br#"{"device": "shed", "training": "yes", "samples_total": 5, "new_field": [1],
                 "cameras": {"front": {"paused": true, "head_version": "three",
                                       "source_state": "streaming", "kind": 3},
                             "back": 7},
                 "learners": []}"#,
        )
        .unwrap();
        assert_eq!(s.device, "shed");
        assert!(!s.training, "a wrongly typed field reads as missing");
        assert_eq!(s.samples_total, 5);
        assert!(s.learners.is_empty());
        assert_eq!(s.cameras.len(), 1, "the unreadable camera is left out");
        let front = &s.cameras["front"];
        assert!(front.paused && front.enabled);
        assert_eq!(front.head_version, None);
        assert_eq!(front.source_state, SourceState::Unknown);
        assert_eq!(
            front.kind, "",
            "a kind that is not a string reads as missing"
        );
        let l: LearnerState =
            serde_json::from_str(r#"{"samples": {"a": 2, "bad": "x", "b": 1}}"#).unwrap();
        assert_eq!(l.samples.len(), 2);
    }

    #[test]
    fn availability_words() {
        assert_eq!(
            Availability::from_payload(b" Online\n"),
            Ok(Some(Availability::Online))
        );
        assert_eq!(
            Availability::from_payload(b"stopped"),
            Ok(Some(Availability::Stopped))
        );
        assert_eq!(Availability::from_payload(b""), Ok(None));
        assert_eq!(
            Availability::from_payload(b"sleeping")
                .unwrap_err()
                .to_string(),
            "unexpected \"sleeping\" (expected online, offline or stopped)"
        );
        assert_eq!(
            Availability::from_payload(b"\xff"),
            Err(AvailabilityError::NotText)
        );
        round_trip(&Availability::Offline, json!("offline"));
    }
}
