//! Finding a model: manifest by name or path, its files on disk, their checksums, its labels.
//!
//! Resolution is deliberately strict: a model file whose sha256 differs from its manifest is
//! refused, because a manifest applied to the wrong file yields confident nonsense (wrong
//! normalisation, wrong embedding tensor) rather than an error.

pub mod manifest;
pub mod onnx_graph;
pub mod tail;

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use manifest::Manifest;

/// Errors while finding, reading or checking a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: bad model manifest: {problem}")]
    Manifest { path: String, problem: String },
    #[error(
        "unknown model '{name}': not a manifest file and not a built-in model ({builtins}); \
         pass a path to a .toml manifest (see docs/models.md)"
    )]
    UnknownModel { name: String, builtins: String },
    #[error(
        "model file '{file}' for '{model}' not found; looked in: {searched}. \
         Run `models/fetch --dest DIR` (or `models/fetch --mirror DIR`) and pass --model-dir DIR"
    )]
    FileNotFound {
        model: String,
        file: String,
        searched: String,
    },
    #[error(
        "{path}: sha256 mismatch: the manifest expects {expected} but the file has {actual}; \
         the file is corrupt, truncated or a different model: fetch it again with `models/fetch`"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: could not {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: labels file has {found} lines but the model has {expected} classes")]
    LabelCount {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
}

/// Where model files are looked for, in order.
#[derive(Debug, Clone, Default)]
pub struct ModelDirs {
    dirs: Vec<PathBuf>,
}

impl ModelDirs {
    /// The explicit directory (CLI or config) first, then `$ADAPTD_MODEL_DIR`, then the
    /// conventional places: `./models` (a checkout), the state directory's `models/`, and
    /// `/usr/share/adaptd/models` (the Debian package).
    pub fn new(explicit: Option<&Path>, state_dir: Option<&Path>) -> ModelDirs {
        let mut dirs = Vec::new();
        if let Some(d) = explicit {
            dirs.push(d.to_path_buf());
        }
        if let Some(d) = std::env::var_os("ADAPTD_MODEL_DIR") {
            dirs.push(PathBuf::from(d));
        }
        dirs.push(PathBuf::from("models"));
        if let Some(s) = state_dir {
            dirs.push(s.join("models"));
        }
        dirs.push(PathBuf::from("/usr/share/adaptd/models"));
        ModelDirs { dirs }
    }

    /// Only the given directories (tests).
    pub fn only(dirs: Vec<PathBuf>) -> ModelDirs {
        ModelDirs { dirs }
    }

    fn find(&self, origin: Option<&Path>, file: &str) -> Option<PathBuf> {
        let from_manifest = origin.and_then(Path::parent).map(Path::to_path_buf);
        self.candidates(from_manifest)
            .map(|d| d.join(file))
            .find(|p| p.is_file())
    }

    fn candidates(&self, first: Option<PathBuf>) -> impl Iterator<Item = PathBuf> + '_ {
        first.into_iter().chain(self.dirs.iter().cloned())
    }

    fn describe(&self, origin: Option<&Path>) -> String {
        let from_manifest = origin.and_then(Path::parent).map(Path::to_path_buf);
        self.candidates(from_manifest)
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A manifest whose files were found and checked.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub manifest: Manifest,
    pub model_path: PathBuf,
    /// Class names, empty when the model has no labels file.
    pub labels: Vec<String>,
}

impl ResolvedModel {
    /// Resolves `name_or_path` (a built-in name, or a path to a `.toml` manifest), finds the
    /// model and labels files and verifies their sha256.
    pub fn resolve(name_or_path: &str, dirs: &ModelDirs) -> Result<ResolvedModel, ModelError> {
        let manifest = load_manifest(name_or_path, dirs)?;
        let origin = manifest.origin.clone();
        let find = |file: &str| {
            dirs.find(origin.as_deref(), file)
                .ok_or_else(|| ModelError::FileNotFound {
                    model: manifest.name.clone(),
                    file: file.to_string(),
                    searched: dirs.describe(origin.as_deref()),
                })
        };
        let model_path = find(&manifest.file)?;
        verify_sha256(&model_path, &manifest.sha256)?;
        let labels = match &manifest.labels {
            Some(file) => {
                let path = find(file)?;
                if let Some(sha) = &manifest.labels_sha256 {
                    verify_sha256(&path, sha)?;
                }
                read_labels(&path)?
            }
            None => Vec::new(),
        };
        Ok(ResolvedModel {
            manifest,
            model_path,
            labels,
        })
    }
}

/// A manifest by path (anything ending in `.toml` or containing a `/`), by a `NAME.toml` in a
/// model directory, or built in.
pub fn load_manifest(name_or_path: &str, dirs: &ModelDirs) -> Result<Manifest, ModelError> {
    let as_path = Path::new(name_or_path);
    if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
        return Manifest::from_path(as_path);
    }
    if let Some(path) = dirs
        .candidates(None)
        .map(|d| d.join(format!("{name_or_path}.toml")))
        .find(|p| p.is_file())
    {
        return Manifest::from_path(&path);
    }
    match Manifest::builtin(name_or_path) {
        Some(m) => m,
        None => Err(ModelError::UnknownModel {
            name: name_or_path.to_string(),
            builtins: manifest::builtin_names().collect::<Vec<_>>().join(", "),
        }),
    }
}

/// Streams the file through SHA-256 (14 MB in a few tens of ms) and compares.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<(), ModelError> {
    let actual = sha256_file(path)?;
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(ModelError::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let io = |what, source| ModelError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    let mut file = std::fs::File::open(path).map_err(|e| io("open", e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| io("read", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn read_labels(path: &Path) -> Result<Vec<String>, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        what: "read the labels",
        source: e,
    })?;
    Ok(text.lines().map(|l| l.trim().to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn unknown_model_lists_builtins() {
        let err = load_manifest("resnet9000", &ModelDirs::only(vec![]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mobilenetv2") && err.contains("resnet9000"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let err = ResolvedModel::resolve("mobilenetv2", &ModelDirs::only(vec![dir.path().into()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mobilenetv2_imagenet.onnx"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}
