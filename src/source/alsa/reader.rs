//! A microphone that stays: mono chunks from an ALSA device, reopened with backoff whenever
//! it cannot be opened, is lost, or goes silent, with the reason in the microphone's state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::capture::Read;
use super::{AlsaError, Capture};
use crate::backoff::Backoff;
use crate::source::reopen::whole_secs;
use crate::source::stats::{should_log, SourceState, SourceStats};
use crate::source::StopSignal;

/// A device that delivers nothing for this long is treated as lost and reopened: a running
/// capture device delivers a period every few tens of milliseconds, whatever the room sounds
/// like.
const STALL: Duration = Duration::from_secs(5);

/// Frames per read: 100 ms at 16 kHz.
const CHUNK_FRAMES: usize = 1600;

/// Mono samples at `rate` Hz, in [-1, 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub samples: Vec<f32>,
    pub rate: u32,
}

/// Reads a named ALSA device for as long as the daemon runs.
pub struct AlsaReader {
    device: String,
    want_rate: u32,
    want_channels: u16,
    capture: Option<Capture>,
    backoff: Backoff,
    /// Failed opens or losses since the last audio.
    attempt: u32,
    last_error: String,
    ever_streamed: bool,
    last_audio: Instant,
    stats: Arc<SourceStats>,
    stop: StopSignal,
    buf: Vec<i16>,
}

impl AlsaReader {
    /// Nothing is opened until the first [`AlsaReader::next_chunk`].
    pub fn new(
        device: impl Into<String>,
        rate: u32,
        channels: u16,
        stats: Arc<SourceStats>,
        stop: StopSignal,
    ) -> AlsaReader {
        AlsaReader::with_backoff(device, rate, channels, stats, stop, Backoff::camera())
    }

    /// With another retry schedule (tests).
    pub fn with_backoff(
        device: impl Into<String>,
        rate: u32,
        channels: u16,
        stats: Arc<SourceStats>,
        stop: StopSignal,
        backoff: Backoff,
    ) -> AlsaReader {
        AlsaReader {
            device: device.into(),
            want_rate: rate,
            want_channels: channels,
            capture: None,
            backoff,
            attempt: 0,
            last_error: String::new(),
            ever_streamed: false,
            last_audio: Instant::now(),
            stats,
            stop,
            buf: Vec::new(),
        }
    }

    /// What `state` shows as the source.
    pub fn describe(device: &str, rate: u32, channels: u16) -> String {
        format!("alsa {device} ({rate} Hz, {channels} ch)")
    }

    /// The next chunk of audio; `Ok(None)` once a stop is requested. Waits (and reopens) for
    /// as long as the device is away; `Err` only for what waiting cannot fix (no libasound,
    /// a device that cannot give 16-bit samples).
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, AlsaError> {
        loop {
            if self.stop.is_stopped() {
                return Ok(None);
            }
            let Some(capture) = self.capture.as_mut() else {
                if !self.open()? {
                    return Ok(None);
                }
                continue;
            };
            match capture.read(&mut self.buf) {
                Ok(Read::Frames(n)) if n > 0 => {
                    self.last_audio = Instant::now();
                    if self.attempt > 0 || !self.ever_streamed {
                        self.stats.set_state(SourceState::Streaming);
                        self.attempt = 0;
                        self.backoff.reset();
                    }
                    self.ever_streamed = true;
                    let channels = usize::from(capture.channels().max(1));
                    return Ok(Some(Chunk {
                        samples: mono(&self.buf[..n * channels], channels),
                        rate: capture.rate(),
                    }));
                }
                Ok(Read::Frames(_) | Read::Nothing) => {
                    if self.last_audio.elapsed() >= STALL {
                        let why = format!(
                            "ALSA device {:?} delivered no audio for {} s",
                            self.device,
                            STALL.as_secs()
                        );
                        self.lose(why);
                    }
                }
                Ok(Read::Overrun) => {
                    let n = self.stats.decode_error(
                        "overrun: ALSA dropped audio while the capture thread was busy".into(),
                    );
                    if should_log(n) {
                        warn!(microphone = %self.device, overruns = n, "audio overrun, some audio was lost");
                    }
                }
                Err(e) => self.lose(e.to_string()),
            }
        }
    }

    /// Drops the device after a loss; the next call reopens it after a backoff delay.
    fn lose(&mut self, why: String) {
        warn!(microphone = %self.device, "{why}; reopening");
        self.capture = None;
        self.attempt = self.attempt.max(1);
        self.last_error = why;
    }

    /// One open attempt, after the backoff delay when an earlier one failed; `Ok(false)`:
    /// stop requested while waiting.
    fn open(&mut self) -> Result<bool, AlsaError> {
        if self.attempt > 0 {
            let delay = self.backoff.next_delay();
            self.stats.set_state(SourceState::Reconnecting {
                attempt: self.attempt,
                last_error: self.last_error.clone(),
                retry_in_s: whole_secs(delay),
            });
            if !self.stop.sleep(delay) {
                return Ok(false);
            }
        }
        match Capture::open(&self.device, self.want_rate, self.want_channels) {
            Ok(c) => {
                info!(
                    microphone = %self.device,
                    rate = c.rate(),
                    channels = c.channels(),
                    "ALSA capture opened"
                );
                self.stats
                    .set_negotiated(format!("S16_LE {} Hz {} ch", c.rate(), c.channels()));
                if self.ever_streamed {
                    self.stats.reconnected();
                }
                self.buf = vec![0; CHUNK_FRAMES * usize::from(c.channels().max(1))];
                self.last_audio = Instant::now();
                self.capture = Some(c);
                Ok(true)
            }
            Err(e) if e.is_retryable() => {
                self.attempt = self.attempt.saturating_add(1);
                if should_log(u64::from(self.attempt)) {
                    warn!(microphone = %self.device, attempt = self.attempt, "{e}; retrying");
                }
                self.last_error = e.to_string();
                // The state says so at once, not only after the first delay.
                self.stats.set_state(SourceState::Reconnecting {
                    attempt: self.attempt,
                    last_error: self.last_error.clone(),
                    retry_in_s: whole_secs(self.backoff.ceiling()),
                });
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}

/// Interleaved S16 frames to mono in [-1, 1), averaging the channels (as the pipe reader
/// does, [`crate::audio::pcm::PcmDecoder`]).
fn mono(interleaved: &[i16], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved
            .iter()
            .map(|s| f32::from(*s) / 32768.0)
            .collect();
    }
    interleaved
        .chunks_exact(channels)
        .map(|f| f.iter().map(|s| f32::from(*s)).sum::<f32>() / (32768.0 * channels as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_mixed_down_to_mono() {
        assert_eq!(mono(&[16384, -16384], 1), vec![0.5, -0.5]);
        assert_eq!(mono(&[16384, 0, -32768, -32768], 2), vec![0.25, -1.0]);
    }

    #[test]
    fn a_device_that_is_not_there_is_retried_with_its_reason_in_the_state() {
        // A real ALSA lookup of a PCM no configuration defines.
        if crate::source::alsa::library::for_tests().is_none() {
            return;
        }
        let stats = SourceStats::new();
        let stop = StopSignal::new();
        let mut r = AlsaReader::with_backoff(
            "adaptd_no_such_pcm",
            16000,
            1,
            stats.clone(),
            stop.clone(),
            Backoff::exponential(Duration::from_millis(10), Duration::from_millis(40)),
        );
        let stopper = {
            let stats = stats.clone();
            std::thread::spawn(move || {
                // Wait until at least three opens have failed, then stop.
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    if let SourceState::Reconnecting { attempt, .. } = stats.state() {
                        if attempt >= 3 {
                            break;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                stop.stop();
            })
        };
        let got = r.next_chunk().expect("retryable, so no error");
        stopper.join().expect("stopper");
        assert!(got.is_none(), "stopped, no audio");
        match stats.state() {
            SourceState::Reconnecting {
                attempt,
                last_error,
                ..
            } => {
                assert!(attempt >= 3, "{attempt}");
                assert!(
                    last_error.contains("adaptd_no_such_pcm")
                        && last_error.contains("adaptd devices"),
                    "{last_error}"
                );
            }
            other => panic!("expected reconnecting, got {other:?}"),
        }
    }
}
