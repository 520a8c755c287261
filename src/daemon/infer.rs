//! An inference worker: the frames of every stream of one medium in, `detections` and
//! `events` out.
//!
//! tract is CPU-bound and synchronous, so each worker runs on a dedicated thread, never on
//! the tokio workers that keep MQTT alive. A worker owns the loaded models of its medium (one
//! copy of each, however many cameras name it) and one [`Lane`] per stream: the stream's
//! latest-frame slot and its own analysis state (consensus, motion gate, fps cap).
//!
//! Fairness: the worker goes round the lanes, one frame per lane per turn, starting after the
//! lane it served last; a camera's frames that arrive while the others are being served
//! replace each other in its slot (counted as dropped for that camera), so an overloaded
//! worker gives each camera the same share instead of queueing. Everything else that needs a
//! model (embedding a sample) or changes a lane (`set`, SIGHUP) is a [`Job`], served between
//! frames: one owner per model and no lock on the frame path.
//!
//! What differs between pictures and sound is behind [`Medium`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::notice::{Notice, Notices};
use super::pipeline::{FalsePositive, FrameResult, Pin, Pinned};
use super::streams::{Latest, StreamHandle};
use super::telemetry::Telemetry;
use crate::consensus::{Consensus, ConsensusConfig};
use crate::mqtt::Publisher;
use crate::source::pace::{Demand, Pacer};
use crate::source::{Doorbell, Frame, LatestReceiver};

/// Why an input or a sample could not be analysed; the text goes to the log or the reply.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Vision(#[from] crate::vision::VisionError),
    #[error(transparent)]
    Audio(#[from] crate::audio::model::AudioModelError),
    #[error("this is a camera's model: send a JPEG or PNG, not audio")]
    WantImage,
    #[error("this is a microphone's model: send a WAV clip, not an image")]
    WantAudio,
    /// A lane or a job named an engine the worker does not have: a bug, not bad input.
    #[error("internal error: no engine {0} in this worker")]
    NoEngine(usize),
    #[error("the model produced no embedding")]
    NoEmbedding,
    /// A `label` command pointed at something that is not there (the text says what).
    #[error("{0}")]
    Pin(String),
}

/// What a worker runs, per medium.
pub trait Medium {
    /// A frame, or an utterance.
    type Input: Keep + Send;
    /// A loaded model.
    type Engine: Send;
    /// One stream's analysis state.
    type Lane: Send;
    /// The `detections` (and consensus `events`) of one input.
    fn analyze(
        engines: &mut [Self::Engine],
        lane: &mut Self::Lane,
        input: &Self::Input,
    ) -> Result<FrameResult, InferError>;
    /// The lane's consensus state, for the stable label of `state`.
    fn consensus_mut(lane: &mut Self::Lane) -> &mut Consensus;
    /// Embeds a sample received over MQTT with engine `engine`.
    fn embed(
        engines: &mut [Self::Engine],
        engine: usize,
        input: EmbedInput,
    ) -> Result<Vec<f32>, InferError>;
    /// Applies live settings to a lane.
    fn apply(lane: &mut Self::Lane, settings: &LaneSettings);
    /// Keeps an analysed input's picture for later `label` commands.
    fn keep(_lane: &mut Self::Lane, _image: Option<Arc<RgbImage>>, _result: &FrameResult) {}
    /// What a `label` command points at.
    fn pinned(
        _engines: &mut [Self::Engine],
        _lane: &Self::Lane,
        _pin: &Pin,
    ) -> Result<Pinned, InferError> {
        Err(InferError::Pin(
            "a microphone labels its latest utterance: give only `label`".into(),
        ))
    }
    /// Marks what a `false_positive` command points at, with the samples of its filter.
    fn false_positive(
        _engines: &mut [Self::Engine],
        _lane: &mut Self::Lane,
        _pin: &Pin,
    ) -> Result<FalsePositive, InferError> {
        Err(InferError::Pin(
            "false positives are objects of a detector; a microphone has none".into(),
        ))
    }
    /// Whether `input` is worth analysing (the motion gate); `forced` when a command needs
    /// the current input analysed whatever the gate thinks.
    fn admit(_lane: &mut Self::Lane, _input: &Self::Input, _now: Instant, _forced: bool) -> bool {
        true
    }
}

/// What an input leaves behind for `label` and `snapshot` once analysed, and how it is named
/// in logs.
pub trait Keep {
    fn seq(&self) -> u64;
    /// The picture, if there is one.
    fn into_image(self) -> Option<Arc<RgbImage>>;
}

impl Keep for Frame {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn into_image(self) -> Option<Arc<RgbImage>> {
        Some(Arc::new(self.image))
    }
}

impl Keep for crate::source::microphone::UtteranceMsg {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn into_image(self) -> Option<Arc<RgbImage>> {
        None
    }
}

/// What to embed for a sample received over MQTT.
pub enum EmbedInput {
    Image(RgbImage),
    /// Mono samples at the audio model's rate.
    Audio(Vec<f32>),
}

/// Live settings of a lane (`set`, SIGHUP); `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaneSettings {
    /// The whole `[consensus]` table (reload).
    pub consensus: Option<ConsensusConfig>,
    /// `set consensus`: frames that must agree (window = the same number of frames).
    pub consensus_frames: Option<usize>,
    /// Detector score threshold.
    pub score_threshold: Option<f32>,
    /// Cap on the frames processed per second (`set fps`).
    pub max_fps: Option<f64>,
}

/// The reply to an embedding job.
pub type EmbedReply = oneshot::Sender<Result<Vec<f32>, InferError>>;

/// Work for a worker besides frames.
pub enum Job {
    /// Embed an image or a clip with engine `engine` (a learner's embedding model).
    Embed {
        engine: usize,
        input: EmbedInput,
        reply: EmbedReply,
    },
    /// Live settings for stream `stream` (its index in the daemon), or every lane of the
    /// worker.
    Settings {
        stream: Option<usize>,
        settings: LaneSettings,
    },
    /// What a `label` command on stream `stream` points at, embedded.
    Pinned {
        stream: usize,
        pin: Pin,
        reply: oneshot::Sender<Result<Pinned, InferError>>,
    },
    /// A person says what `pin` points at is a false positive.
    FalsePositive {
        stream: usize,
        pin: Pin,
        reply: oneshot::Sender<Result<FalsePositive, InferError>>,
    },
}

/// The sending side of a worker's jobs; wakes the worker at once.
#[derive(Clone)]
pub struct JobSender {
    tx: Sender<Job>,
    bell: Arc<Doorbell>,
}

impl JobSender {
    /// A connected pair, ringing `bell` (the worker's doorbell) on every job.
    pub fn channel(bell: Arc<Doorbell>) -> (JobSender, Receiver<Job>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (JobSender { tx, bell }, rx)
    }

    /// False once the worker has stopped.
    pub fn send(&self, job: Job) -> bool {
        let sent = self.tx.send(job).is_ok();
        self.bell.ring();
        sent
    }
}

/// One stream as a worker sees it.
pub struct Lane<M: Medium> {
    pub stream: Arc<StreamHandle>,
    pub rx: LatestReceiver<M::Input>,
    pub state: M::Lane,
    /// The `[[cameras]].fps` / `set fps` cap; 0 = none.
    pub cap: Pacer,
    /// Where the cap's next due time is published for the source ([`Demand`]).
    demand: Demand,
    ended: bool,
    last_label: Option<String>,
}

impl<M: Medium> Lane<M> {
    pub fn new(
        stream: Arc<StreamHandle>,
        rx: LatestReceiver<M::Input>,
        state: M::Lane,
        max_fps: Option<f64>,
        demand: Demand,
    ) -> Lane<M> {
        Lane {
            stream,
            rx,
            state,
            cap: Pacer::new(max_fps.unwrap_or(0.0)),
            demand,
            ended: false,
            last_label: None,
        }
    }
}

/// The last time each worker went round its loop, for the systemd watchdog.
#[derive(Debug)]
pub struct Heartbeat {
    started: Instant,
    ms: AtomicU64,
}

impl Heartbeat {
    pub fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            started: Instant::now(),
            ms: AtomicU64::new(0),
        })
    }

    fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.ms.store(ms, Ordering::Relaxed);
    }

    /// When the worker last went round its loop.
    pub fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.ms.load(Ordering::Relaxed))
    }
}

/// What a worker needs besides its models, lanes and jobs.
#[derive(Clone)]
pub struct WorkerContext {
    pub publisher: Publisher,
    pub notices: Notices,
    pub telemetry: Arc<Telemetry>,
    pub shutdown: CancellationToken,
    pub heartbeat: Arc<Heartbeat>,
    /// Where object changes are stored (`None`: `[events] enabled = false`).
    pub recorder: Option<super::recorder::Recorder>,
}

/// How long the worker sleeps when no lane has a frame and no job came.
const POLL: Duration = Duration::from_millis(100);

/// Runs until `ctx.shutdown` is cancelled; returns after finishing the frame in hand.
pub fn run<M: Medium>(
    mut engines: Vec<M::Engine>,
    mut lanes: Vec<Lane<M>>,
    jobs: Receiver<Job>,
    bell: Arc<Doorbell>,
    ctx: WorkerContext,
) {
    for lane in &lanes {
        lane.rx.ring_on_send(bell.clone());
    }
    let mut next = 0usize;
    while !ctx.shutdown.is_cancelled() {
        ctx.heartbeat.beat();
        let seen = bell.rings();
        while let Ok(job) = jobs.try_recv() {
            serve_job::<M>(&mut engines, &mut lanes, job);
        }
        let n = lanes.len();
        let mut processed = false;
        for k in 0..n {
            let i = (next + k) % n;
            if step::<M>(&mut engines, &mut lanes[i], &ctx) {
                processed = true;
                next = i + 1;
                break;
            }
        }
        if !processed {
            bell.wait(seen, POLL);
        }
    }
    debug!("inference worker stopped");
}

/// Takes at most one input from the lane; true when one was analysed.
fn step<M: Medium>(engines: &mut [M::Engine], lane: &mut Lane<M>, ctx: &WorkerContext) -> bool {
    if lane.ended {
        return false;
    }
    let stream = lane.stream.clone();
    let input = match lane.rx.try_recv() {
        Ok(f) => f,
        Err(RecvTimeoutError::Timeout) => return false,
        Err(RecvTimeoutError::Disconnected) => {
            lane.ended = true;
            ctx.notices.send(Notice::StreamChanged(stream.index));
            ctx.notices.send(Notice::SourceEnded(stream.index));
            return false;
        }
    };
    ctx.telemetry
        .sync_dropped(&stream.name, stream.slot.skipped());
    if stream.is_paused() {
        return false;
    }
    let now = Instant::now();
    let admitted = lane.cap.admit(now);
    lane.demand.set_next_due(lane.cap.next_due());
    if !admitted {
        ctx.telemetry.frame_throttled(&stream.name);
        return false;
    }
    let forced = stream.take_force();
    if !M::admit(&mut lane.state, &input, now, forced) {
        ctx.telemetry.frame_motion_skipped(&stream.name);
        return false;
    }
    let result = match M::analyze(engines, &mut lane.state, &input) {
        Ok(r) => r,
        Err(e) => {
            warn!(camera = %stream.name, frame = input.seq(), "inference failed: {e}");
            return false;
        }
    };
    publish(&stream, &result, ctx);
    ctx.telemetry.frame_processed(
        &stream.name,
        &stream.model,
        &stream.backend.to_string(),
        Duration::from_secs_f64(result.inference_ms.max(0.0) / 1e3),
    );
    let label = M::consensus_mut(&mut lane.state)
        .stable()
        .next()
        .map(|(_, l)| l.to_string());
    if label != lane.last_label || !result.events.is_empty() {
        stream.set_label(label.clone());
        lane.last_label = label;
        ctx.notices.send(Notice::StreamChanged(stream.index));
    }
    let image = input.into_image();
    M::keep(&mut lane.state, image.clone(), &result);
    stream.set_latest(Latest { image, result });
    true
}

fn serve_job<M: Medium>(engines: &mut [M::Engine], lanes: &mut [Lane<M>], job: Job) {
    match job {
        Job::Embed {
            engine,
            input,
            reply,
        } => {
            // The requester may have given up (timeout); nothing to do then.
            let _ = reply.send(M::embed(engines, engine, input));
        }
        Job::Settings { stream, settings } => {
            for lane in lanes
                .iter_mut()
                .filter(|l| stream.is_none_or(|s| s == l.stream.index))
            {
                if let Some(fps) = settings.max_fps {
                    lane.cap = Pacer::new(fps);
                    lane.demand.set_next_due(None);
                }
                M::apply(&mut lane.state, &settings);
            }
        }
        Job::Pinned { stream, pin, reply } => {
            let found = match lanes.iter().find(|l| l.stream.index == stream) {
                Some(lane) => M::pinned(engines, &lane.state, &pin),
                None => Err(InferError::Pin(format!(
                    "internal error: stream {stream} is not served by this worker"
                ))),
            };
            let _ = reply.send(found);
        }
        Job::FalsePositive { stream, pin, reply } => {
            let found = match lanes.iter_mut().find(|l| l.stream.index == stream) {
                Some(lane) => M::false_positive(engines, &mut lane.state, &pin),
                None => Err(InferError::Pin(format!(
                    "internal error: stream {stream} is not served by this worker"
                ))),
            };
            let _ = reply.send(found);
        }
    }
}

/// `<camera>/detections` for the frame, one `<camera>/events` message per consensus change and
/// one `<camera>/objects` message per object change. Dropped (and counted by the link) when
/// MQTT is down: stale detections are worth nothing (objects are also recorded in the event
/// store, which does not depend on the link).
fn publish(stream: &StreamHandle, result: &FrameResult, ctx: &WorkerContext) {
    let topics = ctx.publisher.topics();
    match serde_json::to_vec(&result.detections(&stream.name)) {
        Ok(json) => {
            let topic = topics.camera_detections(&stream.name);
            if let Err(e) = ctx.publisher.try_publish(&topic, json, false) {
                debug!("detections not published: {e}");
            }
        }
        Err(e) => warn!("detections not serialisable: {e}"),
    }
    for event in &result.events {
        let label = event.after.as_deref().or(event.before.as_deref());
        ctx.telemetry
            .event(&stream.name, label.unwrap_or(event.track.as_str()));
        let msg = super::report::event(&stream.name, event);
        if let Ok(json) = serde_json::to_vec(&msg) {
            let topic = topics.camera_events(&stream.name);
            if let Err(e) = ctx.publisher.try_publish(&topic, json, false) {
                debug!("event not published: {e}");
            }
        }
    }
    stream.counts.record(&result.counts);
    for c in stream.counts.take_unsent() {
        let topic = topics.camera_count(&stream.name, &c.zone, &c.label);
        // Retained: whoever subscribes later (Home Assistant at start) reads the count now.
        if let Err(e) = ctx.publisher.try_publish(&topic, c.count.to_string(), true) {
            debug!("count not published on {topic}: {e} (retried with the next frame)");
            stream.counts.unsent(&c);
        }
    }
    for change in &result.objects {
        if change.kind == crate::wire::EventKind::New {
            ctx.telemetry.object(&stream.name, &change.after.label);
        }
        if let Ok(json) = serde_json::to_vec(change) {
            let topic = topics.camera_objects(&stream.name);
            if let Err(e) = ctx.publisher.try_publish(&topic, json, false) {
                debug!("object event not published: {e}");
            }
        }
        if let Some(recorder) = &ctx.recorder {
            recorder.record(change);
        }
    }
}

/// Cameras: a frame through the vision [`super::pipeline::Pipeline`].
pub struct Vision;

impl Medium for Vision {
    type Input = Frame;
    type Engine = crate::vision::VisionModel;
    type Lane = super::pipeline::Pipeline;

    fn analyze(
        engines: &mut [Self::Engine],
        lane: &mut Self::Lane,
        frame: &Frame,
    ) -> Result<FrameResult, InferError> {
        Ok(lane.process(engines, frame.seq, frame.unix_ms, &frame.image)?)
    }

    fn consensus_mut(lane: &mut Self::Lane) -> &mut Consensus {
        lane.consensus_mut()
    }

    fn embed(
        engines: &mut [Self::Engine],
        engine: usize,
        input: EmbedInput,
    ) -> Result<Vec<f32>, InferError> {
        let EmbedInput::Image(image) = input else {
            return Err(InferError::WantImage);
        };
        let opts = crate::vision::AnalyzeOptions {
            top_k: 0,
            detect: None,
        };
        engines
            .get_mut(engine)
            .ok_or(InferError::NoEngine(engine))?
            .analyze(&[&image], &opts)?
            .into_iter()
            .next()
            .and_then(|a| a.embedding)
            .ok_or(InferError::NoEmbedding)
    }

    fn apply(lane: &mut Self::Lane, s: &LaneSettings) {
        if let Some(c) = s.consensus {
            lane.consensus_mut().set_config(c);
        }
        if let Some(n) = s.consensus_frames {
            let mut c = lane.consensus_mut().config();
            c.n = n;
            c.m = n;
            lane.consensus_mut().set_config(c);
        }
        if let (Some(t), Some(d)) = (s.score_threshold, lane.options_mut().detect.as_mut()) {
            d.score_threshold = t;
        }
    }

    fn keep(lane: &mut Self::Lane, image: Option<Arc<RgbImage>>, result: &FrameResult) {
        if let Some(image) = image {
            lane.keep(image, result);
        }
    }

    fn pinned(
        engines: &mut [Self::Engine],
        lane: &Self::Lane,
        pin: &Pin,
    ) -> Result<Pinned, InferError> {
        lane.pinned(engines, pin).map_err(InferError::Pin)
    }

    fn false_positive(
        engines: &mut [Self::Engine],
        lane: &mut Self::Lane,
        pin: &Pin,
    ) -> Result<FalsePositive, InferError> {
        lane.false_positive(engines, pin).map_err(InferError::Pin)
    }

    fn admit(lane: &mut Self::Lane, frame: &Frame, now: Instant, forced: bool) -> bool {
        let run = lane.motion_mut().judge(&frame.image, now).run();
        if forced && !run {
            lane.motion_mut().ran(now);
        }
        if !run && !forced {
            lane.still_at(frame.unix_ms);
        }
        run || forced
    }
}
