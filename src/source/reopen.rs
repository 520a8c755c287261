//! Keeping a camera source alive across unplugging, USB resets and late enumeration.
//!
//! A USB webcam on a pole disappears: the cable is knocked, the hub browns out, the kernel
//! resets the port after a transfer error. The daemon must not exit then (systemd would restart
//! it, but every restart reloads the model and republishes discovery); it should report the
//! problem on `state` and pick the camera up again when it returns. [`ReopeningCamera`] wraps
//! any camera-like source: errors the camera can recover from (see
//! [`SourceError::is_retryable`]) close it and start reopening with exponential backoff; errors
//! no retry can fix (not a camera, unsupported format) are returned.
//!
//! The opener and the sleep are injected, so the schedule is tested without a camera and
//! without waiting, and the same wrapper works in builds without V4L2.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::source::frame::Frame;
use crate::source::stats::{SourceState, SourceStats};
use crate::source::stop::StopSignal;
use crate::source::{Source, SourceError};

/// Opens the camera; called again after every loss. Receives the wrapper's stats so counters
/// (decode errors, negotiated format) accumulate over reconnections.
pub type Opener = Box<dyn FnMut(&Arc<SourceStats>) -> Result<Box<dyn Source>, SourceError> + Send>;

/// A delay in whole seconds, rounded up, as `retry_in_s` carries it.
pub(crate) fn whole_secs(d: Duration) -> u32 {
    u32::try_from(d.as_millis().div_ceil(1000)).unwrap_or(u32::MAX)
}

/// Sleeps between attempts; returns `false` when the daemon is stopping.
pub type Sleeper = Box<dyn FnMut(Duration) -> bool + Send>;

/// A source that reopens its camera when it is lost (see the module docs).
pub struct ReopeningCamera {
    name: String,
    opener: Opener,
    sleep: Sleeper,
    inner: Option<Box<dyn Source>>,
    backoff: Backoff,
    /// Failed opens since the last frame.
    attempt: u32,
    stats: Arc<SourceStats>,
    seq: u64,
    /// Set once a camera was streaming, so a later loss counts as a reconnect.
    ever_streamed: bool,
}

impl ReopeningCamera {
    /// Wraps `opener`; nothing is opened until the first [`Source::next_frame`] (or pass an
    /// already open camera with [`ReopeningCamera::with_camera`]). Sleeps through `stop`, so a
    /// shutdown interrupts a 30 s wait at once.
    pub fn new(name: impl Into<String>, opener: Opener, stop: StopSignal) -> ReopeningCamera {
        ReopeningCamera::with_sleeper(
            name,
            opener,
            Box::new(move |d| stop.sleep(d)),
            Backoff::camera(),
        )
    }

    /// With an injected sleep and backoff (tests, or a different schedule).
    pub fn with_sleeper(
        name: impl Into<String>,
        opener: Opener,
        sleep: Sleeper,
        backoff: Backoff,
    ) -> ReopeningCamera {
        ReopeningCamera {
            name: name.into(),
            opener,
            sleep,
            inner: None,
            backoff,
            attempt: 0,
            stats: SourceStats::new(),
            seq: 0,
            ever_streamed: false,
        }
    }

    /// Starts with a camera that is already open (the daemon opens once at startup to report
    /// configuration errors early).
    pub fn with_camera(mut self, camera: Box<dyn Source>) -> ReopeningCamera {
        self.inner = Some(camera);
        self
    }

    /// Starts in the reconnecting state after a failed first open at startup, so `state`
    /// shows why there are no frames from the first second.
    pub fn after_failed_open(mut self, error: &SourceError) -> ReopeningCamera {
        self.attempt = 1;
        self.stats.set_state(SourceState::Reconnecting {
            attempt: 1,
            last_error: error.to_string(),
            retry_in_s: whole_secs(self.backoff.ceiling()),
        });
        self
    }

    /// `Streaming`, `Reconnecting { attempt, last_error }`, ... (the same as `stats().state()`).
    pub fn state(&self) -> SourceState {
        self.stats.state()
    }

    /// The stats the wrapped cameras report into; pass it to cameras opened outside the
    /// opener (see [`ReopeningCamera::with_camera`]).
    pub fn shared_stats(&self) -> &Arc<SourceStats> {
        &self.stats
    }

    /// One open attempt after the current backoff delay; `Ok(false)` means stop requested.
    fn reopen(&mut self) -> Result<bool, SourceError> {
        if self.attempt > 0 {
            let delay = self.backoff.next_delay();
            if !(self.sleep)(delay) {
                return Ok(false);
            }
        }
        match (self.opener)(&self.stats) {
            Ok(cam) => {
                info!(source = %self.name, attempt = self.attempt, "camera opened");
                self.inner = Some(cam);
                Ok(true)
            }
            Err(e) if e.is_retryable() => {
                self.attempt = self.attempt.saturating_add(1);
                let retry_in = self.backoff.ceiling();
                warn!(
                    "{e} (attempt {}, next try in {} s)",
                    self.attempt,
                    retry_in.as_secs_f32()
                );
                self.stats.set_state(SourceState::Reconnecting {
                    attempt: self.attempt,
                    last_error: e.to_string(),
                    retry_in_s: whole_secs(retry_in),
                });
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}

impl Source for ReopeningCamera {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            let Some(cam) = self.inner.as_mut() else {
                match self.reopen() {
                    Ok(true) => continue,
                    Ok(false) => {
                        self.stats.set_state(SourceState::Ended);
                        return Ok(None);
                    }
                    Err(e) => {
                        self.stats.set_state(SourceState::Failed {
                            error: e.to_string(),
                        });
                        return Err(e);
                    }
                }
            };
            match cam.next_frame() {
                Ok(Some(mut frame)) => {
                    // Only a delivered frame proves the camera works: a camera that opens and
                    // then fails at once keeps backing off instead of being hammered.
                    self.backoff.reset();
                    self.attempt = 0;
                    self.ever_streamed = true;
                    frame.seq = self.seq;
                    self.seq += 1;
                    self.stats.frame_delivered();
                    return Ok(Some(frame));
                }
                Ok(None) => {
                    // A camera does not end by itself: the inner source saw the stop signal.
                    self.inner = None;
                    self.stats.set_state(SourceState::Ended);
                    return Ok(None);
                }
                Err(e) if e.is_retryable() => {
                    self.inner = None;
                    if self.ever_streamed && self.attempt == 0 {
                        self.stats.reconnected();
                    }
                    self.attempt = self.attempt.saturating_add(1);
                    warn!("{e}");
                    self.stats.set_state(SourceState::Reconnecting {
                        attempt: self.attempt,
                        last_error: e.to_string(),
                        retry_in_s: whole_secs(self.backoff.ceiling()),
                    });
                }
                Err(e) => {
                    self.inner = None;
                    self.stats.set_state(SourceState::Failed {
                        error: e.to_string(),
                    });
                    return Err(e);
                }
            }
        }
    }

    fn describe(&self) -> String {
        match &self.inner {
            Some(cam) => cam.describe(),
            None => format!("v4l2 {} (reconnecting)", self.name),
        }
    }

    fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// A fake camera that delivers `frames` frames, then fails with `then`.
    struct FakeCam {
        frames: u32,
        then: Option<SourceError>,
    }

    impl Source for FakeCam {
        fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
            if self.frames > 0 {
                self.frames -= 1;
                return Ok(Some(Frame::now(999, image::RgbImage::new(1, 1), "fake")));
            }
            match self.then.take() {
                Some(e) => Err(e),
                None => Ok(None),
            }
        }
        fn describe(&self) -> String {
            "fake".into()
        }
        fn stats(&self) -> Arc<SourceStats> {
            SourceStats::new()
        }
    }

    fn gone() -> SourceError {
        SourceError::CameraNotFound {
            device: "/dev/video0".into(),
        }
    }

    fn lost() -> SourceError {
        SourceError::CameraLost {
            device: "/dev/video0".into(),
            detail: "No such device (os error 19)".into(),
        }
    }

    type Script = Arc<Mutex<VecDeque<Result<FakeCam, SourceError>>>>;

    /// A wrapper whose opener plays `script` and whose sleeps are recorded, not slept.
    fn scripted(
        script: Vec<Result<FakeCam, SourceError>>,
    ) -> (ReopeningCamera, Arc<Mutex<Vec<Duration>>>, Script) {
        let script: Script = Arc::new(Mutex::new(script.into()));
        let s2 = script.clone();
        let opener: Opener = Box::new(move |_| {
            let next = s2.lock().ok().and_then(|mut q| q.pop_front());
            match next {
                Some(Ok(cam)) => Ok(Box::new(cam) as Box<dyn Source>),
                Some(Err(e)) => Err(e),
                None => Err(gone()),
            }
        });
        let slept = Arc::new(Mutex::new(Vec::new()));
        let s3 = slept.clone();
        let sleeper: Sleeper = Box::new(move |d| {
            if let Ok(mut v) = s3.lock() {
                v.push(d);
            }
            true
        });
        let cam = ReopeningCamera::with_sleeper("/dev/video0", opener, sleeper, Backoff::camera());
        (cam, slept, script)
    }

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&s| Duration::from_secs(s)).collect()
    }

    #[test]
    fn reconnects_with_backoff_and_reports_its_state() {
        let mut script: Vec<Result<FakeCam, SourceError>> = vec![Ok(FakeCam {
            frames: 2,
            then: Some(lost()),
        })];
        script.extend((0..6).map(|_| Err(gone())));
        script.push(Ok(FakeCam {
            frames: 1,
            then: None,
        }));
        let (mut cam, slept, _) = scripted(script);
        let stats = cam.stats();

        let seqs: Vec<u64> = (0..2)
            .filter_map(|_| cam.next_frame().ok().flatten().map(|f| f.seq))
            .collect();
        assert_eq!(seqs, vec![0, 1]);
        assert_eq!(stats.state(), SourceState::Streaming);
        assert!(slept.lock().map(|v| v.is_empty()).unwrap_or(false));

        // Lost after two frames: 1 s to let the USB reset settle, then 6 failed opens with
        // growing waits, then the camera is back. Sequence numbers continue.
        let f = cam.next_frame().ok().flatten().map(|f| f.seq);
        assert_eq!(f, Some(2));
        let waits = slept.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(waits, secs(&[1, 2, 4, 8, 16, 30, 30]));
        let snap = stats.snapshot();
        assert_eq!(snap.reconnects, 1);
        assert_eq!(snap.frames, 3);
        assert_eq!(snap.state, SourceState::Streaming);
    }

    #[test]
    fn state_shows_attempt_and_error_while_reconnecting() {
        let mut cam = ReopeningCamera::with_sleeper(
            "/dev/video0",
            Box::new(|_| Err(gone())),
            Box::new(|_| true),
            Backoff::camera(),
        );
        for want in 1..=3 {
            assert!(matches!(cam.reopen(), Ok(true)));
            match cam.stats().state() {
                SourceState::Reconnecting {
                    attempt,
                    last_error,
                    ..
                } => {
                    assert_eq!(attempt, want);
                    assert!(
                        last_error.contains("is the camera plugged in?"),
                        "{last_error}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_stop_during_the_wait_ends_the_stream() {
        let waits = Arc::new(Mutex::new(0u32));
        let w2 = waits.clone();
        let mut cam = ReopeningCamera::with_sleeper(
            "/dev/video0",
            Box::new(|_| Err(gone())),
            // The third wait is interrupted by a stop.
            Box::new(move |_| {
                let mut n = w2.lock().unwrap_or_else(|e| e.into_inner());
                *n += 1;
                *n < 3
            }),
            Backoff::camera(),
        );
        assert!(matches!(cam.next_frame(), Ok(None)));
        assert_eq!(*waits.lock().unwrap_or_else(|e| e.into_inner()), 3);
        assert_eq!(cam.stats().state(), SourceState::Ended);
    }

    #[test]
    fn unfixable_errors_are_returned_not_retried() {
        let (mut cam, slept, _) = scripted(vec![Err(SourceError::NotACamera {
            device: "/tmp/x".into(),
            detail: "VIDIOC_QUERYCAP failed".into(),
        })]);
        let e = cam
            .next_frame()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not a V4L2 video capture device"), "{e}");
        assert!(slept.lock().map(|v| v.is_empty()).unwrap_or(false));
        assert!(matches!(cam.stats().state(), SourceState::Failed { .. }));
    }

    #[test]
    fn a_camera_that_fails_right_after_opening_keeps_backing_off() {
        let script = (0..4)
            .map(|_| {
                Ok(FakeCam {
                    frames: 0,
                    then: Some(lost()),
                })
            })
            .chain(std::iter::once(Ok(FakeCam {
                frames: 1,
                then: None,
            })))
            .collect();
        let (mut cam, slept, _) = scripted(script);
        assert!(matches!(cam.next_frame(), Ok(Some(_))));
        let waits = slept.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(waits, secs(&[1, 2, 4, 8]));
    }

    #[test]
    fn real_sleeps_with_small_durations_and_a_stop() {
        let stop = StopSignal::new();
        let s2 = stop.clone();
        let mut cam = ReopeningCamera::with_sleeper(
            "/dev/video0",
            Box::new(|_| Err(gone())),
            Box::new(move |d| s2.sleep(d)),
            Backoff::exponential(Duration::from_millis(5), Duration::from_millis(20)),
        );
        let h = std::thread::spawn(move || cam.next_frame().map(|f| f.is_none()).ok());
        std::thread::sleep(Duration::from_millis(100));
        stop.stop();
        assert_eq!(h.join().ok().flatten(), Some(true));
    }
}
