//! Why a command was refused, in words for the person who sent it.

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
    #[error("unknown command {0:?}; the commands are: label, train, rollback, pause, resume, snapshot, set, forget, status, events")]
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
        reason: String,
    },
    /// `set` without any setting.
    #[error("`set` needs at least one setting; the settings are: {0}")]
    NothingToSet(String),
    /// A `camera` that breaks the stream-name rule ([`super::check_stream_name`]).
    #[error("invalid camera name {camera:?}: {reason}")]
    InvalidCamera {
        /// The name given (shortened when long).
        camera: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `label` with image bytes in the JSON.
    #[error("`label` takes no `image`: it labels the current frame; to send an image, publish its raw bytes to <base>/samples/<label>")]
    ImageNotAccepted,
    /// Fields of a command that cannot go together (or one that needs another).
    #[error("`{verb}`: {problem}")]
    Conflict {
        verb: &'static str,
        problem: &'static str,
    },
}

impl From<crate::label::LabelError> for CommandError {
    fn from(e: crate::label::LabelError) -> CommandError {
        CommandError::InvalidLabel {
            label: e.label,
            reason: e.reason,
        }
    }
}
