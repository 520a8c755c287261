//! Home Assistant MQTT discovery, device-based: one retained message on
//! `<discovery_prefix>/device/<device_id>/config` declares the device and all its entities
//! (`cmps`), instead of one message per entity. Home Assistant reads it on start (it is
//! retained) and again when adaptd republishes it after `<discovery_prefix>/status` says
//! `online` (Home Assistant restarted with a broker that lost retained messages).
//!
//! Key names follow Home Assistant's MQTT discovery schema: the shared `dev` (device), `o`
//! (origin), `avty` (availability) and `qos` sit at the root; each component under `cmps` has
//! `p` (platform) and `unique_id`, and inherits the shared options. A component's key is also
//! its `unique_id` after `adaptd_<device_id>_`, so both are stable as long as the names in the
//! config (stream, zone, label) are.
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
//! - `state` (retained, the device): `samples_total` (number), `learners` (object),
//!   `auto_train` (bool);
//! - `<camera>/state` (retained, one per camera or microphone): `label` (current label after
//!   consensus, string), `head_version` (number), `paused` (bool), `score_threshold` and
//!   `unknown_threshold` (number or `null`);
//! - `stats`: `cameras.<camera>.fps` (number);
//! - `<camera>/snapshot` (retained): raw JPEG bytes;
//! - detectors: `<camera>/<zone>/<label>` (retained, a count as text; zone `all` is the whole
//!   frame), `<camera>/<label>/snapshot` (retained JPEG) and `<camera>/objects` (Frigate's
//!   `{"type", "before", "after"}`).
//!
//! Commands go to `cmd/set`, `cmd/train` and `cmd/rollback` as JSON that
//! [`crate::wire::command::Request::parse`] accepts (the tests parse every payload and every
//! command template rendered with a sample value).
//!
//! Every camera and microphone gets its own entities in the one device message, named and
//! keyed by the stream's name (`front_label`, `front_fps`, `front_snapshot`...), so Home
//! Assistant shows "Front label" next to "Back label". Missing fields render as a default
//! rather than a template error, so a `state` published before the first head exists is fine.
//!
//! # Removing entities
//! A camera removed from the config must take its entities with it, but the message only
//! describes what exists now, and Home Assistant keeps a component it no longer hears about.
//! Its MQTT documentation (integrations/mqtt, "Device discovery payload") says: "An empty
//! config can be published as an update to remove a single component from the device
//! discovery. Note that adding the `platform` (`p`) option is still required", i.e. a
//! component `{"p": "sensor"}` removes that component. [`with_removals`] compares the
//! message retained from a previous run (the link subscribes to its own discovery topic) with
//! the current one and adds such a stub for every component that is gone.

use serde_json::{json, Map, Value};
use tracing::warn;

use crate::mqtt::topics::{Topics, ALL_ZONES};

/// The `<camera>/source` entity's state from `source_state`.
const SOURCE_TEMPLATE: &str = "{% set s = value_json.source_state | default({}) %}\
{% if s.state == 'reconnecting' %}retrying in {{ s.retry_in_s | default(0) }} s: \
{{ s.last_error | default('') | truncate(200) }}{% elif s.state == 'failed' %}failed: \
{{ s.error | default('') | truncate(230) }}{% else %}{{ s.state | default('unknown') }}{% endif %}";

/// A count topic's text (`3`) as a number; anything else counts as 0 rather than a template
/// error.
const COUNT_TEMPLATE: &str = "{{ value | int(0) }}";

/// A count topic's text as occupancy: more than 0 objects is `ON` (the binary sensor's default
/// `payload_on`).
const OCCUPANCY_TEMPLATE: &str = "{{ 'ON' if (value | int(0)) > 0 else 'OFF' }}";

/// The detection switch's state: on unless `paused`.
const DETECT_STATE_TEMPLATE: &str = "{{ 'OFF' if (value_json.paused | default(false)) else 'ON' }}";

/// The auto-train switch's state from the device `state`.
const AUTO_TRAIN_STATE_TEMPLATE: &str =
    "{{ 'ON' if (value_json.auto_train | default(false)) else 'OFF' }}";

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
    /// The detector classes this camera tracks (its tracked objects' labels); empty for a
    /// classifier or a microphone.
    pub labels: Vec<String>,
    /// Its zones, in config order.
    pub zones: Vec<DiscoveredZone>,
    /// Whether the stream runs a detector (it has a score threshold).
    pub is_detector: bool,
}

/// A zone of a camera and the labels it counts (resolved: every one of the camera's
/// `labels` when the zone's `objects` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredZone {
    pub name: String,
    pub labels: Vec<String>,
}

/// Title case of a stream name for entity names: `back_yard` -> `Back yard`.
fn title(name: &str) -> String {
    let spaced = spaced(name);
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A name as words inside an entity name: `back_porch` -> `back porch`.
fn spaced(name: &str) -> String {
    name.replace(['_', '-'], " ")
}

/// A name as part of a component key: Home Assistant allows `[a-zA-Z0-9_-]` only (stream and
/// zone names already are; a detector's class names need not be).
fn key_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A string as a Jinja string literal (JSON's double-quoted escapes are Jinja's too).
fn jinja_str(s: &str) -> String {
    Value::from(s).to_string()
}

/// The event entity's `value_template` for `<camera>/objects`, firing for `labels`.
///
/// Only a `new` object that is not a false positive fires, with `event_type` its label and
/// the object's id, sub-label, score and zones as attributes. Every other message (`update`,
/// `end`, false positives, a label not in `event_types`) renders `{}`: Home Assistant's MQTT
/// event entity ignores an empty rendered payload, `None` or `{}` with only a debug log line
/// (homeassistant/components/mqtt/event.py, `_event_received`: "Ignoring empty payload";
/// the event.mqtt documentation: "Empty dict's will be ignored"), whereas a payload without
/// `event_type` or with one not in `event_types` is logged as a warning. `{}` is chosen over
/// the empty string because it is the documented form. The label check keeps a class added to
/// the detector after discovery from producing "Invalid event type" warnings.
fn event_template(labels: &[String]) -> String {
    let list = Value::from(labels.to_vec()).to_string();
    format!(
        "{{%- set o = value_json.after | default({{}}) -%}}\
{{%- if (value_json.type | default('')) == 'new' and not (o.false_positive | default(false)) \
and (o.label | default('')) in {list} -%}}\
{{{{ {{'event_type': o.label, 'id': o.id | default(''), \
'sub_label': (o.sub_label[0] if o.sub_label else none), \
'sub_label_score': (o.sub_label[1] if o.sub_label else none), \
'score': o.top_score | default(o.score | default(0)), \
'zones': o.current_zones | default([])}} | tojson }}}}\
{{%- else -%}}{{}}{{%- endif -%}}"
    )
}

/// The components under construction: each key is checked against the ones already there so
/// that two names that map to the same key (camera `front_person`'s snapshot and camera
/// `front`'s `person` snapshot) cannot silently replace each other.
struct Components {
    uid_prefix: String,
    map: Map<String, Value>,
}

impl Components {
    /// Adds `config` under `key`, with `unique_id` = `adaptd_<device>_<key>`.
    fn add(&mut self, key: String, mut config: Value) {
        if self.map.contains_key(&key) {
            warn!(
                "Home Assistant discovery: two entities map to the key `{key}`; keeping the first (rename a camera, zone or label)"
            );
            return;
        }
        if let Value::Object(fields) = &mut config {
            fields.insert(
                "unique_id".into(),
                Value::from(format!("{}{key}", self.uid_prefix)),
            );
        }
        self.map.insert(key, config);
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
    let mut c = Components {
        uid_prefix: format!("adaptd_{id}_"),
        map: Map::new(),
    };
    let set = topics.cmd("set");
    c.add(
        "samples".into(),
        json!({
            "p": "sensor",
            "name": "Samples",
            "state_topic": topics.state(),
            "value_template": "{{ value_json.samples_total | default(0) }}",
            "unit_of_measurement": "samples",
            "state_class": "measurement",
            "json_attributes_topic": topics.state(),
            "json_attributes_template": "{{ value_json.learners | default({}) | tojson }}",
            "icon": "mdi:database",
        }),
    );
    c.add(
        "train".into(),
        json!({
            "p": "button",
            "name": "Train",
            "command_topic": topics.cmd("train"),
            "payload_press": "{}",
            "icon": "mdi:school",
        }),
    );
    c.add(
        "rollback".into(),
        json!({
            "p": "button",
            "name": "Roll back head",
            "command_topic": topics.cmd("rollback"),
            "payload_press": "{\"version\":\"previous\"}",
            "entity_category": "config",
            "icon": "mdi:undo",
        }),
    );
    // `state_on`/`state_off` must be given: Home Assistant's switch compares its state with
    // `payload_on`/`payload_off` (our JSON commands) unless they are.
    c.add(
        "auto_train".into(),
        json!({
            "p": "switch",
            "name": "Auto-train",
            "command_topic": set,
            "payload_on": json!({"auto_train": true}).to_string(),
            "payload_off": json!({"auto_train": false}).to_string(),
            "state_topic": topics.state(),
            "value_template": AUTO_TRAIN_STATE_TEMPLATE,
            "state_on": "ON",
            "state_off": "OFF",
            "entity_category": "config",
            "icon": "mdi:school-outline",
        }),
    );
    for s in streams {
        stream_components(&mut c, topics, s);
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
        "cmps": c.map,
    });
    Discovery {
        topic: topics.discovery_config(),
        payload,
    }
}

/// A `number` entity for a 0..=1 threshold that `cmd/set` takes as `field`.
fn threshold(topics: &Topics, camera: &str, name: String, field: &str) -> Value {
    json!({
        "p": "number",
        "name": name,
        "command_topic": topics.cmd("set"),
        "command_template": format!(
            "{{\"camera\":{},\"{field}\": {{{{ value }}}}}}",
            jinja_str(camera)
        ),
        "state_topic": topics.camera_state(camera),
        // `null` (no detector, no head) renders `None`, the number's `payload_reset`: unknown.
        "value_template": format!("{{{{ value_json.{field} | default(none) }}}}"),
        "min": 0,
        "max": 1,
        "step": 0.01,
        "mode": "box",
        "entity_category": "config",
        "icon": "mdi:tune-vertical",
    })
}

/// One stream's components.
fn stream_components(c: &mut Components, topics: &Topics, s: &DiscoveredStream) {
    let n = &s.name;
    let t = title(n);
    let state = topics.camera_state(n);
    let (label_key, label_name, icon) = match s.kind {
        DeviceKind::Camera => ("label", "label", "mdi:tag"),
        DeviceKind::Microphone => ("speaker", "speaker", "mdi:account-voice"),
    };
    c.add(
        format!("{n}_{label_key}"),
        json!({
            "p": "sensor",
            "name": format!("{t} {label_name}"),
            "state_topic": state,
            "value_template": "{{ value_json.label | default('unknown') }}",
            "icon": icon,
        }),
    );
    c.add(
        format!("{n}_head_version"),
        json!({
            "p": "sensor",
            "name": format!("{t} head version"),
            "state_topic": state,
            "value_template": "{{ value_json.head_version | default('none') }}",
            "entity_category": "diagnostic",
            "icon": "mdi:source-branch",
        }),
    );
    // What the source is doing, in words: `streaming`, `connecting`, `retrying in 8 s: the
    // camera refused the login ...` (HA caps a state at 255 characters).
    c.add(
        format!("{n}_source"),
        json!({
            "p": "sensor",
            "name": format!("{t} source"),
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
    c.add(
        format!("{n}_fps"),
        json!({
            "p": "sensor",
            "name": format!("{t} {rate_name}"),
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
        c.add(
            format!("{n}_snapshot"),
            json!({
                "p": "image",
                "name": format!("{t} snapshot"),
                "image_topic": topics.camera_snapshot(n),
                "content_type": "image/jpeg",
            }),
        );
    }
    // Controls: `set detect` pauses and resumes the stream (one topic for both, which a switch
    // needs), the thresholds are `set` fields, and train / roll back take the stream's name.
    let camera = || Value::from(n.as_str());
    c.add(
        format!("{n}_detect"),
        json!({
            "p": "switch",
            "name": format!("{t} detection"),
            "command_topic": topics.cmd("set"),
            "payload_on": json!({"camera": camera(), "detect": true}).to_string(),
            "payload_off": json!({"camera": camera(), "detect": false}).to_string(),
            "state_topic": state,
            "value_template": DETECT_STATE_TEMPLATE,
            "state_on": "ON",
            "state_off": "OFF",
            "entity_category": "config",
            "icon": "mdi:motion-sensor",
        }),
    );
    if s.is_detector {
        c.add(
            format!("{n}_score_threshold"),
            threshold(topics, n, format!("{t} score threshold"), "score_threshold"),
        );
    }
    c.add(
        format!("{n}_unknown_threshold"),
        threshold(
            topics,
            n,
            format!("{t} unknown threshold"),
            "unknown_threshold",
        ),
    );
    c.add(
        format!("{n}_train"),
        json!({
            "p": "button",
            "name": format!("{t} train"),
            "command_topic": topics.cmd("train"),
            "payload_press": json!({"camera": camera()}).to_string(),
            "icon": "mdi:school",
        }),
    );
    c.add(
        format!("{n}_rollback"),
        json!({
            "p": "button",
            "name": format!("{t} roll back"),
            "command_topic": topics.cmd("rollback"),
            "payload_press": json!({"camera": camera(), "version": "previous"}).to_string(),
            "entity_category": "config",
            "icon": "mdi:undo",
        }),
    );
    if s.kind == DeviceKind::Camera {
        object_components(c, topics, s, &t);
    }
}

/// A detector camera's per-label entities: the object event, a snapshot per label, and a
/// count and an occupancy per label for the whole frame and for each zone.
fn object_components(c: &mut Components, topics: &Topics, s: &DiscoveredStream, t: &str) {
    let n = &s.name;
    let mut labels: Vec<String> = Vec::new();
    for l in &s.labels {
        if !labels.contains(l) {
            labels.push(l.clone());
        }
    }
    if labels.is_empty() {
        return;
    }
    c.add(
        format!("{n}_objects"),
        json!({
            "p": "event",
            "name": format!("{t} object"),
            "state_topic": topics.camera_objects(n),
            "event_types": labels,
            "value_template": event_template(&labels),
            "icon": "mdi:motion-sensor",
        }),
    );
    for l in &labels {
        c.add(
            format!("{n}_{}_snapshot", key_part(l)),
            json!({
                "p": "image",
                "name": format!("{t} {} snapshot", spaced(l)),
                "image_topic": topics.camera_label_snapshot(n, l),
                "content_type": "image/jpeg",
            }),
        );
    }
    // The whole frame first, then the zones; a zone only counts its own labels (and only
    // those the camera tracks: a count nobody publishes would stay unknown forever).
    let mut areas: Vec<(&str, Option<&str>, Vec<&String>)> =
        vec![(ALL_ZONES, None, labels.iter().collect())];
    for z in &s.zones {
        let counted = labels.iter().filter(|l| z.labels.contains(l)).collect();
        areas.push((z.name.as_str(), Some(z.name.as_str()), counted));
    }
    for (zone, zone_name, counted) in areas {
        let words = zone_name.map_or(String::new(), |z| format!("{} ", spaced(z)));
        for l in counted {
            let key = format!("{n}_{}_{}", key_part(zone), key_part(l));
            let topic = topics.camera_count(n, zone, l);
            c.add(
                format!("{key}_count"),
                json!({
                    "p": "sensor",
                    "name": format!("{t} {words}{} count", spaced(l)),
                    "state_topic": topic,
                    "value_template": COUNT_TEMPLATE,
                    "unit_of_measurement": "objects",
                    "state_class": "measurement",
                    "icon": "mdi:counter",
                }),
            );
            c.add(
                format!("{key}_occupancy"),
                json!({
                    "p": "binary_sensor",
                    "name": format!("{t} {words}{} occupancy", spaced(l)),
                    "state_topic": topic,
                    "value_template": OCCUPANCY_TEMPLATE,
                    "device_class": "occupancy",
                }),
            );
        }
    }
}

/// Why a retained discovery message could not be compared with the current one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetainedDiscoveryError {
    #[error("it is not JSON ({0})")]
    NotJson(String),
    #[error("it is not a JSON object")]
    NotAnObject,
    #[error("it has no `cmps` object (not a device-based discovery message)")]
    NoComponents,
}

/// The components of a discovery payload (`cmps`, or its long name `components`).
fn components_of(payload: &Value) -> Option<&Map<String, Value>> {
    payload
        .get("cmps")
        .or_else(|| payload.get("components"))
        .and_then(Value::as_object)
}

/// A component's platform (`p`, or its long name `platform`).
fn platform_of(component: &Value) -> Option<&str> {
    component
        .get("p")
        .or_else(|| component.get("platform"))
        .and_then(Value::as_str)
}

/// A removal stub: a component with nothing but its platform.
fn is_removal(component: &Value) -> bool {
    component
        .as_object()
        .is_some_and(|c| c.keys().all(|k| k == "p" || k == "platform"))
}

/// `current` plus a removal stub (`{"p": <platform>}`, see the module docs) for every
/// component of `retained` (the message found on the discovery topic, from an earlier run or
/// an earlier connection) that `current` does not have; `Ok(None)` when there is nothing to
/// remove, so the caller publishes nothing more.
///
/// That `None` is what keeps the link from looping on its own messages: a component of
/// `retained` that is already a stub was removed by an earlier publish and is neither
/// repeated nor counted, so the message this returns, compared with itself (or with the
/// plain current message), yields `None`. Consequently the stubs live for one run: the next
/// run publishes the current message without them, which is Home Assistant's advice ("after
/// removing a component, you should send another update with the removed component
/// omitted"); until then an instance of Home Assistant that starts later still sees them in
/// the retained message. A retained component without a platform cannot be removed (Home
/// Assistant needs `p`) and is skipped. An empty payload (a cleared topic) is `Ok(None)`.
pub fn with_removals(
    current: &Discovery,
    retained: &[u8],
) -> Result<Option<Discovery>, RetainedDiscoveryError> {
    if retained.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let old: Value = serde_json::from_slice(retained)
        .map_err(|e| RetainedDiscoveryError::NotJson(e.to_string()))?;
    if !old.is_object() {
        return Err(RetainedDiscoveryError::NotAnObject);
    }
    let old_cmps = components_of(&old).ok_or(RetainedDiscoveryError::NoComponents)?;
    let now = components_of(&current.payload);
    let mut stubs = Map::new();
    for (key, component) in old_cmps {
        if now.is_some_and(|c| c.contains_key(key)) || is_removal(component) {
            continue;
        }
        if let Some(platform) = platform_of(component) {
            stubs.insert(key.clone(), json!({ "p": platform }));
        }
    }
    if stubs.is_empty() {
        return Ok(None);
    }
    let mut payload = current.payload.clone();
    if let Value::Object(root) = &mut payload {
        let cmps = root
            .entry("cmps")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(cmps) = cmps {
            cmps.extend(stubs);
        }
    }
    Ok(Some(Discovery {
        topic: current.topic.clone(),
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::commands::{Command, Request, RollbackTarget, Settings};

    fn streams() -> Vec<DiscoveredStream> {
        vec![
            DiscoveredStream {
                name: "front".into(),
                kind: DeviceKind::Camera,
                labels: Vec::new(),
                zones: Vec::new(),
                is_detector: false,
            },
            DiscoveredStream {
                name: "back_yard".into(),
                kind: DeviceKind::Camera,
                labels: Vec::new(),
                zones: Vec::new(),
                is_detector: false,
            },
            DiscoveredStream {
                name: "kitchen".into(),
                kind: DeviceKind::Microphone,
                labels: Vec::new(),
                zones: Vec::new(),
                is_detector: false,
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
        // 4 device-level (samples, train, roll back, auto-train) + 9 per camera x 2 (label,
        // head version, source, rate, snapshot, detection, unknown threshold, train, roll
        // back) + 8 for the microphone (no snapshot); no detector, so no score threshold and
        // no per-label entities.
        assert_eq!(cmps.len(), 4 + 18 + 8);
        let mut ids = std::collections::HashSet::new();
        for (key, c) in cmps {
            let p = c["p"].as_str().expect("p");
            assert!(
                ["sensor", "image", "button", "switch", "number"].contains(&p),
                "{key}: {p}"
            );
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

    fn detector_streams() -> Vec<DiscoveredStream> {
        let mut all = streams();
        all.insert(
            0,
            DiscoveredStream {
                name: "drive".into(),
                kind: DeviceKind::Camera,
                labels: vec!["person".into(), "car".into(), "person".into()],
                zones: vec![
                    DiscoveredZone {
                        name: "driveway".into(),
                        labels: vec!["person".into(), "car".into()],
                    },
                    DiscoveredZone {
                        name: "front_porch".into(),
                        // `dog` is not tracked by the camera: no entity for it.
                        labels: vec!["person".into(), "dog".into()],
                    },
                ],
                is_detector: true,
            },
        );
        all
    }

    fn detector_msg() -> Discovery {
        let topics = Topics::new("adaptd", "cam1");
        device_discovery(&topics, "1.2.3", 1, &detector_streams())
    }

    /// Every string that Home Assistant renders as a template, by key.
    fn templates(d: &Discovery) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (key, c) in d.payload["cmps"].as_object().expect("cmps") {
            for (field, v) in c.as_object().expect("component") {
                if field.ends_with("_template") {
                    out.push((
                        format!("{key}.{field}"),
                        v.as_str().expect("template").to_owned(),
                    ));
                }
            }
        }
        out
    }

    /// The delimiters of a Jinja template pair up, in order (no Jinja renderer in the
    /// dependencies, so this catches the `format!` brace mistakes at least).
    fn assert_balanced(what: &str, t: &str) {
        let mut rest = t;
        while let Some(i) = rest.find(['{', '%', '}']) {
            let tail = &rest[i..];
            let close = if tail.starts_with("{{") {
                "}}"
            } else if tail.starts_with("{%") {
                "%}"
            } else if tail.starts_with("}}") || tail.starts_with("%}") {
                panic!("{what}: a stray closing delimiter in {t:?}")
            } else {
                rest = &rest[i + 1..];
                continue;
            };
            let body = &tail[2..];
            let end = body
                .find(close)
                .unwrap_or_else(|| panic!("{what}: an unclosed delimiter in {t:?}"));
            let inner = &body[..end];
            assert!(
                !inner.contains("{{") && !inner.contains("{%"),
                "{what}: nested delimiters in {t:?}"
            );
            rest = &body[end + 2..];
        }
    }

    /// `command_template` rendered as Home Assistant does for a number set to `value`.
    fn render_value(template: &str, value: &str) -> String {
        assert_eq!(template.matches("{{ value }}").count(), 1, "{template}");
        template.replace("{{ value }}", value)
    }

    fn set(payload: &str) -> Request {
        Request::parse("set", payload.as_bytes()).expect("set parses")
    }

    #[test]
    fn unique_ids_are_unique_across_the_whole_message() {
        let d = detector_msg();
        let cmps = d.payload["cmps"].as_object().expect("cmps");
        let mut ids = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for (key, c) in cmps {
            let uid = c["unique_id"].as_str().expect("unique_id");
            assert_eq!(uid, format!("adaptd_cam1_{key}"));
            assert!(ids.insert(uid.to_owned()), "duplicate {uid}");
            let name = c["name"].as_str().expect("name");
            assert!(names.insert(name.to_owned()), "duplicate name {name}");
            assert!(key
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'));
        }
        // The same config gives the same message: ids are derived from names only.
        assert_eq!(d, detector_msg());
    }

    #[test]
    fn every_template_is_balanced() {
        let d = detector_msg();
        let all = templates(&d);
        assert!(all.len() > 20);
        for (what, t) in all {
            assert_balanced(&what, &t);
        }
        assert_balanced("availability", AVAILABILITY_TEMPLATE);
    }

    #[test]
    fn counts_and_occupancy_per_label_and_zone() {
        let d = detector_msg();
        let c = &d.payload["cmps"];
        let count = &c["drive_all_person_count"];
        assert_eq!(count["p"], "sensor");
        assert_eq!(count["name"], "Drive person count");
        assert_eq!(count["unique_id"], "adaptd_cam1_drive_all_person_count");
        assert_eq!(count["state_topic"], "adaptd/cam1/drive/all/person");
        assert_eq!(count["state_class"], "measurement");
        assert_eq!(count["unit_of_measurement"], "objects");
        assert_eq!(count["value_template"], COUNT_TEMPLATE);
        let occ = &c["drive_driveway_car_occupancy"];
        assert_eq!(occ["p"], "binary_sensor");
        assert_eq!(occ["name"], "Drive driveway car occupancy");
        assert_eq!(occ["device_class"], "occupancy");
        assert_eq!(occ["state_topic"], "adaptd/cam1/drive/driveway/car");
        assert_eq!(occ["value_template"], OCCUPANCY_TEMPLATE);
        // Without `payload_on`/`payload_off` the binary sensor expects ON and OFF, which the
        // template produces.
        assert!(occ.get("payload_on").is_none() && occ.get("payload_off").is_none());
        assert_eq!(
            c["drive_front_porch_person_count"]["name"],
            "Drive front porch person count"
        );
        assert_eq!(
            c["drive_front_porch_person_count"]["state_topic"],
            "adaptd/cam1/drive/front_porch/person"
        );
        // The porch counts only persons; `dog` is not a label of the camera.
        assert!(c.get("drive_front_porch_car_count").is_none());
        assert!(c.get("drive_front_porch_dog_count").is_none());
        // 3 areas: all (2 labels), driveway (2), porch (1): 5 counts, 5 occupancies.
        let cmps = c.as_object().expect("cmps");
        let ends = |suffix: &str| {
            cmps.keys()
                .filter(|k| k.starts_with("drive_") && k.ends_with(suffix))
                .count()
        };
        assert_eq!((ends("_count"), ends("_occupancy")), (5, 5));
        // A classifier camera has none of them.
        assert!(!cmps
            .keys()
            .any(|k| k.starts_with("front_") && k.ends_with("_count")));
    }

    #[test]
    fn an_event_entity_fires_for_new_objects() {
        let d = detector_msg();
        let e = &d.payload["cmps"]["drive_objects"];
        assert_eq!(e["p"], "event");
        assert_eq!(e["name"], "Drive object");
        assert_eq!(e["state_topic"], "adaptd/cam1/drive/objects");
        // Duplicates in the labels are dropped.
        assert_eq!(e["event_types"], json!(["person", "car"]));
        let t = e["value_template"].as_str().expect("template");
        assert!(
            t.contains("(value_json.type | default('')) == 'new'"),
            "{t}"
        );
        assert!(t.contains("not (o.false_positive | default(false))"), "{t}");
        assert!(t.contains(r#"in ["person","car"]"#), "{t}");
        assert!(t.contains("'event_type': o.label"), "{t}");
        assert!(t.contains("| tojson"), "{t}");
        // Everything else renders the empty object Home Assistant ignores quietly.
        assert!(t.ends_with("{%- else -%}{}{%- endif -%}"), "{t}");
        assert!(d.payload["cmps"].get("front_objects").is_none());
    }

    #[test]
    fn an_image_per_label_and_the_camera_snapshot() {
        let d = detector_msg();
        let c = &d.payload["cmps"];
        let img = &c["drive_person_snapshot"];
        assert_eq!(img["p"], "image");
        assert_eq!(img["name"], "Drive person snapshot");
        assert_eq!(img["image_topic"], "adaptd/cam1/drive/person/snapshot");
        assert_eq!(img["content_type"], "image/jpeg");
        assert_eq!(
            c["drive_car_snapshot"]["image_topic"],
            "adaptd/cam1/drive/car/snapshot"
        );
        assert_eq!(
            c["drive_snapshot"]["image_topic"],
            "adaptd/cam1/drive/snapshot"
        );
    }

    #[test]
    fn switches_send_set_commands_we_accept() {
        let d = detector_msg();
        let c = &d.payload["cmps"];
        let sw = &c["drive_detect"];
        assert_eq!(sw["p"], "switch");
        assert_eq!(sw["name"], "Drive detection");
        assert_eq!(sw["command_topic"], "adaptd/cam1/cmd/set");
        assert_eq!(sw["state_topic"], "adaptd/cam1/drive/state");
        assert_eq!(sw["entity_category"], "config");
        assert_eq!(
            (&sw["state_on"], &sw["state_off"]),
            (&json!("ON"), &json!("OFF"))
        );
        assert!(sw["value_template"]
            .as_str()
            .is_some_and(|t| t.contains("value_json.paused")));
        for (field, detect) in [("payload_on", true), ("payload_off", false)] {
            let r = set(sw[field].as_str().expect("payload"));
            assert_eq!(r.camera.as_deref(), Some("drive"));
            assert_eq!(
                r.command,
                Command::Set(Settings {
                    detect: Some(detect),
                    ..Settings::default()
                })
            );
        }
        let auto = &c["auto_train"];
        assert_eq!(auto["p"], "switch");
        assert_eq!(auto["name"], "Auto-train");
        assert_eq!(auto["state_topic"], "adaptd/cam1/state");
        assert_eq!(auto["value_template"], AUTO_TRAIN_STATE_TEMPLATE);
        assert_eq!(
            (&auto["state_on"], &auto["state_off"]),
            (&json!("ON"), &json!("OFF"))
        );
        for (field, on) in [("payload_on", true), ("payload_off", false)] {
            let r = set(auto[field].as_str().expect("payload"));
            assert_eq!(r.camera, None);
            assert_eq!(
                r.command,
                Command::Set(Settings {
                    auto_train: Some(on),
                    ..Settings::default()
                })
            );
        }
        // Microphones can be paused too.
        assert!(set(c["kitchen_detect"]["payload_off"]
            .as_str()
            .expect("payload"))
        .camera
        .is_some_and(|cam| cam == "kitchen"));
    }

    #[test]
    fn threshold_numbers_render_set_commands_we_accept() {
        let d = detector_msg();
        let c = &d.payload["cmps"];
        let score = &c["drive_score_threshold"];
        assert_eq!(score["p"], "number");
        assert_eq!(score["name"], "Drive score threshold");
        assert_eq!(score["command_topic"], "adaptd/cam1/cmd/set");
        assert_eq!(score["state_topic"], "adaptd/cam1/drive/state");
        assert_eq!(
            score["value_template"],
            "{{ value_json.score_threshold | default(none) }}"
        );
        assert_eq!((&score["min"], &score["max"]), (&json!(0), &json!(1)));
        assert_eq!(score["step"], 0.01);
        assert_eq!(score["entity_category"], "config");
        let tpl = score["command_template"].as_str().expect("template");
        assert_eq!(tpl, r#"{"camera":"drive","score_threshold": {{ value }}}"#);
        let r = set(&render_value(tpl, "0.4"));
        assert_eq!(r.camera.as_deref(), Some("drive"));
        assert_eq!(
            r.command,
            Command::Set(Settings {
                score_threshold: Some(0.4),
                ..Settings::default()
            })
        );
        // Home Assistant renders a whole number as a float, and the bounds are accepted.
        for v in ["0.0", "1.0", "0", "1"] {
            set(&render_value(tpl, v));
        }
        for name in ["drive", "front", "kitchen"] {
            let u = &c[format!("{name}_unknown_threshold")];
            assert_eq!(u["p"], "number", "{name}");
            assert_eq!(u["state_topic"], format!("adaptd/cam1/{name}/state"));
            let tpl = u["command_template"].as_str().expect("template");
            let r = set(&render_value(tpl, "0.6"));
            assert_eq!(r.camera.as_deref(), Some(name));
            assert_eq!(
                r.command,
                Command::Set(Settings {
                    unknown_threshold: Some(0.6),
                    ..Settings::default()
                })
            );
        }
        // Only a detector has a score threshold.
        assert!(c.get("front_score_threshold").is_none());
        assert!(c.get("kitchen_score_threshold").is_none());
    }

    #[test]
    fn per_camera_buttons_are_commands_we_accept() {
        let d = detector_msg();
        let c = &d.payload["cmps"];
        for name in ["drive", "back_yard", "kitchen"] {
            let train = &c[format!("{name}_train")];
            assert_eq!(train["command_topic"], "adaptd/cam1/cmd/train");
            let r = Request::parse(
                "train",
                train["payload_press"].as_str().expect("str").as_bytes(),
            )
            .expect("train parses");
            assert_eq!(r.camera.as_deref(), Some(name));
            assert_eq!(r.command, Command::Train { force: false });
            let rb = &c[format!("{name}_rollback")];
            assert_eq!(rb["command_topic"], "adaptd/cam1/cmd/rollback");
            assert_eq!(rb["entity_category"], "config");
            let r = Request::parse(
                "rollback",
                rb["payload_press"].as_str().expect("str").as_bytes(),
            )
            .expect("rollback parses");
            assert_eq!(r.camera.as_deref(), Some(name));
            assert_eq!(
                r.command,
                Command::Rollback {
                    target: RollbackTarget::Previous
                }
            );
        }
        assert_eq!(c["back_yard_train"]["name"], "Back yard train");
        assert_eq!(c["back_yard_rollback"]["name"], "Back yard roll back");
    }

    #[test]
    fn labels_that_are_not_key_safe_become_safe_keys() {
        let topics = Topics::new("adaptd", "cam1");
        let s = DiscoveredStream {
            name: "gate".into(),
            kind: DeviceKind::Camera,
            labels: vec!["traffic light".into()],
            zones: Vec::new(),
            is_detector: true,
        };
        let d = device_discovery(&topics, "1", 1, &[s]);
        let c = &d.payload["cmps"];
        assert_eq!(
            c["gate_traffic_light_snapshot"]["name"],
            "Gate traffic light snapshot"
        );
        assert_eq!(
            c["gate_all_traffic_light_count"]["state_topic"],
            "adaptd/cam1/gate/all/traffic light"
        );
        assert_eq!(c["gate_objects"]["event_types"], json!(["traffic light"]));
    }

    // --- removals -----------------------------------------------------------------------

    fn cmps(d: &Discovery) -> &Map<String, Value> {
        d.payload["cmps"].as_object().expect("cmps")
    }

    #[test]
    fn a_removed_camera_gets_platform_only_stubs() {
        let old = detector_msg();
        let current = msg(); // `drive` is gone
        let updated = with_removals(&current, &old.to_json())
            .expect("valid")
            .expect("something to remove");
        assert_eq!(updated.topic, current.topic);
        let (now, up) = (cmps(&current), cmps(&updated));
        // Everything current is there unchanged, and the root options too.
        for (k, v) in now {
            assert_eq!(&up[k], v, "{k}");
        }
        assert_eq!(updated.payload["dev"], current.payload["dev"]);
        assert_eq!(updated.payload["avty"], current.payload["avty"]);
        let stubs: Vec<(&String, &Value)> =
            up.iter().filter(|(k, _)| !now.contains_key(*k)).collect();
        let gone = cmps(&old).keys().filter(|k| !now.contains_key(*k)).count();
        assert_eq!(stubs.len(), gone);
        assert!(gone > 20, "{gone}");
        for (k, v) in &stubs {
            assert!(k.starts_with("drive_"), "{k}");
            assert_eq!(v.as_object().map(Map::len), Some(1), "{k}: {v}");
            assert_eq!(v["p"], cmps(&old)[k.as_str()]["p"], "{k}");
        }
        assert_eq!(up["drive_objects"], json!({"p": "event"}));
        assert_eq!(
            up["drive_driveway_car_occupancy"],
            json!({"p": "binary_sensor"})
        );
        assert_eq!(up["drive_score_threshold"], json!({"p": "number"}));
    }

    #[test]
    fn removals_do_not_repeat() {
        let old = detector_msg();
        let current = msg();
        let updated = with_removals(&current, &old.to_json())
            .expect("valid")
            .expect("removal");
        // The republished message comes back: nothing more to do, against the plain current
        // message (the next run) or the updated one (a reconnect in this run).
        assert_eq!(with_removals(&updated, &updated.to_json()), Ok(None));
        assert_eq!(with_removals(&current, &updated.to_json()), Ok(None));
        // The same message, or one with fewer components, removes nothing.
        assert_eq!(with_removals(&current, &current.to_json()), Ok(None));
        assert_eq!(with_removals(&old, &current.to_json()), Ok(None));
        // A later retained message naming other lost components adds to the stubs.
        let mut extra = current.payload.clone();
        extra["cmps"]["gone_sensor"] = json!({"p": "sensor", "state_topic": "x"});
        let again = with_removals(&updated, extra.to_string().as_bytes())
            .expect("valid")
            .expect("removal");
        assert_eq!(cmps(&again)["gone_sensor"], json!({"p": "sensor"}));
        assert_eq!(cmps(&again)["drive_objects"], json!({"p": "event"}));
    }

    #[test]
    fn long_names_and_components_without_a_platform() {
        let current = msg();
        let retained = json!({
            "device": {"identifiers": ["x"]},
            "components": {
                "old_a": {"platform": "switch", "command_topic": "t"},
                "old_b": {"state_topic": "t"},
                "old_c": {"p": "sensor"},
                "front_label": {"p": "sensor", "state_topic": "other"},
            }
        });
        let updated = with_removals(&current, retained.to_string().as_bytes())
            .expect("valid")
            .expect("removal");
        let up = cmps(&updated);
        assert_eq!(up["old_a"], json!({"p": "switch"}));
        assert!(up.get("old_b").is_none() && up.get("old_c").is_none());
        assert_eq!(up["front_label"], cmps(&current)["front_label"]);
        assert_eq!(up.len(), cmps(&current).len() + 1);
    }

    #[test]
    fn malformed_retained_messages_are_errors_not_panics() {
        let current = msg();
        assert_eq!(with_removals(&current, b""), Ok(None));
        assert_eq!(with_removals(&current, b" \n"), Ok(None));
        assert!(matches!(
            with_removals(&current, b"{not json"),
            Err(RetainedDiscoveryError::NotJson(_))
        ));
        assert!(matches!(
            with_removals(&current, &[0xff, 0xfe]),
            Err(RetainedDiscoveryError::NotJson(_))
        ));
        assert_eq!(
            with_removals(&current, b"[1, 2]"),
            Err(RetainedDiscoveryError::NotAnObject)
        );
        assert_eq!(
            with_removals(&current, br#"{"state_topic": "a/b"}"#),
            Err(RetainedDiscoveryError::NoComponents)
        );
        assert_eq!(
            with_removals(&current, br#"{"cmps": [1]}"#),
            Err(RetainedDiscoveryError::NoComponents)
        );
        // Odd component values are skipped, not fatal.
        let odd = br#"{"cmps": {"a": 1, "b": null, "c": {"p": 3}, "d": []}}"#;
        assert_eq!(with_removals(&current, odd), Ok(None));
    }
}
