//! Topic names and topic filters, MQTT 3.1.1 §4.7.
//!
//! Written here rather than taken from `rumqttc::matches`: that function never matches a
//! topic starting with `$` (not even against `$SYS/#`) and slices the topic at byte 1, which
//! panics on a topic whose first character is multi-byte. A broker must do neither.

/// Whether `topic` may be used as the topic name of a PUBLISH (or of a last will): at least
/// one character, no wildcard, no U+0000 (§4.7.3, §1.5.3). The codec already guarantees
/// valid UTF-8 and at most 65,535 bytes.
pub(crate) fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Whether `filter` is a valid topic filter (§4.7.1): non-empty, no U+0000, `+` only as a
/// whole level, `#` only as the whole last level.
pub(crate) fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !is_last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Whether the (valid) topic name `topic` matches the (valid) topic filter `filter`.
///
/// `#` also matches the parent level (`a/#` matches `a`, §4.7.1.2); `+` matches exactly one
/// level, which may be empty (`a/+` matches `a/` but not `a`); a filter starting with a
/// wildcard does not match a topic starting with `$` (§4.7.2), so `#` subscribers do not see
/// `$SYS/...`, while `$SYS/#` does.
pub(crate) fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("a"));
        assert!(valid_topic_name("/"));
        assert!(valid_topic_name("a//b"));
        assert!(valid_topic_name("$SYS/broker"));
        assert!(valid_topic_name("é/ü"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(!valid_topic_name("a+b"));
        assert!(!valid_topic_name("a\0b"));
    }

    #[test]
    fn filters() {
        for ok in [
            "#", "+", "a", "a/#", "a/+", "+/+", "+/#", "/", "/#", "a//b", "$SYS/#", "a/+/c/#", "é",
        ] {
            assert!(valid_filter(ok), "{ok:?} should be valid");
        }
        for bad in [
            "", "a#", "a/#/b", "#/a", "a/b#", "a+", "a/+b", "++", "##", "a/\0", "a/#/",
        ] {
            assert!(!valid_filter(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn exact_and_single_level() {
        assert!(matches("a/b/c", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(matches("+/+", "a/b"));
        assert!(!matches("+", "a/b"));
        assert!(matches("a/+", "a/"));
        assert!(!matches("a/+", "a"));
        assert!(matches("+/+", "/"));
        assert!(!matches("+", "/"));
        assert!(matches("/+", "/a"));
        assert!(!matches("A", "a"));
    }

    #[test]
    fn multi_level() {
        assert!(matches("#", "a"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("#", "/"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b"));
        assert!(matches("a/#", "a/b/c"));
        assert!(!matches("a/#", "ab"));
        assert!(!matches("a/#", "b/a"));
        assert!(matches("+/#", "a"));
        assert!(matches("a/+/#", "a/b"));
        assert!(!matches("a/+/#", "a"));
    }

    #[test]
    fn dollar_topics() {
        assert!(!matches("#", "$SYS/uptime"));
        assert!(!matches("+/uptime", "$SYS/uptime"));
        assert!(!matches("+/#", "$SYS"));
        assert!(matches("$SYS/#", "$SYS/uptime"));
        assert!(matches("$SYS/+", "$SYS/uptime"));
        assert!(matches("$SYS/#", "$SYS"));
        // Only the first character counts.
        assert!(matches("#", "a/$SYS"));
        assert!(matches("a/+", "a/$x"));
    }

    #[test]
    fn non_ascii_does_not_panic() {
        assert!(matches("é/+", "é/ü"));
        assert!(matches("#", "é"));
        assert!(!matches("é", "e"));
    }
}
