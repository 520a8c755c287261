//! Round-trip helpers for the wire types' tests.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// `value` as the JSON a reader receives. Through text, not `serde_json::to_value`, because
/// that widens an `f32` 0.81 to 0.8100000023841858 while the text on the wire says 0.81.
pub fn wire_json<T: Serialize>(value: &T) -> Value {
    let text = serde_json::to_string(value).expect("wire types serialise");
    serde_json::from_str(&text).expect("serialised JSON parses")
}

/// Asserts that `value` is written exactly as `expected`, and read back from it unchanged.
pub fn round_trip<T>(value: &T, expected: Value)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(wire_json(value), expected, "written");
    let back: T = serde_json::from_value(expected).expect("reads back");
    assert_eq!(&back, value, "read back");
}
