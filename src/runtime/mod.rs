//! Inference backends: what executes the ONNX graph under a [`Backbone`].
//!
//! Two engines implement [`Engine`]: [`tract`] (pure Rust, always built, the default) and
//! [`onnxruntime`] (the `onnxruntime` cargo feature: Microsoft's runtime through its C API,
//! loaded from a shared library at run time, never linked or downloaded at build time).
//! Everything above the engine (preprocessing, the embedding cut, detection decoding, the head,
//! training, the sample store, the audio front end) is shared: an engine only turns one input
//! tensor into the manifest's named outputs, in the order of the [`Backbone`]'s output plan,
//! so both backends feed identical code with tensors of identical names and shapes.
//!
//! Why a second backend at all: tract is portable and dependency-free but 2.6–3.6x slower
//! than onnxruntime on the CNNs here and runs int8 QDQ models as float (slower than fp32),
//! while onnxruntime has vectorised depthwise and int8 kernels (docs/PERFORMANCE.md). Why
//! loaded at run time: onnxruntime is a 20 MB C++ library with no 32-bit ARM build; loading
//! the pip wheel's library when it is there keeps one binary for every board, and `auto`
//! falls back to tract where it is not.
//!
//! [`Backbone`]: crate::runtime::backbone::Backbone

pub mod backbone;
pub mod depthwise;
#[cfg(feature = "onnxruntime")]
#[cfg(feature = "onnxruntime")]
pub mod onnxruntime;
pub mod tract;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::ResolvedModel;
use crate::runtime::backbone::{BackboneError, OpProfile};

/// The `[model].backend` setting: which engine to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// tract (always available).
    #[default]
    Tract,
    /// onnxruntime; an error when its library cannot be loaded.
    Onnxruntime,
    /// onnxruntime when its library loads, tract otherwise.
    Auto,
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendChoice::Tract => "tract",
            BackendChoice::Onnxruntime => "onnxruntime",
            BackendChoice::Auto => "auto",
        })
    }
}

/// The engine actually running a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Tract,
    Onnxruntime,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Tract => "tract",
            BackendKind::Onnxruntime => "onnxruntime",
        })
    }
}

/// How to run a model: the engine, its intra-op threads and where onnxruntime's library is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendOptions {
    pub choice: BackendChoice,
    /// Intra-op threads (1 = the calling thread only).
    pub threads: usize,
    /// onnxruntime's shared library (`[model].onnxruntime_library`); `None` tries
    /// `ORT_DYLIB_PATH`, then the system's library search path.
    pub library: Option<PathBuf>,
    /// Whose depthwise convolution tract runs (`[model].tract_depthwise`).
    pub tract_depthwise: depthwise::DepthwiseKernels,
}

impl Default for BackendOptions {
    /// tract on one thread: what adaptd did before backends were configurable.
    fn default() -> Self {
        BackendOptions {
            choice: BackendChoice::Tract,
            threads: 1,
            library: None,
            tract_depthwise: depthwise::DepthwiseKernels::Auto,
        }
    }
}

impl BackendOptions {
    /// The same options with another engine choice.
    pub fn with_choice(&self, choice: BackendChoice) -> BackendOptions {
        BackendOptions {
            choice,
            ..self.clone()
        }
    }
}

/// Errors of choosing or starting a backend (the model's own problems are
/// [`BackboneError`]s).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "[model].backend = \"onnxruntime\", but this adaptd was built without the `onnxruntime` \
         cargo feature; rebuild with `cargo build --release --features onnxruntime`, or set \
         backend = \"tract\" (or \"auto\", which falls back to tract)"
    )]
    NotBuilt,
    #[error(
        "cannot load onnxruntime from {tried}: {detail}. Install it with \
         `pip install onnxruntime==1.32.0` and set [model].onnxruntime_library (or \
         ORT_DYLIB_PATH) to the wheel's onnxruntime/capi/libonnxruntime.so.1.32.0, or set \
         [model].backend = \"tract\" (see docs/install.md)"
    )]
    Library { tried: String, detail: String },
}

/// One output of a run, in the backbone's output-plan order.
#[derive(Debug, Clone)]
pub struct RawOutput {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// What a backend must do for a [`Backbone`](crate::runtime::backbone::Backbone): run the
/// graph on one pinned-shape input and return the planned outputs, in order.
pub trait Engine: Send {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Runs one input of exactly the pinned shape (the caller checked the length).
    fn run(&mut self, input: &[f32]) -> Result<Vec<RawOutput>, BackboneError>;

    /// Sets the intra-op threads (onnxruntime rebuilds its session, which takes as long as a
    /// load: call it at start-up, not per frame).
    fn set_threads(&mut self, threads: usize) -> Result<(), BackboneError>;

    /// An independent engine for another worker thread, sharing what can be shared.
    fn spawn_worker(&self) -> Result<Box<dyn Engine>, BackboneError>;

    /// Time per operator type for one run, where the backend can tell.
    fn profile(&mut self, _input: &[f32]) -> Result<Vec<OpProfile>, BackboneError> {
        Err(BackboneError::Unsupported {
            what: "per-operator profiling",
            backend: self.kind(),
        })
    }
}

/// What a backend needs to load a model: the file, the pinned input shape and the tensors to
/// return, in order, with the manifest key that named each (for error messages).
pub struct LoadRequest<'a> {
    pub model: &'a ResolvedModel,
    pub input_shape: &'a [usize],
    pub outputs: &'a [(&'a str, &'static str)],
}

/// Loads `req` with the backend `opts` selects. Returns the engine and, for `auto`, why that
/// backend was chosen (logged once by the caller).
pub fn open(
    req: &LoadRequest<'_>,
    opts: &BackendOptions,
) -> Result<(Box<dyn Engine>, Option<String>), BackboneError> {
    match opts.choice {
        BackendChoice::Tract => Ok((Box::new(tract::TractEngine::load(req, opts)?), None)),
        BackendChoice::Onnxruntime => open_onnxruntime(req, opts).map(|e| (e, None)),
        // onnxruntime when it loads *and* takes the model; tract otherwise (if tract cannot
        // take the model either, its error is the one reported).
        BackendChoice::Auto => {
            let why = match probe_onnxruntime(opts) {
                Ok(lib) => match open_onnxruntime(req, opts) {
                    Ok(engine) => {
                        let why = format!("backend = \"auto\" and onnxruntime loaded ({lib})");
                        return Ok((engine, Some(why)));
                    }
                    Err(e) => format!("onnxruntime ({lib}) could not run the model: {e}"),
                },
                Err(e) => format!("onnxruntime is unavailable: {e}"),
            };
            let engine = tract::TractEngine::load(req, opts)?;
            Ok((
                Box::new(engine),
                Some(format!("backend = \"auto\" and {why}")),
            ))
        }
    }
}

/// Whether onnxruntime's library loads with these options: `Ok(description)` (version and
/// path) or the reason it does not. Loading is done once per process; later calls are cheap.
pub fn probe_onnxruntime(opts: &BackendOptions) -> Result<String, RuntimeError> {
    #[cfg(feature = "onnxruntime")]
    {
        onnxruntime::library(opts.library.as_deref()).map(|l| l.describe())
    }
    #[cfg(not(feature = "onnxruntime"))]
    {
        let _ = opts;
        Err(RuntimeError::NotBuilt)
    }
}

fn open_onnxruntime(
    req: &LoadRequest<'_>,
    opts: &BackendOptions,
) -> Result<Box<dyn Engine>, BackboneError> {
    #[cfg(feature = "onnxruntime")]
    {
        Ok(Box::new(onnxruntime::OrtEngine::load(req, opts)?))
    }
    #[cfg(not(feature = "onnxruntime"))]
    {
        let _ = (req, opts);
        Err(RuntimeError::NotBuilt.into())
    }
}

/// The shared library inside the onnxruntime wheel that `python` imports
/// (`.../site-packages/onnxruntime/capi/libonnxruntime.so.<version>`), if any: what `adaptd
/// bench` compares against and what the tests use when nothing is configured.
pub fn find_wheel_library(python: &str) -> Option<PathBuf> {
    const FIND: &str = "import glob, os, onnxruntime\n\
        d = os.path.join(os.path.dirname(onnxruntime.__file__), 'capi')\n\
        libs = sorted(glob.glob(os.path.join(d, 'libonnxruntime.so*')))\n\
        print(libs[-1] if libs else '')";
    let out = std::process::Command::new(python)
        .args(["-c", FIND])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let path = PathBuf::from(text.trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// True when this binary was built with the onnxruntime backend.
pub const ONNXRUNTIME_BUILT: bool = cfg!(feature = "onnxruntime");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_from_config_words() {
        #[derive(Deserialize)]
        struct T {
            b: BackendChoice,
        }
        let t: T = toml::from_str("b = \"auto\"").unwrap();
        assert_eq!(t.b, BackendChoice::Auto);
        let err = toml::from_str::<T>("b = \"cuda\"")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("tract") && err.contains("onnxruntime"),
            "{err}"
        );
        assert_eq!(BackendChoice::Onnxruntime.to_string(), "onnxruntime");
    }

    #[test]
    fn missing_library_error_says_how_to_fix() {
        let e = RuntimeError::Library {
            tried: "/nope/libonnxruntime.so".into(),
            detail: "no such file".into(),
        }
        .to_string();
        assert!(e.contains("/nope/libonnxruntime.so"), "{e}");
        assert!(e.contains("pip install onnxruntime==1.32.0"), "{e}");
        assert!(e.contains("ORT_DYLIB_PATH"), "{e}");
    }
}
