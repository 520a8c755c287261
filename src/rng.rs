//! The one pseudo-random generator: SplitMix64 (Steele, Lea & Flood 2014).
//!
//! A leaf module. Training (shuffles, dropout, initialisation, the validation carve-out) needs
//! streams that are fully determined by a seed, so a run can be repeated bit for bit; reconnect
//! jitter needs spread, not cryptographic quality. SplitMix64 gives both in a dozen lines,
//! every seed is fine (including 0), and it costs no dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64: 64 bits of state, one add and three xor-shift-multiplies per number.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// A generator seeded from the clock and the process id: different across processes and
    /// restarts, for jitter (never for anything that must be reproducible).
    pub fn from_clock() -> SplitMix64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        SplitMix64::new(nanos ^ (u64::from(std::process::id()) << 32))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 random bits (all an `f32` mantissa holds).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (Lemire's multiply-shift, no modulo; the bias is below
    /// 2^-40 for any realistic `n`). `below(0)` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform integer in `0..=max`, over the full `u64` range.
    pub fn up_to(&mut self, max: u64) -> u64 {
        ((u128::from(self.next_u64()) * (u128::from(max) + 1)) >> 64) as u64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher–Yates shuffle in place.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_reference_sequence() {
        // The first outputs of the reference splitmix64.c for seed 1234567.
        let mut r = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn uniforms_stay_in_range_and_cover_it() {
        let mut r = SplitMix64::new(0);
        let (mut lo, mut hi) = (1.0f64, 0.0f64);
        for _ in 0..10_000 {
            let x = r.next_f64();
            let y = r.next_f32();
            assert!((0.0..1.0).contains(&x) && (0.0..1.0).contains(&y));
            lo = lo.min(x);
            hi = hi.max(x);
            assert!(r.below(7) < 7);
            assert!(r.up_to(3) <= 3);
        }
        assert!(lo < 0.01 && hi > 0.99, "{lo} {hi}");
        assert_eq!(r.below(0), 0);
        let _full_range = r.up_to(u64::MAX); // no overflow in the 128-bit product
    }

    #[test]
    fn normal_has_zero_mean_and_unit_variance() {
        let mut r = SplitMix64::new(9);
        let xs: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut v: Vec<usize> = (0..100).collect();
        SplitMix64::new(5).shuffle(&mut v);
        let mut w: Vec<usize> = (0..100).collect();
        SplitMix64::new(5).shuffle(&mut w);
        assert_eq!(v, w, "same seed, same order");
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
