//! The inference thread of `adaptd run`: frames in, `detections` and `events` out.
//!
//! tract is CPU-bound and synchronous, so it runs on a dedicated thread, never on the tokio
//! workers that keep MQTT alive. The thread owns the [`Pipeline`] (and so the only copy of each
//! backbone); everything else that needs a backbone (embedding an image received on
//! `samples/<label>`) or changes pipeline settings (`set`, SIGHUP) is sent to it as a [`Job`],
//! served between frames. That keeps one owner per model and no lock on the frame path.
//!
//! The loop is the same for pictures and sound; what differs (a frame through the vision
//! [`Pipeline`], an utterance through the speaker encoder) is behind [`Analyzer`].

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::pipeline::{FrameResult, Pipeline};
use super::run::{lock, Latest, Notice, Shared};
use crate::consensus::{Consensus, ConsensusConfig};
use crate::source::pace::Pacer;
use crate::source::{Frame, LatestReceiver};
use crate::vision::AnalyzeOptions;

/// What the inference thread runs on each input of its source.
pub trait Analyzer {
    /// A frame, or an utterance.
    type Input: Keep;
    /// The `detections` (and consensus `events`) of one input.
    fn analyze(&mut self, input: &Self::Input) -> Result<FrameResult, String>;
    /// The consensus state, for the stable label of `state`.
    fn consensus_mut(&mut self) -> &mut Consensus;
    /// A [`Job`] served between inputs.
    fn serve(&mut self, job: Job, cap: &mut Pacer);
    /// Whether `input` is worth analysing (the motion gate); `forced` when a command needs
    /// the current input analysed whatever the gate thinks.
    fn admit(&mut self, _input: &Self::Input, _now: Instant, _forced: bool) -> bool {
        true
    }
}

/// What an input leaves behind for `label` and `snapshot` once analysed, and how it is named
/// in logs.
pub trait Keep {
    fn seq(&self) -> u64;
    fn source(&self) -> &str;
    /// The picture, if there is one.
    fn into_image(self) -> Option<Arc<RgbImage>>;
}

impl Keep for Frame {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn source(&self) -> &str {
        &self.source
    }
    fn into_image(self) -> Option<Arc<RgbImage>> {
        Some(Arc::new(self.image))
    }
}

impl Keep for crate::audio::stream::UtteranceMsg {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn source(&self) -> &str {
        "audio"
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

/// How long the thread waits for a frame before serving jobs again.
const POLL: Duration = Duration::from_millis(50);

/// Work for the inference thread besides frames.
pub enum Job {
    /// Embed an image or a clip with the head's embedding model.
    Embed {
        input: EmbedInput,
        reply: oneshot::Sender<Result<Vec<f32>, String>>,
    },
    /// Live settings (`set` command, SIGHUP reload); `None` leaves a setting as it is.
    Settings {
        /// The whole `[consensus]` table (reload).
        consensus: Option<ConsensusConfig>,
        /// `set consensus`: frames that must agree (window = the same number of frames).
        consensus_frames: Option<usize>,
        /// Detector score threshold.
        score_threshold: Option<f32>,
        /// Cap on the frames processed per second (`set fps`).
        max_fps: Option<f64>,
    },
}

/// Runs until `shared.shutdown` is set; returns after finishing the frame in hand.
pub fn run<A: Analyzer>(
    mut pipeline: A,
    frames: LatestReceiver<A::Input>,
    jobs: Receiver<Job>,
    shared: Arc<Shared>,
) {
    let mut source_ended = false;
    let mut last_label: Option<String> = None;
    // No cap until `set fps` asks for one: the source paces itself.
    let mut cap = Pacer::new(0.0);
    while !shared.shutdown.load(Ordering::SeqCst) {
        shared.beat();
        while let Ok(job) = jobs.try_recv() {
            pipeline.serve(job, &mut cap);
        }
        if source_ended {
            // No more frames: keep serving jobs (sample embedding) until shutdown.
            if let Ok(job) = jobs.recv_timeout(POLL) {
                pipeline.serve(job, &mut cap);
            }
            continue;
        }
        let frame = match frames.recv_timeout(POLL) {
            Ok(f) => f,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                source_ended = true;
                shared.notify(Notice::StateChanged);
                shared.notify(Notice::SourceEnded);
                continue;
            }
        };
        if shared.paused.load(Ordering::SeqCst) {
            continue;
        }
        if !cap.admit(Instant::now()) {
            lock(&shared.frame_stats).throttled += 1;
            continue;
        }
        let forced = shared.force_frame.swap(false, Ordering::SeqCst);
        if !pipeline.admit(&frame, Instant::now(), forced) {
            lock(&shared.frame_stats).motion_skipped += 1;
            continue;
        }
        let result = match pipeline.analyze(&frame) {
            Ok(r) => r,
            Err(e) => {
                warn!(frame = frame.seq(), source = %frame.source(), "inference failed: {e}");
                continue;
            }
        };
        publish(&shared, &result);
        {
            let mut st = lock(&shared.frame_stats);
            st.latency
                .push(Duration::from_secs_f64(result.inference_ms / 1e3));
            st.fps.tick(Instant::now());
            st.frames += 1;
        }
        let label = pipeline
            .consensus_mut()
            .stable()
            .next()
            .map(|(_, l)| l.to_string());
        let changed = label != last_label || !result.events.is_empty();
        if changed {
            *lock(&shared.label) = label.clone();
            last_label = label;
            shared.notify(Notice::StateChanged);
        }
        *lock(&shared.latest) = Some(Latest {
            image: frame.into_image(),
            result,
        });
    }
    debug!("inference thread stopped");
}

/// `detections` for the frame, then one `events` message per consensus change. Dropped (and
/// counted by the link) when MQTT is down: stale detections are worth nothing.
fn publish(shared: &Shared, result: &FrameResult) {
    let topics = shared.publisher.topics();
    match serde_json::to_vec(result) {
        Ok(json) => {
            if let Err(e) = shared
                .publisher
                .try_publish(&topics.detections(), json, false)
            {
                debug!("detections not published: {e}");
            }
        }
        Err(e) => warn!("detections not serialisable: {e}"),
    }
    for event in &result.events {
        if let Ok(json) = serde_json::to_vec(event) {
            if let Err(e) = shared.publisher.try_publish(&topics.events(), json, false) {
                debug!("event not published: {e}");
            }
        }
    }
}

impl Analyzer for Pipeline {
    type Input = Frame;

    fn analyze(&mut self, frame: &Frame) -> Result<FrameResult, String> {
        self.process(frame.seq, frame.unix_ms, &frame.image)
            .map_err(|e| e.to_string())
    }

    fn consensus_mut(&mut self) -> &mut Consensus {
        Pipeline::consensus_mut(self)
    }

    fn serve(&mut self, job: Job, cap: &mut Pacer) {
        serve_vision(self, cap, job);
    }

    fn admit(&mut self, frame: &Frame, now: Instant, forced: bool) -> bool {
        let run = self.motion_mut().judge(&frame.image, now).run();
        if forced && !run {
            self.motion_mut().ran(now);
        }
        run || forced
    }
}

fn serve_vision(pipeline: &mut Pipeline, cap: &mut Pacer, job: Job) {
    match job {
        Job::Embed {
            input: EmbedInput::Audio(_),
            reply,
        } => {
            let _ = reply.send(Err(
                "this daemon runs an image model: send a JPEG or PNG, not audio".into(),
            ));
        }
        Job::Embed {
            input: EmbedInput::Image(image),
            reply,
        } => {
            let opts = AnalyzeOptions {
                top_k: 0,
                detect: None,
            };
            let result = pipeline
                .embedding_model_mut()
                .analyze(&[&image], &opts)
                .map_err(|e| e.to_string())
                .and_then(|a| {
                    a.into_iter()
                        .next()
                        .and_then(|a| a.embedding)
                        .ok_or_else(|| "the model produced no embedding".to_string())
                });
            // The requester may have given up (timeout); nothing to do then.
            let _ = reply.send(result);
        }
        Job::Settings {
            consensus,
            consensus_frames,
            score_threshold,
            max_fps,
        } => {
            if let Some(fps) = max_fps {
                *cap = Pacer::new(fps);
            }
            if let Some(c) = consensus {
                pipeline.consensus_mut().set_config(c);
            }
            if let Some(n) = consensus_frames {
                let mut c = pipeline.consensus_mut().config();
                c.n = n;
                c.m = n;
                pipeline.consensus_mut().set_config(c);
            }
            if let (Some(t), Some(d)) = (score_threshold, pipeline.options_mut().detect.as_mut()) {
                d.score_threshold = t;
            }
        }
    }
}
