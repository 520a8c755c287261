//! Sub-labels per tracked object: which crops are worth running the sub-label head on, and the
//! consensus over those attempts that names the object.
//!
//! The sub-label head (`alice`, `bob`) is an extra backbone run per crop. Run on every box of
//! every frame it costs more than the detector (and a blurred, half-visible crop gives a
//! confident wrong name). So, like Frigate's face and plate recognition, an object is tried
//! only on good crops (large enough, sharp; one cut by the frame's edge counts half), at most
//! `min_attempts` times while it has no agreed name and afterwards only when a clearly better
//! crop comes; the name is the one at least `agreement` of the attempts gave, once there have
//! been `min_attempts`. An attempt the head is unsure of votes `unknown`, so a stranger is not
//! named after the closest enrolled person.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::vision::detect::BBox;

/// `[track.sublabel]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubLabelConfig {
    /// Attempts before a name can be agreed (Frigate: 3).
    pub min_attempts: u32,
    /// Share of the attempts that must name the same label (Frigate: 0.6).
    pub agreement: f32,
    /// Attempts an object gets in its whole life.
    pub max_attempts: u32,
    /// Once named, a crop must be this many times better than the best one tried to be tried.
    pub better: f32,
    /// Least crop side, pixels (the shorter one).
    pub min_side_px: u32,
    /// Least sharpness (variance of the Laplacian of the grey crop, 0-255 scale).
    pub min_sharpness: f32,
    /// Least seconds between two attempts on one object (consecutive frames are near copies).
    pub min_interval_s: f64,
}

impl Default for SubLabelConfig {
    fn default() -> Self {
        SubLabelConfig {
            min_attempts: 3,
            agreement: 0.6,
            max_attempts: 10,
            better: 1.25,
            min_side_px: 32,
            min_sharpness: 10.0,
            min_interval_s: 0.2,
        }
    }
}

impl SubLabelConfig {
    /// Range rules; each message names the key and what is allowed.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=50).contains(&self.min_attempts) {
            p.push(format!(
                "[track.sublabel].min_attempts = {} is out of range; allowed: 1 to 50",
                self.min_attempts
            ));
        }
        if self.max_attempts < self.min_attempts || self.max_attempts > 1000 {
            p.push(format!(
                "[track.sublabel].max_attempts = {} is out of range; allowed: min_attempts ({}) to 1000",
                self.max_attempts, self.min_attempts
            ));
        }
        if !(self.agreement > 0.0 && self.agreement <= 1.0) {
            p.push(format!(
                "[track.sublabel].agreement = {} is out of range; allowed: above 0 up to 1",
                self.agreement
            ));
        }
        if !(self.better.is_finite() && self.better >= 1.0) {
            p.push(format!(
                "[track.sublabel].better = {} is out of range; allowed: 1.0 or more",
                self.better
            ));
        }
        if !(self.min_sharpness.is_finite() && self.min_sharpness >= 0.0) {
            p.push(format!(
                "[track.sublabel].min_sharpness = {} is out of range; allowed: 0 or more",
                self.min_sharpness
            ));
        }
        if !(self.min_interval_s.is_finite() && (0.0..=60.0).contains(&self.min_interval_s)) {
            p.push(format!(
                "[track.sublabel].min_interval_s = {} is out of range; allowed: 0 to 60",
                self.min_interval_s
            ));
        }
        p
    }
}

/// Why a crop is not worth a sub-label attempt (shown in traces and tests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unfit {
    Small,
    Blurred,
}

/// Quality factor of a crop cut by the frame's edge.
pub const EDGE_PENALTY: f32 = 0.5;

/// How good a crop of `bbox` in `img` is for naming: `Ok(quality)` (larger is better: the
/// crop's shorter side times the square root of its sharpness, both capped, halved when the
/// frame's edge cuts the box) or why it is unfit.
pub fn crop_quality(img: &RgbImage, bbox: &BBox, cfg: &SubLabelConfig) -> Result<f32, Unfit> {
    let (w, h) = (img.width() as f32, img.height() as f32);
    if !bbox.is_finite() {
        return Err(Unfit::Small);
    }
    let side = (bbox.x2 - bbox.x1).min(bbox.y2 - bbox.y1);
    if side < cfg.min_side_px as f32 {
        return Err(Unfit::Small);
    }
    let sharp = sharpness(img, bbox);
    if sharp < cfg.min_sharpness {
        return Err(Unfit::Blurred);
    }
    // Past a point neither size nor sharpness makes the backbone's crop (224 px) better.
    let q = side.min(448.0) * sharp.min(400.0).sqrt();
    // A box touching the frame's edge shows part of the object (a face cut in half): worth
    // half as much, so any whole view wins, but not refused, or a camera that only ever sees
    // people close up (a doorbell) would never name anyone.
    let margin = 2.0;
    let cut = bbox.x1 < margin || bbox.y1 < margin || bbox.x2 > w - margin || bbox.y2 > h - margin;
    Ok(if cut { q * EDGE_PENALTY } else { q })
}

/// Variance of the 4-neighbour Laplacian of the crop's grey levels, sampled on a grid of at
/// most 64x64 points so a large box costs the same as a small one.
fn sharpness(img: &RgbImage, b: &BBox) -> f32 {
    let (x1, y1) = (b.x1.max(0.0) as u32, b.y1.max(0.0) as u32);
    let x2 = (b.x2 as u32).min(img.width().saturating_sub(1));
    let y2 = (b.y2 as u32).min(img.height().saturating_sub(1));
    if x2 < x1 + 3 || y2 < y1 + 3 {
        return 0.0;
    }
    let grey = |x: u32, y: u32| {
        let p = img.get_pixel(x, y).0;
        0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
    };
    let steps = 64u32;
    let (sx, sy) = (((x2 - x1) / steps).max(1), ((y2 - y1) / steps).max(1));
    let (mut n, mut sum, mut sq) = (0f64, 0f64, 0f64);
    let mut y = y1 + 1;
    while y < y2 {
        let mut x = x1 + 1;
        while x < x2 {
            let l = grey(x - 1, y) + grey(x + 1, y) + grey(x, y - 1) + grey(x, y + 1)
                - 4.0 * grey(x, y);
            n += 1.0;
            sum += l as f64;
            sq += (l as f64) * (l as f64);
            x += sx;
        }
        y += sy;
    }
    if n < 2.0 {
        return 0.0;
    }
    let mean = sum / n;
    (sq / n - mean * mean).max(0.0) as f32
}

/// One object's attempts and the name they agree on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Votes {
    /// `(label, score)`; `None` is an attempt the head was unsure of.
    attempts: Vec<(Option<String>, f32)>,
    best_quality: f32,
    last_attempt: Option<f64>,
    agreed: Option<(String, f32)>,
}

impl Votes {
    /// Whether a crop of this quality, seen at `t` seconds, is worth an attempt.
    pub fn wants(&self, quality: f32, t: f64, cfg: &SubLabelConfig) -> bool {
        let n = self.attempts.len() as u32;
        if n >= cfg.max_attempts {
            return false;
        }
        if self
            .last_attempt
            .is_some_and(|last| t - last < cfg.min_interval_s)
        {
            return false;
        }
        if n < cfg.min_attempts || (self.agreed.is_none() && n < cfg.max_attempts) {
            // Still deciding: a not-worse crop is worth it (a clearly worse one adds noise).
            return quality >= self.best_quality / cfg.better;
        }
        quality >= self.best_quality * cfg.better
    }

    /// Records an attempt; true when the agreed name changed.
    pub fn record(
        &mut self,
        label: Option<String>,
        score: f32,
        quality: f32,
        t: f64,
        cfg: &SubLabelConfig,
    ) -> bool {
        self.attempts.push((label, score));
        self.best_quality = self.best_quality.max(quality);
        self.last_attempt = Some(t);
        let before = self.agreed.clone();
        self.agreed = self.consensus(cfg);
        before != self.agreed
    }

    fn consensus(&self, cfg: &SubLabelConfig) -> Option<(String, f32)> {
        let n = self.attempts.len();
        if (n as u32) < cfg.min_attempts {
            return None;
        }
        let mut tally: Vec<(&str, usize, f32)> = Vec::new();
        for (label, score) in &self.attempts {
            let Some(l) = label.as_deref() else { continue };
            match tally.iter_mut().find(|(t, _, _)| *t == l) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += score;
                }
                None => tally.push((l, 1, *score)),
            }
        }
        let (label, count, total) = tally.into_iter().max_by_key(|e| e.1)?;
        (count as f32 >= cfg.agreement * n as f32 - 1e-4)
            .then(|| (label.to_owned(), total / count as f32))
    }

    /// The agreed name and the mean score of the attempts that gave it.
    pub fn agreed(&self) -> Option<(&str, f32)> {
        self.agreed.as_ref().map(|(l, s)| (l.as_str(), *s))
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> usize {
        self.attempts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn cfg() -> SubLabelConfig {
        SubLabelConfig::default()
    }

    fn checker(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                Rgb([240, 240, 240])
            } else {
                Rgb([20, 20, 20])
            }
        })
    }

    fn bx(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox { x1, y1, x2, y2 }
    }

    #[test]
    fn small_cut_and_blurred_crops_are_unfit_and_sharp_large_ones_rank_higher() {
        let img = checker(320, 240);
        let c = cfg();
        assert_eq!(
            crop_quality(&img, &bx(10.0, 10.0, 30.0, 200.0), &c),
            Err(Unfit::Small)
        );
        let whole = crop_quality(&img, &bx(10.0, 10.0, 110.0, 200.0), &c).expect("fit");
        let cut = crop_quality(&img, &bx(0.0, 10.0, 100.0, 200.0), &c).expect("cut but fit");
        assert!(cut < whole * 0.6, "cut {cut} vs whole {whole}");
        let flat = RgbImage::from_pixel(320, 240, Rgb([128, 128, 128]));
        assert_eq!(
            crop_quality(&flat, &bx(10.0, 10.0, 100.0, 200.0), &c),
            Err(Unfit::Blurred)
        );
        let small = crop_quality(&img, &bx(10.0, 10.0, 50.0, 60.0), &c).expect("fit");
        let large = crop_quality(&img, &bx(10.0, 10.0, 200.0, 220.0), &c).expect("fit");
        assert!(large > small, "{large} vs {small}");
        assert_eq!(
            crop_quality(&img, &bx(f32::NAN, 10.0, 50.0, 60.0), &c),
            Err(Unfit::Small)
        );
    }

    #[test]
    fn a_name_needs_three_attempts_and_sixty_percent() {
        let c = cfg();
        let mut v = Votes::default();
        assert!(!v.record(Some("alice".into()), 0.9, 10.0, 0.0, &c));
        assert!(!v.record(Some("alice".into()), 0.8, 10.0, 1.0, &c));
        assert_eq!(v.agreed(), None, "two attempts are not enough");
        assert!(v.record(Some("bob".into()), 0.7, 10.0, 2.0, &c));
        let (name, score) = v.agreed().expect("2 of 3 agree");
        assert_eq!(name, "alice");
        assert!((score - 0.85).abs() < 1e-5);
        // Unsure attempts vote against every name.
        let mut u = Votes::default();
        u.record(None, 0.3, 10.0, 0.0, &c);
        u.record(None, 0.3, 10.0, 1.0, &c);
        u.record(Some("alice".into()), 0.6, 10.0, 2.0, &c);
        assert_eq!(u.agreed(), None, "a stranger is not named");
    }

    #[test]
    fn once_named_only_a_clearly_better_crop_is_tried_and_attempts_are_capped() {
        let c = cfg();
        let mut v = Votes::default();
        assert!(v.wants(10.0, 0.0, &c));
        for t in 0..3 {
            v.record(Some("alice".into()), 0.9, 10.0, t as f64, &c);
        }
        assert!(v.agreed().is_some());
        assert!(!v.wants(11.0, 10.0, &c), "not clearly better");
        assert!(v.wants(12.6, 10.0, &c), "1.26x better");
        assert!(!v.wants(20.0, 2.1, &c), "too soon after the last attempt");
        let mut w = Votes::default();
        for t in 0..c.max_attempts {
            assert!(w.wants(10.0, t as f64, &c));
            w.record(None, 0.2, 10.0, t as f64, &c);
        }
        assert!(!w.wants(1000.0, 100.0, &c), "the cap holds");
        assert!(!w.wants(5.0, 100.0, &c));
    }

    #[test]
    fn config_ranges_are_checked() {
        assert!(SubLabelConfig::default().validate().is_empty());
        let bad = SubLabelConfig {
            min_attempts: 0,
            agreement: 1.5,
            better: 0.5,
            ..SubLabelConfig::default()
        };
        let p = bad.validate();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("[track.sublabel].min_attempts"));
    }
}
