//! Reconnect delays: exponential backoff with full jitter.
//!
//! rumqttc reconnects on the next `poll()` after an error and has no delay of its own, so a
//! loop that polls again at once spins against a dead broker. The delay before attempt `n`
//! (counting from 0) is drawn uniformly from `[0, min(cap, base * 2^n)]` ("full jitter"): many
//! adaptd devices restarted by one broker outage then spread their reconnects instead of
//! arriving together.
//!
//! The random numbers come from a small SplitMix64 generator seeded from the clock and the
//! process id: jitter needs spread, not cryptographic quality, and this avoids a dependency.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Backoff state for one connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// The link's default: 0.5 s doubling up to 60 s.
    pub fn reconnect_default() -> Backoff {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(60))
    }

    /// Backoff from `base` doubling to `cap`, seeded from the clock and process id.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = nanos ^ (u64::from(std::process::id()) << 32);
        Backoff::with_seed(base, cap, seed)
    }

    /// Backoff with a fixed seed, for reproducible tests.
    pub fn with_seed(base: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
            rng: SplitMix64(seed),
        }
    }

    /// The upper bound of the next delay: `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Draws the delay before the next attempt and counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_nanos = ceiling.as_nanos().min(u128::from(u64::MAX)) as u64;
        // Uniform in [0, ceiling] by a 128-bit multiply (no modulo bias worth the name).
        let r = self.rng.next();
        let nanos = ((u128::from(r) * (u128::from(ceiling_nanos) + 1)) >> 64) as u64;
        Duration::from_nanos(nanos)
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

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, every seed is fine.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
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
    fn seeds_differ() {
        let a = Backoff::new(BASE, CAP);
        std::thread::sleep(Duration::from_millis(2));
        let b = Backoff::new(BASE, CAP);
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
