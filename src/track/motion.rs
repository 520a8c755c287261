//! A box that moves at constant velocity between observations: the prediction the tracker
//! matches new detections against.
//!
//! An alpha-beta filter on centre and size (the steady-state form of the constant-velocity
//! Kalman filter ByteTrack and SORT use): each observation pulls the position most of the way
//! to what was seen and the velocity a little towards the implied one, so a detector's jitter
//! does not become speed, and an object hidden behind another for a second is looked for
//! where it was heading.

use crate::vision::detect::BBox;

/// How far a position follows an observation (1 = entirely).
const ALPHA: f32 = 0.75;
/// How far the velocity follows the one an observation implies.
const BETA: f32 = 0.3;
/// Velocities are clamped to this many box sizes per second: one bad match must not fling a
/// prediction across the frame.
const MAX_SPEED_SIZES: f32 = 4.0;
/// Seconds of unseen motion a prediction extrapolates; past that the box is held where the
/// coast ended. An object hidden behind another for a second or two keeps its heading (a
/// walker does not turn behind a tree), but a velocity estimated from a few jittery or half
/// hidden boxes, run for five seconds, would carry the box far from where the object
/// reappears; the tracker's re-association gate grows with the time lost instead.
pub const MAX_COAST_S: f32 = 2.0;

/// Centre, size and their rates of change per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxMotion {
    cx: f32,
    cy: f32,
    w: f32,
    h: f32,
    vx: f32,
    vy: f32,
    vw: f32,
    vh: f32,
}

impl BoxMotion {
    /// At rest where it was first seen.
    pub fn new(b: &BBox) -> BoxMotion {
        let (cx, cy, w, h) = parts(b);
        BoxMotion {
            cx,
            cy,
            w,
            h,
            vx: 0.0,
            vy: 0.0,
            vw: 0.0,
            vh: 0.0,
        }
    }

    /// Where the box is expected `dt` seconds after its last update (extrapolated for at
    /// most [`MAX_COAST_S`] of it).
    pub fn predict(&self, dt: f32) -> BBox {
        let dt = dt.clamp(0.0, MAX_COAST_S);
        let w = (self.w + self.vw * dt).max(self.w * 0.5);
        let h = (self.h + self.vh * dt).max(self.h * 0.5);
        from_parts(self.cx + self.vx * dt, self.cy + self.vy * dt, w, h)
    }

    /// Folds in an observation made `dt` seconds after the last update.
    pub fn update(&mut self, b: &BBox, dt: f32) {
        let (zx, zy, zw, zh) = parts(b);
        if dt <= 0.0 {
            // Same instant (a replayed frame): take the observation, keep the velocity.
            self.cx = zx;
            self.cy = zy;
            self.w = zw;
            self.h = zh;
            return;
        }
        // The prior is the prediction, coast cap included; the velocity's correction is over
        // the whole gap (a long-lost object's old speed should not jump by its distance).
        let coast = dt.min(MAX_COAST_S);
        let (px, py) = (self.cx + self.vx * coast, self.cy + self.vy * coast);
        let (pw, ph) = (
            (self.w + self.vw * coast).max(self.w * 0.5),
            (self.h + self.vh * coast).max(self.h * 0.5),
        );
        let (rx, ry, rw, rh) = (zx - px, zy - py, zw - pw, zh - ph);
        self.cx = px + ALPHA * rx;
        self.cy = py + ALPHA * ry;
        self.w = (pw + ALPHA * rw).max(1e-6);
        self.h = (ph + ALPHA * rh).max(1e-6);
        let limit = MAX_SPEED_SIZES * self.w.max(self.h);
        self.vx = (self.vx + BETA * rx / dt).clamp(-limit, limit);
        self.vy = (self.vy + BETA * ry / dt).clamp(-limit, limit);
        self.vw = (self.vw + BETA * rw / dt).clamp(-limit, limit);
        self.vh = (self.vh + BETA * rh / dt).clamp(-limit, limit);
    }

    /// The filtered box now.
    pub fn current(&self) -> BBox {
        from_parts(self.cx, self.cy, self.w, self.h)
    }

    /// Speed of the centre, in box heights per second: how `stationary` is decided.
    pub fn speed_in_heights(&self) -> f32 {
        (self.vx * self.vx + self.vy * self.vy).sqrt() / self.h.max(1e-6)
    }
}

fn parts(b: &BBox) -> (f32, f32, f32, f32) {
    (
        (b.x1 + b.x2) * 0.5,
        (b.y1 + b.y2) * 0.5,
        (b.x2 - b.x1).max(1e-6),
        (b.y2 - b.y1).max(1e-6),
    )
}

fn from_parts(cx: f32, cy: f32, w: f32, h: f32) -> BBox {
    BBox {
        x1: cx - w * 0.5,
        y1: cy - h * 0.5,
        x2: cx + w * 0.5,
        y2: cy + h * 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f32) -> BBox {
        BBox {
            x1: x,
            y1: 10.0,
            x2: x + 20.0,
            y2: 50.0,
        }
    }

    #[test]
    fn a_steady_mover_is_predicted_ahead() {
        let mut m = BoxMotion::new(&at(0.0));
        for i in 1..=20 {
            m.update(&at(i as f32 * 10.0), 0.1); // 100 px/s
        }
        let p = m.predict(0.5);
        let expect = at(200.0 + 50.0);
        assert!((p.x1 - expect.x1).abs() < 5.0, "{p:?} vs {expect:?}");
        assert!((p.y1 - 10.0).abs() < 0.5, "{p:?}");
    }

    #[test]
    fn a_long_lost_box_coasts_then_stays() {
        let mut m = BoxMotion::new(&at(0.0));
        for i in 1..=20 {
            m.update(&at(i as f32 * 10.0), 0.1); // 100 px/s
        }
        let coasted = m.predict(MAX_COAST_S);
        let later = m.predict(MAX_COAST_S + 3.0);
        assert!(coasted.x1 > 200.0 + 150.0, "still heading on: {coasted:?}");
        assert_eq!(coasted, later, "held after the coast");
    }

    #[test]
    fn jitter_in_place_does_not_become_speed() {
        let mut m = BoxMotion::new(&at(100.0));
        for i in 0..40 {
            let wobble = if i % 2 == 0 { 2.0 } else { -2.0 };
            m.update(&at(100.0 + wobble), 0.1);
        }
        // ±5 % of its height at 10 fps, the worst (alternating) case: a walker does 0.5 to
        // 1 heights per second, this stays well under a fifth of that.
        assert!(m.speed_in_heights() < 0.2, "{}", m.speed_in_heights());
    }

    #[test]
    fn a_wild_observation_cannot_fling_the_prediction_away() {
        let mut m = BoxMotion::new(&at(0.0));
        m.update(&at(10_000.0), 0.01);
        let p = m.predict(1.0);
        // At most 4 box sizes (40 px high box -> 160 px/s) plus the pulled position.
        assert!(p.x1 < 10_000.0 * ALPHA + 200.0, "{p:?}");
    }
}
