//! The stable text form of a graph.
//!
//! ```text
//! graph "tiny" opset 18 {
//!   %0 = input "input_ids" : i64[batch, seq]
//!   %1 = weight "embed" : f32[256, 64]
//!   %2 = Embedding(%1, %0) : f32[batch, seq, 64]
//!   %3 = const [2] : i64[1]
//!   %4 = onnx.Split(%2, %3) {axis = -1} : f32[batch, seq, 32], f32[batch, seq, 32]
//!   %5 = onnx.Add(%4#0, %4#1) : f32[batch, seq, 32] loc("/model/Add")
//!   output "logits" = %5
//! }
//! ```
//!
//! Nodes are printed in the deterministic topological order of
//! [`crate::Graph::topo_order`] and numbered from zero, so printing a graph
//! twice gives the same text, and `print(parse(print(g))) == print(g)`.
//! Attributes are sorted by key; a key or dim name that is not a plain word
//! (model files may use any string) is printed quoted and reads back as one. Floats are printed in the shortest form that
//! reads back bit-exactly. Weight data is not part of the text; a parsed graph
//! refers to weights by name and the caller supplies the store.

mod lexer;
mod parse;
mod print;

pub use parse::parse;
pub use print::print;
