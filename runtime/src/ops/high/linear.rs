//! `Linear` and `LmHead`: `x·Wᵀ (+ b)` with `W` stored `[out, in]`.

use rayon::prelude::*;

use super::kernels::{dot, f32_data};
use crate::{RuntimeError, Tensor};

/// Up to this many rows, a product is done as dot products over `W`'s rows
/// (decode steps): `sgemm` would pack all of `W` for very little arithmetic.
const SMALL_ROWS: usize = 4;

/// Output features handed to one rayon task in the small-row path.
const SMALL_COLS_PER_TASK: usize = 64;

/// `x·Wᵀ (+ b)`: `x [.., in]`, `w [out, in]`, optional `b [out]` → `[.., out]`.
///
/// `W` is read transposed in place through `sgemm`'s strides, never copied.
/// `LmHead` is this without a bias.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, RuntimeError> {
    let xs = f32_data(x, "Linear input")?;
    let ws = f32_data(w, "Linear weight")?;
    let (out_f, in_f) = match w.shape[..] {
        [o, i] => (o, i),
        _ => {
            return Err(RuntimeError::Shape(format!(
                "Linear weight must be [out, in], is {:?}",
                w.shape
            )));
        }
    };
    let Some(&x_in) = x.shape.last() else {
        return Err(RuntimeError::Shape("Linear input is a scalar".into()));
    };
    if x_in != in_f {
        return Err(RuntimeError::Shape(format!(
            "Linear input {:?} has {x_in} features, weight {:?} expects {in_f}",
            x.shape, w.shape
        )));
    }
    let bs = match bias {
        None => None,
        Some(b) => {
            if b.shape != [out_f] {
                return Err(RuntimeError::Shape(format!(
                    "Linear bias is {:?}, expected [{out_f}]",
                    b.shape
                )));
            }
            Some(f32_data(b, "Linear bias")?)
        }
    };
    let rows: usize = x.shape[..x.shape.len() - 1].iter().product();
    let mut out = vec![0.0f32; rows * out_f];
    if let Some(b) = bs {
        for row in out.chunks_mut(out_f.max(1)) {
            row.copy_from_slice(&b[..row.len()]);
        }
    }
    if rows > 0 && out_f > 0 && in_f > 0 {
        if rows <= SMALL_ROWS {
            small_rows(xs, ws, rows, in_f, out_f, &mut out);
        } else {
            gemm_xwt(xs, ws, rows, in_f, out_f, &mut out);
        }
    }
    let mut shape = x.shape.clone();
    if let Some(last) = shape.last_mut() {
        *last = out_f;
    }
    Tensor::f32(shape, out)
}

/// `out += x·Wᵀ` for `x [rows, in]`, `w [out, in]`, `out [rows, out]`.
fn gemm_xwt(xs: &[f32], ws: &[f32], rows: usize, in_f: usize, out_f: usize, out: &mut [f32]) {
    debug_assert_eq!(xs.len(), rows * in_f);
    debug_assert_eq!(ws.len(), out_f * in_f);
    debug_assert_eq!(out.len(), rows * out_f);
    // SAFETY: A = x is rows×in with row stride `in`, column stride 1; B = Wᵀ is
    // in×out, read from W [out, in] with row stride 1 and column stride `in`;
    // C is rows×out, row-major. The slices have exactly these sizes (checked
    // by the caller), so every index sgemm forms is in bounds, and C does not
    // alias A or B.
    unsafe {
        matrixmultiply::sgemm(
            rows,
            in_f,
            out_f,
            1.0,
            xs.as_ptr(),
            in_f as isize,
            1,
            ws.as_ptr(),
            1,
            in_f as isize,
            1.0,
            out.as_mut_ptr(),
            out_f as isize,
            1,
        );
    }
}

/// `out += x·Wᵀ` for a few rows: dot products against `W`'s contiguous rows,
/// split over output features.
fn small_rows(xs: &[f32], ws: &[f32], rows: usize, in_f: usize, out_f: usize, out: &mut [f32]) {
    // Computed transposed ([out, rows]) so each task owns a contiguous block.
    let mut out_t = vec![0.0f32; out_f * rows];
    out_t
        .par_chunks_mut(SMALL_COLS_PER_TASK * rows)
        .enumerate()
        .for_each(|(task, block)| {
            let first = task * SMALL_COLS_PER_TASK;
            for (j, cell) in block.chunks_mut(rows).enumerate() {
                let w_row = &ws[(first + j) * in_f..(first + j + 1) * in_f];
                for (r, c) in cell.iter_mut().enumerate() {
                    *c = dot(&xs[r * in_f..(r + 1) * in_f], w_row);
                }
            }
        });
    for (n, cell) in out_t.chunks(rows).enumerate() {
        for (r, &v) in cell.iter().enumerate() {
            out[r * out_f + n] += v;
        }
    }
}
