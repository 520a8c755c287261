//! On-device adaptation: training a small classifier head on stored
//! embeddings of a frozen backbone, evaluating it, and keeping versioned
//! heads so that a bad retrain can be refused or rolled back.
//!
//! The head is what trains by default: embeddings of a good backbone are
//! already linearly separable for most tasks, and a softmax head trains in
//! well under a second from a few thousand samples. The whole backbone is far
//! too large to train on a Raspberry Pi, but its last block is not:
//! [`finetune`] trains it with the head where the scene is far from ImageNet.
//!
//! - [`head`]: the head itself (inference, open-set decision, safetensors).
//! - [`dataset`]: what training takes and gives (dataset, configuration, report, errors),
//!   shared by both fitters.
//! - `adam`: the Adam update of one tensor, shared by both trainers.
//! - [`trainer`]: the Adam training loop, evaluation and threshold calibration; dispatches
//!   centroid heads to [`centroid`].
//! - [`centroid`]: the nearest-centroid (cosine) head, for enrolment from a few samples.
//! - [`finetune`]: the backbone's tail trained with the head on cached cut activations.
//! - [`metrics`]: accuracy / macro-F1 / confusion matrix.
//! - [`registry`]: versioned heads on disk with a deploy policy.
//! - [`workspace`]: one model's samples and heads together: add, train + deploy, classify.

mod adam;
pub mod centroid;
pub mod dataset;
pub mod finetune;
pub mod head;
pub mod metrics;
pub mod registry;
pub mod trainer;
pub mod workspace;

pub use head::{
    Head, HeadError, HeadKind, HeadParams, Prediction, BACKGROUND_LABEL, UNKNOWN_LABEL,
};
pub use metrics::{ClassMetrics, Metrics, MetricsError};
pub use registry::{BackboneId, DeployDecision, HeadMeta, Registry, RegistryError};
pub use trainer::{
    calibrate_threshold, evaluate, train, Dataset, HeadKindConfig, StopReason, TrainConfig,
    TrainError, TrainReport, ValidationSource,
};
