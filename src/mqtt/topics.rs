//! Topic names. Every topic adaptd uses is built here, so the vocabulary of `DESIGN.md`'s MQTT
//! table lives in one place and incoming topics are classified by the same strings that built
//! the subscriptions.

use crate::mqtt::config::MqttConfig;

/// The zone level of [`Topics::camera_count`] that counts a camera's whole frame (a reserved
/// zone name).
pub const ALL_ZONES: &str = "all";

/// All topics of one device: `<prefix>/<device_id>/...` plus Home Assistant's
/// `<discovery_prefix>/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
    device_id: String,
    discovery_prefix: String,
}

/// What an incoming topic is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// `<base>/cmd/<verb>`; the verb is not checked here (the command parser names unknown
    /// verbs in its reply).
    Command(String),
    /// `<base>/samples/<label>` (`camera: None`) or `<base>/<camera>/samples/<label>`; neither
    /// the label nor the camera is checked here (see [`crate::mqtt::commands::Label::parse`]).
    Sample {
        camera: Option<String>,
        label: String,
    },
    /// `<discovery_prefix>/status`: Home Assistant's birth (`online`) and will (`offline`).
    HomeAssistantStatus,
    /// Anything else (for instance a deeper topic like `<base>/cmd/a/b`).
    Unknown,
}

impl Topics {
    /// Topics for `prefix` and `device_id`, with Home Assistant's default discovery prefix
    /// `homeassistant`. Both arguments are expected to be valid (see
    /// [`MqttConfig::validate`]).
    pub fn new(prefix: &str, device_id: &str) -> Topics {
        Topics {
            base: format!("{prefix}/{device_id}"),
            device_id: device_id.to_owned(),
            discovery_prefix: "homeassistant".to_owned(),
        }
    }

    /// The same topics with another Home Assistant discovery prefix.
    pub fn with_discovery_prefix(mut self, discovery_prefix: &str) -> Topics {
        self.discovery_prefix = discovery_prefix.to_owned();
        self
    }

    /// The topics a config describes.
    pub fn from_config(config: &MqttConfig) -> Topics {
        Topics::new(&config.prefix, &config.device_id())
            .with_discovery_prefix(&config.discovery_prefix)
    }

    /// `<prefix>/<device_id>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The device id (second level of the base topic, Home Assistant's device id).
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    fn under(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.base)
    }

    /// `online` / `stopped` / `offline` (the last will), retained.
    pub fn available(&self) -> String {
        self.under("available")
    }
    /// Retained JSON state: versions, paused, source, sample counts.
    pub fn state(&self) -> String {
        self.under("state")
    }
    /// `<base>/<camera>/<leaf>`: a camera's (or microphone's) own topics.
    fn camera(&self, camera: &str, leaf: &str) -> String {
        format!("{}/{camera}/{leaf}", self.base)
    }
    /// A camera's retained state.
    pub fn camera_state(&self, camera: &str) -> String {
        self.camera(camera, "state")
    }
    /// A camera's per-frame detections (not retained).
    pub fn camera_detections(&self, camera: &str) -> String {
        self.camera(camera, "detections")
    }
    /// A camera's label changes after consensus (not retained).
    pub fn camera_events(&self, camera: &str) -> String {
        self.camera(camera, "events")
    }
    /// A camera's tracked objects: `new` / `update` / `end`.
    pub fn camera_objects(&self, camera: &str) -> String {
        self.camera(camera, "objects")
    }
    /// A camera's retained JPEG of its latest frame.
    pub fn camera_snapshot(&self, camera: &str) -> String {
        self.camera(camera, "snapshot")
    }
    /// `<base>/<camera>/<zone>/<label>`: how many objects labelled `label` are in `zone`
    /// (retained, a number as text); `zone` = [`ALL_ZONES`] counts the whole frame.
    pub fn camera_count(&self, camera: &str, zone: &str, label: &str) -> String {
        format!("{}/{camera}/{zone}/{label}", self.base)
    }
    /// `<base>/<camera>/<label>/snapshot`: the retained JPEG of the latest object labelled
    /// `label` (its best frame with the box drawn).
    pub fn camera_label_snapshot(&self, camera: &str, label: &str) -> String {
        format!("{}/{camera}/{label}/snapshot", self.base)
    }
    /// `<base>/<camera>/samples/<label>`.
    pub fn camera_sample(&self, camera: &str, label: &str) -> String {
        format!("{}/{camera}/samples/{label}", self.base)
    }
    /// Subscription filter for per-camera samples: `<base>/+/samples/+`.
    pub fn camera_samples_filter(&self) -> String {
        self.under("+/samples/+")
    }
    /// Periodic statistics (not retained).
    pub fn stats(&self) -> String {
        self.under("stats")
    }
    /// Training started / finished reports (not retained).
    pub fn training(&self) -> String {
        self.under("training")
    }
    /// Replies to commands (not retained).
    pub fn reply(&self) -> String {
        self.under("reply")
    }
    /// `<base>/cmd/<verb>`, for tests and for Home Assistant buttons.
    pub fn cmd(&self, verb: &str) -> String {
        format!("{}/cmd/{verb}", self.base)
    }
    /// `<base>/samples/<label>`.
    pub fn sample(&self, label: &str) -> String {
        format!("{}/samples/{label}", self.base)
    }
    /// Subscription filter for commands: `<base>/cmd/+`.
    pub fn cmd_filter(&self) -> String {
        self.under("cmd/+")
    }
    /// Subscription filter for labeled samples: `<base>/samples/+`.
    pub fn samples_filter(&self) -> String {
        self.under("samples/+")
    }
    /// Home Assistant's status topic, `<discovery_prefix>/status`.
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }
    /// The device-based discovery topic, `<discovery_prefix>/device/<device_id>/config`.
    pub fn discovery_config(&self) -> String {
        format!("{}/device/{}/config", self.discovery_prefix, self.device_id)
    }

    /// Classifies an incoming topic.
    pub fn parse(&self, topic: &str) -> Incoming {
        if topic == self.ha_status() {
            return Incoming::HomeAssistantStatus;
        }
        let Some(rest) = topic
            .strip_prefix(self.base.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Incoming::Unknown;
        };
        let single_level = |s: &str| !s.is_empty() && !s.contains('/');
        if let Some(verb) = rest.strip_prefix("cmd/").filter(|v| single_level(v)) {
            Incoming::Command(verb.to_owned())
        } else if let Some(label) = rest.strip_prefix("samples/").filter(|l| single_level(l)) {
            Incoming::Sample {
                camera: None,
                label: label.to_owned(),
            }
        } else if let Some((camera, label)) = rest
            .split_once('/')
            .and_then(|(c, r)| Some((c, r.strip_prefix("samples/")?)))
            .filter(|(c, l)| single_level(c) && single_level(l))
        {
            Incoming::Sample {
                camera: Some(camera.to_owned()),
                label: label.to_owned(),
            }
        } else {
            Incoming::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let t = Topics::new("adaptd", "cam1");
        assert_eq!(t.base(), "adaptd/cam1");
        assert_eq!(t.available(), "adaptd/cam1/available");
        assert_eq!(t.state(), "adaptd/cam1/state");
        assert_eq!(t.camera_state("front"), "adaptd/cam1/front/state");
        assert_eq!(t.camera_detections("front"), "adaptd/cam1/front/detections");
        assert_eq!(t.camera_events("front"), "adaptd/cam1/front/events");
        assert_eq!(t.camera_snapshot("front"), "adaptd/cam1/front/snapshot");
        assert_eq!(t.camera_samples_filter(), "adaptd/cam1/+/samples/+");
        assert_eq!(
            t.camera_sample("front", "cat"),
            "adaptd/cam1/front/samples/cat"
        );
        assert_eq!(t.stats(), "adaptd/cam1/stats");
        assert_eq!(t.training(), "adaptd/cam1/training");
        assert_eq!(t.reply(), "adaptd/cam1/reply");
        assert_eq!(t.cmd_filter(), "adaptd/cam1/cmd/+");
        assert_eq!(t.samples_filter(), "adaptd/cam1/samples/+");
        assert_eq!(t.cmd("train"), "adaptd/cam1/cmd/train");
        assert_eq!(t.ha_status(), "homeassistant/status");
        assert_eq!(t.discovery_config(), "homeassistant/device/cam1/config");
        let t = t.with_discovery_prefix("ha");
        assert_eq!(t.ha_status(), "ha/status");
        assert_eq!(t.discovery_config(), "ha/device/cam1/config");
    }

    #[test]
    fn multi_level_prefix() {
        let t = Topics::new("home/adaptd", "cam1");
        assert_eq!(t.cmd_filter(), "home/adaptd/cam1/cmd/+");
        assert_eq!(
            t.parse("home/adaptd/cam1/cmd/pause"),
            Incoming::Command("pause".into())
        );
    }

    #[test]
    fn parse_incoming() {
        let t = Topics::new("adaptd", "cam1");
        assert_eq!(
            t.parse("adaptd/cam1/cmd/train"),
            Incoming::Command("train".into())
        );
        assert_eq!(
            t.parse("adaptd/cam1/samples/cat"),
            Incoming::Sample {
                camera: None,
                label: "cat".into()
            }
        );
        assert_eq!(
            t.parse("adaptd/cam1/front/samples/cat"),
            Incoming::Sample {
                camera: Some("front".into()),
                label: "cat".into()
            }
        );
        assert_eq!(
            t.parse("homeassistant/status"),
            Incoming::HomeAssistantStatus
        );
        for unknown in [
            "adaptd/cam1/cmd/",
            "adaptd/cam1/cmd",
            "adaptd/cam1/cmd/a/b",
            "adaptd/cam1/samples/",
            "adaptd/cam1/front/samples/",
            "adaptd/cam1/front/samples/a/b",
            "adaptd/cam1//samples/cat",
            "adaptd/cam1/front/cmd/train",
            "adaptd/cam10/cmd/train",
            "adaptd/cam2/cmd/train",
            "adaptd/cam1/state",
            "adaptd/cam1cmd/train",
            "other",
            "",
        ] {
            assert_eq!(t.parse(unknown), Incoming::Unknown, "{unknown}");
        }
    }

    #[test]
    fn from_config() {
        let c = MqttConfig {
            prefix: "p".into(),
            device_id: Some("d".into()),
            discovery_prefix: "hass".into(),
            ..MqttConfig::default()
        };
        let t = Topics::from_config(&c);
        assert_eq!(t.available(), "p/d/available");
        assert_eq!(t.ha_status(), "hass/status");
    }
}
