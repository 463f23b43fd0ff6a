//! Backward of Linear, LmHead, Lora and Embedding.
//!
//! With `x [rows, in]`, `W [out, in]` and the result gradient `dy [rows, out]`:
//! `dx = dy·W`, `dW = dyᵀ·x`, `db = Σ_rows dy`. Every product goes through
//! `matrixmultiply::sgemm` reading transposed operands through strides, never
//! copying them; only the gradients `wrt` names are formed.

use rayon::prelude::*;

use super::not_differentiable;
use crate::ops::high::kernels::{consistent, f32_data};
use crate::{RuntimeError, Tensor};

/// A `rows × cols` operand of [`gemm`], read from `data` stored row-major
/// either as that matrix or as its transpose (`[cols, rows]`).
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl<'a> Mat<'a> {
    /// `data` holds the `rows × cols` matrix row-major.
    fn plain(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            transposed: false,
        }
    }

    /// `data` holds the `cols × rows` matrix whose transpose is wanted.
    fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            transposed: true,
        }
    }

    /// `(row stride, column stride)` in elements.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.rows as isize)
        } else {
            (self.cols as isize, 1)
        }
    }
}

/// `c += alpha·a·b` with `c` row-major `[a.rows, b.cols]`; errors when the
/// operand sizes do not fit (an internal inconsistency: callers check shapes).
fn gemm(alpha: f32, a: Mat, b: Mat, c: &mut [f32]) -> Result<(), RuntimeError> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let fits = a.data.len() == m * k && b.data.len() == k * b.cols && b.rows == k;
    if !fits || c.len() != m * n {
        return Err(RuntimeError::Shape(format!(
            "internal: product of {m}×{k} ({}) and {}×{n} ({}) into {} elements",
            a.data.len(),
            b.rows,
            b.data.len(),
            c.len()
        )));
    }
    if m == 0 || k == 0 || n == 0 {
        return Ok(());
    }
    let (rsa, csa) = a.strides();
    let (rsb, csb) = b.strides();
    // SAFETY: `a` is m×k and `b` k×n, each stored in exactly m·k (k·n)
    // elements (checked above) and read row-major or transposed through the
    // strides of `Mat::strides`, so every index sgemm forms is in bounds; `c`
    // holds exactly m·n elements, row-major, and is a `&mut` that cannot alias
    // `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            rsa,
            csa,
            b.data.as_ptr(),
            rsb,
            csb,
            1.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    Ok(())
}

/// Sizes of a dense product `x [.., in]·Wᵀ`, `W [out, in]`.
#[derive(Clone, Copy)]
struct Dims {
    rows: usize,
    in_f: usize,
    out_f: usize,
}

/// Checks `x [.., in]` against `w [out, in]` (named `what`) and `dy` against
/// `[.., out]`.
fn dense_dims(op: &str, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<Dims, RuntimeError> {
    f32_data(x, &format!("{op} input"))?;
    f32_data(w, &format!("{op} weight"))?;
    f32_data(dy, &format!("{op} result gradient"))?;
    let [out_f, in_f] = w.shape[..] else {
        return Err(RuntimeError::Shape(format!(
            "{op} weight must be [out, in], is {:?}",
            w.shape
        )));
    };
    let Some((&x_in, lead)) = x.shape.split_last() else {
        return Err(RuntimeError::Shape(format!("{op} input is a scalar")));
    };
    if x_in != in_f {
        return Err(RuntimeError::Shape(format!(
            "{op} input {:?} has {x_in} features, weight {:?} expects {in_f}",
            x.shape, w.shape
        )));
    }
    let mut want = lead.to_vec();
    want.push(out_f);
    if dy.shape != want {
        return Err(RuntimeError::Shape(format!(
            "{op} result gradient is {:?}, expected {want:?}",
            dy.shape
        )));
    }
    Ok(Dims {
        rows: lead.iter().product(),
        in_f,
        out_f,
    })
}

/// Checks an optional bias operand against `[out]`.
fn check_bias(op: &str, bias: Option<&Tensor>, out_f: usize) -> Result<(), RuntimeError> {
    if let Some(b) = bias {
        f32_data(b, &format!("{op} bias"))?;
        if b.shape != [out_f] {
            return Err(RuntimeError::Shape(format!(
                "{op} bias is {:?}, expected [{out_f}]",
                b.shape
            )));
        }
    }
    Ok(())
}

/// `Σ_rows dy` for `dy [rows, out]`, summed per column in f64.
fn column_sums(dy: &[f32], out_f: usize) -> Vec<f32> {
    let mut acc = vec![0.0f64; out_f];
    for row in dy.chunks_exact(out_f.max(1)) {
        for (a, &g) in acc.iter_mut().zip(row) {
            *a += g as f64;
        }
    }
    acc.into_iter().map(|a| a as f32).collect()
}

/// `alpha·dy·m` for `dy [rows, k]`, `m [k, n]` → `[rows, n]`.
fn times(
    alpha: f32,
    dy: &[f32],
    m: &[f32],
    rows: usize,
    k: usize,
    n: usize,
) -> Result<Vec<f32>, RuntimeError> {
    let mut out = vec![0.0f32; rows * n];
    gemm(
        alpha,
        Mat::plain(dy, rows, k),
        Mat::plain(m, k, n),
        &mut out,
    )?;
    Ok(out)
}

/// `alpha·gᵀ·x` for `g [rows, p]`, `x [rows, q]` → `[p, q]` (a weight gradient).
fn outer(
    alpha: f32,
    g: &[f32],
    x: &[f32],
    rows: usize,
    p: usize,
    q: usize,
) -> Result<Vec<f32>, RuntimeError> {
    let mut out = vec![0.0f32; p * q];
    gemm(
        alpha,
        Mat::transposed(g, p, rows),
        Mat::plain(x, rows, q),
        &mut out,
    )?;
    Ok(out)
}

/// Backward of `Linear` (`x, W [, b]`) and `LmHead` (`x, W`): `dx = dy·W`,
/// `dW = dyᵀ·x`, `db = Σ dy`, each only when `wrt` names it.
pub(super) fn linear_vjp(
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    let (x, w, bias) = match fwd {
        [x, w] => (*x, *w, None),
        [x, w, b] => (*x, *w, Some(*b)),
        _ => {
            return Err(RuntimeError::Shape(format!(
                "Linear takes 2 or 3 operands, got {}",
                fwd.len()
            )));
        }
    };
    let dims = dense_dims("Linear", x, w, dy)?;
    check_bias("Linear", bias, dims.out_f)?;
    let (xs, ws, g) = (
        f32_data(x, "Linear input")?,
        f32_data(w, "Linear weight")?,
        f32_data(dy, "Linear result gradient")?,
    );
    let Dims { rows, in_f, out_f } = dims;
    wrt.iter()
        .map(|&i| {
            let (shape, data) = match i {
                0 => (x.shape.clone(), times(1.0, g, ws, rows, out_f, in_f)?),
                1 => (w.shape.clone(), outer(1.0, g, xs, rows, out_f, in_f)?),
                _ => (vec![out_f], column_sums(g, out_f)),
            };
            Tensor::f32(shape, data)
        })
        .collect()
}

/// Backward of `Lora` (`x, W, A [rank, in], B [out, rank] [, bias]`,
/// `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ (+ bias)`, `s = alpha/rank`):
/// `dx = dy·W + s·(dy·B)·A`, `dW = dyᵀ·x`, `dA = s·(dy·B)ᵀ·x`,
/// `dB = s·dyᵀ·(x·Aᵀ)`, `dbias = Σ dy`; only those `wrt` names.
pub(super) fn lora_vjp(
    alpha: f64,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    let (x, w, a, b, bias) = match fwd {
        [x, w, a, b] => (*x, *w, *a, *b, None),
        [x, w, a, b, bias] => (*x, *w, *a, *b, Some(*bias)),
        _ => {
            return Err(RuntimeError::Shape(format!(
                "Lora takes 4 or 5 operands, got {}",
                fwd.len()
            )));
        }
    };
    let Dims { rows, in_f, out_f } = dense_dims("Lora", x, w, dy)?;
    check_bias("Lora", bias, out_f)?;
    let rank = lora_rank(a, b, in_f, out_f)?;
    if !alpha.is_finite() {
        return Err(RuntimeError::Unsupported(format!(
            "Lora alpha must be finite, is {alpha}"
        )));
    }
    let scale = if rank == 0 {
        0.0
    } else {
        (alpha / rank as f64) as f32
    };
    let (xs, ws, g) = (
        f32_data(x, "Lora input")?,
        f32_data(w, "Lora weight")?,
        f32_data(dy, "Lora result gradient")?,
    );
    let (a_s, b_s) = (f32_data(a, "Lora lora_A")?, f32_data(b, "Lora lora_B")?);
    // dy·B [rows, rank], shared by dx and dA.
    let dy_b = if wrt.iter().any(|&i| i == 0 || i == 2) {
        times(1.0, g, b_s, rows, out_f, rank)?
    } else {
        Vec::new()
    };
    wrt.iter()
        .map(|&i| {
            let (shape, data) = match i {
                0 => {
                    let mut dx = times(1.0, g, ws, rows, out_f, in_f)?;
                    gemm(
                        scale,
                        Mat::plain(&dy_b, rows, rank),
                        Mat::plain(a_s, rank, in_f),
                        &mut dx,
                    )?;
                    (x.shape.clone(), dx)
                }
                1 => (w.shape.clone(), outer(1.0, g, xs, rows, out_f, in_f)?),
                2 => (a.shape.clone(), outer(scale, &dy_b, xs, rows, rank, in_f)?),
                3 => {
                    let mut down = vec![0.0f32; rows * rank];
                    gemm(
                        1.0,
                        Mat::plain(xs, rows, in_f),
                        Mat::transposed(a_s, in_f, rank),
                        &mut down,
                    )?;
                    (b.shape.clone(), outer(scale, g, &down, rows, out_f, rank)?)
                }
                _ => (vec![out_f], column_sums(g, out_f)),
            };
            Tensor::f32(shape, data)
        })
        .collect()
}

/// The rank of a Lora adapter, checking `a [rank, in]` and `b [out, rank]`.
fn lora_rank(a: &Tensor, b: &Tensor, in_f: usize, out_f: usize) -> Result<usize, RuntimeError> {
    f32_data(a, "Lora lora_A")?;
    f32_data(b, "Lora lora_B")?;
    let rank = match a.shape[..] {
        [r, i] if i == in_f => r,
        _ => {
            return Err(RuntimeError::Shape(format!(
                "Lora lora_A is {:?}, expected [rank, {in_f}]",
                a.shape
            )));
        }
    };
    if b.shape != [out_f, rank] {
        return Err(RuntimeError::Shape(format!(
            "Lora lora_B is {:?}, expected [{out_f}, {rank}]",
            b.shape
        )));
    }
    Ok(rank)
}

/// Backward of `Embedding` (`table [V, D], ids`): the table gradient is `dy`'s
/// rows scatter-added into a zero `[V, D]` at their ids. The ids have no
/// gradient.
pub(super) fn embedding_vjp(
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    let [table, ids] = fwd else {
        return Err(RuntimeError::Shape(format!(
            "Embedding takes 2 operands (table, ids), got {}",
            fwd.len()
        )));
    };
    if let Some(&w) = wrt.iter().find(|&&w| w != 0) {
        return Err(not_differentiable("Embedding", w, "token ids"));
    }
    f32_data(table, "embedding table")?;
    let [vocab, dim] = table.shape[..] else {
        return Err(RuntimeError::Shape(format!(
            "embedding table must be [vocab, dim], is {:?}",
            table.shape
        )));
    };
    let id_values = ids.as_i64("token ids")?;
    consistent(ids, "token ids")?;
    let g = f32_data(dy, "Embedding result gradient")?;
    let mut want = ids.shape.clone();
    want.push(dim);
    if dy.shape != want {
        return Err(RuntimeError::Shape(format!(
            "Embedding result gradient is {:?}, expected {want:?}",
            dy.shape
        )));
    }
    let rows = checked_rows(id_values, vocab)?;
    let mut grad = vec![0.0f32; vocab * dim];
    if dim > 0 {
        // Split over feature columns so repeated ids never race.
        let mut cols: Vec<(usize, Vec<f32>)> = (0..dim)
            .step_by(EMBED_COLS)
            .map(|c0| (c0, vec![0.0f32; vocab * EMBED_COLS.min(dim - c0)]))
            .collect();
        cols.par_iter_mut().for_each(|(c0, block)| {
            let width = EMBED_COLS.min(dim - *c0);
            for (r, &id) in rows.iter().enumerate() {
                let src = &g[r * dim + *c0..][..width];
                for (d, &s) in block[id * width..(id + 1) * width].iter_mut().zip(src) {
                    *d += s;
                }
            }
        });
        for (c0, block) in &cols {
            let width = EMBED_COLS.min(dim - c0);
            for (v, src) in block.chunks_exact(width).enumerate() {
                grad[v * dim + c0..][..width].copy_from_slice(src);
            }
        }
    }
    let out = Tensor::f32(table.shape.clone(), grad)?;
    Ok(wrt.iter().map(|_| out.clone()).collect())
}

/// Feature columns of the table gradient handled by one rayon task.
const EMBED_COLS: usize = 64;

/// The ids as row indices, or an input error naming the first one outside
/// `0..vocab`.
fn checked_rows(ids: &[i64], vocab: usize) -> Result<Vec<usize>, RuntimeError> {
    ids.iter()
        .map(|&id| {
            usize::try_from(id)
                .ok()
                .filter(|&i| i < vocab)
                .ok_or_else(|| {
                    RuntimeError::Input(format!(
                        "token id {id} is out of range for a vocabulary of {vocab}"
                    ))
                })
        })
        .collect()
}
