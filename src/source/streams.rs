//! `[[cameras]]` and `[[microphones]]`: the streams one daemon runs.
//!
//! ```toml
//! [[cameras]]
//! name = "front"
//! source = { kind = "dir", path = "/data/front", fps = 2 }
//! model = "nanodet-m"        # default: [model].name
//! sublabel_model = "mobilenetv2"   # default: [model].sublabel_model
//! fps = 2                    # cap on frames processed per second (default: no cap)
//! score_threshold = 0.4      # detectors: overrides [detect].score_threshold
//!
//! [[microphones]]
//! name = "kitchen"
//! source = { kind = "alsa", device = "plughw:CARD=Device,DEV=0" }
//! model = "resemblyzer-ge2e"
//! ```
//!
//! A stream's name is a topic level (`<prefix>/<device>/<camera>/detections`), so it obeys
//! the same alphabet as labels and must not collide with a device-level topic word. The
//! single `[source]` table of earlier versions is still read, as one stream named
//! [`LEGACY_NAME`], with a warning that names the new form ([`Streams::resolve`]).

use serde::{Deserialize, Serialize};

use super::config::SourceConfig;
// Stream names follow the one rule the command parser and the topic readers use too.
use crate::track::zones::{SceneConfig, ZoneConfig};
use crate::wire::check_stream_name;

/// The name the single `[source]` of earlier configurations gets.
pub const LEGACY_NAME: &str = "default";

fn default_true() -> bool {
    true
}

/// One `[[cameras]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Unique among the cameras and microphones; a topic level.
    pub name: String,
    /// `false` keeps the entry in the file without opening the camera.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where its frames come from (any image `kind`).
    pub source: SourceConfig,
    /// The backbone; default `[model].name`. Cameras naming the same model share one loaded
    /// copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// For a detector: the model that embeds each box for sub-labels; default
    /// `[model].sublabel_model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sublabel_model: Option<String>,
    /// Cap on frames processed per second (the source's own rate is the upper bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Detectors: boxes below this score are ignored; default `[detect].score_threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_threshold: Option<f32>,
    /// Detectors: the classes the sub-label model applies to (`applies_to`, formerly
    /// `sublabel_classes`); default `[detect].applies_to`.
    #[serde(
        default,
        rename = "applies_to",
        alias = "sublabel_classes",
        skip_serializing_if = "Option::is_none"
    )]
    pub sublabel_classes: Option<Vec<String>>,
    /// Detectors: the classes that become tracked objects (ids, events, zones, counts,
    /// snapshots); default `[detect].objects`. Other classes are still in `detections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<String>>,
    /// Detectors: `[[cameras.zones]]`, named polygons in normalised coordinates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneConfig>,
    /// Detectors: polygons where detections are ignored (their box's bottom centre inside).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<Vec<[f32; 2]>>,
    /// Detectors: an object is announced (and recorded) only once it entered one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_zones: Vec<String>,
}

/// One `[[microphones]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MicrophoneConfig {
    /// Unique among the cameras and microphones; a topic level.
    pub name: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `kind = "alsa"` (a sound card) or `kind = "audio"` (a pipe).
    pub source: SourceConfig,
    /// The speaker encoder; default `[model].name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Pictures or sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Camera,
    Microphone,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Camera => "camera",
            StreamKind::Microphone => "microphone",
        }
    }
}

/// One stream with every default filled in: what the daemon opens.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    pub name: String,
    pub kind: StreamKind,
    pub enabled: bool,
    pub source: SourceConfig,
    pub model: String,
    /// Detectors: the crop model (ignored by classifiers and microphones).
    pub sublabel_model: String,
    pub max_fps: Option<f64>,
    pub score_threshold: Option<f32>,
    /// Detectors: classes to sub-label (`None`: `[detect].sublabel_classes`).
    pub sublabel_classes: Option<Vec<String>>,
    /// Detectors: tracked classes, zones and masks.
    pub scene: SceneConfig,
}

/// The stream lists of a configuration, as written.
#[derive(Debug, Clone, Copy)]
pub struct Streams<'a> {
    pub legacy: Option<&'a SourceConfig>,
    pub cameras: &'a [CameraConfig],
    pub microphones: &'a [MicrophoneConfig],
}

/// The streams a configuration describes, and what a person should know about how.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub streams: Vec<StreamSpec>,
    /// For the log: a legacy `[source]` was read.
    pub warnings: Vec<String>,
}

impl Streams<'_> {
    /// Every problem of the lists: names (valid, unique, not reserved), each source's own
    /// rules, the right kind of source for a camera or a microphone, both forms at once.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(s) = self.legacy {
            if !self.cameras.is_empty() || !self.microphones.is_empty() {
                p.push(
                    "both [source] and [[cameras]]/[[microphones]] are set; move [source] into a \
                     [[cameras]] entry (name = \"default\", source = { kind = ... })"
                        .into(),
                );
            }
            p.extend(s.validate());
        }
        let mut seen: Vec<&str> = Vec::new();
        let entries = self
            .cameras
            .iter()
            .map(|c| (StreamKind::Camera, c.name.as_str(), &c.source))
            .chain(
                self.microphones
                    .iter()
                    .map(|m| (StreamKind::Microphone, m.name.as_str(), &m.source)),
            );
        for (i, (kind, name, source)) in entries.enumerate() {
            let table = match kind {
                StreamKind::Camera => "cameras",
                StreamKind::Microphone => "microphones",
            };
            let at = format!("[[{table}]] {name:?}");
            if let Err(e) = check_stream_name(name) {
                p.push(format!(
                    "[[{table}]] entry {}: name {name:?} is not a valid stream name: {e}",
                    i + 1
                ));
            }
            if seen.contains(&name) {
                p.push(format!(
                    "{at}: the name is used twice; every camera and microphone needs its own"
                ));
            }
            seen.push(name);
            match (kind, source.is_audio()) {
                (StreamKind::Camera, true) => p.push(format!(
                    "{at}: source kind = {:?} is a microphone; put it under [[microphones]]",
                    source.kind()
                )),
                (StreamKind::Microphone, false) => p.push(format!(
                    "{at}: source kind = {:?} gives pictures; a microphone needs kind = \"alsa\" \
                     (a sound card) or kind = \"audio\" (a pipe)",
                    source.kind()
                )),
                _ => {}
            }
            p.extend(
                source
                    .validate()
                    .into_iter()
                    .map(|m| m.replacen("[source]", &format!("{at}: source"), 1)),
            );
        }
        for c in self.cameras {
            let at = format!("[[cameras]] {:?}", c.name);
            if let Some(v) = c.fps {
                if !(v.is_finite() && v > 0.0 && v <= super::config::MAX_FPS) {
                    p.push(format!(
                        "{at}: fps = {v} is out of range; allowed: above 0 up to {}",
                        super::config::MAX_FPS
                    ));
                }
            }
            // Labels are the detector's, checked when it is loaded.
            p.extend(crate::track::zones::validate(
                &c.name,
                &c.zones,
                &c.masks,
                &c.required_zones,
                None,
            ));
            if let Some(v) = c.score_threshold {
                if !(0.0..=1.0).contains(&v) {
                    p.push(format!(
                        "{at}: score_threshold = {v} is out of range; allowed: 0.0 to 1.0"
                    ));
                }
            }
            for (key, v) in [("model", &c.model), ("sublabel_model", &c.sublabel_model)] {
                if v.as_deref().is_some_and(|m| m.trim().is_empty()) {
                    p.push(format!(
                        "{at}: {key} is empty; give a model name or leave it out"
                    ));
                }
            }
        }
        for m in self.microphones {
            if m.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
                p.push(format!(
                    "[[microphones]] {:?}: model is empty; give a model name or leave it out",
                    m.name
                ));
            }
        }
        p
    }

    /// The streams to run, with `[model]`'s names as defaults. Without any list, the legacy
    /// `[source]` (or, with none at all, the first V4L2 camera) is one stream named
    /// [`LEGACY_NAME`]. Call [`Streams::validate`] first.
    pub fn resolve(&self, default_model: &str, default_sublabel: &str) -> Resolved {
        let mut warnings = Vec::new();
        if self.cameras.is_empty() && self.microphones.is_empty() {
            let source = self.legacy.cloned().unwrap_or_default();
            if self.legacy.is_some() {
                warnings.push(format!(
                    "[source] is the single-camera form of earlier versions: it runs as one {} \
                     named {LEGACY_NAME:?}; write it as [[{}]] with name = \"...\" and \
                     source = {{ kind = ... }} (see docs/configuration.md)",
                    if source.is_audio() {
                        "microphone"
                    } else {
                        "camera"
                    },
                    if source.is_audio() {
                        "microphones"
                    } else {
                        "cameras"
                    },
                ));
            }
            let kind = if source.is_audio() {
                StreamKind::Microphone
            } else {
                StreamKind::Camera
            };
            return Resolved {
                streams: vec![StreamSpec {
                    name: LEGACY_NAME.into(),
                    kind,
                    enabled: true,
                    source,
                    model: default_model.into(),
                    sublabel_model: default_sublabel.into(),
                    max_fps: None,
                    score_threshold: None,
                    sublabel_classes: None,
                    scene: SceneConfig::default(),
                }],
                warnings,
            };
        }
        let cameras = self.cameras.iter().map(|c| StreamSpec {
            name: c.name.clone(),
            kind: StreamKind::Camera,
            enabled: c.enabled,
            source: c.source.clone(),
            model: c.model.clone().unwrap_or_else(|| default_model.into()),
            sublabel_model: c
                .sublabel_model
                .clone()
                .unwrap_or_else(|| default_sublabel.into()),
            max_fps: c.fps,
            score_threshold: c.score_threshold,
            sublabel_classes: c.sublabel_classes.clone(),
            scene: SceneConfig {
                objects: c.objects.clone(),
                zones: c.zones.clone(),
                masks: c.masks.clone(),
                required_zones: c.required_zones.clone(),
            },
        });
        let microphones = self.microphones.iter().map(|m| StreamSpec {
            name: m.name.clone(),
            kind: StreamKind::Microphone,
            enabled: m.enabled,
            source: m.source.clone(),
            model: m.model.clone().unwrap_or_else(|| default_model.into()),
            sublabel_model: default_sublabel.into(),
            max_fps: None,
            score_threshold: None,
            sublabel_classes: None,
            scene: SceneConfig::default(),
        });
        Resolved {
            streams: cameras.chain(microphones).collect(),
            warnings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &str) -> SourceConfig {
        SourceConfig::Dir {
            path: path.into(),
            fps: 2.0,
            repeat: true,
        }
    }

    fn camera(name: &str) -> CameraConfig {
        CameraConfig {
            name: name.into(),
            enabled: true,
            source: dir("/frames"),
            model: None,
            sublabel_model: None,
            fps: None,
            score_threshold: None,
            sublabel_classes: None,
            objects: None,
            zones: Vec::new(),
            masks: Vec::new(),
            required_zones: Vec::new(),
        }
    }

    #[test]
    fn a_bad_name_is_refused_by_the_one_stream_name_rule() {
        let cams = [camera("Front"), camera("state")];
        let s = Streams {
            legacy: None,
            cameras: &cams,
            microphones: &[],
        };
        let p = s.validate().join("\n");
        assert!(
            p.contains("entry 1: name \"Front\"") && p.contains("lower-case"),
            "{p}"
        );
        assert!(
            p.contains("entry 2: name \"state\"") && p.contains("device-level"),
            "{p}"
        );
    }

    #[test]
    fn legacy_source_is_one_stream_named_default_with_a_warning() {
        let legacy = dir("/frames");
        let s = Streams {
            legacy: Some(&legacy),
            cameras: &[],
            microphones: &[],
        };
        assert!(s.validate().is_empty());
        let r = s.resolve("mobilenetv2", "mobilenetv2");
        assert_eq!(r.streams.len(), 1);
        assert_eq!(r.streams[0].name, LEGACY_NAME);
        assert_eq!(r.streams[0].kind, StreamKind::Camera);
        assert_eq!(r.streams[0].source, legacy);
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("[[cameras]]"), "{:?}", r.warnings);
        let audio = SourceConfig::Audio {
            path: "-".into(),
            sample_rate: 16000,
            channels: 1,
        };
        let s = Streams {
            legacy: Some(&audio),
            cameras: &[],
            microphones: &[],
        };
        let r = s.resolve("resemblyzer-ge2e", "mobilenetv2");
        assert_eq!(r.streams[0].kind, StreamKind::Microphone);
        assert!(r.warnings[0].contains("[[microphones]]"));
    }

    #[test]
    fn nothing_configured_is_the_first_webcam_without_a_warning() {
        let s = Streams {
            legacy: None,
            cameras: &[],
            microphones: &[],
        };
        let r = s.resolve("mobilenetv2", "mobilenetv2");
        assert_eq!(r.streams[0].source, SourceConfig::default());
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn cameras_take_model_defaults_and_their_own_overrides() {
        let mut b = camera("back");
        b.model = Some("nanodet-m".into());
        b.fps = Some(1.0);
        let cams = [camera("front"), b];
        let s = Streams {
            legacy: None,
            cameras: &cams,
            microphones: &[],
        };
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        let r = s.resolve("mobilenetv2", "efficientnet-lite0");
        assert_eq!(r.streams[0].model, "mobilenetv2");
        assert_eq!(r.streams[1].model, "nanodet-m");
        assert_eq!(r.streams[1].sublabel_model, "efficientnet-lite0");
        assert_eq!(r.streams[1].max_fps, Some(1.0));
    }

    #[test]
    fn every_problem_is_named_with_its_stream() {
        let mut twice = camera("front");
        twice.score_threshold = Some(2.0);
        let mut audio = camera("mic");
        audio.source = SourceConfig::Audio {
            path: "-".into(),
            sample_rate: 16000,
            channels: 1,
        };
        let mut bad_fps = camera("slow");
        bad_fps.source = SourceConfig::Dir {
            path: "/f".into(),
            fps: 0.0,
            repeat: true,
        };
        let cams = [camera("front"), twice, audio, bad_fps, camera("Bad")];
        let mics = [MicrophoneConfig {
            name: "kitchen".into(),
            enabled: true,
            source: dir("/x"),
            model: None,
        }];
        let legacy = dir("/frames");
        let s = Streams {
            legacy: Some(&legacy),
            cameras: &cams,
            microphones: &mics,
        };
        let p = s.validate().join("\n");
        for needle in [
            "both [source] and [[cameras]]",
            "[[cameras]] \"front\": the name is used twice",
            "[[cameras]] \"front\": score_threshold = 2",
            "[[cameras]] \"mic\": source kind = \"audio\" is a microphone",
            "[[cameras]] \"slow\": source.fps = 0",
            "[[cameras]] entry 5: name \"Bad\" is not a valid stream name",
            "[[microphones]] \"kitchen\": source kind = \"dir\" gives pictures",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
    }
}
