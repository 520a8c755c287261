//! The long-running daemon (`adaptd run`): sources, the inference pipeline, MQTT, retraining.
//!
//! - [`annotate`]: detections drawn on the `snapshot` image.
//! - [`pipeline`]: per-frame work on the inference thread: backbone, head, sub-labels of
//!   detections, consensus; the head in service behind an atomic swap.
//! - [`stats`]: frame rate, skipped frames, latency percentiles, temperature.
//! - [`run`]: `adaptd run`: loading, threads, the main loop, signals, shutdown.
//! - [`infer`]: the inference thread (frames or utterances, and jobs that need a backbone),
//!   generic over the [`infer::Analyzer`] of the source's medium.
//! - [`listen`]: the audio analyzer: utterance -> voice print -> head -> speaker, consensus.
//! - [`notify`]: the systemd notify protocol (READY, STATUS, WATCHDOG only while frames
//!   flow, RELOADING, STOPPING).
//! - [`control`]: the command and sample dispatcher behind `reply`.

pub mod annotate;
pub mod control;
pub mod infer;
pub mod listen;
pub mod notify;
pub mod pipeline;
pub mod run;
pub mod stats;
