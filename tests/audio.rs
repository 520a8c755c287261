//! Speaker adaptation through the CLI, on real speech: Debian's `flite` voices `awb`, `rms`
//! and `slt` (each built from one real speaker's recordings) say different sentences; a few
//! clips per voice are enrolled with `adaptd samples import`, a head is trained, and held-out
//! sentences are classified. Plus the speaker encoder itself (tract on the GE2E model, after
//! the Rust mel front end) and bad WAV input. Needs `flite` and `sox` (Debian:
//! `apt-get install flite sox`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const VOICES: [&str; 3] = ["awb", "rms", "slt"];
const SENTENCES: [&str; 6] = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please turn on the kitchen lights and close the garage door.",
    "Tomorrow it will rain in the morning and clear up by the evening.",
    "I left my keys on the table next to the window this afternoon.",
    "Could you remind me to call the plumber at nine o'clock?",
    "The train to the city leaves from platform four every hour.",
];

/// `flite -voice VOICE -t TEXT -o FILE` (16-bit mono WAV at the voice's own rate).
fn say(voice: &str, text: &str, out: &Path) {
    let status = Command::new("flite")
        .args(["-voice", voice, "-t", text, "-o"])
        .arg(out)
        .status()
        .expect("run flite (apt-get install flite)");
    assert!(status.success(), "flite -voice {voice}");
}

/// Enrolment clips `dir/<voice>/<i>.wav` for the first `n` sentences, test clips for the rest.
fn corpus(dir: &Path, n: usize) -> (PathBuf, Vec<(String, PathBuf)>) {
    let enrol = dir.join("enrol");
    let mut tests = Vec::new();
    for voice in VOICES {
        std::fs::create_dir_all(enrol.join(voice)).expect("mkdir");
        for (i, text) in SENTENCES.iter().enumerate() {
            if i < n {
                say(voice, text, &enrol.join(voice).join(format!("{i}.wav")));
            } else {
                let f = dir.join(format!("test-{voice}-{i}.wav"));
                say(voice, text, &f);
                tests.push((voice.to_owned(), f));
            }
        }
    }
    (enrol, tests)
}

#[test]
fn enrol_three_voices_train_and_identify_held_out_sentences() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (enrol, tests) = corpus(tmp.path(), 4);
    let state = tmp.path().join("state");
    let st = state.to_str().expect("utf-8 path");
    let base = ["--model", "resemblyzer-ge2e", "--state-dir", st];

    let o = run(&[
        &["samples", "import", enrol.to_str().expect("path")],
        &base[..],
    ]
    .concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).matches("added #").count(), 12, "{}", stdout(&o));
    let o = run(&[&["train", "--json"], &base[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));

    let mut args: Vec<&str> = vec!["classify"];
    args.extend_from_slice(&base);
    let paths: Vec<String> = tests.iter().map(|(_, p)| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per clip"))
        .collect();
    assert_eq!(lines.len(), tests.len());
    let correct = lines
        .iter()
        .zip(&tests)
        .filter(|(got, (voice, _))| got["label"] == voice.as_str())
        .count();
    // Six held-out sentences, two per voice, four enrolment clips per voice: GE2E tells
    // these three speakers apart (the shared README measured 97 % over 13 voices from one
    // clip each); allow one miss so a borderline clip does not make the test flaky.
    assert!(
        correct >= tests.len() - 1,
        "{correct}/{}: {lines:?}",
        tests.len()
    );
}

/// `SENTENCES[i]` said by `voice`, at 16 kHz.
fn spoken_clip(dir: &Path, voice: &str, i: usize) -> Vec<f32> {
    let f = dir.join(format!("{voice}{i}.wav"));
    say(voice, SENTENCES[i], &f);
    adaptd::audio::load_16k(&f, &Default::default()).expect("read the clip")
}

fn speaker_encoder() -> adaptd::audio::model::AudioModel {
    use adaptd::model::{ModelDirs, ResolvedModel};
    let dirs = ModelDirs::new(Some(&models_dir()), None);
    let model = ResolvedModel::resolve("resemblyzer-ge2e", &dirs).expect("model");
    adaptd::audio::model::AudioModel::load(model).expect("load the speaker encoder")
}

/// The encoder on its own: two sentences of one voice are closer than the same sentence by
/// two voices.
#[test]
fn voice_prints_separate_speakers_not_sentences() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clip = |voice: &str, i: usize| spoken_clip(tmp.path(), voice, i);
    let mut am = speaker_encoder();
    let mut e = |s: &[f32]| am.embed(s).expect("embed");
    let (slt0, slt1, rms0) = (e(&clip("slt", 0)), e(&clip("slt", 1)), e(&clip("rms", 0)));
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let norm = cos(&slt0, &slt0).sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "L2-normalised: {norm}");
    let same = cos(&slt0, &slt1);
    let other = cos(&slt0, &rms0);
    assert!(
        same > other + 0.1,
        "same voice {same:.3} vs other voice {other:.3}"
    );
}

/// The encoder's LSTM must start from zero for every utterance: the same clip gives the same
/// voice print whatever was embedded before it (tract's Scan keeps its hidden state between
/// runs unless the state is renewed; before that fix a clip's score moved by 0.08 with the
/// clips before it and speakers were swapped).
#[test]
fn a_voice_print_does_not_depend_on_the_clips_before_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clip = |voice: &str, i: usize| spoken_clip(tmp.path(), voice, i);
    let mut am = speaker_encoder();
    let (a, b) = (clip("slt", 2), clip("awb", 3));
    let first = am.embed(&a).expect("embed");
    am.embed(&b).expect("embed");
    let again = am.embed(&a).expect("embed");
    let diff = max_abs_diff(&first, &again);
    assert!(
        diff < 1e-6,
        "the same clip embedded twice differs by {diff}"
    );
}

#[test]
fn bad_wav_input_is_a_clear_error_or_handled() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let st = tmp.path().join("state");
    let st = st.to_str().expect("utf-8 path");
    let good = tmp.path().join("good.wav");
    say("slt", SENTENCES[0], &good);
    let bytes = std::fs::read(&good).expect("read");
    let write = |name: &str, data: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, data).expect("write");
        p
    };
    let add = |file: &Path| {
        run(&[
            "samples",
            "add",
            "--model",
            "resemblyzer-ge2e",
            "--state-dir",
            st,
            "--label",
            "slt",
            file.to_str().expect("path"),
        ])
    };
    for (name, data, needle) in [
        ("truncated.wav", &bytes[..30], "truncated"),
        (
            "text.wav",
            &b"this is not a wav file at all"[..],
            "not a WAV",
        ),
        ("empty.wav", &b""[..], "empty"),
    ] {
        let o = add(&write(name, data));
        let err = stderr(&o);
        assert_ne!(o.status.code(), Some(0), "{name} must not be added");
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "{name}: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    // Shorter than one 1.6 s window: padded, as Resemblyzer does; 8-bit and 96 kHz are
    // converted. Each is added.
    let short = tmp.path().join("short.wav");
    say("slt", "Hi.", &short);
    let conv = |args: &[&str], out: &str| {
        let p = tmp.path().join(out);
        let ok = Command::new("sox")
            .arg(&good)
            .args(args)
            .arg(&p)
            .status()
            .expect("run sox (apt-get install sox)");
        assert!(ok.success(), "sox {args:?}");
        p
    };
    let files = [
        short,
        conv(&["-b", "8", "-e", "unsigned-integer"], "u8.wav"),
        conv(&["-r", "96000"], "96k.wav"),
    ];
    for f in &files {
        let o = add(f);
        assert!(o.status.success(), "{}: {}", f.display(), stderr(&o));
    }
}
