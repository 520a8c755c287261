//! `<base>/stats`: the device's figures every `[mqtt].stats_interval_secs`, with one entry per
//! stream under `cameras`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::lenient::{lenient, lenient_map};

/// One stream's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CameraStats {
    /// Frames processed per second over the last 10 s.
    #[serde(deserialize_with = "lenient")]
    pub fps: f64,
    #[serde(deserialize_with = "lenient")]
    pub frames: u64,
    /// Frames the source delivered while inference was busy (the newest frame wins).
    #[serde(deserialize_with = "lenient")]
    pub skipped_frames: u64,
    /// Frames left out to hold a `set fps` cap.
    #[serde(deserialize_with = "lenient")]
    pub throttled_frames: u64,
    /// Frames the motion gate left out: nothing moved.
    #[serde(deserialize_with = "lenient")]
    pub motion_skipped_frames: u64,
    /// Frames the source itself left out to hold the `fps` cap, before converting them (RTSP:
    /// decoded, not converted; MJPEG pipes: not decoded).
    #[serde(deserialize_with = "lenient")]
    pub source_dropped_frames: u64,
    /// Frames or files the source could not decode.
    #[serde(deserialize_with = "lenient")]
    pub decode_errors: u64,
    /// Times the source got its camera back after losing it.
    #[serde(deserialize_with = "lenient")]
    pub reconnects: u64,
    /// Frames waiting for inference: 0 or 1.
    #[serde(deserialize_with = "lenient")]
    pub queued_frames: u64,
    #[serde(deserialize_with = "lenient")]
    pub inference_ms_p50: f64,
    #[serde(deserialize_with = "lenient")]
    pub inference_ms_p95: f64,
    #[serde(deserialize_with = "lenient")]
    pub paused: bool,
    /// The name of the source's state ([`super::SourceState::name`]), without its details.
    #[serde(deserialize_with = "lenient")]
    pub source_state: String,
    #[serde(deserialize_with = "lenient")]
    pub head_version: Option<u32>,
    /// The head's macro-F1 on its held-out samples when it was trained.
    #[serde(deserialize_with = "lenient")]
    pub head_macro_f1: Option<f64>,
}

/// The device's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    #[serde(deserialize_with = "lenient")]
    pub uptime_s: u64,
    /// The SoC temperature; absent where the board exposes none.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub cpu_temp_c: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub mqtt_reconnects: u64,
    /// Messages not sent: the link was down, its queue full, or a message too large.
    #[serde(deserialize_with = "lenient")]
    pub mqtt_dropped: u64,
    /// `idle` or `running`.
    #[serde(deserialize_with = "lenient")]
    pub training: String,
    #[serde(deserialize_with = "lenient_map")]
    pub cameras: BTreeMap<String, CameraStats>,
    /// Samples per label, summed over the learners.
    #[serde(deserialize_with = "lenient_map")]
    pub samples: BTreeMap<String, usize>,
}

#[cfg(test)]
mod tests {
    use super::super::test_support::round_trip;
    use super::*;
    use serde_json::json;

    #[test]
    fn stats_json() {
        let front = CameraStats {
            fps: 3.98,
            frames: 1210,
            skipped_frames: 1,
            throttled_frames: 2,
            motion_skipped_frames: 3,
            source_dropped_frames: 4,
            decode_errors: 5,
            reconnects: 6,
            queued_frames: 1,
            inference_ms_p50: 27.9,
            inference_ms_p95: 31.2,
            paused: false,
            source_state: "streaming".into(),
            head_version: None,
            head_macro_f1: None,
        };
        let mut stats = Stats {
            uptime_s: 3620,
            cpu_temp_c: Some(51.6),
            mqtt_reconnects: 0,
            mqtt_dropped: 4,
            training: "idle".into(),
            cameras: [("front".to_string(), front)].into(),
            samples: [("alice".to_string(), 14)].into(),
        };
        let expected = json!({"uptime_s": 3620, "cpu_temp_c": 51.6, "mqtt_reconnects": 0,
            "mqtt_dropped": 4, "training": "idle",
            "cameras": {"front": {"fps": 3.98, "frames": 1210, "skipped_frames": 1,
                "throttled_frames": 2, "motion_skipped_frames": 3, "source_dropped_frames": 4,
                "decode_errors": 5, "reconnects": 6, "queued_frames": 1,
                "inference_ms_p50": 27.9, "inference_ms_p95": 31.2, "paused": false,
                "source_state": "streaming", "head_version": null, "head_macro_f1": null}},
            "samples": {"alice": 14}});
        round_trip(&stats, expected.clone());
        // No thermal zone: the field is left out, not null.
        stats.cpu_temp_c = None;
        let mut without = expected;
        without.as_object_mut().unwrap().remove("cpu_temp_c");
        round_trip(&stats, without);
    }

    #[test]
    fn odd_fields_read_as_missing() {
        let s: Stats = super::super::decode(
            br#"{"uptime_s": 1.5, "cpu_temp_c": "hot", "cameras": {"front": {"fps": "fast",
                 "frames": -3, "paused": true}, "back": null}, "samples": {"a": 1, "b": -1}}"#,
        )
        .unwrap();
        assert_eq!(s.uptime_s, 0);
        assert_eq!(s.cpu_temp_c, None);
        assert_eq!(s.cameras.len(), 1);
        let front = &s.cameras["front"];
        assert_eq!((front.fps, front.frames, front.paused), (0.0, 0, true));
        assert_eq!(s.samples, [("a".to_string(), 1)].into());
    }
}
