//! Forward and backward passes of the tail's ops, on one sample's `[channels, positions]`
//! activations (NCHW with the batch of one and the spatial dimensions flattened).
//!
//! Why written here rather than taken from a training library: the tail has four kinds of
//! op, each a few lines forward and backward, and the heavy two (the pointwise convolution's
//! forward and its weight gradient) are one GEMM each, done by `matrixmultiply` (pure Rust,
//! AVX2/FMA and NEON detected at run time). `burn` and `candle` would bring a tensor runtime
//! of their own (and, for candle's fast paths, C/C++ kernels or system BLAS) to run exactly
//! these GEMMs; neither would be faster at this size on one core. Every op's gradient is
//! checked against finite differences in the tests below.

/// `c[m x n] = alpha * a[m x k] . b[k x n] + beta * c`, all row-major unless `trans_*`.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    beta: f32,
    c: &mut [f32],
) {
    // The sizes come from the tail's validated shapes; a mismatch is a bug, and GEMM on
    // short buffers would read out of bounds, so it stops here.
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm shapes"
    );
    let (rsa, csa) = if trans_a { (1, m) } else { (k, 1) };
    let (rsb, csb) = if trans_b { (1, k) } else { (n, 1) };
    // SAFETY: the lengths are checked above, and the strides address exactly the row-major
    // (or transposed) m x k, k x n and m x n matrices inside them.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Pointwise convolution: `y[o, p] = b[o] + sum_i w[o, i] x[i, p]`.
pub fn pointwise_forward(
    w: &[f32],
    b: &[f32],
    (cout, cin, p): (usize, usize, usize),
    x: &[f32],
    y: &mut [f32],
) {
    for (o, row) in y[..cout * p].chunks_exact_mut(p).enumerate() {
        row.fill(b[o]);
    }
    gemm(cout, cin, p, w, false, x, false, 1.0, y);
}

/// Gradients of a pointwise convolution from `dy`: `dw += dy . x^T` (when asked: a
/// biases-only tail skips it, the larger half of the cost), `db += rowsum(dy)`, and
/// `dx = w^T . dy` (when an op before it needs it).
#[allow(clippy::too_many_arguments)]
pub fn pointwise_backward(
    w: &[f32],
    (cout, cin, p): (usize, usize, usize),
    x: &[f32],
    dy: &[f32],
    dw: Option<&mut [f32]>,
    db: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    for (o, row) in dy[..cout * p].chunks_exact(p).enumerate() {
        db[o] += row.iter().sum::<f32>();
    }
    if let Some(dw) = dw {
        gemm(cout, p, cin, dy, false, x, true, 1.0, dw);
    }
    if let Some(dx) = dx {
        gemm(cin, cout, p, w, true, dy, false, 0.0, dx);
    }
}

/// `y = min(max(x, lo), hi)`.
pub fn clip_forward(lo: f32, hi: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x.clamp(lo, hi);
    }
}

/// `dx = dy` where `lo < x < hi`, else 0 (PyTorch's hardtanh rule at the bounds).
pub fn clip_backward(lo: f32, hi: f32, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((dx, &dy), &x) in dx.iter_mut().zip(dy).zip(x) {
        *dx = if x > lo && x < hi { dy } else { 0.0 };
    }
}

/// Mean over positions: `[c, p]` to `[c]`.
pub fn gap_forward((c, p): (usize, usize), x: &[f32], y: &mut [f32]) {
    let inv = 1.0 / p as f32;
    for (y, row) in y[..c].iter_mut().zip(x.chunks_exact(p)) {
        *y = row.iter().sum::<f32>() * inv;
    }
}

/// `dx[c, p] = dy[c] / p`.
pub fn gap_backward((c, p): (usize, usize), dy: &[f32], dx: &mut [f32]) {
    let inv = 1.0 / p as f32;
    for (row, &d) in dx[..c * p].chunks_exact_mut(p).zip(dy) {
        row.fill(d * inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut r = SplitMix64::new(seed);
        (0..n).map(|_| (r.next_f32() * 2.0 - 1.0) * scale).collect()
    }

    /// The loss `sum(y * g)` for a fixed random `g`: its gradient w.r.t. `y` is `g`.
    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    /// Central finite differences of `f` at every coordinate of `at`, against `analytic`.
    fn check(name: &str, at: &[f32], analytic: &[f32], f: impl Fn(&[f32]) -> f64) {
        let h = 1e-2f32;
        let mut worst = 0f64;
        for i in 0..at.len() {
            let (mut plus, mut minus) = (at.to_vec(), at.to_vec());
            plus[i] += h;
            minus[i] -= h;
            let numeric = (f(&plus) - f(&minus)) / (2.0 * h as f64);
            let err = (numeric - analytic[i] as f64).abs() / (1.0 + numeric.abs());
            worst = worst.max(err);
        }
        assert!(
            worst < 2e-3,
            "{name}: worst relative gradient error {worst}"
        );
    }

    #[test]
    fn pointwise_gradients_match_finite_differences() {
        let (cout, cin, p) = (5, 4, 3);
        let w = random(cout * cin, 1, 1.0);
        let b = random(cout, 2, 1.0);
        let x = random(cin * p, 3, 1.0);
        let g = random(cout * p, 4, 1.0);
        let loss = |w: &[f32], b: &[f32], x: &[f32]| {
            let mut y = vec![0.0; cout * p];
            pointwise_forward(w, b, (cout, cin, p), x, &mut y);
            dot(&y, &g)
        };
        let (mut dw, mut db, mut dx) = (vec![0.0; cout * cin], vec![0.0; cout], vec![0.0; cin * p]);
        pointwise_backward(
            &w,
            (cout, cin, p),
            &x,
            &g,
            Some(&mut dw),
            &mut db,
            Some(&mut dx),
        );
        check("dw", &w, &dw, |w| loss(w, &b, &x));
        check("db", &b, &db, |b| loss(&w, b, &x));
        check("dx", &x, &dx, |x| loss(&w, &b, x));
        // The forward against a plain triple loop.
        let mut y = vec![0.0; cout * p];
        pointwise_forward(&w, &b, (cout, cin, p), &x, &mut y);
        for o in 0..cout {
            for q in 0..p {
                let want: f32 = b[o] + (0..cin).map(|i| w[o * cin + i] * x[i * p + q]).sum::<f32>();
                assert!((y[o * p + q] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn clip_and_pool_gradients_match_finite_differences() {
        // Values kept away from the clip's bounds, where the derivative jumps.
        let x: Vec<f32> = random(12, 5, 4.0)
            .into_iter()
            .map(|v| {
                if (v - 0.0).abs() < 0.1 || (v - 3.0).abs() < 0.1 {
                    v + 0.3
                } else {
                    v
                }
            })
            .collect();
        let g = random(12, 6, 1.0);
        let clip_loss = |x: &[f32]| {
            let mut y = vec![0.0; 12];
            clip_forward(0.0, 3.0, x, &mut y);
            dot(&y, &g)
        };
        let mut dx = vec![0.0; 12];
        clip_backward(0.0, 3.0, &x, &g, &mut dx);
        check("clip", &x, &dx, clip_loss);
        let (c, p) = (3, 4);
        let gc = random(c, 7, 1.0);
        let gap_loss = |x: &[f32]| {
            let mut y = vec![0.0; c];
            gap_forward((c, p), x, &mut y);
            dot(&y, &gc)
        };
        let mut dx = vec![0.0; c * p];
        gap_backward((c, p), &gc, &mut dx);
        check("gap", &x, &dx, gap_loss);
    }
}
