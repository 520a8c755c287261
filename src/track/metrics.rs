//! How good a tracker's identities are, against ground truth: IDF1 (Ristani et al., 2016) and
//! CLEAR-MOT identity switches and MOTA (Bernardin & Stiefelhagen, 2008), the figures
//! tracking benchmarks report.
//!
//! IDF1 asks "for how many boxes did the tracker give the right identity", with the best
//! one-to-one mapping of true identities to tracker ids over the whole sequence; an identity
//! switch is a true object whose matched tracker id changes from one frame to a later one.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::assign::best_pairs;
use crate::vision::detect::BBox;

/// The boxes of one frame: (identity, box) for the truth and for the tracker.
#[derive(Debug, Clone, Default)]
pub struct FrameBoxes {
    pub truth: Vec<(u64, BBox)>,
    pub tracked: Vec<(u64, BBox)>,
}

/// A sequence's scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    pub idf1: f64,
    /// Identity precision and recall.
    pub idp: f64,
    pub idr: f64,
    pub id_switches: u32,
    /// 1 - (misses + false positives + switches) / true boxes.
    pub mota: f64,
    pub truth_boxes: usize,
    pub tracked_boxes: usize,
    /// Truth boxes matched to a tracked box in their frame.
    pub matched: usize,
}

/// Scores `frames`; a tracked box matches a true one when their IoU is at least `min_iou`
/// (0.5 in the benchmarks).
pub fn evaluate(frames: &[FrameBoxes], min_iou: f32) -> Scores {
    let truth_boxes: usize = frames.iter().map(|f| f.truth.len()).sum();
    let tracked_boxes: usize = frames.iter().map(|f| f.tracked.len()).sum();

    // IDF1: frames in which each (true id, tracked id) pair overlaps, then the best mapping.
    let mut together: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    for f in frames {
        for (g, gb) in &f.truth {
            for (h, hb) in &f.tracked {
                if gb.iou(hb) >= min_iou {
                    *together.entry((*g, *h)).or_default() += 1;
                }
            }
        }
    }
    let gts: Vec<u64> = together
        .keys()
        .map(|k| k.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let hs: Vec<u64> = together
        .keys()
        .map(|k| k.1)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut m = vec![0.0f32; gts.len() * hs.len()];
    for ((g, h), n) in &together {
        let (r, c) = (index(&gts, *g), index(&hs, *h));
        m[r * hs.len() + c] = *n as f32;
    }
    let idtp: f64 = best_pairs(&m, gts.len(), hs.len(), 0.5)
        .iter()
        .map(|&(r, c)| f64::from(m[r * hs.len() + c]))
        .sum();
    let ratio = |num: f64, den: usize| if den == 0 { 1.0 } else { num / den as f64 };

    // CLEAR MOT: per frame, keep last frame's pairs that still overlap, match the rest.
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut matched, mut switches) = (0usize, 0u32);
    for f in frames {
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        let mut gt_used = vec![false; f.truth.len()];
        let mut tr_used = vec![false; f.tracked.len()];
        for (gi, (g, gb)) in f.truth.iter().enumerate() {
            let Some(h) = last.get(g) else { continue };
            if let Some(ti) = f
                .tracked
                .iter()
                .position(|(id, tb)| id == h && gb.iou(tb) >= min_iou)
            {
                if !tr_used[ti] {
                    pairs.push((gi, ti));
                    gt_used[gi] = true;
                    tr_used[ti] = true;
                }
            }
        }
        let rest_g: Vec<usize> = (0..f.truth.len()).filter(|&i| !gt_used[i]).collect();
        let rest_t: Vec<usize> = (0..f.tracked.len()).filter(|&i| !tr_used[i]).collect();
        let mut iou = vec![0.0f32; rest_g.len() * rest_t.len()];
        for (r, &gi) in rest_g.iter().enumerate() {
            for (c, &ti) in rest_t.iter().enumerate() {
                iou[r * rest_t.len() + c] = f.truth[gi].1.iou(&f.tracked[ti].1);
            }
        }
        for (r, c) in best_pairs(&iou, rest_g.len(), rest_t.len(), min_iou) {
            pairs.push((rest_g[r], rest_t[c]));
        }
        for (gi, ti) in pairs {
            matched += 1;
            let (g, h) = (f.truth[gi].0, f.tracked[ti].0);
            if let Some(prev) = last.insert(g, h) {
                if prev != h {
                    switches += 1;
                }
            }
        }
    }
    let misses = truth_boxes - matched;
    let false_pos = tracked_boxes - matched;
    Scores {
        idf1: ratio(2.0 * idtp, truth_boxes + tracked_boxes),
        idp: ratio(idtp, tracked_boxes),
        idr: ratio(idtp, truth_boxes),
        id_switches: switches,
        mota: if truth_boxes == 0 {
            1.0
        } else {
            1.0 - (misses + false_pos + switches as usize) as f64 / truth_boxes as f64
        },
        truth_boxes,
        tracked_boxes,
        matched,
    }
}

fn index(sorted: &[u64], v: u64) -> usize {
    sorted.binary_search(&v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x: f32) -> BBox {
        BBox {
            x1: x,
            y1: 0.0,
            x2: x + 10.0,
            y2: 10.0,
        }
    }

    #[test]
    fn perfect_tracking_scores_one_whatever_the_ids_are_called() {
        let frames: Vec<FrameBoxes> = (0..10)
            .map(|i| FrameBoxes {
                truth: vec![(1, b(i as f32)), (2, b(100.0 - i as f32))],
                tracked: vec![(70, b(i as f32)), (71, b(100.0 - i as f32))],
            })
            .collect();
        let s = evaluate(&frames, 0.5);
        assert_eq!((s.idf1, s.id_switches, s.mota), (1.0, 0, 1.0));
    }

    #[test]
    fn a_swap_halfway_is_one_switch_per_object_and_halves_idf1() {
        let frames: Vec<FrameBoxes> = (0..10)
            .map(|i| {
                let (a, c) = if i < 5 { (7, 8) } else { (8, 7) };
                FrameBoxes {
                    truth: vec![(1, b(0.0)), (2, b(50.0))],
                    tracked: vec![(a, b(0.0)), (c, b(50.0))],
                }
            })
            .collect();
        let s = evaluate(&frames, 0.5);
        assert_eq!(s.id_switches, 2);
        assert!((s.idf1 - 0.5).abs() < 1e-9, "{s:?}");
        assert_eq!(s.matched, 20);
    }

    #[test]
    fn misses_and_false_positives_lower_idf1_and_mota() {
        let frames = vec![
            FrameBoxes {
                truth: vec![(1, b(0.0))],
                tracked: vec![],
            },
            FrameBoxes {
                truth: vec![(1, b(0.0))],
                tracked: vec![(5, b(0.0)), (6, b(200.0))],
            },
        ];
        let s = evaluate(&frames, 0.5);
        // IDTP 1 of 2 true and 2 tracked boxes.
        assert!((s.idf1 - 0.5).abs() < 1e-9, "{s:?}");
        assert!((s.mota - 0.0).abs() < 1e-9, "{s:?}");
        assert_eq!(evaluate(&[], 0.5).idf1, 1.0);
    }
}
