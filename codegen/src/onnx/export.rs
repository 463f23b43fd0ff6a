//! Graph → ONNX `ModelProto` bytes.

use std::collections::HashMap;

use ligerc_frontends::onnx::tensor::dtype_to_onnx;
use ligerc_frontends::onnx_proto::{
    GraphProto, ModelProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
    tensor_shape_proto, type_proto,
};
use ligerc_ir::{DType, Dim, Graph, Op, TensorData, TensorType, ValueRef};
use prost::Message;
use thiserror::Error;

use super::builder::{OnnxBuilder, attr, tensor_proto};
use super::expand::expand;
use super::liger::Extensions;
use super::step::OnnxForm;

/// Why a graph could not be exported.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The graph contains something ONNX export does not handle.
    #[error("ONNX export: {0}")]
    Unsupported(String),
    /// The graph is malformed.
    #[error("ONNX export: {0}")]
    Ir(#[from] ligerc_ir::IrError),
}

/// Export settings.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Opset for graphs that carry none (built from checkpoints).
    pub default_opset: i64,
    /// Producer name written into the model.
    pub producer: String,
    /// The whole sequence, or one decode step with states as inputs and outputs.
    pub form: OnnxForm,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            default_opset: 18,
            producer: "ligerc".into(),
            form: OnnxForm::Full,
        }
    }
}

/// ONNX IR version matching an opset (the oldest IR that allows it).
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        _ => 11,
    }
}

/// Builds the `ModelProto` of `graph`.
pub fn export_onnx(graph: &Graph, opts: &ExportOptions) -> Result<ModelProto, ExportError> {
    ligerc_ir::verify(graph)?;
    let opset = graph.opset.unwrap_or(opts.default_opset);
    let mut b = OnnxBuilder::default();
    let mut ext = Extensions::new(opts.form, opset);
    let mut names: HashMap<ValueRef, String> = HashMap::new();
    let mut inputs = Vec::new();
    for (name, w) in &graph.weights {
        // Checkpoint graphs compute in f32 whatever their storage dtype; imported
        // ONNX graphs keep their weights' types, which their ops expect.
        let w = if graph.opset.is_none() && w.dtype().is_float() && w.dtype() != DType::F32 {
            TensorData::from_f32(w.shape().to_vec(), &w.to_f32_vec())?
        } else {
            w.clone()
        };
        b.init(name, &w);
    }
    for id in graph.topo_order()? {
        let node = graph.try_node(id)?;
        let operands: Vec<String> = graph
            .operands(id)
            .into_iter()
            .map(|v| {
                names
                    .get(&v)
                    .cloned()
                    .ok_or(ligerc_ir::IrError::DanglingNode {
                        node: v.node.index(),
                    })
            })
            .collect::<Result<_, _>>()?;
        let out_names: Vec<String> = (0..node.outputs.len())
            .map(|p| format!("v{}_{p}", id.index()))
            .collect();
        match &node.op {
            Op::Input { name } => {
                let ty = node.outputs.first().ok_or_else(|| {
                    ExportError::Unsupported(format!("input `{name}` has no type"))
                })?;
                inputs.push(value_info(name, ty, false));
                names.insert(id.into(), name.clone());
                continue;
            }
            Op::Weight { name } => {
                names.insert(id.into(), name.clone());
                continue;
            }
            Op::Const(t) => {
                let n = b.fresh("const");
                b.initializers.push(tensor_proto(&n, t));
                names.insert(id.into(), n);
                continue;
            }
            Op::Onnx(o) => {
                let attrs = o.attrs.iter().map(|(k, v)| attr(k, v)).collect();
                let refs: Vec<&str> = operands.iter().map(String::as_str).collect();
                b.op_named(&o.op_type, &refs, attrs, &out_names);
            }
            _ if ext.emit(&mut b, graph, id, &operands, &out_names)? => {}
            op => {
                let out = out_names.first().ok_or_else(|| {
                    ExportError::Unsupported(format!("{} has no result", op.mnemonic()))
                })?;
                expand(&mut b, op, &operands, out, opset)?;
            }
        }
        for (p, n) in out_names.into_iter().enumerate() {
            names.insert(
                ValueRef {
                    node: id,
                    port: p as u32,
                },
                n,
            );
        }
    }
    let mut outputs = Vec::new();
    for o in &graph.outputs {
        let src = names
            .get(&o.value)
            .cloned()
            .ok_or(ligerc_ir::IrError::DanglingNode {
                node: o.value.node.index(),
            })?;
        b.op_named("Identity", &[&src], vec![], std::slice::from_ref(&o.name));
        outputs.push(value_info(
            &o.name,
            graph.value_type(o.value)?,
            graph.opset.is_none(),
        ));
    }
    let mut model = ModelProto {
        ir_version: Some(ir_version(opset)),
        producer_name: Some(opts.producer.clone()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            name: Some(graph.name.clone()),
            node: b.nodes,
            initializer: b.initializers,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    };
    ext.finish(&mut model);
    Ok(model)
}

/// Encodes `graph` as ONNX bytes. Fails when the model would exceed
/// protobuf's 2 GiB limit.
pub fn export_onnx_bytes(graph: &Graph, opts: &ExportOptions) -> Result<Vec<u8>, ExportError> {
    let model = export_onnx(graph, opts)?;
    let len = model.encoded_len();
    if len > i32::MAX as usize {
        return Err(ExportError::Unsupported(format!(
            "the model is {len} bytes, over protobuf's 2 GiB limit for one ONNX file"
        )));
    }
    Ok(model.encode_to_vec())
}

/// The ONNX type of a graph input or output; `widen` writes float types as f32.
fn value_info(name: &str, t: &TensorType, widen: bool) -> ValueInfoProto {
    let shape = t.shape.as_ref().map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| tensor_shape_proto::Dimension {
                value: match d {
                    Dim::Fixed(n) => {
                        Some(tensor_shape_proto::dimension::Value::DimValue(*n as i64))
                    }
                    Dim::Sym(s) => Some(tensor_shape_proto::dimension::Value::DimParam(s.clone())),
                    Dim::Unknown => None,
                },
                ..Default::default()
            })
            .collect(),
    });
    let elem = if widen && t.dtype.is_float() {
        DType::F32
    } else {
        t.dtype
    };
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype_to_onnx(elem)),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
