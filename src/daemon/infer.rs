//! The inference thread of `adaptd run`: frames in, `detections` and `events` out.
//!
//! tract is CPU-bound and synchronous, so it runs on a dedicated thread, never on the tokio
//! workers that keep MQTT alive. The thread owns the [`Pipeline`] (and so the only copy of each
//! backbone); everything else that needs a backbone (embedding an image received on
//! `samples/<label>`) or changes pipeline settings (`set`, SIGHUP) is sent to it as a [`Job`],
//! served between frames. That keeps one owner per model and no lock on the frame path.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::pipeline::{FrameResult, Pipeline};
use super::run::{lock, Latest, Notice, Shared};
use crate::consensus::ConsensusConfig;
use crate::source::pace::Pacer;
use crate::source::{Frame, LatestReceiver};
use crate::vision::AnalyzeOptions;

/// How long the thread waits for a frame before serving jobs again.
const POLL: Duration = Duration::from_millis(50);

/// Work for the inference thread besides frames.
pub enum Job {
    /// Embed an image with the head's embedding model.
    Embed {
        image: RgbImage,
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
pub fn run(
    mut pipeline: Pipeline,
    frames: LatestReceiver<Frame>,
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
            serve(&mut pipeline, &mut cap, job);
        }
        if source_ended {
            // No more frames: keep serving jobs (sample embedding) until shutdown.
            if let Ok(job) = jobs.recv_timeout(POLL) {
                serve(&mut pipeline, &mut cap, job);
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
        let result = match pipeline.process(frame.seq, frame.unix_ms, &frame.image) {
            Ok(r) => r,
            Err(e) => {
                warn!(frame = frame.seq, source = %frame.source, "inference failed: {e}");
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
            image: Arc::new(frame.image),
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

fn serve(pipeline: &mut Pipeline, cap: &mut Pacer, job: Job) {
    match job {
        Job::Embed { image, reply } => {
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
