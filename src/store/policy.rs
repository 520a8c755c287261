//! The pure rules of the store: what a label may look like, which split a new sample gets, and
//! the seeded random draws of reservoir sampling. Kept free of SQLite so they can be reasoned
//! about (and tested) on their own.

use crate::label::Label;
use crate::store::error::StoreError;

/// The label for background and false positives. It is an ordinary class for storage and
/// training: teaching the head what "nothing of interest" looks like is how false positives go
/// away.
pub const NONE_LABEL: &str = "none";

/// What the classifier reports when no class is confident. Refused as a training label: a
/// class named `unknown` would make "the head is unsure" and "the head is sure it is the class
/// unknown" indistinguishable downstream.
pub use crate::label::UNKNOWN as UNKNOWN_LABEL;

/// Longest label, in bytes (labels are ASCII, so also in characters).
pub const MAX_LABEL_LEN: usize = 64;

/// Checks the label rule: 1 to 64 characters of lower-case `a-z`, digits `0-9`, `_` and `-`,
/// starting with a letter or digit.
///
/// Why so narrow: labels become MQTT topic levels (`samples/<label>`), file names in exports and
/// Home Assistant entity ids. Lower-case ASCII without `.`, `/`, `+`, `#` or spaces is safe in
/// all three (no `..` path components, no MQTT wildcards, no case-folding collisions on FAT
/// file systems), and the leading letter or digit keeps a label from reading as a command-line
/// flag (`-x`). This accepts `unknown`; adding a sample also refuses it
/// ([`validate_training_label`]).
pub fn validate_label(label: &str) -> Result<(), StoreError> {
    const RULE: &str = "labels are 1 to 64 characters of lower-case a-z, digits, '_' and '-', \
                        starting with a letter or digit (so they are safe as MQTT topic levels \
                        and file names)";
    Label::check_syntax(label).map_err(|e| StoreError::InvalidLabel {
        label: e.label,
        reason: format!("{}; {RULE}", e.reason),
    })
}

/// [`validate_label`], and not the reserved `unknown`: the label of a class to train.
pub fn validate_training_label(label: &str) -> Result<(), StoreError> {
    validate_label(label)?;
    if Label::is_reserved(label) {
        return Err(StoreError::ReservedLabel {
            label: label.to_string(),
        });
    }
    Ok(())
}

/// How many of a label's `n` samples should be holdout: `floor(n * f)`, but at least 1 and at
/// most `n - 1` once `n >= 2`, so that every label with two samples can be both trained on and
/// evaluated.
pub(crate) fn holdout_target(n: u64, fraction: f64) -> u64 {
    if n < 2 {
        return 0;
    }
    // n is a sample count (far below 2^53). The epsilon keeps exact multiples exact despite
    // binary fractions (0.29 * 100 is 28.999999999999996 in f64); the cast saturates and the
    // clamp below bounds it anyway.
    let proportional = (n as f64 * fraction + 1e-9).floor() as u64;
    proportional.max(1).min(n - 1)
}

/// The split of a new sample given the label's current counts (after any eviction made room for
/// it): holdout exactly when that brings the holdout count up to `holdout_target(n)`, `n` being
/// the count including the new sample.
///
/// With no removals this is the running-counter rule: the k-th sample (from 0) is holdout when
/// `target(k + 1) > target(k)`, so 10 samples at f = 0.2 give holdout at k = 1 and k = 9, and
/// 2 samples give one of each. Using the current counts instead of a counter of all samples
/// ever stored makes it self-correcting: if the only holdout sample is removed or evicted, the
/// next sample of that label restores the guarantee.
pub(crate) fn split_for_next(train: u64, holdout: u64, fraction: f64) -> super::Split {
    if holdout < holdout_target(train + holdout + 1, fraction) {
        super::Split::Holdout
    } else {
        super::Split::Train
    }
}

/// SplitMix64 finaliser: a small, well-mixed 64-bit hash. No `rand` crate: the store needs a
/// handful of reproducible draws, not a general RNG.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of the label, so each label gets its own stream of draws.
fn label_hash(label: &str) -> u64 {
    label.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A uniform draw in `0..bound` that is a pure function of (seed, label, n, salt).
///
/// Why stateless: reservoir decisions must be reproducible for a seed, including across daemon
/// restarts. Deriving each draw from the label's persisted seen-counter means no generator
/// state has to be stored besides that counter.
pub(crate) fn draw_below(seed: u64, label: &str, n: u64, salt: u64, bound: u64) -> u64 {
    let r = mix(seed ^ mix(label_hash(label) ^ mix(n ^ mix(salt))));
    // Lemire's multiply-shift: unbiased enough for bounds far below 2^64, and no division.
    ((u128::from(r) * u128::from(bound)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Split;

    #[test]
    fn label_rule() {
        for ok in ["cat", "none", "unknown", "a", "0", "x-1_y", &"a".repeat(64)] {
            assert!(validate_label(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Cat",
            "a b",
            "a.b",
            "a/b",
            "-a",
            "_a",
            "é",
            "a+",
            &"a".repeat(65),
        ] {
            let e = validate_label(bad).unwrap_err().to_string();
            assert!(e.contains("lower-case"), "{bad}: {e}");
        }
        assert!(validate_label("Cat")
            .unwrap_err()
            .to_string()
            .contains("\"cat\""));
        assert!(matches!(
            validate_training_label("unknown"),
            Err(StoreError::ReservedLabel { .. })
        ));
        assert!(validate_training_label(NONE_LABEL).is_ok());
        let long = validate_label(&"x".repeat(10_000)).unwrap_err().to_string();
        assert!(long.len() < 400, "{long}");
    }

    #[test]
    fn holdout_targets() {
        let t: Vec<u64> = (0..=10).map(|n| holdout_target(n, 0.2)).collect();
        assert_eq!(t, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2]);
        assert_eq!(holdout_target(2, 0.9), 1);
        assert_eq!(holdout_target(10, 0.9), 9);
        // The running counter never jumps by more than one, for any fraction.
        for f in [0.01, 0.2, 0.5, 0.77, 0.99] {
            for n in 0..500 {
                let step = holdout_target(n + 1, f) - holdout_target(n, f);
                assert!(step <= 1, "f={f} n={n}");
            }
        }
        let (mut tr, mut ho) = (0, 0);
        for _ in 0..10 {
            match split_for_next(tr, ho, 0.2) {
                Split::Train => tr += 1,
                Split::Holdout => ho += 1,
            }
        }
        assert_eq!((tr, ho), (8, 2));
    }

    #[test]
    fn draws_are_deterministic_and_in_range() {
        let a: Vec<u64> = (0..100).map(|n| draw_below(7, "cat", n, 0, 10)).collect();
        let b: Vec<u64> = (0..100).map(|n| draw_below(7, "cat", n, 0, 10)).collect();
        let c: Vec<u64> = (0..100).map(|n| draw_below(8, "cat", n, 0, 10)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|&x| x < 10));
        // Every bucket gets hit: no gross bias.
        for v in 0..10 {
            assert!(a.contains(&v), "{v}");
        }
    }
}
