//! The audio stages together on real speech (two TTS voices: flite's `slt`, built from a real
//! speaker's recordings, at 16 kHz, and espeak-ng at 22.05 kHz), as a file and as a pipe.

use adaptd::audio::mel::{FrontEnd, MelConfig};
use adaptd::audio::pcm::{Header, PcmFormat, PcmReader};
use adaptd::audio::resample::{into_16k, StreamResampler};
use adaptd::audio::vad::{EndReason, Vad, VadConfig};
use adaptd::audio::wav::{encode_pcm16, read_bytes, read_file, WavLimits};
use adaptd::audio::{decode_16k, load_16k};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference/audio")
        .join(name)
}

/// Deterministic white noise at `dbfs` RMS.
fn noise(n: usize, dbfs: f64, seed: u64) -> Vec<f32> {
    let rms = 10f64.powf(dbfs / 20.0);
    let mut s = seed.max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            (u * rms * 3f64.sqrt()) as f32
        })
        .collect()
}

/// First and last sample of the clean clip's 10 ms frames above -45 dBFS: where the voice is.
fn voiced_extent(x: &[f32]) -> (usize, usize) {
    let loud: Vec<usize> = x
        .chunks(160)
        .enumerate()
        .filter(|(_, c)| {
            let p = c.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / c.len() as f64;
            10.0 * p.max(1e-20).log10() > -45.0
        })
        .map(|(i, _)| i)
        .collect();
    (loud[0] * 160, (loud[loud.len() - 1] + 1) * 160)
}

/// `noise(lead) speech noise(gap) speech noise(tail)`, with the true voiced spans.
fn scene(
    speech: &[f32],
    noise_dbfs: f64,
    lead: usize,
    gap: usize,
    tail: usize,
) -> (Vec<f32>, Vec<(usize, usize)>) {
    let total = lead + speech.len() + gap + speech.len() + tail;
    let mut x = noise(total, noise_dbfs, 42);
    let (a, b) = voiced_extent(speech);
    let mut truth = Vec::new();
    for at in [lead, lead + speech.len() + gap] {
        for (d, s) in x[at..].iter_mut().zip(speech) {
            *d += s;
        }
        truth.push((at + a, at + b));
    }
    (x, truth)
}

fn run_vad(x: &[f32], chunk: usize) -> Vec<adaptd::audio::vad::Utterance> {
    let mut vad = Vad::new(VadConfig::default()).unwrap();
    let mut out = Vec::new();
    for c in x.chunks(chunk) {
        out.extend(vad.push(c));
    }
    out.extend(vad.flush());
    out
}

#[test]
fn vad_finds_each_sentence_in_noise() {
    let speech = read_file(&data("speech_slt_16k.wav"), &WavLimits::default())
        .unwrap()
        .samples;
    // The clip is at -16 dBFS: SNR 34 dB and 19 dB.
    for (noise_dbfs, chunk) in [
        (-50.0, 160usize),
        (-50.0, 1000),
        (-50.0, 4096),
        (-35.0, 1000),
    ] {
        let (x, truth) = scene(&speech, noise_dbfs, 16000, 24000, 16000);
        let utts = run_vad(&x, chunk);
        assert_eq!(
            utts.len(),
            2,
            "chunk {chunk}: {:?}",
            utts.iter()
                .map(|u| (u.start, u.samples.len()))
                .collect::<Vec<_>>()
        );
        for (u, (a, b)) in utts.iter().zip(&truth) {
            let (s, e) = (u.start as i64, u.start as i64 + u.samples.len() as i64);
            let (a, b) = (*a as i64, *b as i64);
            eprintln!(
                "utterance {:.3}-{:.3} s, voice {:.3}-{:.3} s, snr {:.1} dB, {:?}",
                s as f64 / 16e3,
                e as f64 / 16e3,
                a as f64 / 16e3,
                b as f64 / 16e3,
                u.snr_db,
                u.end_reason
            );
            // Starts no later than 50 ms into the voice and at most the pre-roll (+ onset)
            // before; ends no earlier than 50 ms before its end, at most post-roll + a frame after.
            assert!(s <= a + 800 && s >= a - 2400, "start {s} vs voice {a}");
            assert!(e >= b - 800 && e <= b + 2400, "end {e} vs voice {b}");
            assert_eq!(u.end_reason, EndReason::Silence);
            assert!(u.snr_db > 15.0);
        }
    }
}

#[test]
fn espeak_22k_through_resampler_vad_and_front_end() {
    let path = data("speech_espeak_22k.wav");
    let wav = read_file(&path, &WavLimits::default()).unwrap();
    assert_eq!(wav.info.sample_rate, 22050);
    let speech16 = load_16k(&path, &WavLimits::default()).unwrap();
    assert_eq!(speech16.len(), (wav.samples.len() * 16000).div_ceil(22050));
    // The same through the byte path.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        decode_16k(&bytes, "espeak", &WavLimits::default()).unwrap(),
        speech16
    );

    // Stream at 22.05 kHz: resample in chunks, gate, then the front end.
    let mut stream22 = noise(22050, -50.0, 3);
    let lead = stream22.len();
    stream22.extend(
        wav.samples
            .iter()
            .zip(noise(wav.samples.len(), -50.0, 4))
            .map(|(a, b)| a + b),
    );
    stream22.extend(noise(22050, -50.0, 5));
    let mut rs = StreamResampler::new(22050, 16000).unwrap();
    let mut vad = Vad::new(VadConfig::default()).unwrap();
    let mut utts = Vec::new();
    for c in stream22.chunks(1103) {
        let x = rs.push(c).unwrap();
        utts.extend(vad.push(&x));
    }
    utts.extend(vad.push(&rs.flush().unwrap()));
    utts.extend(vad.flush());
    assert_eq!(utts.len(), 1, "{:?}", vad.stats());
    let (a, _) = voiced_extent(&speech16);
    let voice_start = (lead * 16000 / 22050 + a) as i64;
    assert!(
        (utts[0].start as i64 - voice_start).abs() < 2400,
        "{} vs {voice_start}",
        utts[0].start
    );
    let mut front = FrontEnd::new(&MelConfig::resemblyzer()).unwrap();
    let w = front.windows(&utts[0].samples).unwrap();
    assert_eq!(w.shape(), [1, 160, 40]);
    assert!(w.data.iter().all(|v| v.is_finite() && *v >= 0.0));
}

#[test]
fn a_pipe_gives_the_same_samples_as_the_file() {
    let path = data("speech_slt_16k.wav");
    let file = read_file(&path, &WavLimits::default()).unwrap().samples;
    let bytes = std::fs::read(&path).unwrap();
    // arecord without -t raw: a WAV header, then the samples; read in awkward pieces.
    struct Pipe(Vec<u8>, usize, usize);
    impl std::io::Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.2 += 1;
            let n = [1usize, 333, 2, 4097][self.2 % 4]
                .min(buf.len())
                .min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }
    let fmt = PcmFormat {
        sample_rate: 16000,
        channels: 1,
    };
    let mut r = PcmReader::new(Pipe(bytes.clone(), 0, 0), fmt, 1600, Header::Detect).unwrap();
    assert!(r.had_wav_header());
    let mut piped = Vec::new();
    while let Some(c) = r.read_chunk().unwrap() {
        piped.extend(c);
    }
    assert_eq!(piped, file);
    // Raw (`arecord -t raw`): the bytes after the 44-byte header.
    let mut r = PcmReader::new(Pipe(bytes[44..].to_vec(), 0, 0), fmt, 1600, Header::Raw).unwrap();
    let raw: Vec<f32> = (&mut r).flat_map(|c| c.unwrap()).collect();
    assert_eq!(raw, file);
}

#[test]
fn wav_round_trip_of_real_speech_is_exact() {
    let path = data("speech_slt_16k.wav");
    let w = read_file(&path, &WavLimits::default()).unwrap();
    let again = read_bytes(
        &encode_pcm16(&w.samples, 16000),
        "again",
        &WavLimits::default(),
    )
    .unwrap();
    assert_eq!(again.samples, w.samples);
    assert_eq!(into_16k(w.samples.clone(), 16000).unwrap(), w.samples);
}
