//! Sample-rate conversion to the 16 kHz the speaker model was trained on.
//!
//! Microphones and files come at 8, 22.05, 44.1, 48 or 96 kHz; the mel front end assumes
//! 16 kHz (its 400-sample window *is* 25 ms only at that rate). Converting by dropping or
//! repeating samples folds everything above the new Nyquist frequency back into the band
//! (a 9 kHz whistle becomes a 7 kHz tone in the voice print), so this uses a band-limited
//! resampler: `rubato`'s synchronous FFT resampler ([`rubato::Fft`]), the one its authors
//! recommend for a fixed ratio. It low-pass filters with a Blackman-Harris-windowed sinc and
//! is fast (one FFT pair per block).
//!
//! Block size: rubato's anti-aliasing cutoff depends on the FFT block length. Blocks of about
//! 1024 output samples put the cutoff at ~0.97 of the lower Nyquist frequency (7.8 kHz for a
//! 16 kHz output) with a latency of half a block (~32 ms at 16 kHz), a good trade for speech.
//! Block sizes are whole multiples of `rate / gcd(rate, 16000)`; an unusual rate such as
//! 22051 Hz (gcd 1) makes blocks of one second, which still works, only with more latency.
//!
//! [`resample`]/[`into_16k`] convert a clip in memory (the startup delay trimmed, the output
//! exactly `ceil(len * to / from)` samples); [`StreamResampler`] converts a stream chunk by
//! chunk with the same result, for microphones on a pipe. At 16 kHz both are a no-op.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler, WindowFunction};

use super::wav::FFMPEG_HINT;

/// The rate the speaker model's front end expects.
pub const TARGET_RATE: u32 = 16_000;
/// Lowest input rate accepted (below this there is no speech band left to resample).
pub const MIN_RATE: u32 = 1_000;
/// Highest input rate accepted (above every audio interface).
pub const MAX_RATE: u32 = 768_000;

/// Output samples per FFT block aimed at (see the module documentation).
const TARGET_BLOCK_OUT: usize = 1024;

/// Why a conversion could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error(
        "a sample rate of {rate} Hz is outside what adaptd resamples ({MIN_RATE}..={MAX_RATE} \
         Hz); {FFMPEG_HINT}"
    )]
    UnsupportedRate { rate: u32 },
    #[error("resampling {from} Hz to {to} Hz failed: {detail}")]
    Internal { from: u32, to: u32, detail: String },
}

fn check_rate(rate: u32) -> Result<(), ResampleError> {
    if (MIN_RATE..=MAX_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(ResampleError::UnsupportedRate { rate })
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Builds an FFT resampler whose blocks hold about [`TARGET_BLOCK_OUT`] output samples.
fn build(from: u32, to: u32) -> Result<Fft<f32>, ResampleError> {
    check_rate(from)?;
    check_rate(to)?;
    let (f, t) = (from as usize, to as usize);
    let g = gcd(f, t);
    let (min_in, min_out) = (f / g, t / g);
    let blocks = TARGET_BLOCK_OUT.div_ceil(min_out).max(1);
    Fft::new_custom(
        f,
        t,
        blocks * min_in,
        1,
        1,
        WindowFunction::BlackmanHarris2,
        FixedSync::Both,
    )
    .map_err(|e| ResampleError::Internal {
        from,
        to,
        detail: e.to_string(),
    })
}

/// Converts a whole clip from `from` Hz to `to` Hz. The output has `ceil(len * to / from)`
/// samples, aligned with the input (the resampler's delay is trimmed).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    if from == to {
        return Ok(samples.to_vec());
    }
    let mut r = build(from, to)?;
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let internal = |detail: String| ResampleError::Internal { from, to, detail };
    let input =
        InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| internal(e.to_string()))?;
    let out = r
        .process_all(&input, samples.len(), None)
        .map_err(|e| internal(e.to_string()))?;
    Ok(out.take_data())
}

/// Converts a clip to 16 kHz, reusing the buffer when it already is (no copy).
pub fn into_16k(samples: Vec<f32>, rate: u32) -> Result<Vec<f32>, ResampleError> {
    if rate == TARGET_RATE {
        return Ok(samples);
    }
    resample(&samples, rate, TARGET_RATE)
}

/// Chunk-by-chunk conversion of an endless stream, for live input.
///
/// Input is buffered until a whole FFT block is there, so output comes in bursts of one block
/// (about 64 ms at 16 kHz) and lags the input by up to a block plus half a block of filter
/// delay. The delay is trimmed, so output sample `n` corresponds to input time
/// `n / to` seconds, and the total after [`flush`](Self::flush) equals what [`resample`]
/// makes of the whole stream at once (the same samples, up to float rounding).
pub struct StreamResampler {
    /// `None` when the rates are equal: samples pass through.
    inner: Option<Box<Fft<f32>>>,
    from: u32,
    to: u32,
    chunk_in: usize,
    pending: Vec<f32>,
    block_out: Vec<f32>,
    to_trim: usize,
    consumed: u64,
    produced: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("chunk_in", &self.chunk_in)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl StreamResampler {
    /// A converter from `from` Hz to `to` Hz (a pass-through when they are equal).
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        let (inner, chunk_in, chunk_out, delay) = if from == to {
            check_rate(from)?;
            (None, 0, 0, 0)
        } else {
            let r = build(from, to)?;
            let (i, o, d) = (
                r.input_frames_next(),
                r.output_frames_max(),
                r.output_delay(),
            );
            (Some(Box::new(r)), i, o, d)
        };
        Ok(StreamResampler {
            inner,
            from,
            to,
            chunk_in,
            pending: Vec::with_capacity(chunk_in * 2),
            block_out: vec![0.0; chunk_out],
            to_trim: delay,
            consumed: 0,
            produced: 0,
        })
    }

    /// Input rate.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Feeds input samples; returns the output that became ready (possibly none).
    pub fn push(&mut self, input: &[f32]) -> Result<Vec<f32>, ResampleError> {
        self.consumed += input.len() as u64;
        if self.inner.is_none() {
            self.produced += input.len() as u64;
            return Ok(input.to_vec());
        }
        self.pending.extend_from_slice(input);
        let mut out = Vec::new();
        let mut offset = 0;
        while self.pending.len() - offset >= self.chunk_in {
            self.run_block(offset, None, &mut out)?;
            offset += self.chunk_in;
        }
        self.pending.drain(..offset);
        Ok(out)
    }

    /// Ends the stream: returns the rest of the output, so that the total equals
    /// `ceil(input_len * to / from)`, and resets for a new stream.
    pub fn flush(&mut self) -> Result<Vec<f32>, ResampleError> {
        let mut out = Vec::new();
        if self.inner.is_some() {
            let expected = (self.consumed * u64::from(self.to)).div_ceil(u64::from(self.from));
            let rest = self.pending.len();
            if rest > 0 {
                self.run_block(0, Some(rest), &mut out)?;
            }
            // Pump silence through until the delayed tail has come out.
            while self.produced < expected {
                self.run_block(0, Some(0), &mut out)?;
            }
            let excess = (self.produced - expected) as usize;
            out.truncate(out.len().saturating_sub(excess));
            if let Some(r) = self.inner.as_mut() {
                r.reset();
                self.to_trim = r.output_delay();
            }
        }
        self.pending.clear();
        self.consumed = 0;
        self.produced = 0;
        Ok(out)
    }

    /// Resamples one block starting at `pending[offset]` (or `partial` samples of it, zero
    /// padded) and appends the output, minus the part of the startup delay still to trim.
    fn run_block(
        &mut self,
        offset: usize,
        partial: Option<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), ResampleError> {
        let (from, to) = (self.from, self.to);
        let internal = |detail: String| ResampleError::Internal { from, to, detail };
        let Some(r) = self.inner.as_mut() else {
            return Ok(());
        };
        let n_in = partial.unwrap_or(self.chunk_in);
        let slice = &self.pending[offset..offset + n_in];
        let input = InterleavedSlice::new(slice, 1, n_in).map_err(|e| internal(e.to_string()))?;
        let capacity = self.block_out.len();
        let mut output = InterleavedSlice::new_mut(&mut self.block_out, 1, capacity)
            .map_err(|e| internal(e.to_string()))?;
        let indexing = partial.map(|p| Indexing::new().partial_len(p));
        let (_, written) = r
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(|e| internal(e.to_string()))?;
        let skip = self.to_trim.min(written);
        self.to_trim -= skip;
        out.extend_from_slice(&self.block_out[skip..written]);
        self.produced += (written - skip) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(freq: f64, rate: u32, secs: f64, amp: f64) -> Vec<f32> {
        let n = (secs * f64::from(rate)) as usize;
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32)
            .collect()
    }

    /// RMS over the middle of a signal (edges excluded: filter start-up and end effects).
    fn mid_rms(x: &[f32]) -> f64 {
        let (a, b) = (x.len() / 5, x.len() * 4 / 5);
        let s: f64 = x[a..b].iter().map(|v| f64::from(*v).powi(2)).sum();
        (s / (b - a) as f64).sqrt()
    }

    /// Amplitude of the component at `freq` (single-bin DFT over the middle of the signal).
    fn tone_amplitude(x: &[f32], freq: f64, rate: u32) -> f64 {
        let (a, b) = (x.len() / 5, x.len() * 4 / 5);
        let (mut re, mut im) = (0.0, 0.0);
        for (i, v) in x[a..b].iter().enumerate() {
            let ph = 2.0 * PI * freq * (a + i) as f64 / f64::from(rate);
            re += f64::from(*v) * ph.cos();
            im += f64::from(*v) * ph.sin();
        }
        2.0 * (re * re + im * im).sqrt() / (b - a) as f64
    }

    fn db(x: f64) -> f64 {
        20.0 * x.max(1e-12).log10()
    }

    #[test]
    fn same_rate_is_a_no_op() {
        let x = sine(440.0, 16000, 0.1, 0.5);
        let ptr = x.as_ptr();
        let y = into_16k(x, 16000).unwrap();
        assert_eq!(y.as_ptr(), ptr, "no copy");
        let mut s = StreamResampler::new(16000, 16000).unwrap();
        assert_eq!(s.push(&y).unwrap(), y);
        assert!(s.flush().unwrap().is_empty());
    }

    #[test]
    fn output_length_is_exact() {
        for (rate, n) in [
            (48000u32, 48000usize),
            (44100, 44101),
            (8000, 1),
            (96000, 95999),
        ] {
            let y = resample(&vec![0.1; n], rate, 16000).unwrap();
            assert_eq!(
                y.len(),
                (n * 16000).div_ceil(rate as usize),
                "rate {rate} n {n}"
            );
        }
        assert!(resample(&[], 48000, 16000).unwrap().is_empty());
    }

    #[test]
    fn downsampling_96k_preserves_a_sine() {
        let x = sine(1000.0, 96000, 1.0, 0.5);
        let y = resample(&x, 96000, 16000).unwrap();
        assert_eq!(y.len(), 16000);
        let ratio = mid_rms(&y) / mid_rms(&x);
        assert!((ratio - 1.0).abs() < 0.01, "rms ratio {ratio}");
        // Phase-aligned: the output is the same sine sampled at 16 kHz.
        let reference = sine(1000.0, 16000, 1.0, 0.5);
        let err = y[3200..12800]
            .iter()
            .zip(&reference[3200..12800])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 2e-3, "max deviation {err}");
    }

    #[test]
    fn upsampling_8k_preserves_a_sine_and_adds_no_images() {
        let x = sine(1000.0, 8000, 1.0, 0.5);
        let y = resample(&x, 8000, 16000).unwrap();
        assert_eq!(y.len(), 16000);
        let ratio = mid_rms(&y) / mid_rms(&x);
        assert!((ratio - 1.0).abs() < 0.01, "rms ratio {ratio}");
        // Zero-stuffing would leave an image at 8000 - 1000 = 7000 Hz.
        let image = tone_amplitude(&y, 7000.0, 16000);
        assert!(
            db(image / 0.5) < -60.0,
            "image at 7 kHz: {:.1} dB",
            db(image / 0.5)
        );
    }

    #[test]
    fn downsampling_48k_keeps_7khz_and_removes_what_would_alias() {
        // 7 kHz is inside the 8 kHz band: kept.
        let y = resample(&sine(7000.0, 48000, 1.0, 0.5), 48000, 16000).unwrap();
        let kept = tone_amplitude(&y, 7000.0, 16000);
        assert!(
            db(kept / 0.5).abs() < 0.5,
            "7 kHz passband: {:.2} dB",
            db(kept / 0.5)
        );
        // 9 kHz and 12 kHz are above the new Nyquist: decimating without a filter would fold
        // them to 7 kHz and 4 kHz. They must be gone (total output energy, not just one bin).
        for (f, alias) in [(9000.0, 7000.0), (12000.0, 4000.0), (20000.0, 4000.0)] {
            let y = resample(&sine(f, 48000, 1.0, 0.5), 48000, 16000).unwrap();
            let total = mid_rms(&y) * 2f64.sqrt();
            let at_alias = tone_amplitude(&y, alias, 16000);
            assert!(
                db(total / 0.5) < -60.0,
                "{f} Hz leaks {:.1} dB",
                db(total / 0.5)
            );
            assert!(db(at_alias / 0.5) < -60.0, "{f} Hz aliases to {alias} Hz");
        }
    }

    #[test]
    fn streaming_matches_whole_clip() {
        let x: Vec<f32> = sine(440.0, 44100, 0.7, 0.3)
            .iter()
            .zip(sine(3100.0, 44100, 0.7, 0.2))
            .map(|(a, b)| a + b)
            .collect();
        let whole = resample(&x, 44100, 16000).unwrap();
        for chunk in [1usize, 100, 441, 5000, 100_000] {
            let mut s = StreamResampler::new(44100, 16000).unwrap();
            let mut out = Vec::new();
            for c in x.chunks(chunk) {
                out.extend(s.push(c).unwrap());
            }
            out.extend(s.flush().unwrap());
            assert_eq!(out.len(), whole.len(), "chunk {chunk}");
            let err = out
                .iter()
                .zip(&whole)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-5, "chunk {chunk}: {err}");
            // Reusable after flush.
            out = s.push(&x).unwrap();
            out.extend(s.flush().unwrap());
            assert_eq!(out.len(), whole.len());
        }
    }

    #[test]
    fn odd_rates_work_and_absurd_rates_are_refused() {
        // gcd(22051, 16000) = 1: one-second blocks, still exact in length.
        let y = resample(&sine(500.0, 22051, 0.5, 0.5), 22051, 16000).unwrap();
        assert_eq!(y.len(), (11025usize * 16000).div_ceil(22051));
        assert!((mid_rms(&y) / (0.5 / 2f64.sqrt()) - 1.0).abs() < 0.02);
        for bad in [0u32, 999, 1_000_000] {
            let err = resample(&[0.0; 10], bad, 16000).unwrap_err();
            assert!(
                matches!(err, ResampleError::UnsupportedRate { .. }),
                "{err}"
            );
            assert!(StreamResampler::new(bad, 16000).is_err());
        }
    }
}
