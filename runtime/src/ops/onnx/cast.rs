//! Cast and CastLike.
//!
//! Run-time tensors hold every float as f32 and every integer as i64, so a
//! cast converts between those and then reproduces the target's precision:
//! f16 and bf16 values are rounded (to nearest even) to that format, narrow
//! integers wrap to their width as C casts do, floats truncate toward zero
//! when cast to integers, and anything cast to bool is `!= 0`.

use half::{bf16, f16};
use ligerc_ir::DType;

use crate::{Data, RuntimeError, Tensor};

use super::common::Ctx;

/// The element type a cast produces.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// f32 (and f64, which runs as f32).
    F32,
    /// IEEE binary16: values rounded to it.
    F16,
    /// bfloat16: values rounded to it.
    BF16,
    /// An integer of `bits` width, signed or not.
    Int { bits: u32, signed: bool },
    /// Boolean.
    Bool,
}

impl Target {
    /// The target of ONNX `TensorProto.DataType` code `code`.
    fn from_onnx_code(code: i64) -> Option<Target> {
        Some(match code {
            1 | 11 => Target::F32,
            10 => Target::F16,
            16 => Target::BF16,
            2 => Target::Int {
                bits: 8,
                signed: false,
            },
            3 => Target::Int {
                bits: 8,
                signed: true,
            },
            4 => Target::Int {
                bits: 16,
                signed: false,
            },
            5 => Target::Int {
                bits: 16,
                signed: true,
            },
            6 => Target::Int {
                bits: 32,
                signed: true,
            },
            7 => Target::Int {
                bits: 64,
                signed: true,
            },
            12 => Target::Int {
                bits: 32,
                signed: false,
            },
            13 => Target::Int {
                bits: 64,
                signed: false,
            },
            9 => Target::Bool,
            _ => return None,
        })
    }

    /// The target of an IR dtype.
    fn from_dtype(d: DType) -> Target {
        match d {
            DType::F32 | DType::F64 => Target::F32,
            DType::F16 => Target::F16,
            DType::BF16 => Target::BF16,
            DType::I64 => Target::Int {
                bits: 64,
                signed: true,
            },
            DType::I32 => Target::Int {
                bits: 32,
                signed: true,
            },
            DType::I8 => Target::Int {
                bits: 8,
                signed: true,
            },
            DType::U8 => Target::Int {
                bits: 8,
                signed: false,
            },
            DType::Bool => Target::Bool,
        }
    }
}

/// `Cast(x)` to the type of attribute `to` (an ONNX dtype code).
pub(super) fn cast(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let code = ctx.attrs.int("to")?;
    let target = Target::from_onnx_code(code)
        .ok_or_else(|| ctx.unsupported(format!("cast to ONNX dtype code {code}")))?;
    convert(ctx, ctx.input(0)?, target)
}

/// `CastLike(x, like)`: cast to the element type of `like`. The run-time
/// kind of `like` decides float / integer / bool; the declared result type,
/// when it is of that kind, gives the exact precision (f16, i32, …).
pub(super) fn cast_like(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let like = ctx.input(1)?;
    let declared = ctx.out_types.first().map(|t| t.dtype);
    let target = match (&like.data, declared) {
        (Data::F32(_), Some(d)) if d.is_float() => Target::from_dtype(d),
        (Data::I64(_), Some(d)) if d.is_int() => Target::from_dtype(d),
        (Data::F32(_), _) => Target::F32,
        (Data::I64(_), _) => Target::Int {
            bits: 64,
            signed: true,
        },
        (Data::Bool(_), _) => Target::Bool,
    };
    convert(ctx, ctx.input(0)?, target)
}

fn convert(ctx: &Ctx, x: &Tensor, target: Target) -> Result<Tensor, RuntimeError> {
    let data = match target {
        Target::F32 | Target::F16 | Target::BF16 => {
            let round = |v: f32| match target {
                Target::F16 => f16::from_f32(v).to_f32(),
                Target::BF16 => bf16::from_f32(v).to_f32(),
                _ => v,
            };
            Data::F32(match &x.data {
                Data::F32(v) => v.iter().map(|&a| round(a)).collect(),
                Data::I64(v) => v.iter().map(|&a| round(a as f32)).collect(),
                Data::Bool(v) => v.iter().map(|&a| if a { 1.0 } else { 0.0 }).collect(),
            })
        }
        Target::Int { bits, signed } => {
            let wrap = |v: i64| wrap_int(v, bits, signed);
            Data::I64(match &x.data {
                Data::F32(v) => v.iter().map(|&a| wrap(a as i64)).collect(),
                Data::I64(v) => v.iter().map(|&a| wrap(a)).collect(),
                Data::Bool(v) => v.iter().map(|&a| i64::from(a)).collect(),
            })
        }
        Target::Bool => Data::Bool(match &x.data {
            Data::F32(v) => v.iter().map(|&a| a != 0.0).collect(),
            Data::I64(v) => v.iter().map(|&a| a != 0).collect(),
            Data::Bool(v) => v.clone(),
        }),
    };
    ctx.tensor(x.shape.clone(), data)
}

/// `v` reduced to a `bits`-wide integer (two's-complement wrap-around), kept in i64.
fn wrap_int(v: i64, bits: u32, signed: bool) -> i64 {
    if bits >= 64 {
        return v;
    }
    let shift = 64 - bits;
    if signed {
        (v << shift) >> shift
    } else {
        ((v as u64) << shift >> shift) as i64
    }
}
