//! Generic ONNX ops on the CPU, one file per op family.
//!
//! Every op of [`ligerc_ir::onnx_ops::ONNX_OPS`] runs here with ONNX
//! semantics (opsets 13–23): floats compute in f32, every integer type in i64,
//! booleans as bool. Where an op changed between opsets, the operand count
//! decides (e.g. `Squeeze`/`ReduceMean` read `axes` from the second operand
//! when there is one and from the attribute otherwise).
//!
//! Bad shapes, types and attributes return [`RuntimeError`]s that name the op
//! and what was expected; nothing here panics or indexes out of bounds on
//! user-controlled data. This module owns only kernels: it does not know about
//! graphs, nodes or KV caches.

use ligerc_ir::onnx_ops::onnx_schema;
use ligerc_ir::{OnnxOp, TensorType};

use crate::{RuntimeError, Tensor};

/// Runs `$body` with `$v` bound to the element slice of `$data` (a
/// `&Data`), whatever its element type, and wraps the resulting `Vec` back
/// into the same [`crate::Data`] variant. `$body` may use `?`.
macro_rules! map_data {
    ($data:expr, |$v:ident| $body:expr) => {
        match $data {
            $crate::Data::F32($v) => $crate::Data::F32($body),
            $crate::Data::I64($v) => $crate::Data::I64($body),
            $crate::Data::Bool($v) => $crate::Data::Bool($body),
        }
    };
}

mod attention;
mod binary;
mod broadcast;
mod cast;
mod common;
mod concat_split;
mod erf;
mod gather;
mod generate;
mod layout;
mod matmul;
mod reduce;
mod rms_norm;
mod rotary;
mod select;
mod shape_ops;
mod slice;
mod softmax;
mod strided;
mod unary;

use common::Ctx;

/// Executes one generic ONNX op. `out_types` are the node's declared result
/// types (used where ONNX semantics depend on them: the result count of
/// `Split` and `Attention`, the target type of `CastLike`).
pub fn eval_onnx(
    op: &OnnxOp,
    inputs: &[&Tensor],
    out_types: &[TensorType],
) -> Result<Vec<Tensor>, RuntimeError> {
    let name = op.op_type.as_str();
    let schema =
        onnx_schema(name).ok_or_else(|| RuntimeError::Unsupported(format!("ONNX op {name}")))?;
    if inputs.len() < schema.min_inputs || inputs.len() > schema.max_inputs {
        return Err(RuntimeError::Shape(format!(
            "{name}: expected {}..={} operands, got {}",
            schema.min_inputs,
            schema.max_inputs,
            inputs.len()
        )));
    }
    let ctx = Ctx::new(op, inputs, out_types);
    let one = |t: Tensor| vec![t];
    Ok(match name {
        "Add" | "Sub" | "Mul" | "Div" => one(binary::arith(&ctx)?),
        "Pow" => one(binary::pow(&ctx)?),
        "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" => {
            one(binary::compare(&ctx)?)
        }
        "And" | "Or" => one(binary::logic(&ctx)?),
        "Max" | "Min" => one(select::max_min(&ctx)?),
        "Where" => one(select::where_(&ctx)?),
        "Trilu" => one(select::trilu(&ctx)?),
        "Abs" | "Neg" | "Relu" | "Reciprocal" | "Sqrt" | "Exp" | "Log" | "Cos" | "Sin" | "Tanh"
        | "Sigmoid" | "Erf" | "Not" | "IsNaN" | "IsInf" => one(unary::eval(&ctx)?),
        "Cast" => one(cast::cast(&ctx)?),
        "CastLike" => one(cast::cast_like(&ctx)?),
        "MatMul" => one(matmul::matmul(&ctx)?),
        "Gemm" => one(matmul::gemm(&ctx)?),
        "Shape" => one(shape_ops::shape(&ctx)?),
        "Reshape" => one(shape_ops::reshape(&ctx)?),
        "Flatten" => one(shape_ops::flatten(&ctx)?),
        "Squeeze" => one(shape_ops::squeeze(&ctx)?),
        "Unsqueeze" => one(shape_ops::unsqueeze(&ctx)?),
        "Identity" => one(ctx.input(0)?.clone()),
        "Transpose" => one(layout::transpose(&ctx)?),
        "Expand" => one(layout::expand(&ctx)?),
        "Tile" => one(layout::tile(&ctx)?),
        "Slice" => one(slice::slice(&ctx)?),
        "Concat" => one(concat_split::concat(&ctx)?),
        "Split" => concat_split::split(&ctx)?,
        "Gather" => one(gather::gather(&ctx)?),
        "GatherND" => one(gather::gather_nd(&ctx)?),
        "Range" => one(generate::range(&ctx)?),
        "ConstantOfShape" => one(generate::constant_of_shape(&ctx)?),
        "ReduceMean" | "ReduceSum" | "ReduceMax" => one(reduce::reduce(&ctx)?),
        "Softmax" => one(softmax::softmax(&ctx)?),
        "RMSNormalization" => one(rms_norm::rms_normalization(&ctx)?),
        "RotaryEmbedding" => one(rotary::rotary_embedding(&ctx)?),
        "Attention" => attention::attention(&ctx)?,
        other => return Err(RuntimeError::Unsupported(format!("ONNX op {other}"))),
    })
}
