//! Broadcasting binary ops: arithmetic (Add, Sub, Mul, Div, Pow),
//! comparisons (Equal, Less, LessOrEqual, Greater, GreaterOrEqual) and
//! logic (And, Or).
//!
//! Both operands must have the same run-time element type (ONNX's type
//! constraint `T`), except Pow, whose exponent may be float or integer.
//! Integer arithmetic wraps like two's-complement hardware; integer division
//! truncates toward zero and refuses a zero divisor.

use crate::{Data, RuntimeError, Tensor};

use super::broadcast::zip_map;
use super::common::Ctx;

/// Add, Sub, Mul or Div.
pub(super) fn arith(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    let op = ctx.op;
    let (shape, data) = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => {
            let (shape, v) = match op {
                "Add" => zip_map(op, (&a.shape, x), (&b.shape, y), |p, q| p + q)?,
                "Sub" => zip_map(op, (&a.shape, x), (&b.shape, y), |p, q| p - q)?,
                "Mul" => zip_map(op, (&a.shape, x), (&b.shape, y), |p, q| p * q)?,
                _ => zip_map(op, (&a.shape, x), (&b.shape, y), |p, q| p / q)?,
            };
            (shape, Data::F32(v))
        }
        (Data::I64(x), Data::I64(y)) => {
            let (shape, v) = match op {
                "Add" => zip_map(op, (&a.shape, x), (&b.shape, y), i64::wrapping_add)?,
                "Sub" => zip_map(op, (&a.shape, x), (&b.shape, y), i64::wrapping_sub)?,
                "Mul" => zip_map(op, (&a.shape, x), (&b.shape, y), i64::wrapping_mul)?,
                _ => {
                    if y.contains(&0) {
                        return Err(ctx.shape_err("integer division by zero"));
                    }
                    zip_map(op, (&a.shape, x), (&b.shape, y), i64::wrapping_div)?
                }
            };
            (shape, Data::I64(v))
        }
        _ => return Err(mismatch(ctx, a, b, "two float or two integer tensors")),
    };
    ctx.tensor(shape, data)
}

/// `base ^ exponent`; the result has the base's type.
pub(super) fn pow(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    let op = ctx.op;
    let (sa, sb) = (&a.shape[..], &b.shape[..]);
    let (shape, data) = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => {
            let (s, v) = zip_map(op, (sa, x), (sb, y), powf)?;
            (s, Data::F32(v))
        }
        (Data::F32(x), Data::I64(y)) => {
            // std::pow(float, int64) promotes to double.
            let (s, v) = zip_map(op, (sa, x), (sb, y), |p, q| {
                (f64::from(p)).powf(q as f64) as f32
            })?;
            (s, Data::F32(v))
        }
        (Data::I64(x), Data::I64(y)) => {
            let (s, v) = zip_map(op, (sa, x), (sb, y), int_pow)?;
            (s, Data::I64(v))
        }
        (Data::I64(x), Data::F32(y)) => {
            let (s, v) = zip_map(op, (sa, x), (sb, y), |p, q| {
                (p as f64).powf(f64::from(q)) as i64
            })?;
            (s, Data::I64(v))
        }
        _ => return Err(mismatch(ctx, a, b, "a numeric base and exponent")),
    };
    ctx.tensor(shape, data)
}

/// Float power with the exact special cases runtimes use for small exponents.
fn powf(x: f32, y: f32) -> f32 {
    if y == 2.0 {
        x * x
    } else if y == 1.0 {
        x
    } else if y == 0.5 {
        x.sqrt()
    } else {
        x.powf(y)
    }
}

/// Integer power by squaring (wrapping); negative exponents truncate toward zero.
fn int_pow(base: i64, exp: i64) -> i64 {
    if exp < 0 {
        return match base {
            1 => 1,
            -1 if exp % 2 == 0 => 1,
            -1 => -1,
            _ => 0,
        };
    }
    let (mut result, mut b, mut e) = (1i64, base, exp);
    while e > 0 {
        if e & 1 == 1 {
            result = result.wrapping_mul(b);
        }
        b = b.wrapping_mul(b);
        e >>= 1;
    }
    result
}

/// Equal, Less, LessOrEqual, Greater or GreaterOrEqual; the result is bool.
pub(super) fn compare(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    let op = ctx.op;
    let (sa, sb) = (&a.shape[..], &b.shape[..]);
    let (shape, v) = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => cmp_typed(op, (sa, x), (sb, y))?,
        (Data::I64(x), Data::I64(y)) => cmp_typed(op, (sa, x), (sb, y))?,
        (Data::Bool(x), Data::Bool(y)) if op == "Equal" => {
            zip_map(op, (sa, x), (sb, y), |p, q| p == q)?
        }
        _ => return Err(mismatch(ctx, a, b, "two float or two integer tensors")),
    };
    ctx.tensor(shape, Data::Bool(v))
}

fn cmp_typed<T: Copy + PartialOrd + Sync>(
    op: &str,
    a: (&[usize], &[T]),
    b: (&[usize], &[T]),
) -> Result<(Vec<usize>, Vec<bool>), RuntimeError> {
    match op {
        "Equal" => zip_map(op, a, b, |p, q| p == q),
        "Less" => zip_map(op, a, b, |p, q| p < q),
        "LessOrEqual" => zip_map(op, a, b, |p, q| p <= q),
        "Greater" => zip_map(op, a, b, |p, q| p > q),
        _ => zip_map(op, a, b, |p, q| p >= q),
    }
}

/// And or Or on booleans.
pub(super) fn logic(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    let (Data::Bool(x), Data::Bool(y)) = (&a.data, &b.data) else {
        return Err(mismatch(ctx, a, b, "two bool tensors"));
    };
    let (sa, sb) = (&a.shape[..], &b.shape[..]);
    let (shape, v) = if ctx.op == "And" {
        zip_map(ctx.op, (sa, x), (sb, y), |p, q| p && q)?
    } else {
        zip_map(ctx.op, (sa, x), (sb, y), |p, q| p || q)?
    };
    ctx.tensor(shape, Data::Bool(v))
}

/// The type error for an operand pair the op does not accept.
pub(super) fn mismatch(ctx: &Ctx, a: &Tensor, b: &Tensor, want: &str) -> RuntimeError {
    ctx.type_err(format!(
        "expected {want}, got {} and {}",
        a.kind(),
        b.kind()
    ))
}
