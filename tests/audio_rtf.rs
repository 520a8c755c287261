//! Real-time factor of the audio front end on one core (time / audio duration), for 10 s of
//! speech. Ignored by default (timing, not correctness); run in release mode:
//!
//! `taskset -c 0 cargo test --release --test audio_rtf -- --ignored --nocapture`

use adaptd::audio::mel::{FrontEnd, MelConfig};
use adaptd::audio::resample::{resample, StreamResampler};
use adaptd::audio::vad::{Vad, VadConfig};
use adaptd::audio::wav::{encode_pcm16, read_bytes, read_file, WavLimits};
use std::path::PathBuf;
use std::time::Instant;

fn ten_seconds_of_speech() -> Vec<f32> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/audio/speech_slt_16k.wav");
    let one = read_file(&path, &WavLimits::default()).unwrap().samples;
    one.iter().cycle().take(160_000).copied().collect()
}

/// Median seconds per call over `runs` calls (after one warm-up).
fn time<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[runs / 2]
}

#[test]
#[ignore = "timing: run in release mode with --ignored --nocapture"]
fn real_time_factor_for_ten_seconds() {
    let x16 = ten_seconds_of_speech();
    let secs = x16.len() as f64 / 16000.0;
    let x48 = resample(&x16, 16000, 48000).unwrap();
    let wav48 = encode_pcm16(&x48, 48000);
    let mut front = FrontEnd::new(&MelConfig::resemblyzer()).unwrap();
    let mut rows = Vec::new();

    let t = time(21, || {
        let w = front.windows(&x16).unwrap();
        assert_eq!(w.count, 12);
    });
    rows.push(("mel front end (volume, 12 windows of 160x40)", t));

    let t = time(21, || {
        let m = front.mel().compute(&x16).unwrap();
        assert_eq!(m.frames, 1001);
    });
    rows.push(("  of which spectrogram alone (1001 frames)", t));

    let t = time(11, || {
        let w = read_bytes(&wav48, "bench", &WavLimits::default()).unwrap();
        assert_eq!(w.samples.len(), 480_000);
    });
    rows.push(("WAV decode, 48 kHz 16-bit", t));

    let t = time(11, || {
        let y = resample(&x48, 48000, 16000).unwrap();
        assert_eq!(y.len(), 160_000);
    });
    rows.push(("resample 48 -> 16 kHz, whole clip", t));

    let t = time(11, || {
        let mut r = StreamResampler::new(48000, 16000).unwrap();
        let mut n = 0;
        for c in x48.chunks(4800) {
            n += r.push(c).unwrap().len();
        }
        n += r.flush().unwrap().len();
        assert_eq!(n, 160_000);
    });
    rows.push(("resample 48 -> 16 kHz, streamed in 100 ms chunks", t));

    let t = time(21, || {
        let mut vad = Vad::new(VadConfig::default()).unwrap();
        for c in x16.chunks(1600) {
            vad.push(c);
        }
        vad.flush();
    });
    rows.push(("VAD, 100 ms chunks", t));

    eprintln!("real-time factor on one core, {secs} s of audio (median):");
    for (what, t) in rows {
        eprintln!("  {what:52} {:8.3} ms  RTF {:.5}", t * 1e3, t / secs);
    }
}

/// Front end plus speaker encoder (tract) on 10 s of speech, one core, against onnxruntime
/// (Python, from PyPI, one thread) on the same 160x40 windows. Needs the models fetched and
/// `pip install onnxruntime numpy`:
///
/// `taskset -c 0 cargo test --release --test audio_rtf -- --ignored --nocapture encoder`
#[test]
#[ignore = "timing: run in release mode with --ignored --nocapture"]
fn encoder_real_time_factor_against_onnxruntime() {
    use adaptd::audio::model::AudioModel;
    use adaptd::model::{ModelDirs, ResolvedModel};
    let x16 = ten_seconds_of_speech();
    let secs = x16.len() as f64 / 16000.0;
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let dirs = ModelDirs::new(Some(&models), None);
    let model = ResolvedModel::resolve("resemblyzer-ge2e", &dirs).expect("model fetched");
    let onnx = model.model_path.clone();
    let mut am = AudioModel::load(model).expect("load");
    let mut front = FrontEnd::new(&MelConfig::resemblyzer()).unwrap();
    let windows = front.windows(&x16).unwrap();
    let front_t = time(11, || {
        front.windows(&x16).unwrap();
    });
    let total = time(11, || {
        am.embed(&x16).unwrap();
    });
    let per_window = (total - front_t) / windows.count as f64;

    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("window.npy");
    adaptd::npy::write(&npy, &[1, 160, 40], windows.window(0)).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/ort_reference.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["--threads", "1", "--iters", "100", "--model"])
        .arg(&onnx)
        .arg("--input")
        .arg(&npy)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let ort: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    let ort_ms = ort["median_ms"].as_f64().expect("median_ms");
    let n = windows.count as f64;
    eprintln!("speaker encoder, {secs} s of speech = {n} windows of 160x40, one core (median):");
    eprintln!(
        "  adaptd (front end + tract)   {:8.2} ms  RTF {:.4}",
        total * 1e3,
        total / secs
    );
    eprintln!("  tract per window             {:8.2} ms", per_window * 1e3);
    eprintln!(
        "  onnxruntime per window       {ort_ms:8.2} ms  (front end + ort: RTF {:.4})",
        (front_t + n * ort_ms / 1e3) / secs
    );
    eprintln!(
        "  tract / onnxruntime          {:8.2}x",
        per_window * 1e3 / ort_ms
    );
}
