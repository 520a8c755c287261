//! The tract engine: the ONNX graph loaded, pinned and optimised once, run by tract-onnx.
//!
//! Shapes are always pinned (the batch too): tract optimises far better for concrete
//! dimensions (a symbolic batch measured about 5x slower here). The graph's outputs are
//! re-selected so that one run yields everything the manifest asks for at once. Intra-op
//! threads come from tract-linalg's `multithread-mm` feature (only matmul-like and
//! element-wise ops use the pool, so the gain is modest: about 1.1x from 2 threads).
//! Between tract's declutter and codegen passes, its depthwise convolutions can be swapped
//! for adaptd's kernel ([`super::depthwise`], `[model].tract_depthwise`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;

use super::depthwise::{self, DepthwiseKernels};
use super::{BackendKind, BackendOptions, Engine, LoadRequest, RawOutput};
use crate::model::ResolvedModel;
use crate::runtime::backbone::{BackboneError, OpProfile};

type Plan = Arc<TypedRunnableModel>;

/// An optimised tract plan and one worker's state for it.
pub struct TractEngine {
    path: PathBuf,
    input_shape: Vec<usize>,
    output_names: Vec<String>,
    plan: Plan,
    state: TypedSimpleState,
    /// Intra-op thread pool; `None` runs on the calling thread only.
    executor: Option<Executor>,
    /// The plan has operators with state (GE2E's LSTM, as a Scan): tract keeps that state
    /// from one `run` to the next, while an ONNX graph run must start from the graph's
    /// initial state, so such plans get a fresh state per run. (Before this, each window
    /// of an utterance saw the previous window's LSTM state: voice-print cosine to
    /// onnxruntime 0.92 on a 5 s clip instead of 1.0.)
    stateful: bool,
}

impl TractEngine {
    /// Loads and optimises the graph for the request's pinned input shape, with the threads
    /// and depthwise kernels of `opts`.
    pub fn load(
        req: &LoadRequest<'_>,
        opts: &BackendOptions,
    ) -> Result<TractEngine, BackboneError> {
        let path = req.model.model_path.clone();
        // tract panics on a few malformed graphs instead of returning an error: contain it, so
        // a wrong model file is an error message, never a crash.
        let plan = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            load_plan(
                req.model,
                req.input_shape,
                req.outputs,
                opts.tract_depthwise,
            )
        }))
        .unwrap_or_else(|_| {
            Err(BackboneError::Load {
                path: path.clone(),
                detail: "tract panicked while reading the graph".into(),
            })
        })?;
        let state = plan.spawn().map_err(|e| BackboneError::Load {
            path: path.clone(),
            detail: format!("{e:#}"),
        })?;
        let stateful = state.op_states.iter().any(Option::is_some);
        let mut engine = TractEngine {
            stateful,
            path,
            input_shape: req.input_shape.to_vec(),
            output_names: req.outputs.iter().map(|(n, _)| n.to_string()).collect(),
            plan,
            state,
            executor: None,
        };
        engine.set_threads(opts.threads)?;
        Ok(engine)
    }

    fn fresh_state_if_stateful(&mut self) -> Result<(), BackboneError> {
        if self.stateful {
            self.state = self.plan.spawn().map_err(|e| BackboneError::Run {
                detail: format!("{e:#}"),
            })?;
        }
        Ok(())
    }

    fn input_tensor(&self, input: &[f32]) -> Result<Tensor, BackboneError> {
        Tensor::from_shape(&self.input_shape, input).map_err(|e| BackboneError::Run {
            detail: format!("{}: {e:#}", self.path.display()),
        })
    }
}

impl Engine for TractEngine {
    fn kind(&self) -> BackendKind {
        BackendKind::Tract
    }

    fn run(&mut self, input: &[f32]) -> Result<Vec<RawOutput>, BackboneError> {
        let tensor = self.input_tensor(input)?;
        self.fresh_state_if_stateful()?;
        let state = &mut self.state;
        let run = || state.run(tvec!(tensor.into()));
        let values = match &self.executor {
            Some(pool) => multithread_tract_scope(pool.clone(), run),
            None => run(),
        }
        .map_err(|e| BackboneError::Run {
            detail: format!("{e:#}"),
        })?;
        values
            .iter()
            .zip(&self.output_names)
            .map(|(v, name)| {
                let view = v
                    .to_plain_array_view::<f32>()
                    .map_err(|e| BackboneError::Run {
                        detail: format!("output {name}: {e:#}"),
                    })?;
                Ok(RawOutput {
                    shape: view.shape().to_vec(),
                    data: view.iter().copied().collect(),
                })
            })
            .collect()
    }

    /// Uses `threads` threads inside matrix products (tract's `multithread-mm`); 1 = none.
    fn set_threads(&mut self, threads: usize) -> Result<(), BackboneError> {
        self.executor = (threads > 1).then(|| Executor::multithread(threads));
        Ok(())
    }

    /// A fresh state on the same optimised plan (no re-optimisation).
    fn spawn_worker(&self) -> Result<Box<dyn Engine>, BackboneError> {
        let state = self.plan.spawn().map_err(|e| BackboneError::Run {
            detail: format!("{e:#}"),
        })?;
        Ok(Box::new(TractEngine {
            path: self.path.clone(),
            input_shape: self.input_shape.clone(),
            output_names: self.output_names.clone(),
            plan: self.plan.clone(),
            state,
            executor: self.executor.clone(),
            stateful: self.stateful,
        }))
    }

    /// Runs once while timing every node; returns time per operator type, largest first.
    fn profile(&mut self, input: &[f32]) -> Result<Vec<OpProfile>, BackboneError> {
        let tensor = self.input_tensor(input)?;
        self.fresh_state_if_stateful()?;
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
}

fn load_plan(
    model: &ResolvedModel,
    shape: &[usize],
    outputs: &[(&str, &'static str)],
    kernels: DepthwiseKernels,
) -> Result<Plan, BackboneError> {
    let m = &model.manifest;
    let path = &model.model_path;
    let load_err = |e: TractError| BackboneError::Load {
        path: path.clone(),
        detail: format!("{e:#}"),
    };
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
    for (name, key) in outputs {
        if graph.select_outputs_by_name([*name]).is_err() {
            return Err(BackboneError::MissingTensor {
                path: path.clone(),
                name: name.to_string(),
                key,
            });
        }
    }
    graph
        .select_outputs_by_name(outputs.iter().map(|(n, _)| *n))
        .map_err(load_err)?;
    let optimise_err = |e: TractError| BackboneError::Optimise {
        path: path.clone(),
        shape: shape.to_vec(),
        detail: format!("{e:#}"),
    };
    // Declutter (ONNX ops to tract's, batch norm folded), then our kernels, then codegen.
    let mut typed = graph
        .into_typed()
        .and_then(|t| t.into_decluttered())
        .map_err(optimise_err)?;
    if kernels.use_ours() {
        let swapped = depthwise::swap_depthwise(&mut typed).map_err(optimise_err)?;
        tracing::debug!(
            model = %m.name,
            convolutions = swapped.convolutions,
            fused_clamps = swapped.fused_clamps,
            "tract: adaptd's depthwise kernel"
        );
    }
    let typed = typed.into_optimized().map_err(optimise_err)?;
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

/// Reads the ONNX file into tract's inference graph. Quantized QDQ exports carry value_info
/// with a symbolic batch that contradicts the pinned input ("Impossible to unify Sym(batch)
/// with Val(1)"): tract must ignore it for them.
pub(crate) fn read_graph(model: &ResolvedModel) -> Result<InferenceModel, BackboneError> {
    let onnx = tract_onnx::onnx().with_ignore_value_info(model.manifest.quantized.is_some());
    onnx.model_for_path(&model.model_path)
        .map_err(|e| BackboneError::Load {
            path: model.model_path.clone(),
            detail: format!("{e:#}"),
        })
}
