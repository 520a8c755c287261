//! Motion gating: skip the backbone on frames where nothing moved.
//!
//! A camera on a shelf looks at the same room for hours; running a 25 ms backbone thirty
//! times a second on it is heat and battery for nothing. Each frame is reduced to a small
//! greyscale thumbnail (block means, [`GRID_W`] x [`GRID_H`] cells) and compared with a
//! running background (an exponential average of past thumbnails): the share of cells whose
//! brightness moved by more than `pixel_delta` levels is the frame's motion. Below
//! `threshold` the frame is skipped. Block means average sensor noise away (a 10x10 block of
//! a 640x480 frame), the running background absorbs slow light changes (clouds, dusk), and a
//! share of cells rather than a mean difference means a person crossing a corner counts as
//! much as the same person in the middle.
//!
//! What the gate never does: leave the state stale. A keep-alive inference runs every
//! `keepalive_secs` whatever the motion, and the daemon forces one when a command needs the
//! current frame (`label`). Nor does it end what it stopped looking at: the tracker holds
//! the objects of the last analysed frame through the skipped ones (`Tracker::hold`), so a
//! person who sits down stays one object. The cost is one pass over the frame's pixels, sampled every
//! `STEP` pixels in each direction: well under a millisecond for 640x480.

use std::time::{Duration, Instant};

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Thumbnail width in cells.
pub const GRID_W: usize = 64;
/// Thumbnail height in cells.
pub const GRID_H: usize = 48;
/// Pixels sampled: every STEP-th column of every STEP-th row.
const STEP: u32 = 2;
/// Weight of a new thumbnail in the running background: about the last 20 frames.
const BACKGROUND_RATE: f32 = 0.05;

/// `[motion]`: when the backbone may skip a frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Gate the backbone on motion (cameras, pipes and replays; not audio).
    pub enabled: bool,
    /// Share of the thumbnail's cells that must change for a frame to be analysed, 0 to 1.
    pub threshold: f32,
    /// Change of a cell's mean brightness (0-255) that counts as a change.
    pub pixel_delta: f32,
    /// Seconds after which a frame is analysed even without motion (0 = never).
    pub keepalive_secs: f64,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            enabled: true,
            // 1 % of the cells: about a hand's width at 3 m for a 640x480 camera.
            threshold: 0.01,
            pixel_delta: 12.0,
            keepalive_secs: 10.0,
        }
    }
}

impl MotionConfig {
    /// Messages naming `[motion].key` for every invalid value.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(0.0..=1.0).contains(&self.threshold) {
            p.push(format!(
                "[motion].threshold = {} is out of range; allowed: 0.0 to 1.0 (a share of the picture)",
                self.threshold
            ));
        }
        if !(self.pixel_delta > 0.0 && self.pixel_delta <= 255.0) {
            p.push(format!(
                "[motion].pixel_delta = {} is out of range; allowed: above 0 up to 255",
                self.pixel_delta
            ));
        }
        if !(self.keepalive_secs.is_finite() && (0.0..=86_400.0).contains(&self.keepalive_secs)) {
            p.push(format!(
                "[motion].keepalive_secs = {} is out of range; allowed: 0 (never) to 86400",
                self.keepalive_secs
            ));
        }
        p
    }
}

/// Why the gate let a frame through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Enough of the picture changed.
    Motion,
    /// The first frame, a new frame size, or the gate is off.
    Always,
    /// No motion, but the keep-alive was due.
    KeepAlive,
    /// No motion: skip the backbone.
    Skip,
}

impl Verdict {
    /// True when the backbone should run.
    pub fn run(self) -> bool {
        self != Verdict::Skip
    }
}

/// The running background and the time of the last analysed frame.
#[derive(Debug, Clone)]
pub struct MotionGate {
    cfg: MotionConfig,
    background: Vec<f32>,
    current: Vec<f32>,
    size: (u32, u32),
    last_run: Option<Instant>,
    last_motion: f32,
}

impl MotionGate {
    pub fn new(cfg: MotionConfig) -> MotionGate {
        MotionGate {
            cfg,
            background: Vec::new(),
            current: vec![0.0; GRID_W * GRID_H],
            size: (0, 0),
            last_run: None,
            last_motion: 0.0,
        }
    }

    /// The share of cells that changed in the last frame judged.
    pub fn last_motion(&self) -> f32 {
        self.last_motion
    }

    /// Judges `frame` (taken at `now`) and updates the background with it.
    pub fn judge(&mut self, frame: &RgbImage, now: Instant) -> Verdict {
        if !self.cfg.enabled {
            return Verdict::Always;
        }
        thumbnail(frame, &mut self.current);
        let fresh = self.background.is_empty() || self.size != frame.dimensions();
        let verdict = if fresh {
            self.background.clone_from(&self.current);
            self.size = frame.dimensions();
            self.last_motion = 1.0;
            Verdict::Always
        } else {
            let changed = self
                .current
                .iter()
                .zip(&self.background)
                .filter(|(c, b)| (*c - *b).abs() > self.cfg.pixel_delta)
                .count();
            self.last_motion = changed as f32 / self.current.len() as f32;
            for (b, c) in self.background.iter_mut().zip(&self.current) {
                *b += BACKGROUND_RATE * (c - *b);
            }
            let keepalive = self.cfg.keepalive_secs > 0.0
                && self.last_run.is_none_or(|t| {
                    now.saturating_duration_since(t)
                        >= Duration::from_secs_f64(self.cfg.keepalive_secs)
                });
            if self.last_motion >= self.cfg.threshold && self.last_motion > 0.0 {
                Verdict::Motion
            } else if keepalive {
                Verdict::KeepAlive
            } else {
                Verdict::Skip
            }
        };
        if verdict.run() {
            self.last_run = Some(now);
        }
        verdict
    }

    /// Counts an analysis the gate did not ask for (a forced frame) for the keep-alive.
    pub fn ran(&mut self, now: Instant) {
        self.last_run = Some(now);
    }
}

/// Block-mean greyscale (ITU-R BT.601 luma weights) into `out` (`GRID_W * GRID_H`).
fn thumbnail(frame: &RgbImage, out: &mut [f32]) {
    let (w, h) = frame.dimensions();
    let mut sums = [0u32; GRID_W * GRID_H];
    let mut counts = [0u32; GRID_W * GRID_H];
    if w == 0 || h == 0 {
        out.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let raw = frame.as_raw();
    let stride = w as usize * 3;
    for y in (0..h).step_by(STEP as usize) {
        let cy = (y as usize * GRID_H) / h as usize;
        let row = &raw[y as usize * stride..(y as usize + 1) * stride];
        for x in (0..w).step_by(STEP as usize) {
            let cx = (x as usize * GRID_W) / w as usize;
            let p = &row[x as usize * 3..x as usize * 3 + 3];
            // Luma in 1/256 units: 77 R + 150 G + 29 B.
            let luma = 77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2]);
            let cell = cy * GRID_W + cx;
            sums[cell] += luma;
            counts[cell] += 1;
        }
    }
    for ((o, s), c) in out.iter_mut().zip(&sums).zip(&counts) {
        *o = if *c > 0 {
            *s as f32 / (*c as f32 * 256.0)
        } else {
            0.0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn scene(w: u32, h: u32, seed: u32) -> RgbImage {
        // A textured room with a little sensor noise (± 3 levels).
        let mut s = seed;
        RgbImage::from_fn(w, h, |x, y| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let n = (s >> 29) as i32 - 3;
            let base = ((x / 20 + y / 15) % 7 * 30) as i32;
            let v = (base + n).clamp(0, 255) as u8;
            Rgb([v, v, v])
        })
    }

    fn with_box(mut img: RgbImage, x0: u32, y0: u32, size: u32) -> RgbImage {
        for y in y0..(y0 + size).min(img.height()) {
            for x in x0..(x0 + size).min(img.width()) {
                img.put_pixel(x, y, Rgb([250, 20, 20]));
            }
        }
        img
    }

    #[test]
    fn a_static_noisy_scene_is_skipped_and_a_moving_object_is_not() {
        let mut gate = MotionGate::new(MotionConfig::default());
        let t0 = Instant::now();
        assert_eq!(gate.judge(&scene(640, 480, 1), t0), Verdict::Always);
        for i in 0..20 {
            let t = t0 + Duration::from_millis(100 * (i + 1));
            assert_eq!(
                gate.judge(&scene(640, 480, 2 + i as u32), t),
                Verdict::Skip,
                "{i}"
            );
        }
        // An 80x80 object (about 2 % of the picture, some of it as bright as the wall
        // behind it) walks in.
        let t = t0 + Duration::from_millis(2200);
        let v = gate.judge(&with_box(scene(640, 480, 99), 300, 200, 80), t);
        assert_eq!(v, Verdict::Motion, "motion {}", gate.last_motion());
    }

    #[test]
    fn keepalive_runs_the_backbone_on_a_still_scene() {
        let cfg = MotionConfig {
            keepalive_secs: 1.0,
            ..MotionConfig::default()
        };
        let mut gate = MotionGate::new(cfg);
        let t0 = Instant::now();
        let img = scene(320, 240, 5);
        assert!(gate.judge(&img, t0).run());
        assert_eq!(
            gate.judge(&img, t0 + Duration::from_millis(500)),
            Verdict::Skip
        );
        assert_eq!(
            gate.judge(&img, t0 + Duration::from_millis(1000)),
            Verdict::KeepAlive
        );
        assert_eq!(
            gate.judge(&img, t0 + Duration::from_millis(1500)),
            Verdict::Skip
        );
        // A forced analysis resets the keep-alive clock.
        gate.ran(t0 + Duration::from_millis(1900));
        assert_eq!(
            gate.judge(&img, t0 + Duration::from_millis(2500)),
            Verdict::Skip
        );
    }

    #[test]
    fn a_new_frame_size_or_a_disabled_gate_always_runs() {
        let mut gate = MotionGate::new(MotionConfig::default());
        let t = Instant::now();
        assert!(gate.judge(&scene(64, 48, 1), t).run());
        assert_eq!(gate.judge(&scene(64, 48, 1), t), Verdict::Skip);
        assert_eq!(gate.judge(&scene(32, 24, 1), t), Verdict::Always);
        let mut off = MotionGate::new(MotionConfig {
            enabled: false,
            ..MotionConfig::default()
        });
        assert_eq!(off.judge(&scene(64, 48, 1), t), Verdict::Always);
        assert_eq!(off.judge(&scene(64, 48, 1), t), Verdict::Always);
        // Tiny frames (fewer pixels than cells) do not panic.
        assert!(gate.judge(&RgbImage::new(1, 1), t).run());
    }

    #[test]
    fn slow_light_changes_are_absorbed_by_the_background() {
        let mut gate = MotionGate::new(MotionConfig {
            keepalive_secs: 0.0,
            ..MotionConfig::default()
        });
        let t = Instant::now();
        let mut runs = 0;
        // Dusk, fast-forwarded: the whole picture darkens by a quarter level per frame, 60
        // levels in all (real dusk at 5 fps is a hundred times slower).
        for i in 0..240u32 {
            let img = RgbImage::from_fn(160, 120, |x, y| {
                let base = ((x / 20 + y / 15) % 7 * 30) as f32 + 60.0 - i as f32 * 0.25;
                let v = base.round().clamp(0.0, 255.0) as u8;
                Rgb([v, v, v])
            });
            runs += u32::from(gate.judge(&img, t).run());
        }
        assert_eq!(runs, 1, "only the first frame");
    }

    #[test]
    fn bad_settings_are_named() {
        let bad = MotionConfig {
            threshold: 2.0,
            pixel_delta: 0.0,
            keepalive_secs: -1.0,
            enabled: true,
        };
        let p = bad.validate();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("[motion].threshold"));
        assert!(MotionConfig::default().validate().is_empty());
    }
}
