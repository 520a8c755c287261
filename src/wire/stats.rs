//! `<base>/stats`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One stream's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraStats {
    pub fps: f64,
    pub frames: u64,
    pub skipped_frames: u64,
    pub throttled_frames: u64,
    pub motion_skipped_frames: u64,
    pub queued_frames: u64,
    pub inference_ms_p50: f64,
    pub inference_ms_p95: f64,
    pub paused: bool,
    pub source_state: String,
    pub head_version: Option<u32>,
    pub head_macro_f1: Option<f64>,
}

/// The device's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub uptime_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_temp_c: Option<f64>,
    pub mqtt_reconnects: u64,
    pub mqtt_dropped: u64,
    pub training: String,
    pub cameras: BTreeMap<String, CameraStats>,
    pub samples: BTreeMap<String, usize>,
}
