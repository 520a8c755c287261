//! The frozen backbone: an ONNX model loaded, pinned and optimised once by tract.
//!
//! Shapes are always pinned (the batch too): tract optimises far better for concrete
//! dimensions (a symbolic batch measured about 5x slower here). The graph's outputs are
//! re-selected so that one run yields everything the manifest asks for at once (the embedding
//! for the trainable head and the logits, or a detector's score/box tensors).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;

use crate::model::manifest::{Manifest, OutputRole, Task};
use crate::model::ResolvedModel;

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

type Plan = Arc<TypedRunnableModel>;

/// A loaded, optimised model and the per-worker state that runs it.
pub struct Backbone {
    path: PathBuf,
    input_shape: Vec<usize>,
    outputs: Vec<(String, OutputRole, Option<u32>)>,
    plan: Plan,
    state: TypedSimpleState,
    /// The graph has operators that keep state between runs (the GE2E speaker encoder's
    /// LSTM, as a tract `Scan`, carries its hidden state over to the next run, made for
    /// streaming): such a graph gets a fresh state for every run, or each embedding would
    /// depend on the inputs before it.
    stateful: bool,
    /// Intra-op thread pool; `None` runs on the calling thread only.
    executor: Option<Executor>,
    /// Load + optimise time, reported by `bench` and at start-up.
    pub load_time: Duration,
}

impl Backbone {
    /// Loads `model` with its batch dimension pinned to `batch`.
    pub fn load(model: &ResolvedModel, batch: usize) -> Result<Backbone, BackboneError> {
        let start = Instant::now();
        let m = &model.manifest;
        let path = model.model_path.clone();
        let mut input_shape = m.input.shape.clone();
        input_shape[0] = batch.max(1);
        let outputs = output_plan(m);
        let names: Vec<&str> = outputs.iter().map(|(n, _, _)| n.as_str()).collect();

        // tract panics on a few malformed graphs instead of returning an error: contain it, so
        // a wrong model file is an error message, never a crash.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            load_plan(model, &input_shape, &names)
        }))
        .unwrap_or_else(|_| {
            Err(BackboneError::Load {
                path: path.clone(),
                detail: "tract panicked while reading the graph".into(),
            })
        })?;
        let state = loaded.spawn().map_err(|e| BackboneError::Load {
            path: path.clone(),
            detail: format!("{e:#}"),
        })?;
        // tract's recurrent operators (Scan, what ONNX LSTM/GRU/RNN become, and its fused
        // *Seq kernels) carry their state between runs unless told otherwise.
        let stateful = loaded.model().nodes().iter().any(|n| {
            let name = n.op.name();
            name.contains("Scan") || name.ends_with("Seq")
        });
        Ok(Backbone {
            path,
            input_shape,
            outputs,
            plan: loaded,
            state,
            stateful,
            executor: None,
            load_time: start.elapsed(),
        })
    }

    /// The pinned input shape, batch first.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The batch size the plan was optimised for.
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

    /// Uses `threads` threads inside matrix products (tract's `multithread-mm`); 1 = none.
    /// Only matmul-like and element-wise ops use the pool, so the gain is modest.
    pub fn set_threads(&mut self, threads: usize) {
        self.executor = (threads > 1).then(|| Executor::multithread(threads));
    }

    /// Runs one batch; `input` holds exactly `batch * item_len` values.
    pub fn run(&mut self, input: &[f32]) -> Result<BackboneOutput, BackboneError> {
        let tensor = self.input_tensor(input)?;
        if self.stateful {
            self.state = self.plan.spawn().map_err(|e| BackboneError::Run {
                detail: format!("{e:#}"),
            })?;
        }
        let state = &mut self.state;
        let run = || state.run(tvec!(tensor.into()));
        let values = match &self.executor {
            Some(pool) => multithread_tract_scope(pool.clone(), run),
            None => run(),
        }
        .map_err(|e| BackboneError::Run {
            detail: format!("{e:#}"),
        })?;
        self.collect(values)
    }

    /// Runs once while timing every node; returns time per operator type, largest first.
    pub fn profile(&mut self, input: &[f32]) -> Result<Vec<OpProfile>, BackboneError> {
        let tensor = self.input_tensor(input)?;
        let mut per_op: std::collections::HashMap<String, (usize, Duration)> = Default::default();
        self.state
            .run_plan_with_eval(tvec!(tensor.into()), |session, op_state, node, inputs| {
                let start = Instant::now();
                let out = tract_onnx::tract_core::plan::eval(session, op_state, node, inputs);
                let entry = per_op.entry(node.op().name().to_string()).or_default();
                entry.0 += 1;
                entry.1 += start.elapsed();
                out
            })
            .map_err(|e| BackboneError::Run {
                detail: format!("{e:#}"),
            })?;
        let mut profile: Vec<OpProfile> = per_op
            .into_iter()
            .map(|(op, (nodes, total))| OpProfile { op, nodes, total })
            .collect();
        profile.sort_by_key(|p| std::cmp::Reverse(p.total));
        Ok(profile)
    }

    /// A fresh state for another worker thread sharing the same optimised plan.
    pub fn spawn_worker(&self) -> Result<Backbone, BackboneError> {
        let state = self.plan.spawn().map_err(|e| BackboneError::Run {
            detail: format!("{e:#}"),
        })?;
        Ok(Backbone {
            path: self.path.clone(),
            input_shape: self.input_shape.clone(),
            outputs: self.outputs.clone(),
            plan: self.plan.clone(),
            state,
            stateful: self.stateful,
            executor: self.executor.clone(),
            load_time: Duration::ZERO,
        })
    }

    fn input_tensor(&self, input: &[f32]) -> Result<Tensor, BackboneError> {
        let expected = self.input_shape.iter().product();
        if input.len() != expected {
            return Err(BackboneError::InputSize {
                got: input.len(),
                expected,
                batch: self.batch(),
            });
        }
        Tensor::from_shape(&self.input_shape, input).map_err(|e| BackboneError::Run {
            detail: format!("{e:#}"),
        })
    }

    fn collect(&self, values: TVec<TValue>) -> Result<BackboneOutput, BackboneError> {
        let tensors = values
            .iter()
            .zip(&self.outputs)
            .map(|(v, (name, role, stride))| {
                let view = v
                    .to_plain_array_view::<f32>()
                    .map_err(|e| BackboneError::Run {
                        detail: format!("output {name}: {e:#}"),
                    })?;
                Ok(OutputTensor {
                    name: name.clone(),
                    role: *role,
                    stride: *stride,
                    shape: view.shape().to_vec(),
                    data: view.iter().copied().collect(),
                })
            })
            .collect::<Result<_, BackboneError>>()?;
        Ok(BackboneOutput { tensors })
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

fn load_plan(
    model: &ResolvedModel,
    shape: &[usize],
    outputs: &[&str],
) -> Result<Plan, BackboneError> {
    let m = &model.manifest;
    let path = &model.model_path;
    let load_err = |e: TractError| BackboneError::Load {
        path: path.clone(),
        detail: format!("{e:#}"),
    };
    // Quantized QDQ exports carry value_info with a symbolic batch that contradicts the
    // pinned input ("Impossible to unify Sym(batch) with Val(1)"): tract must ignore it.
    let mut graph = read_graph(model)?;

    let input_names: Vec<String> = graph
        .input_outlets()
        .map_err(load_err)?
        .iter()
        .map(|o| graph.node(o.node).name.clone())
        .collect();
    let Some(input_ix) = input_names.iter().position(|n| n == &m.input.name) else {
        return Err(BackboneError::InputName {
            path: path.clone(),
            expected: m.input.name.clone(),
            found: input_names,
        });
    };
    graph
        .set_input_fact(input_ix, f32::fact(shape).into())
        .map_err(load_err)?;
    for name in outputs {
        let key = if m.embedding.as_ref().is_some_and(|e| e.tensor == *name) {
            "[embedding].tensor"
        } else {
            "[[outputs]].name"
        };
        if graph.select_outputs_by_name([*name]).is_err() {
            return Err(BackboneError::MissingTensor {
                path: path.clone(),
                name: name.to_string(),
                key,
            });
        }
    }
    graph.select_outputs_by_name(outputs).map_err(load_err)?;
    let optimise_err = |e: TractError| BackboneError::Optimise {
        path: path.clone(),
        shape: shape.to_vec(),
        detail: format!("{e:#}"),
    };
    let typed = graph.into_optimized().map_err(optimise_err)?;
    typed.into_runnable().map_err(optimise_err)
}

/// The graph's tensors, for `adaptd inspect`: (ONNX tensor name, producing operator, shape),
/// in evaluation order. The names are the ones a manifest's `[embedding].tensor` and
/// `[[outputs]].name` refer to.
pub fn inspect(model: &ResolvedModel) -> Result<Vec<(String, String, String)>, BackboneError> {
    let path = &model.model_path;
    let load_err = |e: TractError| BackboneError::Load {
        path: path.clone(),
        detail: format!("{e:#}"),
    };
    let mut graph = read_graph(model)?;
    graph
        .set_input_fact(0, f32::fact(&model.manifest.input.shape).into())
        .map_err(load_err)?;
    // Shape propagation fills in what it can; unknown dimensions print as such.
    let _ = graph.analyse(false);
    let order = graph.eval_order().map_err(load_err)?;
    Ok(order
        .into_iter()
        .flat_map(|id| {
            let node = graph.node(id);
            (0..node.outputs.len())
                .map(|ix| {
                    let outlet = OutletId::new(id, ix);
                    let name = graph
                        .outlet_label(outlet)
                        .map(str::to_string)
                        .unwrap_or_else(|| node.name.clone());
                    let shape = format!("{:?}", node.outputs[ix].fact.shape);
                    (name, node.op().name().to_string(), shape)
                })
                .collect::<Vec<_>>()
        })
        .collect())
}

/// Reads the ONNX file into tract's inference graph (QDQ models need their value_info
/// ignored once the input is pinned).
fn read_graph(model: &ResolvedModel) -> Result<InferenceModel, BackboneError> {
    let onnx = tract_onnx::onnx().with_ignore_value_info(model.manifest.quantized.is_some());
    onnx.model_for_path(&model.model_path)
        .map_err(|e| BackboneError::Load {
            path: model.model_path.clone(),
            detail: format!("{e:#}"),
        })
}

/// True for tasks whose outputs include class logits.
pub fn has_logits(m: &Manifest) -> bool {
    m.task == Task::Classify
}
