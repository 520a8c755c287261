//! The control plane of `adaptd run`: `cmd/<verb>` and `samples/<label>` messages in, one
//! `reply` out for each.
//!
//! Every message gets an answer, and nothing a sender can put in a payload stops the daemon:
//! parse errors, unknown cameras, bad labels, undecodable images and store failures all
//! become `ok: false` replies. A payload is parsed once into a typed
//! [`crate::wire::Request`]; [`Control::execute`] applies it to the owners it concerns
//! (streams, learners, the trainer, the inference workers). SQLite and image work run in
//! `spawn_blocking`; embedding runs on the inference worker that owns the model.
//!
//! Messages are handled by a fixed number of tasks reading one bounded queue
//! ([`Dispatcher`]), not a task per message: a burst cannot grow memory or tasks without
//! bound; what does not fit gets a `busy` reply at once.
//!
//! `set` applies everything live and until the next restart: `score_threshold` (detectors;
//! a classifier lists it under `not_applied`), `consensus` (N frames out of N), `auto_train`
//! (device-wide), `fps` (a cap on the frames processed; the source cannot be sped up beyond
//! its own rate) and `unknown_threshold` (the heads of the cameras concerned, overriding the
//! threshold each head calibrated when it was trained).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::annotate::annotate;
use super::infer::{EmbedInput, Job, JobSender, LaneSettings};
use super::learner::{Learner, RollbackError};
use super::notice::{Notice, Notices};
use super::pipeline::Pin;
use super::report;
use super::streams::StreamHandle;
use super::telemetry::Telemetry;
use super::trainer::{TrainRequest, TrainStartError, TrainerHandle};
use crate::adapt::workspace::WorkspaceError;
use crate::audio::wav::WavLimits;
use crate::config::TrainSection;
use crate::mqtt::commands::{Command, Label, Request, Settings};
use crate::mqtt::{Incoming, Publisher, Reply};
use crate::store::SampleSource;
use crate::vision::image_io::{decode_bytes, thumbnail_jpeg, DecodeLimits};
use crate::wire;
use crate::wire::LabelTarget;

/// How long a sample waits for the inference worker to embed it.
const EMBED_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `label` waits for the current frame to be analysed.
const FRESH_FRAME_WAIT: Duration = Duration::from_secs(3);

/// Why a command or sample failed; the text is the reply's `error`.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no camera `{name}`: the cameras here are {known}")]
    UnknownCamera { name: String, known: String },
    #[error("camera `{0}` is disabled in the configuration (enabled = false)")]
    Disabled(String),
    #[error(
        "this daemon runs several cameras ({known}): say which one with \"camera\": \"<name>\""
    )]
    NeedCamera { known: String },
    #[error(
        "several models learn here ({models}): publish the sample on {base}/<camera>/samples/<label> \
         (cameras: {known}) so it is embedded by that camera's model"
    )]
    NeedSampleCamera {
        models: String,
        base: String,
        known: String,
    },
    #[error("{0}")]
    NotApplicable(String),
    #[error(
        "no {what} has been processed yet on `{camera}`; wait for its `detections` (or `resume`)"
    )]
    NothingYet { what: &'static str, camera: String },
    #[error("{0}")]
    Detection(String),
    #[error(transparent)]
    Train(#[from] TrainStartError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Rollback(#[from] RollbackError),
    #[error("{0}")]
    Sample(String),
    #[error("{0}")]
    Setting(String),
    #[error("the inference worker has stopped (the daemon is shutting down)")]
    WorkerStopped,
    #[error("embedding took longer than {0:?}")]
    EmbedTimeout(Duration),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The control plane: handles to every owner a command may concern. Cheap to share (`Arc`).
pub struct Control {
    pub streams: Vec<Arc<StreamHandle>>,
    /// Names of cameras in the configuration with `enabled = false`.
    pub disabled: Vec<String>,
    pub learners: Vec<Arc<Learner>>,
    pub publisher: Publisher,
    pub vision_jobs: Option<JobSender>,
    pub audio_jobs: Option<JobSender>,
    pub trainer: TrainerHandle,
    pub notices: Notices,
    pub telemetry: Arc<Telemetry>,
    /// Retrain on the `[train]` schedule (true) or only on `train` (false): the control
    /// plane is this flag's owner.
    pub auto_train: AtomicBool,
    /// `[train]`, replaced live by SIGHUP (shared with the trainer).
    pub train: Arc<Mutex<TrainSection>>,
    pub limits: DecodeLimits,
    pub wav_limits: WavLimits,
    /// Loaded models and the cameras sharing each (for `state`).
    pub engines: Vec<wire::EngineState>,
    /// The event store (`None`: `[events] enabled = false`).
    pub events_path: Option<std::path::PathBuf>,
    /// The false-positive filters, one set per crop embedder.
    pub fp_filters: Vec<Arc<super::false_positives::FpFilters>>,
    /// The snapshot writer (`None`: `[snapshots] enabled = false`, or it could not start).
    pub snapshots: Option<super::snapshot_writer::SnapshotWriter>,
}

impl Control {
    fn known(&self) -> String {
        let mut names: Vec<String> = self
            .streams
            .iter()
            .map(|s| format!("`{}`", s.name))
            .collect();
        names.extend(self.disabled.iter().map(|d| format!("`{d}` (disabled)")));
        names.join(", ")
    }

    /// The stream named `name`.
    pub fn stream(&self, name: &str) -> Result<&Arc<StreamHandle>, ControlError> {
        if let Some(s) = self.streams.iter().find(|s| s.name == name) {
            return Ok(s);
        }
        if self.disabled.iter().any(|d| d == name) {
            return Err(ControlError::Disabled(name.to_owned()));
        }
        Err(ControlError::UnknownCamera {
            name: name.to_owned(),
            known: self.known(),
        })
    }

    /// The streams a command concerns: the named one, or all of them.
    fn targets(&self, camera: Option<&str>) -> Result<Vec<&Arc<StreamHandle>>, ControlError> {
        match camera {
            Some(name) => Ok(vec![self.stream(name)?]),
            None => Ok(self.streams.iter().collect()),
        }
    }

    /// The one stream a command needs: the named one, or the only one.
    fn one(&self, camera: Option<&str>) -> Result<&Arc<StreamHandle>, ControlError> {
        match (camera, self.streams.as_slice()) {
            (Some(name), _) => self.stream(name),
            (None, [only]) => Ok(only),
            (None, _) => Err(ControlError::NeedCamera {
                known: self.known(),
            }),
        }
    }

    /// The learners of the streams a command concerns, each once.
    fn learners_of(&self, camera: Option<&str>) -> Result<Vec<Arc<Learner>>, ControlError> {
        match camera {
            None => Ok(self.learners.clone()),
            Some(name) => Ok(vec![self.stream(name)?.learner.clone()]),
        }
    }

    fn jobs_for(&self, audio: bool) -> Option<&JobSender> {
        if audio {
            self.audio_jobs.as_ref()
        } else {
            self.vision_jobs.as_ref()
        }
    }

    /// The retained device `state`.
    pub fn device_state(&self) -> wire::DeviceState {
        report::device_state(&self.owners())
    }

    /// The state the reports read (`state`, `stats`, the systemd status line).
    pub fn owners(&self) -> report::Owners<'_> {
        report::Owners {
            streams: &self.streams,
            learners: &self.learners,
            publisher: &self.publisher,
            telemetry: &self.telemetry,
            auto_train: self.auto_train.load(Ordering::SeqCst),
            engines: &self.engines,
        }
    }

    /// Publishes a reply; false when it could not be sent.
    pub async fn send_reply(&self, reply: &Reply) -> bool {
        let topic = self.publisher.topics().reply();
        match self.publisher.publish(&topic, reply.to_json(), false).await {
            Ok(()) => true,
            Err(e) => {
                warn!("reply not published: {e}");
                false
            }
        }
    }

    /// Handles one incoming message and replies to it.
    pub async fn handle(self: &Arc<Self>, msg: Message) {
        let reply = match msg.incoming {
            Incoming::Command(verb) => match Request::parse(&verb, &msg.payload) {
                Err(rejected) => rejected.reply(),
                Ok(req) => {
                    let (id, verb) = (req.id.clone(), req.command.verb());
                    match self.execute(req).await {
                        Ok(result) => Reply::ok(id, verb, result),
                        Err(e) => Reply::error(id, Some(verb), e.to_string()),
                    }
                }
            },
            Incoming::Sample { camera, label } => {
                let source = SampleSource::Mqtt {
                    topic: msg.topic.clone(),
                };
                match self
                    .add_sample(&msg.topic, source, camera.as_deref(), &label, msg.payload)
                    .await
                {
                    Ok(result) => Reply::ok(None, "sample", result),
                    Err(e) => Reply::error(None, Some("sample"), e.to_string()),
                }
            }
            Incoming::HomeAssistantStatus | Incoming::Unknown => return,
        };
        self.send_reply(&reply).await;
    }

    /// Applies one parsed command.
    pub async fn execute(self: &Arc<Self>, req: Request) -> Result<Value, ControlError> {
        let camera = req.camera.as_deref();
        match req.command {
            Command::Label { label, target } => {
                let stream = self.one(camera)?.clone();
                // `none` on a detector's object is the false-positive feedback.
                let on_object = !matches!(target, LabelTarget::Latest | LabelTarget::Frame { .. });
                if stream.is_detector
                    && on_object
                    && label.as_str() == super::false_positives::FALSE
                {
                    return self.false_positive(&stream, target).await;
                }
                self.label(&stream, label, target).await
            }
            Command::FalsePositive { target } => {
                let stream = self.one(camera)?.clone();
                self.false_positive(&stream, target).await
            }
            Command::Events(filter) => self.events(camera, filter).await,
            Command::Train { force } => {
                let learners = self.learners_of(camera)?;
                let mut started = Vec::new();
                let mut last_err = None;
                for l in learners {
                    let model = l.model.clone();
                    match self.trainer.request(TrainRequest {
                        learner: l,
                        force,
                        why: "command".into(),
                    }) {
                        Ok(()) => started.push(model),
                        Err(e) => last_err = Some(e),
                    }
                }
                self.notices.send(Notice::DeviceChanged);
                match (started.is_empty(), last_err) {
                    (true, Some(e)) => Err(e.into()),
                    _ => result(&wire::TrainStarted::new(started)),
                }
            }
            Command::Rollback { target } => {
                let learner = match camera {
                    Some(_) => self.learners_of(camera)?.remove(0),
                    None => match self.learners.as_slice() {
                        [only] => only.clone(),
                        _ => {
                            return Err(ControlError::NeedCamera {
                                known: self.known(),
                            })
                        }
                    },
                };
                let decision = blocking(move || learner.rollback(target)).await??;
                self.notices.send(Notice::DeviceChanged);
                result(&decision)
            }
            Command::Pause | Command::Resume => {
                let paused = matches!(req.command, Command::Pause);
                let targets = self.targets(camera)?;
                for s in &targets {
                    s.set_paused(paused);
                    self.notices.send(Notice::StreamChanged(s.index));
                }
                let cameras = targets.iter().map(|s| s.name.clone()).collect();
                result(&wire::Paused { paused, cameras })
            }
            Command::Snapshot => {
                let targets = self.targets(camera)?;
                if camera.is_some() && targets.iter().all(|s| s.is_audio()) {
                    return Err(ControlError::NotApplicable(
                        "a microphone has no picture to snapshot; its latest utterance is in `detections`".into(),
                    ));
                }
                let mut cameras = std::collections::BTreeMap::new();
                for s in targets.into_iter().filter(|s| !s.is_audio()) {
                    if let Some(n) = publish_snapshot(&self.publisher, s).await {
                        cameras.insert(s.name.clone(), n as u64);
                    }
                }
                if cameras.is_empty() {
                    return Err(ControlError::NotApplicable(
                        "no frame has been processed yet (or the link is down)".into(),
                    ));
                }
                let bytes = cameras.values().sum();
                result(&wire::SnapshotTaken { bytes, cameras })
            }
            Command::Set(settings) => self.apply_settings(camera, settings),
            Command::Forget { label } => {
                let learners = self.learners_of(camera)?;
                let removed = blocking(move || {
                    learners
                        .iter()
                        .map(|l| l.forget(label.as_str()))
                        .sum::<Result<usize, WorkspaceError>>()
                })
                .await??;
                self.notices.send(Notice::DeviceChanged);
                result(&wire::Forgotten { removed })
            }
            Command::Status => {
                self.notices.send(Notice::DeviceChanged);
                result(&self.device_state())
            }
        }
    }

    /// `label`: what the command points at (a tracked object's best crop, a detection or a
    /// box of a kept frame, a whole frame, the latest utterance) becomes a sample.
    async fn label(
        &self,
        stream: &Arc<StreamHandle>,
        label: Label,
        target: LabelTarget,
    ) -> Result<Value, ControlError> {
        let learner = stream.learner.clone();
        let (embedding, picture, source) = if stream.is_audio() {
            if target != LabelTarget::Latest {
                return Err(ControlError::Detection(
                    "a microphone labels its latest utterance: give only `label`".into(),
                ));
            }
            let Some(latest) = stream.latest() else {
                return Err(ControlError::NothingYet {
                    what: "utterance",
                    camera: stream.name.clone(),
                });
            };
            let e = latest.result.embeddings.first().cloned().flatten().ok_or(
                ControlError::Detection("the utterance has no voice print".into()),
            )?;
            (e, None, SampleSource::Microphone)
        } else {
            let pin = pin_of(target);
            // Without a frame_id the command means the frame being shown now: let the
            // camera's current frame be analysed first (a paused or motion-gated camera's
            // latest may be old).
            if matches!(
                pin,
                Pin::Frame { frame_id: None } | Pin::Detection { frame_id: None, .. }
            ) {
                fresh_frame(stream).await;
                if stream.latest().is_none() {
                    return Err(ControlError::NothingYet {
                        what: "frame",
                        camera: stream.name.clone(),
                    });
                }
            }
            let index = stream.index;
            let pinned = self
                .ask_worker(false, |reply| Job::Pinned {
                    stream: index,
                    pin,
                    reply,
                })
                .await?
                .map_err(|e| ControlError::Detection(e.to_string()))?;
            let source = match pinned.class {
                Some(class) => SampleSource::DetectionCrop { class },
                None => SampleSource::CameraFrame,
            };
            (pinned.embedding, Some(pinned.picture), source)
        };
        // An object labeled with its own detector class is a true example for that class's
        // false-positive filter, not a name for the sub-label head.
        let own_class = matches!(&source, SampleSource::DetectionCrop { class }
            if super::false_positives::class_key(class) == label.as_str());
        let filters = self
            .fp_filters
            .iter()
            .find(|f| f.model() == stream.embedding_model)
            .cloned()
            .filter(|_| own_class);
        let stored = blocking(move || {
            let thumb = picture.and_then(|p| thumbnail_jpeg(&p).ok());
            let learner = match filters {
                Some(f) => f.learner(label.as_str())?,
                None => learner,
            };
            learner
                .store_sample(label.as_str(), embedding, thumb, source)
                .map(|out| report::sample_stored(label.as_str(), &out))
        })
        .await??;
        self.notices.send(Notice::DeviceChanged);
        serde_json::to_value(stored).map_err(|e| ControlError::Internal(e.to_string()))
    }

    /// `false_positive`: marks the object, files its crop as `none` under its class's filter
    /// (with recent true objects of the class for the other side) and trains the filter.
    async fn false_positive(
        &self,
        stream: &Arc<StreamHandle>,
        target: LabelTarget,
    ) -> Result<Value, ControlError> {
        if !stream.is_detector {
            return Err(ControlError::NotApplicable(format!(
                "{:?} classifies whole frames; false positives are a detector's objects (label \
                 the frame `none` instead)",
                stream.name
            )));
        }
        let filters = self
            .fp_filters
            .iter()
            .find(|f| f.model() == stream.embedding_model)
            .cloned()
            .ok_or_else(|| ControlError::Internal("no false-positive filters".into()))?;
        let pin = pin_of(target);
        let index = stream.index;
        let fp = self
            .ask_worker(false, |reply| Job::FalsePositive {
                stream: index,
                pin,
                reply,
            })
            .await?
            .map_err(|e| ControlError::Detection(e.to_string()))?;
        let (class, object) = (fp.class.clone(), fp.object.clone());
        let f = filters.clone();
        let (learner, sample, true_examples, counts) = blocking(move || {
            let learner = f.learner(&fp.class)?;
            let file = |p: super::pipeline::Pinned, label: &str| {
                let thumb = thumbnail_jpeg(&p.picture).ok();
                let source = SampleSource::DetectionCrop {
                    class: fp.class.clone(),
                };
                learner.store_sample(label, p.embedding, thumb, source)
            };
            let out = file(fp.negative, super::false_positives::FALSE)?;
            let true_label = super::false_positives::class_key(&fp.class);
            let mut n = 0;
            for p in fp.positives {
                if p.object.as_deref().is_some_and(|id| f.first_filing(id)) {
                    file(p, &true_label)?;
                    n += 1;
                }
            }
            let counts = learner.counts();
            Ok::<_, WorkspaceError>((learner, out, n, counts))
        })
        .await??;
        let trues = counts
            .get(&super::false_positives::class_key(&class))
            .copied()
            .unwrap_or(0);
        let training = if trues == 0 {
            format!(
                "waiting for true examples: the filter of {class:?} trains once this camera has \
                 seen a {class} nobody marked false (or label one `{class}`)"
            )
        } else {
            match self.trainer.request(TrainRequest {
                learner,
                force: false,
                why: "false positive".into(),
            }) {
                Ok(()) => "started".to_owned(),
                Err(e) => e.to_string(),
            }
        };
        info!(camera = %stream.name, object = %object, class = %class, "false positive filed");
        self.notices.send(Notice::DeviceChanged);
        result(&wire::FalsePositiveFiled {
            object,
            class,
            sample: report::sample_stored(super::false_positives::FALSE, &sample),
            true_examples,
            counts: counts.into_iter().collect(),
            training,
        })
    }

    /// `events`: stored tracked objects, newest first.
    async fn events(
        &self,
        camera: Option<&str>,
        filter: wire::EventFilter,
    ) -> Result<Value, ControlError> {
        let Some(path) = self.events_path.clone() else {
            return Err(ControlError::NotApplicable(
                "objects are not stored here ([events] enabled = false)".into(),
            ));
        };
        let query = crate::events::Query {
            camera: camera.map(str::to_owned),
            label: filter.label,
            sub_label: filter.sub_label,
            after: filter.after,
            before: filter.before,
            zone: None,
            limit: filter.limit as usize,
        };
        let events = blocking(move || match crate::events::EventStore::open_read(&path) {
            Ok(store) => store.list(&query),
            // Nothing recorded yet: an empty history, not an error.
            Err(crate::events::EventStoreError::Missing { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        })
        .await?
        .map_err(|e| ControlError::NotApplicable(e.to_string()))?;
        result(&wire::EventList { events })
    }

    /// `samples/<label>` or `<camera>/samples/<label>`: decode (an image, or a WAV clip for a
    /// speaker model, under the configured limits), embed, store.
    ///
    /// `name` names the payload in errors (the topic, a file name); `source` is what the
    /// sample records of its origin.
    pub(super) async fn add_sample(
        &self,
        name: &str,
        source: SampleSource,
        camera: Option<&str>,
        label: &str,
        payload: Vec<u8>,
    ) -> Result<Value, ControlError> {
        let label = Label::parse(label).map_err(|e| ControlError::Sample(e.to_string()))?;
        let learner = match camera {
            Some(name) => self.stream(name)?.learner.clone(),
            None => match self.learners.as_slice() {
                [only] => only.clone(),
                many => {
                    return Err(ControlError::NeedSampleCamera {
                        models: many
                            .iter()
                            .map(|l| l.model.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        base: self.publisher.topics().base().to_owned(),
                        known: self.known(),
                    })
                }
            },
        };
        let (limits, wav_limits, audio) = (self.limits, self.wav_limits, learner.is_audio);
        let name = name.to_owned();
        let (input, thumb) = blocking(move || {
            if audio {
                let clip = crate::audio::decode_16k(&payload, &name, &wav_limits)
                    .map_err(|e| ControlError::Sample(e.to_string()))?;
                // A voice's "thumbnail" is its clip, to listen to on the web page.
                let heard = voice_clip(&clip);
                return Ok::<_, ControlError>((EmbedInput::Audio(clip), Some(heard)));
            }
            let img = decode_bytes(&payload, &name, &limits)
                .map_err(|e| ControlError::Sample(e.to_string()))?;
            let thumb = thumbnail_jpeg(&img).ok();
            Ok((EmbedInput::Image(img), thumb))
        })
        .await??;
        let engine = learner.engine;
        let embedding = self
            .ask_worker(audio, |reply| Job::Embed {
                engine,
                input,
                reply,
            })
            .await?
            .map_err(|e| ControlError::Sample(e.to_string()))?;
        let stored = blocking(move || {
            learner
                .store_sample(label.as_str(), embedding, thumb, source)
                .map(|out| report::sample_stored(label.as_str(), &out))
        })
        .await??;
        self.notices.send(Notice::DeviceChanged);
        serde_json::to_value(stored).map_err(|e| ControlError::Internal(e.to_string()))
    }

    /// Hands a job to the inference worker that owns the engines (audio or video) and waits,
    /// at most `EMBED_TIMEOUT`, for its answer: every command that runs a model goes this way,
    /// so none blocks the control task or races the frame loop for an engine.
    async fn ask_worker<T>(
        &self,
        audio: bool,
        job: impl FnOnce(oneshot::Sender<T>) -> Job,
    ) -> Result<T, ControlError> {
        let jobs = self.jobs_for(audio).ok_or(ControlError::WorkerStopped)?;
        let (tx, rx) = oneshot::channel();
        if !jobs.send(job(tx)) {
            return Err(ControlError::WorkerStopped);
        }
        match tokio::time::timeout(EMBED_TIMEOUT, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(ControlError::WorkerStopped),
            Err(_) => Err(ControlError::EmbedTimeout(EMBED_TIMEOUT)),
        }
    }

    fn apply_settings(&self, camera: Option<&str>, s: Settings) -> Result<Value, ControlError> {
        let targets = self.targets(camera)?;
        let mut applied = Vec::new();
        let mut not_applied = std::collections::BTreeMap::new();
        if let Some(t) = s.score_threshold {
            if targets.iter().any(|t| t.is_detector) {
                for target in &targets {
                    target.set_score_threshold(t);
                }
                applied.push("score_threshold");
            } else {
                not_applied.insert(
                    "score_threshold".into(),
                    "only detectors have a score threshold".into(),
                );
            }
        }
        if let Some(b) = s.auto_train {
            self.auto_train.store(b, Ordering::SeqCst);
            applied.push("auto_train");
        }
        if let Some(detect) = s.detect {
            for target in &targets {
                target.set_paused(!detect);
            }
            applied.push("detect");
        }
        if s.consensus.is_some() {
            applied.push("consensus");
        }
        if let Some(fps) = s.fps {
            applied.push("fps");
            info!("set: processing capped at {fps} frames per second");
        }
        if let Some(t) = s.unknown_threshold {
            let mut seen: Vec<&str> = Vec::new();
            for target in &targets {
                let l = &target.learner;
                if !seen.contains(&l.model.as_str()) {
                    seen.push(&l.model);
                    l.set_unknown_threshold(t)
                        .map_err(|e| ControlError::Setting(e.to_string()))?;
                }
            }
            applied.push("unknown_threshold");
        }
        for target in &targets {
            let settings = LaneSettings {
                consensus: None,
                consensus_frames: s.consensus.map(|n| n as usize),
                score_threshold: s.score_threshold.filter(|_| target.is_detector),
                max_fps: s.fps.map(f64::from),
            };
            let jobs = self
                .jobs_for(target.is_audio())
                .ok_or(ControlError::WorkerStopped)?;
            if !jobs.send(Job::Settings {
                stream: Some(target.index),
                settings,
            }) {
                return Err(ControlError::WorkerStopped);
            }
        }
        if !applied.is_empty() {
            // `state` shows thresholds, `paused` and `auto_train`: Home Assistant's numbers and
            // switches read them back from there.
            for target in &targets {
                self.notices.send(Notice::StreamChanged(target.index));
            }
            self.notices.send(Notice::DeviceChanged);
        }
        if applied.is_empty() {
            return Err(ControlError::Setting(format!(
                "nothing could be applied: {}",
                serde_json::to_string(&not_applied).unwrap_or_default()
            )));
        }
        result(&wire::SettingsApplied {
            applied: applied.into_iter().map(str::to_owned).collect(),
            not_applied,
        })
    }

    /// Starts runs for the learners whose schedule says so (`[train].interval_secs`,
    /// `[train].min_new_samples`) and that got samples since their last run.
    pub fn scheduled_training(&self) {
        if !self.auto_train.load(Ordering::SeqCst) {
            return;
        }
        let (interval, min_new) = {
            let t = super::learner::lock(&self.train);
            (t.interval_secs, t.min_new_samples)
        };
        for l in &self.learners {
            if l.is_training() {
                continue;
            }
            let (new, elapsed) = l.since_last_run();
            if new == 0 {
                continue;
            }
            let by_time = interval > 0 && elapsed >= Duration::from_secs(interval);
            let by_count = min_new > 0 && new >= min_new;
            if by_time || by_count {
                let why = if by_count { "new samples" } else { "schedule" };
                if let Err(e) = self.trainer.request(TrainRequest {
                    learner: l.clone(),
                    force: false,
                    why: why.into(),
                }) {
                    warn!(model = %l.model, "scheduled training did not start: {e}");
                } else {
                    self.notices.send(Notice::DeviceChanged);
                }
            }
        }
    }
}

/// Runs store or image work off the tokio workers.
/// What a command's target names, for the inference worker.
fn pin_of(target: LabelTarget) -> Pin {
    match target {
        LabelTarget::Latest => Pin::Frame { frame_id: None },
        LabelTarget::Frame { frame_id } => Pin::Frame {
            frame_id: Some(frame_id),
        },
        LabelTarget::Object(id) => Pin::Object(id),
        LabelTarget::Detection { frame_id, index } => Pin::Detection { frame_id, index },
        LabelTarget::Box { frame_id, bbox } => Pin::Box { frame_id, bbox },
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ControlError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ControlError::Internal(e.to_string()))
}

/// Asks the worker to analyse the stream's next frame whatever the motion gate thinks, and
/// waits (briefly) for it: `label` must store what the camera sees now, not the last frame
/// that happened to move. Returns at once when no frame can come (paused, source down).
async fn fresh_frame(stream: &StreamHandle) {
    let before = stream.latest_frame_id();
    stream.force_next_frame();
    let deadline = Instant::now() + FRESH_FRAME_WAIT;
    while Instant::now() < deadline {
        if stream.idle() || stream.latest_frame_id() != before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes a camera's latest frame, with its detections drawn on it, as a retained JPEG on
/// `<camera>/snapshot`; its size, or `None`.
pub async fn publish_snapshot(publisher: &Publisher, stream: &StreamHandle) -> Option<usize> {
    let latest = stream.latest()?;
    let image = latest.image.clone()?;
    let jpeg = tokio::task::spawn_blocking(move || {
        let mut annotated = (*image).clone();
        annotate(&mut annotated, &latest.result.items);
        let mut out = std::io::Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(&annotated)
            .map(|()| out.into_inner())
    })
    .await;
    let jpeg = match jpeg {
        Ok(Ok(j)) => j,
        Ok(Err(e)) => {
            warn!(camera = %stream.name, "snapshot not encoded: {e}");
            return None;
        }
        Err(e) => {
            warn!(camera = %stream.name, "snapshot not encoded: {e}");
            return None;
        }
    };
    let n = jpeg.len();
    let topic = publisher.topics().camera_snapshot(&stream.name);
    match publisher.publish(&topic, jpeg, true).await {
        Ok(()) => Some(n),
        Err(e) => {
            info!(camera = %stream.name, "snapshot not published: {e}");
            None
        }
    }
}

/// Seconds of a voice sample kept to listen to: enough to recognise who speaks, while a long
/// upload does not fill the store (16 kHz, 16-bit mono: 256 KB at most).
const CLIP_SECONDS: usize = 8;

/// The first [`CLIP_SECONDS`] of a 16 kHz clip as a 16-bit WAV: what a voice sample keeps in
/// place of a picture's thumbnail.
fn voice_clip(samples_16k: &[f32]) -> Vec<u8> {
    let n = samples_16k.len().min(CLIP_SECONDS * 16_000);
    crate::audio::wav::encode_pcm16(&samples_16k[..n], 16_000)
}

/// An incoming message for the control plane.
pub struct Message {
    pub topic: String,
    pub incoming: Incoming,
    pub payload: Vec<u8>,
}

/// Messages waiting for a handler; beyond this, senders get `busy`.
pub const QUEUE: usize = 64;
/// Messages handled at once: a sample waiting for the inference worker must not hold up a
/// `pause`, and a burst of samples must not occupy every blocking thread.
pub const HANDLERS: usize = 4;

/// The bounded queue and its fixed set of handler tasks (see the module docs).
pub struct Dispatcher {
    tx: mpsc::Sender<Message>,
}

impl Dispatcher {
    /// Starts [`HANDLERS`] tasks on `tracker`; they end when the queue closes (the
    /// dispatcher is dropped) or `shutdown` is cancelled.
    pub fn start(
        control: Arc<Control>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Dispatcher {
        let (tx, rx) = mpsc::channel::<Message>(QUEUE);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..HANDLERS {
            let (rx, control, shutdown) = (rx.clone(), control.clone(), shutdown.clone());
            tracker.spawn(async move {
                loop {
                    let msg = tokio::select! {
                        m = async { rx.lock().await.recv().await } => m,
                        _ = shutdown.cancelled() => None,
                    };
                    let Some(msg) = msg else { break };
                    control.handle(msg).await;
                }
            });
        }
        Dispatcher { tx }
    }

    /// Queues a message; a full queue hands it back for a `busy` reply.
    pub fn submit(&self, msg: Message) -> Result<(), Message> {
        self.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
        })
    }
}

/// The reply to a message the queue had no room for.
pub fn busy_reply(msg: &Message) -> Reply {
    let (id, cmd) = match &msg.incoming {
        Incoming::Command(verb) => {
            let id = match Request::parse(verb, &msg.payload) {
                Ok(req) => req.id,
                Err(rejected) => rejected.id,
            };
            (id, verb.as_str())
        }
        _ => (None, "sample"),
    };
    Reply::error(
        id,
        Some(cmd),
        format!("busy: {QUEUE} messages are already waiting; send this again in a second"),
    )
}

/// A command's result as the reply's `result`: one of the wire types, serialised once here.
fn result(value: &impl serde::Serialize) -> Result<Value, ControlError> {
    serde_json::to_value(value).map_err(|e| ControlError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_voice_keeps_its_first_seconds_as_a_wav() {
        let long = vec![0.25f32; 20 * 16_000];
        let wav = super::voice_clip(&long);
        assert!(wav.starts_with(b"RIFF"));
        assert_eq!(wav.len(), 44 + super::CLIP_SECONDS * 16_000 * 2);
        let short = super::voice_clip(&long[..16_000]);
        assert_eq!(short.len(), 44 + 16_000 * 2);
    }
}
