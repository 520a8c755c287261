//! The configuration file: one TOML document, strict, with every problem reported at once.
//!
//! A daemon on a pole is configured over SSH by someone who will not read source code, so a
//! typo must never be silently ignored (unknown keys are errors) and one run of
//! `adaptd check-config` must list every problem, each naming the file, the key and what is
//! allowed. To get all problems rather than the first, each key is deserialised on its own
//! (serde stops at the first error of a document), then the cross-field rules run.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::runtime::depthwise::DepthwiseKernels;
use crate::runtime::{BackendChoice, BackendOptions};
use crate::vision::image_io::DecodeLimits;

/// Default state directory: under systemd the unit's `StateDirectory=` (`$STATE_DIRECTORY`,
/// which with `DynamicUser=yes` is neither root's nor a home directory), else
/// /var/lib/adaptd for root and the XDG data dir for users.
pub fn default_state_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    // systemd may list several directories separated by `:`; adaptd's unit names one.
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        let dir = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        if !dir.is_empty() {
            return PathBuf::from(dir);
        }
    }
    // /proc/self belongs to the process's effective uid: no libc call needed.
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/adaptd");
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("adaptd")
}

/// A configuration that failed to load: every problem found.
#[derive(Debug, thiserror::Error)]
#[error("{}: {} problem{} in the configuration:\n{}", path.display(), problems.len(),
    if problems.len() == 1 { "" } else { "s" },
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Samples, heads and downloaded models live here.
    pub state_dir: Option<PathBuf>,
    pub model: ModelConfig,
    pub image: ImageConfig,
    pub classify: ClassifyConfig,
    pub detect: DetectConfig,
    pub samples: SamplesConfig,
    pub train: TrainSection,
    /// The single source of earlier versions: read as one camera (or microphone) named
    /// `default`, with a warning (see [`crate::source::streams`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::source::SourceConfig>,
    /// `[[cameras]]`: the cameras one daemon runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cameras: Vec<crate::source::CameraConfig>,
    /// `[[microphones]]`: the microphones one daemon runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub microphones: Vec<crate::source::MicrophoneConfig>,
    pub mqtt: crate::mqtt::MqttConfig,
    pub consensus: crate::consensus::ConsensusConfig,
    /// When the backbone may skip a frame (the daemon, image sources).
    pub motion: crate::vision::motion::MotionConfig,
    /// `[track]`: detections into objects, and when an object's crop is named.
    pub track: crate::track::TrackerConfig,
    /// `[events]`: the stored history of tracked objects.
    pub events: crate::events::EventsConfig,
    /// `[frames]`: the recent frames a `label` command can point at.
    pub frames: FramesConfig,
    /// `[snapshots]`: each tracked object's best frame and crop on disk.
    pub snapshots: SnapshotsConfig,
    /// `[http]`: the web page, the JSON API and `/metrics`.
    pub http: crate::http::HttpConfig,
}

/// `[snapshots]`: each tracked object's best frame and crop on disk (written by
/// [`crate::daemon::snapshots`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotsConfig {
    /// Save snapshots at all. The store itself does not check it: the daemon opens no store
    /// when it is off, so nothing is created in the state dir.
    pub enabled: bool,
    /// Days a snapshot is kept (by the time it was last written).
    pub retain_days: f64,
    /// Total size of the snapshots dir, all cameras, in MiB; the oldest objects go first.
    pub max_mb: u64,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
    /// Margin around the clean crop, as a fraction of the box size (0.15): context for a
    /// person reviewing it.
    pub crop_margin: f32,
    /// Longest side of the annotated frame in pixels (the frame is shrunk, never enlarged;
    /// None = as captured).
    pub max_side: Option<u32>,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        SnapshotsConfig {
            enabled: true,
            retain_days: 10.0,
            max_mb: 500,
            quality: 80,
            crop_margin: 0.15,
            max_side: Some(1280),
        }
    }
}

impl SnapshotsConfig {
    /// Range rules; each message names the key and what is allowed.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.retain_days.is_finite() && self.retain_days > 0.0 && self.retain_days <= 3650.0) {
            p.push(format!(
                "[snapshots].retain_days = {} is out of range; allowed: above 0 up to 3650",
                self.retain_days
            ));
        }
        if !(1..=1_048_576).contains(&self.max_mb) {
            p.push(format!(
                "[snapshots].max_mb = {} is out of range; allowed: 1 to 1048576",
                self.max_mb
            ));
        }
        if !(1..=100).contains(&self.quality) {
            p.push(format!(
                "[snapshots].quality = {} is out of range; allowed: 1 to 100",
                self.quality
            ));
        }
        if !(self.crop_margin.is_finite() && (0.0..=1.0).contains(&self.crop_margin)) {
            p.push(format!(
                "[snapshots].crop_margin = {} is out of range; allowed: 0 to 1 (a fraction of the box size)",
                self.crop_margin
            ));
        }
        if let Some(m) = self.max_side {
            if !(64..=16_384).contains(&m) {
                p.push(format!(
                    "[snapshots].max_side = {m} is out of range; allowed: 64 to 16384, or leave \
                     it out to keep frames as captured"
                ));
            }
        }
        p
    }
}

/// `[frames]`: how many recent frames (and tracked objects' best crops) the daemon keeps so a
/// `label` command names the picture the person saw, not whatever frame is current when the
/// command arrives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FramesConfig {
    /// Seconds of frames kept per camera.
    pub keep_s: f64,
    /// Memory for them per camera, MB (the oldest go first when it is reached).
    pub max_mb: u32,
    /// Ended objects whose best crop is kept for `label {"id": ...}`, per camera.
    pub keep_ended_objects: u32,
}

impl Default for FramesConfig {
    fn default() -> Self {
        FramesConfig {
            keep_s: 30.0,
            max_mb: 48,
            keep_ended_objects: 50,
        }
    }
}

impl FramesConfig {
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.keep_s.is_finite() && self.keep_s >= 0.0 && self.keep_s <= 3600.0) {
            p.push(format!(
                "[frames].keep_s = {} is out of range; allowed: 0 to 3600",
                self.keep_s
            ));
        }
        if self.max_mb > 4096 {
            p.push(format!(
                "[frames].max_mb = {} is out of range; allowed: 0 to 4096",
                self.max_mb
            ));
        }
        if self.keep_ended_objects > 10_000 {
            p.push(format!(
                "[frames].keep_ended_objects = {} is out of range; allowed: 0 to 10000",
                self.keep_ended_objects
            ));
        }
        p
    }
}

/// `[model]`: which backbone to run and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A built-in model name or a path to a manifest `.toml`.
    pub name: String,
    /// Where model files are looked for first.
    pub dir: Option<PathBuf>,
    /// Images per backbone run (the input shape is pinned to it).
    pub batch: usize,
    /// For a detector: the classification backbone that embeds each box for the trainable
    /// head (sub-labels such as person -> `alice`). Ignored for classifiers, whose own
    /// embedding feeds the head.
    pub sublabel_model: String,
    /// What runs the models: `tract` (built in, the default), `onnxruntime` (its shared
    /// library loaded at run time; an error when it cannot be loaded) or `auto` (onnxruntime
    /// when its library loads, tract otherwise).
    pub backend: BackendChoice,
    /// The backend of the sub-label model; default: `backend`.
    pub sublabel_backend: Option<BackendChoice>,
    /// Intra-op threads per model run (tract: matrix products only; onnxruntime: all ops).
    pub threads: usize,
    /// onnxruntime's shared library, e.g. the pip wheel's
    /// `.../site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0`. Default:
    /// `$ORT_DYLIB_PATH`, then `libonnxruntime.so` on the system's library search path.
    pub onnxruntime_library: Option<PathBuf>,
    /// Whose depthwise convolution tract runs: `auto` (adaptd's vectorised kernel where
    /// tract has no SIMD one: x86_64 and 32-bit ARM; tract's own on aarch64), `adaptd` or
    /// `tract`. Results agree within float rounding; only the speed differs.
    pub tract_depthwise: DepthwiseKernels,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            name: "mobilenetv2".into(),
            dir: None,
            batch: 1,
            sublabel_model: "mobilenetv2".into(),
            backend: BackendChoice::Tract,
            sublabel_backend: None,
            threads: 1,
            onnxruntime_library: None,
            tract_depthwise: DepthwiseKernels::Auto,
        }
    }
}

impl ModelConfig {
    /// How to run the main model.
    pub fn backend_options(&self) -> BackendOptions {
        BackendOptions {
            choice: self.backend,
            threads: self.threads,
            library: self.onnxruntime_library.clone(),
            tract_depthwise: self.tract_depthwise,
        }
    }

    /// How to run the sub-label (crop) model.
    pub fn sublabel_backend_options(&self) -> BackendOptions {
        self.backend_options()
            .with_choice(self.sublabel_backend.unwrap_or(self.backend))
    }
}

/// `[image]`: limits on untrusted images.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    pub max_bytes: u64,
    pub max_pixels: u64,
}

impl Default for ImageConfig {
    fn default() -> Self {
        let d = DecodeLimits::default();
        ImageConfig {
            max_bytes: d.max_bytes,
            max_pixels: d.max_pixels,
        }
    }
}

impl ImageConfig {
    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_bytes: self.max_bytes,
            max_pixels: self.max_pixels,
        }
    }
}

/// `[classify]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifyConfig {
    pub top_k: usize,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig { top_k: 5 }
    }
}

/// `[detect]`: overrides of the manifest's detection thresholds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    pub score_threshold: Option<f32>,
    pub iou_threshold: Option<f32>,
    pub max_detections: Option<usize>,
    /// The detector classes the sub-label model applies to (`applies_to`, formerly
    /// `sublabel_classes`); empty: `["person"]`. A person's name belongs on `person` boxes,
    /// not on the cup beside them.
    #[serde(rename = "applies_to", alias = "sublabel_classes")]
    pub sublabel_classes: Vec<String>,
    /// The classes that become tracked objects (ids, events, zones, counts, snapshots), for
    /// cameras without their own `objects`; empty: `["person"]` when the detector has it,
    /// else every class. Other classes are still reported in `detections`.
    pub objects: Vec<String>,
}

impl DetectConfig {
    /// A detector manifest's settings with this section's overrides; `None` for other models.
    pub fn for_manifest(
        &self,
        m: &crate::model::Manifest,
    ) -> Option<crate::model::manifest::DetectSpec> {
        m.detect.as_ref().map(|d| self.apply(d))
    }

    /// The manifest's detection settings with this section's overrides applied.
    pub fn apply(
        &self,
        spec: &crate::model::manifest::DetectSpec,
    ) -> crate::model::manifest::DetectSpec {
        let mut s = spec.clone();
        if let Some(v) = self.score_threshold {
            s.score_threshold = v;
        }
        if let Some(v) = self.iou_threshold {
            s.iou_threshold = v;
        }
        if let Some(v) = self.max_detections {
            s.max_detections = v;
        }
        s
    }
}

/// `[samples]`: how many labeled samples are kept, and how they are split.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplesConfig {
    /// Samples kept per label; the next one evicts by `policy`.
    pub max_per_label: usize,
    /// `oldest` (evict the first stored) or `reservoir` (keep a uniform sample of all seen).
    pub policy: String,
    /// Seed of the reservoir's draws (reproducible eviction).
    pub seed: u64,
    /// Total embedding + thumbnail bytes; past it, adding is refused ("store full").
    pub max_total_mb: u64,
    /// Share of each label's samples held out to judge new heads.
    pub holdout_fraction: f64,
}

impl Default for SamplesConfig {
    fn default() -> Self {
        let d = crate::store::StoreOptions::default();
        SamplesConfig {
            max_per_label: d.limits.max_per_label,
            policy: "oldest".into(),
            seed: 1,
            max_total_mb: d.limits.max_total_bytes >> 20,
            holdout_fraction: d.holdout_fraction,
        }
    }
}

impl SamplesConfig {
    /// The sample store's options.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        let mut o = crate::store::StoreOptions::default();
        o.limits.max_per_label = self.max_per_label;
        o.limits.per_label_policy = if self.policy == "reservoir" {
            crate::store::EvictionPolicy::Reservoir { seed: self.seed }
        } else {
            crate::store::EvictionPolicy::Oldest
        };
        o.limits.max_total_bytes = self.max_total_mb << 20;
        o.holdout_fraction = self.holdout_fraction;
        o
    }
}

/// `[train]`: the head trainer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// `softmax` (logistic regression, the default) or `mlp` (one hidden layer).
    pub head: String,
    /// MLP hidden units.
    pub hidden: usize,
    /// MLP dropout during training.
    pub dropout: f32,
    pub learning_rate: f32,
    pub weight_decay: f32,
    pub batch_size: usize,
    pub epochs_max: usize,
    /// Epochs without holdout improvement before stopping.
    pub patience: usize,
    /// Training stops (keeping the best weights) after this long.
    pub time_budget_secs: u64,
    pub seed: u64,
    /// Weight the loss so rare labels count as much as common ones.
    pub class_balanced: bool,
    /// The daemon retrains every this many seconds when samples were added since the last
    /// run (0 = never on a timer).
    pub interval_secs: u64,
    /// The daemon retrains as soon as this many samples were added since the last run
    /// (0 = never on a count).
    pub min_new_samples: u64,
}

impl Default for TrainSection {
    fn default() -> Self {
        let d = crate::adapt::TrainConfig::default();
        let (hidden, dropout) = match crate::adapt::TrainConfig::mlp().head {
            crate::adapt::HeadKind::Mlp { hidden, dropout } => (hidden, dropout),
            crate::adapt::HeadKind::Softmax | crate::adapt::HeadKind::Centroid => (128, 0.2),
        };
        TrainSection {
            head: "softmax".into(),
            hidden,
            dropout,
            learning_rate: d.learning_rate,
            weight_decay: d.weight_decay,
            batch_size: d.batch_size,
            epochs_max: d.epochs_max,
            patience: d.patience,
            time_budget_secs: d.time_budget.as_secs(),
            seed: d.seed,
            class_balanced: d.class_balanced,
            interval_secs: 0,
            min_new_samples: 0,
        }
    }
}

impl TrainSection {
    /// The trainer's configuration; `head` overrides the section's head kind.
    pub fn train_config(&self, head: Option<&str>) -> crate::adapt::TrainConfig {
        let kind = match head.unwrap_or(&self.head) {
            "mlp" => crate::adapt::HeadKind::Mlp {
                hidden: self.hidden,
                dropout: self.dropout,
            },
            "centroid" => crate::adapt::HeadKind::Centroid,
            _ => crate::adapt::HeadKind::Softmax,
        };
        crate::adapt::TrainConfig {
            head: kind,
            epochs_max: self.epochs_max,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            patience: self.patience,
            seed: self.seed,
            time_budget: std::time::Duration::from_secs(self.time_budget_secs),
            class_balanced: self.class_balanced,
            ..crate::adapt::TrainConfig::default()
        }
    }
}

const SECTIONS: &[&str] = &[
    "state_dir",
    "model",
    "image",
    "classify",
    "detect",
    "samples",
    "train",
    "source",
    "cameras",
    "microphones",
    "mqtt",
    "consensus",
    "motion",
    "track",
    "events",
    "frames",
    "snapshots",
    "http",
];

impl Config {
    /// The stream lists as written (see [`crate::source::streams::Streams::resolve`]).
    pub fn streams(&self) -> crate::source::streams::Streams<'_> {
        crate::source::streams::Streams {
            legacy: self.source.as_ref(),
            cameras: &self.cameras,
            microphones: &self.microphones,
        }
    }

    /// The streams to run, every default filled in, and warnings for the log.
    pub fn resolved_streams(&self) -> crate::source::streams::Resolved {
        self.streams()
            .resolve(&self.model.name, &self.model.sublabel_model)
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            path: path.to_path_buf(),
            problems,
        };
        let table: toml::Table =
            toml::from_str(text).map_err(|e| fail(vec![syntax_error(text, &e)]))?;
        let mut problems = Vec::new();
        for (key, value) in &table {
            match key.as_str() {
                "state_dir" => check_key::<Config>(key, value, "", &mut problems),
                "model" => check_section::<ModelConfig>(key, value, &mut problems),
                "image" => check_section::<ImageConfig>(key, value, &mut problems),
                "classify" => check_section::<ClassifyConfig>(key, value, &mut problems),
                "detect" => check_section::<DetectConfig>(key, value, &mut problems),
                "samples" => check_section::<SamplesConfig>(key, value, &mut problems),
                "train" => check_section::<TrainSection>(key, value, &mut problems),
                "mqtt" => check_section::<crate::mqtt::MqttConfig>(key, value, &mut problems),
                "consensus" => {
                    check_section::<crate::consensus::ConsensusConfig>(key, value, &mut problems)
                }
                "motion" => {
                    check_section::<crate::vision::motion::MotionConfig>(key, value, &mut problems)
                }
                "track" => check_section::<crate::track::TrackerConfig>(key, value, &mut problems),
                "events" => check_section::<crate::events::EventsConfig>(key, value, &mut problems),
                "frames" => check_section::<FramesConfig>(key, value, &mut problems),
                "snapshots" => check_section::<SnapshotsConfig>(key, value, &mut problems),
                "http" => check_section::<crate::http::HttpConfig>(key, value, &mut problems),
                // Tagged by `kind`: its keys only make sense together.
                "source" => {
                    if let Err(e) = value.clone().try_into::<crate::source::SourceConfig>() {
                        problems.push(format!("[source]: {}", e.message().trim_end()));
                    }
                }
                "cameras" => check_list::<crate::source::CameraConfig>(key, value, &mut problems),
                "microphones" => {
                    check_list::<crate::source::MicrophoneConfig>(key, value, &mut problems)
                }
                other => problems.push(format!(
                    "unknown key `{other}`; allowed top-level keys: {}",
                    SECTIONS.join(", ")
                )),
            }
        }
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| fail(vec![e.message().to_string()]))?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems))
        }
    }

    /// Cross-field and range rules; each message names the key and the allowed values.
    pub fn validate(&self) -> Vec<String> {
        let mut p = self.motion.validate();
        p.extend(self.track.validate());
        p.extend(self.events.validate());
        p.extend(self.frames.validate());
        p.extend(self.snapshots.validate());
        p.extend(self.http.validate());
        if self.model.name.trim().is_empty() {
            p.push("[model].name is empty; give a built-in model name (e.g. mobilenetv2) or a manifest path".into());
        }
        if self.model.sublabel_model.trim().is_empty() {
            p.push("[model].sublabel_model is empty; give a classification model name (e.g. mobilenetv2) or a manifest path".into());
        }
        if !(1..=64).contains(&self.model.batch) {
            p.push(format!(
                "[model].batch = {} is out of range; allowed: 1 to 64",
                self.model.batch
            ));
        }
        if !(1..=64).contains(&self.model.threads) {
            p.push(format!(
                "[model].threads = {} is out of range; allowed: 1 to 64",
                self.model.threads
            ));
        }
        if !crate::runtime::ONNXRUNTIME_BUILT {
            for (key, choice) in [
                ("backend", Some(self.model.backend)),
                ("sublabel_backend", self.model.sublabel_backend),
            ] {
                if choice == Some(BackendChoice::Onnxruntime) {
                    p.push(format!(
                        "[model].{key} = \"onnxruntime\", but this adaptd was built without the \
                         `onnxruntime` cargo feature; rebuild with `--features onnxruntime`, or use \
                         \"tract\" (or \"auto\", which falls back to tract)"
                    ));
                }
            }
        }
        if self
            .model
            .onnxruntime_library
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            p.push("[model].onnxruntime_library is empty; give the path of libonnxruntime.so.<version> or leave the key out".into());
        }
        if self.image.max_bytes == 0 {
            p.push("[image].max_bytes must be greater than 0".into());
        }
        if self.image.max_pixels == 0 {
            p.push("[image].max_pixels must be greater than 0".into());
        }
        if !(1..=1000).contains(&self.classify.top_k) {
            p.push(format!(
                "[classify].top_k = {} is out of range; allowed: 1 to 1000",
                self.classify.top_k
            ));
        }
        for (key, v) in [
            ("score_threshold", self.detect.score_threshold),
            ("iou_threshold", self.detect.iou_threshold),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    p.push(format!(
                        "[detect].{key} = {v} is out of range; allowed: 0.0 to 1.0"
                    ));
                }
            }
        }
        if self.detect.max_detections == Some(0) {
            p.push("[detect].max_detections must be at least 1".into());
        }
        let s = &self.samples;
        if s.max_per_label == 0 {
            p.push("[samples].max_per_label must be at least 1".into());
        }
        if !["oldest", "reservoir"].contains(&s.policy.as_str()) {
            p.push(format!(
                "[samples].policy = {:?}; allowed: \"oldest\", \"reservoir\"",
                s.policy
            ));
        }
        if s.max_total_mb == 0 {
            p.push("[samples].max_total_mb must be at least 1".into());
        }
        if !(s.holdout_fraction > 0.0 && s.holdout_fraction < 1.0) {
            p.push(format!(
                "[samples].holdout_fraction = {} is out of range; allowed: above 0 and below 1",
                s.holdout_fraction
            ));
        }
        let t = &self.train;
        if !["softmax", "mlp", "centroid"].contains(&t.head.as_str()) {
            p.push(format!(
                "[train].head = {:?}; allowed: \"softmax\", \"mlp\", \"centroid\"",
                t.head
            ));
        }
        if t.interval_secs != 0 && t.interval_secs < 10 {
            p.push(format!(
                "[train].interval_secs = {} is too short; allowed: 0 (off) or at least 10",
                t.interval_secs
            ));
        }
        if let Err(e) = t.train_config(None).validate() {
            p.push(format!("[train]: {e}"));
        }
        p.extend(self.streams().validate());
        p.extend(self.mqtt.validate());
        p.extend(self.consensus.validate());
        p
    }
}

/// Checks each entry of an array of tables (`[[cameras]]`) on its own, naming it by its
/// position and, when it has one, its name.
fn check_list<T: DeserializeOwned>(section: &str, value: &toml::Value, problems: &mut Vec<String>) {
    let Some(entries) = value.as_array() else {
        problems.push(format!(
            "`{section}` must be a list of tables ([[{section}]]), found a {}",
            value.type_str()
        ));
        return;
    };
    for (i, entry) in entries.iter().enumerate() {
        if let Err(e) = entry.clone().try_into::<T>() {
            let name = entry
                .get("name")
                .and_then(toml::Value::as_str)
                .map(|n| format!(" {n:?}"))
                .unwrap_or_default();
            problems.push(format!(
                "[[{section}]] entry {}{name}: {}",
                i + 1,
                e.message().trim_end()
            ));
        }
    }
}

/// Checks each key of a section on its own, so that every bad key is reported.
fn check_section<T: DeserializeOwned>(
    section: &str,
    value: &toml::Value,
    problems: &mut Vec<String>,
) {
    let Some(table) = value.as_table() else {
        problems.push(format!(
            "`{section}` must be a table ([{section}]), found a {}",
            value.type_str()
        ));
        return;
    };
    for (key, v) in table {
        check_key::<T>(key, v, section, problems);
    }
}

fn check_key<T: DeserializeOwned>(
    key: &str,
    value: &toml::Value,
    section: &str,
    problems: &mut Vec<String>,
) {
    let mut one = toml::Table::new();
    one.insert(key.to_string(), value.clone());
    if let Err(e) = toml::Value::Table(one).try_into::<T>() {
        let name = if section.is_empty() {
            key.to_string()
        } else {
            format!("[{section}].{key}")
        };
        problems.push(format!("{name}: {}", e.message().trim_end()));
    }
}

/// A TOML syntax error with its line number.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            format!(
                "TOML syntax error at line {line}: {}",
                e.message().trim_end()
            )
        }
        None => format!("TOML syntax error: {}", e.message().trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_config_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.model.name, "mobilenetv2");
        assert_eq!(c.model.batch, 1);
        assert_eq!(c.classify.top_k, 5);
    }

    #[test]
    fn every_problem_is_reported_with_key_and_file() {
        let err = parse(
            "colour = 1\n[model]\nbatch = \"two\"\nnmae = \"x\"\n[classify]\ntop_k = 0\n[detect]\nscore_threshold = 3.0\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("test.toml:"), "{text}");
        assert!(text.contains("unknown key `colour`"), "{text}");
        assert!(text.contains("[model].batch"), "{text}");
        assert!(
            text.contains("[model].nmae") && text.contains("expected one of"),
            "{text}"
        );
        assert_eq!(err.problems.len(), 3, "{text}");
        // Range rules run once the types are right.
        let err = parse("[classify]\ntop_k = 0\n[detect]\nscore_threshold = 3.0\n").unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(
            err.to_string().contains("[detect].score_threshold = 3"),
            "{err}"
        );
    }

    #[test]
    fn the_track_events_and_frames_sections_are_read() {
        let c = parse(
            "[track]\nmax_lost_s = 1.0\n[track.sublabel]\nmin_attempts = 4\n\
             [events]\nretain_days = 3.0\n[frames]\nkeep_s = 5.0\n",
        )
        .unwrap();
        assert_eq!(c.track.max_lost_s, 1.0);
        assert_eq!(c.track.sublabel.min_attempts, 4);
        assert_eq!(c.events.retain_days, 3.0);
        assert_eq!(c.frames.keep_s, 5.0);
        let err = parse("[track]\nmax_lost = 1.0\n").unwrap_err();
        assert!(err.to_string().contains("max_lost"), "{err}");
    }

    #[test]
    fn daemon_keys_have_defaults_and_are_checked() {
        let c = parse("").unwrap();
        assert_eq!(c.model.sublabel_model, "mobilenetv2");
        assert_eq!((c.train.interval_secs, c.train.min_new_samples), (0, 0));
        let c = parse("[train]\ninterval_secs = 3600\nmin_new_samples = 20\n").unwrap();
        assert_eq!((c.train.interval_secs, c.train.min_new_samples), (3600, 20));
        let err =
            parse("[model]\nsublabel_model = \" \"\n[train]\ninterval_secs = 5\n").unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(
            err.to_string().contains("[train].interval_secs = 5"),
            "{err}"
        );
    }

    #[test]
    fn backend_keys_have_defaults_and_are_checked() {
        let c = parse("").unwrap();
        assert_eq!(c.model.backend_options(), BackendOptions::default());
        let c = parse(
            "[model]\nbackend = \"auto\"\nsublabel_backend = \"tract\"\nthreads = 2\nonnxruntime_library = \"/opt/ort/libonnxruntime.so.1.32.0\"\n",
        )
        .unwrap();
        let o = c.model.backend_options();
        assert_eq!((o.choice, o.threads), (BackendChoice::Auto, 2));
        assert_eq!(
            o.library.as_deref(),
            Some(Path::new("/opt/ort/libonnxruntime.so.1.32.0"))
        );
        assert_eq!(
            c.model.sublabel_backend_options().choice,
            BackendChoice::Tract
        );
        let err = parse("[model]\nbackend = \"cuda\"\nthreads = 0\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("[model].backend") && text.contains("auto"),
            "{text}"
        );
        let err = parse("[model]\nthreads = 0\nonnxruntime_library = \"\"\n").unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        let onnxruntime = parse("[model]\nbackend = \"onnxruntime\"\n");
        if crate::runtime::ONNXRUNTIME_BUILT {
            onnxruntime.unwrap();
        } else {
            let text = onnxruntime.unwrap_err().to_string();
            assert!(text.contains("built without"), "{text}");
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("[model]\nname = \"x\"\nbatch = = 2\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../systemd/adaptd.toml");
        parse(text).unwrap();
        // Its commented-out streams are valid too, once uncommented.
        let at = text
            .find("# [[cameras]]")
            .expect("a commented [[cameras]] example");
        let uncommented: String = text[at..]
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .unwrap_or(if l == "#" { "" } else { l })
            })
            .map(|l| l.split("  #").next().unwrap_or(""))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse(&format!("{}{uncommented}", &text[..at])).unwrap();
        assert_eq!((c.cameras.len(), c.microphones.len()), (2, 1));
    }

    /// The README's first command runs this file: it uses the current form (no deprecation
    /// warning for a newcomer) and keeps the camera name the README's topics show.
    #[test]
    fn the_demo_config_is_valid_and_current() {
        let c = parse(include_str!("../demo/adaptd.toml")).unwrap();
        let r = c.resolved_streams();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let names: Vec<&str> = r.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["default"]);
    }

    /// Every TOML example in docs/configuration.md is a valid configuration on its own, every
    /// source in it passes validation (the recipes per camera kind), and the multi-camera one
    /// resolves to the streams it describes.
    #[test]
    fn the_documented_examples_are_valid() {
        let doc = include_str!("../docs/configuration.md");
        let blocks: Vec<&str> = doc
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .collect();
        assert!(blocks.len() >= 3, "found {} toml blocks", blocks.len());
        let mut saw_lists = false;
        for b in blocks {
            let c = parse(b).unwrap_or_else(|e| panic!("{e}\nin:\n{b}"));
            let r = c.resolved_streams();
            for s in &r.streams {
                let problems = s.source.validate();
                assert!(problems.is_empty(), "{problems:?}\nin:\n{b}");
            }
            let names: Vec<&str> = r.streams.iter().map(|s| s.name.as_str()).collect();
            if names == ["front", "garage", "kitchen"] {
                saw_lists = true;
                assert_eq!(r.streams[0].model, "nanodet-m");
                assert_eq!(r.streams[1].model, c.model.name, "default: [model].name");
                assert!(r.warnings.is_empty(), "{:?}", r.warnings);
            }
        }
        assert!(saw_lists, "the [[cameras]] example is checked");
    }
}
