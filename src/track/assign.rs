//! Optimal one-to-one assignment (the Hungarian method), for matching tracks to detections
//! and, in [`super::metrics`], ground-truth identities to tracker identities.
//!
//! Greedy "best IoU first" matching is what many small trackers do, and it swaps identities
//! exactly where it matters: two people crossing, where the best single pair is not part of
//! the best overall pairing. The matrices here are tiny (tracks x detections of one class in
//! one frame), so the O(n^2 m) method costs microseconds.

/// Pairs (row, column) that maximise the total of `score[row][col]` over pairs whose score is
/// at least `min_score`; rows and columns appear at most once. `score` is row-major with
/// `cols` columns.
pub fn best_pairs(score: &[f32], rows: usize, cols: usize, min_score: f32) -> Vec<(usize, usize)> {
    if rows == 0 || cols == 0 || score.len() != rows * cols {
        return Vec::new();
    }
    // Costs for a minimising assignment; pairs below the floor cost what being unmatched
    // costs (nothing), so they never displace a real pair, and are dropped afterwards. (A
    // positive cost here would reward the number of pairs as well as their total: with
    // [[0.9, 0.35], [0.35, 0]] it took the two 0.35s over the one 0.9.)
    let big = 0.0f64;
    let cost = |r: usize, c: usize| -> f64 {
        let s = f64::from(score[r * cols + c]);
        if s >= f64::from(min_score) {
            -s
        } else {
            big
        }
    };
    let transposed = rows > cols;
    let (n, m) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let at = |i: usize, j: usize| -> f64 {
        if transposed {
            cost(j, i)
        } else {
            cost(i, j)
        }
    };
    let assignment = hungarian(n, m, at);
    let mut out = Vec::new();
    for (i, j) in assignment.into_iter().enumerate() {
        let Some(j) = j else { continue };
        let (r, c) = if transposed { (j, i) } else { (i, j) };
        if score[r * cols + c] >= min_score {
            out.push((r, c));
        }
    }
    out.sort_unstable();
    out
}

/// Minimum-cost assignment of `n` rows to distinct columns among `m >= n`: `result[i]` is
/// row i's column. The potentials method (Kuhn-Munkres with Dijkstra-like augmentation).
fn hungarian(n: usize, m: usize, cost: impl Fn(usize, usize) -> f64) -> Vec<Option<usize>> {
    // 1-based arrays, index 0 is the virtual start column.
    let mut u = vec![0.0f64; n + 1];
    let mut v = vec![0.0f64; m + 1];
    let mut p = vec![0usize; m + 1]; // p[j]: row matched to column j
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0usize;
            for j in 1..=m {
                if used[j] {
                    continue;
                }
                let cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
                if cur < minv[j] {
                    minv[j] = cur;
                    way[j] = j0;
                }
                if minv[j] < delta {
                    delta = minv[j];
                    j1 = j;
                }
            }
            if j1 == 0 {
                // Only possible with non-finite costs; leave the row unmatched.
                break;
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        // Augment along the path found.
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut result = vec![None; n];
    for j in 1..=m {
        if p[j] > 0 {
            result[p[j] - 1] = Some(j - 1);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_total_beats_the_best_single_pair() {
        // Greedy would take (0,0)=0.9 and leave (1,1)=0.1: total 1.0. Best: 0.8 + 0.7.
        let s = [0.9, 0.8, 0.7, 0.1];
        assert_eq!(best_pairs(&s, 2, 2, 0.05), vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn pairs_below_the_floor_are_never_made() {
        let s = [0.9, 0.0, 0.0, 0.2];
        assert_eq!(best_pairs(&s, 2, 2, 0.3), vec![(0, 0)]);
        assert!(best_pairs(&[0.1], 1, 1, 0.3).is_empty());
    }

    #[test]
    fn the_total_is_maximised_not_the_number_of_pairs() {
        // Two weak pairs (0.7) lose to one strong one (0.9); and in the IDF1 mapping, counts
        // 10 + 0 beat 5 + 4.
        let s = [0.9, 0.35, 0.35, 0.0];
        assert_eq!(best_pairs(&s, 2, 2, 0.3), vec![(0, 0)]);
        let n = [10.0, 5.0, 4.0, 0.0];
        assert_eq!(best_pairs(&n, 2, 2, 0.5), vec![(0, 0)]);
    }

    #[test]
    fn rectangular_in_both_directions() {
        // 3 rows x 2 columns.
        let s = [0.1, 0.9, 0.8, 0.2, 0.5, 0.5];
        assert_eq!(best_pairs(&s, 3, 2, 0.05), vec![(0, 1), (1, 0)]);
        // 2 rows x 3 columns.
        let s = [0.1, 0.8, 0.5, 0.9, 0.2, 0.5];
        assert_eq!(best_pairs(&s, 2, 3, 0.05), vec![(0, 1), (1, 0)]);
        assert!(best_pairs(&[], 0, 3, 0.0).is_empty());
    }

    #[test]
    fn agrees_with_brute_force_on_random_matrices() {
        let mut rng = crate::rng::SplitMix64::new(42);
        for _ in 0..300 {
            let rows = 1 + (rng.next_u64() % 5) as usize;
            let cols = 1 + (rng.next_u64() % 5) as usize;
            let s: Vec<f32> = (0..rows * cols)
                .map(|_| (rng.next_u64() % 1000) as f32 / 1000.0)
                .collect();
            let floor = 0.3;
            let total = |pairs: &[(usize, usize)]| -> f32 {
                pairs.iter().map(|&(r, c)| s[r * cols + c]).sum()
            };
            let got = total(&best_pairs(&s, rows, cols, floor));
            let want = brute(&s, rows, cols, floor, 0, &mut vec![false; cols]);
            assert!(
                (got - want).abs() < 1e-4,
                "{rows}x{cols}: {got} vs {want} {s:?}"
            );
        }
    }

    fn brute(
        s: &[f32],
        rows: usize,
        cols: usize,
        floor: f32,
        r: usize,
        used: &mut Vec<bool>,
    ) -> f32 {
        if r == rows {
            return 0.0;
        }
        let mut best = brute(s, rows, cols, floor, r + 1, used);
        for c in 0..cols {
            if !used[c] && s[r * cols + c] >= floor {
                used[c] = true;
                best = best.max(s[r * cols + c] + brute(s, rows, cols, floor, r + 1, used));
                used[c] = false;
            }
        }
        best
    }
}
