//! The recent frames of one camera, so a `label` command names the picture the person saw:
//! `{"frame_id": N, "detection": i}` or `{"frame_id": N, "box": [...]}` finds frame N here,
//! however many frames came since. Bounded by age and by memory (`[frames]`), oldest out
//! first; a frame is the same `Arc` the latest-frame slot holds, so keeping it costs no copy.

use std::collections::VecDeque;
use std::sync::Arc;

use image::RgbImage;

use crate::wire::Item;

/// One processed frame.
#[derive(Debug, Clone)]
pub struct KeptFrame {
    pub frame_id: u64,
    pub time_unix_ms: i64,
    pub image: Arc<RgbImage>,
    pub items: Vec<Item>,
    /// A classifier's embedding of the whole frame.
    pub embedding: Option<Vec<f32>>,
}

impl KeptFrame {
    fn bytes(&self) -> usize {
        self.image.as_raw().len()
            + self.embedding.as_ref().map_or(0, |e| e.len() * 4)
            + self.items.len() * 64
    }
}

/// The ring.
#[derive(Debug)]
pub struct FrameRing {
    frames: VecDeque<KeptFrame>,
    bytes: usize,
    keep_ms: i64,
    max_bytes: usize,
}

/// Why a frame cannot be found.
#[derive(Debug, Clone, PartialEq)]
pub enum Missing {
    /// Older than the oldest kept.
    Gone { oldest: Option<u64>, keep_s: f64 },
    /// Newer than the newest processed (or skipped by the motion gate or the fps cap).
    NotProcessed { newest: Option<u64> },
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Gone { oldest, keep_s } => write!(
                f,
                "that frame has left the buffer (it keeps {keep_s} s within [frames].max_mb; \
                 the oldest kept is {}): label a newer frame, or raise [frames].keep_s",
                oldest.map_or("none".into(), |o| o.to_string())
            ),
            Missing::NotProcessed { newest } => write!(
                f,
                "no processed frame has that frame_id (the newest is {}); use a frame_id from \
                 this camera's `detections`",
                newest.map_or("none".into(), |o| o.to_string())
            ),
        }
    }
}

impl FrameRing {
    pub fn new(keep_s: f64, max_mb: u32) -> FrameRing {
        FrameRing {
            frames: VecDeque::new(),
            bytes: 0,
            keep_ms: (keep_s * 1000.0) as i64,
            max_bytes: max_mb as usize * 1024 * 1024,
        }
    }

    /// Keeps a frame (the newest), dropping what age and memory no longer allow; the newest
    /// frame itself is always kept, whatever its size.
    pub fn push(&mut self, frame: KeptFrame) {
        let now = frame.time_unix_ms;
        self.bytes += frame.bytes();
        self.frames.push_back(frame);
        while self.frames.len() > 1 {
            let Some(oldest) = self.frames.front() else {
                break;
            };
            if self.bytes <= self.max_bytes && now - oldest.time_unix_ms <= self.keep_ms {
                break;
            }
            if let Some(f) = self.frames.pop_front() {
                self.bytes -= f.bytes();
            }
        }
    }

    /// Frame `frame_id`, or why it is not here.
    pub fn get(&self, frame_id: u64) -> Result<&KeptFrame, Missing> {
        if let Some(f) = self.frames.iter().rev().find(|f| f.frame_id == frame_id) {
            return Ok(f);
        }
        let oldest = self.frames.front().map(|f| f.frame_id);
        let newest = self.frames.back().map(|f| f.frame_id);
        match oldest {
            Some(o) if frame_id < o => Err(Missing::Gone {
                oldest,
                keep_s: self.keep_ms as f64 / 1000.0,
            }),
            _ => Err(Missing::NotProcessed { newest }),
        }
    }

    /// The newest frame.
    pub fn latest(&self) -> Option<&KeptFrame> {
        self.frames.back()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Memory held, bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The box's pixels (at least 1x1, clipped to the frame).
pub fn crop(img: &RgbImage, bbox: [f32; 4]) -> RgbImage {
    let (w, h) = img.dimensions();
    let x1 = (bbox[0].max(0.0) as u32).min(w.saturating_sub(1));
    let y1 = (bbox[1].max(0.0) as u32).min(h.saturating_sub(1));
    let x2 = (bbox[2].ceil().max(0.0) as u32).clamp(x1 + 1, w.max(x1 + 1));
    let y2 = (bbox[3].ceil().max(0.0) as u32).clamp(y1 + 1, h.max(y1 + 1));
    image::imageops::crop_imm(img, x1, y1, (x2 - x1).min(w - x1), (y2 - y1).min(h - y1)).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_are_clipped_and_never_empty() {
        let img = RgbImage::new(100, 50);
        assert_eq!(crop(&img, [10.0, 10.0, 20.5, 30.0]).dimensions(), (11, 20));
        assert_eq!(
            crop(&img, [-5.0, -5.0, 500.0, 500.0]).dimensions(),
            (100, 50)
        );
        assert_eq!(crop(&img, [99.9, 49.9, 99.9, 49.9]).dimensions(), (1, 1));
        assert_eq!(crop(&img, [f32::NAN, 0.0, 10.0, 10.0]).dimensions().1, 10);
    }

    fn frame(id: u64, ms: i64, side: u32) -> KeptFrame {
        KeptFrame {
            frame_id: id,
            time_unix_ms: ms,
            image: Arc::new(RgbImage::new(side, side)),
            items: Vec::new(),
            embedding: None,
        }
    }

    #[test]
    fn frames_leave_by_age_and_by_memory_and_say_why_they_are_missing() {
        let mut r = FrameRing::new(2.0, 1);
        for i in 0..10 {
            r.push(frame(i, i as i64 * 500, 100));
        }
        // 30 KB frames: memory allows ~34, age 2 s = 5 frames at 2 fps.
        assert_eq!(r.len(), 5);
        assert_eq!(r.get(9).map(|f| f.frame_id), Ok(9));
        assert!(matches!(
            r.get(3),
            Err(Missing::Gone {
                oldest: Some(5),
                ..
            })
        ));
        assert!(r
            .get(3)
            .unwrap_err()
            .to_string()
            .contains("left the buffer"));
        assert!(matches!(
            r.get(42),
            Err(Missing::NotProcessed { newest: Some(9) })
        ));
        // 1 MB budget: 700x700x3 = 1.47 MB, so each new big frame pushes out everything older.
        r.push(frame(10, 5000, 700));
        r.push(frame(11, 5100, 700));
        assert_eq!(r.len(), 1, "the newest is kept even over the budget");
        assert_eq!(r.latest().map(|f| f.frame_id), Some(11));
        assert_eq!(r.bytes(), 700 * 700 * 3);
    }
}
