//! `<base>/training`, and the stored-sample result of `label` and `samples/<label>` replies.

use serde::{Deserialize, Serialize};

/// A training run started or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Training {
    Started {
        model: String,
        trigger: String,
        force: bool,
    },
    Finished {
        model: String,
        version: u32,
        deployed: bool,
        reason: String,
        accuracy: f64,
        macro_f1: f64,
        current_macro_f1: Option<f64>,
        classes: Vec<String>,
        confusion: Vec<Vec<u32>>,
        /// The full training report.
        #[serde(default)]
        outcome: serde_json::Value,
    },
    Failed {
        model: String,
        /// Always false: nothing was deployed.
        #[serde(default)]
        deployed: bool,
        error: String,
    },
}

/// A stored sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleStored {
    pub label: String,
    pub id: i64,
    /// `train` or `holdout`.
    pub split: String,
    pub kept: bool,
    /// Ids that left the store because of this add.
    pub evicted: Vec<i64>,
}
