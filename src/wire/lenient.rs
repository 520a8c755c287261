//! Reading payloads written by another version of adaptd.
//!
//! The watch (and later a web page) is often older or newer than the daemon it reads. A newer
//! daemon may add fields (ignored: no payload type denies unknown fields), drop some (they take
//! their default: every payload type is `#[serde(default)]`), or change a field's type; one
//! odd field must not make the whole message unreadable, so fields are read through
//! [`lenient`], which treats a value of an unexpected type as missing. Only a payload that is
//! not a JSON object at all is refused, by [`decode`], with a message a person can act on.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::Value;

/// `deserialize_with` for a field that a wrongly typed value must not fail: such a value reads
/// as the type's default, exactly as if the field were missing. Use it with `#[serde(default)]`
/// on the field or the container (a missing field never reaches this function).
pub fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = Value::deserialize(deserializer)?;
    Ok(T::deserialize(value).unwrap_or_default())
}

/// `deserialize_with` for a list read element by element: a list that is not a list reads as
/// empty, and one bad element reads as the element type's default instead of losing the
/// others (a detector's frame with one odd item still shows the rest).
pub fn lenient_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let Value::Array(items) = Value::deserialize(deserializer)? else {
        return Ok(Vec::new());
    };
    Ok(items
        .into_iter()
        .map(|v| T::deserialize(v).unwrap_or_default())
        .collect())
}

/// `deserialize_with` for a map read entry by entry: a map that is not an object reads as
/// empty, and an entry whose value cannot be read is left out (unlike [`lenient_vec`], where
/// positions matter: `detection` indexes the items, so a bad item keeps its place).
pub fn lenient_map<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: From<String> + Ord,
    V: DeserializeOwned,
{
    let Value::Object(entries) = Value::deserialize(deserializer)? else {
        return Ok(BTreeMap::new());
    };
    Ok(entries
        .into_iter()
        .filter_map(|(k, v)| V::deserialize(v).ok().map(|v| (K::from(k), v)))
        .collect())
}

/// Why a payload could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Nothing but whitespace.
    #[error("empty payload (expected a JSON object)")]
    Empty,
    /// Not JSON.
    #[error("not valid JSON ({0})")]
    Malformed(String),
    /// JSON, but not an object.
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// An object that lacks what identifies its shape (e.g. `training` without `status`).
    #[error("{0}")]
    Shape(String),
}

/// Reads one payload as `T`: the object is required, its fields are read leniently by `T`.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !value.is_object() {
        return Err(DecodeError::NotAnObject(json_type(&value)));
    }
    T::deserialize(value).map_err(|e| DecodeError::Shape(e.to_string()))
}

/// "a string", "an array"...: for messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(default)]
    struct Probe {
        #[serde(deserialize_with = "lenient")]
        n: u32,
        #[serde(deserialize_with = "lenient")]
        name: Option<String>,
        #[serde(deserialize_with = "lenient_vec")]
        list: Vec<u8>,
        #[serde(deserialize_with = "lenient_map")]
        map: BTreeMap<String, u8>,
    }

    #[test]
    fn wrong_types_read_as_missing() {
        let p: Probe = decode(
            br#"{"n": "7", "name": 3, "list": [1, "x", 300, 4], "map": {"a": 1, "b": "x"}}"#,
        )
        .unwrap();
        assert_eq!(
            p,
            Probe {
                n: 0,
                name: None,
                list: vec![1, 0, 0, 4],
                map: [("a".to_string(), 1)].into(),
            }
        );
        let p: Probe =
            decode(br#"{"n": 7, "name": "a", "list": {"a": 1}, "map": [1], "new": true}"#).unwrap();
        assert_eq!(
            p,
            Probe {
                n: 7,
                name: Some("a".into()),
                list: vec![],
                map: BTreeMap::new(),
            }
        );
        assert_eq!(decode::<Probe>(b"{}").unwrap(), Probe::default());
    }

    #[test]
    fn only_non_objects_are_refused() {
        assert_eq!(decode::<Probe>(b" \n"), Err(DecodeError::Empty));
        assert_eq!(
            decode::<Probe>(b"[1]"),
            Err(DecodeError::NotAnObject("an array"))
        );
        assert_eq!(
            decode::<Probe>(b"null").unwrap_err().to_string(),
            "expected a JSON object, got null"
        );
        let e = decode::<Probe>(b"{\"n\": 9.").unwrap_err().to_string();
        assert!(e.starts_with("not valid JSON (EOF while parsing"), "{e}");
        assert!(matches!(
            decode::<Probe>(b"\xff{}"),
            Err(DecodeError::Malformed(_))
        ));
    }
}
