//! `ligerc-ir`: the graph IR every other ligerc crate speaks.
//!
//! A [`Graph`] is a petgraph `StableGraph` of [`Node`]s; each edge carries the
//! producer's result `port` and the consumer's operand `slot`, so operand order
//! never depends on petgraph's edge iteration order. Ops come at two levels
//! ([`Op`]): generic ONNX ops as exporters write them, and high-level
//! transformer ops (Linear, RmsNorm, Rope, Attention, …) that passes raise to
//! and rewrite. Types are [`TensorType`]s with symbolic dims; weights are
//! [`TensorData`] shared by reference.
//!
//! [`verify`] checks a graph's invariants; [`text::print`] and [`text::parse`]
//! give a stable text form with `print(parse(s)) == s` for printed graphs.
//!
//! This crate knows no file format and no device.

mod attr;
mod dtype;
mod error;
mod graph;
mod liger;
pub mod onnx_ops;
mod op;
mod shape;
mod tensor;
pub mod text;
pub mod training;
mod verify;

pub use attr::{Attr, AttrReader, Attrs};
pub use dtype::DType;
pub use error::IrError;
pub use graph::{Edge, Graph, GraphOutput, Node, NodeId, ValueRef};
pub use liger::{GateSpec, LigerSpec, LigerVariant};
pub use op::{Arity, AttentionSpec, OnnxOp, Op, RopeScaling, RopeSpec, VJP_WRT, VjpSpec};
pub use shape::{Dim, TensorType};
pub use tensor::{TensorData, checked_numel};
pub use verify::verify;
