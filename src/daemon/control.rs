//! The command dispatcher of `adaptd run`: `cmd/<verb>` and `samples/<label>` messages in,
//! one `reply` out for each.
//!
//! Every message gets an answer, and nothing a sender can put in a payload stops the daemon:
//! parse errors, bad labels, undecodable images and store failures all become `ok: false`
//! replies. SQLite and image work run in `spawn_blocking`; embedding runs on the inference
//! thread, which owns the backbones.
//!
//! `set` applies everything live and until the next restart: `score_threshold` (detectors;
//! a classifier lists it under `not_applied`), `consensus` (N frames out of N), `auto_train`,
//! `fps` (a cap on the frames processed; the source cannot be sped up beyond its own rate)
//! and `unknown_threshold` (the head in service and every head swapped in later, overriding
//! the threshold each head calibrated when it was trained).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::annotate::annotate;
use super::infer::{EmbedInput, Job};
use super::pipeline::{crop, ServingHead};
use super::run::{lock, Notice, Shared};
use crate::mqtt::commands::{RollbackTarget, Settings};
use crate::mqtt::{Command, Incoming, Label, Reply, Request};
use crate::store::SampleSource;
use crate::vision::image_io::{decode_bytes, thumbnail_jpeg};

/// How long a sample waits for the inference thread to embed it.
const EMBED_TIMEOUT: Duration = Duration::from_secs(30);

/// Handles one incoming message.
pub async fn handle(shared: &Arc<Shared>, topic: &str, incoming: Incoming, payload: Vec<u8>) {
    let reply = match incoming {
        Incoming::Command(verb) => match Request::parse(&verb, &payload) {
            Err(rejected) => rejected.reply(),
            Ok(req) => {
                let verb = req.command.verb();
                match execute(shared, req.command).await {
                    Ok(result) => Reply::ok(req.id, verb, result),
                    Err(message) => Reply::error(req.id, Some(verb), message),
                }
            }
        },
        Incoming::Sample(label) => match add_sample(shared, topic, &label, payload).await {
            Ok(result) => Reply::ok(None, "sample", result),
            Err(message) => Reply::error(None, Some("sample"), message),
        },
        Incoming::HomeAssistantStatus | Incoming::Unknown => return,
    };
    send_reply(shared, &reply).await;
}

/// Publishes a reply; false when it could not be sent.
pub async fn send_reply(shared: &Shared, reply: &Reply) -> bool {
    let topic = shared.publisher.topics().reply();
    match shared
        .publisher
        .publish(&topic, reply.to_json(), false)
        .await
    {
        Ok(()) => true,
        Err(e) => {
            warn!("reply not published: {e}");
            false
        }
    }
}

async fn execute(shared: &Arc<Shared>, command: Command) -> Result<Value, String> {
    match command {
        Command::Label { label, detection } => label_latest(shared, label, detection).await,
        Command::Train { force } => {
            start_training(shared, force, "command")?;
            Ok(json!({"status": "started"}))
        }
        Command::Rollback { target } => {
            let s = shared.clone();
            let result = blocking(move || rollback(&s, target)).await?;
            shared.notify(Notice::StateChanged);
            Ok(result)
        }
        Command::Pause | Command::Resume => {
            let paused = matches!(command, Command::Pause);
            shared.paused.store(paused, Ordering::SeqCst);
            shared.notify(Notice::StateChanged);
            Ok(json!({ "paused": paused }))
        }
        Command::Snapshot if shared.is_audio => Err(
            "an audio source has no picture to snapshot; its latest utterance is in `detections`"
                .into(),
        ),
        Command::Snapshot => match publish_snapshot(shared).await {
            Some(bytes) => Ok(json!({ "bytes": bytes })),
            None => Err("no frame has been processed yet (or the link is down)".into()),
        },
        Command::Set(settings) => apply_settings(shared, settings),
        Command::Forget { label } => {
            let s = shared.clone();
            let removed = blocking(move || {
                let mut ws = lock(&s.workspace);
                let n = ws
                    .store
                    .remove_label(label.as_str())
                    .map_err(|e| e.to_string())?;
                s.refresh_counts(&ws);
                Ok(n)
            })
            .await?;
            shared.notify(Notice::StateChanged);
            Ok(json!({ "removed": removed }))
        }
        Command::Status => {
            shared.publish_state().await;
            Ok(shared.state())
        }
    }
}

/// Runs store or image work off the tokio workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("internal error: {e}"))?
}

/// `label`: the latest frame (or one of its detections) becomes a sample, reusing the
/// embedding the pipeline already computed.
async fn label_latest(
    shared: &Arc<Shared>,
    label: Label,
    detection: Option<u32>,
) -> Result<Value, String> {
    if !shared.is_audio {
        fresh_frame(shared).await;
    }
    let (image, embedding, bbox, class) = {
        let latest = lock(&shared.latest);
        let Some(l) = latest.as_ref() else {
            return Err(if shared.is_audio {
                "no utterance has been heard yet; wait for `detections` (or `resume`)".into()
            } else {
                "no frame has been processed yet; wait for `detections` (or `resume`)".into()
            });
        };
        let r = &l.result;
        match detection {
            None if shared.is_detector => {
                return Err(
                    "this is a detector: give `detection`, the index of the box to label in the latest `detections` items".into(),
                )
            }
            None => {
                let e = r.embeddings.first().cloned().ok_or("the frame has no embedding")?;
                (l.image.clone(), e, None, None)
            }
            Some(_) if !shared.is_detector => {
                return Err("`detection` is for detectors; this model classifies whole frames: omit it".into())
            }
            Some(i) => {
                let i = i as usize;
                let (Some(item), Some(e)) = (r.items.get(i), r.embeddings.get(i)) else {
                    return Err(format!(
                        "detection {i} does not exist: the latest frame has {} detection(s)",
                        r.items.len()
                    ));
                };
                if r.embeddings.len() != r.items.len() {
                    return Err("the latest frame's detections have no embeddings to store".into());
                }
                (l.image.clone(), e.clone(), item.bbox, Some(item.label.clone()))
            }
        }
    };
    let s = shared.clone();
    let result = blocking(move || {
        // An utterance has no picture: its sample is the voice print alone.
        let thumb = image.and_then(|image| {
            let img = match bbox {
                Some(b) => crop(&image, b),
                None => (*image).clone(),
            };
            thumbnail_jpeg(&img).ok()
        });
        let source = match class {
            Some(class) => SampleSource::DetectionCrop { class },
            None if s.is_audio => SampleSource::Microphone,
            None => SampleSource::CameraFrame,
        };
        store_sample(&s, label.as_str(), embedding, thumb, source)
    })
    .await?;
    shared.notify(Notice::StateChanged);
    Ok(result)
}

/// How long `label` waits for the current frame to be analysed.
const FRESH_FRAME_WAIT: Duration = Duration::from_secs(3);

/// Asks the inference thread to analyse the next frame whatever the motion gate thinks, and
/// waits (briefly) for it: `label` must store what the camera sees now, not the last frame
/// that happened to move. Returns at once when no frame can come (paused, source ended).
async fn fresh_frame(shared: &Arc<Shared>) {
    use crate::source::SourceState;
    let current = || lock(&shared.latest).as_ref().map(|l| l.result.frame_id);
    let before = current();
    shared.force_frame.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + FRESH_FRAME_WAIT;
    while Instant::now() < deadline {
        let idle = shared.paused.load(Ordering::SeqCst)
            || matches!(
                shared.source_stats.state(),
                SourceState::Ended | SourceState::Failed { .. } | SourceState::Reconnecting { .. }
            );
        if idle || current() != before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `samples/<label>`: decode (an image, or a WAV clip for an audio model, under the
/// configured limits), embed, store.
async fn add_sample(
    shared: &Arc<Shared>,
    topic: &str,
    label: &str,
    payload: Vec<u8>,
) -> Result<Value, String> {
    let label = Label::parse(label).map_err(|e| e.to_string())?;
    let limits = shared.limits;
    let wav_limits = shared.wav_limits;
    let audio = shared.is_audio;
    let name = topic.to_owned();
    let (input, thumb) = blocking(move || {
        if audio {
            let clip = crate::audio::decode_16k(&payload, &name, &wav_limits)
                .map_err(|e| e.to_string())?;
            return Ok((EmbedInput::Audio(clip), None));
        }
        let img = decode_bytes(&payload, &name, &limits).map_err(|e| e.to_string())?;
        let thumb = thumbnail_jpeg(&img).ok();
        Ok((EmbedInput::Image(img), thumb))
    })
    .await?;
    let (tx, rx) = oneshot::channel();
    if !shared.send_job(Job::Embed { input, reply: tx }) {
        return Err("the inference thread has stopped".into());
    }
    let embedding = match tokio::time::timeout(EMBED_TIMEOUT, rx).await {
        Ok(Ok(r)) => r?,
        Ok(Err(_)) => return Err("the inference thread has stopped".into()),
        Err(_) => return Err(format!("embedding took longer than {EMBED_TIMEOUT:?}")),
    };
    let s = shared.clone();
    let source = SampleSource::Mqtt {
        topic: topic.to_owned(),
    };
    let result =
        blocking(move || store_sample(&s, label.as_str(), embedding, thumb, source)).await?;
    shared.notify(Notice::StateChanged);
    Ok(result)
}

fn store_sample(
    shared: &Shared,
    label: &str,
    embedding: Vec<f32>,
    thumbnail: Option<Vec<u8>>,
    source: SampleSource,
) -> Result<Value, String> {
    let mut ws = lock(&shared.workspace);
    let sample = ws.sample(label, embedding, thumbnail, source);
    let out = ws.add(sample).map_err(|e| e.to_string())?;
    shared.refresh_counts(&ws);
    shared.new_samples.fetch_add(1, Ordering::SeqCst);
    Ok(json!({
        "label": label,
        "id": out.id,
        "split": out.split.as_str(),
        "kept": out.kept,
        "evicted": out.evicted,
    }))
}

fn rollback(shared: &Shared, target: RollbackTarget) -> Result<Value, String> {
    let ws = lock(&shared.workspace);
    let version = match target {
        RollbackTarget::Version(v) => v,
        RollbackTarget::Previous => {
            let current = ws.registry.current_version().map_err(|e| e.to_string())?;
            let list = ws.registry.list().map_err(|e| e.to_string())?;
            list.iter()
                .filter(|m| m.deployed && Some(m.version) < current)
                .map(|m| m.version)
                .max()
                .ok_or("there is no earlier deployed head to roll back to")?
        }
    };
    let decision = ws.registry.rollback(version).map_err(|e| e.to_string())?;
    shared.serve_head(&ws, version).map_err(|e| e.to_string())?;
    info!("{}", decision.reason);
    serde_json::to_value(&decision).map_err(|e| e.to_string())
}

fn apply_settings(shared: &Shared, s: Settings) -> Result<Value, String> {
    let mut applied = Vec::new();
    let mut not_applied = serde_json::Map::new();
    if s.score_threshold.is_some() {
        if shared.is_detector {
            applied.push("score_threshold");
        } else {
            not_applied.insert(
                "score_threshold".into(),
                "only detectors have a score threshold".into(),
            );
        }
    }
    if let Some(b) = s.auto_train {
        shared.auto_train.store(b, Ordering::SeqCst);
        applied.push("auto_train");
    }
    if s.consensus.is_some() {
        applied.push("consensus");
    }
    if let Some(fps) = s.fps {
        applied.push("fps");
        info!("set: processing capped at {fps} frames per second");
    }
    if let Some(t) = s.unknown_threshold {
        *lock(&shared.unknown_threshold) = Some(t);
        let serving = shared.slot.load_full();
        if let Some(h) = serving {
            let mut head = h.head.clone();
            head.set_unknown_threshold(t).map_err(|e| e.to_string())?;
            shared.slot.store(Some(Arc::new(ServingHead {
                version: h.version,
                head,
            })));
        }
        applied.push("unknown_threshold");
    }
    let job = Job::Settings {
        consensus: None,
        consensus_frames: s.consensus.map(|n| n as usize),
        score_threshold: s.score_threshold.filter(|_| shared.is_detector),
        max_fps: s.fps.map(f64::from),
    };
    if !shared.send_job(job) {
        return Err("the inference thread has stopped".into());
    }
    if applied.is_empty() {
        return Err(format!(
            "nothing could be applied: {}",
            Value::Object(not_applied)
        ));
    }
    Ok(json!({ "applied": applied, "not_applied": not_applied }))
}

/// A request for the training thread.
pub struct TrainRequest {
    force: bool,
    why: String,
}

/// Starts the training thread: one for the daemon's lifetime, niced once, which waits for
/// [`TrainRequest`]s. A long-lived thread rather than one per run keeps the allocator's
/// per-thread arena (and so resident memory) from growing with every run over months. It
/// ends when `shared.trainer` is emptied at shutdown.
pub fn spawn_trainer(shared: &Arc<Shared>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (tx, rx) = std::sync::mpsc::channel::<TrainRequest>();
    *lock(&shared.trainer) = Some(tx);
    let s = shared.clone();
    std::thread::Builder::new()
        .name("training".into())
        .spawn(move || {
            lower_this_threads_priority();
            while let Ok(req) = rx.recv() {
                train(&s, req.force, &req.why);
                s.training.store(false, Ordering::SeqCst);
                s.notify(Notice::StateChanged);
            }
        })
}

/// Starts a training run on the training thread unless one is running. The result goes to
/// `training`; a deployed head is swapped in at once.
pub fn start_training(shared: &Arc<Shared>, force: bool, why: &str) -> Result<(), String> {
    if shared.training.swap(true, Ordering::SeqCst) {
        return Err(
            "a training run is already in progress; its result will be on `training`".into(),
        );
    }
    let request = TrainRequest {
        force,
        why: why.to_owned(),
    };
    let sent = lock(&shared.trainer)
        .as_ref()
        .is_some_and(|tx| tx.send(request).is_ok());
    if !sent {
        shared.training.store(false, Ordering::SeqCst);
        return Err("the training thread has stopped (the daemon is shutting down)".into());
    }
    shared.new_samples.store(0, Ordering::SeqCst);
    *lock(&shared.last_train) = Instant::now();
    shared.notify(Notice::StateChanged);
    Ok(())
}

/// How much nicer the training thread is than the rest of the daemon: training may take
/// seconds of CPU on a Pi, and frames must keep their latency meanwhile, so the scheduler
/// should prefer the inference thread.
const TRAINING_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority by [`TRAINING_NICE`] (at most to 19).
/// On Linux `setpriority` on a thread id affects that thread only; lowering needs no privilege.
fn lower_this_threads_priority() {
    // SAFETY: plain syscalls on the calling thread's own id, no pointers involved. The raw
    // gettid syscall rather than glibc's gettid(), which only exists from glibc 2.30 on and
    // would raise the binary's glibc floor above Bullseye's and JetPack 4's.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (current + TRAINING_NICE).min(19))
    };
    if rc != 0 {
        warn!(
            "cannot lower the training thread's priority: {}; training competes with inference",
            std::io::Error::last_os_error()
        );
    }
}

fn train(shared: &Shared, force: bool, why: &str) {
    let publish = |v: Value| {
        let topic = shared.publisher.topics().training();
        let sent = shared
            .runtime
            .block_on(shared.publisher.publish(&topic, v.to_string(), false));
        if let Err(e) = sent {
            warn!("training message not published: {e}");
        }
    };
    publish(json!({ "status": "started", "trigger": why, "force": force }));
    let config = lock(&shared.train).train_config(None);
    let outcome = {
        let mut ws = lock(&shared.workspace);
        // The shutdown flag doubles as the trainer's cancel flag.
        ws.train(&config, force, Some(&shared.shutdown))
            .map_err(|e| e.to_string())
            .and_then(|o| {
                if o.decision.deployed {
                    shared
                        .serve_head(&ws, o.version)
                        .map_err(|e| e.to_string())?;
                }
                Ok(o)
            })
    };
    match outcome {
        Ok(o) => {
            info!(
                version = o.version,
                deployed = o.decision.deployed,
                "{}",
                o.decision.reason
            );
            publish(json!({
                "status": "finished",
                "version": o.version,
                "deployed": o.decision.deployed,
                "reason": o.decision.reason,
                "accuracy": o.report.metrics.accuracy,
                "macro_f1": o.report.metrics.macro_f1,
                "current_macro_f1": o.current_macro_f1,
                "confusion": o.report.metrics.confusion,
                "classes": o.report.classes,
                "outcome": o,
            }));
        }
        Err(e) => {
            warn!("training failed: {e}");
            publish(json!({ "status": "failed", "deployed": false, "error": e }));
        }
    }
}

/// Publishes the latest frame, with its detections drawn on it, as a retained JPEG on
/// `snapshot`; its size, or `None`.
pub async fn publish_snapshot(shared: &Arc<Shared>) -> Option<usize> {
    let (image, result) = lock(&shared.latest)
        .as_ref()
        .and_then(|l| Some((l.image.clone()?, l.result.clone())))?;
    let jpeg = blocking(move || {
        let mut annotated = (*image).clone();
        annotate(&mut annotated, &result);
        let mut out = std::io::Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(&annotated)
            .map_err(|e| e.to_string())?;
        Ok(out.into_inner())
    })
    .await;
    let jpeg = match jpeg {
        Ok(j) => j,
        Err(e) => {
            warn!("snapshot not encoded: {e}");
            return None;
        }
    };
    let n = jpeg.len();
    let topic = shared.publisher.topics().snapshot();
    match shared.publisher.publish(&topic, jpeg, true).await {
        Ok(()) => Some(n),
        Err(e) => {
            info!("snapshot not published: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread, from /proc (field 19 of its stat line).
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("read stat");
        let after_comm = stat.rsplit(')').next().expect("stat line");
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // Fields after the comm start at field 3 (state), so nice (19) is index 16.
        fields[16].parse().expect("nice")
    }

    #[test]
    fn training_runs_at_a_lower_priority_than_the_rest() {
        let before = own_nice();
        let (lowered, main_after) = std::thread::spawn(move || {
            lower_this_threads_priority();
            own_nice()
        })
        .join()
        .map(|n| (n, own_nice()))
        .expect("thread");
        assert_eq!(
            lowered,
            (before + TRAINING_NICE).min(19),
            "the training thread is niced"
        );
        assert_eq!(main_after, before, "only that thread");
    }
}
