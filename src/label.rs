//! The one label rule, for samples, commands, the store and the head.
//!
//! A leaf module: the MQTT contract ([`crate::wire`]), the sample store and the trainer all
//! check labels here, so a label accepted on one path is accepted on every path.

/// A label that breaks the rule; the text says what is wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label {label:?}: {reason}")]
pub struct LabelError {
    /// The label given (shortened when long).
    pub label: String,
    /// What is wrong, and the label to write instead where one is obvious.
    pub reason: String,
}

/// A sample label: 1 to 64 characters of `[a-z0-9_-]`, starting with a letter or digit, and not
/// `unknown` (which the head reports for what it does not recognise). The same rule holds for
/// the `<label>` of `samples/<label>`, where a label is also a topic level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(String);

/// The label the head reports for what is not one of the user's classes: stored with a
/// sample (what the model said) but never a class to train.
pub const UNKNOWN: &str = "unknown";

impl Label {
    /// The label reserved for "not one of the user's classes".
    pub const UNKNOWN: &'static str = UNKNOWN;

    /// Checks a label a user gives (a sample's, a command's); the error says what is wrong
    /// and what is allowed.
    pub fn parse(label: &str) -> Result<Label, LabelError> {
        Label::check_syntax(label)?;
        if Label::is_reserved(label) {
            return Err(LabelError {
                label: truncate(label, 80),
                reason: "`unknown` is reserved for what the model does not recognise; choose another name"
                    .to_owned(),
            });
        }
        Ok(Label(label.to_owned()))
    }

    /// The rule without the reservation: what may be stored (a head's own `unknown`
    /// prediction included). Labels are topic levels and file names, hence the alphabet.
    pub fn check_syntax(label: &str) -> Result<(), LabelError> {
        let bad = |reason: &str| LabelError {
            label: truncate(label, 80),
            reason: reason.to_owned(),
        };
        if label.is_empty() {
            return Err(bad(
                "it is empty; use 1 to 64 characters of a-z, 0-9, `_` and `-`",
            ));
        }
        if label.chars().count() > 64 {
            return Err(bad("it is longer than 64 characters"));
        }
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if !label.chars().all(allowed) {
            // A label that is only wrong in case ("Cat") gets the exact fix, the most common
            // slip when labels come from folder names or a phone keyboard.
            let lower = label.to_ascii_lowercase();
            if lower.chars().all(allowed) && lower.starts_with(|c: char| c.is_ascii_alphanumeric())
            {
                return Err(bad(&format!(
                    "upper-case letters are not allowed (use {:?}); only lower-case a-z, digits, `_` and `-`",
                    truncate(&lower, 80)
                )));
            }
            return Err(bad(
                "only lower-case a-z, digits, `_` and `-` are allowed (write \"cat\", not \"Cat\" or \"a cat\")",
            ));
        }
        if !label.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(bad("it must start with a letter or a digit"));
        }
        Ok(())
    }

    /// `unknown`: storable, but not a class anyone can train.
    pub fn is_reserved(label: &str) -> bool {
        label == UNKNOWN
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

/// A name from elsewhere (a detector class: COCO has `traffic light` and `cell phone`) made
/// into a storable label: lowercase, every other character `_`, at most 64 characters.
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '_',
        })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_accepts_topic_safe_labels_and_reserves_unknown() {
        for ok in ["cat", "a", "9lives", "red_car", "dog-2", &"x".repeat(64)] {
            assert_eq!(Label::parse(ok).map(|l| l.to_string()), Ok(ok.to_owned()));
        }
        assert!(Label::check_syntax(UNKNOWN).is_ok());
        let e = Label::parse(UNKNOWN).unwrap_err();
        assert!(e.reason.contains("reserved"), "{e}");
    }

    #[test]
    fn a_label_wrong_only_in_case_gets_the_exact_fix() {
        let e = Label::parse("Cat").unwrap_err();
        assert!(e.to_string().contains("use \"cat\""), "{e}");
        let e = Label::parse("Red_Car").unwrap_err();
        assert!(e.to_string().contains("use \"red_car\""), "{e}");
        // Not fixable by case alone: the general rule, no misleading suggestion.
        for bad in ["a cat", "a/b", "é", "Cat!"] {
            let e = Label::parse(bad).unwrap_err();
            assert!(e.to_string().contains("lower-case"), "{e}");
            assert!(!e.to_string().contains("(use "), "{e}");
        }
    }

    #[test]
    fn empty_long_and_badly_started_labels_are_named() {
        assert!(Label::parse("").unwrap_err().reason.contains("empty"));
        let long = "a".repeat(65);
        assert!(Label::parse(&long).unwrap_err().reason.contains("64"));
        for bad in ["-x", "_x"] {
            assert!(
                Label::parse(bad).unwrap_err().reason.contains("start"),
                "{bad}"
            );
        }
        let e = Label::parse(&"Z".repeat(200)).unwrap_err();
        assert!(e.label.chars().count() <= 81, "shortened: {}", e.label);
    }
}
