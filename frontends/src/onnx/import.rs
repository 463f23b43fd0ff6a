//! ONNX `ModelProto` → [`Graph`].
//!
//! Initializers become weights (raw data is sliced from the memory-mapped file,
//! not copied); `Constant` nodes become IR constants (weights when large);
//! every other standard-domain node becomes a generic [`OnnxOp`] after its op
//! is checked against the IR's table. Types come from the file's inputs,
//! outputs and `value_info`; where the file declares none, the dtype is
//! inferred and the shape left unranked.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use ligerc_ir::{
    Attr, Attrs, Graph, OnnxOp, Op, TensorData, TensorType, ValueRef, onnx_ops::onnx_schema,
};
use prost::Message;

use super::tensor::{ExternalData, tensor_data};
use super::types::{infer_dtype, tensor_type};
use crate::error::{ImportError, ImportResult};
use crate::limits::ImportLimits;
use crate::onnx_proto::{AttributeProto, ModelProto, NodeProto, attribute_proto::AttributeType};

/// Opsets of the standard domain the importer accepts.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=23;

/// Constants with more elements than this become named weights instead of inline literals.
const INLINE_CONST_LIMIT: usize = 64;

/// Reads and imports an ONNX file (external data is looked up next to it).
pub fn import_onnx(path: &Path) -> ImportResult<Graph> {
    let io = |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: read-only map; ligerc does not modify model files while importing them.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    import_onnx_bytes(Bytes::from_owner(map), path)
}

/// Imports an ONNX model already in memory; `path` names it in errors and
/// locates external data.
pub fn import_onnx_bytes(bytes: Bytes, path: &Path) -> ImportResult<Graph> {
    import_onnx_bytes_with(bytes, path, &ImportLimits::default())
}

/// [`import_onnx_bytes`] with explicit bounds on declared tensor shapes.
///
/// Nesting depth is bounded by prost's decoder (100 levels of nested
/// messages, e.g. subgraphs in attributes); deeper files are refused as
/// malformed.
pub fn import_onnx_bytes_with(
    bytes: Bytes,
    path: &Path,
    limits: &ImportLimits,
) -> ImportResult<Graph> {
    let malformed = |detail: String| ImportError::Malformed {
        path: path.to_path_buf(),
        format: "ONNX",
        detail,
    };
    let model =
        ModelProto::decode(bytes).map_err(|e| malformed(format!("protobuf decode failed: {e}")))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
        .ok_or_else(|| malformed("no opset import for the standard domain".into()))?;
    if !OPSETS.contains(&opset) {
        return Err(ImportError::Unsupported {
            path: path.to_path_buf(),
            detail: format!(
                "opset {opset}; ligerc imports opsets {}..={}",
                OPSETS.start(),
                OPSETS.end()
            ),
        });
    }
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| malformed("the model has no graph".into()))?;
    let name = if g.name().is_empty() {
        "model"
    } else {
        g.name()
    };
    let mut graph = Graph::new(name);
    graph.opset = Some(opset);
    let mut b = Builder {
        graph,
        names: HashMap::new(),
        declared: HashMap::new(),
        path,
        ext: ExternalData {
            limits: limits.clone(),
            ..ExternalData::new(path)
        },
    };
    for vi in g.value_info.iter().chain(&g.output) {
        if let Some(t) = vi.r#type.as_ref().and_then(tensor_type) {
            b.declared.insert(vi.name().to_string(), t);
        }
    }
    for init in &g.initializer {
        let data = tensor_data(init, &b.ext)?;
        let v = b.graph.add_weight(init.name(), data);
        b.names.insert(init.name().to_string(), v);
    }
    for input in &g.input {
        if b.names.contains_key(input.name()) {
            continue; // IR < 4 lists initializers as inputs too.
        }
        let ty = input.r#type.as_ref().and_then(tensor_type).ok_or_else(|| {
            ImportError::Unsupported {
                path: path.to_path_buf(),
                detail: format!(
                    "graph input `{}` is not a tensor of a supported element type",
                    input.name()
                ),
            }
        })?;
        let v = b.graph.add_input(input.name(), ty);
        b.names.insert(input.name().to_string(), v);
    }
    for node in &g.node {
        b.node(node)?;
    }
    for out in &g.output {
        let v = b.lookup(out.name(), "graph output")?;
        b.graph.add_output(out.name(), v);
    }
    ligerc_ir::verify(&b.graph).map_err(|source| ImportError::Graph {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(b.graph)
}

struct Builder<'a> {
    graph: Graph,
    /// ONNX value name → IR value.
    names: HashMap<String, ValueRef>,
    /// Types the file declares (`value_info`, outputs).
    declared: HashMap<String, TensorType>,
    path: &'a Path,
    ext: ExternalData<'a>,
}

impl Builder<'_> {
    fn lookup(&self, name: &str, user: &str) -> ImportResult<ValueRef> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| ImportError::Malformed {
                path: self.path.to_path_buf(),
                format: "ONNX",
                detail: format!(
                    "{user} reads `{name}`, which no earlier node, input or initializer defines"
                ),
            })
    }

    fn node(&mut self, node: &NodeProto) -> ImportResult<()> {
        let label = if node.name().is_empty() {
            node.output.first().map_or("?", String::as_str)
        } else {
            node.name()
        };
        let unsupported = || ImportError::UnsupportedOp {
            path: self.path.to_path_buf(),
            op: node.op_type().to_string(),
            domain: node.domain().to_string(),
            node: label.to_string(),
        };
        if !matches!(node.domain(), "" | "ai.onnx") {
            return Err(unsupported());
        }
        let attrs = self.attrs(node, label)?;
        if node.op_type() == "Constant" {
            return self.constant(node, label, attrs);
        }
        let schema = onnx_schema(node.op_type()).ok_or_else(unsupported)?;
        // Trailing empty names are omitted optional inputs; one in the middle is not supported.
        let n_in = node
            .input
            .iter()
            .rposition(|s| !s.is_empty())
            .map_or(0, |i| i + 1);
        let mut operands = Vec::with_capacity(n_in);
        for (i, name) in node.input.iter().take(n_in).enumerate() {
            if name.is_empty() {
                return Err(ImportError::Unsupported {
                    path: self.path.to_path_buf(),
                    detail: format!(
                        "node `{label}` ({}): omitted optional input {i} before a given one",
                        node.op_type()
                    ),
                });
            }
            operands.push(self.lookup(name, &format!("node `{label}`"))?);
        }
        if operands.len() < schema.min_inputs || operands.len() > schema.max_inputs {
            return Err(ImportError::Malformed {
                path: self.path.to_path_buf(),
                format: "ONNX",
                detail: format!(
                    "node `{label}` ({}) has {} inputs, the op takes {}..={}",
                    node.op_type(),
                    operands.len(),
                    schema.min_inputs,
                    schema.max_inputs
                ),
            });
        }
        let n_out = node
            .output
            .iter()
            .rposition(|s| !s.is_empty())
            .map_or(0, |i| i + 1)
            .max(1);
        let operand_dtypes: Vec<_> = operands
            .iter()
            .map(|v| self.graph.value_type(*v).map(|t| t.dtype))
            .collect::<Result<_, _>>()
            .map_err(|source| ImportError::Graph {
                path: self.path.to_path_buf(),
                source,
            })?;
        let outputs: Vec<TensorType> = (0..n_out)
            .map(|port| {
                let name = node.output.get(port).map_or("", String::as_str);
                self.declared.get(name).cloned().unwrap_or_else(|| {
                    TensorType::unranked(infer_dtype(node.op_type(), &attrs, &operand_dtypes, port))
                })
            })
            .collect();
        let op = Op::Onnx(OnnxOp {
            op_type: node.op_type().to_string(),
            attrs,
        });
        let id = self
            .graph
            .add_node(op, &operands, outputs, Some(label.to_string()));
        for (port, name) in node.output.iter().enumerate().take(n_out) {
            if !name.is_empty() {
                self.names.insert(
                    name.clone(),
                    ValueRef {
                        node: id,
                        port: port as u32,
                    },
                );
            }
        }
        Ok(())
    }

    fn constant(&mut self, node: &NodeProto, label: &str, attrs: Attrs) -> ImportResult<()> {
        let bad = |detail: String| ImportError::Malformed {
            path: self.path.to_path_buf(),
            format: "ONNX",
            detail: format!("Constant `{label}`: {detail}"),
        };
        let Some((key, value)) = attrs.into_iter().next() else {
            return Err(bad("no value attribute".into()));
        };
        let data = match (key.as_str(), value) {
            ("value", Attr::Tensor(t)) => Ok(t),
            ("value_float", Attr::Float(f)) => TensorData::from_f32(vec![], &[f as f32]),
            ("value_floats", Attr::Floats(v)) => TensorData::from_f32(
                vec![v.len()],
                &v.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            ),
            ("value_int", Attr::Int(i)) => TensorData::from_i64(vec![], &[i]),
            ("value_ints", Attr::Ints(v)) => TensorData::from_i64(vec![v.len()], &v),
            (k, _) => return Err(bad(format!("unsupported value attribute `{k}`"))),
        }
        .map_err(|e| bad(e.to_string()))?;
        let out = node.output.first().ok_or_else(|| bad("no output".into()))?;
        let v = if data.numel() > INLINE_CONST_LIMIT {
            let name = if self.graph.weights.contains_key(out) {
                format!("{out}.const")
            } else {
                out.clone()
            };
            self.graph.add_weight(&name, data)
        } else {
            self.graph.add_const(data)
        };
        if let Some(n) = self.graph.node_mut(v.node) {
            n.name = Some(label.to_string());
        }
        self.names.insert(out.clone(), v);
        Ok(())
    }

    fn attrs(&self, node: &NodeProto, label: &str) -> ImportResult<Attrs> {
        let mut attrs = Attrs::new();
        for a in &node.attribute {
            attrs.insert(a.name().to_string(), self.attr(a, node, label)?);
        }
        Ok(attrs)
    }

    fn attr(&self, a: &AttributeProto, node: &NodeProto, label: &str) -> ImportResult<Attr> {
        let unsupported = |what: &str| ImportError::Unsupported {
            path: self.path.to_path_buf(),
            detail: format!(
                "node `{label}` ({}): attribute `{}` {what}",
                node.op_type(),
                a.name()
            ),
        };
        if !a.ref_attr_name().is_empty() {
            return Err(unsupported("refers to a function attribute"));
        }
        Ok(match a.r#type() {
            AttributeType::Int => Attr::Int(a.i()),
            AttributeType::Float => Attr::Float(f64::from(a.f())),
            AttributeType::String => Attr::Str(
                String::from_utf8(a.s().to_vec()).map_err(|_| unsupported("is not UTF-8"))?,
            ),
            AttributeType::Ints => Attr::Ints(a.ints.clone()),
            AttributeType::Floats => Attr::Floats(a.floats.iter().map(|&f| f64::from(f)).collect()),
            AttributeType::Tensor => {
                let t = a.t.as_ref().ok_or_else(|| unsupported("has no tensor"))?;
                Attr::Tensor(tensor_data(t, &self.ext)?)
            }
            other => return Err(unsupported(&format!("has unsupported type {other:?}"))),
        })
    }
}
