//! Commands arriving on `<base>/cmd/<verb>` and the JSON published on `<base>/reply`.
//!
//! Parsing is strict (unknown fields are errors, numbers are range-checked) because a command
//! typed by hand in Home Assistant's MQTT panel with a misspelt key should be told so, not
//! silently ignored. Every failure carries the request's `id` when it could be read, so the
//! reply can be matched by the sender.
//!
//! Payloads: a JSON object (an empty payload counts as `{}`), with an optional `id` (string
//! or number) that is echoed in the reply:
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

/// The verbs, for error messages.
pub const VERBS: &[&str] = &[
    "label", "train", "rollback", "pause", "resume", "snapshot", "set", "forget", "status",
];

/// A command's `id`, echoed in the reply.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestId {
    /// `"id": "abc"`.
    Text(String),
    /// `"id": 42`.
    Number(serde_json::Number),
}

impl RequestId {
    fn to_value(&self) -> Value {
        match self {
            RequestId::Text(s) => Value::String(s.clone()),
            RequestId::Number(n) => Value::Number(n.clone()),
        }
    }
}

/// A sample label: 1 to 64 characters of `[a-z0-9_-]`, starting with a letter or digit, and not
/// `unknown` (which the head reports for what it does not recognise). The same rule holds for
/// the `<label>` of `samples/<label>`, where a label is also a topic level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(String);

impl Label {
    /// The label reserved for "not one of the user's classes".
    pub const UNKNOWN: &'static str = "unknown";

    /// Checks a label; the error says what is wrong and what is allowed.
    pub fn parse(label: &str) -> Result<Label, CommandError> {
        let bad = |reason: &'static str| CommandError::InvalidLabel {
            label: truncate(label, 80),
            reason,
        };
        if label.is_empty() {
            return Err(bad(
                "it is empty; use 1 to 64 characters of a-z, 0-9, `_` and `-`",
            ));
        }
        if label.chars().count() > 64 {
            return Err(bad("it is longer than 64 characters"));
        }
        if label
            .chars()
            .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'))
        {
            return Err(bad(
                "only lower-case a-z, digits, `_` and `-` are allowed (write \"cat\", not \"Cat\" or \"a cat\")",
            ));
        }
        if !label.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(bad("it must start with a letter or a digit"));
        }
        if label == Label::UNKNOWN {
            return Err(bad(
                "`unknown` is reserved for what the model does not recognise; choose another name",
            ));
        }
        Ok(Label(label.to_owned()))
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
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
}

/// The keys `set` accepts and their allowed values, for parsing and for error messages.
const SETTING_KEYS: &[(&str, &str)] = &[
    ("score_threshold", "a number from 0 to 1"),
    ("unknown_threshold", "a number from 0 to 1"),
    ("consensus", "a whole number from 1 to 100 (frames)"),
    ("fps", "a number from 0.1 to 60"),
    ("auto_train", "true or false"),
];

/// A parsed command.
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

/// Why a command was refused. The messages are sent back in `reply`, to a person typing in
/// Home Assistant: they name the field and say what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// Not JSON at all.
    #[error(
        "the payload is not valid JSON ({0}); send a JSON object such as {{}} or {{\"id\": \"1\"}}"
    )]
    Malformed(String),
    /// JSON, but not an object.
    #[error(
        "the payload must be a JSON object, not {0}; send for example {{}} or {{\"id\": \"1\"}}"
    )]
    NotAnObject(&'static str),
    /// `cmd/<verb>` with a verb adaptd does not know.
    #[error("unknown command {0:?}; the commands are: label, train, rollback, pause, resume, snapshot, set, forget, status")]
    UnknownVerb(String),
    /// A field of the wrong JSON type.
    #[error("`{field}` must be {expected}, not {found}")]
    WrongType {
        /// The field.
        field: String,
        /// What it must be.
        expected: &'static str,
        /// What it was.
        found: String,
    },
    /// A required field is absent.
    #[error("`{verb}` needs `{field}`; for example {example}")]
    MissingField {
        /// The command.
        verb: &'static str,
        /// The missing field.
        field: &'static str,
        /// A complete example payload.
        example: &'static str,
    },
    /// A number outside its range.
    #[error("`{field}` = {value} is out of range: it must be {allowed}")]
    OutOfRange {
        /// The field.
        field: String,
        /// The value given.
        value: String,
        /// The allowed values.
        allowed: &'static str,
    },
    /// A field the command does not have (often a typo).
    #[error("`{verb}` has no field `{field}`; its fields are: {allowed}")]
    UnknownField {
        /// The command.
        verb: &'static str,
        /// The unexpected field.
        field: String,
        /// The fields it has.
        allowed: String,
    },
    /// A label that breaks the label rules.
    #[error("invalid label {label:?}: {reason}")]
    InvalidLabel {
        /// The label given (shortened when long).
        label: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `set` without any setting.
    #[error("`set` needs at least one setting; the settings are: {0}")]
    NothingToSet(String),
    /// `label` with image bytes in the JSON.
    #[error("`label` takes no `image`: it labels the current frame; to send an image, publish its raw bytes to <base>/samples/<label>")]
    ImageNotAccepted,
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
            return Err(reject(None, CommandError::NotAnObject(type_name(&value))));
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
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 64 => Some(s),
            Some(other) => {
                return Err(reject(
                    id,
                    CommandError::WrongType {
                        field: "camera".into(),
                        expected: "the name of a camera or microphone (a non-empty string)",
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

fn settings_help() -> String {
    SETTING_KEYS
        .iter()
        .map(|(k, allowed)| format!("{k} ({allowed})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rejects fields outside `allowed` (the `id` was removed before).
fn only(
    map: &Map<String, Value>,
    verb: &'static str,
    allowed: &[&str],
) -> Result<(), CommandError> {
    if let Some(field) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        let allowed = if allowed.is_empty() {
            "none besides `id`".to_owned()
        } else if verb == "set" {
            settings_help()
        } else {
            allowed.join(", ")
        };
        return Err(CommandError::UnknownField {
            verb,
            field: truncate(field, 64),
            allowed,
        });
    }
    Ok(())
}

fn required_label(
    map: &mut Map<String, Value>,
    verb: &'static str,
    example: &'static str,
) -> Result<Label, CommandError> {
    match map.remove("label") {
        None | Some(Value::Null) => Err(CommandError::MissingField {
            verb,
            field: "label",
            example,
        }),
        Some(Value::String(s)) => Label::parse(&s),
        Some(other) => Err(CommandError::WrongType {
            field: "label".into(),
            expected: "a string",
            found: describe(&other),
        }),
    }
}

fn opt_bool(map: &mut Map<String, Value>, field: &str) -> Result<Option<bool>, CommandError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(other) => Err(CommandError::WrongType {
            field: field.into(),
            expected: "true or false",
            found: describe(&other),
        }),
    }
}

fn opt_int(
    map: &mut Map<String, Value>,
    field: &str,
    min: u64,
    max: u64,
    allowed: &'static str,
) -> Result<Option<u32>, CommandError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => int_in(&v, field, min, max, allowed).map(Some),
    }
}

/// A whole number in `min..=max` (which must fit in u32).
fn int_in(
    v: &Value,
    field: &str,
    min: u64,
    max: u64,
    allowed: &'static str,
) -> Result<u32, CommandError> {
    let Value::Number(n) = v else {
        return Err(CommandError::WrongType {
            field: field.into(),
            expected: allowed,
            found: describe(v),
        });
    };
    let out_of_range = || CommandError::OutOfRange {
        field: field.into(),
        value: n.to_string(),
        allowed,
    };
    if n.is_f64() {
        // 2.0 is tolerated (JavaScript senders), 2.5 is not.
        let f = n.as_f64().unwrap_or(f64::NAN);
        if f.fract() != 0.0 {
            return Err(CommandError::WrongType {
                field: field.into(),
                expected: allowed,
                found: format!("the fraction {n}"),
            });
        }
        if f < min as f64 || f > max as f64 {
            return Err(out_of_range());
        }
        return u32::try_from(f as u64).map_err(|_| out_of_range());
    }
    match n.as_u64() {
        Some(x) if (min..=max).contains(&x) => u32::try_from(x).map_err(|_| out_of_range()),
        _ => Err(out_of_range()),
    }
}

fn opt_float(
    map: &mut Map<String, Value>,
    field: &str,
    min: f64,
    max: f64,
    allowed: &'static str,
) -> Result<Option<f32>, CommandError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if (min..=max).contains(&f) => Ok(Some(f as f32)),
            _ => Err(CommandError::OutOfRange {
                field: field.into(),
                value: n.to_string(),
                allowed,
            }),
        },
        Some(other) => Err(CommandError::WrongType {
            field: field.into(),
            expected: allowed,
            found: describe(&other),
        }),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// "a string ("abc")": the type and a short rendering of the value.
fn describe(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) | Value::Null => type_name(v).to_owned(),
        _ => format!("{} ({})", type_name(v), truncate(&v.to_string(), 40)),
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}

/// The JSON published on `<base>/reply` for every command:
/// `{"id": <id or null>, "cmd": <verb>, "ok": true, "result": ...}` or
/// `{"id": ..., "cmd": ..., "ok": false, "error": "..."}`. `cmd` is there so a reply can be
/// matched even when the sender gave no `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request's id.
    pub id: Option<RequestId>,
    /// The verb, when known.
    pub cmd: Option<String>,
    /// `Ok(result)` or `Err(message)`.
    pub outcome: Result<Value, String>,
}

impl Reply {
    /// A successful reply; `result` is `null` when there is nothing to say.
    pub fn ok(id: Option<RequestId>, verb: &str, result: Value) -> Reply {
        Reply {
            id,
            cmd: Some(verb.to_owned()),
            outcome: Ok(result),
        }
    }

    /// A failed reply.
    pub fn error(id: Option<RequestId>, verb: Option<&str>, message: impl Into<String>) -> Reply {
        Reply {
            id,
            cmd: verb.map(str::to_owned),
            outcome: Err(message.into()),
        }
    }

    /// The reply as a JSON value.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "id".into(),
            self.id.as_ref().map_or(Value::Null, RequestId::to_value),
        );
        if let Some(cmd) = &self.cmd {
            m.insert("cmd".into(), Value::String(cmd.clone()));
        }
        match &self.outcome {
            Ok(result) => {
                m.insert("ok".into(), Value::Bool(true));
                m.insert("result".into(), result.clone());
            }
            Err(message) => {
                m.insert("ok".into(), Value::Bool(false));
                m.insert("error".into(), Value::String(message.clone()));
            }
        }
        Value::Object(m)
    }

    /// The reply as the bytes to publish.
    pub fn to_json(&self) -> Vec<u8> {
        self.to_value().to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(verb: &str, payload: &str) -> Request {
        match Request::parse(verb, payload.as_bytes()) {
            Ok(r) => r,
            Err(e) => panic!("{verb} {payload}: {}", e.error),
        }
    }

    fn err(verb: &str, payload: &str) -> Rejected {
        match Request::parse(verb, payload.as_bytes()) {
            Ok(r) => panic!("{verb} {payload} should fail, got {r:?}"),
            Err(e) => e,
        }
    }

    fn label(s: &str) -> Label {
        Label::parse(s).expect("valid label")
    }

    #[test]
    fn every_verb_parses() {
        assert_eq!(
            ok("label", r#"{"label": "cat"}"#).command,
            Command::Label {
                label: label("cat"),
                detection: None
            }
        );
        assert_eq!(
            ok("label", r#"{"label": "dog-2", "detection": 3, "id": "a"}"#),
            Request {
                id: Some(RequestId::Text("a".into())),
                camera: None,
                command: Command::Label {
                    label: label("dog-2"),
                    detection: Some(3)
                },
            }
        );
        assert_eq!(ok("train", "").command, Command::Train { force: false });
        assert_eq!(ok("train", "{}").command, Command::Train { force: false });
        assert_eq!(
            ok("train", r#"{"force": true}"#).command,
            Command::Train { force: true }
        );
        assert_eq!(
            ok("rollback", r#"{"version": 3}"#).command,
            Command::Rollback {
                target: RollbackTarget::Version(3)
            }
        );
        assert_eq!(
            ok("rollback", r#"{"version": "previous"}"#).command,
            Command::Rollback {
                target: RollbackTarget::Previous
            }
        );
        assert_eq!(ok("pause", "").command, Command::Pause);
        assert_eq!(ok("resume", " \n").command, Command::Resume);
        assert_eq!(ok("snapshot", "{}").command, Command::Snapshot);
        assert_eq!(
            ok("status", r#"{"id": 7}"#).id,
            Some(RequestId::Number(7.into()))
        );
        assert_eq!(
            ok("set", r#"{"score_threshold": 0.4, "consensus": 3, "fps": 5, "auto_train": false, "unknown_threshold": 1}"#)
                .command,
            Command::Set(Settings {
                score_threshold: Some(0.4),
                unknown_threshold: Some(1.0),
                consensus: Some(3),
                fps: Some(5.0),
                auto_train: Some(false),
            })
        );
        assert_eq!(
            ok("forget", r#"{"label": "cat"}"#).command,
            Command::Forget {
                label: label("cat")
            }
        );
        // Verbs whose fields are all optional accept an empty payload.
        for verb in VERBS {
            let needs_fields = ["label", "rollback", "set", "forget"].contains(verb);
            assert_eq!(Request::parse(verb, b"").is_ok(), !needs_fields, "{verb}");
        }
    }

    #[test]
    fn verb_names_round_trip() {
        for verb in ["pause", "resume", "snapshot", "status", "train"] {
            assert_eq!(ok(verb, "").command.verb(), verb);
        }
    }

    #[test]
    fn malformed_json() {
        let e = err("train", "{force: true");
        assert!(matches!(e.error, CommandError::Malformed(_)));
        assert!(
            e.error.to_string().contains("not valid JSON"),
            "{}",
            e.error
        );
        assert_eq!(e.verb, "train");
        assert!(matches!(
            err("train", "\u{0}\u{1}").error,
            CommandError::Malformed(_)
        ));
        let e = Request::parse("train", &[0xff, 0xfe]).expect_err("binary");
        assert!(matches!(e.error, CommandError::Malformed(_)));
    }

    #[test]
    fn not_an_object() {
        for (payload, name) in [
            ("[1]", "an array"),
            ("\"x\"", "a string"),
            ("3", "a number"),
            ("null", "null"),
        ] {
            let e = err("status", payload);
            assert_eq!(e.error, CommandError::NotAnObject(name), "{payload}");
        }
    }

    #[test]
    fn unknown_verb_keeps_the_id() {
        let e = err("explode", r#"{"id": "x1"}"#);
        assert_eq!(e.error, CommandError::UnknownVerb("explode".into()));
        assert_eq!(e.id, Some(RequestId::Text("x1".into())));
        assert!(e.error.to_string().contains("label, train, rollback"));
    }

    #[test]
    fn wrong_types() {
        let cases = [
            ("train", r#"{"force": "yes"}"#, "force"),
            ("label", r#"{"label": 5}"#, "label"),
            (
                "label",
                r#"{"label": "cat", "detection": "1"}"#,
                "detection",
            ),
            (
                "label",
                r#"{"label": "cat", "detection": 1.5}"#,
                "detection",
            ),
            ("rollback", r#"{"version": "latest"}"#, "version"),
            ("rollback", r#"{"version": [1]}"#, "version"),
            ("set", r#"{"fps": "fast"}"#, "fps"),
            ("set", r#"{"auto_train": 1}"#, "auto_train"),
            ("status", r#"{"id": {"a": 1}}"#, "id"),
            ("status", r#"{"id": true}"#, "id"),
        ];
        for (verb, payload, field) in cases {
            match err(verb, payload).error {
                CommandError::WrongType { field: f, .. } => {
                    assert_eq!(f, field, "{verb} {payload}")
                }
                other => panic!("{verb} {payload}: expected WrongType, got {other:?}"),
            }
        }
        let msg = err("train", r#"{"force": "yes"}"#).error.to_string();
        assert_eq!(msg, "`force` must be true or false, not a string (\"yes\")");
    }

    #[test]
    fn missing_fields() {
        for (verb, payload, field) in [
            ("label", "{}", "label"),
            ("label", r#"{"detection": 1}"#, "label"),
            ("forget", "", "label"),
            ("rollback", "{}", "version"),
            ("rollback", r#"{"version": null}"#, "version"),
        ] {
            match err(verb, payload).error {
                CommandError::MissingField { field: f, .. } => assert_eq!(f, field),
                other => panic!("{verb} {payload}: expected MissingField, got {other:?}"),
            }
        }
        assert!(err("rollback", "{}")
            .error
            .to_string()
            .contains(r#"{"version": "previous"}"#));
        assert!(matches!(
            err("set", "{}").error,
            CommandError::NothingToSet(_)
        ));
    }

    #[test]
    fn out_of_range() {
        for (verb, payload, field) in [
            ("set", r#"{"score_threshold": 1.5}"#, "score_threshold"),
            ("set", r#"{"unknown_threshold": -0.1}"#, "unknown_threshold"),
            ("set", r#"{"consensus": 0}"#, "consensus"),
            ("set", r#"{"consensus": 101}"#, "consensus"),
            ("set", r#"{"consensus": -1}"#, "consensus"),
            ("set", r#"{"fps": 0}"#, "fps"),
            ("set", r#"{"fps": 61}"#, "fps"),
            ("rollback", r#"{"version": 0}"#, "version"),
            ("rollback", r#"{"version": 4294967296}"#, "version"),
            ("rollback", r#"{"version": 1e30}"#, "version"),
            (
                "label",
                r#"{"label": "cat", "detection": 1000}"#,
                "detection",
            ),
            ("label", r#"{"label": "cat", "detection": -1}"#, "detection"),
        ] {
            match err(verb, payload).error {
                CommandError::OutOfRange { field: f, .. } => assert_eq!(f, field, "{payload}"),
                other => panic!("{verb} {payload}: expected OutOfRange, got {other:?}"),
            }
        }
        assert_eq!(
            err("set", r#"{"consensus": 0}"#).error.to_string(),
            "`consensus` = 0 is out of range: it must be a whole number from 1 to 100 (frames)"
        );
        // Whole numbers written as floats are fine.
        assert_eq!(
            ok("rollback", r#"{"version": 2.0}"#).command,
            Command::Rollback {
                target: RollbackTarget::Version(2)
            }
        );
    }

    #[test]
    fn unknown_fields() {
        let e = err("set", r#"{"treshold": 0.5}"#).error;
        assert!(matches!(&e, CommandError::UnknownField { field, .. } if field == "treshold"));
        assert!(
            e.to_string()
                .contains("score_threshold (a number from 0 to 1)"),
            "{e}"
        );
        let e = err("pause", r#"{"now": true}"#).error;
        assert!(e.to_string().contains("none besides `id`"), "{e}");
        let e = err("train", r#"{"forse": true}"#).error;
        assert!(e.to_string().contains("its fields are: force"), "{e}");
        assert_eq!(
            err("label", r#"{"label": "cat", "image": "..."}"#).error,
            CommandError::ImageNotAccepted
        );
    }

    #[test]
    fn labels() {
        for good in ["cat", "a", "0", "dog_2", "x-y", &"a".repeat(64), "unknown2"] {
            assert!(Label::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Cat",
            "a cat",
            "-cat",
            "_cat",
            "ü",
            "a/b",
            "a+b",
            "#",
            "unknown",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(Label::parse(bad), Err(CommandError::InvalidLabel { .. })),
                "{bad}"
            );
        }
        let e = err("label", r#"{"label": "unknown", "id": 1}"#);
        assert!(e.error.to_string().contains("reserved"), "{}", e.error);
        assert_eq!(e.id, Some(RequestId::Number(1.into())));
        assert!(matches!(
            err("forget", r#"{"label": "Big Cat"}"#).error,
            CommandError::InvalidLabel { .. }
        ));
    }

    #[test]
    fn reply_json() {
        let r = Reply::ok(
            Some(RequestId::Text("a".into())),
            "train",
            json!({"version": 4}),
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&r.to_json()).expect("json"),
            json!({"id": "a", "cmd": "train", "ok": true, "result": {"version": 4}})
        );
        let rejected = err("set", r#"{"id": 9, "fps": 100}"#);
        let v: Value = serde_json::from_slice(&rejected.reply().to_json()).expect("json");
        assert_eq!(v["id"], json!(9));
        assert_eq!(v["cmd"], json!("set"));
        assert_eq!(v["ok"], json!(false));
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|s| s.contains("`fps` = 100")),
            "{v}"
        );
        assert!(v.get("result").is_none());
        let v = Reply::error(None, None, "too big").to_value();
        assert_eq!(v, json!({"id": null, "ok": false, "error": "too big"}));
        // A malformed payload has no readable id: the reply says null.
        let v = err("train", "{").reply().to_value();
        assert_eq!(v["id"], Value::Null);
    }

    #[test]
    fn long_garbage_is_shortened() {
        let verb = "v".repeat(500);
        let e = err(&verb, "{}");
        assert!(e.verb.chars().count() <= 65);
        assert!(e.error.to_string().len() < 300);
    }
}
