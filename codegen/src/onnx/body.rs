//! Emitting nodes into a function body or a control-flow subgraph, and the
//! [`NodeSink`] trait that lets one helper write into either those or the
//! main graph's [`OnnxBuilder`].
//!
//! Function bodies and subgraphs hold no initializers, so a [`Body`] writes
//! every constant as a `Constant` node. Names carry the body's prefix so that
//! a subgraph never redefines a name of the scope around it.

use ligerc_frontends::onnx::tensor::dtype_to_onnx;
use ligerc_frontends::onnx_proto::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, type_proto,
};
use ligerc_ir::DType;

use super::builder::OnnxBuilder;

/// Where generated nodes go: the main graph or a body.
pub trait NodeSink {
    /// Appends a node with one output named after `stem`; returns the output name.
    fn op(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        stem: &str,
    ) -> String;
    /// Appends a node with the given output names.
    fn op_named(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        outputs: &[String],
    );
    /// A 1-D i64 constant.
    fn ints(&mut self, stem: &str, values: &[i64]) -> String;
    /// An f32 constant of `dims` (`values.len()` is the product of `dims`).
    fn floats(&mut self, stem: &str, dims: &[i64], values: &[f32]) -> String;
}

impl NodeSink for OnnxBuilder {
    fn op(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        stem: &str,
    ) -> String {
        OnnxBuilder::op(self, op_type, inputs, attrs, stem)
    }

    fn op_named(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        outputs: &[String],
    ) {
        OnnxBuilder::op_named(self, op_type, inputs, attrs, outputs)
    }

    fn ints(&mut self, stem: &str, values: &[i64]) -> String {
        OnnxBuilder::ints(self, stem, values)
    }

    fn floats(&mut self, stem: &str, dims: &[i64], values: &[f32]) -> String {
        OnnxBuilder::floats(self, stem, dims, values)
    }
}

/// The nodes of a function body or a subgraph under construction.
pub struct Body {
    /// Nodes, in topological order.
    pub nodes: Vec<NodeProto>,
    prefix: String,
    counter: usize,
}

impl Body {
    /// An empty body whose generated names start with `prefix`.
    pub fn new(prefix: &str) -> Self {
        Body {
            nodes: Vec::new(),
            prefix: prefix.to_string(),
            counter: 0,
        }
    }

    /// A fresh value name with a readable stem.
    pub fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{}{stem}_{}", self.prefix, self.counter)
    }

    /// The body as a subgraph with typed f32 inputs and outputs of the given names.
    pub fn into_graph(self, name: &str, inputs: &[&str], outputs: &[&str]) -> GraphProto {
        GraphProto {
            name: Some(name.to_string()),
            node: self.nodes,
            input: inputs.iter().map(|n| f32_value(n)).collect(),
            output: outputs.iter().map(|n| f32_value(n)).collect(),
            ..Default::default()
        }
    }

    fn constant(&mut self, stem: &str, t: TensorProto) -> String {
        let out = self.fresh(stem);
        let mut value = AttributeProto {
            name: Some("value".into()),
            t: Some(t),
            ..Default::default()
        };
        value.set_type(AttributeType::Tensor);
        self.op_named("Constant", &[], vec![value], std::slice::from_ref(&out));
        out
    }
}

impl NodeSink for Body {
    fn op(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        stem: &str,
    ) -> String {
        let out = self.fresh(stem);
        self.op_named(op_type, inputs, attrs, std::slice::from_ref(&out));
        out
    }

    fn op_named(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        outputs: &[String],
    ) {
        let name = self.fresh(op_type);
        self.nodes.push(super::builder::node_proto(
            name, op_type, inputs, attrs, outputs,
        ));
    }

    fn ints(&mut self, stem: &str, values: &[i64]) -> String {
        let t = TensorProto {
            data_type: Some(dtype_to_onnx(DType::I64)),
            dims: vec![values.len() as i64],
            int64_data: values.to_vec(),
            ..Default::default()
        };
        self.constant(stem, t)
    }

    fn floats(&mut self, stem: &str, dims: &[i64], values: &[f32]) -> String {
        let t = TensorProto {
            data_type: Some(dtype_to_onnx(DType::F32)),
            dims: dims.to_vec(),
            float_data: values.to_vec(),
            ..Default::default()
        };
        self.constant(stem, t)
    }
}

/// A value of element type f32 and unspecified shape.
pub fn f32_value(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype_to_onnx(DType::F32)),
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
