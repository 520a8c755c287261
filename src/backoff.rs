//! Retry delays: exponential backoff, with full jitter where many devices retry together.
//!
//! One type for both places the daemon retries:
//! - **The broker link** ([`Backoff::broker`]). rumqttc reconnects on the next `poll()` after an
//!   error and has no delay of its own, so a loop that polls again at once spins against a dead
//!   broker. The delay before attempt `n` (from 0) is drawn uniformly from
//!   `[0, min(cap, base * 2^n)]` ("full jitter"): many adaptd devices restarted by one broker
//!   outage then spread their reconnects instead of arriving together.
//! - **A lost camera** ([`Backoff::camera`]). Only this device retries its own USB port, so the
//!   delay is the ceiling itself, deterministic, and the schedule can be tested exactly.
//!
//! The jitter comes from [`SplitMix64`] seeded from the clock and the process id.

use std::time::Duration;

use crate::rng::SplitMix64;

/// Backoff state for one connection or device.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    /// `Some`: full jitter; `None`: the delay is the ceiling.
    jitter: Option<SplitMix64>,
}

impl Backoff {
    /// The broker link's: 0.5 s doubling up to 60 s, full jitter.
    pub fn broker() -> Backoff {
        Backoff::jittered(Duration::from_millis(500), Duration::from_secs(60))
    }

    /// A camera's: 1 s doubling to 30 s, no jitter. Quick to recover from a USB reset (which
    /// takes about a second), and at most two attempts a minute against a camera that is gone
    /// for good, which keeps the journal readable.
    pub fn camera() -> Backoff {
        Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// From `base` doubling to `cap`, with full jitter seeded from the clock and process id.
    pub fn jittered(base: Duration, cap: Duration) -> Backoff {
        Backoff::with_jitter(base, cap, SplitMix64::from_clock())
    }

    /// Full jitter from a fixed seed, for reproducible tests.
    pub fn with_seed(base: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff::with_jitter(base, cap, SplitMix64::new(seed))
    }

    /// From `base` doubling to `cap`, each delay exactly the ceiling.
    pub fn exponential(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base: base.min(cap),
            cap,
            attempt: 0,
            jitter: None,
        }
    }

    fn with_jitter(base: Duration, cap: Duration, rng: SplitMix64) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
            jitter: Some(rng),
        }
    }

    /// The upper bound of the next delay: `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt; counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        match &mut self.jitter {
            None => ceiling,
            Some(rng) => {
                let ceiling_nanos = ceiling.as_nanos().min(u128::from(u64::MAX)) as u64;
                Duration::from_nanos(rng.up_to(ceiling_nanos))
            }
        }
    }

    /// Back to the first, shortest delay; called once a connection has proven healthy.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(500);
    const CAP: Duration = Duration::from_secs(60);

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::with_seed(BASE, CAP, 1);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay();
        }
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000, 60000, 60000]
        );
    }

    #[test]
    fn delays_stay_within_bounds_and_spread() {
        for seed in 0..200 {
            let mut b = Backoff::with_seed(BASE, CAP, seed);
            for _ in 0..40 {
                let ceiling = b.ceiling();
                let d = b.next_delay();
                assert!(d <= ceiling, "seed {seed}: {d:?} > {ceiling:?}");
                assert!(d <= CAP);
            }
        }
        // Full jitter: over many draws at the cap, both small and large delays occur.
        let mut b = Backoff::with_seed(BASE, CAP, 42);
        for _ in 0..10 {
            b.next_delay();
        }
        let draws: Vec<Duration> = (0..1000).map(|_| b.next_delay()).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_secs(10)));
        assert!(draws.iter().any(|d| *d > Duration::from_secs(50)));
        let mean = draws.iter().map(Duration::as_secs_f64).sum::<f64>() / draws.len() as f64;
        assert!((25.0..35.0).contains(&mean), "mean {mean}");
    }

    #[test]
    fn reset_returns_to_the_base() {
        let mut b = Backoff::with_seed(BASE, CAP, 7);
        for _ in 0..10 {
            b.next_delay();
        }
        assert_eq!(b.attempts(), 10);
        assert_eq!(b.ceiling(), CAP);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.ceiling(), BASE);
        assert!(b.next_delay() <= BASE);
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::with_seed(Duration::from_secs(u64::MAX / 4), Duration::MAX, 3);
        for _ in 0..100 {
            let _ = b.next_delay();
        }
        let mut b = Backoff::with_seed(BASE, CAP, 3);
        for _ in 0..100_000 {
            let _ = b.next_delay();
        }
        assert_eq!(b.ceiling(), CAP);
    }

    #[test]
    fn without_jitter_the_delay_is_the_ceiling() {
        let mut b = Backoff::camera();
        let got: Vec<u64> = (0..8).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        // A base above the cap starts at the cap.
        let mut b = Backoff::exponential(Duration::from_secs(9), Duration::from_secs(2));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }

    #[test]
    fn seeds_differ() {
        let a = Backoff::jittered(BASE, CAP);
        std::thread::sleep(Duration::from_millis(2));
        let b = Backoff::jittered(BASE, CAP);
        let (mut a, mut b) = (a, b);
        for _ in 0..5 {
            a.next_delay();
            b.next_delay();
        }
        let da: Vec<_> = (0..5).map(|_| a.next_delay()).collect();
        let db: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_ne!(da, db);
    }
}
