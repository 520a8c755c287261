//! Frame pacing against a fixed start instant.
//!
//! Sleeping `1/fps` after each frame drifts: decode time and scheduler latency add up, and a
//! 2 fps replay ends up at 1.9 fps. Instead frame `n` is due at `start + n / fps`, computed
//! from scratch each time, so errors never accumulate. When the consumer falls more than one
//! period behind (the board was suspended, a file took long to decode), the schedule is rebased
//! on the present rather than releasing a burst of "overdue" frames.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Pacer {
    fps: f64,
    start: Option<Instant>,
    n: u64,
}

impl Pacer {
    /// `fps` must be finite and above 0 (checked by config validation); anything else paces
    /// nothing rather than panicking.
    pub fn new(fps: f64) -> Pacer {
        Pacer {
            fps,
            start: None,
            n: 0,
        }
    }

    fn enabled(&self) -> bool {
        self.fps.is_finite() && self.fps > 0.0
    }

    fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.fps)
    }

    /// When frame `n` of the current schedule is due.
    fn due(&self, start: Instant, n: u64) -> Instant {
        start + Duration::from_secs_f64(n as f64 / self.fps)
    }

    /// For sources that can wait (folders, files): how long to sleep before delivering the next
    /// frame, given the time `now`. Commits the frame to the schedule.
    pub fn delay(&mut self, now: Instant) -> Duration {
        if !self.enabled() {
            return Duration::ZERO;
        }
        let start = *self.start.get_or_insert(now);
        let due = self.due(start, self.n);
        self.n += 1;
        if due >= now {
            return due - now;
        }
        if now - due > self.period() {
            self.start = Some(now);
            self.n = 1;
        }
        Duration::ZERO
    }

    /// When the next frame will be admitted, once the schedule has started.
    pub fn next_due(&self) -> Option<Instant> {
        match (self.enabled(), self.start) {
            (true, Some(start)) => Some(self.due(start, self.n)),
            _ => None,
        }
    }

    /// For live sources that must not be slowed down (a pipe whose writer would block):
    /// whether a frame arriving at `now` should be kept (`true`) or dropped to hold the rate.
    pub fn admit(&mut self, now: Instant) -> bool {
        if !self.enabled() {
            return true;
        }
        let start = *self.start.get_or_insert(now);
        let due = self.due(start, self.n);
        if now < due {
            return false;
        }
        self.n += 1;
        if now - due > self.period() {
            self.start = Some(now);
            self.n = 1;
        }
        true
    }
}

/// When the consumer of a stream next takes a frame: the lane's fps cap publishes its next
/// due time here, and a source that pays per frame to produce a picture (RTSP: the YUV to RGB
/// conversion after decoding) produces only the frames the cap will take. The cap stays the
/// lane's alone, so a live `set fps` needs nothing from the source, and a frame produced as
/// due is never refused by a second schedule. Lock-free: read at every frame.
#[derive(Debug, Clone, Default)]
pub struct Demand(Arc<AtomicU64>);

/// The instant [`Demand`] counts from (microseconds after it, 0 = "any frame").
fn anchor() -> Instant {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    *ANCHOR.get_or_init(Instant::now)
}

impl Demand {
    /// Every frame is wanted until a due time is published.
    pub fn new() -> Demand {
        Demand::default()
    }

    /// Publishes when the next frame is due; `None`: any frame is wanted.
    pub fn set_next_due(&self, due: Option<Instant>) {
        let micros = due.map_or(0, |d| {
            u64::try_from(d.saturating_duration_since(anchor()).as_micros())
                .unwrap_or(u64::MAX)
                .max(1)
        });
        self.0.store(micros, Ordering::Relaxed);
    }

    /// Whether a frame ready at `now` will be taken.
    pub fn wants(&self, now: Instant) -> bool {
        let due = self.0.load(Ordering::Relaxed);
        due == 0 || anchor() + Duration::from_micros(due) <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn delay_schedules_against_start_without_drift() {
        let t0 = Instant::now();
        let mut p = Pacer::new(4.0); // 250 ms period
        assert_eq!(p.delay(t0), Duration::ZERO);
        // Each call comes 30 ms after the previous frame was due (work took 30 ms): the delay
        // absorbs it, so frame n stays at exactly n * 250 ms.
        for n in 1..=100u64 {
            let due = t0 + ms(250 * n);
            let now = due - ms(250) + ms(30);
            assert_eq!(now + p.delay(now), due, "frame {n}");
        }
    }

    #[test]
    fn delay_rebases_after_a_long_stall_instead_of_bursting() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10.0); // 100 ms
        p.delay(t0);
        // Stalled for 5 s: next frame goes out at once, and the one after a full period later,
        // not 49 frames in a burst.
        let late = t0 + ms(5000);
        assert_eq!(p.delay(late), Duration::ZERO);
        assert_eq!(p.delay(late), ms(100));
    }

    #[test]
    fn admit_drops_to_hold_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(5.0); // 200 ms
                                     // A 30 fps stream for 2 s: about 10 frames kept.
        let kept = (0..60u64)
            .filter(|i| p.admit(t0 + Duration::from_micros(i * 33_333)))
            .count();
        assert!((10..=11).contains(&kept), "kept {kept}");
    }

    #[test]
    fn zero_or_nan_fps_paces_nothing() {
        let t0 = Instant::now();
        for fps in [0.0, f64::NAN, -1.0] {
            let mut p = Pacer::new(fps);
            assert_eq!(p.delay(t0), Duration::ZERO);
            assert!(p.admit(t0));
            assert!(p.admit(t0));
        }
    }

    #[test]
    fn demand_follows_the_caps_schedule() {
        let d = Demand::new();
        let t0 = Instant::now();
        assert!(d.wants(t0), "no cap: every frame");
        let mut cap = Pacer::new(2.0);
        assert_eq!(cap.next_due(), None);
        assert!(cap.admit(t0));
        d.set_next_due(cap.next_due());
        assert!(
            !d.wants(t0 + ms(100)),
            "the cap takes the next frame at +500 ms"
        );
        assert!(d.wants(t0 + ms(500)));
        // A frame produced as due is admitted by the cap it followed.
        assert!(cap.admit(t0 + ms(500)));
        d.set_next_due(None);
        assert!(d.wants(t0 + ms(501)), "cap lifted");
    }
}
