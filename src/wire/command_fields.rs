//! Reading one field of a command payload, each with the message that names the field and
//! what it allows.

use serde_json::{Map, Value};

use super::command_error::CommandError;
use super::lenient::json_type;
use crate::label::Label;

/// The keys `set` accepts and their allowed values, for parsing and for error messages.
pub(super) const SETTING_KEYS: &[(&str, &str)] = &[
    ("score_threshold", "a number from 0 to 1"),
    ("unknown_threshold", "a number from 0 to 1"),
    ("consensus", "a whole number from 1 to 100 (frames)"),
    ("fps", "a number from 0.1 to 60"),
    ("auto_train", "true or false"),
    (
        "detect",
        "true (analyse frames) or false (pause, as `pause`)",
    ),
];

pub(super) fn settings_help() -> String {
    SETTING_KEYS
        .iter()
        .map(|(k, allowed)| format!("{k} ({allowed})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Label::parse`'s error as a [`CommandError`]. Generic on purpose: the label rule is moving
/// to its own module with its own error type (and a `From` into `CommandError`); this reads
/// the same with either.
pub(super) fn label_error<E: Into<CommandError>>(e: E) -> CommandError {
    e.into()
}

/// Rejects fields outside `allowed` (`id` and `camera`, which every command takes, were
/// removed before).
pub(super) fn only(
    map: &Map<String, Value>,
    verb: &'static str,
    allowed: &[&str],
) -> Result<(), CommandError> {
    if let Some(field) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        let allowed = if allowed.is_empty() {
            "none besides `id` and `camera`".to_owned()
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

pub(super) fn required_label(
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
        Some(Value::String(s)) => Label::parse(&s).map_err(label_error),
        Some(other) => Err(CommandError::WrongType {
            field: "label".into(),
            expected: "a string",
            found: describe(&other),
        }),
    }
}

pub(super) fn opt_bool(
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<bool>, CommandError> {
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

pub(super) fn opt_int(
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
pub(super) fn int_in(
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

pub(super) fn opt_float(
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

/// "a string ("abc")": the type and a short rendering of the value.
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) | Value::Null => json_type(v).to_owned(),
        _ => format!("{} ({})", json_type(v), truncate(&v.to_string(), 40)),
    }
}

pub(super) fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}
