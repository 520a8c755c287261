//! `adaptd run`: the daemon's wiring of source, pipeline, sample store, trainer and MQTT.
//!
//! Threads, and why:
//! - a tokio runtime with two workers owns the I/O: the MQTT link, the command dispatcher
//!   ([`super::control`]), the `stats` and retraining timers and the signals. Nothing
//!   CPU-heavy runs there, so replies and keep-alives never wait behind a model;
//! - the source's own capture thread ([`crate::source::spawn_capture`]) feeds a one-frame
//!   slot, so a slow model skips stale frames instead of queueing them;
//! - the inference thread ([`super::infer`]) owns the backbones;
//! - the training thread (niced, one for the daemon's lifetime) waits for training requests;
//!   it swaps a deployed head into the [`HeadSlot`] and inference picks it up on the next
//!   frame, without pausing.
//!
//! The [`Workspace`] (an SQLite connection and the head registry) sits behind one mutex and
//! is only touched from `spawn_blocking` closures and the training thread: SQLite work never
//! blocks a tokio worker, and one connection is never used by two threads at once. While a
//! training run holds it, sample additions wait (seconds at most: `[train].time_budget_secs`);
//! `state` and `stats` read a cached copy of the sample counts, so they never wait.
//!
//! Shutdown (SIGTERM, SIGINT): stop the source, let the inference thread finish its frame,
//! cancel a training run, then [`MqttLink::shutdown`] publishes `stopped` and disconnects
//! cleanly. SIGHUP reloads the configuration file: consensus, the detector's score threshold
//! and the retraining schedule apply live; everything else needs a restart (logged).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use image::RgbImage;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::control;
use super::infer::{self, Job};
use super::listen::AudioPipeline;
use super::notify::{Liveness, Notifier, Progress};
use super::pipeline::{FrameResult, HeadSlot, Pipeline, ServingHead};
use super::stats::{cpu_temperature, FpsMeter, LatencyRing, StatsSnapshot};
use crate::adapt::workspace::{Workspace, WorkspaceError};
use crate::audio::model::AudioModel;
use crate::audio::pcm::PcmFormat;
use crate::audio::stream::{self, StreamConfig};
use crate::audio::wav::WavLimits;
use crate::cli::Context;
use crate::config::{Config, TrainSection};
use crate::consensus::Consensus;
use crate::model::manifest::ModelKind;
use crate::model::manifest::Task;
use crate::mqtt::discovery::DeviceKind;
use crate::mqtt::{LinkEvent, MqttLink, Publisher};
use crate::runtime::BackendKind;
use crate::source::{SlotCounters, SourceConfig, SourceState, SourceStats, StopSignal};
use crate::vision::image_io::DecodeLimits;
use crate::vision::{AnalyzeOptions, VisionModel};

/// Time the inference and training threads get to finish at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the retraining schedule is checked.
const TRAIN_CHECK: Duration = Duration::from_secs(2);

/// The latest processed frame (or utterance), for `label` and `snapshot`.
pub struct Latest {
    /// The frame; `None` for an utterance.
    pub image: Option<Arc<RgbImage>>,
    pub result: FrameResult,
}

/// Frame-rate and latency figures kept by the inference thread.
pub struct FrameStats {
    pub latency: LatencyRing,
    pub fps: FpsMeter,
    pub frames: u64,
    /// Frames left out to hold the `set fps` cap.
    pub throttled: u64,
    /// Frames the motion gate skipped.
    pub motion_skipped: u64,
}

/// Something the tokio side should react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Republish the retained `state`.
    StateChanged,
    /// The capture thread ended: no more frames will come.
    SourceEnded,
}

/// What every part of the daemon shares.
pub struct Shared {
    pub publisher: Publisher,
    pub workspace: Mutex<Workspace>,
    pub slot: HeadSlot,
    pub jobs: Mutex<Sender<Job>>,
    /// The training thread's queue; emptied at shutdown, which ends that thread.
    pub trainer: Mutex<Option<Sender<control::TrainRequest>>>,
    notices: mpsc::UnboundedSender<Notice>,
    pub latest: Mutex<Option<Latest>>,
    pub frame_stats: Mutex<FrameStats>,
    /// The first stable label after consensus (the `label` of `state`).
    pub label: Mutex<Option<String>>,
    /// Sample counts per label, refreshed after every change of the store.
    pub counts: Mutex<BTreeMap<String, usize>>,
    pub head_macro_f1: Mutex<Option<f64>>,
    /// `set unknown_threshold`: overrides the threshold of every head put in service.
    pub unknown_threshold: Mutex<Option<f32>>,
    pub paused: AtomicBool,
    /// Set by a command that needs the current frame analysed (`label`): the next frame
    /// bypasses the motion gate.
    pub force_frame: AtomicBool,
    pub training: AtomicBool,
    pub auto_train: AtomicBool,
    /// Samples added since the last training run started.
    pub new_samples: AtomicU64,
    pub last_train: Mutex<Instant>,
    /// Set at shutdown: the inference thread stops and training is cancelled.
    pub shutdown: AtomicBool,
    pub train: Mutex<TrainSection>,
    pub limits: DecodeLimits,
    /// Limits of WAV clips received on `samples/<label>` (audio models).
    pub wav_limits: WavLimits,
    /// An audio model on a `kind = "audio"` source: samples are WAV clips, inputs utterances.
    pub is_audio: bool,
    pub is_detector: bool,
    pub model: String,
    pub embedding_model: String,
    /// The engines running `model` and `embedding_model` (`auto` may pick either).
    pub backend: BackendKind,
    pub embedding_backend: BackendKind,
    pub source: String,
    pub source_stats: Arc<SourceStats>,
    pub slot_counters: Arc<SlotCounters>,
    pub started: Instant,
    /// Milliseconds after `started` at which the inference thread last went round its loop
    /// (for the systemd watchdog, see [`super::notify::Liveness`]).
    pub heartbeat_ms: AtomicU64,
    pub runtime: tokio::runtime::Handle,
}

/// Locks a mutex; a panic elsewhere while holding it (a bug) does not take the daemon down.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Called by the inference thread on every round of its loop.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// The pipeline's progress, for the watchdog.
    fn progress(&self) -> Progress {
        // Frames the motion gate or the fps cap looked at and let go are progress too: a
        // still scene is a healthy pipeline, not a stuck one.
        let frames = {
            let s = lock(&self.frame_stats);
            s.frames + s.motion_skipped + s.throttled
        };
        let beat = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        let source_idle = matches!(
            self.source_stats.state(),
            SourceState::Reconnecting { .. } | SourceState::Ended | SourceState::Failed { .. }
        );
        Progress {
            frames,
            heartbeat: self.started + beat,
            idle_by_design: source_idle || self.paused.load(Ordering::SeqCst),
        }
    }

    /// One line for `systemctl status`.
    fn status_line(&self) -> String {
        let st = self.stats();
        let head = st
            .head_version
            .map_or_else(|| "no head yet".to_owned(), |v| format!("head v{v}"));
        let samples: usize = st.samples.values().sum();
        let mqtt = if self.publisher.stats().connected {
            "MQTT connected"
        } else {
            "MQTT disconnected"
        };
        let what = if st.paused {
            "paused".to_owned()
        } else {
            format!("{:.1} fps (p50 {:.0} ms)", st.fps, st.inference_ms_p50)
        };
        format!(
            "{what}, {head}, {samples} samples, {mqtt}, source {}",
            st.source_state
        )
    }

    pub fn notify(&self, notice: Notice) {
        let _ = self.notices.send(notice);
    }

    pub fn send_job(&self, job: Job) -> bool {
        lock(&self.jobs).send(job).is_ok()
    }

    /// Re-reads the sample counts; call with the workspace locked, after a change.
    pub fn refresh_counts(&self, ws: &Workspace) {
        match ws.store.counts() {
            Ok(c) => *lock(&self.counts) = c.iter().map(|c| (c.label.clone(), c.total())).collect(),
            Err(e) => warn!("cannot count samples: {e}"),
        }
    }

    /// The retained `state` message (field names are read by the Home Assistant discovery).
    pub fn state(&self) -> Value {
        let samples = lock(&self.counts).clone();
        let total: usize = samples.values().sum();
        let head_version = self.slot.load().as_ref().map(|h| h.version);
        json!({
            "binary_version": env!("CARGO_PKG_VERSION"),
            "model": self.model,
            "embedding_model": self.embedding_model,
            "backend": self.backend,
            "embedding_backend": self.embedding_backend,
            "head_version": head_version,
            "paused": self.paused.load(Ordering::SeqCst),
            "training": self.training.load(Ordering::SeqCst),
            "source": self.source,
            "source_state": self.source_stats.state(),
            "label": *lock(&self.label),
            "samples": samples,
            "samples_total": total,
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        let link = self.publisher.stats();
        let (fps, frames, throttled, motion_skipped, p50, p95) = {
            let s = lock(&self.frame_stats);
            (
                s.fps.fps(),
                s.frames,
                s.throttled,
                s.motion_skipped,
                s.latency.percentile(0.5),
                s.latency.percentile(0.95),
            )
        };
        StatsSnapshot {
            fps,
            frames,
            skipped_frames: self.slot_counters.skipped(),
            // Three separate reads can race with the capture thread: clamp to what is possible.
            queued_frames: self
                .slot_counters
                .sent()
                .saturating_sub(self.slot_counters.skipped() + self.slot_counters.received())
                .min(1),
            throttled_frames: throttled,
            motion_skipped_frames: motion_skipped,
            inference_ms_p50: p50,
            inference_ms_p95: p95,
            paused: self.paused.load(Ordering::SeqCst),
            source_state: serde_json::to_value(self.source_stats.state())
                .ok()
                .and_then(|v| v.get("state").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default(),
            head_version: self.slot.load().as_ref().map(|h| h.version),
            head_macro_f1: *lock(&self.head_macro_f1),
            training: if self.training.load(Ordering::SeqCst) {
                "running".into()
            } else {
                "idle".into()
            },
            samples: lock(&self.counts).clone(),
            cpu_temp_c: cpu_temperature(),
            mqtt_reconnects: link.reconnects,
            mqtt_dropped: link.dropped,
            uptime_s: self.started.elapsed().as_secs(),
        }
    }

    /// Publishes the retained `state`; failures (link down) are fine: it is republished on
    /// every connect.
    pub async fn publish_state(&self) {
        let topic = self.publisher.topics().state();
        if let Err(e) = self
            .publisher
            .publish(&topic, self.state().to_string(), true)
            .await
        {
            info!("state not published: {e}");
        }
    }

    /// Puts version `version` of the registry in service.
    pub fn serve_head(&self, ws: &Workspace, version: u32) -> Result<(), WorkspaceError> {
        let (mut head, meta) = ws.registry.load(version)?;
        if let Some(t) = *lock(&self.unknown_threshold) {
            if let Err(e) = head.set_unknown_threshold(t) {
                warn!("the unknown_threshold set earlier ({t}) does not apply: {e}");
            }
        }
        *lock(&self.head_macro_f1) = Some(meta.report.metrics.macro_f1);
        self.slot
            .store(Some(Arc::new(ServingHead { version, head })));
        Ok(())
    }
}

/// glibc malloc arenas the daemon may use. glibc gives threads their own arenas (up to 8 per
/// core), and the daemon's short-lived threads (tokio's blocking pool, which retires idle
/// threads after 10 s and starts new ones) each dirty a fresh one: the 30-minute soak saw
/// resident memory step up by megabytes that were never returned. Two arenas cost nothing
/// measurable here (one thread does the heavy allocation: inference) and cap that growth.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 2;

/// Loads everything, then runs until SIGTERM/SIGINT.
pub fn run(ctx: &Context, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    // SAFETY: mallopt only sets a malloc tunable; called before any thread is started.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
    let config = ctx.config.clone();
    let main_model = ctx.resolve_model(None)?;
    let is_audio = main_model.manifest.kind == ModelKind::Audio;
    if is_audio != config.source.is_audio() {
        anyhow::bail!(if is_audio {
            format!(
                "[model].name = {:?} is an audio model but [source].kind = {:?}: use \
                 kind = \"audio\" (PCM on stdin or a FIFO) for it, or an image model",
                main_model.manifest.name,
                config.source.kind()
            )
        } else {
            format!(
                "[source].kind = \"audio\" needs an audio model ([model].name = \
                 \"resemblyzer-ge2e\"), but {:?} is an image model",
                main_model.manifest.name
            )
        });
    }
    if is_audio {
        return run_audio(config, main_model, config_path);
    }
    let is_detector = main_model.manifest.task == Task::Detect;
    let sub_model = if is_detector {
        Some(
            ctx.resolve_model(Some(&config.model.sublabel_model))
                .context("[model].sublabel_model")?,
        )
    } else {
        None
    };
    let state_dir = config
        .state_dir
        .clone()
        .unwrap_or_else(crate::cli::default_state_dir);
    let emb = sub_model.as_ref().unwrap_or(&main_model);
    let ws = Workspace::open(&state_dir, emb, config.samples.store_options())?;
    let model = main_model.manifest.name.clone();
    let embedding_model = emb.manifest.name.clone();
    let detect = config.detect.for_manifest(&main_model.manifest);
    let main_vm = VisionModel::load_with(main_model, 1, &config.model.backend_options())?;
    let sub_opts = config.model.sublabel_backend_options();
    let sub_vm = sub_model
        .map(|m| VisionModel::load_with(m, 1, &sub_opts))
        .transpose()?;
    let backend = main_vm.backbone().backend();
    let embedding_backend = sub_vm
        .as_ref()
        .map_or(backend, |vm| vm.backbone().backend());
    let slot: HeadSlot = Arc::new(ArcSwapOption::empty());
    let pipeline = Pipeline::new(
        main_vm,
        sub_vm,
        slot.clone(),
        Consensus::new(config.consensus),
        AnalyzeOptions { top_k: 1, detect },
        Vec::new(),
    )
    .with_motion(config.motion);
    let start = Start {
        config,
        config_path: config_path.map(Path::to_path_buf),
        ws,
        slot,
        engine: Engine::Vision(Box::new(pipeline)),
        is_detector,
        model,
        embedding_model,
        backend,
        embedding_backend,
    };
    serve_on(start)
}

/// `run` for an audio model: the speaker encoder is both backbone and embedding model.
fn run_audio(
    config: Config,
    model: crate::model::ResolvedModel,
    config_path: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let state_dir = config
        .state_dir
        .clone()
        .unwrap_or_else(crate::cli::default_state_dir);
    let ws = Workspace::open(&state_dir, &model, config.samples.store_options())?;
    let name = model.manifest.name.clone();
    let encoder = AudioModel::load_with(model, &config.model.backend_options())?;
    let backend = encoder.backend();
    let slot: HeadSlot = Arc::new(ArcSwapOption::empty());
    let pipeline = AudioPipeline::new(encoder, slot.clone());
    let start = Start {
        config,
        config_path: config_path.map(Path::to_path_buf),
        ws,
        slot,
        engine: Engine::Audio(Box::new(pipeline)),
        is_detector: false,
        model: name.clone(),
        embedding_model: name,
        backend,
        embedding_backend: backend,
    };
    serve_on(start)
}

/// Runs the daemon on `runtime`, then drops the runtime without waiting for a capture thread
/// still blocked in a read from stdin or a FIFO (which no signal can interrupt; the process
/// exit ends it). Dropping a runtime normally waits for every `spawn_blocking` task.
fn serve_on(start: Start) -> anyhow::Result<ExitCode> {
    let runtime = io_runtime()?;
    let result = runtime.block_on(serve(start));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The runtime that owns the daemon's I/O (see the module docs).
fn io_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("adaptd-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// What the inference thread runs.
enum Engine {
    Vision(Box<Pipeline>),
    Audio(Box<AudioPipeline>),
}

/// The capture side of the source, started by `serve`.
enum Feed {
    Frames(
        crate::source::CaptureHandle,
        crate::source::LatestReceiver<crate::source::Frame>,
    ),
    Audio(
        std::thread::JoinHandle<()>,
        crate::source::LatestReceiver<stream::UtteranceMsg>,
    ),
}

impl Feed {
    fn counters(&self) -> Arc<SlotCounters> {
        match self {
            Feed::Frames(_, rx) => rx.counters(),
            Feed::Audio(_, rx) => rx.counters(),
        }
    }
}

/// Opens the configured source and starts its capture thread: (feed, description, stats).
fn open_feed(
    config: &Config,
    stop: &StopSignal,
) -> anyhow::Result<(Feed, String, Arc<SourceStats>)> {
    if let SourceConfig::Audio {
        path,
        sample_rate,
        channels,
    } = &config.source
    {
        let problems = config.source.validate();
        if !problems.is_empty() {
            anyhow::bail!("invalid [source] configuration: {}", problems.join("; "));
        }
        let cfg = StreamConfig {
            path: path.clone(),
            format: PcmFormat {
                sample_rate: *sample_rate,
                channels: *channels,
            },
        };
        cfg.check().map_err(anyhow::Error::msg)?;
        let desc = cfg.describe();
        let stats = SourceStats::new();
        let (handle, rx) = stream::spawn(cfg, stats.clone(), stop.clone())
            .context("cannot start the audio capture thread")?;
        return Ok((Feed::Audio(handle, rx), desc, stats));
    }
    let source = crate::source::open(&config.source, config.image.limits(), stop)?;
    let desc = source.describe();
    let stats = source.stats();
    let (handle, rx) =
        crate::source::spawn_capture(source).context("cannot start the capture thread")?;
    Ok((Feed::Frames(handle, rx), desc, stats))
}

/// What `run` loaded before the runtime started.
struct Start {
    config: Config,
    config_path: Option<PathBuf>,
    ws: Workspace,
    slot: HeadSlot,
    engine: Engine,
    is_detector: bool,
    model: String,
    embedding_model: String,
    backend: BackendKind,
    embedding_backend: BackendKind,
}

async fn serve(s: Start) -> anyhow::Result<ExitCode> {
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let stop = StopSignal::new();
    let is_audio = s.config.source.is_audio();
    #[cfg(feature = "embedded-broker")]
    let broker = start_embedded_broker(&s.config.mqtt).await?;
    let kind = if is_audio {
        DeviceKind::Microphone
    } else {
        DeviceKind::Camera
    };
    let (link, mut events) = MqttLink::start_for(&s.config.mqtt, kind)?;
    let (feed, source_desc, source_stats) = open_feed(&s.config, &stop)?;
    let slot_counters = feed.counters();
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
    let (notices_tx, mut notices) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        publisher: link.publisher().clone(),
        workspace: Mutex::new(s.ws),
        slot: s.slot,
        jobs: Mutex::new(jobs_tx),
        trainer: Mutex::new(None),
        notices: notices_tx,
        latest: Mutex::new(None),
        frame_stats: Mutex::new(FrameStats {
            latency: LatencyRing::new(256),
            fps: FpsMeter::new(Duration::from_secs(10)),
            frames: 0,
            throttled: 0,
            motion_skipped: 0,
        }),
        label: Mutex::new(None),
        counts: Mutex::new(BTreeMap::new()),
        head_macro_f1: Mutex::new(None),
        unknown_threshold: Mutex::new(None),
        paused: AtomicBool::new(false),
        force_frame: AtomicBool::new(false),
        training: AtomicBool::new(false),
        auto_train: AtomicBool::new(true),
        new_samples: AtomicU64::new(0),
        last_train: Mutex::new(Instant::now()),
        shutdown: AtomicBool::new(false),
        train: Mutex::new(s.config.train.clone()),
        limits: s.config.image.limits(),
        wav_limits: WavLimits::default(),
        is_audio,
        is_detector: s.is_detector,
        model: s.model,
        embedding_model: s.embedding_model,
        backend: s.backend,
        embedding_backend: s.embedding_backend,
        source: source_desc,
        source_stats,
        slot_counters,
        started: Instant::now(),
        heartbeat_ms: AtomicU64::new(0),
        runtime: tokio::runtime::Handle::current(),
    });
    {
        let ws = lock(&shared.workspace);
        shared.refresh_counts(&ws);
        match ws.registry.current_version() {
            Ok(Some(v)) => match shared.serve_head(&ws, v) {
                Ok(()) => info!("head v{v} in service"),
                Err(e) => warn!("head v{v} cannot be loaded, running without a head: {e}"),
            },
            Ok(None) => info!("no head trained yet: labels are the backbone's own"),
            Err(e) => warn!("head registry: {e}; running without a head"),
        }
    }
    let trainer = control::spawn_trainer(&shared).context("cannot start the training thread")?;
    let (inference, capture) = {
        let shared = shared.clone();
        let thread = std::thread::Builder::new().name("inference".into());
        match (s.engine, feed) {
            (Engine::Vision(p), Feed::Frames(capture, frames)) => {
                let h = thread.spawn(move || infer::run(*p, frames, jobs_rx, shared));
                (h, Capture::Frames(capture))
            }
            (Engine::Audio(p), Feed::Audio(capture, utterances)) => {
                let h = thread.spawn(move || infer::run(*p, utterances, jobs_rx, shared));
                (h, Capture::Audio(capture))
            }
            _ => anyhow::bail!(
                "internal error: the model and the source disagree on images versus audio"
            ),
        }
    };
    let inference = inference.context("cannot start the inference thread")?;
    info!(source = %shared.source, model = %shared.model, "adaptd running");
    let notifier = Notifier::from_env();
    notifier.ready(&format!("running {} on {}", shared.model, shared.source));
    // Without a watchdog the tick still runs, rarely, and does nothing.
    let ping_every = notifier.ping_interval();
    let mut watchdog_tick = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    let mut liveness = Liveness::new(ping_every.unwrap_or(Duration::MAX));

    let stats_every = Duration::from_secs(s.config.mqtt.stats_interval_secs.max(1));
    let mut stats_tick = tokio::time::interval(stats_every);
    let mut train_tick = tokio::time::interval(TRAIN_CHECK);
    // A reply that could not go out because its cause (an oversized packet) dropped the
    // connection; sent after the reconnect.
    let mut pending: Option<crate::mqtt::Reply> = None;
    // Finished work rather than a broken pipeline when it ends: a folder replay, a recording.
    let replay = match &s.config.source {
        SourceConfig::Dir { .. } => true,
        SourceConfig::Audio { path, .. } => std::fs::metadata(path).is_ok_and(|m| m.is_file()),
        _ => false,
    };
    let mut code = ExitCode::SUCCESS;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                notifier.reloading();
                reload(&shared, s.config_path.as_deref());
                notifier.reloaded(&shared.status_line());
            }
            event = events.recv() => match event {
                Some(event) => on_link_event(&shared, event, &mut pending).await,
                None => { error!("the MQTT link ended unexpectedly; stopping"); break; }
            },
            Some(notice) = notices.recv() => match notice {
                Notice::StateChanged => shared.publish_state().await,
                Notice::SourceEnded => {
                    let state = shared.source_stats.state();
                    // A folder replay that ends is finished work; a pipe whose writer went
                    // away (ffmpeg, rpicam-vid died) or a failed camera is a broken pipeline
                    // that a restart by the service manager can mend.
                    if replay && state == SourceState::Ended {
                        info!("the replay ended; the daemon keeps serving commands");
                    } else {
                        error!(
                            "the source {} ended ({state:?}): stopping with status 1 so that the \
                             service manager (systemd Restart=on-failure) restarts the pipeline",
                            shared.source
                        );
                        code = ExitCode::FAILURE;
                        break;
                    }
                }
            },
            _ = watchdog_tick.tick(), if ping_every.is_some() => {
                if liveness.alive(Instant::now(), shared.progress()) {
                    notifier.watchdog();
                } else {
                    warn!("the pipeline made no progress for {:?}: no watchdog ping", ping_every.unwrap_or_default());
                }
            }
            _ = stats_tick.tick() => {
                notifier.status(&shared.status_line());
                if let Ok(json) = serde_json::to_vec(&shared.stats()) {
                    let topic = shared.publisher.topics().stats();
                    let _ = shared.publisher.try_publish(&topic, json, false);
                }
            }
            _ = train_tick.tick() => scheduled_training(&shared),
        }
    }

    // Shutdown: frames stop first, then work in hand finishes, then MQTT says `stopped`.
    notifier.stopping();
    stop.stop();
    shared.shutdown.store(true, Ordering::SeqCst);
    let joined = tokio::time::timeout(
        STOP_GRACE,
        tokio::task::spawn_blocking(move || inference.join()),
    )
    .await;
    if !matches!(joined, Ok(Ok(Ok(())))) {
        warn!("the inference thread did not stop cleanly within {STOP_GRACE:?}");
    }
    // Closing the queue ends the training thread once a run in progress is cancelled.
    lock(&shared.trainer).take();
    let joined = tokio::time::timeout(
        STOP_GRACE,
        tokio::task::spawn_blocking(move || trainer.join()),
    )
    .await;
    if !matches!(joined, Ok(Ok(Ok(())))) {
        warn!("the training thread did not stop cleanly within {STOP_GRACE:?}");
    }
    // The capture thread sees the stop signal within a second; a blocking pipe read may not,
    // so it is not waited for beyond that (see `spawn_capture`).
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::task::spawn_blocking(move || match capture {
            Capture::Frames(h) => h.join().is_ok(),
            Capture::Audio(h) => h.join().is_ok(),
        }),
    )
    .await;
    link.shutdown(Duration::from_secs(5)).await;
    #[cfg(feature = "embedded-broker")]
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    info!("adaptd stopped");
    Ok(code)
}

/// The capture thread, joined (briefly) at shutdown.
enum Capture {
    Frames(crate::source::CaptureHandle),
    Audio(std::thread::JoinHandle<()>),
}

/// `[mqtt].url = "embedded"`: the in-process broker, started before the link connects to it.
#[cfg(feature = "embedded-broker")]
async fn start_embedded_broker(
    config: &crate::mqtt::MqttConfig,
) -> anyhow::Result<Option<crate::mqtt::broker::EmbeddedBroker>> {
    use crate::mqtt::broker::{BrokerOptions, EmbeddedBroker};
    if !config.is_embedded() {
        return Ok(None);
    }
    let addr = config.embedded_addr().map_err(|e| anyhow::anyhow!(e))?;
    let opts = BrokerOptions {
        max_packet_bytes: config.max_packet_bytes,
        ..BrokerOptions::default()
    };
    let broker = EmbeddedBroker::start(addr, opts).await?;
    if !addr.ip().is_loopback() {
        warn!(
            "the embedded MQTT broker listens on {addr}, beyond this machine, and has no \
             authentication: anyone who reaches it can command adaptd; use Mosquitto with \
             passwords for that"
        );
    }
    info!("embedded MQTT broker listening on {}", broker.local_addr());
    Ok(Some(broker))
}

async fn on_link_event(
    shared: &Arc<Shared>,
    event: LinkEvent,
    pending: &mut Option<crate::mqtt::Reply>,
) {
    match event {
        LinkEvent::Connected { connects } => {
            info!(connects, "MQTT connected");
            shared.publish_state().await;
            control::publish_snapshot(shared).await;
            if let Some(reply) = pending.take() {
                control::send_reply(shared, &reply).await;
            }
        }
        LinkEvent::Message {
            topic,
            incoming,
            payload,
        } => {
            // Each message on its own task: a sample waiting for the inference thread does not
            // hold up a `pause`.
            let shared = shared.clone();
            tokio::spawn(async move { control::handle(&shared, &topic, incoming, payload).await });
        }
        LinkEvent::Oversized { size, max } => {
            let reply = crate::mqtt::Reply::error(
                None,
                None,
                format!(
                    "a message of {size} bytes was dropped: it exceeds [mqtt].max_packet_bytes = {max}; \
                     send smaller images (a few hundred KB are plenty) or raise the limit"
                ),
            );
            // rumqttc drops the connection on such a packet: the reply usually has to wait
            // for the reconnect.
            if !control::send_reply(shared, &reply).await {
                *pending = Some(reply);
            }
        }
        LinkEvent::HomeAssistantOnline => info!("Home Assistant is online"),
    }
}

/// Starts a training run when the schedule says so (`[train].interval_secs`,
/// `[train].min_new_samples`) and samples were added since the last run.
fn scheduled_training(shared: &Arc<Shared>) {
    if !shared.auto_train.load(Ordering::SeqCst) || shared.training.load(Ordering::SeqCst) {
        return;
    }
    let new = shared.new_samples.load(Ordering::SeqCst);
    if new == 0 {
        return;
    }
    let (interval, min_new) = {
        let t = lock(&shared.train);
        (t.interval_secs, t.min_new_samples)
    };
    let elapsed = lock(&shared.last_train).elapsed();
    let by_time = interval > 0 && elapsed >= Duration::from_secs(interval);
    let by_count = min_new > 0 && new >= min_new;
    if by_time || by_count {
        let why = if by_count { "new samples" } else { "schedule" };
        if let Err(e) = control::start_training(shared, false, why) {
            warn!("scheduled training did not start: {e}");
        }
    }
}

/// SIGHUP: reload the file; apply what can change live, keep the old config when invalid.
fn reload(shared: &Arc<Shared>, path: Option<&Path>) {
    let Some(path) = path else {
        warn!("SIGHUP: adaptd was started without --config; nothing to reload");
        return;
    };
    match Config::load(path) {
        Err(e) => error!("SIGHUP: keeping the running configuration: {e}"),
        Ok(c) => {
            shared.send_job(Job::Settings {
                consensus: Some(c.consensus),
                consensus_frames: None,
                score_threshold: c.detect.score_threshold,
                max_fps: None,
            });
            *lock(&shared.train) = c.train.clone();
            info!(
                "SIGHUP: applied [consensus], [detect].score_threshold and [train]; \
                 changes to other keys ([source], [mqtt], [model], [samples], ...) need a restart"
            );
        }
    }
}
