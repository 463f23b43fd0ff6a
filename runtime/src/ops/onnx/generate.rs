//! Ops that create tensors from scalars: Range and ConstantOfShape.

use crate::{Data, RuntimeError, Tensor};

use super::common::Ctx;

/// `Range(start, limit, delta)`: `max(ceil((limit - start) / delta), 0)`
/// elements `start + i·delta`, all three operands of one type.
pub(super) fn range(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let (s, l, d) = (ctx.input(0)?, ctx.input(1)?, ctx.input(2)?);
    let scalar = |t: &Tensor, what: &str| {
        if t.numel() == 1 {
            Ok(())
        } else {
            Err(ctx.shape_err(format!("{what} must be a scalar, got shape {:?}", t.shape)))
        }
    };
    scalar(s, "start")?;
    scalar(l, "limit")?;
    scalar(d, "delta")?;
    let data = match (&s.data, &l.data, &d.data) {
        (Data::I64(s), Data::I64(l), Data::I64(d)) => {
            let (start, limit, delta) = (i128::from(s[0]), i128::from(l[0]), i128::from(d[0]));
            if delta == 0 {
                return Err(ctx.shape_err("delta is 0"));
            }
            let span = limit - start;
            // ceil(span / delta) for either sign of delta.
            let q = span / delta;
            let n = if (span % delta != 0) && ((span > 0) == (delta > 0)) {
                q + 1
            } else {
                q
            };
            let n = count(ctx, n.max(0))?;
            Data::I64((0..n as i128).map(|i| (start + i * delta) as i64).collect())
        }
        (Data::F32(s), Data::F32(l), Data::F32(d)) => {
            let (start, limit, delta) = (s[0], l[0], d[0]);
            if delta == 0.0 {
                return Err(ctx.shape_err("delta is 0"));
            }
            let n = (f64::from(limit - start) / f64::from(delta)).ceil();
            if !n.is_finite() {
                return Err(
                    ctx.shape_err(format!("cannot count from {start} to {limit} by {delta}"))
                );
            }
            let n = count(ctx, n.max(0.0) as i128)?;
            Data::F32((0..n).map(|i| start + i as f32 * delta).collect())
        }
        _ => {
            return Err(ctx.type_err(format!(
                "start, limit and delta must be all float or all integer, got {}, {}, {}",
                s.kind(),
                l.kind(),
                d.kind()
            )));
        }
    };
    let n = match &data {
        Data::F32(v) => v.len(),
        Data::I64(v) => v.len(),
        Data::Bool(v) => v.len(),
    };
    ctx.tensor(vec![n], data)
}

/// Refuses element counts no one can allocate.
fn count(ctx: &Ctx, n: i128) -> Result<usize, RuntimeError> {
    const LIMIT: i128 = 1 << 40;
    if n > LIMIT {
        return Err(ctx.shape_err(format!("{n} elements is too many")));
    }
    Ok(n as usize)
}

/// `ConstantOfShape(shape)`: a tensor of that shape filled with the single
/// element of attribute `value` (default: f32 zero).
pub(super) fn constant_of_shape(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let shape = ctx
        .ints_input(0, "shape")?
        .iter()
        .map(|&d| ctx.dim(d, "shape"))
        .collect::<Result<Vec<_>, _>>()?;
    let n = ctx.numel(&shape)?;
    count(ctx, n as i128)?;
    let data = match ctx.attrs.tensor_opt("value")? {
        None => Data::F32(vec![0.0; n]),
        Some(value) => {
            let value = Tensor::from_data(value);
            if value.numel() != 1 {
                return Err(ctx.shape_err(format!(
                    "value must hold one element, got shape {:?}",
                    value.shape
                )));
            }
            map_data!(&value.data, |v| vec![v[0]; n])
        }
    };
    ctx.tensor(shape, data)
}
