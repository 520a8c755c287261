//! `adaptd run`: the daemon's wiring of streams, workers, learners, trainer and MQTT.
//!
//! Threads and tasks, and why:
//! - a tokio runtime with two workers owns the I/O: the MQTT link, the control plane's
//!   handler tasks ([`super::control::Dispatcher`]), the `stats` and retraining timers and
//!   the signals. Nothing CPU-heavy runs there, so replies and keep-alives never wait behind
//!   a model. Every task is tracked ([`TaskTracker`]) and waited for at shutdown;
//! - each stream's own capture thread feeds a one-frame slot, so a slow model skips stale
//!   frames instead of queueing them;
//! - one inference worker per medium ([`super::infer`]) owns that medium's models and serves
//!   every stream of it round-robin;
//! - the trainer ([`super::trainer`]), one niced thread, trains on snapshots and swaps a
//!   deployed head into the learner's slot: inference picks it up on the next frame.
//!
//! Shutdown is one [`CancellationToken`] (SIGTERM, SIGINT, or the caller's): sources stop,
//! the trainer cancels its run, the workers finish the frame in hand, queued commands are
//! answered, then [`MqttLink::shutdown`] publishes `stopped` and disconnects cleanly. SIGHUP
//! reloads the configuration file: consensus, the detector's score threshold and the
//! retraining schedule apply live; everything else needs a restart (logged).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::control::{self, Control, Dispatcher, Message};
use super::infer::{self, Heartbeat, Job, JobSender, Lane, LaneSettings, WorkerContext};
use super::learner::lock;
use super::listen::Audio;
use super::load::{self, LanePlan, Loaded};
use super::notice::{Notice, Notices};
use super::notify::{Liveness, Notifier, Progress};
use super::report;
use super::streams::{StreamHandle, StreamInfo};
use super::telemetry::Telemetry;
use super::trainer::{self, TrainerContext};
use super::DaemonError;
use crate::audio::pcm::PcmFormat;
use crate::audio::wav::WavLimits;
use crate::config::Config;
use crate::model::ModelDirs;
use crate::mqtt::discovery::{DeviceKind, DiscoveredStream, DiscoveredZone};
use crate::mqtt::{LinkEvent, MqttLink, Reply};
use crate::source::microphone::{self as audio_stream, AudioInput, MicrophoneError, StreamConfig};
use crate::source::{
    latest_slot, Doorbell, SourceConfig, SourceState, SourceStats, StopSignal, StreamKind,
};

/// Time the workers and the trainer get to finish at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Time queued commands get to be answered at shutdown.
const REPLY_GRACE: Duration = Duration::from_secs(3);
/// How often the retraining schedule is checked.
const TRAIN_CHECK: Duration = Duration::from_secs(2);
/// How often the sources' states are compared with the last published ones.
const SOURCE_CHECK: Duration = Duration::from_secs(1);

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Asked to stop (signal, token), or every stream finished its replay.
    Stopped,
    /// Every stream's source ended and one of them failed: a restart by the service manager
    /// (systemd `Restart=on-failure`) may mend it.
    SourcesFailed,
}

/// What [`serve`] needs besides the configuration.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The configuration file, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Handle SIGTERM, SIGINT and SIGHUP (the binary does; embedders and tests may not).
    pub signals: bool,
}

/// glibc malloc arenas the daemon may use. glibc gives threads their own arenas (up to 8 per
/// core), and the daemon's short-lived threads (tokio's blocking pool, which retires idle
/// threads after 10 s and starts new ones) each dirty a fresh one: the 30-minute soak saw
/// resident memory step up by megabytes that were never returned. Two arenas cost nothing
/// measurable here (one thread does the heavy allocation: inference) and cap that growth.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 2;

/// `adaptd run`: loads everything, then serves until SIGTERM/SIGINT, on a runtime of its own.
pub fn run_blocking(
    config: Config,
    models: ModelDirs,
    config_path: Option<&Path>,
) -> Result<Outcome, DaemonError> {
    // SAFETY: mallopt only sets a malloc tunable; called before any thread is started.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("adaptd-io")
        .enable_all()
        .build()
        .map_err(|source| DaemonError::Io {
            what: "cannot start the async runtime",
            source,
        })?;
    let opts = ServeOptions {
        config_path: config_path.map(Path::to_path_buf),
        signals: true,
    };
    let result = runtime.block_on(serve(config, models, opts, CancellationToken::new()));
    // Do not wait for a capture thread still blocked in a read from stdin or a FIFO (which
    // no signal can interrupt; the process exit ends it).
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// A stream's capture thread, joined (briefly) at shutdown.
enum Capture {
    Frames(crate::source::CaptureHandle),
    Audio(std::thread::JoinHandle<()>),
    /// The source could not be opened.
    None,
}

/// The daemon: runs until `shutdown` is cancelled (or a signal, with `opts.signals`).
pub async fn serve(
    config: Config,
    models: ModelDirs,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> Result<Outcome, DaemonError> {
    let loaded = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || load::load(&config, &models))
            .await
            .map_err(|e| DaemonError::Internal(e.to_string()))??
    };
    #[cfg(feature = "embedded-broker")]
    let broker = start_embedded_broker(&config.mqtt).await?;
    let discovered: Vec<DiscoveredStream> = loaded
        .streams
        .iter()
        .map(|s| DiscoveredStream {
            name: s.spec.name.clone(),
            kind: match s.spec.kind {
                StreamKind::Camera => DeviceKind::Camera,
                StreamKind::Microphone => DeviceKind::Microphone,
            },
            labels: s.objects.clone(),
            zones: s
                .spec
                .scene
                .zones
                .iter()
                .map(|z| DiscoveredZone {
                    name: z.name.clone(),
                    labels: if z.objects.is_empty() {
                        s.objects.clone()
                    } else {
                        z.objects
                            .iter()
                            .filter(|l| s.objects.contains(l))
                            .cloned()
                            .collect()
                    },
                })
                .collect(),
            is_detector: s.is_detector,
        })
        .collect();
    let (link, mut events) = MqttLink::start_for(&config.mqtt, &discovered)?;
    let publisher = link.publisher().clone();
    let telemetry = Telemetry::new();
    let (notices, mut notice_rx) = Notices::channel();
    let stop = StopSignal::new();
    let workers_stop = CancellationToken::new();
    let Loaded {
        streams: plans,
        disabled,
        learners,
        vision,
        audio,
        engines,
        state_dir,
        fp_filters,
    } = loaded;
    // The event store: a daemon that cannot open it still runs (objects are published on
    // MQTT), and says why.
    let (recorder, recorder_thread) = if config.events.enabled {
        let path = crate::events::EventStore::path_in(&state_dir);
        optional_thread(
            super::recorder::Recorder::start(path, config.events).map_err(|e| e.to_string()),
            "tracked objects will not be stored",
        )
    } else {
        (None, None)
    };

    // Snapshots: like the event store, a daemon that cannot write them still runs.
    let (mut snapshots, snapshots_thread) = if config.snapshots.enabled {
        let dir = super::snapshots::SnapshotStore::dir_in(&state_dir);
        let started = super::snapshots::SnapshotStore::open(&dir, config.snapshots.clone())
            .map_err(|e| e.to_string())
            .and_then(|store| {
                super::snapshot_writer::SnapshotWriter::start(store, publisher.clone())
                    .map_err(|e| format!("cannot start the snapshot writer thread: {e}"))
            });
        optional_thread(started, "objects will have no snapshots")
    } else {
        (None, None)
    };

    // Streams: open each source; one that cannot be opened is a failed stream, the others go on.
    let mut handles = Vec::new();
    let mut vision_lanes: Vec<Lane<infer::Vision>> = Vec::new();
    let mut audio_lanes: Vec<Lane<Audio>> = Vec::new();
    let mut captures = Vec::new();
    for (index, plan) in plans.into_iter().enumerate() {
        let spec = &plan.spec;
        let limits = config.image.limits();
        let replay = match &spec.source {
            SourceConfig::Dir { .. } => true,
            SourceConfig::Audio { path, .. } => std::fs::metadata(path).is_ok_and(|m| m.is_file()),
            _ => false,
        };
        let score_threshold = match &plan.lane {
            LanePlan::Vision(p) => p.score_threshold(),
            LanePlan::Audio(_) => None,
        };
        let info = |source: String, stats: Arc<SourceStats>, slot| StreamInfo {
            index,
            name: spec.name.clone(),
            kind: spec.kind,
            model: plan.model.clone(),
            embedding_model: plan.embedding_model.clone(),
            backend: plan.backend,
            embedding_backend: plan.embedding_backend,
            is_detector: plan.is_detector,
            source,
            source_stats: stats,
            slot,
            learner: plan.learner.clone(),
            replay,
            score_threshold,
            zones: spec
                .scene
                .zones
                .iter()
                .map(|z| crate::wire::ZoneShape {
                    name: z.name.clone(),
                    points: z.points.clone(),
                })
                .collect(),
        };
        match plan.lane {
            LanePlan::Vision(pipeline) => {
                let demand = crate::source::Demand::new();
                let opened = crate::source::open(&spec.source, limits, &stop, &demand)
                    .map_err(|e| e.to_string())
                    .and_then(|source| {
                        let desc = source.describe();
                        let stats = source.stats();
                        crate::source::spawn_capture(source)
                            .map(|(h, rx)| (desc, stats, h, rx))
                            .map_err(|e| format!("cannot start the capture thread: {e}"))
                    });
                let (handle, rx, capture) = match opened {
                    Ok((desc, stats, h, rx)) => {
                        let handle = Arc::new(StreamHandle::new(info(desc, stats, rx.counters())));
                        (handle, rx, Capture::Frames(h))
                    }
                    Err(e) => {
                        error!(camera = %spec.name, "{e}; the other cameras go on");
                        let (stats, rx) = failed_source(&e);
                        let desc = format!("{} (failed to open)", spec.source.kind());
                        (
                            Arc::new(StreamHandle::new(info(desc, stats, rx.counters()))),
                            rx,
                            Capture::None,
                        )
                    }
                };
                let mut pipeline = *pipeline;
                if let Some(w) = &snapshots {
                    pipeline.set_snapshots(w.clone());
                }
                vision_lanes.push(Lane::new(
                    handle.clone(),
                    rx,
                    pipeline,
                    spec.max_fps,
                    demand,
                ));
                handles.push(handle);
                captures.push(capture);
            }
            LanePlan::Audio(pipeline) => {
                let opened = audio_source(&spec.source).and_then(|cfg| {
                    let desc = cfg.describe();
                    let stats = SourceStats::new();
                    audio_stream::spawn(cfg, stats.clone(), stop.clone())
                        .map(|(h, rx)| (desc, stats, h, rx))
                        .map_err(MicrophoneError::Thread)
                });
                let (handle, rx, capture) = match opened {
                    Ok((desc, stats, h, rx)) => {
                        let handle = Arc::new(StreamHandle::new(info(desc, stats, rx.counters())));
                        (handle, rx, Capture::Audio(h))
                    }
                    Err(e) => {
                        error!(microphone = %spec.name, "{e}; the other streams go on");
                        let (stats, rx) = failed_source(&e.to_string());
                        let desc = format!("{} (failed to open)", spec.source.kind());
                        (
                            Arc::new(StreamHandle::new(info(desc, stats, rx.counters()))),
                            rx,
                            Capture::None,
                        )
                    }
                };
                audio_lanes.push(Lane::new(
                    handle.clone(),
                    rx,
                    pipeline,
                    None,
                    crate::source::Demand::new(),
                ));
                handles.push(handle);
                captures.push(capture);
            }
        }
    }

    // Workers: one per medium that has streams.
    let heartbeats = Vec::from([Heartbeat::new(), Heartbeat::new()]);
    let worker_ctx = |beat: &Arc<Heartbeat>| WorkerContext {
        publisher: publisher.clone(),
        notices: notices.clone(),
        telemetry: telemetry.clone(),
        shutdown: workers_stop.clone(),
        heartbeat: beat.clone(),
        recorder: recorder.clone(),
    };
    let mut workers = Vec::new();
    let mut live_beats = Vec::new();
    let vision_jobs = if vision_lanes.is_empty() {
        None
    } else {
        let bell = Doorbell::new();
        let (jobs, rx) = JobSender::channel(bell.clone());
        let ctx = worker_ctx(&heartbeats[0]);
        live_beats.push(heartbeats[0].clone());
        workers.push(
            std::thread::Builder::new()
                .name("inference".into())
                .spawn(move || infer::run::<infer::Vision>(vision, vision_lanes, rx, bell, ctx))
                .map_err(|source| DaemonError::Io {
                    what: "cannot start the inference thread",
                    source,
                })?,
        );
        Some(jobs)
    };
    let audio_jobs = if audio_lanes.is_empty() {
        None
    } else {
        let bell = Doorbell::new();
        let (jobs, rx) = JobSender::channel(bell.clone());
        let ctx = worker_ctx(&heartbeats[1]);
        live_beats.push(heartbeats[1].clone());
        workers.push(
            std::thread::Builder::new()
                .name("listening".into())
                .spawn(move || infer::run::<Audio>(audio, audio_lanes, rx, bell, ctx))
                .map_err(|source| DaemonError::Io {
                    what: "cannot start the audio inference thread",
                    source,
                })?,
        );
        Some(jobs)
    };

    let train_section = Arc::new(Mutex::new(config.train.clone()));
    let (trainer, trainer_thread) = trainer::spawn(TrainerContext {
        publisher: publisher.clone(),
        runtime: tokio::runtime::Handle::current(),
        notices: notices.clone(),
        telemetry: telemetry.clone(),
        train: train_section.clone(),
    })
    .map_err(|source| DaemonError::Io {
        what: "cannot start the training thread",
        source,
    })?;
    let control = Arc::new(Control {
        streams: handles,
        disabled,
        learners,
        publisher: publisher.clone(),
        vision_jobs,
        audio_jobs,
        trainer,
        notices: notices.clone(),
        telemetry: telemetry.clone(),
        auto_train: AtomicBool::new(true),
        train: train_section,
        limits: config.image.limits(),
        wav_limits: WavLimits::default(),
        engines,
        events_path: config
            .events
            .enabled
            .then(|| crate::events::EventStore::path_in(&state_dir)),
        fp_filters,
        snapshots: snapshots.clone(),
    });
    let tracker = TaskTracker::new();
    let handlers_stop = CancellationToken::new();
    let dispatcher = Dispatcher::start(control.clone(), &tracker, handlers_stop.clone());
    // The web page: a second door to the same control plane. One that cannot start (a bad
    // token file) is logged; the cameras run on.
    let web_stop = CancellationToken::new();
    if let Err(e) = super::web::start(
        control.clone(),
        &config.http,
        state_dir.clone(),
        web_stop.clone(),
        &tracker,
    )
    .await
    {
        error!("no web page: {e}");
    }

    let names: Vec<&str> = control.streams.iter().map(|s| s.name.as_str()).collect();
    info!(streams = ?names, "adaptd running");
    let notifier = Notifier::from_env();
    notifier.ready(&report::status_line(&control.owners()));
    // Without a watchdog the tick still runs, rarely, and does nothing.
    let ping_every = notifier.ping_interval();
    let mut watchdog_tick = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    let mut liveness = Liveness::new(ping_every.unwrap_or(Duration::MAX));
    let stats_every = Duration::from_secs(config.mqtt.stats_interval_secs.max(1));
    let mut stats_tick = tokio::time::interval(stats_every);
    let mut train_tick = tokio::time::interval(TRAIN_CHECK);
    // Sources change state on their own threads (connecting, streaming, reconnecting with
    // why): looked at every second, and each stream's retained state republished on a change.
    let mut source_tick = tokio::time::interval(SOURCE_CHECK);
    let mut source_states: Vec<SourceState> = control
        .streams
        .iter()
        .map(|s| s.source_stats.state())
        .collect();
    let mut signals = Signals::new(opts.signals)?;
    // A reply that could not go out because its cause (an oversized packet) dropped the
    // connection; sent after the reconnect.
    let mut pending: Option<Reply> = None;
    let mut ended = vec![false; control.streams.len()];
    let mut outcome = Outcome::Stopped;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => { info!("stopping"); break; }
            what = signals.recv() => match what {
                SignalKind2::Stop(name) => { info!("{name}: stopping"); break; }
                SignalKind2::Reload => {
                    notifier.reloading();
                    reload(&control, opts.config_path.as_deref());
                    notifier.reloaded(&report::status_line(&control.owners()));
                }
            },
            event = events.recv() => match event {
                Some(event) => on_link_event(&control, &dispatcher, event, &mut pending).await,
                None => { error!("the MQTT link ended unexpectedly; stopping"); break; }
            },
            Some(notice) = notice_rx.recv() => match notice {
                Notice::DeviceChanged => publish_device_state(&control).await,
                Notice::StreamChanged(i) => {
                    publish_stream_state(&control, i).await;
                    publish_device_state(&control).await;
                }
                Notice::SourceEnded(i) => {
                    if let Some(done) = on_source_ended(&control, i, &mut ended) {
                        outcome = done;
                        if done == Outcome::SourcesFailed {
                            break;
                        }
                    }
                }
            },
            _ = watchdog_tick.tick(), if ping_every.is_some() => {
                if liveness.alive(Instant::now(), progress(&control, &live_beats)) {
                    notifier.watchdog();
                } else {
                    warn!("the pipeline made no progress for {:?}: no watchdog ping", ping_every.unwrap_or_default());
                }
            }
            _ = stats_tick.tick() => {
                notifier.status(&report::status_line(&control.owners()));
                if let Ok(json) = serde_json::to_vec(&report::stats(&control.owners())) {
                    let topic = publisher.topics().stats();
                    let _ = publisher.try_publish(&topic, json, false);
                }
            }
            _ = train_tick.tick() => control.scheduled_training(),
            _ = source_tick.tick() => {
                let mut changed = false;
                for (i, (stream, seen)) in control.streams.iter().zip(source_states.iter_mut()).enumerate() {
                    let now = stream.source_stats.state();
                    if now != *seen {
                        *seen = now;
                        changed = true;
                        publish_stream_state(&control, i).await;
                    }
                }
                if changed {
                    publish_device_state(&control).await;
                }
            }
        }
    }

    // Shutdown: frames stop first, then work in hand finishes, then MQTT says `stopped`.
    notifier.stopping();
    // Live viewers' streams end now; requests in flight are answered.
    web_stop.cancel();
    stop.stop();
    control.trainer.cancel();
    workers_stop.cancel();
    for w in workers {
        join_within(w, "an inference worker").await;
    }
    // The workers' senders are gone with them; the writer finishes the queue and ends.
    drop(recorder);
    if let Some(h) = snapshots_thread {
        if let Some(w) = snapshots.take() {
            let _ = tokio::task::spawn_blocking(move || w.close()).await;
        }
        join_within(h, "the snapshot writer").await;
    }
    if let Some(h) = recorder_thread {
        join_within(h, "the event writer").await;
    }
    // Queued commands are answered; then the handlers end.
    drop(dispatcher);
    tracker.close();
    if tokio::time::timeout(REPLY_GRACE, tracker.wait())
        .await
        .is_err()
    {
        handlers_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
    }
    // Dropping the last handle to the trainer's queue ends its thread once a run is cancelled.
    drop(control);
    join_within(trainer_thread, "the training thread").await;
    // A capture thread sees the stop signal within a second; a blocking pipe read may not,
    // so it is not waited for beyond that (see `spawn_capture`).
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::task::spawn_blocking(move || {
            for c in captures {
                match c {
                    Capture::Frames(h) => drop(h.join()),
                    Capture::Audio(h) => drop(h.join()),
                    Capture::None => {}
                }
            }
        }),
    )
    .await;
    link.shutdown(Duration::from_secs(5)).await;
    #[cfg(feature = "embedded-broker")]
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    info!("adaptd stopped");
    Ok(outcome)
}

/// Stats and a closed slot for a stream whose source could not be opened: its state says
/// why, and its lane ends at once.
fn failed_source<T>(error: &str) -> (Arc<SourceStats>, crate::source::LatestReceiver<T>) {
    let stats = SourceStats::new();
    stats.set_state(SourceState::Failed {
        error: error.to_owned(),
    });
    let (tx, rx) = latest_slot();
    drop(tx);
    (stats, rx)
}

/// The audio capture configuration of a microphone's source.
fn audio_source(source: &SourceConfig) -> Result<StreamConfig, MicrophoneError> {
    let (input, sample_rate, channels) = match source {
        SourceConfig::Audio {
            path,
            sample_rate,
            channels,
        } => (AudioInput::Pipe(path.clone()), sample_rate, channels),
        SourceConfig::Alsa {
            device,
            sample_rate,
            channels,
        } => (AudioInput::Alsa(device.clone()), sample_rate, channels),
        other => return Err(MicrophoneError::NotAudio(other.kind())),
    };
    let problems = source.validate();
    if !problems.is_empty() {
        return Err(MicrophoneError::Invalid(problems));
    }
    let cfg = StreamConfig {
        input,
        format: PcmFormat {
            sample_rate: *sample_rate,
            channels: *channels,
        },
    };
    cfg.check()?;
    Ok(cfg)
}

/// A stream's source ended; what the daemon should do, if anything. It keeps serving while
/// any stream flows; once all have ended, a failure among them ends the daemon with
/// [`Outcome::SourcesFailed`] so that the service manager restarts the pipelines, while
/// finished replays leave it serving commands.
fn on_source_ended(control: &Control, i: usize, ended: &mut [bool]) -> Option<Outcome> {
    let s = control.streams.get(i)?;
    if let Some(e) = ended.get_mut(i) {
        *e = true;
    }
    let state = s.source_stats.state();
    let finished = s.replay && state == SourceState::Ended;
    if finished {
        info!(camera = %s.name, "the replay ended; the daemon keeps serving commands");
    } else {
        error!(
            camera = %s.name,
            "the source {} ended ({state:?}); the other streams go on", s.source
        );
    }
    if !ended.iter().all(|e| *e) {
        return None;
    }
    let any_failed = control
        .streams
        .iter()
        .any(|s| !(s.replay && s.source_stats.state() == SourceState::Ended));
    if any_failed {
        error!(
            "every stream has ended, not all as finished replays: stopping with status 1 so that \
             the service manager (systemd Restart=on-failure) restarts the pipelines"
        );
        Some(Outcome::SourcesFailed)
    } else {
        None
    }
}

/// The pipeline's progress, for the watchdog.
fn progress(control: &Control, beats: &[Arc<Heartbeat>]) -> Progress {
    // Frames the motion gate or the fps cap looked at and let go are progress too: a
    // still scene is a healthy pipeline, not a stuck one.
    let frames = control
        .streams
        .iter()
        .map(|s| {
            let c = control.telemetry.counts(&s.name);
            c.processed + c.motion_skipped + c.throttled
        })
        .sum();
    let heartbeat = beats
        .iter()
        .map(|b| b.last())
        .min()
        .unwrap_or_else(Instant::now);
    Progress {
        frames,
        heartbeat,
        idle_by_design: control.streams.iter().all(|s| s.idle()),
    }
}

async fn publish_device_state(control: &Control) {
    let topic = control.publisher.topics().state();
    let Ok(json) = serde_json::to_vec(&control.device_state()) else {
        return;
    };
    // Failures (link down) are fine: it is republished on every connect.
    if let Err(e) = control.publisher.publish(&topic, json, true).await {
        info!("state not published: {e}");
    }
}

async fn publish_stream_state(control: &Control, i: usize) {
    let Some(s) = control.streams.get(i) else {
        return;
    };
    let topic = control.publisher.topics().camera_state(&s.name);
    let Ok(json) = serde_json::to_vec(&s.state()) else {
        return;
    };
    if let Err(e) = control.publisher.publish(&topic, json, true).await {
        info!(camera = %s.name, "state not published: {e}");
    }
}

/// A writer thread the daemon can run without (the event store, snapshots): started, or the
/// error logged with what it costs (`without`).
fn optional_thread<T>(
    started: Result<(T, std::thread::JoinHandle<()>), String>,
    without: &str,
) -> (Option<T>, Option<std::thread::JoinHandle<()>>) {
    match started {
        Ok((handle, thread)) => (Some(handle), Some(thread)),
        Err(e) => {
            error!("{without}: {e}");
            (None, None)
        }
    }
}

/// Waits up to [`STOP_GRACE`] for a thread that was told to stop; says so when it does not.
async fn join_within(thread: std::thread::JoinHandle<()>, what: &str) {
    let joined = tokio::time::timeout(
        STOP_GRACE,
        tokio::task::spawn_blocking(move || thread.join()),
    )
    .await;
    if !matches!(joined, Ok(Ok(Ok(())))) {
        warn!("{what} did not stop cleanly within {STOP_GRACE:?}");
    }
}

/// A camera's occupancy counts, all of them: after a reconnect, a count published while the
/// link was down would otherwise be stale until it changes again.
async fn publish_counts(control: &Control, s: &StreamHandle) {
    for c in s.counts.all() {
        let topic = control
            .publisher
            .topics()
            .camera_count(&s.name, &c.zone, &c.label);
        if let Err(e) = control
            .publisher
            .publish(&topic, c.count.to_string(), true)
            .await
        {
            info!(camera = %s.name, "count not published: {e}");
            return;
        }
    }
}

async fn on_link_event(
    control: &Arc<Control>,
    dispatcher: &Dispatcher,
    event: LinkEvent,
    pending: &mut Option<Reply>,
) {
    match event {
        LinkEvent::Connected { connects } => {
            info!(connects, "MQTT connected");
            control.telemetry.set_mqtt_connected(true);
            publish_device_state(control).await;
            for i in 0..control.streams.len() {
                publish_stream_state(control, i).await;
            }
            for s in control.streams.iter().filter(|s| !s.is_audio()) {
                control::publish_snapshot(&control.publisher, s).await;
                publish_counts(control, s).await;
            }
            if let Some(w) = &control.snapshots {
                for ((camera, label), jpeg) in w.latest() {
                    let topic = control
                        .publisher
                        .topics()
                        .camera_label_snapshot(&camera, &label);
                    if let Err(e) = control.publisher.publish(&topic, jpeg.to_vec(), true).await {
                        info!("snapshot not republished on {topic}: {e}");
                    }
                }
            }
            if let Some(reply) = pending.take() {
                control.send_reply(&reply).await;
            }
        }
        LinkEvent::Message {
            topic,
            incoming,
            payload,
        } => {
            let msg = Message {
                topic,
                incoming,
                payload,
            };
            if let Err(msg) = dispatcher.submit(msg) {
                warn!("busy: a message on {} was answered with `busy`", msg.topic);
                control.send_reply(&control::busy_reply(&msg)).await;
            }
        }
        LinkEvent::Oversized { size, max } => {
            let reply = Reply::error(
                None,
                None,
                format!(
                    "a message of {size} bytes was dropped: it exceeds [mqtt].max_packet_bytes = {max}; \
                     send smaller images (a few hundred KB are plenty) or raise the limit"
                ),
            );
            // rumqttc drops the connection on such a packet: the reply usually has to wait
            // for the reconnect.
            if !control.send_reply(&reply).await {
                *pending = Some(reply);
            }
        }
        LinkEvent::HomeAssistantOnline => info!("Home Assistant is online"),
    }
}

/// SIGHUP: reload the file; apply what can change live, keep the old config when invalid.
fn reload(control: &Control, path: Option<&Path>) {
    let Some(path) = path else {
        warn!("SIGHUP: adaptd was started without --config; nothing to reload");
        return;
    };
    match Config::load(path) {
        Err(e) => error!("SIGHUP: keeping the running configuration: {e}"),
        Ok(c) => {
            let settings = LaneSettings {
                consensus: Some(c.consensus),
                score_threshold: c.detect.score_threshold,
                ..LaneSettings::default()
            };
            if let Some(jobs) = &control.vision_jobs {
                jobs.send(Job::Settings {
                    stream: None,
                    settings,
                });
            }
            *lock(&control.train) = c.train.clone();
            info!(
                "SIGHUP: applied [consensus], [detect].score_threshold and [train]; \
                 changes to other keys ([[cameras]], [mqtt], [model], [samples], ...) need a restart"
            );
        }
    }
}

/// What a signal asks for.
enum SignalKind2 {
    Stop(&'static str),
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP, or nothing (embedders, tests).
struct Signals {
    inner: Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
}

impl Signals {
    fn new(enabled: bool) -> Result<Signals, DaemonError> {
        if !enabled {
            return Ok(Signals { inner: None });
        }
        let install = |kind: SignalKind, what: &'static str| {
            signal(kind).map_err(|source| DaemonError::Io { what, source })
        };
        Ok(Signals {
            inner: Some((
                install(
                    SignalKind::terminate(),
                    "cannot install the SIGTERM handler",
                )?,
                install(SignalKind::interrupt(), "cannot install the SIGINT handler")?,
                install(SignalKind::hangup(), "cannot install the SIGHUP handler")?,
            )),
        })
    }

    async fn recv(&mut self) -> SignalKind2 {
        match &mut self.inner {
            None => std::future::pending().await,
            Some((term, int, hup)) => tokio::select! {
                _ = term.recv() => SignalKind2::Stop("SIGTERM"),
                _ = int.recv() => SignalKind2::Stop("SIGINT"),
                _ = hup.recv() => SignalKind2::Reload,
            },
        }
    }
}

/// `[mqtt].url = "embedded"`: the in-process broker, started before the link connects to it.
#[cfg(feature = "embedded-broker")]
async fn start_embedded_broker(
    config: &crate::mqtt::MqttConfig,
) -> Result<Option<crate::mqtt::broker::EmbeddedBroker>, DaemonError> {
    use crate::mqtt::broker::{BrokerOptions, EmbeddedBroker};
    if !config.is_embedded() {
        return Ok(None);
    }
    let addr = config
        .embedded_addr()
        .map_err(|e| DaemonError::Config(e.to_string()))?;
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
