//! The onnxruntime engine: the `ort` crate over onnxruntime's C API, loaded at run time.
//!
//! The shared library is the one the PyPI wheel ships (`onnxruntime/capi/libonnxruntime.so.
//! <version>`, x86_64 and aarch64); it is looked for, in order, at `[model].onnxruntime_library`,
//! at `$ORT_DYLIB_PATH`, then as `libonnxruntime.so` on the system's library search path. A
//! process loads one onnxruntime library, once: the first successful load wins, and asking
//! for a different file later is an error rather than a silent mix-up.
//!
//! The model given to onnxruntime is the manifest's file with its graph outputs replaced by
//! the planned tensors (`model::onnx_graph`), so the embedding (an intermediate tensor)
//! comes back from the same run as the logits or detector heads, exactly as with tract.
//! Session settings match `benches/ort_reference.py` (Python onnxruntime): all graph
//! optimisations, sequential execution, `threads` intra-op threads, one inter-op thread.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use tract_onnx::prelude::Framework;

use super::{BackendKind, BackendOptions, Engine, LoadRequest, RawOutput, RuntimeError};
use crate::runtime::backbone::BackboneError;

/// The library name tried on the system search path when nothing is configured.
pub const DEFAULT_LIBRARY: &str = "libonnxruntime.so";

/// The onnxruntime library this process loaded, and its environment.
#[derive(Clone)]
pub struct Library {
    /// The file as it was asked for (absolute when it was given as a path).
    pub path: PathBuf,
    /// Where the path came from (config key, environment variable or default).
    pub source: &'static str,
    /// onnxruntime's version, as the library reports it.
    pub version: String,
    env: Environment,
}

impl Library {
    /// "onnxruntime 1.32.0 from PATH (source)", for log lines.
    pub fn describe(&self) -> String {
        format!(
            "onnxruntime {} from {} ({})",
            self.version,
            self.path.display(),
            self.source
        )
    }
}

static LOADED: Mutex<Option<Library>> = Mutex::new(None);

/// Which file to load: the configured one, else `$ORT_DYLIB_PATH`, else the default name.
pub fn library_path(configured: Option<&Path>) -> (PathBuf, &'static str) {
    if let Some(p) = configured {
        return (p.to_path_buf(), "[model].onnxruntime_library");
    }
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), "ORT_DYLIB_PATH"),
        _ => (
            PathBuf::from(DEFAULT_LIBRARY),
            "default name on the library search path; neither [model].onnxruntime_library nor ORT_DYLIB_PATH is set",
        ),
    }
}

/// Loads onnxruntime's library (once per process) and returns it.
pub fn library(configured: Option<&Path>) -> Result<Library, RuntimeError> {
    let (requested, source) = library_path(configured);
    let fail = |path: &Path, detail: String| RuntimeError::Library {
        tried: format!("{} ({source})", path.display()),
        detail,
    };
    // A path with a directory is resolved against the working directory here, so the error
    // names the file really tried (ort would resolve it against the executable's directory).
    let path = if requested.components().count() > 1 && requested.is_relative() {
        std::env::current_dir()
            .map(|d| d.join(&requested))
            .unwrap_or(requested.clone())
    } else {
        requested.clone()
    };
    if path.components().count() > 1 && !path.is_file() {
        return Err(fail(&path, "no such file".into()));
    }
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(lib) = loaded.as_ref() {
        // Nothing configured: whatever this process already loaded is the library.
        if lib.path == path || requested.as_os_str() == DEFAULT_LIBRARY {
            return Ok(lib.clone());
        }
        return Err(fail(
            &path,
            format!(
                "this process already loaded onnxruntime from {}, and one process can use only one onnxruntime library; configure the same file everywhere",
                lib.path.display()
            ),
        ));
    }
    // ort panics in a few places when a library misbehaves: contain it.
    let result = std::panic::catch_unwind(|| -> Result<Library, String> {
        let builder = ort::init_from(&path).map_err(|e| e.to_string())?;
        let env = builder
            .with_name("adaptd")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Library {
            path: path.clone(),
            source,
            version: version_of(&path).unwrap_or_else(|| version_from_build_info(ort::info())),
            env,
        })
    })
    .unwrap_or_else(|_| Err("onnxruntime panicked while loading".into()));
    let lib = result.map_err(|detail| fail(&path, detail))?;
    *loaded = Some(lib.clone());
    Ok(lib)
}

/// onnxruntime's own answer ("1.32.0") from `OrtGetApiBase()->GetVersionString()`. The build
/// information string names the version only in release-branch builds: the PyPI wheel says
/// `git-branch=HEAD`.
fn version_of(path: &Path) -> Option<String> {
    // SAFETY: ort has just loaded this file and checked its API (so dlopen only takes another
    // reference to the same library); OrtGetApiBase and GetVersionString are onnxruntime's
    // stable C ABI, and the string, owned by the library, is copied before the handle drops.
    unsafe {
        let lib = libloading::Library::new(path).ok()?;
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").ok()?;
        let base = get_base();
        if base.is_null() {
            return None;
        }
        let version = ((*base).GetVersionString)();
        if version.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(version).to_str().ok()?.to_string())
    }
}

/// "1.32.0" out of onnxruntime's build information ("... git-branch=rel-1.32.0, ...").
fn version_from_build_info(info: &str) -> String {
    info.split([',', ' '])
        .find_map(|part| part.trim().strip_prefix("git-branch=rel-"))
        .map(str::to_string)
        .unwrap_or_else(|| "(unknown version)".into())
}

/// An onnxruntime session for one model.
pub struct OrtEngine {
    path: PathBuf,
    input_name: String,
    input_shape: Vec<usize>,
    output_names: Vec<String>,
    /// The model with its outputs re-selected, kept to build sessions for other thread
    /// counts or workers.
    bytes: Arc<[u8]>,
    library: Library,
    threads: usize,
    session: Session,
}

impl OrtEngine {
    /// Loads the library if needed, checks the manifest's tensor names against the graph and
    /// builds the session.
    pub fn load(req: &LoadRequest<'_>, opts: &BackendOptions) -> Result<OrtEngine, BackboneError> {
        let library = library(opts.library.as_deref())?;
        let path = req.model.model_path.clone();
        let load_err = |detail: String| BackboneError::Load {
            path: path.clone(),
            detail,
        };
        let output_names = check_names(req)?;
        let raw = std::fs::read(&path).map_err(|e| load_err(e.to_string()))?;
        let names: Vec<&str> = output_names.iter().map(String::as_str).collect();
        let bytes: Arc<[u8]> = crate::model::onnx_graph::with_outputs(&raw, &names)
            .map_err(|e| load_err(format!("cannot re-select the graph outputs: {e}")))?
            .into();
        let session = new_session(&library, &path, &bytes, opts.threads)?;
        Ok(OrtEngine {
            path,
            input_name: req.model.manifest.input.name.clone(),
            input_shape: req.input_shape.to_vec(),
            output_names,
            bytes,
            library,
            threads: opts.threads,
            session,
        })
    }
}

/// Checks the manifest's input and output names against the graph, as tract's loader does,
/// so both backends refuse the same manifests with the same errors. Returns the tensor names
/// to fetch (a node name in the manifest becomes its first output, as tract accepts both).
fn check_names(req: &LoadRequest<'_>) -> Result<Vec<String>, BackboneError> {
    let path = &req.model.model_path;
    let proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| BackboneError::Load {
            path: path.clone(),
            detail: format!("{e:#}"),
        })?;
    let graph = proto.graph.unwrap_or_default();
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<String> = graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .filter(|n| !initializers.contains(n.as_str()))
        .collect();
    let expected = &req.model.manifest.input.name;
    if !inputs.contains(expected) {
        return Err(BackboneError::InputName {
            path: path.clone(),
            expected: expected.clone(),
            found: inputs,
        });
    }
    req.outputs
        .iter()
        .map(|(name, key)| {
            let produced = graph
                .node
                .iter()
                .any(|n| n.output.iter().any(|o| o == name));
            if produced || inputs.iter().any(|i| i == name) {
                return Ok(name.to_string());
            }
            graph
                .node
                .iter()
                .find(|n| n.name == *name)
                .and_then(|n| n.output.first().cloned())
                .ok_or_else(|| BackboneError::MissingTensor {
                    path: path.clone(),
                    name: name.to_string(),
                    key,
                })
        })
        .collect()
}

fn new_session(
    library: &Library,
    path: &Path,
    bytes: &[u8],
    threads: usize,
) -> Result<Session, BackboneError> {
    let err = |detail: String| BackboneError::Session {
        path: path.to_path_buf(),
        detail,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Session::builder(&library.env)
            .map_err(|e| e.to_string())?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| e.to_string())?
            .with_intra_threads(threads.max(1))
            .map_err(|e| e.to_string())?
            .with_inter_threads(1)
            .map_err(|e| e.to_string())?
            .with_parallel_execution(false)
            .map_err(|e| e.to_string())?
            .commit_from_memory(bytes)
            .map_err(|e| e.to_string())
    }))
    .unwrap_or_else(|_| Err("onnxruntime panicked while building the session".into()));
    result.map_err(err)
}

impl Engine for OrtEngine {
    fn kind(&self) -> BackendKind {
        BackendKind::Onnxruntime
    }

    fn run(&mut self, input: &[f32]) -> Result<Vec<RawOutput>, BackboneError> {
        let run_err = |detail: String| BackboneError::Run {
            detail: format!("onnxruntime: {detail}"),
        };
        let tensor = TensorRef::from_array_view((self.input_shape.clone(), input))
            .map_err(|e| run_err(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| run_err(e.to_string()))?;
        self.output_names
            .iter()
            .map(|name| {
                let value = outputs
                    .get(name)
                    .ok_or_else(|| run_err(format!("no output {name}")))?;
                let (shape, data) = value
                    .try_extract_tensor::<f32>()
                    .map_err(|e| run_err(format!("output {name}: {e}")))?;
                let shape = shape
                    .iter()
                    .map(|&d| usize::try_from(d))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| run_err(format!("output {name} has shape {shape:?}")))?;
                Ok(RawOutput {
                    shape,
                    data: data.to_vec(),
                })
            })
            .collect()
    }

    /// Rebuilds the session with `threads` intra-op threads (onnxruntime fixes them at
    /// session creation).
    fn set_threads(&mut self, threads: usize) -> Result<(), BackboneError> {
        if threads != self.threads {
            self.session = new_session(&self.library, &self.path, &self.bytes, threads)?;
            self.threads = threads;
        }
        Ok(())
    }

    /// A second session on the same re-selected model (a session runs one call at a time).
    fn spawn_worker(&self) -> Result<Box<dyn Engine>, BackboneError> {
        Ok(Box::new(OrtEngine {
            path: self.path.clone(),
            input_name: self.input_name.clone(),
            input_shape: self.input_shape.clone(),
            output_names: self.output_names.clone(),
            bytes: self.bytes.clone(),
            library: self.library.clone(),
            threads: self.threads,
            session: new_session(&self.library, &self.path, &self.bytes, self.threads)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_build_info() {
        assert_eq!(
            version_from_build_info(
                "ORT Build Info: git-branch=rel-1.32.0, git-commit-id=abc, build type=Release"
            ),
            "1.32.0"
        );
        assert_eq!(version_from_build_info("odd"), "(unknown version)");
    }

    #[test]
    fn a_missing_file_is_a_clear_error_before_any_loading() {
        let e = library(Some(Path::new("/nonexistent/libonnxruntime.so.1.32.0")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("/nonexistent/libonnxruntime.so.1.32.0") && e.contains("no such file"),
            "{e}"
        );
        assert!(e.contains("pip install onnxruntime==1.32.0"), "{e}");
    }
}
