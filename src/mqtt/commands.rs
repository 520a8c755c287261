//! Commands arriving on `<base>/cmd/<verb>` and the JSON published on `<base>/reply`.
//!
//! The command types, their strict parse and the reply now live in [`crate::wire`] (the one
//! definition of the MQTT contract, shared with `adaptd watch`); they are re-exported here so
//! the code that names `mqtt::commands::*` keeps compiling. The label rule stays here.

pub use crate::wire::command::{
    Command, Rejected, Request, RequestId, RollbackTarget, Settings, VERBS,
};
pub use crate::wire::{CommandError, Reply};

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

/// Shortens a label for its error message.
fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}
