//! `<base>/training`: a training run of one learner started, then finished or failed.

use serde::{Deserialize, Serialize};

use super::lenient::lenient;

/// A training run started or ended; tagged by `status`, each naming the learner's embedding
/// `model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Training {
    /// A run began.
    Started {
        #[serde(default, deserialize_with = "lenient")]
        model: String,
        /// `command` (the `train` command), `new samples` (`[train].min_new_samples`) or
        /// `schedule` (`[train].interval_secs`).
        #[serde(default, deserialize_with = "lenient")]
        trigger: String,
        #[serde(default, deserialize_with = "lenient")]
        force: bool,
    },
    /// A run produced a head; `deployed` says whether it is now in service.
    Finished {
        #[serde(default, deserialize_with = "lenient")]
        model: String,
        #[serde(default, deserialize_with = "lenient")]
        version: u32,
        #[serde(default, deserialize_with = "lenient")]
        deployed: bool,
        /// Why it was (not) deployed, for people.
        #[serde(default, deserialize_with = "lenient")]
        reason: String,
        #[serde(default, deserialize_with = "lenient")]
        accuracy: f64,
        /// On the held-out samples.
        #[serde(default, deserialize_with = "lenient")]
        macro_f1: f64,
        /// The head in service's macro-F1 on the same samples; `null` without one.
        #[serde(default, deserialize_with = "lenient")]
        current_macro_f1: Option<f64>,
        #[serde(default, deserialize_with = "lenient")]
        classes: Vec<String>,
        /// Rows: true class, columns: predicted, in the order of `classes`.
        #[serde(default, deserialize_with = "lenient")]
        confusion: Vec<Vec<u32>>,
        /// The full training report (per-class precision/recall, loss curve, time, counts);
        /// its shape belongs to the trainer, not to this contract.
        #[serde(default)]
        outcome: serde_json::Value,
    },
    /// A run ended without a head.
    Failed {
        #[serde(default, deserialize_with = "lenient")]
        model: String,
        /// Always false: nothing was deployed.
        #[serde(default, deserialize_with = "lenient")]
        deployed: bool,
        #[serde(default, deserialize_with = "lenient")]
        error: String,
    },
    /// Read only: a `status` this version does not know (a newer daemon).
    #[serde(other)]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::super::test_support::round_trip;
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_shapes() {
        round_trip(
            &Training::Started {
                model: "mobilenetv2".into(),
                trigger: "new samples".into(),
                force: false,
            },
            json!({"status": "started", "model": "mobilenetv2", "trigger": "new samples",
                "force": false}),
        );
        round_trip(
            &Training::Finished {
                model: "mobilenetv2".into(),
                version: 4,
                deployed: true,
                reason: "v4 deployed".into(),
                accuracy: 0.96,
                macro_f1: 0.962,
                current_macro_f1: None,
                classes: vec!["alice".into(), "bob".into()],
                confusion: vec![vec![5, 0], vec![1, 4]],
                outcome: json!({"time_ms": 812}),
            },
            json!({"status": "finished", "model": "mobilenetv2", "version": 4,
                "deployed": true, "reason": "v4 deployed", "accuracy": 0.96, "macro_f1": 0.962,
                "current_macro_f1": null, "classes": ["alice", "bob"],
                "confusion": [[5, 0], [1, 4]], "outcome": {"time_ms": 812}}),
        );
        round_trip(
            &Training::Failed {
                model: "ecapa".into(),
                deployed: false,
                error: "only 1 class has samples".into(),
            },
            json!({"status": "failed", "model": "ecapa", "deployed": false,
                "error": "only 1 class has samples"}),
        );
    }

    #[test]
    fn readers_are_lenient() {
        let t: Training =
            serde_json::from_str(r#"{"status": "finished", "version": "4", "deployed": true}"#)
                .unwrap();
        let Training::Finished {
            version, deployed, ..
        } = t
        else {
            panic!("{t:?}")
        };
        assert_eq!((version, deployed), (0, true));
        let t: Training = serde_json::from_str(r#"{"status": "cancelled", "why": 1}"#).unwrap();
        assert_eq!(t, Training::Unknown);
        // Without its `status` a message has no shape: that is an error for the reader.
        let e = super::super::decode::<Training>(br#"{"version": 4}"#).unwrap_err();
        assert!(e.to_string().contains("status"), "{e}");
    }
}
