//! Adam (Kingma & Ba) on one tensor: the update the head trainer and the fine-tuner share.

/// Moment decay rates and epsilon (the usual values).
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPS: f32 = 1e-8;

/// The two moments of one tensor.
#[derive(Debug, Clone)]
pub(crate) struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Moments {
    pub fn new(n: usize) -> Moments {
        Moments {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// One bias-corrected step of `p` along `g` (step number `t`, from 1), with L2 decay
    /// `decay * p` added to the gradient (coupled, not AdamW's decoupled decay).
    pub fn step(&mut self, p: &mut [f32], g: &[f32], lr: f32, t: i32, decay: f32) {
        let step = lr / (1.0 - BETA1.powi(t));
        let inv_bc2 = 1.0 / (1.0 - BETA2.powi(t));
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(&mut self.m).zip(&mut self.v) {
            let g = g + decay * *p;
            *m = BETA1 * *m + (1.0 - BETA1) * g;
            *v = BETA2 * *v + (1.0 - BETA2) * g * g;
            *p -= step * *m / ((*v * inv_bc2).sqrt() + EPS);
        }
    }
}
