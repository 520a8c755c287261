//! Commands arriving on `<base>/cmd/<verb>`: the one strict parse of their payloads.
//!
//! Parsing is strict (unknown fields are errors, numbers are range-checked) because a command
//! typed by hand in Home Assistant's MQTT panel with a misspelt key should be told so, not
//! silently ignored. Every failure carries the request's `id` when it could be read, so the
//! reply can be matched by the sender.
//!
//! The parse is written by hand rather than derived with serde: serde's messages ("invalid
//! type: string \"yes\", expected a boolean at line 1 column 15", "unknown field `treshold`,
//! expected one of ...") name neither the command nor what is allowed, and cannot say that
//! `detection` must be a whole number from 0 to 999. Each field is read by a small function
//! of `command_fields` that knows its message.
//!
//! Payloads: a JSON object (an empty payload counts as `{}`), with an optional `id` (string
//! or number) that is echoed in the reply, and an optional `camera` (a stream's name: the
//! command is for that stream or its learner; whether the stream exists is the daemon's to
//! say, since only it knows its streams):
//!
//! | verb | fields |
//! |---|---|
//! | `label` | `label` (required), `detection` (index into the current frame's detections; absent = the whole frame) |
//! | `train` | `force` (bool, default false: train even if nothing changed) |
//! | `rollback` | `version`: a head version number, or `"previous"` |
//! | `pause`, `resume`, `snapshot`, `status` | none |
//! | `set` | one or more of the [`Settings`] keys (`score_threshold`, `unknown_threshold`, `consensus`, `fps`, `auto_train`, `detect`) |
//! | `forget` | `label` (required): delete that label's samples |

use serde_json::{Map, Value};

use super::command_error::CommandError;
use super::command_fields::{
    describe, int_in, only, opt_bool, opt_float, opt_int, required_label, settings_help, truncate,
    SETTING_KEYS,
};
use super::lenient::json_type;
use super::name::check_stream_name;
use super::reply::Reply;
pub use super::request_id::RequestId;
// The label rule is the one import from the rest of the crate.
use crate::label::Label;

/// The verbs, for error messages.
pub const VERBS: &[&str] = &[
    "label",
    "train",
    "rollback",
    "pause",
    "resume",
    "snapshot",
    "set",
    "forget",
    "status",
    "events",
    "false_positive",
];

/// What a `label` command labels.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelTarget {
    /// The latest frame or utterance as a whole (classifiers, microphones).
    Latest,
    /// A whole frame by its `frame_id` (classifiers).
    Frame { frame_id: u64 },
    /// A tracked object (the `id` of a `detections` item or of `objects`): its best crop.
    Object(String),
    /// Detection `index` of frame `frame_id` (of the newest frame when `None`).
    Detection { frame_id: Option<u64>, index: u32 },
    /// A box drawn on frame `frame_id`, `[x1, y1, x2, y2]` in its pixels.
    Box { frame_id: u64, bbox: [f32; 4] },
}

/// Which stored objects `events` returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub label: Option<String>,
    pub sub_label: Option<String>,
    /// Objects that started at or after this (unix seconds).
    pub after: Option<f64>,
    /// Objects that started before this (unix seconds).
    pub before: Option<f64>,
    /// At most this many (1..=1000, default 50).
    pub limit: u32,
}

/// Which head to roll back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackTarget {
    /// A version from the head registry (1 or more).
    Version(u32),
    /// The version deployed before the current one (what Home Assistant's button sends).
    Previous,
}

/// Runtime settings changed by `set`; only the given ones change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// Detector score (0..=1) below which a detection is ignored.
    pub score_threshold: Option<f32>,
    /// Head score (0..=1) below which the label is reported as `unknown`.
    pub unknown_threshold: Option<f32>,
    /// Number of consecutive frames (1..=100) that must agree before an event is published.
    pub consensus: Option<u32>,
    /// Frame rate cap (0.1..=60 frames per second).
    pub fps: Option<f32>,
    /// Retrain on the schedule (true) or only on `train` (false).
    pub auto_train: Option<bool>,
    /// Analyse frames (true, as `resume`) or not (false, as `pause`): one command topic for
    /// both, which is what a Home Assistant switch needs.
    pub detect: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Store a frame, a detection of one, a box drawn on one or a tracked object's best crop
    /// as a sample of `label`.
    Label {
        /// The label to store the sample under.
        label: Label,
        /// What is labelled.
        target: LabelTarget,
    },
    /// List stored tracked objects, newest first.
    Events(EventFilter),
    /// A tracked object is not what the detector says: mark it, file its crop as a false
    /// positive of its class and let the class's filter learn (`label none` on an object does
    /// the same). The target is never [`LabelTarget::Latest`].
    FalsePositive { target: LabelTarget },
    /// Train a new head now.
    Train {
        /// Train even when no sample changed since the last training.
        force: bool,
    },
    /// Deploy an earlier head.
    Rollback {
        /// Which one.
        target: RollbackTarget,
    },
    /// Stop processing frames (the connection and commands stay up).
    Pause,
    /// Resume processing frames.
    Resume,
    /// Publish a fresh snapshot.
    Snapshot,
    /// Change runtime settings.
    Set(Settings),
    /// Delete every sample of a label.
    Forget {
        /// The label to forget.
        label: Label,
    },
    /// Publish the state now and reply with it.
    Status,
}

impl Command {
    /// The verb of the command, as in `cmd/<verb>`.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Label { .. } => "label",
            Command::Train { .. } => "train",
            Command::Rollback { .. } => "rollback",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Snapshot => "snapshot",
            Command::Set(_) => "set",
            Command::Forget { .. } => "forget",
            Command::Status => "status",
            Command::Events(_) => "events",
            Command::FalsePositive { .. } => "false_positive",
        }
    }
}

/// A command with its optional `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed in the reply.
    pub id: Option<RequestId>,
    /// The camera (or microphone) the command is for; `None`: every one it applies to (see
    /// docs/mqtt.md). Whether it exists is the daemon's to say.
    pub camera: Option<String>,
    /// What to do.
    pub command: Command,
}

/// A command that could not be parsed, with whatever `id` could be read so the reply still
/// reaches its sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The request's id, when the payload was an object with a valid `id`.
    pub id: Option<RequestId>,
    /// The verb as received (shortened when long).
    pub verb: String,
    /// What was wrong.
    pub error: CommandError,
}

impl Rejected {
    /// The `ok: false` reply for this rejection.
    pub fn reply(&self) -> Reply {
        Reply::error(self.id.clone(), Some(&self.verb), self.error.to_string())
    }
}

impl Request {
    /// Parses the payload of `cmd/<verb>`.
    pub fn parse(verb: &str, payload: &[u8]) -> Result<Request, Rejected> {
        let reject = |id: Option<RequestId>, error: CommandError| Rejected {
            id,
            verb: truncate(verb, 64),
            error,
        };
        let value: Value = if payload.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(payload)
                .map_err(|e| reject(None, CommandError::Malformed(e.to_string())))?
        };
        let Value::Object(mut map) = value else {
            return Err(reject(None, CommandError::NotAnObject(json_type(&value))));
        };
        let id = match map.remove("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= 128 => Some(RequestId::Text(s)),
            Some(Value::Number(n)) => Some(RequestId::Number(n)),
            Some(other) => {
                return Err(reject(
                    None,
                    CommandError::WrongType {
                        field: "id".into(),
                        expected: "a string of at most 128 characters or a number",
                        found: describe(&other),
                    },
                ))
            }
        };
        let camera = match map.remove("camera") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match check_stream_name(&s) {
                Ok(()) => Some(s),
                Err(reason) => {
                    let camera = truncate(&s, 40);
                    return Err(reject(id, CommandError::InvalidCamera { camera, reason }));
                }
            },
            Some(other) => {
                return Err(reject(
                    id,
                    CommandError::WrongType {
                        field: "camera".into(),
                        expected: "the name of a camera or microphone (a string)",
                        found: describe(&other),
                    },
                ))
            }
        };
        match parse_command(verb, map) {
            Ok(command) => Ok(Request {
                id,
                camera,
                command,
            }),
            Err(error) => Err(reject(id, error)),
        }
    }
}

/// `object` | `frame_id` [+ `detection` | `box`] | `detection` | nothing. (An object is
/// named by `object`, not `id`: every command's `id` is the request id its reply echoes.)
fn label_target(
    map: &mut Map<String, Value>,
    verb: &'static str,
) -> Result<LabelTarget, CommandError> {
    let conflict = |problem| CommandError::Conflict { verb, problem };
    let id = match map.remove("object") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Some(s),
        Some(other) => {
            return Err(CommandError::WrongType {
                field: "object".into(),
                expected: "an object id from `detections` or `objects` (a string)",
                found: describe(&other),
            })
        }
    };
    let frame_id = match map.remove("frame_id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(other) => {
            return Err(CommandError::WrongType {
                field: "frame_id".into(),
                expected: "a frame_id from `detections` (a whole number)",
                found: describe(&other),
            })
        }
    };
    let detection = opt_int(map, "detection", 0, 999, "a whole number from 0 to 999")?;
    let bbox = match map.remove("box") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a))
            if a.len() == 4 && a.iter().all(|v| v.as_f64().is_some_and(f64::is_finite)) =>
        {
            let v: Vec<f32> = a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect();
            if v[2] <= v[0] || v[3] <= v[1] {
                return Err(CommandError::OutOfRange {
                    field: "box".into(),
                    value: format!("{v:?}"),
                    allowed: "[x1, y1, x2, y2] with x2 > x1 and y2 > y1",
                });
            }
            Some([v[0], v[1], v[2], v[3]])
        }
        Some(other) => {
            return Err(CommandError::WrongType {
                field: "box".into(),
                expected: "[x1, y1, x2, y2] in the frame's pixels (4 numbers)",
                found: describe(&other),
            })
        }
    };
    Ok(match (id, frame_id, detection, bbox) {
        (Some(_), f, d, b) if f.is_some() || d.is_some() || b.is_some() => {
            return Err(conflict(
                "`object` names an object by itself: leave out `frame_id`, `detection` and `box`",
            ))
        }
        (Some(id), ..) => LabelTarget::Object(id),
        (None, _, Some(_), Some(_)) => return Err(conflict("give `detection` or `box`, not both")),
        (None, None, None, Some(_)) => {
            return Err(conflict(
                "`box` needs the `frame_id` of the frame it was drawn on",
            ))
        }
        (None, Some(frame_id), None, Some(bbox)) => LabelTarget::Box { frame_id, bbox },
        (None, frame_id, Some(index), None) => LabelTarget::Detection { frame_id, index },
        (None, Some(frame_id), None, None) => LabelTarget::Frame { frame_id },
        (None, None, None, None) => LabelTarget::Latest,
    })
}

fn parse_command(verb: &str, mut map: Map<String, Value>) -> Result<Command, CommandError> {
    let command = match verb {
        "label" => {
            if map.contains_key("image") {
                return Err(CommandError::ImageNotAccepted);
            }
            only(
                &map,
                "label",
                &["label", "detection", "frame_id", "box", "object"],
            )?;
            let label = required_label(&mut map, "label", r#"{"label": "cat"}"#)?;
            let target = label_target(&mut map, "label")?;
            Command::Label { label, target }
        }
        "false_positive" => {
            only(
                &map,
                "false_positive",
                &["detection", "frame_id", "box", "object"],
            )?;
            match label_target(&mut map, "false_positive")? {
                LabelTarget::Latest | LabelTarget::Frame { .. } => {
                    return Err(CommandError::Conflict {
                        verb: "false_positive",
                        problem: "say which object: `object` (an id from `detections` or \
                                  `objects`), or `detection` or `box` with `frame_id`",
                    })
                }
                target => Command::FalsePositive { target },
            }
        }
        "events" => {
            only(
                &map,
                "events",
                &["label", "sub_label", "after", "before", "limit"],
            )?;
            let text = |map: &mut Map<String, Value>, field: &str| match map.remove(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Ok(Some(s)),
                Some(other) => Err(CommandError::WrongType {
                    field: field.into(),
                    expected: "a non-empty string of at most 64 characters",
                    found: describe(&other),
                }),
            };
            let time = |map: &mut Map<String, Value>, field: &str| match map.remove(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f >= 0.0) => Ok(n.as_f64()),
                Some(other) => Err(CommandError::WrongType {
                    field: field.into(),
                    expected: "unix seconds (a number, 0 or more)",
                    found: describe(&other),
                }),
            };
            Command::Events(EventFilter {
                label: text(&mut map, "label")?,
                sub_label: text(&mut map, "sub_label")?,
                after: time(&mut map, "after")?,
                before: time(&mut map, "before")?,
                limit: opt_int(&mut map, "limit", 1, 1000, "a whole number from 1 to 1000")?
                    .unwrap_or(50),
            })
        }
        "train" => {
            only(&map, "train", &["force"])?;
            Command::Train {
                force: opt_bool(&mut map, "force")?.unwrap_or(false),
            }
        }
        "rollback" => {
            only(&map, "rollback", &["version"])?;
            let allowed = "a head version number (1 or more) or \"previous\"";
            let target = match map.remove("version") {
                None | Some(Value::Null) => {
                    return Err(CommandError::MissingField {
                        verb: "rollback",
                        field: "version",
                        example: r#"{"version": 3} or {"version": "previous"}"#,
                    })
                }
                Some(Value::String(s)) if s == "previous" => RollbackTarget::Previous,
                Some(v @ Value::Number(_)) => {
                    let n = int_in(&v, "version", 1, u64::from(u32::MAX), allowed)?;
                    RollbackTarget::Version(n)
                }
                Some(other) => {
                    return Err(CommandError::WrongType {
                        field: "version".into(),
                        expected: allowed,
                        found: describe(&other),
                    })
                }
            };
            Command::Rollback { target }
        }
        "pause" | "resume" | "snapshot" | "status" => {
            let (static_verb, command) = match verb {
                "pause" => ("pause", Command::Pause),
                "resume" => ("resume", Command::Resume),
                "snapshot" => ("snapshot", Command::Snapshot),
                _ => ("status", Command::Status),
            };
            only(&map, static_verb, &[])?;
            command
        }
        "set" => {
            let keys: Vec<&str> = SETTING_KEYS.iter().map(|(k, _)| *k).collect();
            only(&map, "set", &keys)?;
            if map.is_empty() {
                return Err(CommandError::NothingToSet(settings_help()));
            }
            Command::Set(Settings {
                score_threshold: opt_float(
                    &mut map,
                    "score_threshold",
                    0.0,
                    1.0,
                    SETTING_KEYS[0].1,
                )?,
                unknown_threshold: opt_float(
                    &mut map,
                    "unknown_threshold",
                    0.0,
                    1.0,
                    SETTING_KEYS[1].1,
                )?,
                consensus: opt_int(&mut map, "consensus", 1, 100, SETTING_KEYS[2].1)?,
                fps: opt_float(&mut map, "fps", 0.1, 60.0, SETTING_KEYS[3].1)?,
                auto_train: opt_bool(&mut map, "auto_train")?,
                detect: opt_bool(&mut map, "detect")?,
            })
        }
        "forget" => {
            only(&map, "forget", &["label"])?;
            Command::Forget {
                label: required_label(&mut map, "forget", r#"{"label": "cat"}"#)?,
            }
        }
        other => return Err(CommandError::UnknownVerb(truncate(other, 64))),
    };
    Ok(command)
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
