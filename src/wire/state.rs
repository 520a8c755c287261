//! `<base>/state` (the device) and `<base>/<camera>/state` (each stream), both retained.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a source is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SourceState {
    /// Opened, no frame yet.
    Starting,
    /// Frames are flowing.
    Streaming,
    /// The camera is gone or not there yet; `attempt` counts failed opens since the last frame.
    Reconnecting { attempt: u32, last_error: String },
    /// End of stream: a non-looping folder finished, or the pipe was closed by its writer.
    Ended,
    /// A fatal error ended the source (the message says what to fix).
    Failed { error: String },
}

/// One camera or microphone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraState {
    /// The stream's name; absent inside [`DeviceState::cameras`], whose keys are the names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    /// `camera` or `microphone`.
    pub kind: String,
    pub enabled: bool,
    pub paused: bool,
    /// The backbone that processes its frames.
    pub model: String,
    /// The backbone whose embeddings its head reads.
    pub embedding_model: String,
    /// `tract` or `onnxruntime`.
    pub backend: String,
    pub embedding_backend: String,
    pub head_version: Option<u32>,
    /// The source in words.
    pub source: String,
    pub source_state: SourceState,
    /// The first stable label after consensus.
    pub label: Option<String>,
}

/// One embedding model's samples and head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnerState {
    pub backend: String,
    pub head_version: Option<u32>,
    pub head_macro_f1: Option<f64>,
    pub samples: BTreeMap<String, usize>,
    pub samples_total: usize,
}

/// A model loaded once and the streams sharing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    pub model: String,
    pub backend: String,
    pub cameras: Vec<String>,
}

/// The device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    pub binary_version: String,
    pub device: String,
    /// A training run is in progress.
    pub training: bool,
    pub auto_train: bool,
    pub cameras: BTreeMap<String, CameraState>,
    pub learners: BTreeMap<String, LearnerState>,
    pub samples_total: usize,
    #[serde(default)]
    pub engines: Vec<EngineState>,
}
