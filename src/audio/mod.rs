//! Audio in, speaker-encoder input out: the front end of the GE2E voice-print model.
//!
//! The speaker encoder (`models/resemblyzer-ge2e.toml`) was trained on Resemblyzer's
//! preprocessing, and an embedding network is unforgiving about its input: a spectrogram
//! that is log instead of linear, framed differently or filtered with another mel scale gives
//! embeddings that still look plausible but no longer separate voices. So the stages here
//! reproduce Resemblyzer 0.1.4 step for step, and `tests/audio_mel_reference.rs` checks the
//! spectrogram against librosa itself (`reference/make_mel_reference.py`).
//!
//! # Layout
//!
//! Audio flows through the modules in this order:
//!
//! - [`wav`]: WAV files and payloads (enrolment clips) to mono `f32` at their own rate. Own
//!   parser rather than `hound`, for streaming-written files, odd chunks and truncation
//!   (the module says why); limits checked before allocating.
//! - [`pcm`]: live audio: raw S16_LE bytes from a pipe (`arecord ... |`), robust to reads that
//!   end mid-sample, with an optional WAV header in front.
//! - [`resample`]: any rate to the model's 16 kHz, band-limited (`rubato`'s FFT resampler),
//!   for whole clips and for streams; a no-op at 16 kHz.
//! - [`vad`]: for live audio only, the energy gate with an adaptive noise floor that cuts the
//!   stream into utterances, so silence and steady noise never reach the model.
//! - [`model`]: the speaker encoder (tract) on those windows: one L2-normalised voice print
//!   per utterance.
//! - [`mel`]: per utterance, volume normalisation, partial windows of 1.6 s and the 40-band
//!   power mel spectrogram (`realfft`, planned once), giving the `[N, 160, 40]` tensor for the
//!   model's `mels` input. The N window embeddings are then averaged and re-normalised by the
//!   caller (the model's `[embedding]` table).
//!
//! Why this split: each stage has its own failure modes and its own tests (bad files, pipe
//! reads, aliasing, gating, numerical agreement with librosa), and the two entry points share
//! everything after them: a file goes `wav → resample → mel`, a microphone
//! `pcm → resample → vad → mel` (the capture thread that runs that chain is a source,
//! `source::microphone`, one layer up). None of the stages knows about tract or MQTT, so they can be
//! tested with synthetic signals in milliseconds.
//!
//! # From the manifest
//!
//! [`mel::MelConfig`] carries the manifest's `[audio]` table one field for one, with
//! `mel_scale`/`mel_norm` parsed by [`mel::MelScale::from_name`]/[`mel::MelNorm::from_name`];
//! `log = true` has no counterpart (the model takes linear power) and should be refused when
//! the table is read. The padding mode of the centred frames is not in the manifest
//! ([`mel::PadMode`] explains the choice of zeros).

pub mod mel;
pub mod model;
pub mod pcm;
pub mod resample;
pub mod vad;
pub mod wav;

use std::path::Path;

/// Any failure of the audio front end, for callers that do not care which stage failed.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error(transparent)]
    Wav(#[from] wav::WavError),
    #[error(transparent)]
    Pcm(#[from] pcm::PcmError),
    #[error(transparent)]
    Resample(#[from] resample::ResampleError),
    #[error(transparent)]
    Mel(#[from] mel::MelError),
    #[error(transparent)]
    Vad(#[from] vad::VadError),
}

/// Reads a WAV file and converts it to 16 kHz mono, the model's rate.
pub fn load_16k(path: &Path, limits: &wav::WavLimits) -> Result<Vec<f32>, AudioError> {
    let w = wav::read_file(path, limits)?;
    Ok(resample::into_16k(w.samples, w.info.sample_rate)?)
}

/// Decodes WAV bytes (an upload, an MQTT payload) and converts them to 16 kHz mono.
pub fn decode_16k(
    bytes: &[u8],
    name: &str,
    limits: &wav::WavLimits,
) -> Result<Vec<f32>, AudioError> {
    let w = wav::read_bytes(bytes, name, limits)?;
    Ok(resample::into_16k(w.samples, w.info.sample_rate)?)
}
