//! The public data types of the store.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest accepted embedding, in values. Real backbones give 128..4096; the bound only stops a
/// malformed import from allocating gigabytes.
pub const MAX_EMBEDDING_DIM: usize = 1 << 16;

/// Which model and tensor produced an embedding. Embeddings of different backbones live in
/// different spaces: the trainer must only ever see one backbone's, and a model upgrade means
/// re-embedding the stored thumbnails.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackboneId {
    /// sha256 of the ONNX file, 64 lower-case hex digits (what `sha2` + hex encoding gives).
    pub model_sha256: String,
    /// Name of the output tensor the embedding was taken from.
    pub embedding_tensor: String,
}

impl std::fmt::Display for BackboneId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (embedding tensor '{}')",
            self.model_sha256, self.embedding_tensor
        )
    }
}

/// Where a sample came from; kept for export and for the user deciding what to forget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SampleSource {
    File {
        path: String,
    },
    Mqtt {
        topic: String,
    },
    CameraFrame,
    /// An utterance of a live audio source, labeled with `label`.
    Microphone,
    DetectionCrop {
        class: String,
    },
    /// Uploaded or named on the web page: `name` is the file's name or the event it came from.
    Web {
        name: String,
    },
}

/// Train or holdout, fixed at insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Holdout,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Holdout => "holdout",
        }
    }
}

/// A sample to store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSample {
    pub label: String,
    pub embedding: Vec<f32>,
    pub backbone: BackboneId,
    pub source: SampleSource,
    pub created_unix_ms: i64,
    /// Opaque to the store: a JPEG thumbnail of a picture, or the first seconds of a voice as a
    /// WAV clip (what the web page shows or plays); what re-embedding after a backbone upgrade
    /// works from. Samples without one can only be removed when the backbone changes.
    pub thumbnail_jpeg: Option<Vec<u8>>,
}

/// A stored sample with everything in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub id: i64,
    pub label: String,
    pub embedding: Vec<f32>,
    pub backbone: BackboneId,
    pub source: SampleSource,
    pub created_unix_ms: i64,
    pub thumbnail_jpeg: Option<Vec<u8>>,
    pub split: Split,
}

/// A stored sample without its blobs: what listings need, cheap to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleMeta {
    pub id: i64,
    pub label: String,
    pub backbone: BackboneId,
    pub source: SampleSource,
    pub created_unix_ms: i64,
    pub split: Split,
    /// Number of f32 values in the embedding.
    pub embedding_dim: usize,
    /// Thumbnail size in bytes, if there is one.
    pub thumbnail_bytes: Option<usize>,
}

/// What [`crate::store::SampleStore::add`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddOutcome {
    /// Id given to the new sample.
    pub id: i64,
    /// Its split (meaningless when `kept` is false).
    pub split: Split,
    /// False when reservoir sampling decided not to keep it; `evicted` then holds `id` itself.
    pub kept: bool,
    /// Ids that left the store because of this add, oldest decision first.
    pub evicted: Vec<i64>,
}

/// Samples per split of one label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelCount {
    pub label: String,
    pub train: usize,
    pub holdout: usize,
}

impl LabelCount {
    pub fn total(&self) -> usize {
        self.train + self.holdout
    }
}

/// How a label over its cap makes room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvictionPolicy {
    /// Keep the newest `max_per_label`: follows a scene that changes.
    Oldest,
    /// Keep a uniform random sample of all ever offered: remembers rare old conditions too.
    /// Decisions are a pure function of (seed, label, per-label count), so reproducible.
    Reservoir { seed: u64 },
}

/// Size limits. Defaults: 500 per label, oldest evicted, 256 MiB in total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreLimits {
    /// Most samples kept per label (>= 1).
    pub max_per_label: usize,
    pub per_label_policy: EvictionPolicy,
    /// Most embedding + thumbnail bytes in the store (>= 1). SQLite's page overhead, indexes
    /// and a WAL of up to a few MB come on top, so size the disk with some margin.
    pub max_total_bytes: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_per_label: 500,
            per_label_policy: EvictionPolicy::Oldest,
            max_total_bytes: 256 << 20,
        }
    }
}

/// Everything [`crate::store::SampleStore::open_with`] takes besides the path.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    pub limits: StoreLimits,
    /// Target share of holdout samples per label, in (0, 1). Default 0.2.
    pub holdout_fraction: f64,
    /// How long a write waits for another process holding the lock before failing with
    /// [`crate::store::StoreError::Busy`].
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            limits: StoreLimits::default(),
            holdout_fraction: 0.2,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// One sample as the trainer needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRow {
    pub id: i64,
    pub label: String,
    /// Index of `label` in [`EmbeddingSet::labels`]: the class index for the head.
    pub label_index: usize,
    pub split: Split,
    pub embedding: Vec<f32>,
}

/// The samples of one backbone, for training.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbeddingSet {
    /// Every label with samples of this backbone in ANY split, sorted. The same whatever split
    /// was asked for, so train and holdout sets built separately agree on class indices.
    pub labels: Vec<String>,
    /// Embedding dimension (0 when there are no samples).
    pub dim: usize,
    /// In id (insertion) order.
    pub samples: Vec<EmbeddingRow>,
}

/// Samples whose embeddings come from another backbone than the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StaleCount {
    /// They need re-embedding before the trainer can use them.
    pub samples: usize,
    /// Of those, how many have no thumbnail and so can only be removed.
    pub without_thumbnail: usize,
}

/// Which samples [`crate::store::SampleStore::thumbnails`] walks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThumbnailFilter {
    All,
    Label(String),
    /// Samples NOT of this backbone: the ones to re-embed.
    OtherBackbones(BackboneId),
}

/// One sample's metadata and thumbnail, for export and re-embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailRow {
    pub meta: SampleMeta,
    pub thumbnail_jpeg: Option<Vec<u8>>,
}
