//! The long-running daemon (`adaptd run`): streams, inference workers, learners, the trainer
//! and the MQTT control plane.
//!
//! Who owns what (one owner per piece of state, everyone else holds a handle):
//! - [`streams`]: a [`streams::StreamHandle`] per camera or microphone; its worker writes the
//!   latest frame and label, the control plane writes pause and force-frame.
//! - [`infer`]: one worker thread per medium owns that medium's loaded models and a lane per
//!   stream, served round-robin; [`pipeline`] (vision) and [`listen`] (audio) are the
//!   per-stream analysis; [`objects`] a camera's tracked objects (ids, sub-label attempts,
//!   `objects` messages) and [`frames`] its recent frames, for `label` commands that name
//!   what the person saw; [`occupancy`] which detections become objects (tracked classes,
//!   masks), their zones, `required_zones` and the occupancy counts.
//! - [`recorder`]: the thread that writes object changes to the event store.
//! - [`false_positives`]: per detector class, a head that learns true from false crops.
//! - [`learner`]: one per embedding model: its sample store, head registry and head in
//!   service.
//! - [`trainer`]: the training actor (a request channel, snapshots, its own cancel flag).
//! - [`telemetry`]: the one metrics registry, read by `stats` and `/metrics`.
//! - [`control`]: the control plane: typed commands applied to the owners above, through a
//!   bounded queue and a fixed set of handler tasks; [`report`] builds `state` and `stats`.
//! - [`load`]: startup (models loaded once per model, learners once per embedding model);
//!   [`run`]: the main loop, signals and shutdown.
//! - [`notice`]: what threads tell the main loop; [`notify`]: the systemd notify protocol;
//!   [`annotate`]: detections drawn on snapshots; [`stats`]: rate and latency meters.
//! - [`snapshots`]: each tracked object's best frame (captioned) and clean crop on disk;
//!   [`snapshot_writer`] the thread that writes them and publishes `<camera>/<label>/snapshot`.
//! - [`web`]: the web page, the JSON API and `/metrics` (axum), on the control plane.
//!
//! Within the daemon imports go one way: stats, telemetry, notice, pipeline, listen,
//! annotate <- streams, learner <- infer, trainer <- control, report <- web <- load, run. The daemon
//! never imports the CLI: it takes a parsed [`crate::config::Config`] and
//! [`crate::model::ModelDirs`].

pub mod annotate;
pub mod control;
pub mod false_positives;
pub mod frames;
pub mod infer;
pub mod learner;
pub mod listen;
pub mod load;
pub mod notice;
pub mod notify;
pub mod objects;
pub mod occupancy;
pub mod pipeline;
pub mod recorder;
pub mod report;
pub mod run;
pub mod snapshot_writer;
pub mod snapshots;
pub mod stats;
pub mod streams;
pub mod telemetry;
pub mod trainer;
pub mod web;

pub use run::{run_blocking, serve, Outcome, ServeOptions};

/// Why the daemon could not start or had to stop. Each names what went wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(String),
    #[error("{stream}: {source}")]
    Model {
        stream: String,
        source: crate::model::ModelError,
    },
    #[error(transparent)]
    Vision(#[from] crate::vision::VisionError),
    #[error(transparent)]
    Audio(#[from] crate::audio::model::AudioModelError),
    #[error(transparent)]
    Workspace(#[from] crate::adapt::workspace::WorkspaceError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
    #[cfg(feature = "embedded-broker")]
    #[error(transparent)]
    Broker(#[from] crate::mqtt::broker::BrokerError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}
