//! The mel front end checked against librosa itself (`reference/make_mel_reference.py`, which
//! runs `librosa.feature.melspectrogram` and Resemblyzer 0.1.4's utterance code and stores a
//! few frames of each result in `reference/mel_reference.json`).
//!
//! Tolerance: every value must satisfy `|rust - librosa| <= 1e-5 * |librosa| + 1e-7 * max`,
//! where `max` is the largest value of that frame. Why that is the right size:
//!
//! - A mel value is a sum of non-negative terms (power times non-negative filter weights), so
//!   there is no cancellation and rounding errors stay *relative* to the value itself.
//! - Both sides use the same float32 filter weights, the same float32 samples, an f64 window
//!   and an f64 FFT. librosa then rounds the spectrum to complex64 and sums the filterbank in
//!   float32 (`einsum` over at most ~30 bins), about 30 float32 roundings: under 2e-6 relative.
//!   1e-5 leaves a factor of five for the two FFT libraries' different f64 roundoff.
//! - The FFT's f64 roundoff is absolute (about 1e-16 of the frame's energy), so bands whose
//!   power is 1e-10 of the frame's strongest (the sine's far bands) may differ more in relative
//!   terms; the `1e-7 * max` term covers those without loosening the check on the bands that
//!   carry the signal.
//!
//! Against the reference computed from *float64* samples (librosa given the same values
//! widened), the same tolerance must hold: the samples are exactly representable, so only the
//! float32 storage of librosa's intermediate results differs.

use adaptd::audio::mel::{mel_filterbank, FrontEnd, MelConfig, MelSpectrogram, PadMode};
use adaptd::audio::wav::{read_file, WavLimits};
use serde_json::Value;
use std::path::PathBuf;

/// Where the reference script keeps its JSON and WAVs.
fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/audio")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(reference_dir().join("mel_reference.json"))
        .expect("reference/mel_reference.json (run reference/make_mel_reference.py)");
    serde_json::from_str(&text).expect("valid JSON")
}

const RTOL: f64 = 1e-5;
const ATOL_OF_MAX: f64 = 1e-7;

/// Largest errors seen, for the report.
#[derive(Default, Debug)]
struct Err {
    max_abs: f64,
    max_rel: f64,
    /// Relative error over the bands within 60 dB of their frame's strongest.
    max_rel_strong: f64,
    worst_ratio: f64,
    values: usize,
}

impl Err {
    fn check(&mut self, what: &str, got: &[f32], want: &[Value]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let want: Vec<f64> = want.iter().map(|v| v.as_f64().unwrap()).collect();
        let frame_max = want.iter().cloned().fold(0.0, f64::max);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let g = f64::from(*g);
            let w = f64::from(*w as f32);
            let diff = (g - w).abs();
            let allowed = RTOL * w.abs() + ATOL_OF_MAX * frame_max;
            assert!(
                diff <= allowed,
                "{what}: band {i}: rust {g} vs librosa {w} (diff {diff:.3e} > {allowed:.3e})"
            );
            self.max_abs = self.max_abs.max(diff);
            if w != 0.0 {
                self.max_rel = self.max_rel.max(diff / w.abs());
            }
            if w.abs() >= 1e-6 * frame_max && w != 0.0 {
                self.max_rel_strong = self.max_rel_strong.max(diff / w.abs());
            }
            if allowed > 0.0 {
                self.worst_ratio = self.worst_ratio.max(diff / allowed);
            }
            self.values += 1;
        }
    }
}

fn sine440() -> Vec<f32> {
    (0..16000)
        .map(|n| (0.5 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / 16000.0).sin()) as f32)
        .collect()
}

fn wav(name: &str) -> Vec<f32> {
    let w = read_file(&reference_dir().join(name), &WavLimits::default()).unwrap();
    assert_eq!(w.info.sample_rate, 16000);
    w.samples
}

fn input(name: &str) -> Vec<f32> {
    match name {
        "sine440" => sine440(),
        "noise" => wav("noise_16k.wav"),
        "speech" => wav("speech_slt_16k.wav"),
        other => panic!("unknown input {other}"),
    }
}

fn config(mode: &str) -> MelConfig {
    let mut c = MelConfig::resemblyzer();
    c.pad_mode = match mode {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        other => panic!("unknown pad mode {other}"),
    };
    c
}

#[test]
fn filterbank_matches_librosa() {
    let r = reference();
    let fb = mel_filterbank(&MelConfig::resemblyzer());
    let mut max_diff = 0f32;
    for (m, band) in r["filterbank"].as_array().unwrap().iter().enumerate() {
        let first = band["first"].as_u64().unwrap() as usize;
        let weights = band["weights"].as_array().unwrap();
        assert!(
            fb[m][..first].iter().all(|w| *w == 0.0),
            "band {m} starts early"
        );
        for (k, w) in weights.iter().enumerate() {
            let want = w.as_f64().unwrap() as f32;
            let got = fb[m][first + k];
            assert!(
                (got - want).abs() <= 2.0 * f32::EPSILON * want.abs(),
                "band {m} bin {}: {got} vs {want}",
                first + k
            );
            max_diff = max_diff.max((got - want).abs());
        }
        assert!(fb[m][first + weights.len()..].iter().all(|w| *w == 0.0));
    }
    eprintln!("filterbank: max |diff| {max_diff:.3e}");
}

#[test]
fn spectrograms_match_librosa() {
    let r = reference();
    let mut report = Vec::new();
    for (name, entry) in r["inputs"].as_object().unwrap() {
        let x = input(name);
        assert_eq!(x.len() as u64, entry["n_samples"].as_u64().unwrap());
        for (mode, m) in entry["modes"].as_object().unwrap() {
            let mut mel = MelSpectrogram::new(&config(mode)).unwrap();
            let out = mel.compute(&x).unwrap();
            let shape: Vec<u64> = m["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(shape, vec![out.frames as u64, 40], "{name} {mode}: shape");
            for which in ["f32_input", "f64_input"] {
                let mut err = Err::default();
                for (t, want) in m["frames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(m[which].as_array().unwrap())
                {
                    let t = t.as_u64().unwrap() as usize;
                    err.check(
                        &format!("{name} {mode} {which} frame {t}"),
                        out.frame(t),
                        want.as_array().unwrap(),
                    );
                }
                report.push(format!(
                    "{name:8} {mode:8} {which}: {} values, max abs {:.3e}, max rel {:.3e} \
                     ({:.3e} within 60 dB of the frame max), worst/allowed {:.3}",
                    err.values, err.max_abs, err.max_rel, err.max_rel_strong, err.worst_ratio
                ));
            }
        }
    }
    for line in report {
        eprintln!("{line}");
    }
}

#[test]
fn shorter_than_one_window_matches_librosa() {
    let r = reference();
    let short = &r["short"];
    let start = short["start"].as_u64().unwrap() as usize;
    let n = short["n_samples"].as_u64().unwrap() as usize;
    let x = &input("speech")[start..start + n];
    for (mode, m) in short["modes"].as_object().unwrap() {
        let out = MelSpectrogram::new(&config(mode))
            .unwrap()
            .compute(x)
            .unwrap();
        let values = m["values"].as_array().unwrap();
        assert_eq!(out.frames, values.len(), "{mode}");
        let mut err = Err::default();
        for (t, want) in values.iter().enumerate() {
            err.check(
                &format!("short {mode} frame {t}"),
                out.frame(t),
                want.as_array().unwrap(),
            );
        }
        eprintln!(
            "short {mode}: {} values, max rel {:.3e}",
            err.values, err.max_rel
        );
    }
}

#[test]
fn resemblyzer_utterance_path_matches() {
    let r = reference();
    let speech = input("speech");
    let mut front = FrontEnd::new(&MelConfig::resemblyzer()).unwrap();
    for (label, u) in r["utterances"].as_object().unwrap() {
        let n = u["n_samples"].as_u64().unwrap() as usize;
        let scale = u["scale"].as_f64().unwrap() as f32;
        let x: Vec<f32> = if scale == 1.0 {
            speech[..n].to_vec()
        } else {
            speech[..n].iter().map(|v| v * scale).collect()
        };
        let w = front.windows(&x).unwrap();
        let windows: Vec<(usize, usize)> = u["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_u64().unwrap() as usize,
                    p[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        let got: Vec<(usize, usize)> = w.ranges.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(got, windows, "{label}: windows");
        assert_eq!(
            w.padded_len as u64,
            u["padded_len"].as_u64().unwrap(),
            "{label}"
        );
        let mel_frames = front.mel().n_frames(w.padded_len);
        assert_eq!(
            mel_frames as u64,
            u["mel_frames"].as_u64().unwrap(),
            "{label}"
        );
        let shape: Vec<usize> = u["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(w.shape().to_vec(), shape, "{label}: shape");
        // Resemblyzer only ever raises the level (increase_only=True).
        let want_gain = u["gain_db"].as_f64().unwrap();
        match w.gain_db {
            Some(g) => assert!(
                want_gain >= 0.0 && (f64::from(g) - want_gain).abs() < 1e-3,
                "{label}: gain {g} vs {want_gain}"
            ),
            None => assert!(want_gain < 0.0, "{label}: no gain, want {want_gain}"),
        }
        let picks: Vec<usize> = u["picked_frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let mut err = Err::default();
        for (wi, frames) in u["values"].as_array().unwrap().iter().enumerate() {
            for (t, want) in picks.iter().zip(frames.as_array().unwrap()) {
                let got = &w.window(wi)[t * 40..(t + 1) * 40];
                err.check(
                    &format!("{label} window {wi} frame {t}"),
                    got,
                    want.as_array().unwrap(),
                );
            }
        }
        eprintln!(
            "{label}: {n} samples, {} dB gain, windows {got:?}, padded {}, mel frames \
             {mel_frames}; {} values, max abs {:.3e}, max rel {:.3e} ({:.3e} within 60 dB of \
             the frame max), worst/allowed {:.3}",
            w.gain_db.unwrap_or(0.0),
            w.padded_len,
            err.values,
            err.max_abs,
            err.max_rel,
            err.max_rel_strong,
            err.worst_ratio
        );
    }
}

#[test]
fn frame_counts_of_short_clips() {
    // Straight spectrogram: 1 + n / 160 frames. Through Resemblyzer's path: one window of 160
    // frames, the waveform zero-padded to 25600 samples (161 frames computed).
    let mel = MelSpectrogram::new(&MelConfig::resemblyzer()).unwrap();
    assert_eq!(mel.n_frames(16000), 101);
    assert_eq!(mel.n_frames(4800), 31);
    let speech = input("speech");
    let mut front = FrontEnd::new(&MelConfig::resemblyzer()).unwrap();
    for n in [16000usize, 4800] {
        let w = front.windows(&speech[..n]).unwrap();
        assert_eq!(w.shape(), [1, 160, 40]);
        assert_eq!(w.padded_len, 25600);
    }
}
