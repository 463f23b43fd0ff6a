//! Strided views: reading a tensor through per-dimension strides.
//!
//! Transpose, Slice (negative steps included), Expand, Tile and broadcasting
//! are all "walk an output shape, read the source at `offset + Σ iᵈ·strideᵈ`".
//! The walk visits innermost rows, so the per-element cost is one add; dims
//! that are contiguous in every operand are merged first to make rows long.
//! Every read is bounds-checked and turns into an error, never a panic.

use crate::RuntimeError;

use super::common::contiguous_strides;

/// Merges adjacent dims that are contiguous in every stride list and drops
/// dims of size 1. Returns the new shape and stride lists (at least rank 1).
pub(super) fn collapse<const N: usize>(
    shape: &[usize],
    strides: [&[isize]; N],
) -> (Vec<usize>, [Vec<isize>; N]) {
    let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out_strides: [Vec<isize>; N] = std::array::from_fn(|_| Vec::new());
    for (d, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let merge = match out_shape.last() {
            None => false,
            Some(_) => strides.iter().zip(out_strides.iter()).all(|(s, o)| {
                let last = o.last().copied().unwrap_or(0);
                last == s[d].wrapping_mul(n as isize)
            }),
        };
        if merge {
            if let Some(l) = out_shape.last_mut() {
                *l *= n;
            }
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                if let Some(l) = o.last_mut() {
                    *l = s[d];
                }
            }
        } else {
            out_shape.push(n);
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                o.push(s[d]);
            }
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        for o in out_strides.iter_mut() {
            o.push(0);
        }
    }
    (out_shape, out_strides)
}

/// Calls `f` with the starting offsets (one per operand) of every point of
/// `shape`, in row-major order. `shape` usually excludes the innermost dim,
/// which the caller walks itself.
pub(super) fn for_each_offset<const N: usize>(
    shape: &[usize],
    strides: [&[isize]; N],
    base: [isize; N],
    mut f: impl FnMut([isize; N]) -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    if shape.contains(&0) {
        return Ok(());
    }
    let rank = shape.len();
    let mut counters = vec![0usize; rank];
    let mut offsets = base;
    loop {
        f(offsets)?;
        let mut d = rank;
        loop {
            if d == 0 {
                return Ok(());
            }
            d -= 1;
            counters[d] += 1;
            for (o, s) in offsets.iter_mut().zip(strides.iter()) {
                *o += s[d];
            }
            if counters[d] < shape[d] {
                break;
            }
            for (o, s) in offsets.iter_mut().zip(strides.iter()) {
                *o -= s[d] * shape[d] as isize;
            }
            counters[d] = 0;
        }
    }
}

/// The error every out-of-bounds strided read turns into.
pub(super) fn oob() -> RuntimeError {
    RuntimeError::Shape("internal: strided read out of bounds".into())
}

/// `src[off..off + n]`, bounds-checked.
pub(super) fn row<T>(src: &[T], off: isize, n: usize) -> Result<&[T], RuntimeError> {
    let start = usize::try_from(off).map_err(|_| oob())?;
    src.get(start..start.checked_add(n).ok_or_else(oob)?)
        .ok_or_else(oob)
}

/// `src[off]`, bounds-checked.
pub(super) fn at<T: Copy>(src: &[T], off: isize) -> Result<T, RuntimeError> {
    usize::try_from(off)
        .ok()
        .and_then(|i| src.get(i))
        .copied()
        .ok_or_else(oob)
}

/// Reads `src` through a strided view: element `i` of the result (row-major
/// over `shape`) is `src[offset + Σ iᵈ·strides[d]]`.
pub(super) fn gather_strided<T: Copy>(
    src: &[T],
    shape: &[usize],
    strides: &[isize],
    offset: isize,
) -> Result<Vec<T>, RuntimeError> {
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| RuntimeError::Shape(format!("shape {shape:?} overflows")))?;
    let mut out = Vec::with_capacity(numel);
    if numel == 0 {
        return Ok(out);
    }
    let (shape, [strides]) = collapse(shape, [strides]);
    let (outer, inner) = shape.split_at(shape.len() - 1);
    let n = inner[0];
    let s = strides[strides.len() - 1];
    for_each_offset(outer, [&strides], [offset], |[o]| {
        match s {
            1 => out.extend_from_slice(row(src, o, n)?),
            0 => {
                let v = at(src, o)?;
                out.extend(std::iter::repeat_n(v, n));
            }
            _ => {
                for j in 0..n as isize {
                    out.push(at(src, o + j * s)?);
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Strides of a tensor of shape `shape` read as the (right-aligned,
/// multidirectionally broadcast) shape `out`: broadcast dims get stride 0.
/// The caller has checked that `shape` broadcasts to `out`.
pub(super) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<isize> {
    let own = contiguous_strides(shape);
    let lead = out.len().saturating_sub(shape.len());
    (0..out.len())
        .map(|d| {
            if d < lead {
                return 0;
            }
            let k = d - lead;
            if shape[k] == 1 && out[d] != 1 {
                0
            } else {
                own[k] as isize
            }
        })
        .collect()
}

/// `src` (of shape `shape`) broadcast to `out`.
pub(super) fn broadcast_to<T: Copy>(
    src: &[T],
    shape: &[usize],
    out: &[usize],
) -> Result<Vec<T>, RuntimeError> {
    if shape == out {
        return Ok(src.to_vec());
    }
    gather_strided(src, out, &broadcast_strides(shape, out), 0)
}
