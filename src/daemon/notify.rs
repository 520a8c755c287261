//! The systemd notify protocol: readiness, a status line, the watchdog, reload and stop.
//!
//! The unit is `Type=notify` with `WatchdogSec=`, so systemd learns from us when the daemon
//! is really up (model loaded, pipeline running: not merely exec'd), shows our `STATUS=` line
//! in `systemctl status`, and restarts us when the watchdog pings stop. Pings are only sent
//! while the pipeline makes progress ([`Liveness`]): a tokio timer that pinged on its own
//! would keep a daemon with a hung inference thread or a frozen camera alive forever.
//!
//! Without `NOTIFY_SOCKET` (run from a shell, or by another supervisor) every call is a no-op.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::debug;

/// Talks to the service manager, if there is one.
#[derive(Debug, Clone)]
pub struct Notifier {
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` / `WATCHDOG_USEC` (and `WATCHDOG_PID`) from the environment.
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to consider a ping: half the watchdog period, as sd_watchdog_enabled(3)
    /// recommends, so one late tick does not get the service killed.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog
            .map(|w| (w / 2).max(Duration::from_millis(100)))
    }

    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        send(&[NotifyState::Status(status)]);
    }

    pub fn watchdog(&self) {
        send(&[NotifyState::Watchdog]);
    }

    /// SIGHUP received. systemd ≥ 253 requires `MONOTONIC_USEC` with `RELOADING=1`, and
    /// `READY=1` ([`Notifier::reloaded`]) once the reload is done.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }

    pub fn reloaded(&self, status: &str) {
        self.ready(status);
    }

    pub fn stopping(&self) {
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

fn send(states: &[NotifyState]) {
    // A failed notification (socket gone) cannot be reported to anyone who cares; systemd
    // will notice the missing ping or READY on its own.
    if let Err(e) = sd_notify::notify(states) {
        debug!("sd_notify failed: {e}");
    }
}

/// What the pipeline looks like at one watchdog tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Frames processed since start.
    pub frames: u64,
    /// When the inference thread last went round its loop.
    pub heartbeat: Instant,
    /// No frames are expected: paused, the camera is being reopened, or the source ended.
    pub idle_by_design: bool,
}

/// Decides, tick by tick, whether the pipeline is alive.
///
/// Alive means: a frame was processed since the previous tick; or no frames are expected
/// right now (paused, camera unplugged and being retried, a replay that ended) and the
/// inference thread still goes round its loop. A stream that is supposed to flow but delivers
/// nothing (a hung camera driver, an `ffmpeg` that stopped writing without closing the pipe)
/// or an inference thread stuck in a frame is not alive: the pings stop and systemd restarts
/// the service.
#[derive(Debug, Clone)]
pub struct Liveness {
    last_frames: Option<u64>,
    stale_after: Duration,
}

impl Liveness {
    /// `stale_after`: how old the inference thread's heartbeat may be (the ping interval).
    pub fn new(stale_after: Duration) -> Liveness {
        Liveness {
            last_frames: None,
            stale_after,
        }
    }

    pub fn alive(&mut self, now: Instant, p: Progress) -> bool {
        let advanced = self.last_frames.is_none_or(|f| p.frames > f);
        self.last_frames = Some(p.frames);
        let thread_runs = now.saturating_duration_since(p.heartbeat) <= self.stale_after;
        if p.idle_by_design {
            thread_runs
        } else {
            advanced && thread_runs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(frames: u64, heartbeat: Instant, idle: bool) -> Progress {
        Progress {
            frames,
            heartbeat,
            idle_by_design: idle,
        }
    }

    #[test]
    fn frames_keep_it_alive_and_a_stall_does_not() {
        let t = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(5));
        assert!(
            l.alive(t, progress(0, t, false)),
            "the first tick after READY"
        );
        assert!(l.alive(t, progress(3, t, false)));
        assert!(
            !l.alive(t, progress(3, t, false)),
            "no new frame since the last tick"
        );
        assert!(l.alive(t, progress(4, t, false)), "frames again");
    }

    #[test]
    fn idle_by_design_needs_only_a_running_thread() {
        let t = Instant::now();
        let later = t + Duration::from_secs(60);
        let mut l = Liveness::new(Duration::from_secs(5));
        assert!(l.alive(t, progress(7, t, true)));
        assert!(
            l.alive(t, progress(7, t, true)),
            "paused: no frames, still fine"
        );
        assert!(
            !l.alive(later, progress(7, t, true)),
            "the inference thread is stuck"
        );
        assert!(
            !l.alive(later, progress(8, t, false)),
            "a frame counted long ago does not excuse a stuck thread"
        );
    }

    #[test]
    fn the_ping_interval_is_half_the_watchdog() {
        let n = Notifier {
            watchdog: Some(Duration::from_secs(30)),
        };
        assert_eq!(n.ping_interval(), Some(Duration::from_secs(15)));
        assert_eq!(Notifier { watchdog: None }.ping_interval(), None);
    }
}
