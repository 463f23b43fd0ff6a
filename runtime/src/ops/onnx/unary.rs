//! Elementwise unary ops: Abs, Neg, Relu (float or integer); Reciprocal,
//! Sqrt, Exp, Log, Cos, Sin, Tanh, Sigmoid, Erf (float); Not (bool);
//! IsNaN, IsInf (float to bool).

use crate::{Data, RuntimeError, Tensor};

use super::broadcast::map_slice;
use super::common::Ctx;
use super::erf::erf;

/// Runs the unary op named by `ctx.op` on operand 0.
pub(super) fn eval(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let data = match (ctx.op, &x.data) {
        ("Abs", Data::F32(v)) => Data::F32(map_slice(v, f32::abs)),
        ("Abs", Data::I64(v)) => Data::I64(map_slice(v, i64::wrapping_abs)),
        ("Neg", Data::F32(v)) => Data::F32(map_slice(v, |a| -a)),
        ("Neg", Data::I64(v)) => Data::I64(map_slice(v, i64::wrapping_neg)),
        ("Relu", Data::F32(v)) => Data::F32(map_slice(v, relu)),
        ("Relu", Data::I64(v)) => Data::I64(map_slice(v, |a| a.max(0))),
        ("Not", Data::Bool(v)) => Data::Bool(map_slice(v, |a| !a)),
        ("IsNaN", Data::F32(v)) => Data::Bool(map_slice(v, f32::is_nan)),
        ("IsInf", Data::F32(v)) => {
            let neg = ctx.attrs.int_or("detect_negative", 1)? != 0;
            let pos = ctx.attrs.int_or("detect_positive", 1)? != 0;
            Data::Bool(map_slice(v, move |a| {
                a.is_infinite() && ((a > 0.0 && pos) || (a < 0.0 && neg))
            }))
        }
        (op, Data::F32(v)) if FLOAT_ONLY.contains(&op) => {
            Data::F32(map_slice(v, float_fn(ctx, op)?))
        }
        (_, _) => {
            return Err(ctx.type_err(format!("does not accept a {} operand", x.kind())));
        }
    };
    ctx.tensor(x.shape.clone(), data)
}

/// The unary ops defined on floats only.
const FLOAT_ONLY: [&str; 9] = [
    "Reciprocal",
    "Sqrt",
    "Exp",
    "Log",
    "Cos",
    "Sin",
    "Tanh",
    "Sigmoid",
    "Erf",
];

/// The f32 function of a float-only unary op.
fn float_fn(ctx: &Ctx, op: &str) -> Result<fn(f32) -> f32, RuntimeError> {
    Ok(match op {
        "Reciprocal" => |a| 1.0 / a,
        "Sqrt" => f32::sqrt,
        "Exp" => f32::exp,
        "Log" => f32::ln,
        "Cos" => f32::cos,
        "Sin" => f32::sin,
        "Tanh" => f32::tanh,
        "Sigmoid" => sigmoid,
        "Erf" => |a| erf(f64::from(a)) as f32,
        other => return Err(ctx.unsupported(format!("unknown unary op {other}"))),
    })
}

/// `max(x, 0)`, keeping NaN and `-0.0` as onnxruntime does.
fn relu(x: f32) -> f32 {
    if x < 0.0 { 0.0 } else { x }
}

/// The logistic function, stable for large `|x|`.
pub(super) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}
