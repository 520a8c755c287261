//! False-positive filters: one small head per detector class, trained on true vs false crops
//! of that class, that stops a detector's repeated mistakes (a coat on a hook called a
//! person every evening, a shadow called a car).
//!
//! The detector itself is frozen; what can learn is a head on the crop embedder's features,
//! exactly like a sub-label head, with the same trainer, registry and deploy-if-not-worse
//! rule. Each class gets its own workspace (`<state_dir>/false_positives/<class>/`: its own
//! `samples.db` and `heads/<embedder>/`), so the filter's two labels (`<class>` and `none`)
//! never mix with the sub-label head's names. Samples come from feedback: `label none` or
//! `cmd/false_positive` on an object stores its best crop as `none`; the true side is the
//! same camera's other recent objects of the class that nobody objected to (harvested at that
//! moment, a few per correction), and any object labeled with its own class name.
//!
//! A filter exists only for classes that got feedback, so a camera pays for it only on those:
//! the pipeline asks [`FpFilters::slot`] per object of such a class, lock-free.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tracing::{info, warn};

use super::learner::{lock, Learner};
use super::pipeline::{FpSlots, HeadSlot};
use crate::adapt::workspace::{Workspace, WorkspaceError};
use crate::model::ResolvedModel;
use crate::runtime::BackendKind;
use crate::store::StoreOptions;

/// The label of a false positive in a filter's store (the head's background class).
pub const FALSE: &str = crate::adapt::BACKGROUND_LABEL;

/// Object ids remembered as already filed, so a true object harvested by one correction is
/// not filed again by the next.
const REMEMBERED: usize = 2048;

/// A detector class as a filter's key, directory and true label (see [`crate::label::slug`]).
pub fn class_key(class: &str) -> String {
    crate::label::slug(class)
}

/// The directory that holds every class's filter.
pub fn dir_in(state_dir: &Path) -> PathBuf {
    state_dir.join("false_positives")
}

/// The false-positive filters of one crop embedder (shared by the cameras that use it).
pub struct FpFilters {
    root: PathBuf,
    model: ResolvedModel,
    backend: BackendKind,
    engine: usize,
    options: StoreOptions,
    learners: Mutex<BTreeMap<String, Arc<Learner>>>,
    /// Class -> the slot of its head in service; replaced (copy on write) when a class gets
    /// its first feedback, read by every frame.
    slots: FpSlots,
    filed: Mutex<VecDeque<String>>,
}

impl FpFilters {
    /// Opens the filters that exist under `state_dir` for embedder `model` (engine slot
    /// `engine` of the vision worker) and puts their heads in service.
    pub fn open(
        state_dir: &Path,
        model: ResolvedModel,
        backend: BackendKind,
        engine: usize,
        options: StoreOptions,
    ) -> FpFilters {
        let filters = FpFilters {
            root: dir_in(state_dir),
            model,
            backend,
            engine,
            options,
            learners: Mutex::new(BTreeMap::new()),
            slots: Arc::new(ArcSwap::from_pointee(BTreeMap::new())),
            filed: Mutex::new(VecDeque::new()),
        };
        let classes: Vec<String> = std::fs::read_dir(&filters.root)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().join("samples.db").is_file())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|c| crate::label::Label::check_syntax(c).is_ok())
                    .collect()
            })
            .unwrap_or_default();
        for class in classes {
            match filters.learner(&class) {
                Ok(l) => l.serve_current(),
                Err(e) => warn!("false-positive filter of {class:?} cannot be opened: {e}"),
            }
        }
        filters
    }

    /// The embedder's engine slot (what embeds the crops this filter judges).
    pub fn engine(&self) -> usize {
        self.engine
    }

    /// The crop embedder's name (the filters of one embedder serve every camera using it).
    pub fn model(&self) -> &str {
        &self.model.manifest.name
    }

    /// True the first time object `id` is filed (since start; the last [`REMEMBERED`]).
    pub fn first_filing(&self, id: &str) -> bool {
        let mut filed = lock(&self.filed);
        if filed.iter().any(|f| f == id) {
            return false;
        }
        filed.push_back(id.to_owned());
        while filed.len() > REMEMBERED {
            filed.pop_front();
        }
        true
    }

    /// The learner of `class`'s filter, opened (and created on disk) on first use.
    pub fn learner(&self, class: &str) -> Result<Arc<Learner>, WorkspaceError> {
        let class = &class_key(class);
        let mut learners = lock(&self.learners);
        if let Some(l) = learners.get(class) {
            return Ok(l.clone());
        }
        let ws = Workspace::open(&self.root.join(class), &self.model, self.options.clone())?;
        let name = format!("false-positives/{class}");
        let l = Arc::new(Learner::new(name, self.backend, self.engine, false, ws));
        learners.insert(class.to_owned(), l.clone());
        let mut slots = (**self.slots.load()).clone();
        slots.insert(class.to_owned(), l.slot.clone());
        self.slots.store(Arc::new(slots));
        info!("false-positive filter of {class:?} opened");
        Ok(l)
    }

    /// The head slot of `class`'s filter, when the class has one (per frame: lock-free).
    pub fn slot(&self, class: &str) -> Option<HeadSlot> {
        self.slots.load().get(&class_key(class)).cloned()
    }

    /// Every class's slot, as the pipelines read them.
    pub fn slots(&self) -> FpSlots {
        self.slots.clone()
    }

    /// Every filter's learner (for `status` and the trainer).
    pub fn learners(&self) -> Vec<Arc<Learner>> {
        lock(&self.learners).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_coco_class_makes_a_valid_label() {
        for class in ["person", "traffic light", "cell phone", "Fire-Hydrant"] {
            let key = class_key(class);
            assert!(
                crate::label::Label::parse(&key).is_ok(),
                "{class:?} -> {key:?}"
            );
        }
        assert_eq!(class_key("traffic light"), "traffic_light");
    }
}
