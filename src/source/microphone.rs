//! Microphones: live audio for `adaptd run`: PCM from a sound card ([`crate::source::alsa`]),
//! standard input, a FIFO or a file, cut into utterances on a capture thread of its own.
//!
//! The chain is the one the module docs of [`crate::audio`] draw for a microphone:
//! [`PcmReader`] (raw S16_LE, or a WAV header first) -> [`StreamResampler`] to 16 kHz ->
//! [`Vad`] -> whole utterances, handed to the inference thread through a small
//! [`bounded_slot`]. The capture thread does no model work, so a slow model never makes the
//! pipe back up (which would make `arecord` report overruns): at worst the oldest queued
//! utterance is dropped and counted.
//!
//! A regular file is read at its real-time rate, so a recording replays like the live
//! microphone it stands for; a pipe or FIFO is read as fast as it delivers.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::audio::pcm::{Header, PcmError, PcmFormat, PcmReader};
use crate::audio::resample::{ResampleError, StreamResampler, TARGET_RATE};
use crate::audio::vad::{Utterance, Vad, VadConfig, VadError};
use crate::source::alsa::{AlsaError, AlsaReader};
use crate::source::latest::{bounded_slot, LatestReceiver, LatestSender};
use crate::source::stats::{SourceState, SourceStats};
use crate::source::StopSignal;

/// Utterances that may wait for the model: 16 x up to 10 s is bounded memory (10 MB) and more
/// than any burst a household produces between two inferences.
pub const QUEUE: usize = 16;

/// Frames per read: 100 ms at 16 kHz, so the gate sees speech within a tenth of a second.
const CHUNK_FRAMES: usize = 1600;

/// One utterance, ready for the speaker encoder.
#[derive(Debug, Clone)]
pub struct UtteranceMsg {
    /// 1-based count of utterances delivered.
    pub seq: u64,
    /// Wall-clock time at which the utterance ended.
    pub unix_ms: i64,
    /// Start, seconds from the start of the stream.
    pub start_s: f64,
    /// Mono samples at [`TARGET_RATE`].
    pub samples: Vec<f32>,
    /// Mean level of its voiced frames, dBFS.
    pub level_dbfs: f32,
    /// Level above the noise floor, dB.
    pub snr_db: f32,
}

impl UtteranceMsg {
    /// Length in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / f64::from(TARGET_RATE)
    }
}

/// Where a microphone's audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioInput {
    /// `-` for standard input, else a FIFO or a file of S16_LE PCM (or WAV).
    Pipe(PathBuf),
    /// An ALSA capture device by name.
    Alsa(String),
}

/// Where the audio comes from and what raw PCM in it means.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub input: AudioInput,
    /// Format of raw PCM (a WAV header in the stream replaces it); for ALSA, what is asked
    /// of the device.
    pub format: PcmFormat,
}

impl StreamConfig {
    /// What `state` shows as the source.
    pub fn describe(&self) -> String {
        let (rate, ch) = (self.format.sample_rate, self.format.channels);
        match &self.input {
            AudioInput::Pipe(path) if path == Path::new("-") => {
                format!("audio stdin ({rate} Hz, {ch} ch)")
            }
            AudioInput::Pipe(path) => format!("audio {} ({rate} Hz, {ch} ch)", path.display()),
            AudioInput::Alsa(device) => AlsaReader::describe(device, rate, ch),
        }
    }

    /// Refuses a source that cannot work now, with what to do: a path that is missing or a
    /// folder (a FIFO is only opened by the capture thread: opening blocks until a writer
    /// comes), or ALSA without its library. A missing ALSA device is not refused: a USB
    /// microphone may be plugged in later, and the capture thread waits for it.
    pub fn check(&self) -> Result<(), MicrophoneError> {
        let path = match &self.input {
            AudioInput::Alsa(_) => {
                return crate::source::alsa::Library::get()
                    .map(|_| ())
                    .map_err(MicrophoneError::Alsa)
            }
            AudioInput::Pipe(path) => path,
        };
        if path == Path::new("-") {
            return Ok(());
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Err(MicrophoneError::IsFolder { path: path.clone() }),
            Ok(_) => Ok(()),
            Err(source) => Err(MicrophoneError::Missing {
                path: path.clone(),
                source,
            }),
        }
    }
}

/// Why a microphone's source cannot be used; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum MicrophoneError {
    /// The source gives pictures, not sound.
    #[error(
        "source kind = {0:?} gives pictures; a microphone needs kind = \"alsa\" (a sound \
         card) or kind = \"audio\" (a pipe)"
    )]
    NotAudio(&'static str),
    /// ALSA's library is missing.
    #[error(transparent)]
    Alsa(crate::source::alsa::LoadError),
    /// The source's own settings are wrong (each problem as config validation words it).
    #[error("invalid source: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The path is a folder.
    #[error(
        "{}: is a folder; a microphone's source (kind = \"audio\") reads one stream of PCM \
         (\"-\" for standard input, a FIFO or a file)", path.display()
    )]
    IsFolder { path: PathBuf },
    /// The path does not exist or cannot be read.
    #[error(
        "{}: cannot open ({source}); create the FIFO with `mkfifo` before starting adaptd, \
         or check the microphone's source path", path.display()
    )]
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The capture thread could not be started.
    #[error("cannot start the audio capture thread: {0}")]
    Thread(std::io::Error),
}

/// Why capture stopped early; the text becomes the microphone's `failed` state.
#[derive(Debug, thiserror::Error)]
enum CaptureError {
    #[error(
        "{}: cannot open ({source}); check [source].path and the permissions of the user \
         running adaptd", path.display()
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The stream could not be read, resampled or segmented.
    #[error("{name}: {problem}")]
    Stream {
        name: String,
        problem: StreamProblem,
    },
    /// The ALSA device cannot be used, and waiting will not change that.
    #[error(transparent)]
    Alsa(#[from] AlsaError),
}

/// What went wrong inside the stream (each stage has its own error type).
#[derive(Debug, thiserror::Error)]
enum StreamProblem {
    #[error(transparent)]
    Pcm(#[from] PcmError),
    #[error(transparent)]
    Resample(#[from] ResampleError),
    #[error(transparent)]
    Vad(#[from] VadError),
}

/// Starts the capture thread. It ends at the end of the stream (state `ended`), on a read
/// error (state `failed`, the message says what happened), or once `stop` is set and the
/// current read returns; the receiver then reports `Disconnected`.
pub fn spawn(
    cfg: StreamConfig,
    stats: Arc<SourceStats>,
    stop: StopSignal,
) -> std::io::Result<(JoinHandle<()>, LatestReceiver<UtteranceMsg>)> {
    let (tx, rx) = bounded_slot(QUEUE);
    let handle = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            info!(source = %cfg.describe(), "audio capture started");
            match capture(&cfg, &stats, &stop, &tx) {
                Ok(n) => {
                    info!(utterances = n, "audio stream ended");
                    stats.set_state(SourceState::Ended);
                }
                Err(error) => {
                    warn!("audio capture failed: {error}");
                    stats.set_state(SourceState::Failed {
                        error: error.to_string(),
                    });
                }
            }
        })?;
    Ok((handle, rx))
}

/// The capture loop; returns the number of utterances delivered.
fn capture(
    cfg: &StreamConfig,
    stats: &Arc<SourceStats>,
    stop: &StopSignal,
    tx: &LatestSender<UtteranceMsg>,
) -> Result<u64, CaptureError> {
    match &cfg.input {
        AudioInput::Pipe(path) => capture_pipe(cfg, path, stats, stop, tx),
        AudioInput::Alsa(device) => capture_alsa(cfg, device, stats, stop, tx),
    }
}

/// Wraps a stage's error with the stream's name, for the microphone's `failed` state.
fn stream_error(cfg: &StreamConfig) -> impl Fn(StreamProblem) -> CaptureError + Copy + '_ {
    move |problem| CaptureError::Stream {
        name: cfg.describe(),
        problem,
    }
}

/// A sound card: runs until stopped; the reader waits through every absence of the device.
fn capture_alsa(
    cfg: &StreamConfig,
    device: &str,
    stats: &Arc<SourceStats>,
    stop: &StopSignal,
    tx: &LatestSender<UtteranceMsg>,
) -> Result<u64, CaptureError> {
    let err = stream_error(cfg);
    let mut reader = AlsaReader::new(
        device,
        cfg.format.sample_rate,
        cfg.format.channels,
        stats.clone(),
        stop.clone(),
    );
    let mut segmenter: Option<Segmenter<'_>> = None;
    while let Some(chunk) = reader.next_chunk()? {
        let seg = match &mut segmenter {
            Some(seg) => seg,
            None => segmenter.insert(Segmenter::new(chunk.rate, stats, tx).map_err(err)?),
        };
        if !seg.set_rate(chunk.rate).map_err(err)? || !seg.push(&chunk.samples).map_err(err)? {
            break;
        }
    }
    Ok(segmenter.map_or(0, |s| s.delivered))
}

/// A pipe, FIFO or file: runs to the end of the stream.
fn capture_pipe(
    cfg: &StreamConfig,
    path: &Path,
    stats: &SourceStats,
    stop: &StopSignal,
    tx: &LatestSender<UtteranceMsg>,
) -> Result<u64, CaptureError> {
    let err = stream_error(cfg);
    let stdin = path == Path::new("-");
    let (reader, real_time): (Box<dyn Read + Send>, bool) = if stdin {
        let regular = std::fs::metadata("/dev/stdin").is_ok_and(|m| m.is_file());
        (Box::new(std::io::stdin()), regular)
    } else {
        let file = File::open(path).map_err(|source| CaptureError::Open {
            path: path.to_owned(),
            source,
        })?;
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        (Box::new(file), regular)
    };
    let mut pcm = PcmReader::new(reader, cfg.format, CHUNK_FRAMES, Header::Detect)
        .map_err(|e| err(e.into()))?;
    let format = pcm.format();
    if pcm.had_wav_header() {
        info!(
            rate = format.sample_rate,
            channels = format.channels,
            "the stream starts with a WAV header; using its format"
        );
    }
    let mut seg = Segmenter::new(format.sample_rate, stats, tx).map_err(err)?;
    let started = Instant::now();
    let mut read_frames: u64 = 0;
    loop {
        if stop.is_stopped() || tx.is_closed() {
            return Ok(seg.delivered);
        }
        let chunk = match pcm.read_chunk() {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => return Err(err(e.into())),
        };
        if read_frames == 0 {
            stats.set_state(SourceState::Streaming);
        }
        read_frames += chunk.len() as u64;
        if !seg.push(&chunk).map_err(err)? {
            return Ok(seg.delivered);
        }
        if real_time {
            // A recording on disk: hold it to the pace of the microphone it stands for.
            let due = Duration::from_secs_f64(read_frames as f64 / f64::from(format.sample_rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                if !stop.sleep(wait) {
                    return Ok(seg.delivered);
                }
            }
        }
    }
    if read_frames == 0 && stdin && !stop.is_stopped() {
        warn!(
            "stdin closed before any audio arrived; under systemd stdin is /dev/null: use a \
             microphone with kind = \"alsa\", or a FIFO path"
        );
    }
    let delivered = seg.finish().map_err(err)?;
    let dropped = pcm.dropped_bytes();
    if dropped > 0 {
        info!(
            bytes = dropped,
            "the stream ended inside a sample frame; those bytes were dropped"
        );
    }
    Ok(delivered)
}

/// Mono samples at the source's rate -> the model's rate -> the voice gate -> utterances on
/// the slot. Shared by every kind of input.
struct Segmenter<'a> {
    rate: u32,
    resampler: StreamResampler,
    vad: Vad,
    delivered: u64,
    stats: &'a SourceStats,
    tx: &'a LatestSender<UtteranceMsg>,
}

impl<'a> Segmenter<'a> {
    fn new(
        rate: u32,
        stats: &'a SourceStats,
        tx: &'a LatestSender<UtteranceMsg>,
    ) -> Result<Segmenter<'a>, StreamProblem> {
        Ok(Segmenter {
            rate,
            resampler: StreamResampler::new(rate, TARGET_RATE)?,
            vad: Vad::new(VadConfig::default())?,
            delivered: 0,
            stats,
            tx,
        })
    }

    /// A reopened device may give another rate: the resampler's tail goes through at the
    /// old rate, then a new one takes over. `false`: the receiver is gone.
    fn set_rate(&mut self, rate: u32) -> Result<bool, StreamProblem> {
        if rate == self.rate {
            return Ok(true);
        }
        let tail = self.resampler.flush()?;
        self.resampler = StreamResampler::new(rate, TARGET_RATE)?;
        self.rate = rate;
        let utterances = self.vad.push(&tail);
        Ok(self.deliver(utterances))
    }

    /// `false`: the receiver is gone (the daemon is stopping).
    fn push(&mut self, chunk: &[f32]) -> Result<bool, StreamProblem> {
        let resampled = self.resampler.push(chunk)?;
        let utterances = self.vad.push(&resampled);
        Ok(self.deliver(utterances))
    }

    /// End of the stream: the last utterance, even if the stream ended inside it.
    fn finish(mut self) -> Result<u64, StreamProblem> {
        let tail = self.resampler.flush()?;
        let mut last = self.vad.push(&tail);
        last.extend(self.vad.flush());
        self.deliver(last);
        Ok(self.delivered)
    }

    fn deliver(&mut self, utterances: Vec<Utterance>) -> bool {
        for u in utterances {
            self.delivered += 1;
            let msg = UtteranceMsg {
                seq: self.delivered,
                unix_ms: unix_ms(),
                start_s: u.start_secs(TARGET_RATE),
                samples: u.samples,
                level_dbfs: u.level_dbfs,
                snr_db: u.snr_db,
            };
            self.stats.frame_delivered();
            if self.tx.send(msg).is_err() {
                return false;
            }
        }
        true
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// 16-bit PCM bytes: `secs` of a voice-like modulated tone, or silence with a little noise.
    fn pcm(secs: f64, voiced: bool, rate: u32) -> Vec<u8> {
        let n = (secs * f64::from(rate)) as usize;
        let mut out = Vec::with_capacity(n * 2);
        let mut seed = 0x1234_5678u32;
        for i in 0..n {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (f64::from(seed >> 16) / 65536.0 - 0.5) * 0.002;
            let t = i as f64 / f64::from(rate);
            let v = if voiced {
                // 4 "syllables" per second: speech-like energy modulation.
                let env = (0.5 + 0.5 * (2.0 * std::f64::consts::PI * 4.0 * t).sin()).powi(2);
                0.3 * env * (2.0 * std::f64::consts::PI * 180.0 * t).sin() + noise
            } else {
                noise
            };
            let s = (v * 32767.0).clamp(-32768.0, 32767.0) as i16;
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    #[test]
    fn a_file_of_speech_and_silence_gives_its_utterances_then_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("talk.raw");
        let mut f = File::create(&path).expect("create");
        for _ in 0..2 {
            f.write_all(&pcm(1.0, false, 8000)).expect("write");
            f.write_all(&pcm(1.5, true, 8000)).expect("write");
        }
        f.write_all(&pcm(1.0, false, 8000)).expect("write");
        drop(f);
        let stats = SourceStats::new();
        let cfg = StreamConfig {
            input: AudioInput::Pipe(path),
            format: PcmFormat {
                sample_rate: 8000,
                channels: 1,
            },
        };
        cfg.check().expect("a file is fine");
        let (handle, rx) = spawn(cfg, stats.clone(), StopSignal::new()).expect("spawn");
        let mut got = Vec::new();
        while let Ok(u) = rx.recv_timeout(Duration::from_secs(20)) {
            got.push(u);
        }
        handle.join().expect("capture thread");
        assert_eq!(
            got.len(),
            2,
            "two utterances: {:?}",
            got.iter().map(|u| u.start_s).collect::<Vec<_>>()
        );
        // The first starts about 1 s in (minus the pre-roll), and lasts about 1.5 s.
        assert!((got[0].start_s - 1.0).abs() < 0.3, "{}", got[0].start_s);
        assert!(
            (got[0].duration_s() - 1.5).abs() < 0.5,
            "{}",
            got[0].duration_s()
        );
        assert_eq!(got[1].seq, 2);
        assert_eq!(stats.state(), SourceState::Ended);
        assert_eq!(stats.snapshot().frames, 2);
    }

    #[test]
    fn a_missing_path_or_a_folder_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fmt = PcmFormat {
            sample_rate: 16000,
            channels: 1,
        };
        let e = StreamConfig {
            input: AudioInput::Pipe(dir.path().join("nope.fifo")),
            format: fmt,
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(e.contains("mkfifo"), "{e}");
        let e = StreamConfig {
            input: AudioInput::Pipe(dir.path().into()),
            format: fmt,
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(e.contains("is a folder"), "{e}");
    }

    #[test]
    fn a_bad_wav_header_fails_the_source_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.wav");
        // A RIFF/WAVE start whose fmt chunk says 8-bit: not what a pipe reader accepts.
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00");
        b.extend_from_slice(&1u16.to_le_bytes()); // PCM
        b.extend_from_slice(&1u16.to_le_bytes()); // mono
        b.extend_from_slice(&8000u32.to_le_bytes());
        b.extend_from_slice(&8000u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&8u16.to_le_bytes()); // 8-bit
        b.extend_from_slice(b"data\x00\x00\x00\x00");
        std::fs::write(&path, b).expect("write");
        let stats = SourceStats::new();
        let cfg = StreamConfig {
            input: AudioInput::Pipe(path),
            format: PcmFormat {
                sample_rate: 16000,
                channels: 1,
            },
        };
        let (handle, rx) = spawn(cfg, stats.clone(), StopSignal::new()).expect("spawn");
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_err());
        handle.join().expect("thread");
        match stats.state() {
            SourceState::Failed { error } => assert!(error.contains("S16_LE"), "{error}"),
            other => panic!("expected failed, got {other:?}"),
        }
    }
}
