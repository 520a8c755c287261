//! The trainer: an actor on its own thread that trains heads when asked.
//!
//! Requests come in over a channel ([`TrainerHandle::request`]); one runs at a time, on one
//! long-lived thread niced below inference (a thread per run would give the allocator a fresh
//! arena each time and grow resident memory over months). A run trains on a *snapshot* of the
//! learner's samples and holds no lock while it fits, so samples, `forget` and every other
//! command go on meanwhile; it takes the learner's workspace again only to judge, save and
//! deploy. Cancellation is the trainer's own flag ([`TrainerHandle::cancel`]), set at
//! shutdown: the run stops between epochs and nothing is saved, so no head file is half
//! written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{info, warn};

use super::learner::{lock, Learner};
use super::notice::{Notice, Notices};
use super::telemetry::Telemetry;
use crate::adapt::workspace::TrainOutcome;
use crate::config::TrainSection;
use crate::mqtt::Publisher;
use crate::wire;

/// A request for the trainer.
pub struct TrainRequest {
    pub learner: Arc<Learner>,
    /// Deploy even when the new head is worse, train even when nothing changed.
    pub force: bool,
    /// `command`, `new samples` or `schedule` (the `trigger` of `training`).
    pub why: String,
}

/// What the trainer needs besides requests.
pub struct TrainerContext {
    pub publisher: Publisher,
    pub runtime: tokio::runtime::Handle,
    pub notices: Notices,
    pub telemetry: Arc<Telemetry>,
    /// `[train]`, replaced live by SIGHUP.
    pub train: Arc<Mutex<TrainSection>>,
}

/// The sending side of the trainer; dropping it (after [`TrainerHandle::cancel`]) ends the
/// thread once a run in hand is cancelled.
pub struct TrainerHandle {
    tx: Sender<TrainRequest>,
    cancel: Arc<AtomicBool>,
}

/// Why a training run could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrainStartError {
    #[error("a training run of {model} is already in progress; its result will be on `training`")]
    Busy { model: String },
    #[error("the trainer has stopped (the daemon is shutting down)")]
    Stopped,
}

impl TrainerHandle {
    /// Queues a run unless one of the same learner is running.
    pub fn request(&self, req: TrainRequest) -> Result<(), TrainStartError> {
        if !req.learner.begin_training() {
            return Err(TrainStartError::Busy {
                model: req.learner.model.clone(),
            });
        }
        let learner = req.learner.clone();
        self.tx.send(req).map_err(|_| {
            learner.end_training();
            TrainStartError::Stopped
        })
    }

    /// Stops the run in hand (between epochs) and every later one.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// Starts the trainer thread.
pub fn spawn(ctx: TrainerContext) -> std::io::Result<(TrainerHandle, JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel::<TrainRequest>();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let thread = std::thread::Builder::new()
        .name("training".into())
        .spawn(move || serve(rx, &ctx, &flag))?;
    Ok((TrainerHandle { tx, cancel }, thread))
}

fn serve(rx: Receiver<TrainRequest>, ctx: &TrainerContext, cancel: &AtomicBool) {
    lower_this_threads_priority();
    while let Ok(req) = rx.recv() {
        if cancel.load(Ordering::SeqCst) {
            req.learner.end_training();
            continue;
        }
        run_one(ctx, &req, cancel);
        req.learner.end_training();
        ctx.notices.send(Notice::DeviceChanged);
    }
}

fn publish(ctx: &TrainerContext, msg: &wire::Training) {
    let topic = ctx.publisher.topics().training();
    let Ok(json) = serde_json::to_vec(msg) else {
        return;
    };
    if let Err(e) = ctx
        .runtime
        .block_on(ctx.publisher.publish(&topic, json, false))
    {
        warn!("training message not published: {e}");
    }
}

fn run_one(ctx: &TrainerContext, req: &TrainRequest, cancel: &AtomicBool) {
    let learner = &req.learner;
    let model = learner.model.clone();
    publish(
        ctx,
        &wire::Training::Started {
            model: model.clone(),
            trigger: req.why.clone(),
            force: req.force,
        },
    );
    ctx.notices.send(Notice::DeviceChanged);
    let config = lock(&ctx.train).train_config(None);
    let outcome = learner
        .with_workspace(|ws| ws.snapshot())
        .and_then(|snapshot| snapshot.fit(&config, Some(cancel)))
        .and_then(|fitted| learner.with_workspace(|ws| ws.conclude(fitted, req.force)))
        .and_then(|o: TrainOutcome| {
            if o.decision.deployed {
                learner.serve(o.version)?;
            }
            Ok(o)
        });
    match outcome {
        Ok(o) => {
            info!(
                model = %model,
                version = o.version,
                deployed = o.decision.deployed,
                "{}",
                o.decision.reason
            );
            let kind = if o.decision.deployed {
                "deployed"
            } else {
                "rejected"
            };
            ctx.telemetry.training_run(&model, kind);
            ctx.telemetry
                .training_time(&model, Duration::from_millis(o.report.train_time_ms));
            publish(ctx, &super::report::training_finished(model, &o));
        }
        Err(e) => {
            let cancelled = cancel.load(Ordering::SeqCst);
            let kind = if cancelled { "cancelled" } else { "failed" };
            ctx.telemetry.training_run(&model, kind);
            let error = if cancelled {
                format!("cancelled: the daemon is stopping ({e})")
            } else {
                e.to_string()
            };
            warn!(model = %model, "training {kind}: {error}");
            publish(
                ctx,
                &wire::Training::Failed {
                    model,
                    deployed: false,
                    error,
                },
            );
        }
    }
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
