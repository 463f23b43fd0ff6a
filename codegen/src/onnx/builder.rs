//! A small helper that appends ONNX nodes and initializers with fresh names.

use ligerc_frontends::onnx::tensor::dtype_to_onnx;
use ligerc_frontends::onnx_proto::{
    AttributeProto, NodeProto, TensorProto, attribute_proto::AttributeType,
};
use ligerc_ir::{Attr, TensorData};

/// Nodes and initializers under construction.
#[derive(Default)]
pub struct OnnxBuilder {
    /// Nodes, in topological order.
    pub nodes: Vec<NodeProto>,
    /// Initializers.
    pub initializers: Vec<TensorProto>,
    counter: usize,
}

impl OnnxBuilder {
    /// A fresh value name with a readable stem.
    pub fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{stem}_{}", self.counter)
    }

    /// Appends a node with one output named after `stem`; returns the output name.
    pub fn op(
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

    /// Appends a node with the given output names.
    pub fn op_named(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        outputs: &[String],
    ) {
        let name = self.fresh(op_type);
        self.nodes
            .push(node_proto(name, op_type, inputs, attrs, outputs));
    }

    /// Adds an initializer; returns its name.
    pub fn init(&mut self, name: &str, t: &TensorData) -> String {
        self.initializers.push(tensor_proto(name, t));
        name.to_string()
    }

    /// Adds a 1-D i64 constant initializer with a fresh name.
    pub fn ints(&mut self, stem: &str, values: &[i64]) -> String {
        let name = self.fresh(stem);
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            data_type: Some(dtype_to_onnx(ligerc_ir::DType::I64)),
            dims: vec![values.len() as i64],
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    /// Adds an f32 constant initializer of `dims` with a fresh name
    /// (`values.len()` must be the product of `dims`).
    pub fn floats(&mut self, stem: &str, dims: &[i64], values: &[f32]) -> String {
        let name = self.fresh(stem);
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            data_type: Some(dtype_to_onnx(ligerc_ir::DType::F32)),
            dims: dims.to_vec(),
            float_data: values.to_vec(),
            ..Default::default()
        });
        name
    }
}

/// A standard-domain node named `name`.
pub fn node_proto(
    name: String,
    op_type: &str,
    inputs: &[&str],
    attrs: Vec<AttributeProto>,
    outputs: &[String],
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.to_vec(),
        name: Some(name),
        op_type: Some(op_type.to_string()),
        domain: Some(String::new()),
        attribute: attrs,
        ..Default::default()
    }
}

/// An ONNX tensor holding `t`'s bytes (floats widened to f32 by the caller).
pub fn tensor_proto(name: &str, t: &TensorData) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        data_type: Some(dtype_to_onnx(t.dtype())),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        raw_data: Some(t.bytes().clone()),
        ..Default::default()
    }
}

/// An ONNX attribute from an IR attribute.
pub fn attr(name: &str, a: &Attr) -> AttributeProto {
    let mut p = AttributeProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    match a {
        Attr::Int(v) => {
            p.i = Some(*v);
            p.set_type(AttributeType::Int);
        }
        Attr::Float(v) => {
            p.f = Some(*v as f32);
            p.set_type(AttributeType::Float);
        }
        Attr::Str(s) => {
            p.s = Some(s.clone().into_bytes().into());
            p.set_type(AttributeType::String);
        }
        Attr::Ints(v) => {
            p.ints = v.clone();
            p.set_type(AttributeType::Ints);
        }
        Attr::Floats(v) => {
            p.floats = v.iter().map(|&x| x as f32).collect();
            p.set_type(AttributeType::Floats);
        }
        Attr::Tensor(t) => {
            p.t = Some(tensor_proto("", t));
            p.set_type(AttributeType::Tensor);
        }
    }
    p
}

/// `name = int`.
pub fn int_attr(name: &str, v: i64) -> AttributeProto {
    attr(name, &Attr::Int(v))
}
