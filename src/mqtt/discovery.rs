//! Home Assistant MQTT discovery, device-based: one retained message on
//! `<discovery_prefix>/device/<device_id>/config` declares the device and all its entities
//! (`cmps`), instead of one message per entity. Home Assistant reads it on start (it is
//! retained) and again when adaptd republishes it after `<discovery_prefix>/status` says
//! `online` (Home Assistant restarted with a broker that lost retained messages).
//!
//! Key names follow Home Assistant's MQTT discovery schema: the shared `dev` (device), `o`
//! (origin), `avty` (availability) and `qos` sit at the root; each component under `cmps` has
//! `p` (platform) and `unique_id`, and inherits the shared options.
//!
//! # Availability
//! `available` carries three payloads: `online`, `stopped` (clean exit) and `offline` (the
//! broker-sent last will). Home Assistant compares the payload with `payload_available` and
//! `payload_not_available` and *ignores* anything else, which would leave the entities
//! "available" after a clean stop. The availability `value_template` therefore maps every
//! payload other than `online` to `offline`.
//!
//! # What the entities read
//! The templates below define a contract with the JSON that the daemon publishes (the types
//! of [`crate::wire`]):
//! - `state` (retained, the device): `samples_total` (number), `learners` (object);
//! - `<camera>/state` (retained, one per camera or microphone): `label` (current label after
//!   consensus, string), `head_version` (number);
//! - `stats`: `cameras.<camera>.fps` (number);
//! - `<camera>/snapshot` (retained): raw JPEG bytes.
//!
//! Every camera and microphone gets its own entities in the one device message, named and
//! keyed by the stream's name (`front_label`, `front_fps`, `front_snapshot`...), so Home
//! Assistant shows "Front label" next to "Back label". Missing fields render as a default
//! rather than a template error, so a `state` published before the first head exists is fine.

use serde_json::{json, Value};

use crate::mqtt::topics::Topics;

/// The `<camera>/source` entity's state from `source_state`.
const SOURCE_TEMPLATE: &str = "{% set s = value_json.source_state | default({}) %}\
{% if s.state == 'reconnecting' %}retrying in {{ s.retry_in_s | default(0) }} s: \
{{ s.last_error | default('') | truncate(200) }}{% elif s.state == 'failed' %}failed: \
{{ s.error | default('') | truncate(230) }}{% else %}{{ s.state | default('unknown') }}{% endif %}";

/// The discovery message: where to publish (retained) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// `<discovery_prefix>/device/<device_id>/config`.
    pub topic: String,
    /// The JSON document.
    pub payload: Value,
}

impl Discovery {
    /// The payload as bytes to publish.
    pub fn to_json(&self) -> Vec<u8> {
        self.payload.to_string().into_bytes()
    }
}

/// Maps `online` to `online` and everything else (`stopped`, `offline`) to `offline`.
pub const AVAILABILITY_TEMPLATE: &str = "{{ 'online' if value == 'online' else 'offline' }}";

/// What a stream senses, which decides its Home Assistant entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// Frames: a `Label` sensor (the scene or object after consensus), a frame rate and the
    /// annotated `Snapshot` image.
    #[default]
    Camera,
    /// Utterances: a `Speaker` sensor (who spoke last, after the open-set threshold) in place
    /// of `Label`, an utterance rate, and no snapshot (there is no picture).
    Microphone,
}

/// A stream to declare entities for: its name (a topic level, `[a-z0-9_-]`) and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredStream {
    pub name: String,
    pub kind: DeviceKind,
}

/// Title case of a stream name for entity names: `back_yard` -> `Back yard`.
fn title(name: &str) -> String {
    let spaced = name.replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The device-based discovery message for `topics`' device and its streams. `sw_version` is
/// adaptd's version (`env!("CARGO_PKG_VERSION")` of the binary); `qos` the configured QoS,
/// used by Home Assistant for its subscriptions and button presses.
pub fn device_discovery(
    topics: &Topics,
    sw_version: &str,
    qos: u8,
    streams: &[DiscoveredStream],
) -> Discovery {
    let id = topics.device_id();
    let uid = |key: &str| format!("adaptd_{id}_{key}");
    let mut cmps = serde_json::Map::new();
    cmps.insert(
        "samples".into(),
        json!({
            "p": "sensor",
            "name": "Samples",
            "unique_id": uid("samples"),
            "state_topic": topics.state(),
            "value_template": "{{ value_json.samples_total | default(0) }}",
            "unit_of_measurement": "samples",
            "state_class": "measurement",
            "json_attributes_topic": topics.state(),
            "json_attributes_template": "{{ value_json.learners | default({}) | tojson }}",
            "icon": "mdi:database",
        }),
    );
    cmps.insert(
        "train".into(),
        json!({
            "p": "button",
            "name": "Train",
            "unique_id": uid("train"),
            "command_topic": topics.cmd("train"),
            "payload_press": "{}",
            "icon": "mdi:school",
        }),
    );
    cmps.insert(
        "rollback".into(),
        json!({
            "p": "button",
            "name": "Roll back head",
            "unique_id": uid("rollback"),
            "command_topic": topics.cmd("rollback"),
            "payload_press": "{\"version\":\"previous\"}",
            "entity_category": "config",
            "icon": "mdi:undo",
        }),
    );
    for s in streams {
        let n = &s.name;
        let t = title(n);
        let state = topics.camera_state(n);
        let (label_key, label_name, icon) = match s.kind {
            DeviceKind::Camera => ("label", "label", "mdi:tag"),
            DeviceKind::Microphone => ("speaker", "speaker", "mdi:account-voice"),
        };
        cmps.insert(
            format!("{n}_{label_key}"),
            json!({
                "p": "sensor",
                "name": format!("{t} {label_name}"),
                "unique_id": uid(&format!("{n}_{label_key}")),
                "state_topic": state,
                "value_template": "{{ value_json.label | default('unknown') }}",
                "icon": icon,
            }),
        );
        cmps.insert(
            format!("{n}_head_version"),
            json!({
                "p": "sensor",
                "name": format!("{t} head version"),
                "unique_id": uid(&format!("{n}_head_version")),
                "state_topic": state,
                "value_template": "{{ value_json.head_version | default('none') }}",
                "entity_category": "diagnostic",
                "icon": "mdi:source-branch",
            }),
        );
        // What the source is doing, in words: `streaming`, `connecting`, `retrying in 8 s:
        // the camera refused the login ...` (HA caps a state at 255 characters).
        cmps.insert(
            format!("{n}_source"),
            json!({
                "p": "sensor",
                "name": format!("{t} source"),
                "unique_id": uid(&format!("{n}_source")),
                "state_topic": state,
                "value_template": SOURCE_TEMPLATE,
                "json_attributes_topic": state,
                "json_attributes_template": "{{ value_json.source_state | default({}) | tojson }}",
                "entity_category": "diagnostic",
                "icon": "mdi:cctv",
            }),
        );
        let (rate_name, unit, precision) = match s.kind {
            DeviceKind::Camera => ("frame rate", "fps", 1),
            DeviceKind::Microphone => ("utterance rate", "utterances/s", 2),
        };
        cmps.insert(
            format!("{n}_fps"),
            json!({
                "p": "sensor",
                "name": format!("{t} {rate_name}"),
                "unique_id": uid(&format!("{n}_fps")),
                "state_topic": topics.stats(),
                "value_template": format!(
                    "{{{{ (value_json.cameras | default({{}}))['{n}'].fps | default(0) }}}}"
                ),
                "unit_of_measurement": unit,
                "state_class": "measurement",
                "suggested_display_precision": precision,
                "entity_category": "diagnostic",
                "icon": "mdi:speedometer",
            }),
        );
        if s.kind == DeviceKind::Camera {
            cmps.insert(
                format!("{n}_snapshot"),
                json!({
                    "p": "image",
                    "name": format!("{t} snapshot"),
                    "unique_id": uid(&format!("{n}_snapshot")),
                    "image_topic": topics.camera_snapshot(n),
                    "content_type": "image/jpeg",
                }),
            );
        }
    }
    let payload = json!({
        "dev": {
            "ids": [format!("adaptd_{id}")],
            "name": format!("adaptd {id}"),
            "mf": "adaptd",
            "mdl": "adaptd edge inference",
            "sw": sw_version,
        },
        "o": {
            "name": "adaptd",
            "sw": sw_version,
        },
        "avty": [{
            "topic": topics.available(),
            "payload_available": "online",
            "payload_not_available": "offline",
            "value_template": AVAILABILITY_TEMPLATE,
        }],
        "qos": qos,
        "cmps": cmps,
    });
    Discovery {
        topic: topics.discovery_config(),
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::commands::{Command, Request, RollbackTarget};

    fn streams() -> Vec<DiscoveredStream> {
        vec![
            DiscoveredStream {
                name: "front".into(),
                kind: DeviceKind::Camera,
            },
            DiscoveredStream {
                name: "back_yard".into(),
                kind: DeviceKind::Camera,
            },
            DiscoveredStream {
                name: "kitchen".into(),
                kind: DeviceKind::Microphone,
            },
        ]
    }

    fn msg() -> Discovery {
        let topics = Topics::new("adaptd", "cam1");
        device_discovery(&topics, "1.2.3", 1, &streams())
    }

    #[test]
    fn topic_and_shared_keys() {
        let d = msg();
        assert_eq!(d.topic, "homeassistant/device/cam1/config");
        let p = &d.payload;
        assert_eq!(p["dev"]["ids"], json!(["adaptd_cam1"]));
        assert_eq!(p["dev"]["mf"], "adaptd");
        assert_eq!(p["dev"]["sw"], "1.2.3");
        assert!(p["dev"]["name"].is_string());
        assert_eq!(p["o"], json!({"name": "adaptd", "sw": "1.2.3"}));
        assert_eq!(p["qos"], 1);
        let avty = &p["avty"][0];
        assert_eq!(avty["topic"], "adaptd/cam1/available");
        assert_eq!(avty["payload_available"], "online");
        assert_eq!(avty["payload_not_available"], "offline");
        assert_eq!(avty["value_template"], AVAILABILITY_TEMPLATE);
        // The JSON is a valid document once serialised.
        let back: Value = serde_json::from_slice(&d.to_json()).expect("json");
        assert_eq!(&back, p);
    }

    #[test]
    fn every_component_has_platform_unique_id_and_name() {
        let d = msg();
        let cmps = d.payload["cmps"].as_object().expect("cmps object");
        // 3 device-level + 5 per camera x 2 (label, head version, source, rate, snapshot)
        // + 4 for the microphone (no snapshot).
        assert_eq!(cmps.len(), 3 + 10 + 4);
        let mut ids = std::collections::HashSet::new();
        for (key, c) in cmps {
            let p = c["p"].as_str().expect("p");
            assert!(["sensor", "image", "button"].contains(&p), "{key}: {p}");
            let uid = c["unique_id"].as_str().expect("unique_id");
            assert!(uid.starts_with("adaptd_cam1_"), "{uid}");
            assert!(ids.insert(uid.to_owned()), "duplicate {uid}");
            assert!(c["name"].is_string(), "{key}");
            // Component ids are part of Home Assistant's discovery id: [a-zA-Z0-9_-] only.
            assert!(key
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'));
        }
    }

    #[test]
    fn entities_point_at_each_cameras_topics() {
        let d = msg();
        let c = &d.payload["cmps"];
        assert_eq!(c["front_label"]["state_topic"], "adaptd/cam1/front/state");
        assert_eq!(c["front_label"]["name"], "Front label");
        assert_eq!(c["back_yard_label"]["name"], "Back yard label");
        assert!(c["front_label"]["value_template"]
            .as_str()
            .is_some_and(|t| t.contains("value_json.label")));
        assert!(c["samples"]["value_template"]
            .as_str()
            .is_some_and(|t| t.contains("samples_total")));
        assert_eq!(c["samples"]["json_attributes_topic"], "adaptd/cam1/state");
        assert_eq!(
            c["front_head_version"]["state_topic"],
            "adaptd/cam1/front/state"
        );
        assert_eq!(c["front_fps"]["state_topic"], "adaptd/cam1/stats");
        assert_eq!(c["front_source"]["state_topic"], "adaptd/cam1/front/state");
        assert!(c["front_source"]["value_template"]
            .as_str()
            .is_some_and(|t| t.contains("retrying in {{ s.retry_in_s")));
        assert_eq!(
            c["front_fps"]["value_template"],
            "{{ (value_json.cameras | default({}))['front'].fps | default(0) }}"
        );
        assert_eq!(c["front_snapshot"]["p"], "image");
        assert_eq!(
            c["front_snapshot"]["image_topic"],
            "adaptd/cam1/front/snapshot"
        );
        assert_eq!(c["front_snapshot"]["content_type"], "image/jpeg");
        assert_eq!(c["train"]["command_topic"], "adaptd/cam1/cmd/train");
        assert_eq!(c["rollback"]["command_topic"], "adaptd/cam1/cmd/rollback");
    }

    #[test]
    fn button_payloads_are_commands_we_accept() {
        let d = msg();
        let c = &d.payload["cmps"];
        let train = c["train"]["payload_press"].as_str().expect("str");
        assert_eq!(
            Request::parse("train", train.as_bytes())
                .expect("train parses")
                .command,
            Command::Train { force: false }
        );
        let rollback = c["rollback"]["payload_press"].as_str().expect("str");
        assert_eq!(
            Request::parse("rollback", rollback.as_bytes())
                .expect("rollback parses")
                .command,
            Command::Rollback {
                target: RollbackTarget::Previous
            }
        );
    }

    #[test]
    fn a_microphone_has_a_speaker_sensor_and_no_snapshot() {
        let d = msg();
        let c = &d.payload["cmps"];
        assert_eq!(c["kitchen_speaker"]["p"], "sensor");
        assert_eq!(
            c["kitchen_speaker"]["state_topic"],
            "adaptd/cam1/kitchen/state"
        );
        assert!(c.get("kitchen_label").is_none() && c.get("kitchen_snapshot").is_none());
        assert_eq!(c["kitchen_fps"]["unit_of_measurement"], "utterances/s");
    }

    #[test]
    fn custom_discovery_prefix() {
        let topics = Topics::new("home/adaptd", "pi").with_discovery_prefix("hass");
        let d = device_discovery(&topics, "0.1.0", 0, &[]);
        assert_eq!(d.topic, "hass/device/pi/config");
        assert_eq!(d.payload["avty"][0]["topic"], "home/adaptd/pi/available");
        assert_eq!(d.payload["qos"], 0);
    }
}
