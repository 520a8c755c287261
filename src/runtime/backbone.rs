//! The frozen backbone: an ONNX model loaded once, run by the configured backend.
//!
//! [`Backbone`] is what the rest of adaptd sees, whatever runs the graph: it pins the input
//! shape (the batch too), plans the outputs (the embedding for the trainable head first, then
//! the manifest's logits or detector heads) and hands back [`OutputTensor`]s with the
//! manifest's names and roles. The engine underneath ([`crate::runtime`]: tract, or
//! onnxruntime loaded at run time) only executes the graph, so preprocessing, decoding, the
//! head and training are the same code for both backends.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::model::manifest::{Manifest, OutputRole, Task};
use crate::model::ResolvedModel;
use crate::runtime::{self, BackendKind, BackendOptions, Engine, LoadRequest};

/// Errors while loading or running a backbone.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    #[error("{path}: not a loadable ONNX model: {detail}")]
    Load { path: PathBuf, detail: String },
    #[error(
        "{path}: the manifest names input '{expected}' but the model's inputs are {found:?}; \
         fix [input].name in the manifest"
    )]
    InputName {
        path: PathBuf,
        expected: String,
        found: Vec<String>,
    },
    #[error(
        "{path}: the model has no tensor '{name}' (named by the manifest's {key}); \
         list the model's tensors with `adaptd inspect --model ...`"
    )]
    MissingTensor {
        path: PathBuf,
        name: String,
        key: &'static str,
    },
    #[error("{path}: tract could not optimise the model for input shape {shape:?}: {detail}")]
    Optimise {
        path: PathBuf,
        shape: Vec<usize>,
        detail: String,
    },
    #[error("inference failed: {detail}")]
    Run { detail: String },
    #[error("{path}: onnxruntime could not create a session for the model: {detail}")]
    Session { path: PathBuf, detail: String },
    #[error("{what} is not available with the {backend} backend")]
    Unsupported {
        what: &'static str,
        backend: BackendKind,
    },
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("input has {got} values, the model expects {expected} (batch {batch})")]
    InputSize {
        got: usize,
        expected: usize,
        batch: usize,
    },
}

/// One output tensor of a run: its manifest name and role, shape and values.
#[derive(Debug, Clone)]
pub struct OutputTensor {
    pub name: String,
    pub role: OutputRole,
    pub stride: Option<u32>,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct BackboneOutput {
    pub tensors: Vec<OutputTensor>,
}

impl BackboneOutput {
    /// The first tensor with this role.
    pub fn role(&self, role: OutputRole) -> Option<&OutputTensor> {
        self.tensors.iter().find(|t| t.role == role)
    }
}

/// Time spent per operator type in one profiled run.
#[derive(Debug, Clone)]
pub struct OpProfile {
    pub op: String,
    pub nodes: usize,
    pub total: Duration,
}

/// A loaded model and the engine state that runs it (one per worker thread).
pub struct Backbone {
    path: PathBuf,
    input_shape: Vec<usize>,
    outputs: Vec<(String, OutputRole, Option<u32>)>,
    engine: Box<dyn Engine>,
    /// Load + optimise time, reported by `bench` and at start-up.
    pub load_time: Duration,
}

impl Backbone {
    /// Loads `model` with tract on one thread, its batch dimension pinned to `batch`.
    pub fn load(model: &ResolvedModel, batch: usize) -> Result<Backbone, BackboneError> {
        Backbone::load_with(model, batch, &BackendOptions::default())
    }

    /// Loads `model` with the backend and threads of `opts`, its batch pinned to `batch`.
    /// With `auto`, logs which backend was chosen and why; with tract, warns about int8 QDQ
    /// models (tract runs them as float, slower than the fp32 model).
    pub fn load_with(
        model: &ResolvedModel,
        batch: usize,
        opts: &BackendOptions,
    ) -> Result<Backbone, BackboneError> {
        let start = Instant::now();
        let m = &model.manifest;
        let mut input_shape = m.input.shape.clone();
        input_shape[0] = batch.max(1);
        let outputs = output_plan(m);
        let keyed: Vec<(&str, &'static str)> = outputs
            .iter()
            .map(|(n, _, _)| {
                let key = if m.embedding.as_ref().is_some_and(|e| &e.tensor == n) {
                    "[embedding].tensor"
                } else {
                    "[[outputs]].name"
                };
                (n.as_str(), key)
            })
            .collect();
        let request = LoadRequest {
            model,
            input_shape: &input_shape,
            outputs: &keyed,
        };
        let (engine, why) = runtime::open(&request, opts)?;
        match (engine.kind(), why) {
            (BackendKind::Onnxruntime, Some(why)) => {
                tracing::info!(model = %m.name, "backend onnxruntime: {why}")
            }
            (BackendKind::Tract, Some(why)) => {
                tracing::warn!(model = %m.name, "backend tract: {why}")
            }
            _ => {}
        }
        if let (BackendKind::Tract, Some(q)) = (engine.kind(), &m.quantized) {
            tracing::warn!(
                model = %m.name,
                "{} is a quantized ({q}) model: tract runs it as float around quantize/dequantize \
                 steps, slower than the fp32 model; use the fp32 model with tract, or \
                 [model].backend = \"onnxruntime\" for int8 speed",
                m.name
            );
        }
        Ok(Backbone {
            path: model.model_path.clone(),
            input_shape,
            outputs,
            engine,
            load_time: start.elapsed(),
        })
    }

    /// The backend running this backbone.
    pub fn backend(&self) -> BackendKind {
        self.engine.kind()
    }

    /// The pinned input shape, batch first.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The batch size the model was loaded for.
    pub fn batch(&self) -> usize {
        self.input_shape[0]
    }

    /// Values per batch item.
    pub fn item_len(&self) -> usize {
        self.input_shape[1..].iter().product()
    }

    /// The model file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Uses `threads` intra-op threads; 1 = the calling thread only. With tract only
    /// matmul-like and element-wise ops use them; onnxruntime rebuilds its session.
    pub fn set_threads(&mut self, threads: usize) -> Result<(), BackboneError> {
        self.engine.set_threads(threads)
    }

    /// Runs one batch; `input` holds exactly `batch * item_len` values.
    pub fn run(&mut self, input: &[f32]) -> Result<BackboneOutput, BackboneError> {
        self.check_input(input)?;
        let raw = self.engine.run(input)?;
        if raw.len() != self.outputs.len() {
            return Err(BackboneError::Run {
                detail: format!(
                    "the {} backend returned {} outputs, {} were planned",
                    self.engine.kind(),
                    raw.len(),
                    self.outputs.len()
                ),
            });
        }
        let tensors = raw
            .into_iter()
            .zip(&self.outputs)
            .map(|(r, (name, role, stride))| OutputTensor {
                name: name.clone(),
                role: *role,
                stride: *stride,
                shape: r.shape,
                data: r.data,
            })
            .collect();
        Ok(BackboneOutput { tensors })
    }

    /// Runs once while timing every node (tract only); time per operator type, largest first.
    pub fn profile(&mut self, input: &[f32]) -> Result<Vec<OpProfile>, BackboneError> {
        self.check_input(input)?;
        self.engine.profile(input)
    }

    /// Another worker's engine for the same loaded model (tract shares the optimised plan).
    pub fn spawn_worker(&self) -> Result<Backbone, BackboneError> {
        Ok(Backbone {
            path: self.path.clone(),
            input_shape: self.input_shape.clone(),
            outputs: self.outputs.clone(),
            engine: self.engine.spawn_worker()?,
            load_time: Duration::ZERO,
        })
    }

    fn check_input(&self, input: &[f32]) -> Result<(), BackboneError> {
        let expected = self.input_shape.iter().product();
        if input.len() != expected {
            return Err(BackboneError::InputSize {
                got: input.len(),
                expected,
                batch: self.batch(),
            });
        }
        Ok(())
    }
}

/// The tensors one run must produce: the embedding (when the manifest names one) first,
/// then the manifest's outputs.
fn output_plan(m: &Manifest) -> Vec<(String, OutputRole, Option<u32>)> {
    let mut outputs = Vec::new();
    if let Some(e) = &m.embedding {
        outputs.push((e.tensor.clone(), OutputRole::Embedding, None));
    }
    for o in &m.outputs {
        if !outputs.iter().any(|(n, _, _)| n == &o.name) {
            outputs.push((o.name.clone(), o.role, o.stride));
        }
    }
    outputs
}

/// True for tasks whose outputs include class logits.
pub fn has_logits(m: &Manifest) -> bool {
    m.task == Task::Classify
}
