//! Running statistics for the `stats` topic: frame rate, skipped frames, latency percentiles
//! and the board's temperature.
//!
//! Latencies live in a fixed ring (the last 256 frames) so memory stays flat over months and
//! the percentiles describe now, not the average since boot.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The last `capacity` durations, with nearest-rank percentiles.
#[derive(Debug, Clone)]
pub struct LatencyRing {
    samples: VecDeque<f64>,
    capacity: usize,
}

impl LatencyRing {
    pub fn new(capacity: usize) -> LatencyRing {
        LatencyRing {
            samples: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, d: Duration) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(d.as_secs_f64() * 1e3);
    }

    /// Nearest-rank percentile in milliseconds (`q` in 0..=1); 0 when empty.
    pub fn percentile(&self, q: f64) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let mut v: Vec<f64> = self.samples.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }
}

/// Frames per second over a sliding window of frame times.
#[derive(Debug, Clone)]
pub struct FpsMeter {
    times: VecDeque<Instant>,
    window: Duration,
}

impl FpsMeter {
    pub fn new(window: Duration) -> FpsMeter {
        FpsMeter {
            times: VecDeque::new(),
            window,
        }
    }

    pub fn tick(&mut self, now: Instant) {
        self.times.push_back(now);
        while let Some(&first) = self.times.front() {
            if now.duration_since(first) > self.window {
                self.times.pop_front();
            } else {
                break;
            }
        }
    }

    /// Frames per second over the window (0 with fewer than two frames).
    pub fn fps(&self) -> f64 {
        match (self.times.front(), self.times.back()) {
            (Some(a), Some(b)) if self.times.len() > 1 => {
                let span = b.duration_since(*a).as_secs_f64();
                if span > 0.0 {
                    (self.times.len() - 1) as f64 / span
                } else {
                    0.0
                }
            }
            _ => 0.0,
        }
    }
}

/// The SoC temperature in °C where the board exposes it (Raspberry Pi, Jetson: thermal
/// zone 0), `None` elsewhere.
pub fn cpu_temperature() -> Option<f64> {
    read_millidegrees(Path::new("/sys/class/thermal/thermal_zone0/temp"))
}

fn read_millidegrees(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse::<f64>().ok().map(|m| m / 1000.0)
}

/// What the `stats` topic carries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsSnapshot {
    pub fps: f64,
    pub frames: u64,
    /// Frames the source delivered while the inference thread was busy (latest-frame slot).
    pub skipped_frames: u64,
    /// Frames left out to hold the `set fps` cap.
    pub throttled_frames: u64,
    /// Frames the motion gate skipped: nothing moved (`[motion]`).
    pub motion_skipped_frames: u64,
    /// Frames waiting for the inference thread: 0 or 1, since the slot keeps only the newest.
    pub queued_frames: u64,
    pub inference_ms_p50: f64,
    pub inference_ms_p95: f64,
    pub paused: bool,
    pub source_state: String,
    pub head_version: Option<u32>,
    pub head_macro_f1: Option<f64>,
    pub training: String,
    pub samples: std::collections::BTreeMap<String, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_temp_c: Option<f64>,
    pub mqtt_reconnects: u64,
    /// Messages not sent: the link was down, its queue full, or a message too large.
    pub mqtt_dropped: u64,
    pub uptime_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_latest_and_ranks() {
        let mut r = LatencyRing::new(10);
        for ms in 1..=20 {
            r.push(Duration::from_millis(ms));
        }
        assert_eq!(r.percentile(0.5), 15.0);
        assert_eq!(r.percentile(0.95), 20.0);
        assert_eq!(LatencyRing::new(4).percentile(0.5), 0.0);
    }

    #[test]
    fn fps_over_the_window() {
        let mut m = FpsMeter::new(Duration::from_secs(5));
        let t0 = Instant::now();
        for i in 0..11 {
            m.tick(t0 + Duration::from_millis(100 * i));
        }
        assert!((m.fps() - 10.0).abs() < 1e-6);
        m.tick(t0 + Duration::from_secs(60));
        assert_eq!(m.fps(), 0.0, "old frames leave the window");
    }

    #[test]
    fn temperature_file_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("temp");
        std::fs::write(&p, "48312\n").unwrap();
        assert_eq!(read_millidegrees(&p), Some(48.312));
        assert_eq!(read_millidegrees(&dir.path().join("none")), None);
    }
}
