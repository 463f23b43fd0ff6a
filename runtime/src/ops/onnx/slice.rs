//! `Slice(data, starts, ends [, axes [, steps]])` with ONNX clamping rules.
//!
//! Per sliced axis of size `dim`: negative `start`/`end` count from the end;
//! then for a positive step both are clamped to `[0, dim]`, for a negative
//! step `start` to `[0, dim-1]` and `end` to `[-1, dim-1]`. The result is a
//! strided view (negative strides for negative steps).

use crate::{RuntimeError, Tensor};

use super::common::{Ctx, contiguous_strides};
use super::strided::gather_strided;

/// One sliced axis: first index, step and element count.
#[derive(Debug, PartialEq)]
struct AxisSlice {
    start: i128,
    step: i128,
    count: usize,
}

/// The elements `start, start+step, …` before `end`, for an axis of size `dim`.
fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> AxisSlice {
    let d = dim as i128;
    let (start, end, step) = (i128::from(start), i128::from(end), i128::from(step));
    let start = if start < 0 { start + d } else { start };
    let end = if end < 0 { end + d } else { end };
    let (start, end) = if step > 0 {
        (start.max(0).min(d), end.max(0).min(d))
    } else {
        (start.max(0).min(d - 1), end.max(-1).min(d - 1))
    };
    let span = if step > 0 { end - start } else { start - end };
    let count = if span > 0 && d > 0 {
        let s = step.abs();
        ((span + s - 1) / s) as usize
    } else {
        0
    };
    AxisSlice { start, step, count }
}

/// Runs Slice.
pub(super) fn slice(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let rank = x.shape.len();
    let starts = ctx.ints_input(1, "starts")?;
    let ends = ctx.ints_input(2, "ends")?;
    let axes: Vec<usize> = match ctx.opt_input(3) {
        Some(_) => ctx.axes(ctx.ints_input(3, "axes")?, rank)?,
        None => (0..starts.len()).collect(),
    };
    let ones = vec![1i64; starts.len()];
    let steps: &[i64] = match ctx.opt_input(4) {
        Some(_) => ctx.ints_input(4, "steps")?,
        None => &ones,
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(ctx.shape_err(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} must have one length"
        )));
    }
    if let Some(&a) = axes.iter().find(|&&a| a >= rank) {
        return Err(ctx.shape_err(format!("axis {a} is out of range for rank {rank}")));
    }
    let own = contiguous_strides(&x.shape);
    let mut shape = x.shape.clone();
    let mut strides: Vec<isize> = own.iter().map(|&s| s as isize).collect();
    let mut offset: i128 = 0;
    for (i, &axis) in axes.iter().enumerate() {
        if steps[i] == 0 {
            return Err(ctx.shape_err(format!("step of axis {axis} is 0")));
        }
        let s = slice_axis(x.shape[axis], starts[i], ends[i], steps[i]);
        shape[axis] = s.count;
        if s.count > 0 {
            offset += s.start * own[axis] as i128;
        }
        strides[axis] = isize::try_from(s.step * own[axis] as i128)
            .map_err(|_| ctx.shape_err("slice stride overflows"))?;
    }
    let offset = isize::try_from(offset).map_err(|_| ctx.shape_err("slice offset overflows"))?;
    let data = map_data!(&x.data, |v| gather_strided(v, &shape, &strides, offset)?);
    ctx.tensor(shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_like_onnx() {
        let s = |dim, a, b, c| {
            let r = slice_axis(dim, a, b, c);
            (r.start, r.count)
        };
        assert_eq!(s(5, 1, 3, 1), (1, 2));
        assert_eq!(s(5, -2, i64::MAX, 1), (3, 2));
        assert_eq!(s(5, -1, i64::MIN, -1), (4, 5));
        assert_eq!(s(5, 10, -10, -2), (4, 3));
        assert_eq!(s(5, 3, 1, 1).1, 0);
        assert_eq!(s(0, 0, -1, -1).1, 0);
    }
}
