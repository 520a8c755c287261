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
//! | `set` | one or more of the [`Settings`] keys |
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
    "label", "train", "rollback", "pause", "resume", "snapshot", "set", "forget", "status",
];

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
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Store the current frame (or one detection of it) as a sample of `label`.
    Label {
        /// The label to store the sample under.
        label: Label,
        /// Index into the current frame's detections; `None` labels the whole frame.
        detection: Option<u32>,
    },
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

fn parse_command(verb: &str, mut map: Map<String, Value>) -> Result<Command, CommandError> {
    let command = match verb {
        "label" => {
            if map.contains_key("image") {
                return Err(CommandError::ImageNotAccepted);
            }
            only(&map, "label", &["label", "detection"])?;
            let label = required_label(&mut map, "label", r#"{"label": "cat"}"#)?;
            let detection = opt_int(
                &mut map,
                "detection",
                0,
                999,
                "a whole number from 0 to 999",
            )?;
            Command::Label { label, detection }
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
