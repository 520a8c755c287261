//! The long-running daemon (`adaptd run`): sources, the inference pipeline, MQTT, retraining.
//!
//! - [`pipeline`]: per-frame work on the inference thread: backbone, head, sub-labels of
//!   detections, consensus; the head in service behind an atomic swap.
//! - [`stats`]: frame rate, skipped frames, latency percentiles, temperature.

pub mod pipeline;
pub mod stats;
