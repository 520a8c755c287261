//! Rewriting an ONNX model in its protobuf bytes: re-selecting the graph's outputs (for
//! onnxruntime) and replacing initializers (a fine-tuned tail's weights).
//!
//! onnxruntime only returns a graph's declared outputs, but a manifest's embedding is an
//! intermediate tensor (e.g. MobileNetV2's `/Flatten_output_0`). tract cuts the graph itself
//! (`select_outputs_by_name`); for onnxruntime the model handed over is rewritten so that its
//! outputs are exactly the planned tensors, which also lets onnxruntime prune what the
//! manifest does not use, as tract does.
//!
//! The rewrite works on the protobuf wire format, not on a decoded model: decoding and
//! re-encoding with a fixed schema would drop every field that schema does not know (newer
//! ONNX fields, model-local functions), while splicing bytes keeps the rest of the file
//! exactly as it was. Only `ModelProto.graph` (field 7) and, inside it, `GraphProto.output`
//! (field 12) or the named `GraphProto.initializer`s (field 5) are touched.

/// Wire type of length-delimited fields (messages, strings, bytes).
const LEN: u64 = 2;
const MODEL_GRAPH: u64 = 7;
const GRAPH_OUTPUT: u64 = 12;
const VALUE_INFO_NAME: u64 = 1;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_DIMS: u64 = 1;
const TENSOR_DATA_TYPE: u64 = 2;
const TENSOR_FLOAT_DATA: u64 = 4;
const TENSOR_NAME: u64 = 8;
const TENSOR_RAW_DATA: u64 = 9;
const TENSOR_EXTERNAL_DATA: u64 = 13;
const TENSOR_DATA_LOCATION: u64 = 14;
/// `TensorProto.DataType.FLOAT`.
const FLOAT: u64 = 1;

/// One field of a message: its number, wire type, the whole field's byte range (tag
/// included) and, for length-delimited fields, the payload's range.
#[derive(Debug, Clone, Copy)]
struct Field {
    number: u64,
    wire: u64,
    whole: (usize, usize),
    payload: (usize, usize),
}

/// Why a model file's protobuf could not be rewritten: the file is not a well-formed ONNX
/// `ModelProto` (truncated, or not ONNX at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("truncated protobuf field (the file is cut short or not an ONNX model)")]
    Truncated,
    #[error("a varint is longer than 10 bytes (not an ONNX model)")]
    VarintTooLong,
    #[error("a field length overflows (not an ONNX model)")]
    LengthOverflow,
    #[error("unsupported protobuf wire type {0} (not an ONNX model)")]
    WireType(u64),
    #[error("expected one graph in the model, found {0}")]
    GraphCount(usize),
    #[error("the model has no initializer named '{0}'")]
    NoInitializer(String),
    #[error("initializer '{name}' is not a float tensor (data type {data_type})")]
    NotFloat { name: String, data_type: u64 },
    #[error("initializer '{name}' holds {expected} values, the replacement {found}")]
    ValueCount {
        name: String,
        expected: usize,
        found: usize,
    },
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ProtoError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(ProtoError::Truncated)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ProtoError::VarintTooLong)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len_field(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    put_varint(out, (number << 3) | LEN);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// The top-level fields of one message.
fn fields(buf: &[u8]) -> Result<Vec<Field>, ProtoError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let tag = varint(buf, &mut pos)?;
        let (number, wire) = (tag >> 3, tag & 7);
        let payload_start;
        match wire {
            0 => {
                varint(buf, &mut pos)?;
                payload_start = start;
            }
            1 => {
                payload_start = pos;
                pos += 8;
            }
            LEN => {
                let len = usize::try_from(varint(buf, &mut pos)?)
                    .map_err(|_| ProtoError::LengthOverflow)?;
                payload_start = pos;
                pos = pos.checked_add(len).ok_or(ProtoError::LengthOverflow)?;
            }
            5 => {
                payload_start = pos;
                pos += 4;
            }
            other => return Err(ProtoError::WireType(other)),
        }
        if pos > buf.len() {
            return Err(ProtoError::Truncated);
        }
        out.push(Field {
            number,
            wire,
            whole: (start, pos),
            payload: (payload_start, pos),
        });
    }
    Ok(out)
}

/// The `name` of a serialised `ValueInfoProto`.
fn value_info_name(buf: &[u8]) -> Result<Option<&[u8]>, ProtoError> {
    Ok(fields(buf)?
        .into_iter()
        .find(|f| f.number == VALUE_INFO_NAME && f.wire == LEN)
        .map(|f| &buf[f.payload.0..f.payload.1]))
}

/// The one `ModelProto.graph` field of `model`.
fn the_graph(model: &[u8]) -> Result<Field, ProtoError> {
    let graphs: Vec<Field> = fields(model)?
        .into_iter()
        .filter(|f| f.number == MODEL_GRAPH && f.wire == LEN)
        .collect();
    match graphs[..] {
        [graph] => Ok(graph),
        _ => Err(ProtoError::GraphCount(graphs.len())),
    }
}

/// `model` with its graph field (`graph`) replaced by `new_graph`, every other byte kept.
fn replace_graph(model: &[u8], graph: &Field, new_graph: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(model.len() + new_graph.len() + 8);
    out.extend_from_slice(&model[..graph.whole.0]);
    put_len_field(&mut out, MODEL_GRAPH, new_graph);
    out.extend_from_slice(&model[graph.whole.1..]);
    out
}

/// `model` (a serialised `ModelProto`) with its graph's outputs replaced by `outputs`, in
/// that order. Outputs the graph already declares keep their declaration (with its type);
/// the others are declared by name only, which onnxruntime accepts for any tensor the graph
/// computes. The caller checks first that every name is a tensor of the graph.
pub fn with_outputs(model: &[u8], outputs: &[&str]) -> Result<Vec<u8>, ProtoError> {
    let graph = the_graph(model)?;
    let gbuf = &model[graph.payload.0..graph.payload.1];
    let gfields = fields(gbuf)?;
    let mut declared: Vec<(&[u8], &[u8])> = Vec::new();
    let mut new_graph = Vec::with_capacity(gbuf.len() + 64 * outputs.len());
    for f in &gfields {
        if f.number == GRAPH_OUTPUT && f.wire == LEN {
            let vi = &gbuf[f.payload.0..f.payload.1];
            if let Some(name) = value_info_name(vi)? {
                declared.push((name, vi));
            }
        } else {
            new_graph.extend_from_slice(&gbuf[f.whole.0..f.whole.1]);
        }
    }
    for name in outputs {
        match declared.iter().find(|(n, _)| *n == name.as_bytes()) {
            Some((_, vi)) => put_len_field(&mut new_graph, GRAPH_OUTPUT, vi),
            None => {
                let mut vi = Vec::with_capacity(name.len() + 2);
                put_len_field(&mut vi, VALUE_INFO_NAME, name.as_bytes());
                put_len_field(&mut new_graph, GRAPH_OUTPUT, &vi);
            }
        }
    }
    Ok(replace_graph(model, &graph, &new_graph))
}

/// The name, dims and data type of a serialised `TensorProto`.
fn tensor_header(buf: &[u8]) -> Result<(Vec<u8>, Vec<u64>, u64), ProtoError> {
    let (mut name, mut dims, mut data_type) = (Vec::new(), Vec::new(), 0);
    for f in fields(buf)? {
        match (f.number, f.wire) {
            (TENSOR_NAME, LEN) => name = buf[f.payload.0..f.payload.1].to_vec(),
            (TENSOR_DIMS, 0) => {
                let mut pos = f.whole.0;
                varint(buf, &mut pos)?; // the tag
                dims.push(varint(buf, &mut pos)?);
            }
            (TENSOR_DIMS, LEN) => {
                let packed = &buf[f.payload.0..f.payload.1];
                let mut pos = 0;
                while pos < packed.len() {
                    dims.push(varint(packed, &mut pos)?);
                }
            }
            (TENSOR_DATA_TYPE, 0) => {
                let mut pos = f.whole.0;
                varint(buf, &mut pos)?;
                data_type = varint(buf, &mut pos)?;
            }
            _ => {}
        }
    }
    Ok((name, dims, data_type))
}

/// `model` with the float initializers named in `replace` holding the given values (same
/// element count, same dims; stored as little-endian `raw_data`). Every other byte of the
/// file is kept. Why a byte splice: see the module's documentation.
pub fn with_initializers(model: &[u8], replace: &[(&str, &[f32])]) -> Result<Vec<u8>, ProtoError> {
    let graph = the_graph(model)?;
    let gbuf = &model[graph.payload.0..graph.payload.1];
    let mut done = vec![false; replace.len()];
    let mut new_graph = Vec::with_capacity(gbuf.len() + 64);
    for f in fields(gbuf)? {
        let whole = &gbuf[f.whole.0..f.whole.1];
        if f.number != GRAPH_INITIALIZER || f.wire != LEN {
            new_graph.extend_from_slice(whole);
            continue;
        }
        let tbuf = &gbuf[f.payload.0..f.payload.1];
        let (name, dims, data_type) = tensor_header(tbuf)?;
        let Some(k) = replace.iter().position(|(n, _)| n.as_bytes() == name) else {
            new_graph.extend_from_slice(whole);
            continue;
        };
        let shown = String::from_utf8_lossy(&name).into_owned();
        if data_type != FLOAT {
            return Err(ProtoError::NotFloat {
                name: shown,
                data_type,
            });
        }
        let values = replace[k].1;
        let expected = dims.iter().try_fold(1usize, |acc, &d| {
            usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        });
        if expected != Some(values.len()) {
            return Err(ProtoError::ValueCount {
                name: shown,
                expected: expected.unwrap_or(usize::MAX),
                found: values.len(),
            });
        }
        // The header fields as they were (name, dims, type, doc), the data replaced.
        let mut tensor = Vec::with_capacity(tbuf.len().max(values.len() * 4) + 16);
        for tf in fields(tbuf)? {
            let keep = !matches!(
                tf.number,
                TENSOR_FLOAT_DATA | TENSOR_RAW_DATA | TENSOR_EXTERNAL_DATA | TENSOR_DATA_LOCATION
            );
            if keep {
                tensor.extend_from_slice(&tbuf[tf.whole.0..tf.whole.1]);
            }
        }
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        put_len_field(&mut tensor, TENSOR_RAW_DATA, &raw);
        put_len_field(&mut new_graph, GRAPH_INITIALIZER, &tensor);
        done[k] = true;
    }
    if let Some(k) = done.iter().position(|d| !d) {
        return Err(ProtoError::NoInitializer(replace[k].0.to_owned()));
    }
    Ok(replace_graph(model, &graph, &new_graph))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb;
    use tract_onnx::prelude::Framework;

    /// A two-node model (x -> a -> mid -> b -> y) written field by field.
    fn model() -> Vec<u8> {
        let s = |n: u64, v: &str| {
            let mut b = Vec::new();
            put_len_field(&mut b, n, v.as_bytes());
            b
        };
        let node = |name: &str, input: &str, output: &str| {
            [s(1, input), s(2, output), s(3, name), s(4, "Relu")].concat()
        };
        let mut graph = Vec::new();
        put_len_field(&mut graph, 1, &node("a", "x", "mid"));
        put_len_field(&mut graph, 1, &node("b", "mid", "y"));
        graph.extend(s(2, "g"));
        put_len_field(&mut graph, 11, &s(1, "x"));
        put_len_field(&mut graph, 12, &[s(1, "y"), s(3, "typed")].concat());
        let mut m = vec![0x08, 7]; // ir_version = 7
        m.extend(s(2, "test"));
        put_len_field(&mut m, MODEL_GRAPH, &graph);
        m
    }

    fn decode(buf: &[u8]) -> pb::ModelProto {
        tract_onnx::onnx()
            .proto_model_for_read(&mut std::io::Cursor::new(buf))
            .unwrap()
    }

    #[test]
    fn outputs_are_replaced_and_declared_ones_kept() {
        let out = with_outputs(&model(), &["mid", "y"]).unwrap();
        let m = decode(&out);
        let g = m.graph.unwrap();
        let names: Vec<_> = g.output.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["mid", "y"]);
        assert_eq!(g.output[1].doc_string, "typed");
        assert_eq!(g.node.len(), 2);
        assert_eq!(m.producer_name, "test");
        let only_mid = decode(&with_outputs(&model(), &["mid"]).unwrap());
        assert_eq!(only_mid.graph.unwrap().output.len(), 1);
    }

    /// `model()` with a float initializer `w` of dims [2, 2] (packed dims, float_data).
    fn model_with_initializer() -> Vec<u8> {
        let mut t = Vec::new();
        put_len_field(&mut t, TENSOR_DIMS, &[2, 2]);
        t.extend([(TENSOR_DATA_TYPE << 3) as u8, FLOAT as u8]);
        let floats: Vec<u8> = [1f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        put_len_field(&mut t, TENSOR_FLOAT_DATA, &floats);
        put_len_field(&mut t, TENSOR_NAME, b"w");
        let m = model();
        let top = fields(&m).unwrap();
        let g = top.iter().find(|f| f.number == MODEL_GRAPH).unwrap();
        let mut graph = m[g.payload.0..g.payload.1].to_vec();
        put_len_field(&mut graph, GRAPH_INITIALIZER, &t);
        let mut out = m[..g.whole.0].to_vec();
        put_len_field(&mut out, MODEL_GRAPH, &graph);
        out
    }

    #[test]
    fn initializers_are_replaced_in_place_and_mismatches_refused() {
        let m = model_with_initializer();
        let out = with_initializers(&m, &[("w", &[5.0, 6.0, 7.0, 8.0])]).unwrap();
        let g = decode(&out).graph.unwrap();
        let w = &g.initializer[0];
        assert_eq!((w.name.as_str(), w.dims.as_slice()), ("w", &[2i64, 2][..]));
        assert!(w.float_data.is_empty());
        let vals: Vec<f32> = w
            .raw_data
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(vals, [5.0, 6.0, 7.0, 8.0]);
        assert_eq!(g.node.len(), 2, "the rest of the graph is kept");
        assert_eq!(
            with_initializers(&m, &[("w", &[1.0])]),
            Err(ProtoError::ValueCount {
                name: "w".into(),
                expected: 4,
                found: 1
            })
        );
        assert_eq!(
            with_initializers(&m, &[("nope", &[1.0])]),
            Err(ProtoError::NoInitializer("nope".into()))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(
            with_outputs(b"\xff\xff\xff", &["y"]),
            Err(ProtoError::Truncated)
        );
        assert_eq!(
            with_outputs(&[0x3a, 0x80], &["y"]),
            Err(ProtoError::Truncated)
        );
        assert_eq!(with_outputs(b"", &["y"]), Err(ProtoError::GraphCount(0)));
        assert_eq!(
            with_outputs(&[0xff; 11], &["y"]),
            Err(ProtoError::VarintTooLong)
        );
        assert_eq!(with_outputs(&[0x0b], &["y"]), Err(ProtoError::WireType(3)));
        let m = model();
        assert!(with_outputs(&m[..m.len() - 3], &["y"]).is_err());
    }
}
