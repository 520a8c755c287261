//! docs/mqtt.md holds to the wire types: every ```json block names the type it documents in
//! the comment on the line before it (`<!-- wire: DeviceState -->`; `Reply<SampleStored>`
//! also checks the reply's `result`), and each JSON value of the block (a block may hold
//! several, e.g. one per line) is read into that type and written back unchanged. Reading is
//! lenient, so a documented field the type lacks is dropped on the way and a field of the
//! wrong type defaults: either way the value written back differs, and the test names the
//! block, its line and the difference.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::test_support::wire_json;
use super::*;

const DOC: &str = include_str!("../../docs/mqtt.md");

/// The types the documentation must show at least once.
const DOCUMENTED: &[&str] = &[
    "DeviceState",
    "CameraState",
    "Detections",
    "Event",
    "ObjectEvent",
    "Stats",
    "Training",
    "Reply",
    "Reply<SampleStored>",
];

/// One ```json block: the 1-based line of its fence, its marker, its text.
struct Block {
    line: usize,
    marker: Option<String>,
    text: String,
}

fn json_blocks(doc: &str) -> Vec<Block> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "```json" {
            let marker = i
                .checked_sub(1)
                .map(|p| lines[p].trim())
                .and_then(|l| l.strip_prefix("<!-- wire:"))
                .and_then(|l| l.strip_suffix("-->"))
                .map(|t| t.trim().to_owned());
            let start = i;
            let mut text = String::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "```" {
                text.push_str(lines[i]);
                text.push('\n');
                i += 1;
            }
            blocks.push(Block {
                line: start + 1,
                marker,
                text,
            });
        }
        i += 1;
    }
    blocks
}

/// `value` read as `T` and written back must be `value` again.
fn check<T: Serialize + DeserializeOwned>(value: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = wire_json(&typed);
    if &back == value {
        Ok(())
    } else {
        Err(format!("documented:\n{value}\nthe type writes:\n{back}"))
    }
}

fn check_as(marker: &str, value: &Value) -> Result<(), String> {
    match marker {
        "DeviceState" => check::<DeviceState>(value),
        "CameraState" => check::<CameraState>(value),
        "Detections" => check::<Detections>(value),
        "Event" => check::<Event>(value),
        "ObjectEvent" => check::<ObjectEvent>(value),
        "Stats" => check::<Stats>(value),
        "Training" => check::<Training>(value),
        "Reply" | "Reply<SampleStored>" => {
            check::<Reply>(value)?;
            check_result(value)
        }
        other => Err(format!("unknown wire type `{other}` in the marker")),
    }
}

/// A successful reply's `result` must be its verb's result type.
fn check_result(reply: &Value) -> Result<(), String> {
    if reply["ok"] != true {
        return Ok(());
    }
    let result = &reply["result"];
    match reply["cmd"].as_str().unwrap_or_default() {
        "label" | "sample" => check::<SampleStored>(result),
        "train" => check::<TrainStarted>(result),
        "pause" | "resume" => check::<Paused>(result),
        "snapshot" => check::<SnapshotTaken>(result),
        "forget" => check::<Forgotten>(result),
        "set" => check::<SettingsApplied>(result),
        "status" => check::<DeviceState>(result),
        "events" => check::<EventList>(result),
        // The registry's decision belongs to adapt::registry, checked by its own tests.
        "rollback" => Ok(()),
        other => Err(format!("a reply to `{other}`, which has no result type")),
    }
}

#[test]
fn every_json_example_is_its_wire_type() {
    let blocks = json_blocks(DOC);
    assert!(blocks.len() >= DOCUMENTED.len(), "{} blocks", blocks.len());
    let mut problems = Vec::new();
    for b in &blocks {
        let Some(marker) = &b.marker else {
            problems.push(format!(
                "line {}: no `<!-- wire: Type -->` before the ```json block",
                b.line
            ));
            continue;
        };
        let values: Vec<Result<Value, _>> = serde_json::Deserializer::from_str(&b.text)
            .into_iter::<Value>()
            .collect();
        if values.is_empty() {
            problems.push(format!("line {}: an empty block", b.line));
        }
        for v in values {
            let outcome = v
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(|v| check_as(marker, &v));
            if let Err(e) = outcome {
                problems.push(format!("line {} ({marker}): {e}", b.line));
            }
        }
    }
    for t in DOCUMENTED {
        if !blocks.iter().any(|b| b.marker.as_deref() == Some(*t)) {
            problems.push(format!("no example of `{t}`"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/mqtt.md:\n{}",
        problems.join("\n\n")
    );
}

#[test]
fn the_check_catches_drift() {
    let event = serde_json::json!({"camera": "front", "type": "new", "track": "scene",
        "before": null, "after": "cat", "score": 0.5});
    assert_eq!(check::<Event>(&event), Ok(()));
    let mut extra = event.clone();
    extra["colour"] = "red".into();
    assert!(check::<Event>(&extra).is_err(), "a field the type lacks");
    let mut wrong = event.clone();
    wrong["score"] = "high".into();
    assert!(check::<Event>(&wrong).is_err(), "a field of the wrong type");
    let mut missing = event;
    missing.as_object_mut().unwrap().remove("before");
    assert!(
        check::<Event>(&missing).is_err(),
        "a field the docs leave out"
    );
    let sample = serde_json::json!({"id": null, "cmd": "sample", "ok": true,
        "result": {"label": "a", "id": 1, "split": "train", "kept": true, "evicted": 0}});
    assert!(
        check_as("Reply<SampleStored>", &sample).is_err(),
        "the old `evicted: 0`"
    );
    let blocks = json_blocks("x\n<!-- wire: Stats -->\n```json\n{}\n```\n```json\n[]\n```\n");
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].marker.as_deref(), Some("Stats"));
    assert_eq!((blocks[1].line, blocks[1].marker.as_deref()), (6, None));
}
