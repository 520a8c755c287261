//! The tail of a backbone: the ops between a manifest's fine-tuning cut and its embedding.
//!
//! Fine-tuning retrains the last layers of a pretrained network, not all of it: the frozen
//! trunk runs once per sample up to the cut, and training runs forward and backward through
//! the tail only. This module reads that tail out of the ONNX file (ops, attributes and
//! initializers) into plain numbers, and refuses, naming the node, anything the trainer
//! cannot differentiate: a tail of ops it does not know would train silently wrong.
//!
//! Supported ops are the ones that end MobileNetV2 and EfficientNet-Lite: a pointwise (1x1,
//! stride 1, no padding, one group) convolution with its batch norm already folded into its
//! bias (as every exporter does), ReLU / ReLU6 (`Relu`, `Clip`), global average pooling and
//! the `Flatten` (or `Reshape`) after it.

use std::collections::HashMap;

use tract_onnx::pb;
use tract_onnx::prelude::Framework;

/// One op of a tail, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum TailOp {
    /// `y[o, p] = b[o] + sum_i w[o, i] x[i, p]` over the spatial positions `p`.
    Pointwise {
        /// The ONNX initializers holding the weights and the bias (a bias the file does not
        /// have is `None`: zeros, and not trainable into the file).
        weight: String,
        bias: Option<String>,
        out_channels: usize,
        in_channels: usize,
        /// `[out, in]`, row-major.
        w: Vec<f32>,
        b: Vec<f32>,
    },
    /// `min(max(x, lo), hi)`: ReLU is `(0, inf)`, ReLU6 `(0, 6)`.
    Clip { lo: f32, hi: f32 },
    /// Mean over the spatial positions: `[C, P]` to `[C]`.
    GlobalAveragePool,
    /// `[C, 1, 1]` to `[C]`: nothing to compute.
    Flatten,
}

/// A backbone's tail: its ops from the cut tensor to the embedding tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tail {
    pub cut: String,
    pub embedding: String,
    pub ops: Vec<TailOp>,
}

/// Why a tail could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("cannot read the ONNX model: {0}")]
    Proto(String),
    #[error(
        "the fine-tuning cut '{0}' names no tensor of the model's graph; \
         set [finetune].cut in the manifest to the input tensor of the tail (see docs/models.md)"
    )]
    NoCut(String),
    #[error(
        "the embedding tensor '{embedding}' is not computed from the cut '{cut}' by a chain of \
         ops; the cut must lie on the path to the embedding"
    )]
    NotOnPath { cut: String, embedding: String },
    #[error(
        "node '{node}' ({op}) in the tail cannot be fine-tuned: {why}; move [finetune].cut \
         past it, or use head-only training (train.mode = \"head\")"
    )]
    Unsupported {
        node: String,
        op: String,
        why: String,
    },
}

/// A node's attribute by name.
fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

/// A float tensor's values (raw little-endian data or `float_data`).
fn floats(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(4) {
            return None;
        }
        return Some(
            t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
    }
    Some(t.float_data.clone())
}

impl Tail {
    /// Reads the tail from `cut` to `embedding` out of a serialised ONNX model.
    pub fn read(model: &[u8], cut: &str, embedding: &str) -> Result<Tail, TailError> {
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut std::io::Cursor::new(model))
            .map_err(|e| TailError::Proto(e.to_string()))?;
        let graph = proto
            .graph
            .ok_or_else(|| TailError::Proto("the model has no graph".into()))?;
        let inits: HashMap<&str, &pb::TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        // Constants: `Constant` nodes' values (Clip's bounds in opset 11+ exports).
        let mut constants: HashMap<&str, Vec<f32>> = HashMap::new();
        for n in graph.node.iter().filter(|n| n.op_type == "Constant") {
            if let (Some(out), Some(t)) = (
                n.output.first(),
                attr(n, "value").and_then(|a| a.t.as_ref()),
            ) {
                if let Some(v) = floats(t) {
                    constants.insert(out.as_str(), v);
                }
            }
        }
        let produced = graph.node.iter().any(|n| n.output.iter().any(|o| o == cut))
            || graph.input.iter().any(|i| i.name == cut);
        if !produced {
            return Err(TailError::NoCut(cut.to_owned()));
        }
        let unsupported = |n: &pb::NodeProto, why: &str| TailError::Unsupported {
            node: n.name.clone(),
            op: n.op_type.clone(),
            why: why.to_owned(),
        };
        let value = |name: &str| -> Option<Vec<f32>> {
            constants
                .get(name)
                .cloned()
                .or_else(|| inits.get(name).and_then(|t| floats(t)))
        };
        let mut ops = Vec::new();
        let mut current = cut.to_owned();
        while current != embedding {
            let users: Vec<&pb::NodeProto> = graph
                .node
                .iter()
                .filter(|n| n.input.contains(&current))
                .collect();
            let n =
                match users[..] {
                    [n] => n,
                    [] => {
                        return Err(TailError::NotOnPath {
                            cut: cut.to_owned(),
                            embedding: embedding.to_owned(),
                        })
                    }
                    [n, ..] => return Err(unsupported(
                        n,
                        "the tensor before it feeds more than one node (a branch or a residual \
                         connection)",
                    )),
                };
            if n.input.first() != Some(&current) {
                return Err(unsupported(n, "the tail's tensor is not its first input"));
            }
            let op = match n.op_type.as_str() {
                "Conv" => {
                    let ints = |name: &str| attr(n, name).map(|a| a.ints.clone());
                    let group = attr(n, "group").map_or(1, |a| a.i);
                    if group != 1 {
                        return Err(unsupported(n, "only ungrouped convolutions are supported"));
                    }
                    let ones = |v: Option<Vec<i64>>| v.is_none_or(|v| v.iter().all(|&x| x == 1));
                    let zeros = |v: Option<Vec<i64>>| v.is_none_or(|v| v.iter().all(|&x| x == 0));
                    if !ones(ints("strides")) || !ones(ints("dilations")) || !zeros(ints("pads")) {
                        return Err(unsupported(
                            n,
                            "only 1x1 convolutions with stride 1 and no padding are supported",
                        ));
                    }
                    let wname = n.input.get(1).cloned().unwrap_or_default();
                    let wt = inits
                        .get(wname.as_str())
                        .ok_or_else(|| unsupported(n, "its weights are not an initializer"))?;
                    let dims: Vec<usize> = wt.dims.iter().map(|&d| d.max(0) as usize).collect();
                    let [cout, cin, 1, 1] = dims[..] else {
                        return Err(unsupported(n, "its kernel is not 1x1"));
                    };
                    let w = floats(wt)
                        .filter(|w| w.len() == cout * cin)
                        .ok_or_else(|| unsupported(n, "its weights are not float32"))?;
                    let bias = n.input.get(2).filter(|b| !b.is_empty()).cloned();
                    let b = match &bias {
                        Some(name) => inits
                            .get(name.as_str())
                            .and_then(|t| floats(t))
                            .filter(|b| b.len() == cout)
                            .ok_or_else(|| {
                                unsupported(n, "its bias is not a float32 initializer")
                            })?,
                        None => vec![0.0; cout],
                    };
                    TailOp::Pointwise {
                        weight: wname,
                        bias,
                        out_channels: cout,
                        in_channels: cin,
                        w,
                        b,
                    }
                }
                "Relu" => TailOp::Clip {
                    lo: 0.0,
                    hi: f32::INFINITY,
                },
                "Clip" => {
                    let bound =
                        |k: usize, attr_name: &str, default: f32| -> Result<f32, TailError> {
                            match n.input.get(k).filter(|s| !s.is_empty()) {
                                Some(name) => value(name)
                                    .and_then(|v| v.first().copied())
                                    .ok_or_else(|| unsupported(n, "its bounds are not constants")),
                                None => Ok(attr(n, attr_name).map_or(default, |a| a.f)),
                            }
                        };
                    TailOp::Clip {
                        lo: bound(1, "min", f32::NEG_INFINITY)?,
                        hi: bound(2, "max", f32::INFINITY)?,
                    }
                }
                "GlobalAveragePool" => TailOp::GlobalAveragePool,
                // EfficientNet's exporter flattens the pooled [N, C, 1, 1] with a Reshape to
                // a computed [N, C]: after a global pool nothing else is possible.
                "Reshape" if ops.last() == Some(&TailOp::GlobalAveragePool) => TailOp::Flatten,
                "Flatten" => {
                    if attr(n, "axis").is_some_and(|a| a.i != 1) {
                        return Err(unsupported(n, "only Flatten with axis 1 is supported"));
                    }
                    TailOp::Flatten
                }
                _ => return Err(unsupported(n, "no gradient is implemented for this op")),
            };
            ops.push(op);
            current = n
                .output
                .first()
                .cloned()
                .ok_or_else(|| unsupported(n, "it has no output"))?;
        }
        Ok(Tail {
            cut: cut.to_owned(),
            embedding: embedding.to_owned(),
            ops,
        })
    }

    /// The trainable tensors: `(initializer name, values)` of every pointwise op.
    pub fn initializers(&self) -> Vec<(&str, &[f32])> {
        let mut out = Vec::new();
        for op in &self.ops {
            if let TailOp::Pointwise {
                weight, bias, w, b, ..
            } = op
            {
                out.push((weight.as_str(), w.as_slice()));
                if let Some(bn) = bias {
                    out.push((bn.as_str(), b.as_slice()));
                }
            }
        }
        out
    }
}

/// `model` re-targeted to its fine-tuning cut: its embedding is the cut tensor (flattened
/// `[channels, height, width]`), so the backends return the trunk's activations there through
/// the same preprocessing and loading as the embedding. `None` without `[finetune]`.
pub fn cut_model(model: &crate::model::ResolvedModel) -> Option<crate::model::ResolvedModel> {
    let spec = model.manifest.finetune.as_ref()?;
    let mut cut = model.clone();
    let [c, h, w] = spec.cut_shape;
    cut.manifest.embedding = Some(crate::model::manifest::EmbeddingSpec {
        tensor: spec.cut.clone(),
        dim: c * h * w,
        normalized: false,
    });
    Some(cut)
}
