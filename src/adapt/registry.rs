//! Versioned heads in the state directory, with a deploy policy.
//!
//! Layout, under `<state_dir>/heads/<model_key>/` (see [`Registry::model_dir`]):
//!
//! ```text
//! v0001.safetensors   weights (Head::to_safetensors)
//! v0001.json          HeadMeta: version, time, classes, backbone, report,
//!                     deploy decision, size and CRC-32 of the weights
//! v0002.safetensors
//! v0002.json
//! current             the deployed version number, e.g. "2\n"
//! .lock               advisory lock serialising writers
//! ```
//!
//! Every file is replaced with [`crate::durable::write_atomic`], in an order
//! that keeps the pointer valid across a crash at any point: weights before
//! metadata (metadata is what makes a version exist for `list`), metadata
//! before the pointer (the pointer only ever names a complete version).
//! Versions are never modified except for the deploy decision recorded in
//! their metadata, so a rollback always finds the exact head that ran before.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::adapt::head::{Head, HeadKind};
use crate::adapt::trainer::TrainReport;
use crate::durable;

/// File name of the pointer to the deployed version.
const CURRENT_FILE: &str = "current";
/// File locked (advisory, exclusive) while the registry is modified.
const LOCK_FILE: &str = ".lock";
/// Version of the metadata JSON layout.
const META_FORMAT: u32 = 1;

/// Identity of the frozen backbone a head was trained on (shared with the sample store:
/// a head is only meaningful on embeddings of exactly this model and output tensor).
pub use crate::store::BackboneId;

/// Metadata stored next to each version's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadMeta {
    /// Layout version of this JSON.
    pub format: u32,
    /// Version number (`vNNNN`).
    pub version: u32,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Class names in output order.
    pub classes: Vec<String>,
    /// Backbone the head was trained on.
    pub backbone: BackboneId,
    /// Architecture.
    pub head_kind: HeadKind,
    /// Size of the weights file, to detect truncation early.
    pub weights_bytes: u64,
    /// CRC-32 (IEEE) of the weights file, to detect corruption that still
    /// parses (a flipped bit in a weight).
    pub weights_crc32: u32,
    /// The full training report.
    pub report: TrainReport,
    /// Whether the latest deploy decision for this version accepted it.
    pub deployed: bool,
    /// The latest deploy decision's reason ("saved, not yet deployed" until
    /// one is made).
    pub deploy_reason: String,
}

/// Outcome of [`Registry::deploy`] or [`Registry::rollback`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployDecision {
    /// The version decided on.
    pub version: u32,
    /// Whether it is now the current version.
    pub deployed: bool,
    /// Human-readable reason, also recorded in the version's metadata.
    pub reason: String,
    /// The version that was current before the decision.
    pub previous: Option<u32>,
}

/// What went wrong in the registry, and what to do about it.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// A file system operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The model key cannot be used as a directory name.
    #[error(
        "invalid model key '{0}': use 1-128 letters, digits, '.', '_' or '-', not starting with '.'"
    )]
    InvalidModelKey(String),
    /// No such version.
    #[error(
        "head v{version} does not exist in {dir}: list the saved versions and pick one of them"
    )]
    NotFound {
        /// Requested version.
        version: u32,
        /// Registry directory.
        dir: PathBuf,
    },
    /// A version's files are missing, truncated or corrupt.
    #[error(
        "head v{version} is incomplete or corrupt ({file}: {reason}), probably from a crash or a disk error: roll back to another version or retrain"
    )]
    Torn {
        /// Version.
        version: u32,
        /// Offending file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The `current` pointer cannot be parsed.
    #[error(
        "the current-head pointer {path} is corrupt (content {content:?}): roll back to a saved version to rewrite it"
    )]
    BadPointer {
        /// Pointer file.
        path: PathBuf,
        /// What it holds (truncated).
        content: String,
    },
    /// The head belongs to another backbone.
    #[error(
        "head v{version} was trained for backbone {head_backbone}; this model is {model_backbone}: retrain the head for this model, or use --model to select the backbone it was trained for"
    )]
    BackboneMismatch {
        /// Version.
        version: u32,
        /// Backbone recorded with the head.
        head_backbone: BackboneId,
        /// Backbone of this registry.
        model_backbone: BackboneId,
    },
    /// The head and its report do not describe the same thing.
    #[error("cannot save: {0}")]
    Inconsistent(String),
    /// A score passed to the deploy policy is not a number in [0, 1].
    #[error("{what} is {value}, not a score in [0, 1]: evaluate the head on the holdout again")]
    InvalidScore {
        /// Which score.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// Serialising weights or metadata failed.
    #[error("cannot serialise head v{version}: {reason}")]
    Serialize {
        /// Version.
        version: u32,
        /// Why.
        reason: String,
    },
    /// Version numbers ran out (u32).
    #[error("no version numbers left in {0}: archive old versions into another directory")]
    VersionsExhausted(PathBuf),
}

/// Heads of one model key, bound to the backbone currently in use.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    backbone: BackboneId,
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> RegistryError + 'a {
    move |source| RegistryError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl Registry {
    /// `<state_dir>/heads/<model_key>`, after checking that `model_key` is a
    /// plain directory name (it may come from configuration or the CLI and
    /// must not escape the state directory).
    pub fn model_dir(state_dir: &Path, model_key: &str) -> Result<PathBuf> {
        let ok = !model_key.is_empty()
            && model_key.len() <= 128
            && !model_key.starts_with('.')
            && model_key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(RegistryError::InvalidModelKey(model_key.to_string()));
        }
        Ok(state_dir.join("heads").join(model_key))
    }

    /// Opens (creating if needed) the registry in `dir` for heads of
    /// `backbone`, removing temporary files left by crashed writers.
    pub fn open(dir: impl Into<PathBuf>, backbone: BackboneId) -> Result<Registry> {
        let dir = dir.into();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
            // Make the new directory entry itself durable.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                durable::fsync_dir(parent).map_err(io_err("sync directory", parent))?;
            }
        }
        durable::clean_stale_temps(&dir).map_err(io_err("clean temporary files in", &dir))?;
        Ok(Registry { dir, backbone })
    }

    /// The registry directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The backbone this registry serves.
    pub fn backbone(&self) -> &BackboneId {
        &self.backbone
    }

    fn weights_path(&self, version: u32) -> PathBuf {
        self.dir.join(format!("v{version:04}.safetensors"))
    }

    fn meta_path(&self, version: u32) -> PathBuf {
        self.dir.join(format!("v{version:04}.json"))
    }

    fn pointer_path(&self) -> PathBuf {
        self.dir.join(CURRENT_FILE)
    }

    /// Exclusive advisory lock held while modifying the registry, so the
    /// daemon and a CLI invocation cannot pick the same version number or
    /// interleave pointer updates. Released when the file is dropped.
    fn lock(&self) -> Result<File> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        file.lock().map_err(io_err("lock", &path))?;
        Ok(file)
    }

    /// All version numbers that have a weights or metadata file, sorted.
    fn versions(&self) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stem = name
                .strip_suffix(".safetensors")
                .or_else(|| name.strip_suffix(".json"));
            let Some(digits) = stem.and_then(|s| s.strip_prefix('v')) else {
                continue;
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Ok(v) = digits.parse::<u32>() {
                out.push(v);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Stores `head` as a new version (not deployed) and returns its number.
    pub fn save(&self, head: &Head, report: &TrainReport) -> Result<u32> {
        if head.classes() != report.classes.as_slice() {
            return Err(RegistryError::Inconsistent(format!(
                "the head's classes {:?} differ from the report's {:?}",
                head.classes(),
                report.classes
            )));
        }
        if head.kind() != report.head_kind {
            return Err(RegistryError::Inconsistent(format!(
                "the head is {:?} but the report describes {:?}",
                head.kind(),
                report.head_kind
            )));
        }
        let _lock = self.lock()?;
        let version = match self.versions()?.last() {
            None => 1,
            Some(&v) => v
                .checked_add(1)
                .ok_or_else(|| RegistryError::VersionsExhausted(self.dir.clone()))?,
        };
        let weights = head
            .to_safetensors()
            .map_err(|e| RegistryError::Serialize {
                version,
                reason: e.to_string(),
            })?;
        let meta = HeadMeta {
            format: META_FORMAT,
            version,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            classes: head.classes().to_vec(),
            backbone: self.backbone.clone(),
            head_kind: head.kind(),
            weights_bytes: weights.len() as u64,
            weights_crc32: crc32(&weights),
            report: report.clone(),
            deployed: false,
            deploy_reason: "saved, not yet deployed".into(),
        };
        let wpath = self.weights_path(version);
        durable::write_atomic(&wpath, &weights).map_err(io_err("write", &wpath))?;
        self.write_meta(&meta)?;
        Ok(version)
    }

    fn write_meta(&self, meta: &HeadMeta) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(meta).map_err(|e| RegistryError::Serialize {
            version: meta.version,
            reason: e.to_string(),
        })?;
        let path = self.meta_path(meta.version);
        durable::write_atomic(&path, &bytes).map_err(io_err("write", &path))
    }

    /// Reads and checks a version's metadata (not its weights).
    fn read_meta(&self, version: u32) -> Result<HeadMeta> {
        let path = self.meta_path(version);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(if self.weights_path(version).exists() {
                    RegistryError::Torn {
                        version,
                        file: path,
                        reason: "metadata file is missing".into(),
                    }
                } else {
                    RegistryError::NotFound {
                        version,
                        dir: self.dir.clone(),
                    }
                });
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let meta: HeadMeta = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Torn {
            version,
            file: path.clone(),
            reason: format!("unreadable metadata: {e}"),
        })?;
        if meta.version != version {
            return Err(RegistryError::Torn {
                version,
                file: path,
                reason: format!("metadata says it is v{}", meta.version),
            });
        }
        Ok(meta)
    }

    fn check_backbone(&self, meta: &HeadMeta) -> Result<()> {
        if meta.backbone != self.backbone {
            return Err(RegistryError::BackboneMismatch {
                version: meta.version,
                head_backbone: meta.backbone.clone(),
                model_backbone: self.backbone.clone(),
            });
        }
        Ok(())
    }

    /// Loads a version without checking its backbone: the integrity check
    /// shared by [`Registry::load`] and [`Registry::incomplete_versions`].
    fn load_unchecked(&self, version: u32) -> Result<(Head, HeadMeta)> {
        let meta = self.read_meta(version)?;
        let path = self.weights_path(version);
        let torn = |reason: String| RegistryError::Torn {
            version,
            file: path.clone(),
            reason,
        };
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(torn("weights file is missing".into()))
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        if bytes.len() as u64 != meta.weights_bytes {
            return Err(torn(format!(
                "{} bytes, {} expected",
                bytes.len(),
                meta.weights_bytes
            )));
        }
        let crc = crc32(&bytes);
        if crc != meta.weights_crc32 {
            return Err(torn(format!(
                "CRC-32 {crc:08x}, {:08x} expected",
                meta.weights_crc32
            )));
        }
        let head = Head::from_safetensors(&bytes).map_err(|e| torn(e.to_string()))?;
        if head.classes() != meta.classes.as_slice() || head.kind() != meta.head_kind {
            return Err(torn(
                "weights and metadata disagree on classes or head kind".into(),
            ));
        }
        Ok((head, meta))
    }

    /// Loads a version, validating both files and that it was trained for
    /// this registry's backbone.
    pub fn load(&self, version: u32) -> Result<(Head, HeadMeta)> {
        let meta = self.read_meta(version)?;
        self.check_backbone(&meta)?;
        self.load_unchecked(version)
    }

    /// The version the pointer names, without loading it. `None` when no
    /// head was ever deployed.
    pub fn current_version(&self) -> Result<Option<u32>> {
        let path = self.pointer_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(RegistryError::BadPointer {
                    path,
                    content: "<not UTF-8>".into(),
                })
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        match text.trim().parse::<u32>() {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(RegistryError::BadPointer {
                path,
                content: text.chars().take(40).collect(),
            }),
        }
    }

    /// The deployed head, fully validated; `None` when none was deployed.
    /// A torn or missing file of the current version, or a head of another
    /// backbone, is an error rather than `None`, so a broken deployment is
    /// never mistaken for a fresh one.
    pub fn current(&self) -> Result<Option<(u32, Head, HeadMeta)>> {
        match self.current_version()? {
            None => Ok(None),
            Some(v) => match self.load(v) {
                Ok((head, meta)) => Ok(Some((v, head, meta))),
                // The pointer is never written before a version is complete,
                // so a missing current version means files were lost.
                Err(RegistryError::NotFound { .. }) => Err(RegistryError::Torn {
                    version: v,
                    file: self.meta_path(v),
                    reason: "the current pointer names this version but its files are missing"
                        .into(),
                }),
                Err(e) => Err(e),
            },
        }
    }

    /// Points `current` at `version` after validating it; no policy check.
    pub fn set_current(&self, version: u32) -> Result<()> {
        let _lock = self.lock()?;
        self.load(version)?;
        self.write_pointer(version)
    }

    fn write_pointer(&self, version: u32) -> Result<()> {
        let path = self.pointer_path();
        durable::write_atomic(&path, format!("{version}\n").as_bytes())
            .map_err(io_err("write", &path))
    }

    /// Metadata of every readable version, sorted by version. Versions
    /// whose metadata cannot be read are skipped here (see
    /// [`Registry::incomplete_versions`]); heads of other backbones are
    /// included, their `backbone` field tells them apart.
    pub fn list(&self) -> Result<Vec<HeadMeta>> {
        Ok(self
            .versions()?
            .into_iter()
            .filter_map(|v| self.read_meta(v).ok())
            .collect())
    }

    /// Versions that fail validation (weights without metadata after a
    /// crash, truncated or corrupt files), with the reason, sorted.
    pub fn incomplete_versions(&self) -> Result<Vec<(u32, String)>> {
        Ok(self
            .versions()?
            .into_iter()
            .filter_map(|v| self.load_unchecked(v).err().map(|e| (v, e.to_string())))
            .collect())
    }

    /// Makes an older (or any saved) version current again, after checking
    /// that it exists, is intact and matches this backbone.
    pub fn rollback(&self, version: u32) -> Result<DeployDecision> {
        let _lock = self.lock()?;
        let (_, mut meta) = self.load(version)?;
        let previous = self.current_version().ok().flatten();
        let reason = match previous {
            Some(p) => format!("rolled back from v{p} to v{version}"),
            None => format!("rolled back to v{version} (no version was current)"),
        };
        meta.deployed = true;
        meta.deploy_reason = reason.clone();
        self.write_meta(&meta)?;
        self.write_pointer(version)?;
        Ok(DeployDecision {
            version,
            deployed: true,
            reason,
            previous,
        })
    }

    /// Applies the deploy policy to a saved version and records the
    /// decision in its metadata (before moving the pointer).
    ///
    /// Policy: the first head of a model is always deployed. Otherwise the
    /// new head replaces the current one only if its macro-F1 on the holdout
    /// is not worse than the current head's on the *same* holdout, which the
    /// caller computes (e.g. with [`crate::adapt::trainer::evaluate`]) and
    /// passes as `current_macro_f1`. Pass `None` only when there is no
    /// usable current head to evaluate (its files are corrupt, or it was
    /// trained for another backbone); the new head is then deployed, as it
    /// is when the current pointer itself is corrupt. `force` deploys
    /// regardless, and says so in the reason.
    pub fn deploy(
        &self,
        version: u32,
        new_macro_f1: f64,
        current_macro_f1: Option<f64>,
        force: bool,
    ) -> Result<DeployDecision> {
        let check = |what: &'static str, value: f64| {
            if value.is_finite() && (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(RegistryError::InvalidScore { what, value })
            }
        };
        check("the new head's macro-F1", new_macro_f1)?;
        if let Some(c) = current_macro_f1 {
            check("the current head's macro-F1", c)?;
        }
        let _lock = self.lock()?;
        let (_, mut meta) = self.load(version)?;
        let (previous, pointer_note) = match self.current_version() {
            Ok(p) => (p, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let (deployed, reason) = match (previous, current_macro_f1) {
            (Some(p), _) if p == version => (true, format!("v{version} is already current")),
            (None, _) => match pointer_note {
                None => (
                    true,
                    format!(
                        "v{version} is the first head for this model (holdout macro-F1 {new_macro_f1:.4})"
                    ),
                ),
                Some(note) => (
                    true,
                    format!("v{version} deployed: the current pointer was unusable ({note})"),
                ),
            },
            (Some(p), None) => (
                true,
                format!(
                    "v{version} (holdout macro-F1 {new_macro_f1:.4}) replaces v{p}, which could not be evaluated on the holdout"
                ),
            ),
            (Some(p), Some(cur)) => {
                // Tolerance for the last bits of float noise: "not worse".
                if new_macro_f1 + 1e-9 >= cur {
                    (
                        true,
                        format!(
                            "v{version} holdout macro-F1 {new_macro_f1:.4} >= v{p}'s {cur:.4} on the same holdout"
                        ),
                    )
                } else if force {
                    (
                        true,
                        format!(
                            "forced: v{version} holdout macro-F1 {new_macro_f1:.4} < v{p}'s {cur:.4}, deployed anyway"
                        ),
                    )
                } else {
                    (
                        false,
                        format!(
                            "v{version} holdout macro-F1 {new_macro_f1:.4} < v{p}'s {cur:.4} on the same holdout: keeping v{p} (use --force to deploy anyway)"
                        ),
                    )
                }
            }
        };
        meta.deployed = deployed;
        meta.deploy_reason = reason.clone();
        self.write_meta(&meta)?;
        if deployed && previous != Some(version) {
            self.write_pointer(version)?;
        }
        Ok(DeployDecision {
            version,
            deployed,
            reason,
            previous,
        })
    }
}

/// CRC-32 (IEEE 802.3, reflected, as in zlib), table-driven.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !bytes
        .iter()
        .fold(!0u32, |c, &b| TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::trainer::{train, Dataset, TrainConfig};
    use std::time::Duration;

    fn backbone(sha: &str) -> BackboneId {
        BackboneId {
            model_sha256: sha.to_string(),
            embedding_tensor: "embeddings".to_string(),
        }
    }

    /// A tiny trained head and its report; `shift` changes the weights.
    fn trained(shift: f32) -> (Head, TrainReport, Dataset) {
        let dim = 6;
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..60 {
            let c = i % 3;
            for d in 0..dim {
                let v = if d % 3 == c { 2.0 } else { 0.0 };
                x.push(v + ((i * 7 + d * 13) % 10) as f32 * 0.1 + shift);
            }
            y.push(c);
        }
        let classes = vec!["a".to_string(), "b".to_string(), "none".to_string()];
        let ds = Dataset::new(dim, x, y, classes.clone()).unwrap();
        let cfg = TrainConfig {
            time_budget: Duration::from_secs(60),
            ..TrainConfig::default()
        };
        let (head, report) = train(&ds, &ds, &cfg, None).unwrap();
        (head, report, ds)
    }

    fn open(dir: &Path, sha: &str) -> Registry {
        Registry::open(dir.join("heads").join("mobilenet"), backbone(sha)).unwrap()
    }

    #[test]
    fn save_load_round_trip_gives_identical_probabilities() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = open(tmp.path(), "aaa");
        let (head, report, ds) = trained(0.0);
        let v = reg.save(&head, &report).unwrap();
        assert_eq!(v, 1);
        assert!(reg.dir().join("v0001.safetensors").exists());
        assert!(reg.dir().join("v0001.json").exists());
        let (loaded, meta) = reg.load(v).unwrap();
        assert_eq!(loaded, head);
        for row in ds.x.chunks(ds.dim) {
            assert_eq!(
                loaded.probabilities(row).unwrap(),
                head.probabilities(row).unwrap()
            );
        }
        assert_eq!(meta.report, report);
        assert_eq!(meta.backbone, backbone("aaa"));
        assert!(!meta.deployed);
    }

    #[test]
    fn pointer_is_only_set_explicitly() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = open(tmp.path(), "aaa");
        let (head, report, _) = trained(0.0);
        let v1 = reg.save(&head, &report).unwrap();
        let v2 = reg.save(&head, &report).unwrap();
        assert_eq!((v1, v2), (1, 2));
        assert!(reg.current().unwrap().is_none());
        reg.set_current(v2).unwrap();
        assert_eq!(reg.current_version().unwrap(), Some(2));
        let (v, h, _) = reg.current().unwrap().unwrap();
        assert_eq!((v, h), (2, head));
        assert_eq!(
            fs::read_to_string(reg.dir().join("current")).unwrap(),
            "2\n"
        );
        assert!(matches!(
            reg.set_current(9),
            Err(RegistryError::NotFound { version: 9, .. })
        ));
        assert_eq!(reg.current_version().unwrap(), Some(2));
    }

    #[test]
    fn deploy_policy() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = open(tmp.path(), "aaa");
        let (head, report, _) = trained(0.0);
        let v: Vec<u32> = (0..5).map(|_| reg.save(&head, &report).unwrap()).collect();

        // First head: always deployed, whatever its score.
        let d = reg.deploy(v[0], 0.1, None, false).unwrap();
        assert!(d.deployed && d.previous.is_none(), "{d:?}");
        assert!(d.reason.contains("first"));
        // Better.
        let d = reg.deploy(v[1], 0.9, Some(0.8), false).unwrap();
        assert!(d.deployed, "{d:?}");
        assert_eq!(d.previous, Some(v[0]));
        assert_eq!(reg.current_version().unwrap(), Some(v[1]));
        // Equal is "not worse".
        let d = reg.deploy(v[2], 0.85, Some(0.85), false).unwrap();
        assert!(d.deployed, "{d:?}");
        // Worse: refused, pointer unchanged, decision recorded.
        let d = reg.deploy(v[3], 0.7, Some(0.85), false).unwrap();
        assert!(!d.deployed, "{d:?}");
        assert!(d.reason.contains("--force"), "{}", d.reason);
        assert_eq!(reg.current_version().unwrap(), Some(v[2]));
        let (_, meta) = reg.load(v[3]).unwrap();
        assert!(!meta.deployed);
        assert_eq!(meta.deploy_reason, d.reason);
        // Forced.
        let d = reg.deploy(v[3], 0.7, Some(0.85), true).unwrap();
        assert!(d.deployed && d.reason.starts_with("forced"), "{d:?}");
        assert_eq!(reg.current_version().unwrap(), Some(v[3]));
        assert!(reg.load(v[3]).unwrap().1.deployed);
        // Current head could not be evaluated.
        let d = reg.deploy(v[4], 0.5, None, false).unwrap();
        assert!(d.deployed);
        // Nonsense scores are rejected.
        assert!(matches!(
            reg.deploy(v[4], f64::NAN, None, false),
            Err(RegistryError::InvalidScore { .. })
        ));
        assert!(reg.deploy(v[4], 0.5, Some(1.5), false).is_err());
        assert!(matches!(
            reg.deploy(42, 0.9, None, false),
            Err(RegistryError::NotFound { .. })
        ));
    }

    #[test]
    fn rollback() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = open(tmp.path(), "aaa");
        let (h1, r1, ds) = trained(0.0);
        let (h2, r2, _) = trained(0.5);
        let v1 = reg.save(&h1, &r1).unwrap();
        let v2 = reg.save(&h2, &r2).unwrap();
        reg.deploy(v1, 0.9, None, false).unwrap();
        reg.deploy(v2, 0.95, Some(0.9), false).unwrap();
        let d = reg.rollback(v1).unwrap();
        assert!(d.deployed);
        assert_eq!(d.previous, Some(v2));
        let (v, head, meta) = reg.current().unwrap().unwrap();
        assert_eq!(v, v1);
        assert_eq!(
            head.probabilities(&ds.x[..6]).unwrap(),
            h1.probabilities(&ds.x[..6]).unwrap()
        );
        assert!(meta.deploy_reason.contains("rolled back from v2"));
        assert!(matches!(
            reg.rollback(7),
            Err(RegistryError::NotFound { version: 7, .. })
        ));
    }

    #[test]
    fn backbone_mismatch_is_refused_with_both_shas() {
        let tmp = tempfile::tempdir().unwrap();
        let old = open(tmp.path(), "sha-old");
        let (head, report, _) = trained(0.0);
        let v = old.save(&head, &report).unwrap();
        old.deploy(v, 0.9, None, false).unwrap();

        let new = open(tmp.path(), "sha-new");
        let err = new.current().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RegistryError::BackboneMismatch { .. }));
        assert!(
            msg.contains("head v1 was trained for backbone sha-old"),
            "{msg}"
        );
        assert!(msg.contains("this model is sha-new"), "{msg}");
        assert!(msg.contains("retrain") && msg.contains("--model"), "{msg}");
        assert!(new.rollback(v).is_err());
        assert!(new.set_current(v).is_err());
        assert!(new.deploy(v, 1.0, None, true).is_err());
        // A head trained for the new backbone can replace it.
        let v2 = new.save(&head, &report).unwrap();
        let d = new.deploy(v2, 0.5, None, false).unwrap();
        assert!(d.deployed);
        assert_eq!(new.current().unwrap().unwrap().0, v2);
        // Listing shows both, each with its backbone.
        let list = new.list().unwrap();
        assert_eq!(list[0].backbone.model_sha256, "sha-old");
        assert_eq!(list[1].backbone.model_sha256, "sha-new");
    }

    #[test]
    fn torn_files_are_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = open(tmp.path(), "aaa");
        let (head, report, _) = trained(0.0);
        let v = reg.save(&head, &report).unwrap();
        reg.deploy(v, 0.9, None, false).unwrap();
        let wpath = reg.dir().join("v0001.safetensors");
        let good = fs::read(&wpath).unwrap();

        // Truncated weights.
        fs::write(&wpath, &good[..good.len() - 10]).unwrap();
        let err = reg.current().unwrap_err();
        assert!(
            matches!(err, RegistryError::Torn { version: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("roll back"), "{err}");

        // Same length, one flipped bit in the last weight: CRC catches it.
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        fs::write(&wpath, &flipped).unwrap();
        assert!(matches!(reg.load(v), Err(RegistryError::Torn { .. })));

        // Current version entirely missing.
        fs::rename(&wpath, reg.dir().join("aside")).unwrap();
        let mpath = reg.dir().join("v0001.json");
        fs::rename(&mpath, reg.dir().join("aside.json")).unwrap();
        let err = reg.current().unwrap_err();
        assert!(
            matches!(err, RegistryError::Torn { version: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("files are missing"), "{err}");
        fs::rename(reg.dir().join("aside.json"), &mpath).unwrap();

        // Missing weights (still moved aside).
        fs::remove_file(reg.dir().join("aside")).unwrap();
        assert!(matches!(reg.load(v), Err(RegistryError::Torn { .. })));
        fs::write(&wpath, &good).unwrap();
        reg.load(v).unwrap();

        // Torn metadata.
        let meta = fs::read(&mpath).unwrap();
        fs::write(&mpath, &meta[..meta.len() / 2]).unwrap();
        assert!(matches!(reg.load(v), Err(RegistryError::Torn { .. })));
        assert_eq!(reg.incomplete_versions().unwrap().len(), 1);
        assert!(reg.list().unwrap().is_empty());
        fs::write(&mpath, &meta).unwrap();

        // Corrupt pointer.
        fs::write(reg.dir().join("current"), b"\x00\x01garbage").unwrap();
        assert!(matches!(
            reg.current(),
            Err(RegistryError::BadPointer { .. })
        ));
        // Rollback repairs it.
        reg.rollback(v).unwrap();
        assert_eq!(reg.current().unwrap().unwrap().0, v);
        assert!(reg.incomplete_versions().unwrap().is_empty());
    }

    #[test]
    fn list_is_sorted_and_ignores_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = open(tmp.path(), "aaa");
        let (head, report, _) = trained(0.0);
        for _ in 0..3 {
            reg.save(&head, &report).unwrap();
        }
        // Files a crashed writer left behind: a dead pid's temp file and
        // weights whose metadata was never written.
        let stale = reg.dir().join(".v0004.json.tmp.4294967295.0");
        fs::write(&stale, b"{").unwrap();
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - std::time::Duration::from_secs(600))
            .unwrap();
        fs::write(reg.dir().join("v0009.safetensors"), b"partial").unwrap();
        fs::write(reg.dir().join("notes.txt"), b"hello").unwrap();
        let list = reg.list().unwrap();
        let versions: Vec<u32> = list.iter().map(|m| m.version).collect();
        assert_eq!(versions, vec![1, 2, 3]);
        let bad = reg.incomplete_versions().unwrap();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 9);
        // The next version skips past the orphan rather than overwriting it.
        assert_eq!(reg.save(&head, &report).unwrap(), 10);
        // Reopening cleans the temp file.
        let reg = Registry::open(reg.dir().to_path_buf(), backbone("aaa")).unwrap();
        assert!(!stale.exists());
        assert_eq!(reg.list().unwrap().len(), 4);
    }

    #[test]
    fn save_rejects_mismatched_report() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = open(tmp.path(), "aaa");
        let (head, mut report, _) = trained(0.0);
        report.classes.reverse();
        assert!(matches!(
            reg.save(&head, &report),
            Err(RegistryError::Inconsistent(_))
        ));
    }

    #[test]
    fn model_keys_are_validated() {
        let base = Path::new("/state");
        assert_eq!(
            Registry::model_dir(base, "mobilenet_v2-1.0").unwrap(),
            PathBuf::from("/state/heads/mobilenet_v2-1.0")
        );
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b"] {
            assert!(Registry::model_dir(base, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
