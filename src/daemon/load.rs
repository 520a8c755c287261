//! Startup: from a parsed [`Config`] and model dirs to loaded engines, learners and one plan
//! per stream, before any thread or socket exists.
//!
//! Engines are keyed by model and backend options: four cameras naming `mobilenetv2` load it
//! once and share it (memory does not grow per camera by the model's size). Learners are
//! keyed by embedding model: cameras whose heads read the same embeddings share samples and
//! heads.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, warn};

use super::false_positives::FpFilters;
use super::learner::Learner;
use super::listen::AudioPipeline;
use super::pipeline::Pipeline;
use super::DaemonError;
use crate::adapt::workspace::Workspace;
use crate::audio::model::AudioModel;
use crate::config::Config;
use crate::consensus::Consensus;
use crate::model::manifest::{ModelKind, Task};
use crate::model::{ModelDirs, ResolvedModel};
use crate::runtime::{BackendKind, BackendOptions};
use crate::source::{StreamKind, StreamSpec};
use crate::vision::{AnalyzeOptions, VisionModel};
use crate::wire;

/// One loaded model of a worker.
struct Engine<M> {
    key: String,
    name: String,
    resolved: ResolvedModel,
    backend: BackendKind,
    model: M,
    streams: Vec<String>,
}

/// A stream's plan: its spec, its analysis state and the names the state documents show.
pub struct StreamPlan {
    pub spec: StreamSpec,
    pub lane: LanePlan,
    pub model: String,
    pub embedding_model: String,
    pub backend: BackendKind,
    pub embedding_backend: BackendKind,
    pub is_detector: bool,
    pub learner: Arc<Learner>,
    /// Detectors: the classes that become tracked objects (every class when not limited).
    pub objects: Vec<String>,
}

/// The per-medium analysis state of a stream.
pub enum LanePlan {
    Vision(Box<Pipeline>),
    Audio(AudioPipeline),
}

/// Everything loaded.
pub struct Loaded {
    pub streams: Vec<StreamPlan>,
    pub disabled: Vec<String>,
    pub learners: Vec<Arc<Learner>>,
    pub vision: Vec<VisionModel>,
    pub audio: Vec<AudioModel>,
    pub engines: Vec<wire::EngineState>,
    pub state_dir: PathBuf,
    /// The false-positive filters, one set per crop embedder of a detector camera.
    pub fp_filters: Vec<Arc<FpFilters>>,
}

/// Loaded models of one medium, each once.
struct Pool<M> {
    engines: Vec<Engine<M>>,
}

impl<M> Pool<M> {
    fn new() -> Pool<M> {
        Pool {
            engines: Vec::new(),
        }
    }

    /// The index of `name` run with `opts`, loading it on first use with `load`.
    fn get_or_load(
        &mut self,
        name: &str,
        opts: &BackendOptions,
        stream: &str,
        models: &ModelDirs,
        load: impl FnOnce(ResolvedModel, &BackendOptions) -> Result<(M, BackendKind), DaemonError>,
    ) -> Result<usize, DaemonError> {
        let key = format!("{name}|{opts:?}");
        if let Some(i) = self.engines.iter().position(|e| e.key == key) {
            self.engines[i].streams.push(stream.to_owned());
            return Ok(i);
        }
        let resolved = resolve(name, models, stream)?;
        let (model, backend) = load(resolved.clone(), opts)?;
        info!(model = %name, %backend, "model loaded (for {stream})");
        self.engines.push(Engine {
            key,
            name: resolved.manifest.name.clone(),
            resolved,
            backend,
            model,
            streams: vec![stream.to_owned()],
        });
        Ok(self.engines.len() - 1)
    }
}

fn resolve(name: &str, models: &ModelDirs, stream: &str) -> Result<ResolvedModel, DaemonError> {
    ResolvedModel::resolve(name, models).map_err(|source| DaemonError::Model {
        stream: stream.to_owned(),
        source,
    })
}

/// Loads everything the configuration's enabled streams need.
pub fn load(config: &Config, models: &ModelDirs) -> Result<Loaded, DaemonError> {
    let resolved = config.resolved_streams();
    for w in &resolved.warnings {
        warn!("{w}");
    }
    let (enabled, disabled): (Vec<StreamSpec>, Vec<StreamSpec>) =
        resolved.streams.into_iter().partition(|s| s.enabled);
    for d in &disabled {
        info!(
            "{} {:?} is disabled (enabled = false)",
            d.kind.as_str(),
            d.name
        );
    }
    if enabled.is_empty() {
        return Err(DaemonError::Config(
            "every camera and microphone is disabled (enabled = false): enable at least one".into(),
        ));
    }
    let state_dir = config
        .state_dir
        .clone()
        .unwrap_or_else(crate::config::default_state_dir);
    let mut vision: Pool<VisionModel> = Pool::new();
    let mut audio: Pool<AudioModel> = Pool::new();
    let mut learners: Vec<Arc<Learner>> = Vec::new();
    let mut fp_filters: Vec<Arc<FpFilters>> = Vec::new();
    let mut plans = Vec::new();
    let load_vision = |rm: ResolvedModel, o: &BackendOptions| {
        let vm = VisionModel::load_with(rm, 1, o)?;
        let backend = vm.backbone().backend();
        Ok((vm, backend))
    };
    for spec in &enabled {
        refuse_null_stdin(spec, stdin_is_null())?;
    }
    for spec in enabled {
        let manifest = resolve(&spec.model, models, &spec.name)?.manifest;
        let is_audio_model = manifest.kind == ModelKind::Audio;
        let wants_audio = spec.kind == StreamKind::Microphone;
        if is_audio_model != wants_audio {
            return Err(DaemonError::Config(if is_audio_model {
                format!(
                    "{} {:?}: model {:?} is an audio model; a camera needs an image model \
                     (mobilenetv2, nanodet-m, ...), or make it a [[microphones]] entry",
                    spec.kind.as_str(),
                    spec.name,
                    spec.model
                )
            } else {
                format!(
                    "{} {:?}: model {:?} is an image model; a microphone needs a speaker model \
                     such as resemblyzer-ge2e (model = \"resemblyzer-ge2e\")",
                    spec.kind.as_str(),
                    spec.name,
                    spec.model
                )
            }));
        }
        let plan = if wants_audio {
            let i = audio.get_or_load(
                &spec.model,
                &config.model.backend_options(),
                &spec.name,
                models,
                |rm, o| {
                    let m = AudioModel::load_with(rm, o)?;
                    let backend = m.backend();
                    Ok((m, backend))
                },
            )?;
            let e = &audio.engines[i];
            let learner = learner_for(
                &mut learners,
                &state_dir,
                config,
                &e.resolved,
                e.backend,
                i,
                true,
            )?;
            StreamPlan {
                lane: LanePlan::Audio(AudioPipeline::new(i, learner.slot.clone())),
                model: e.name.clone(),
                embedding_model: e.name.clone(),
                backend: e.backend,
                embedding_backend: e.backend,
                is_detector: false,
                learner,
                spec,
                objects: Vec::new(),
            }
        } else {
            let is_detector = manifest.task == Task::Detect;
            let main = vision.get_or_load(
                &spec.model,
                &config.model.backend_options(),
                &spec.name,
                models,
                load_vision,
            )?;
            let crops = if is_detector {
                Some(vision.get_or_load(
                    &spec.sublabel_model,
                    &config.model.sublabel_backend_options(),
                    &spec.name,
                    models,
                    load_vision,
                )?)
            } else {
                None
            };
            let emb = crops.unwrap_or(main);
            let (emb_resolved, emb_backend) =
                (&vision.engines[emb].resolved, vision.engines[emb].backend);
            let learner = learner_for(
                &mut learners,
                &state_dir,
                config,
                emb_resolved,
                emb_backend,
                emb,
                false,
            )?;
            let mut detect = config.detect.for_manifest(&manifest);
            if let (Some(d), Some(t)) = (detect.as_mut(), spec.score_threshold) {
                d.score_threshold = t;
            }
            let sublabel_classes = if is_detector {
                sublabel_classes(&spec, config, &vision.engines[main].resolved.labels)?
            } else {
                Vec::new()
            };
            let sublabel_classes_for_objects = sublabel_classes.clone();
            let labels = &vision.engines[main].resolved.labels;
            let tracked = if is_detector {
                tracked_classes(&spec, config, labels)?
            } else {
                None
            };
            if is_detector {
                let scene = &spec.scene;
                let problems = crate::track::zones::validate(
                    &spec.name,
                    &scene.zones,
                    &scene.masks,
                    &scene.required_zones,
                    Some(labels),
                );
                if !problems.is_empty() {
                    return Err(DaemonError::Config(problems.join("; ")));
                }
            }
            let objects = if is_detector {
                tracked.clone().unwrap_or_else(|| labels.clone())
            } else {
                Vec::new()
            };
            let pipeline = Pipeline::new(
                main,
                crops,
                learner.slot.clone(),
                Consensus::new(config.consensus),
                AnalyzeOptions { top_k: 1, detect },
                sublabel_classes,
            )
            .with_motion(config.motion)
            .with_frames(super::frames::FrameRing::new(
                config.frames.keep_s,
                config.frames.max_mb,
            ));
            let pipeline = if is_detector {
                let name = &emb_resolved.manifest.name;
                let fp = match fp_filters.iter().find(|f| f.model() == name) {
                    Some(f) => f.clone(),
                    None => {
                        let f = Arc::new(FpFilters::open(
                            &state_dir,
                            emb_resolved.clone(),
                            emb_backend,
                            emb,
                            config.samples.store_options(),
                        ));
                        fp_filters.push(f.clone());
                        f
                    }
                };
                pipeline
                    .with_false_positive_filters(fp.slots())
                    .with_objects(
                        super::objects::CameraObjects::new(
                            &spec.name,
                            vision.engines[main].resolved.labels.clone(),
                            &sublabel_classes_for_objects,
                            config.track,
                            config.frames.keep_ended_objects as usize,
                        )
                        .with_scene(tracked.as_deref(), &spec.scene)
                        .map_err(|e| DaemonError::Config(format!("camera {:?}: {e}", spec.name)))?,
                    )
            } else {
                pipeline
            };
            StreamPlan {
                lane: LanePlan::Vision(Box::new(pipeline)),
                model: vision.engines[main].name.clone(),
                embedding_model: vision.engines[emb].name.clone(),
                backend: vision.engines[main].backend,
                embedding_backend: emb_backend,
                is_detector,
                learner,
                spec,
                objects,
            }
        };
        plans.push(plan);
    }
    let engines = vision
        .engines
        .iter()
        .map(|e| engine_state(&e.name, e.backend, &e.streams))
        .chain(
            audio
                .engines
                .iter()
                .map(|e| engine_state(&e.name, e.backend, &e.streams)),
        )
        .collect();
    for l in &learners {
        l.serve_current();
    }
    Ok(Loaded {
        streams: plans,
        disabled: disabled.into_iter().map(|d| d.name).collect(),
        learners,
        vision: vision.engines.into_iter().map(|e| e.model).collect(),
        audio: audio.engines.into_iter().map(|e| e.model).collect(),
        engines,
        state_dir,
        fp_filters,
    })
}

/// Whether standard input is /dev/null, as it is for a systemd service.
fn stdin_is_null() -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata("/dev/stdin"),
        std::fs::metadata("/dev/null"),
    ) {
        (Ok(stdin), Ok(null)) => stdin.rdev() == null.rdev() && stdin.dev() == null.dev(),
        _ => false,
    }
}

/// A source reading standard input when standard input is /dev/null (every systemd service)
/// would end at once and the service would restart into the same end: refused at start with
/// what to use instead.
fn refuse_null_stdin(spec: &StreamSpec, stdin_is_null: bool) -> Result<(), DaemonError> {
    let reads_stdin = match &spec.source {
        crate::source::SourceConfig::Mjpeg { path, .. }
        | crate::source::SourceConfig::Audio { path, .. } => path.as_os_str() == "-",
        _ => false,
    };
    if reads_stdin && stdin_is_null {
        return Err(DaemonError::Config(format!(
            "{} {:?}: its source reads standard input (path = \"-\"), which is /dev/null here \
             (as under systemd); give the camera program as kind = \"command\" (argv = [...]) \
             or have it write to a FIFO and set path to it",
            spec.kind.as_str(),
            spec.name
        )));
    }
    Ok(())
}

/// The detector classes that become a camera's tracked objects: its own `objects`, else
/// `[detect].objects`, else `person` (what most cameras watch for, as in Frigate) when the
/// detector has it, else every class (`None`). A class the detector lacks is an error.
fn tracked_classes(
    spec: &StreamSpec,
    config: &Config,
    labels: &[String],
) -> Result<Option<Vec<String>>, DaemonError> {
    let (classes, key) = match &spec.scene.objects {
        Some(c) => (c.clone(), format!("camera {:?}: objects", spec.name)),
        None => (config.detect.objects.clone(), "[detect].objects".to_owned()),
    };
    if classes.is_empty() {
        return Ok(labels
            .iter()
            .any(|l| l == "person")
            .then(|| vec!["person".to_owned()]));
    }
    if let Some(bad) = classes.iter().find(|c| !labels.contains(c)) {
        return Err(DaemonError::Config(format!(
            "{key}: {bad:?} is not a class of model {:?}; its classes include {}",
            spec.model,
            shown_labels(labels)
        )));
    }
    Ok(Some(classes))
}

/// Up to 20 of a model's labels, for messages.
fn shown_labels(labels: &[String]) -> String {
    let shown: Vec<&str> = labels.iter().take(20).map(String::as_str).collect();
    let more = if labels.len() > shown.len() {
        ", ..."
    } else {
        ""
    };
    format!("{}{more}", shown.join(", "))
}

/// The detector classes a camera sub-labels: its own list, else `[detect].sublabel_classes`
/// (empty: every class). A class the detector does not have is a configuration error that
/// lists the ones it has: a misspelt `persn` would otherwise sub-label nothing, silently.
fn sublabel_classes(
    spec: &StreamSpec,
    config: &Config,
    labels: &[String],
) -> Result<Vec<String>, DaemonError> {
    let (classes, key) = match &spec.sublabel_classes {
        Some(c) => (c.clone(), format!("camera {:?}: applies_to", spec.name)),
        None => (
            config.detect.sublabel_classes.clone(),
            "[detect].applies_to".to_owned(),
        ),
    };
    let shown = || shown_labels(labels);
    if classes.is_empty() {
        // The sub-label model names people unless told otherwise.
        if labels.iter().any(|l| l == "person") {
            return Ok(vec!["person".to_owned()]);
        }
        return Err(DaemonError::Config(format!(
            "{key}: model {:?} has no `person` class, so say which of its classes the \
             sub-label model names (applies_to = [\"...\"]); its classes include {}",
            spec.model,
            shown()
        )));
    }
    if let Some(bad) = classes.iter().find(|c| !labels.contains(c)) {
        return Err(DaemonError::Config(format!(
            "{key}: {bad:?} is not a class of model {:?}; its classes include {}",
            spec.model,
            shown()
        )));
    }
    Ok(classes)
}

fn engine_state(name: &str, backend: BackendKind, streams: &[String]) -> wire::EngineState {
    let mut cameras = streams.to_vec();
    cameras.dedup();
    wire::EngineState {
        model: name.to_owned(),
        backend: backend.to_string(),
        cameras,
    }
}

/// The learner of embedding model `rm`, opened on first use.
fn learner_for(
    learners: &mut Vec<Arc<Learner>>,
    state_dir: &std::path::Path,
    config: &Config,
    rm: &ResolvedModel,
    backend: BackendKind,
    engine: usize,
    is_audio: bool,
) -> Result<Arc<Learner>, DaemonError> {
    let name = &rm.manifest.name;
    if let Some(l) = learners.iter().find(|l| &l.model == name) {
        return Ok(l.clone());
    }
    let ws = Workspace::open(state_dir, rm, config.samples.store_options())?;
    let l = Arc::new(Learner::new(name.clone(), backend, engine, is_audio, ws));
    learners.push(l.clone());
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceConfig;

    fn camera(classes: Option<Vec<String>>) -> StreamSpec {
        StreamSpec {
            name: "yard".into(),
            kind: StreamKind::Camera,
            enabled: true,
            source: SourceConfig::default(),
            model: "nanodet-m".into(),
            sublabel_model: "mobilenetv2".into(),
            max_fps: None,
            score_threshold: None,
            sublabel_classes: classes,
            scene: Default::default(),
        }
    }

    #[test]
    fn a_stdin_source_is_refused_when_stdin_is_dev_null() {
        let mut spec = camera(None);
        spec.source = SourceConfig::Mjpeg {
            path: "-".into(),
            fps_limit: None,
        };
        let e = refuse_null_stdin(&spec, true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("camera \"yard\"") && e.contains("/dev/null") && e.contains("command"),
            "{e}"
        );
        assert!(refuse_null_stdin(&spec, false).is_ok(), "a pipe is fine");
        spec.source = SourceConfig::default();
        assert!(refuse_null_stdin(&spec, true).is_ok(), "not a stdin source");
    }

    #[test]
    fn sublabel_classes_come_from_the_camera_then_detect_and_must_exist() {
        let labels: Vec<String> = ["person", "car", "dog"].map(String::from).to_vec();
        let mut config = Config::default();
        let all = sublabel_classes(&camera(None), &config, &labels).expect("default");
        assert_eq!(all, ["person"], "people by default");
        let no_person: Vec<String> = ["car", "dog"].map(String::from).to_vec();
        let e = sublabel_classes(&camera(None), &config, &no_person)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("has no `person` class") && e.contains("car, dog"),
            "{e}"
        );
        config.detect.sublabel_classes = vec!["person".into()];
        let from_detect = sublabel_classes(&camera(None), &config, &labels).expect("[detect]");
        assert_eq!(from_detect, ["person"]);
        let own = sublabel_classes(&camera(Some(vec!["dog".into()])), &config, &labels)
            .expect("the camera's own list wins");
        assert_eq!(own, ["dog"]);
        let e = sublabel_classes(&camera(Some(vec!["persn".into()])), &config, &labels)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("camera \"yard\": applies_to")
                && e.contains("\"persn\" is not a class")
                && e.contains("person, car, dog"),
            "{e}"
        );
    }
}
