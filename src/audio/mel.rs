//! The mel front end of the GE2E speaker encoder, computed exactly as Resemblyzer does.
//!
//! Resemblyzer 0.1.4 (`resemblyzer/audio.py`, `voice_encoder.py`) turns an utterance into the
//! network's input in four steps, reproduced here one for one:
//!
//! 1. [`normalize_volume`]: scale to -30 dBFS RMS, only ever *up* (`increase_only=True`).
//! 2. [`plan_partials`] (`compute_partial_slices`): cut the utterance into windows of 160
//!    frames (1.6 s); the last window is kept if it is at least `min_coverage` (75 %) covered
//!    by audio, and an utterance shorter than one window still gets one. The waveform is
//!    zero-padded to the end of the last window *before* the spectrogram is computed, as
//!    Resemblyzer does (padding the waveform, not the spectrogram, matters for the frames that
//!    straddle the end of the audio).
//! 3. [`MelSpectrogram`] (`wav_to_mel_spectrogram` = `librosa.feature.melspectrogram` with
//!    its defaults): periodic Hann window of `n_fft` = 400 samples, hop 160, centred frames
//!    (`n_fft / 2` samples of padding each side, so frame `t` is centred on sample
//!    `t * hop` and there are `1 + len / hop` frames), `|STFT|^2`, 40 triangular mel filters
//!    on the Slaney mel scale with Slaney area normalisation from 0 to 8 kHz. The result is
//!    the linear power mel spectrogram: **not** a log-mel spectrogram.
//! 4. [`FrontEnd::windows`]: gather the windows into one `[N, 160, 40]` tensor (frames-major,
//!    one row of 40 mel values per 10 ms frame), ready for the model's `mels` input.
//!
//! Padding of the centred frames: librosa used reflection (`pad_mode="reflect"`) before 0.10
//! and zeros (`"constant"`) since. Resemblyzer 0.1.4 requires `librosa>=0.9.1`, so both occur
//! in the wild; a fresh install today (librosa 0.11) pads with zeros, which is the default
//! here ([`PadMode::Constant`]). Only the first and last two frames of an utterance differ.
//!
//! Precision: the window, FFT and power are computed in `f64` (librosa also multiplies the
//! `f64` window into the frames and runs numpy's FFT in `f64`, then stores `complex64`); the
//! filterbank weights are rounded to `f32` exactly as librosa's `float32` `mel_basis` is. The
//! output is `f32`. FFT plan, window, filterbank and all per-frame buffers are made once in
//! [`MelSpectrogram::new`]: computing a frame allocates nothing.

use std::ops::Range;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Mel scale formula (librosa's `htk` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelScale {
    /// Slaney's Auditory Toolbox scale: linear below 1 kHz, logarithmic above
    /// (librosa's default, `htk=False`).
    Slaney,
    /// `2595 * log10(1 + f / 700)` (`htk=True`).
    Htk,
}

impl MelScale {
    /// Parses the manifest's `mel_scale` value.
    pub fn from_name(name: &str) -> Result<Self, MelError> {
        match name {
            "slaney" => Ok(MelScale::Slaney),
            "htk" => Ok(MelScale::Htk),
            other => Err(MelError::Config {
                problem: format!("mel_scale = {other:?}; use \"slaney\" or \"htk\""),
            }),
        }
    }

    /// Hertz to mels (librosa `hz_to_mel`).
    pub fn hz_to_mel(self, hz: f64) -> f64 {
        match self {
            MelScale::Htk => 2595.0 * (1.0 + hz / 700.0).log10(),
            MelScale::Slaney => {
                let f_sp = 200.0 / 3.0;
                let min_log_hz = 1000.0;
                let min_log_mel = min_log_hz / f_sp;
                let logstep = 6.4f64.ln() / 27.0;
                if hz >= min_log_hz {
                    min_log_mel + (hz / min_log_hz).ln() / logstep
                } else {
                    hz / f_sp
                }
            }
        }
    }

    /// Mels to hertz (librosa `mel_to_hz`).
    pub fn mel_to_hz(self, mel: f64) -> f64 {
        match self {
            MelScale::Htk => 700.0 * (10f64.powf(mel / 2595.0) - 1.0),
            MelScale::Slaney => {
                let f_sp = 200.0 / 3.0;
                let min_log_hz = 1000.0;
                let min_log_mel = min_log_hz / f_sp;
                let logstep = 6.4f64.ln() / 27.0;
                if mel >= min_log_mel {
                    min_log_hz * (logstep * (mel - min_log_mel)).exp()
                } else {
                    f_sp * mel
                }
            }
        }
    }
}

/// Filter normalisation (librosa's `norm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelNorm {
    /// Each triangle divided by its width in Hz (`2 / (f[m+2] - f[m])`): equal area, so
    /// the wide high bands do not dominate (librosa's default, `norm="slaney"`).
    Slaney,
    /// Triangles of peak 1 (`norm=None`).
    None,
}

impl MelNorm {
    /// Parses the manifest's `mel_norm` value.
    pub fn from_name(name: &str) -> Result<Self, MelError> {
        match name {
            "slaney" => Ok(MelNorm::Slaney),
            "none" => Ok(MelNorm::None),
            other => Err(MelError::Config {
                problem: format!("mel_norm = {other:?}; use \"slaney\" or \"none\""),
            }),
        }
    }
}

/// How the signal is extended by `n_fft / 2` samples at each end for centred frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    /// Zeros: librosa >= 0.10 (`pad_mode="constant"`), what Resemblyzer 0.1.4 computes on a
    /// current install.
    Constant,
    /// Mirror without repeating the edge sample (numpy `reflect`): librosa < 0.10, what the
    /// encoder was trained with in 2019.
    Reflect,
}

/// Front-end parameters; [`MelConfig::resemblyzer`] gives the GE2E model's, the manifest's
/// `[audio]` table gives the same values field by field.
#[derive(Debug, Clone, PartialEq)]
pub struct MelConfig {
    /// Rate of the input samples, Hz.
    pub sample_rate: u32,
    /// FFT size and window length, samples.
    pub n_fft: usize,
    /// Hop between frames, samples.
    pub hop: usize,
    pub n_mels: usize,
    pub fmin: f32,
    pub fmax: f32,
    pub mel_scale: MelScale,
    pub mel_norm: MelNorm,
    /// Exponent of the magnitude: 2 for power, 1 for magnitude.
    pub power: f32,
    pub pad_mode: PadMode,
    /// Volume normalisation target (gain applied only upwards); `None` leaves the level alone.
    pub target_dbfs: Option<f32>,
    /// Frames per partial window (160 = 1.6 s).
    pub window_frames: usize,
    /// Frames between window starts (80 = 50 % overlap).
    pub window_step: usize,
    /// Fraction of the last window that must hold audio for it to be kept (Resemblyzer: 0.75).
    pub min_coverage: f32,
}

impl MelConfig {
    /// The GE2E speaker encoder's front end (`models/resemblyzer-ge2e.toml`).
    pub fn resemblyzer() -> Self {
        MelConfig {
            sample_rate: 16_000,
            n_fft: 400,
            hop: 160,
            n_mels: 40,
            fmin: 0.0,
            fmax: 8000.0,
            mel_scale: MelScale::Slaney,
            mel_norm: MelNorm::Slaney,
            power: 2.0,
            pad_mode: PadMode::Constant,
            target_dbfs: Some(-30.0),
            window_frames: 160,
            window_step: 80,
            min_coverage: 0.75,
        }
    }

    /// Checks every parameter, naming the offending one.
    pub fn validate(&self) -> Result<(), MelError> {
        let fail = |problem: String| Err(MelError::Config { problem });
        if self.sample_rate == 0 {
            return fail("sample_rate must be > 0".into());
        }
        if self.n_fft < 2 || self.n_fft > 1 << 16 {
            return fail(format!("n_fft = {} must be in 2..=65536", self.n_fft));
        }
        if self.hop == 0 {
            return fail("hop must be > 0".into());
        }
        if self.n_mels == 0 {
            return fail("n_mels must be > 0".into());
        }
        let nyquist = self.sample_rate as f32 / 2.0;
        if !(self.fmin >= 0.0 && self.fmin < self.fmax && self.fmax <= nyquist) {
            return fail(format!(
                "need 0 <= fmin < fmax <= sample_rate / 2 ({nyquist} Hz); got fmin = {}, \
                 fmax = {}",
                self.fmin, self.fmax
            ));
        }
        if !(self.power.is_finite() && self.power > 0.0) {
            return fail(format!("power = {} must be > 0", self.power));
        }
        if let Some(t) = self.target_dbfs {
            if !(t.is_finite() && t <= 0.0) {
                return fail(format!("target_dbfs = {t} must be <= 0"));
            }
        }
        if self.window_frames == 0 {
            return fail("window_frames must be > 0".into());
        }
        if self.window_step == 0 || self.window_step > self.window_frames {
            return fail(format!(
                "window_step = {} must be in 1..=window_frames ({}): windows must not leave \
                 gaps",
                self.window_step, self.window_frames
            ));
        }
        if !(self.min_coverage > 0.0 && self.min_coverage <= 1.0) {
            return fail(format!(
                "min_coverage = {} must be in (0, 1]",
                self.min_coverage
            ));
        }
        Ok(())
    }
}

/// Why a spectrogram could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum MelError {
    #[error("audio front end: {problem}")]
    Config { problem: String },
    #[error("no audio samples to compute a spectrogram from")]
    Empty,
    #[error("sample {index} is NaN or infinite; the audio is corrupt")]
    NonFinite { index: usize },
    #[error("FFT failed: {0}")]
    Fft(String),
}

/// One triangular filter, stored as its non-zero span only.
#[derive(Debug, Clone)]
struct Filter {
    first_bin: usize,
    weights: Vec<f64>,
}

/// The mel filterbank as librosa builds it (`librosa.filters.mel`, `dtype=float32`):
/// `[n_mels][n_fft / 2 + 1]`, dense.
pub fn mel_filterbank(cfg: &MelConfig) -> Vec<Vec<f32>> {
    let n_bins = cfg.n_fft / 2 + 1;
    let sr = f64::from(cfg.sample_rate);
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|k| k as f64 * sr / cfg.n_fft as f64)
        .collect();
    // n_mels + 2 points evenly spaced in mels (numpy linspace: start + i * step, exact end).
    let scale = cfg.mel_scale;
    let (lo, hi) = (
        scale.hz_to_mel(f64::from(cfg.fmin)),
        scale.hz_to_mel(f64::from(cfg.fmax)),
    );
    let points = cfg.n_mels + 2;
    let step = (hi - lo) / (points - 1) as f64;
    let mel_f: Vec<f64> = (0..points)
        .map(|i| {
            let m = if i == points - 1 {
                hi
            } else {
                lo + i as f64 * step
            };
            scale.mel_to_hz(m)
        })
        .collect();
    (0..cfg.n_mels)
        .map(|m| {
            let (left, centre, right) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
            let enorm = match cfg.mel_norm {
                MelNorm::Slaney => 2.0 / (right - left),
                MelNorm::None => 1.0,
            };
            fft_freqs
                .iter()
                .map(|&f| {
                    let lower = (f - left) / (centre - left);
                    let upper = (right - f) / (right - centre);
                    // librosa stores the triangle in float32, then multiplies by the f64 norm
                    // and stores float32 again: the same two roundings here.
                    let w = lower.min(upper).max(0.0) as f32;
                    (f64::from(w) * enorm) as f32
                })
                .collect()
        })
        .collect()
}

/// Index into a signal of length `n` for position `i`, which may lie outside it, following
/// numpy's `reflect` padding (mirror about the edge sample, without repeating it; repeated
/// for pads longer than the signal).
fn reflect_index(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let j = i.rem_euclid(period);
    if j >= n as isize {
        (period - j) as usize
    } else {
        j as usize
    }
}

/// A power mel spectrogram, frames-major: `data[t * n_mels + m]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mel {
    pub data: Vec<f32>,
    pub frames: usize,
    pub n_mels: usize,
}

impl Mel {
    /// The mel values of frame `t`.
    ///
    /// # Panics
    /// If `t >= self.frames`, like slice indexing.
    pub fn frame(&self, t: usize) -> &[f32] {
        &self.data[t * self.n_mels..(t + 1) * self.n_mels]
    }
}

/// Computes power mel spectrograms; holds the FFT plan, window, filterbank and buffers.
pub struct MelSpectrogram {
    cfg: MelConfig,
    fft: Arc<dyn RealToComplex<f64>>,
    window: Vec<f64>,
    filters: Vec<Filter>,
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    power: Vec<f64>,
}

impl std::fmt::Debug for MelSpectrogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelSpectrogram")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl MelSpectrogram {
    /// Plans the FFT and builds the window and filterbank for `cfg`.
    pub fn new(cfg: &MelConfig) -> Result<Self, MelError> {
        cfg.validate()?;
        let dense = mel_filterbank(cfg);
        let mut filters = Vec::with_capacity(cfg.n_mels);
        for (m, row) in dense.iter().enumerate() {
            let Some(first) = row.iter().position(|w| *w > 0.0) else {
                return Err(MelError::Config {
                    problem: format!(
                        "mel band {m} contains no FFT bin: n_mels = {} is too many for n_fft = \
                         {} (use fewer bands or a longer FFT)",
                        cfg.n_mels, cfg.n_fft
                    ),
                });
            };
            let last = row.iter().rposition(|w| *w > 0.0).unwrap_or(first);
            filters.push(Filter {
                first_bin: first,
                weights: row[first..=last].iter().map(|w| f64::from(*w)).collect(),
            });
        }
        // Periodic Hann (scipy `get_window("hann", n_fft, fftbins=True)`).
        let n = cfg.n_fft as f64;
        let window = (0..cfg.n_fft)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos())
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(cfg.n_fft);
        Ok(MelSpectrogram {
            frame: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            power: vec![0.0; cfg.n_fft / 2 + 1],
            fft,
            window,
            filters,
            cfg: cfg.clone(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// Frames produced for `n_samples` samples with centred frames:
    /// `1 + (n + 2 * (n_fft / 2) - n_fft) / hop` (`1 + n / hop` for an even `n_fft`).
    pub fn n_frames(&self, n_samples: usize) -> usize {
        let padded = n_samples + 2 * (self.cfg.n_fft / 2);
        if padded < self.cfg.n_fft {
            return 0;
        }
        1 + (padded - self.cfg.n_fft) / self.cfg.hop
    }

    /// Computes the spectrogram of `samples`.
    pub fn compute(&mut self, samples: &[f32]) -> Result<Mel, MelError> {
        let mut data = Vec::new();
        let frames = self.compute_into(samples, &mut data)?;
        Ok(Mel {
            data,
            frames,
            n_mels: self.cfg.n_mels,
        })
    }

    /// Computes the spectrogram into `out` (resized to `frames * n_mels`); returns the frame
    /// count. With a reused `out`, nothing is allocated.
    pub fn compute_into(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<usize, MelError> {
        if samples.is_empty() {
            return Err(MelError::Empty);
        }
        if let Some(index) = samples.iter().position(|s| !s.is_finite()) {
            return Err(MelError::NonFinite { index });
        }
        let frames = self.n_frames(samples.len());
        if frames == 0 {
            return Err(MelError::Empty);
        }
        let n_mels = self.cfg.n_mels;
        out.clear();
        out.resize(frames * n_mels, 0.0);
        for (t, row) in out.chunks_exact_mut(n_mels).enumerate() {
            self.frame_into(samples, t, row)?;
        }
        Ok(frames)
    }

    /// One frame: window, FFT, |X|^power, filterbank.
    fn frame_into(&mut self, samples: &[f32], t: usize, row: &mut [f32]) -> Result<(), MelError> {
        let n = samples.len();
        let n_fft = self.cfg.n_fft;
        let start = (t * self.cfg.hop) as isize - (n_fft / 2) as isize;
        if start >= 0 && start as usize + n_fft <= n {
            let s = &samples[start as usize..start as usize + n_fft];
            for ((f, x), w) in self.frame.iter_mut().zip(s).zip(&self.window) {
                *f = f64::from(*x) * w;
            }
        } else {
            for (k, (f, w)) in self.frame.iter_mut().zip(&self.window).enumerate() {
                let i = start + k as isize;
                let x = if i >= 0 && (i as usize) < n {
                    samples[i as usize]
                } else {
                    match self.cfg.pad_mode {
                        PadMode::Constant => 0.0,
                        PadMode::Reflect => samples[reflect_index(i, n)],
                    }
                };
                *f = f64::from(x) * w;
            }
        }
        self.fft
            .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch)
            .map_err(|e| MelError::Fft(e.to_string()))?;
        let power = f64::from(self.cfg.power);
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            let sq = c.re * c.re + c.im * c.im;
            *p = if power == 2.0 {
                sq
            } else {
                sq.sqrt().powf(power)
            };
        }
        for (out, filter) in row.iter_mut().zip(&self.filters) {
            let bins = &self.power[filter.first_bin..filter.first_bin + filter.weights.len()];
            let acc: f64 = bins.iter().zip(&filter.weights).map(|(p, w)| p * w).sum();
            *out = acc as f32;
        }
        Ok(())
    }
}

/// Scales `samples` so their RMS is `target_dbfs` (relative to full scale 1.0), only ever
/// upwards, as Resemblyzer's `normalize_volume(wav, -30, increase_only=True)`. Returns the gain
/// applied in dB (`None` when nothing was changed: already louder than the target, or digital
/// silence, where Resemblyzer would multiply by infinity and produce NaN).
///
/// Resemblyzer has no upper bound on the gain, so a very quiet utterance is amplified a lot
/// (noise included); gating silence out before this point is the VAD's job.
pub fn normalize_volume(samples: &mut [f32], target_dbfs: f32) -> Option<f32> {
    if samples.is_empty() {
        return None;
    }
    let mean_sq = samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len() as f64;
    if !(mean_sq > 0.0 && mean_sq.is_finite()) {
        return None;
    }
    let dbfs = 10.0 * mean_sq.log10();
    let change = f64::from(target_dbfs) - dbfs;
    if change < 0.0 {
        return None;
    }
    let gain = 10f64.powf(change / 20.0) as f32;
    for s in samples.iter_mut() {
        *s *= gain;
    }
    Some(change as f32)
}

/// Where the partial windows of an utterance lie (Resemblyzer's `compute_partial_slices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialPlan {
    /// Mel frame range of each window, each `window_frames` long.
    pub windows: Vec<Range<usize>>,
    /// Length the waveform is zero-padded to before the spectrogram (never shorter than the
    /// input).
    pub padded_len: usize,
}

/// Plans the windows for an utterance of `n_samples`, exactly as Resemblyzer's
/// `compute_partial_slices(n_samples, rate, min_coverage)` with a frame step of
/// `window_step` (Resemblyzer derives it from `rate`: `round(16000 / rate / 160)`; its default
/// `rate=1.3` gives 77, the manifest's 80 corresponds to `rate=1.25`).
///
/// An utterance always gets at least one window; a last window less than `min_coverage`
/// covered by audio is dropped when there are others.
pub fn plan_partials(n_samples: usize, cfg: &MelConfig) -> PartialPlan {
    let hop = cfg.hop;
    let (w, step) = (cfg.window_frames, cfg.window_step.max(1));
    let n_frames = (n_samples + 1).div_ceil(hop);
    let steps = (n_frames + step + 1).saturating_sub(w).max(1);
    let mut windows: Vec<Range<usize>> = (0..steps).step_by(step).map(|i| i..i + w).collect();
    if windows.len() > 1 {
        if let Some(last) = windows.last() {
            let start = (last.start * hop) as f64;
            let coverage = (n_samples as f64 - start) / (w * hop) as f64;
            if coverage < f64::from(cfg.min_coverage) {
                windows.pop();
            }
        }
    }
    let end = windows.last().map_or(0, |r| r.end * hop);
    PartialPlan {
        padded_len: end.max(n_samples),
        windows,
    }
}

/// The model input for one utterance: `count` windows of `frames x n_mels`, frames-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Windows {
    /// `count * frames * n_mels` values, the `[N, frames, n_mels]` tensor in row-major order.
    pub data: Vec<f32>,
    pub count: usize,
    pub frames: usize,
    pub n_mels: usize,
    /// Volume gain applied, dB (`None`: none).
    pub gain_db: Option<f32>,
    /// Samples in the utterance as given.
    pub samples: usize,
    /// Samples after zero-padding to the end of the last window.
    pub padded_len: usize,
    /// Frame range of each window in the utterance's spectrogram.
    pub ranges: Vec<Range<usize>>,
}

impl Windows {
    /// `[N, frames, n_mels]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.count, self.frames, self.n_mels]
    }

    /// The `frames * n_mels` values of window `i`.
    ///
    /// # Panics
    /// If `i >= self.count`, like slice indexing.
    pub fn window(&self, i: usize) -> &[f32] {
        let len = self.frames * self.n_mels;
        &self.data[i * len..(i + 1) * len]
    }
}

/// The whole front end for one model: volume, padding, spectrogram, windows. Reuses its
/// buffers between utterances.
#[derive(Debug)]
pub struct FrontEnd {
    mel: MelSpectrogram,
    signal: Vec<f32>,
    spectrogram: Vec<f32>,
}

impl FrontEnd {
    /// Builds the front end (plans the FFT once).
    pub fn new(cfg: &MelConfig) -> Result<Self, MelError> {
        Ok(FrontEnd {
            mel: MelSpectrogram::new(cfg)?,
            signal: Vec::new(),
            spectrogram: Vec::new(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &MelConfig {
        self.mel.config()
    }

    /// The spectrogram stage alone (for tests and diagnostics).
    pub fn mel(&mut self) -> &mut MelSpectrogram {
        &mut self.mel
    }

    /// Turns an utterance (mono, at `config().sample_rate`) into the model's input windows.
    pub fn windows(&mut self, utterance: &[f32]) -> Result<Windows, MelError> {
        if utterance.is_empty() {
            return Err(MelError::Empty);
        }
        if let Some(index) = utterance.iter().position(|s| !s.is_finite()) {
            return Err(MelError::NonFinite { index });
        }
        let cfg = self.mel.config().clone();
        self.signal.clear();
        self.signal.extend_from_slice(utterance);
        let gain_db = cfg
            .target_dbfs
            .and_then(|t| normalize_volume(&mut self.signal, t));
        let plan = plan_partials(utterance.len(), &cfg);
        self.signal.resize(plan.padded_len, 0.0);
        let frames = self.mel.compute_into(&self.signal, &mut self.spectrogram)?;
        let n_mels = cfg.n_mels;
        let mut data = Vec::with_capacity(plan.windows.len() * cfg.window_frames * n_mels);
        for r in &plan.windows {
            if r.end > frames {
                // Cannot happen: the waveform is padded to the end of the last window.
                return Err(MelError::Config {
                    problem: format!("window {r:?} beyond the {frames} frames computed"),
                });
            }
            data.extend_from_slice(&self.spectrogram[r.start * n_mels..r.end * n_mels]);
        }
        Ok(Windows {
            data,
            count: plan.windows.len(),
            frames: cfg.window_frames,
            n_mels,
            gain_db,
            samples: utterance.len(),
            padded_len: plan.padded_len,
            ranges: plan.windows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MelConfig {
        MelConfig::resemblyzer()
    }

    fn sine(freq: f64, n: usize, amp: f64) -> Vec<f32> {
        (0..n)
            .map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / 16000.0).sin()) as f32)
            .collect()
    }

    #[test]
    fn slaney_scale_round_trips_and_matches_known_points() {
        let s = MelScale::Slaney;
        assert!((s.hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((s.hz_to_mel(500.0) - 7.5).abs() < 1e-12);
        // librosa.hz_to_mel(8000) = 45.245640471924965
        assert!((s.hz_to_mel(8000.0) - 45.245640471924965).abs() < 1e-9);
        for hz in [0.0, 123.0, 999.0, 1000.0, 4321.0, 8000.0] {
            for scale in [MelScale::Slaney, MelScale::Htk] {
                assert!((scale.mel_to_hz(scale.hz_to_mel(hz)) - hz).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn filterbank_has_area_normalised_triangles() {
        let fb = mel_filterbank(&cfg());
        assert_eq!(fb.len(), 40);
        assert!(fb.iter().all(|r| r.len() == 201));
        // Slaney norm: each triangle's integral over Hz is 1, so sum(w) * 40 Hz/bin ~ 1 for
        // bands wide enough to be sampled well by 40 Hz bins.
        for (m, row) in fb.iter().enumerate().skip(10) {
            let area: f32 = row.iter().sum::<f32>() * 40.0;
            assert!((area - 1.0).abs() < 0.05, "band {m} area {area}");
        }
        // Band 0 starts at 0 Hz; the last ends at 8 kHz.
        assert!(fb[0][0] == 0.0 && fb[0][1] > 0.0);
        assert!(fb[39][199] > 0.0 && fb[39][200] == 0.0);
    }

    #[test]
    fn frame_counts_follow_centre_padding() {
        let m = MelSpectrogram::new(&cfg()).unwrap();
        assert_eq!(m.n_frames(16000), 101);
        assert_eq!(m.n_frames(4800), 31);
        assert_eq!(m.n_frames(159), 1);
        assert_eq!(m.n_frames(160), 2);
        assert_eq!(m.n_frames(1), 1);
    }

    #[test]
    fn a_sine_lands_in_its_band() {
        let mut m = MelSpectrogram::new(&cfg()).unwrap();
        let mel = m.compute(&sine(440.0, 16000, 0.5)).unwrap();
        assert_eq!(mel.frames, 101);
        let f = mel.frame(50);
        let peak = f
            .iter()
            .enumerate()
            .fold((0, 0f32), |b, (i, v)| if *v > b.1 { (i, *v) } else { b });
        // 440 Hz is 6.6 mel; bands are 1.10 mel apart starting at 0: band 5 peaks at 6.6 mel.
        assert_eq!(peak.0, 5, "{f:?}");
        // Parseval: a 0.5 amplitude sine through a Hann window of 400 has |X|^2 peak
        // (0.5 * 400 / 4)^2 = 2500 spread over neighbouring bins; the mel value is in that
        // order of magnitude once divided by the band width.
        assert!(peak.1 > 10.0 && peak.1 < 2500.0, "{}", peak.1);
    }

    #[test]
    fn silence_gives_zeros_and_scaling_is_quadratic() {
        let mut m = MelSpectrogram::new(&cfg()).unwrap();
        let z = m.compute(&[0.0; 1000]).unwrap();
        assert!(z.data.iter().all(|v| *v == 0.0));
        let a = m.compute(&sine(1000.0, 3200, 0.1)).unwrap();
        let b = m.compute(&sine(1000.0, 3200, 0.2)).unwrap();
        for (x, y) in a.data.iter().zip(&b.data) {
            assert!((y - 4.0 * x).abs() <= 1e-4 * y.abs() + 1e-12, "{x} {y}");
        }
    }

    #[test]
    fn reflect_index_matches_numpy() {
        // np.pad(np.arange(5), 7, 'reflect')
        let expect = [1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3];
        let got: Vec<usize> = (-7..12).map(|i| reflect_index(i, 5)).collect();
        assert_eq!(got, expect);
        assert_eq!(reflect_index(-3, 1), 0);
        assert_eq!(reflect_index(5, 2), 1);
    }

    #[test]
    fn shorter_than_one_window_still_works() {
        for mode in [PadMode::Constant, PadMode::Reflect] {
            let mut c = cfg();
            c.pad_mode = mode;
            let mut m = MelSpectrogram::new(&c).unwrap();
            for n in [1usize, 7, 150, 399] {
                let mel = m.compute(&sine(300.0, n, 0.3)).unwrap();
                assert_eq!(mel.frames, 1 + n / 160, "{mode:?} n={n}");
                assert!(mel.data.iter().all(|v| v.is_finite() && *v >= 0.0));
            }
        }
    }

    #[test]
    fn bad_input_is_refused() {
        let mut m = MelSpectrogram::new(&cfg()).unwrap();
        assert!(matches!(m.compute(&[]), Err(MelError::Empty)));
        let mut x = vec![0.0f32; 500];
        x[123] = f32::NAN;
        assert!(matches!(
            m.compute(&x),
            Err(MelError::NonFinite { index: 123 })
        ));
        let mut f = FrontEnd::new(&cfg()).unwrap();
        assert!(matches!(f.windows(&[]), Err(MelError::Empty)));
        x[123] = f32::INFINITY;
        assert!(matches!(
            f.windows(&x),
            Err(MelError::NonFinite { index: 123 })
        ));
    }

    #[test]
    fn bad_configs_name_the_problem() {
        type Change = Box<dyn Fn(&mut MelConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.hop = 0), "hop"),
            (Box::new(|c| c.fmax = 9000.0), "fmax"),
            (Box::new(|c| c.window_step = 200), "window_step"),
            (Box::new(|c| c.min_coverage = 0.0), "min_coverage"),
            (Box::new(|c| c.n_mels = 200), "no FFT bin"),
            (Box::new(|c| c.target_dbfs = Some(3.0)), "target_dbfs"),
            (Box::new(|c| c.power = 0.0), "power"),
        ];
        for (change, expect) in cases {
            let mut c = cfg();
            change(&mut c);
            let err = MelSpectrogram::new(&c).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
        assert!(MelScale::from_name("htk").is_ok());
        assert!(MelScale::from_name("mel").is_err());
        assert!(MelNorm::from_name("none").is_ok());
        assert!(MelNorm::from_name("l2").is_err());
    }

    #[test]
    fn volume_normalisation_only_raises() {
        let mut quiet = sine(440.0, 16000, 0.01);
        let gain = normalize_volume(&mut quiet, -30.0).unwrap();
        let rms = (quiet.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / 16000.0).sqrt();
        assert!((20.0 * rms.log10() + 30.0).abs() < 1e-3, "rms {rms}");
        // 0.01 amplitude sine = -43.0 dBFS RMS, so +13 dB.
        assert!((gain - 13.01).abs() < 0.01, "{gain}");
        let mut loud = sine(440.0, 16000, 0.5);
        let before = loud.clone();
        assert_eq!(normalize_volume(&mut loud, -30.0), None);
        assert_eq!(loud, before);
        let mut zeros = vec![0.0; 100];
        assert_eq!(normalize_volume(&mut zeros, -30.0), None);
        assert!(zeros.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn partial_plan_matches_resemblyzer() {
        let c = cfg();
        // Values from Resemblyzer's compute_partial_slices(n, rate=1.25, min_coverage=0.75).
        let p = plan_partials(16000, &c);
        assert_eq!(p.windows, vec![0..160]);
        assert_eq!(p.padded_len, 25600);
        let p = plan_partials(4800, &c);
        assert_eq!(p.windows, vec![0..160]);
        assert_eq!(p.padded_len, 25600);
        let p = plan_partials(160_000, &c);
        assert_eq!(p.windows.len(), 12);
        assert_eq!(p.windows[11], 880..1040);
        assert_eq!(p.padded_len, 166_400);
        // 2.0 s: [0,160) and [80,240); the second covers (32000-12800)/25600 = 0.75: kept.
        let p = plan_partials(32000, &c);
        assert_eq!(p.windows, vec![0..160, 80..240]);
        // 1.9 s: the second window would be 0.69 covered: dropped, no padding needed.
        let p = plan_partials(30400, &c);
        assert_eq!(p.windows, vec![0..160]);
        assert_eq!(p.padded_len, 30400);
        assert_eq!(plan_partials(1, &c).windows, vec![0..160]);
    }

    #[test]
    fn front_end_windows_for_short_and_long_utterances() {
        let mut f = FrontEnd::new(&cfg()).unwrap();
        for (n, count) in [(4800usize, 1usize), (16000, 1), (160_000, 12)] {
            let w = f.windows(&sine(300.0, n, 0.01)).unwrap();
            assert_eq!(w.shape(), [count, 160, 40], "n = {n}");
            assert_eq!(w.data.len(), count * 160 * 40);
            assert!(w.gain_db.is_some());
            // Windows overlap by 80 frames: window 1 starts with window 0's second half.
            if count > 1 {
                assert_eq!(&w.window(0)[80 * 40..], &w.window(1)[..80 * 40]);
            }
        }
        // A 0.3 s clip: 31 frames of audio, the rest of the window is zero padding.
        let w = f.windows(&sine(300.0, 4800, 0.1)).unwrap();
        let frame = |t: usize| &w.window(0)[t * 40..(t + 1) * 40];
        assert!(frame(10).iter().any(|v| *v > 0.0));
        assert!(frame(40).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn buffers_are_reused() {
        let mut m = MelSpectrogram::new(&cfg()).unwrap();
        let mut out = Vec::with_capacity(101 * 40);
        let ptr = out.as_ptr();
        m.compute_into(&sine(440.0, 16000, 0.5), &mut out).unwrap();
        m.compute_into(&sine(880.0, 16000, 0.5), &mut out).unwrap();
        assert_eq!(out.as_ptr(), ptr);
    }
}
