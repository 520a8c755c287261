//! A command's `id`: its own file because both sides of the exchange use it, the command
//! parser (which reads it) and the reply (which echoes it), and neither should import the
//! other for it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::lenient::json_type;

/// A command's `id`, echoed in the reply: a string or a number, as the sender wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestId {
    /// `"id": "abc"`.
    Text(String),
    /// `"id": 42`.
    Number(serde_json::Number),
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestId::Text(s) => serializer.serialize_str(s),
            RequestId::Number(n) => n.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RequestId, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(RequestId::Text(s)),
            Value::Number(n) => Ok(RequestId::Number(n)),
            other => Err(serde::de::Error::custom(format!(
                "an id is a string or a number, not {}",
                json_type(&other)
            ))),
        }
    }
}
