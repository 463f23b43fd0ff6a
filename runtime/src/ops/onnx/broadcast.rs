//! Multidirectional (numpy) broadcasting and the elementwise zip built on it.
//!
//! Shapes are aligned on the right; each pair of dims must be equal or one of
//! them 1. [`zip_map`] applies a binary function over two broadcast operands
//! with fast paths for equal shapes and scalars, and otherwise walks
//! innermost rows with precomputed strides (no per-element index vectors).

use rayon::prelude::*;

use crate::RuntimeError;

use super::strided::{at, broadcast_strides, collapse, for_each_offset, row};

/// Element count above which elementwise loops run on the rayon pool.
pub(super) const PAR_THRESHOLD: usize = 1 << 16;

/// The broadcast of two shapes, or `None` when they do not broadcast.
pub(super) fn broadcast_pair(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0usize; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = (i + a.len()).checked_sub(rank).map_or(1, |k| a[k]);
        let db = (i + b.len()).checked_sub(rank).map_or(1, |k| b[k]);
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// The broadcast of several shapes, or a shape error naming `op`.
pub(super) fn broadcast_shapes(op: &str, shapes: &[&[usize]]) -> Result<Vec<usize>, RuntimeError> {
    let mut out: Vec<usize> = Vec::new();
    for s in shapes {
        out = broadcast_pair(&out, s).ok_or_else(|| {
            RuntimeError::Shape(format!(
                "{op}: shapes {:?} do not broadcast together",
                shapes.iter().map(|s| s.to_vec()).collect::<Vec<_>>()
            ))
        })?;
    }
    Ok(out)
}

/// Maps `f` over one slice, in parallel when it is large.
pub(super) fn map_slice<A, R, F>(a: &[A], f: F) -> Vec<R>
where
    A: Copy + Sync,
    R: Send,
    F: Fn(A) -> R + Sync + Send,
{
    if a.len() >= PAR_THRESHOLD {
        a.par_iter().map(|&x| f(x)).collect()
    } else {
        a.iter().map(|&x| f(x)).collect()
    }
}

/// `f(a, b)` elementwise over the broadcast of `a` (shape `sa`) and `b`
/// (shape `sb`). Returns the result shape and values.
pub(super) fn zip_map<A, B, R, F>(
    op: &str,
    (sa, a): (&[usize], &[A]),
    (sb, b): (&[usize], &[B]),
    f: F,
) -> Result<(Vec<usize>, Vec<R>), RuntimeError>
where
    A: Copy + Sync,
    B: Copy + Sync,
    R: Send,
    F: Fn(A, B) -> R + Sync + Send,
{
    let shape = broadcast_shapes(op, &[sa, sb])?;
    if sa == sb {
        let out = if a.len() >= PAR_THRESHOLD {
            a.par_iter()
                .zip(b.par_iter())
                .map(|(&x, &y)| f(x, y))
                .collect()
        } else {
            a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
        };
        return Ok((shape, out));
    }
    // All dims of a one-element operand are 1, so the result has the other's layout.
    if let [x] = a {
        let x = *x;
        return Ok((shape, map_slice(b, |y| f(x, y))));
    }
    if let [y] = b {
        let y = *y;
        return Ok((shape, map_slice(a, |x| f(x, y))));
    }
    let numel = shape.iter().product::<usize>();
    let mut out = Vec::with_capacity(numel);
    if numel == 0 {
        return Ok((shape, out));
    }
    let (st_a, st_b) = (broadcast_strides(sa, &shape), broadcast_strides(sb, &shape));
    let (cshape, [st_a, st_b]) = collapse(&shape, [&st_a, &st_b]);
    let last = cshape.len() - 1;
    let n = cshape[last];
    let (ia, ib) = (st_a[last], st_b[last]);
    for_each_offset(&cshape[..last], [&st_a, &st_b], [0, 0], |[oa, ob]| {
        match (ia, ib) {
            (1, 1) => {
                let (ra, rb) = (row(a, oa, n)?, row(b, ob, n)?);
                out.extend(ra.iter().zip(rb).map(|(&x, &y)| f(x, y)));
            }
            (0, 1) => {
                let x = at(a, oa)?;
                out.extend(row(b, ob, n)?.iter().map(|&y| f(x, y)));
            }
            (1, 0) => {
                let y = at(b, ob)?;
                out.extend(row(a, oa, n)?.iter().map(|&x| f(x, y)));
            }
            _ => {
                for j in 0..n as isize {
                    out.push(f(at(a, oa + j * ia)?, at(b, ob + j * ib)?));
                }
            }
        }
        Ok(())
    })?;
    Ok((shape, out))
}
