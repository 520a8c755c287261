//! `<base>/reply`: exactly one answer to every command and every sample.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::lenient::lenient;
use super::request_id::RequestId;

/// The JSON published on `<base>/reply` for every command:
/// `{"id": <id or null>, "cmd": <verb>, "ok": true, "result": ...}` or
/// `{"id": ..., "cmd": ..., "ok": false, "error": "..."}`. `cmd` is there so a reply can be
/// matched even when the sender gave no `id`; it is absent only when the message could not be
/// attributed (an oversized packet).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request's id.
    pub id: Option<RequestId>,
    /// The verb (or `sample`), when known.
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
        // Only an `id`, strings and a `Value` inside: serialising cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The reply as the bytes to publish.
    pub fn to_json(&self) -> Vec<u8> {
        self.to_value().to_string().into_bytes()
    }
}

/// The reply as it is on the wire; `result` and `error` exclusive, `id` always there.
#[derive(Serialize)]
struct ReplyOut<'a> {
    id: Option<&'a RequestId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a str>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (result, error) = match &self.outcome {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e.as_str())),
        };
        ReplyOut {
            id: self.id.as_ref(),
            cmd: self.cmd.as_deref(),
            ok: self.outcome.is_ok(),
            result,
            error,
        }
        .serialize(serializer)
    }
}

/// The reply as a reader takes it: every field optional and lenient.
#[derive(Default, Deserialize)]
#[serde(default)]
struct ReplyIn {
    #[serde(deserialize_with = "lenient")]
    id: Option<RequestId>,
    #[serde(deserialize_with = "lenient")]
    cmd: Option<String>,
    #[serde(deserialize_with = "lenient")]
    ok: Option<bool>,
    result: Value,
    #[serde(deserialize_with = "lenient")]
    error: Option<String>,
}

impl<'de> Deserialize<'de> for Reply {
    /// `ok: false` (or, without a readable `ok`, an `error`) is a failure; anything else a
    /// success with `result` (`null` when absent).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Reply, D::Error> {
        let r = ReplyIn::deserialize(deserializer)?;
        let failed = match r.ok {
            Some(ok) => !ok,
            None => r.error.is_some(),
        };
        Ok(Reply {
            id: r.id,
            cmd: r.cmd,
            outcome: if failed {
                Err(r.error.unwrap_or_default())
            } else {
                Ok(r.result)
            },
        })
    }
}

/// The `result` of a `label` command and of a `samples/<label>` message: the stored sample.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SampleStored {
    #[serde(deserialize_with = "lenient")]
    pub label: String,
    /// Its id in the sample store.
    #[serde(deserialize_with = "lenient")]
    pub id: i64,
    /// `train` or `holdout`, fixed at insert.
    #[serde(deserialize_with = "lenient")]
    pub split: String,
    /// False when the per-label cap's reservoir sampling decided not to keep it (`evicted`
    /// then holds its own id).
    #[serde(deserialize_with = "lenient")]
    pub kept: bool,
    /// Ids of the samples that left the store because of this one (a list, possibly empty).
    #[serde(deserialize_with = "lenient")]
    pub evicted: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::super::test_support::round_trip;
    use super::*;
    use serde_json::json;

    #[test]
    fn reply_json() {
        round_trip(
            &Reply::ok(
                Some(RequestId::Text("a".into())),
                "train",
                json!({"status": "started"}),
            ),
            json!({"id": "a", "cmd": "train", "ok": true, "result": {"status": "started"}}),
        );
        round_trip(
            &Reply::error(Some(RequestId::Number(9.into())), Some("set"), "too fast"),
            json!({"id": 9, "cmd": "set", "ok": false, "error": "too fast"}),
        );
        // Unattributable (an oversized packet): no `cmd`, `id` null.
        let r = Reply::error(None, None, "too big");
        assert_eq!(
            r.to_value(),
            json!({"id": null, "ok": false, "error": "too big"})
        );
        round_trip(&r, r.to_value());
        round_trip(
            &Reply::ok(None, "resume", Value::Null),
            json!({"id": null, "cmd": "resume", "ok": true, "result": null}),
        );
        let bytes = Reply::ok(None, "x", json!(1)).to_json();
        assert_eq!(
            serde_json::from_slice::<Value>(&bytes).unwrap(),
            json!({"id": null, "cmd": "x", "ok": true, "result": 1})
        );
    }

    #[test]
    fn replies_read_leniently() {
        let r: Reply =
            serde_json::from_str(r#"{"id": {"a": 1}, "cmd": 4, "error": "no"}"#).unwrap();
        assert_eq!(r, Reply::error(None, None, "no"));
        let r: Reply = serde_json::from_str(r#"{"ok": "yes", "result": [1]}"#).unwrap();
        assert_eq!(r.outcome, Ok(json!([1])));
        let r: Reply = serde_json::from_str(r#"{"ok": false}"#).unwrap();
        assert_eq!(r.outcome, Err(String::new()));
    }

    #[test]
    fn sample_stored_json() {
        let s = SampleStored {
            label: "alice".into(),
            id: 57,
            split: "train".into(),
            kept: true,
            evicted: vec![12, 13],
        };
        round_trip(
            &s,
            json!({"label": "alice", "id": 57, "split": "train", "kept": true,
                "evicted": [12, 13]}),
        );
        // The docs once showed `"evicted": 0`: a reader takes that as "none".
        let old: SampleStored = serde_json::from_str(r#"{"label": "a", "evicted": 0}"#).unwrap();
        assert!(old.evicted.is_empty());
    }
}

/// The `result` of `train`: the learners whose run started; the outcome follows on `training`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainStarted {
    /// Always `started` (a run that cannot start is an error reply instead).
    #[serde(deserialize_with = "lenient")]
    pub status: String,
    /// The embedding models (learners) whose run started.
    #[serde(deserialize_with = "lenient")]
    pub models: Vec<String>,
}

impl TrainStarted {
    pub fn new(models: Vec<String>) -> TrainStarted {
        TrainStarted {
            status: "started".into(),
            models,
        }
    }
}

/// The `result` of `pause` and `resume`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Paused {
    #[serde(deserialize_with = "lenient")]
    pub paused: bool,
    /// The streams it applied to.
    #[serde(deserialize_with = "lenient")]
    pub cameras: Vec<String>,
}

/// The `result` of `snapshot`: bytes of the JPEG published on each `<camera>/snapshot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotTaken {
    /// Over all cameras.
    #[serde(deserialize_with = "lenient")]
    pub bytes: u64,
    #[serde(deserialize_with = "lenient")]
    pub cameras: std::collections::BTreeMap<String, u64>,
}

/// The `result` of `false_positive` (and of `label none` on a tracked object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FalsePositiveFiled {
    /// The object marked.
    #[serde(deserialize_with = "lenient")]
    pub object: String,
    /// Its detector class: the filter its crop was filed under.
    #[serde(deserialize_with = "lenient")]
    pub class: String,
    /// The crop, stored as `none` in that filter.
    #[serde(deserialize_with = "lenient")]
    pub sample: SampleStored,
    /// Recent objects of the class nobody objected to, filed as true examples with it.
    #[serde(deserialize_with = "lenient")]
    pub true_examples: usize,
    /// The filter's samples per label after this (`none` and the class).
    #[serde(deserialize_with = "lenient")]
    pub counts: std::collections::BTreeMap<String, usize>,
    /// `started` (the outcome follows on `training`), or why the filter is not trained yet.
    #[serde(deserialize_with = "lenient")]
    pub training: String,
}

/// The `result` of `forget`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Forgotten {
    /// Samples deleted, over every learner concerned.
    #[serde(deserialize_with = "lenient")]
    pub removed: usize,
}

/// The `result` of `set`: what took effect, and why the rest did not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SettingsApplied {
    #[serde(deserialize_with = "lenient")]
    pub applied: Vec<String>,
    /// Setting → why it was not applied (`score_threshold` on a classifier...).
    #[serde(deserialize_with = "lenient")]
    pub not_applied: std::collections::BTreeMap<String, String>,
}
