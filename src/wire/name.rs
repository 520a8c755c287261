//! The one rule for stream (camera and microphone) names.
//!
//! A stream's name is a topic level (`<base>/<camera>/state`) and a key of `state.cameras`, so
//! it must be a safe, short topic word and must not collide with the device-level topics that
//! live on the same level (`<base>/state`, `<base>/cmd/...`). The configuration, the command
//! parser and the readers that route `<base>/<camera>/...` topics all check it here.

/// Words of the device level that can never be a stream's name.
pub const RESERVED_STREAM_NAMES: &[&str] = &[
    "available",
    "state",
    "stats",
    "training",
    "reply",
    "cmd",
    "samples",
    "detections",
    "events",
    "snapshot",
];

/// Longest stream name, in characters.
pub const MAX_STREAM_NAME: usize = 32;

/// Checks a stream name; the error is the reason, to be put after the name in a message
/// (`invalid camera name "Front": only lower-case ...`).
pub fn check_stream_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty; use 1 to 32 characters of a-z, 0-9, `_` and `-`");
    }
    if name.chars().count() > MAX_STREAM_NAME {
        return Err("it is longer than 32 characters");
    }
    if name
        .chars()
        .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'))
    {
        return Err("only lower-case a-z, digits, `_` and `-` are allowed (write \"front\", not \"Front\" or \"front door\")");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("it must start with a letter or a digit");
    }
    if RESERVED_STREAM_NAMES.contains(&name) {
        return Err("it is a device-level topic word (available, state, stats, training, reply, cmd, samples, detections, events, snapshot); choose another name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in [
            "front",
            "0",
            "cam_2",
            "back-door",
            &"a".repeat(32),
            "states",
        ] {
            assert_eq!(check_stream_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            (&"a".repeat(33) as &str, "longer than 32"),
            ("Front", "lower-case"),
            ("front door", "lower-case"),
            ("a/b", "lower-case"),
            ("+", "lower-case"),
            ("-x", "start with"),
            ("_x", "start with"),
            ("state", "device-level"),
            ("cmd", "device-level"),
        ] {
            let e = check_stream_name(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
