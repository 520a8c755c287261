//! Energy-based voice activity detection: cuts a live 16 kHz stream into utterances.
//!
//! A microphone on an edge device hears mostly silence, fans and traffic. Embedding every
//! 1.6 s of that would fill the sample store with voice prints of nothing and make the
//! speaker head "recognise" the fridge. This gate passes on only stretches that look like
//! someone speaking; it is deliberately simple (no model, no allocation per frame, a few
//! dozen operations per 10 ms) so it runs on the capture thread of the smallest board.
//!
//! How a 10 ms frame is judged:
//!
//! - **Level:** its energy in dBFS (`10 log10(mean(x²))`, full scale = 0 dB).
//! - **Adaptive noise floor:** the minimum frame energy over the last `floor_window_ms` (3 s),
//!   kept as minima of 250 ms blocks ("minimum statistics"). Speech has pauses between
//!   syllables and words, and one 10 ms frame in such a pause is enough, so the minimum sits
//!   on the background even while someone talks; when the background changes (a fan starts),
//!   the floor follows within one window. No level has to be configured per room or per
//!   microphone gain. Until the first pause the floor is the quietest frame so far, so speech
//!   that starts with the stream is judged once its first pause arrives (in practice a
//!   stream starts with a moment of background). (The minimum of raw frames lies 1-2 dB under the mean background level
//!   for white noise; the threshold absorbs that. Smoothing the energy first would keep the
//!   floor out of the short pauses and let it creep up into continuous speech.)
//! - **Voiced:** the frame is `threshold_db` (9 dB) above the floor *and* above an absolute
//!   `min_level_dbfs` (-60 dBFS), so digital silence or a muted input, whose floor is very
//!   low, does not turn faint hiss into "speech".
//!
//! How frames become utterances:
//!
//! - **Onset:** `onset_ms` (30 ms) of consecutive voiced frames open an utterance, which then
//!   starts `pre_roll_ms` (100 ms) earlier, so the quiet start of a word is not cut.
//! - **Hangover:** the utterance stays open through `hangover_ms` (300 ms) of unvoiced frames
//!   (the pauses inside a sentence); then it ends `post_roll_ms` (100 ms) after its last voiced
//!   frame.
//! - **Maximum length:** at `max_utterance_ms` (10 s) it is cut ([`EndReason::MaxLength`]) and
//!   the next one begins at once, so memory and latency stay bounded on a talk-radio stream.
//! - **Minimum length:** an utterance whose voiced span is under `min_utterance_ms` (300 ms: a
//!   click, a cough, a door) is dropped: too short for a voice print anyway.
//! - **Steadiness check:** when a steady noise starts (a fan, a hum, a tone), it is "above the
//!   floor" until the floor window catches up, 3 s later. Speech is strongly modulated (its
//!   frame energy swings by 6 dB and more as syllables come and go); steady noise swings well
//!   under 1 dB. An utterance whose voiced frames' energy has a standard deviation below
//!   `min_modulation_db` (3 dB) is dropped as steady ([`VadStats::rejected_steady`]). A
//!   constant tone burst is rejected by this rule too: not voice.
//!
//! Streaming: [`Vad::push`] takes chunks of any size (a pipe read, a resampler block) and
//! returns the utterances finished within it; the result does not depend on how the stream
//! was chunked. [`Vad::flush`] ends the stream (closing an open utterance). Positions are
//! counted in samples from the start of the stream, so an utterance's [`Utterance::start`]
//! gives its time.

use std::collections::VecDeque;

/// Tuning of the detector; the defaults suit speech at 16 kHz.
#[derive(Debug, Clone, PartialEq)]
pub struct VadConfig {
    /// Rate of the samples pushed, Hz.
    pub sample_rate: u32,
    /// Analysis frame, ms.
    pub frame_ms: u32,
    /// How far above the noise floor a frame must be to count as voiced, dB.
    pub threshold_db: f32,
    /// Absolute level a frame must exceed to count as voiced, dBFS.
    pub min_level_dbfs: f32,
    /// Span over which the noise floor is the minimum energy, ms.
    pub floor_window_ms: u32,
    /// Consecutive voiced time that opens an utterance, ms.
    pub onset_ms: u32,
    /// Unvoiced time that closes an utterance, ms.
    pub hangover_ms: u32,
    /// Audio kept before the first voiced frame, ms.
    pub pre_roll_ms: u32,
    /// Audio kept after the last voiced frame, ms (at most `hangover_ms`).
    pub post_roll_ms: u32,
    /// Shortest voiced span (first to last voiced frame) kept, ms.
    pub min_utterance_ms: u32,
    /// Longest utterance before it is split, ms.
    pub max_utterance_ms: u32,
    /// Smallest standard deviation of voiced frame energies for an utterance to count as
    /// speech rather than steady noise, dB (0 disables the check).
    pub min_modulation_db: f32,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            sample_rate: 16_000,
            frame_ms: 10,
            threshold_db: 9.0,
            min_level_dbfs: -60.0,
            floor_window_ms: 3000,
            onset_ms: 30,
            hangover_ms: 300,
            pre_roll_ms: 100,
            post_roll_ms: 100,
            min_utterance_ms: 300,
            max_utterance_ms: 10_000,
            min_modulation_db: 3.0,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("voice activity detection: {problem}")]
pub struct VadError {
    pub problem: String,
}

/// Why an utterance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `hangover_ms` of silence.
    Silence,
    /// Cut at `max_utterance_ms`; the speech goes on in the next utterance.
    MaxLength,
    /// The stream ended ([`Vad::flush`]).
    Flush,
}

/// A stretch of the stream judged to be speech.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// Index of the first sample in the stream (at the VAD's rate).
    pub start: u64,
    pub samples: Vec<f32>,
    pub end_reason: EndReason,
    /// Time from the first to the end of the last voiced frame, ms.
    pub voiced_ms: u32,
    /// Mean energy of the voiced frames, dBFS.
    pub level_dbfs: f32,
    /// `level_dbfs` minus the noise floor when the utterance ended, dB.
    pub snr_db: f32,
}

impl Utterance {
    /// Start time in seconds from the start of the stream.
    pub fn start_secs(&self, sample_rate: u32) -> f64 {
        self.start as f64 / f64::from(sample_rate)
    }

    /// Duration in seconds.
    pub fn duration_secs(&self, sample_rate: u32) -> f64 {
        self.samples.len() as f64 / f64::from(sample_rate)
    }
}

/// Counters for logs and the status topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VadStats {
    pub frames: u64,
    pub utterances: u64,
    /// Dropped: voiced span under `min_utterance_ms`.
    pub rejected_short: u64,
    /// Dropped: too steady to be speech (see the module documentation).
    pub rejected_steady: u64,
}

/// Energy floor used for digital silence, dBFS.
const SILENCE_DB: f64 = -120.0;
/// Length of one block of the floor's minimum statistics, ms.
const FLOOR_BLOCK_MS: u32 = 250;

#[derive(Debug, Clone, Copy, Default)]
struct Voiced {
    frames: u32,
    sum_db: f64,
    sum_db2: f64,
}

impl Voiced {
    fn add(&mut self, db: f64) {
        self.frames += 1;
        self.sum_db += db;
        self.sum_db2 += db * db;
    }

    fn mean(&self) -> f64 {
        self.sum_db / f64::from(self.frames.max(1))
    }

    fn std(&self) -> f64 {
        if self.frames < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.sum_db2 / f64::from(self.frames) - m * m)
            .max(0.0)
            .sqrt()
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Idle {
        run: usize,
        run_start: u64,
        voiced: Voiced,
    },
    Active {
        start: u64,
        first_voiced: u64,
        last_voiced_end: u64,
        voiced: Voiced,
    },
}

/// The streaming detector. See the module documentation.
#[derive(Debug)]
pub struct Vad {
    cfg: VadConfig,
    frame_len: usize,
    onset_frames: usize,
    hangover: u64,
    pre_roll: u64,
    post_roll: u64,
    min_voiced: u64,
    max_len: u64,
    /// Samples from absolute index `buf_start` on.
    buf: Vec<f32>,
    buf_start: u64,
    next_frame: u64,
    block_min: f64,
    block_frames: usize,
    frames_per_block: usize,
    blocks: VecDeque<f64>,
    max_blocks: usize,
    state: State,
    stats: VadStats,
}

impl Vad {
    /// A detector for `cfg`; fails with the parameter at fault.
    pub fn new(cfg: VadConfig) -> Result<Self, VadError> {
        let fail = |problem: String| Err(VadError { problem });
        let per_ms = |ms: u32| u64::from(cfg.sample_rate) * u64::from(ms) / 1000;
        let frame_len = per_ms(cfg.frame_ms) as usize;
        if cfg.sample_rate == 0 || frame_len == 0 {
            return fail(format!(
                "frame_ms = {} at {} Hz is less than one sample",
                cfg.frame_ms, cfg.sample_rate
            ));
        }
        if !(cfg.threshold_db.is_finite() && cfg.threshold_db > 0.0) {
            return fail(format!("threshold_db = {} must be > 0", cfg.threshold_db));
        }
        if !cfg.min_level_dbfs.is_finite() || !cfg.min_modulation_db.is_finite() {
            return fail("min_level_dbfs and min_modulation_db must be finite".into());
        }
        if cfg.post_roll_ms > cfg.hangover_ms {
            return fail(format!(
                "post_roll_ms = {} must not exceed hangover_ms = {}",
                cfg.post_roll_ms, cfg.hangover_ms
            ));
        }
        if cfg.max_utterance_ms < cfg.min_utterance_ms.max(cfg.frame_ms * 2) {
            return fail(format!(
                "max_utterance_ms = {} must exceed min_utterance_ms = {}",
                cfg.max_utterance_ms, cfg.min_utterance_ms
            ));
        }
        if cfg.floor_window_ms < FLOOR_BLOCK_MS {
            return fail(format!(
                "floor_window_ms = {} must be at least {FLOOR_BLOCK_MS}",
                cfg.floor_window_ms
            ));
        }
        let frames = |ms: u32| (ms.div_ceil(cfg.frame_ms)).max(1) as usize;
        Ok(Vad {
            frame_len,
            onset_frames: frames(cfg.onset_ms),
            hangover: per_ms(cfg.hangover_ms),
            pre_roll: per_ms(cfg.pre_roll_ms),
            post_roll: per_ms(cfg.post_roll_ms),
            min_voiced: per_ms(cfg.min_utterance_ms),
            max_len: per_ms(cfg.max_utterance_ms),
            buf: Vec::new(),
            buf_start: 0,
            next_frame: 0,
            block_min: f64::INFINITY,
            block_frames: 0,
            frames_per_block: frames(FLOOR_BLOCK_MS),
            blocks: VecDeque::new(),
            max_blocks: (cfg.floor_window_ms / FLOOR_BLOCK_MS) as usize,
            state: State::Idle {
                run: 0,
                run_start: 0,
                voiced: Voiced::default(),
            },
            stats: VadStats::default(),
            cfg,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &VadConfig {
        &self.cfg
    }

    /// The current noise floor, dBFS.
    pub fn noise_floor_dbfs(&self) -> f32 {
        self.floor() as f32
    }

    /// True while an utterance is open.
    pub fn is_active(&self) -> bool {
        matches!(self.state, State::Active { .. })
    }

    /// Counters since the detector was made.
    pub fn stats(&self) -> VadStats {
        self.stats
    }

    /// Feeds samples; returns the utterances that ended within them.
    pub fn push(&mut self, samples: &[f32]) -> Vec<Utterance> {
        self.buf.extend_from_slice(samples);
        let mut done = Vec::new();
        let buf_end = self.buf_start + self.buf.len() as u64;
        while self.next_frame + self.frame_len as u64 <= buf_end {
            let pos = self.next_frame;
            let at = (pos - self.buf_start) as usize;
            let power = mean_square(&self.buf[at..at + self.frame_len]);
            self.next_frame += self.frame_len as u64;
            if let Some(u) = self.frame(pos, power) {
                done.push(u);
            }
        }
        self.trim();
        done
    }

    /// Ends the stream: closes an open utterance (if long and modulated enough, it is
    /// returned) and drops buffered audio. The noise floor is kept, so the detector can go on
    /// with a new stream from the same microphone.
    pub fn flush(&mut self) -> Vec<Utterance> {
        let buf_end = self.buf_start + self.buf.len() as u64;
        let mut done = Vec::new();
        if let State::Active {
            start,
            first_voiced,
            last_voiced_end,
            voiced,
        } = self.state
        {
            let end = (last_voiced_end + self.post_roll).min(buf_end);
            if let Some(u) = self.finish(
                start,
                first_voiced,
                last_voiced_end,
                end,
                voiced,
                EndReason::Flush,
            ) {
                done.push(u);
            }
        }
        self.state = State::Idle {
            run: 0,
            run_start: 0,
            voiced: Voiced::default(),
        };
        self.buf.clear();
        self.buf_start = buf_end;
        self.next_frame = buf_end;
        done
    }

    fn floor(&self) -> f64 {
        self.blocks
            .iter()
            .copied()
            .fold(self.block_min, f64::min)
            .max(SILENCE_DB)
    }

    /// Updates the floor with one frame's energy and runs the state machine.
    fn frame(&mut self, pos: u64, power: f64) -> Option<Utterance> {
        self.stats.frames += 1;
        let db = to_db(power);
        self.block_min = self.block_min.min(db);
        self.block_frames += 1;
        if self.block_frames == self.frames_per_block {
            self.blocks.push_back(self.block_min);
            if self.blocks.len() > self.max_blocks {
                self.blocks.pop_front();
            }
            self.block_min = f64::INFINITY;
            self.block_frames = 0;
        }
        let floor = self.floor();
        let is_voiced = db > floor + f64::from(self.cfg.threshold_db)
            && db > f64::from(self.cfg.min_level_dbfs);
        let frame_end = pos + self.frame_len as u64;

        match &mut self.state {
            State::Idle {
                run,
                run_start,
                voiced,
            } => {
                if !is_voiced {
                    *run = 0;
                    *voiced = Voiced::default();
                    return None;
                }
                if *run == 0 {
                    *run_start = pos;
                }
                *run += 1;
                voiced.add(db);
                if *run >= self.onset_frames {
                    self.state = State::Active {
                        start: run_start.saturating_sub(self.pre_roll).max(self.buf_start),
                        first_voiced: *run_start,
                        last_voiced_end: frame_end,
                        voiced: *voiced,
                    };
                }
                None
            }
            State::Active {
                start,
                first_voiced,
                last_voiced_end,
                voiced,
            } => {
                if is_voiced {
                    *last_voiced_end = frame_end;
                    voiced.add(db);
                }
                let (start, first, last, v) = (*start, *first_voiced, *last_voiced_end, *voiced);
                if !is_voiced && frame_end - last >= self.hangover {
                    let end = last + self.post_roll;
                    self.state = State::Idle {
                        run: 0,
                        run_start: 0,
                        voiced: Voiced::default(),
                    };
                    return self.finish(start, first, last, end, v, EndReason::Silence);
                }
                if frame_end - start >= self.max_len {
                    self.state = State::Active {
                        start: frame_end,
                        first_voiced: frame_end,
                        last_voiced_end: frame_end,
                        voiced: Voiced::default(),
                    };
                    return self.finish(start, first, last, frame_end, v, EndReason::MaxLength);
                }
                None
            }
        }
    }

    /// Checks an ended utterance and, if it passes, copies its samples out.
    fn finish(
        &mut self,
        start: u64,
        first_voiced: u64,
        last_voiced_end: u64,
        end: u64,
        voiced: Voiced,
        end_reason: EndReason,
    ) -> Option<Utterance> {
        let span = last_voiced_end.saturating_sub(first_voiced);
        if span < self.min_voiced {
            self.stats.rejected_short += 1;
            return None;
        }
        if voiced.std() < f64::from(self.cfg.min_modulation_db) {
            self.stats.rejected_steady += 1;
            return None;
        }
        let a = (start.max(self.buf_start) - self.buf_start) as usize;
        let b = ((end - self.buf_start) as usize).min(self.buf.len()).max(a);
        self.stats.utterances += 1;
        let level = voiced.mean();
        Some(Utterance {
            start: start.max(self.buf_start),
            samples: self.buf[a..b].to_vec(),
            end_reason,
            voiced_ms: (span * 1000 / u64::from(self.cfg.sample_rate)) as u32,
            level_dbfs: level as f32,
            snr_db: (level - self.floor()) as f32,
        })
    }

    /// Drops audio no utterance can still need, amortised (only when it has piled up).
    fn trim(&mut self) {
        let keep_from = match self.state {
            State::Active { start, .. } => start,
            State::Idle { .. } => self
                .next_frame
                .saturating_sub(self.pre_roll + (self.onset_frames * self.frame_len) as u64),
        };
        let drop = keep_from.saturating_sub(self.buf_start) as usize;
        if drop > 0 && drop >= self.buf.len() / 2 {
            self.buf.drain(..drop);
            self.buf_start += drop as u64;
        }
    }
}

/// Mean of `x²` over the finite samples (a NaN must not poison the floor forever).
fn mean_square(x: &[f32]) -> f64 {
    let s: f64 = x
        .iter()
        .filter(|v| v.is_finite())
        .map(|v| f64::from(*v).powi(2))
        .sum();
    s / x.len() as f64
}

fn to_db(power: f64) -> f64 {
    if power > 0.0 {
        (10.0 * power.log10()).max(SILENCE_DB)
    } else {
        SILENCE_DB
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// Deterministic white noise (uniform, RMS = `rms`).
    pub(crate) fn noise(n: usize, rms: f64, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..n)
            .map(|_| {
                let u = rng.next_f64() * 2.0 - 1.0;
                (u * rms * 3f64.sqrt()) as f32
            })
            .collect()
    }

    pub(crate) fn dbfs(db: f64) -> f64 {
        10f64.powf(db / 20.0)
    }

    /// Noise whose amplitude follows a 4 Hz syllable-like envelope, from 0 to `peak_rms`.
    fn am_noise(n: usize, peak_rms: f64, seed: u64) -> Vec<f32> {
        noise(n, peak_rms, seed)
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let env = 0.5 - 0.5 * (2.0 * PI * 4.0 * i as f64 / 16000.0).cos();
                (f64::from(v) * env) as f32
            })
            .collect()
    }

    fn run(vad: &mut Vad, x: &[f32], chunk: usize) -> Vec<Utterance> {
        let mut out = Vec::new();
        for c in x.chunks(chunk) {
            out.extend(vad.push(c));
        }
        out.extend(vad.flush());
        out
    }

    fn add_at(base: &mut [f32], at: usize, x: &[f32]) {
        for (b, v) in base[at..].iter_mut().zip(x) {
            *b += v;
        }
    }

    #[test]
    fn silence_gives_nothing() {
        let mut vad = Vad::new(VadConfig::default()).unwrap();
        assert!(run(&mut vad, &vec![0.0; 16000 * 5], 1000).is_empty());
        assert_eq!(vad.stats().frames, 500);
        assert_eq!(vad.noise_floor_dbfs(), -120.0);
    }

    #[test]
    fn steady_white_noise_gives_nothing() {
        for level in [-60.0, -40.0, -20.0, -6.0] {
            let mut vad = Vad::new(VadConfig::default()).unwrap();
            let x = noise(16000 * 10, dbfs(level), 7);
            assert!(run(&mut vad, &x, 512).is_empty(), "{level} dBFS");
            let floor = f64::from(vad.noise_floor_dbfs());
            assert!((floor - level).abs() < 2.0, "floor {floor} for {level}");
            assert_eq!(vad.stats().rejected_steady + vad.stats().rejected_short, 0);
        }
    }

    #[test]
    fn steady_noise_that_starts_suddenly_is_rejected_as_steady() {
        let mut x = vec![0.0f32; 16000 * 8];
        let n = noise(16000 * 6, dbfs(-30.0), 3);
        add_at(&mut x, 16000 * 2, &n);
        let mut vad = Vad::new(VadConfig::default()).unwrap();
        assert!(run(&mut vad, &x, 800).is_empty());
        assert_eq!(vad.stats().rejected_steady, 1, "{:?}", vad.stats());
    }

    #[test]
    fn am_noise_burst_in_noise_is_one_utterance() {
        let mut x = noise(16000 * 6, dbfs(-45.0), 11);
        let burst = am_noise(24000, dbfs(-15.0), 5); // 1.5 s from 2.0 s
        add_at(&mut x, 32000, &burst);
        for chunk in [1usize, 37, 160, 4096, 100_000] {
            let mut vad = Vad::new(VadConfig::default()).unwrap();
            let utts = run(&mut vad, &x, chunk);
            assert_eq!(utts.len(), 1, "chunk {chunk}: {:?}", vad.stats());
            let u = &utts[0];
            let (s, d) = (u.start_secs(16000), u.duration_secs(16000));
            assert!((s - 1.92).abs() < 0.1, "start {s}");
            assert!((s + d - 3.55).abs() < 0.12, "end {}", s + d);
            assert_eq!(u.end_reason, EndReason::Silence);
            assert!(u.snr_db > 15.0, "snr {}", u.snr_db);
            // Samples are the stream's own.
            let a = u.start as usize;
            assert_eq!(&u.samples[..], &x[a..a + u.samples.len()]);
        }
    }

    #[test]
    fn result_does_not_depend_on_chunking() {
        let mut x = noise(16000 * 12, dbfs(-50.0), 1);
        for k in 0..4 {
            add_at(
                &mut x,
                16000 * (1 + 3 * k),
                &am_noise(16000 + 4000 * k, dbfs(-20.0), 9 + k as u64),
            );
        }
        let reference = run(&mut Vad::new(VadConfig::default()).unwrap(), &x, x.len());
        assert_eq!(reference.len(), 4);
        for chunk in [1usize, 159, 160, 161, 1000] {
            let got = run(&mut Vad::new(VadConfig::default()).unwrap(), &x, chunk);
            assert_eq!(got, reference, "chunk {chunk}");
        }
    }

    #[test]
    fn tone_burst_is_steady_unless_the_check_is_off() {
        let mut x = noise(16000 * 5, dbfs(-50.0), 2);
        let tone: Vec<f32> = (0..16000)
            .map(|i| (0.1 * (2.0 * PI * 1000.0 * i as f64 / 16000.0).sin()) as f32)
            .collect();
        add_at(&mut x, 32000, &tone);
        let mut vad = Vad::new(VadConfig::default()).unwrap();
        assert!(run(&mut vad, &x, 1600).is_empty());
        assert_eq!(vad.stats().rejected_steady, 1);
        let cfg = VadConfig {
            min_modulation_db: 0.0,
            ..VadConfig::default()
        };
        let utts = run(&mut Vad::new(cfg).unwrap(), &x, 1600);
        assert_eq!(utts.len(), 1);
        assert!(
            (utts[0].voiced_ms as i64 - 1000).abs() <= 20,
            "{}",
            utts[0].voiced_ms
        );
    }

    #[test]
    fn short_clicks_are_dropped() {
        let mut x = noise(16000 * 3, dbfs(-50.0), 4);
        add_at(&mut x, 16000, &am_noise(2400, dbfs(-10.0), 8)); // 150 ms
        let mut vad = Vad::new(VadConfig::default()).unwrap();
        assert!(run(&mut vad, &x, 1024).is_empty());
        assert_eq!(vad.stats().rejected_short, 1);
    }

    #[test]
    fn long_speech_is_split_at_max_length() {
        let mut x = noise(16000 * 30, dbfs(-50.0), 6);
        add_at(&mut x, 16000, &am_noise(16000 * 25, dbfs(-15.0), 12));
        let cfg = VadConfig {
            max_utterance_ms: 8000,
            ..VadConfig::default()
        };
        let utts = run(&mut Vad::new(cfg).unwrap(), &x, 4000);
        let reasons: Vec<EndReason> = utts.iter().map(|u| u.end_reason).collect();
        assert_eq!(
            reasons,
            [
                EndReason::MaxLength,
                EndReason::MaxLength,
                EndReason::MaxLength,
                EndReason::Silence
            ]
        );
        // Contiguous pieces, each at most 8 s.
        for w in utts.windows(2) {
            assert_eq!(w[0].start + w[0].samples.len() as u64, w[1].start);
        }
        assert!(utts.iter().all(|u| u.samples.len() <= 8 * 16000));
    }

    #[test]
    fn flush_closes_an_open_utterance() {
        let mut x = noise(16000 * 2, dbfs(-50.0), 6);
        x.extend(am_noise(16000, dbfs(-15.0), 3));
        let mut vad = Vad::new(VadConfig::default()).unwrap();
        assert!(vad.push(&x).is_empty());
        assert!(vad.is_active());
        let utts = vad.flush();
        assert_eq!(utts.len(), 1);
        assert_eq!(utts[0].end_reason, EndReason::Flush);
        assert!(!vad.is_active());
        // The detector goes on after a flush.
        assert!(vad.push(&noise(16000, dbfs(-50.0), 9)).is_empty());
    }

    #[test]
    fn nan_does_not_poison_the_floor() {
        let mut x = noise(16000 * 3, dbfs(-40.0), 6);
        x[5000] = f32::NAN;
        let mut vad = Vad::new(VadConfig::default()).unwrap();
        assert!(run(&mut vad, &x, 1000).is_empty());
        assert!(vad.noise_floor_dbfs().is_finite());
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = [
            VadConfig {
                frame_ms: 0,
                ..VadConfig::default()
            },
            VadConfig {
                post_roll_ms: 400,
                ..VadConfig::default()
            },
            VadConfig {
                max_utterance_ms: 100,
                ..VadConfig::default()
            },
            VadConfig {
                threshold_db: f32::NAN,
                ..VadConfig::default()
            },
            VadConfig {
                floor_window_ms: 10,
                ..VadConfig::default()
            },
        ];
        for cfg in bad {
            assert!(Vad::new(cfg.clone()).is_err(), "{cfg:?}");
        }
    }
}
