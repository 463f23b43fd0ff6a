//! Backward (`vjp.OP`) ops on the device: Linear / LmHead / Lora (cuBLAS;
//! only the gradients `wrt` names, so a frozen weight's gradient is never
//! formed), RmsNorm, SwiGlu, Rope (the transposed rotation), same-shape
//! `onnx.Add` (the result gradient, shared) and CrossEntropy.
//!
//! `args` are the forward operands followed by the result gradient, as in
//! `crate::ops::grad`; `Ok(None)` means no GPU kernel.

use ligerc_ir::{Op, VjpSpec};

use super::GpuTrainError;
use super::forward::{Ctx, lora_rank, rope, weight_dims, xent_rows};
use super::gemm::{matmul, plain, trans};
use super::kernels::{double, int, long, ptr};
use super::value::{DevTensor, Elem};

/// Runs `vjp.OP` on `args`; one gradient per `spec.wrt` entry, or `None`.
pub(super) fn backward(
    cx: &Ctx,
    spec: &VjpSpec,
    args: &[&DevTensor],
) -> Result<Option<Vec<DevTensor>>, GpuTrainError> {
    let Some((&dy, fwd)) = args.split_last() else {
        return Err(cx.shape_err("a vjp node needs operands and a result gradient".into()));
    };
    let wrt = &spec.wrt;
    let grads = match (spec.forward.as_ref(), fwd) {
        (Op::Linear | Op::LmHead, [x, w, rest @ ..]) if rest.len() <= 1 => {
            let mut out = Vec::new();
            for &i in wrt {
                out.push(match i {
                    0 => dense_dx(cx, x, w, dy)?,
                    1 => dense_dw(cx, x, w, dy, 1.0)?,
                    _ => column_sums(cx, dy)?,
                });
            }
            out
        }
        (Op::Lora { alpha }, [x, w, a, b, rest @ ..]) if rest.len() <= 1 => {
            lora_vjp(cx, *alpha, (x, w, a, b), dy, wrt)?
        }
        (Op::RmsNorm { eps }, [x, w]) => {
            let eps = *eps as f32 as f64;
            let mut out = Vec::new();
            for &i in wrt {
                out.push(if i == 0 {
                    rms_dx(cx, eps, x, w, dy)?
                } else {
                    rms_dw(cx, eps, x, dy)?
                });
            }
            out
        }
        (Op::SwiGlu, [g, u]) => {
            let mut out = Vec::new();
            for &i in wrt {
                out.push(swiglu_grad(cx, i, g, u, dy)?);
            }
            out
        }
        (Op::Rope(r), [_x]) => {
            let dx = rope(cx, r, dy, -1)?;
            wrt.iter().map(|_| dx.clone()).collect()
        }
        (Op::Onnx(o), [a, b])
            if o.op_type == "Add" && a.shape == b.shape && dy.shape == a.shape =>
        {
            wrt.iter().map(|_| dy.clone()).collect()
        }
        (Op::LigerGate(g), [k]) if wrt.iter().all(|&w| w == 0) => {
            let dk = super::liger::gate_backward(cx, g, k, dy)?;
            wrt.iter().map(|_| dk.clone()).collect()
        }
        (Op::LigerAttention(l), fwd) => super::liger::attention_backward(cx, l, fwd, dy, wrt)?,
        (Op::Attention(a), fwd) => super::liger::softmax_attention_backward(cx, a, fwd, dy, wrt)?,
        (Op::CrossEntropy { ignore_index }, [logits, targets]) if wrt.iter().all(|&w| w == 0) => {
            let dx = xent_grad(cx, *ignore_index, logits, targets, dy)?;
            wrt.iter().map(|_| dx.clone()).collect()
        }
        _ => return Ok(None),
    };
    for (g, &w) in grads.iter().zip(wrt) {
        if fwd.get(w).is_none_or(|f| f.shape != g.shape) {
            return Err(cx.shape_err(format!(
                "internal: gradient of operand {w} has shape {:?}",
                g.shape
            )));
        }
    }
    Ok(Some(grads))
}

/// `dx = dy·W` (`dy [rows, out]`, `W [out, in]`).
fn dense_dx(
    cx: &Ctx,
    x: &DevTensor,
    w: &DevTensor,
    dy: &DevTensor,
) -> Result<DevTensor, GpuTrainError> {
    let (rows, in_f) = x.rows_cols();
    let (out_f, _) = weight_dims(cx, w, in_f)?;
    check_dy(cx, dy, rows, out_f)?;
    let dx = cx.empty(x.shape.clone(), Elem::F32)?;
    super::forward::times_weight(cx, (rows, in_f, out_f), dy, plain(w.ptr), w, dx.ptr)?;
    Ok(dx)
}

/// `dW = scale·dyᵀ·x` — only for a weight `wrt` names (a trainable one).
fn dense_dw(
    cx: &Ctx,
    x: &DevTensor,
    w: &DevTensor,
    dy: &DevTensor,
    scale: f32,
) -> Result<DevTensor, GpuTrainError> {
    let (rows, in_f) = x.rows_cols();
    let (out_f, _) = weight_dims(cx, w, in_f)?;
    check_dy(cx, dy, rows, out_f)?;
    let dw = cx.empty(w.shape.clone(), Elem::F32)?;
    matmul(
        cx.dev,
        (out_f, in_f, rows),
        scale,
        trans(dy.ptr),
        plain(x.ptr),
        0.0,
        dw.ptr,
    )?;
    Ok(dw)
}

fn check_dy(cx: &Ctx, dy: &DevTensor, rows: usize, cols: usize) -> Result<(), GpuTrainError> {
    cx.f32(dy, "result gradient")?;
    if dy.rows_cols() != (rows, cols) {
        return Err(cx.shape_err(format!(
            "result gradient {:?}, expected {rows} rows of {cols}",
            dy.shape
        )));
    }
    Ok(())
}

fn column_sums(cx: &Ctx, dy: &DevTensor) -> Result<DevTensor, GpuTrainError> {
    let (rows, cols) = dy.rows_cols();
    let out = cx.empty(vec![cols], Elem::F32)?;
    cx.k.elems(
        cx.dev,
        "tr_column_sums",
        cols,
        &[ptr(dy.ptr), ptr(out.ptr), int(rows), int(cols)],
    )?;
    Ok(out)
}

fn lora_vjp(
    cx: &Ctx,
    alpha: f64,
    (x, w, a, b): (&DevTensor, &DevTensor, &DevTensor, &DevTensor),
    dy: &DevTensor,
    wrt: &[usize],
) -> Result<Vec<DevTensor>, GpuTrainError> {
    let (rows, in_f) = x.rows_cols();
    let (out_f, _) = weight_dims(cx, w, in_f)?;
    check_dy(cx, dy, rows, out_f)?;
    let (rank, scale) = lora_rank(cx, alpha, a, b, (out_f, in_f))?;
    // dy·B [rows, rank], shared by dx and dA.
    let dy_b = if wrt.iter().any(|&i| i == 0 || i == 2) {
        let t = cx.empty(vec![rows, rank], Elem::F32)?;
        matmul(
            cx.dev,
            (rows, rank, out_f),
            1.0,
            plain(dy.ptr),
            plain(b.ptr),
            0.0,
            t.ptr,
        )?;
        Some(t)
    } else {
        None
    };
    let mut out = Vec::new();
    for &i in wrt {
        out.push(match (i, &dy_b) {
            (0, Some(dy_b)) => {
                let dx = dense_dx(cx, x, w, dy)?;
                if rank > 0 {
                    matmul(
                        cx.dev,
                        (rows, in_f, rank),
                        scale,
                        plain(dy_b.ptr),
                        plain(a.ptr),
                        1.0,
                        dx.ptr,
                    )?;
                }
                dx
            }
            (1, _) => dense_dw(cx, x, w, dy, 1.0)?,
            (2, Some(dy_b)) => {
                let da = cx.empty(a.shape.clone(), Elem::F32)?;
                matmul(
                    cx.dev,
                    (rank, in_f, rows),
                    scale,
                    trans(dy_b.ptr),
                    plain(x.ptr),
                    0.0,
                    da.ptr,
                )?;
                da
            }
            (3, _) => {
                let down = cx.empty(vec![rows, rank], Elem::F32)?;
                matmul(
                    cx.dev,
                    (rows, rank, in_f),
                    1.0,
                    plain(x.ptr),
                    trans(a.ptr),
                    0.0,
                    down.ptr,
                )?;
                let db = cx.empty(b.shape.clone(), Elem::F32)?;
                matmul(
                    cx.dev,
                    (out_f, rank, rows),
                    scale,
                    trans(dy.ptr),
                    plain(down.ptr),
                    0.0,
                    db.ptr,
                )?;
                db
            }
            _ => column_sums(cx, dy)?,
        });
    }
    Ok(out)
}

fn rms_dx(
    cx: &Ctx,
    eps: f64,
    x: &DevTensor,
    w: &DevTensor,
    dy: &DevTensor,
) -> Result<DevTensor, GpuTrainError> {
    let (rows, dim) = x.rows_cols();
    check_dy(cx, dy, rows, dim)?;
    let dx = cx.empty(x.shape.clone(), Elem::F32)?;
    cx.k.rows(
        cx.dev,
        "tr_rmsnorm_dx",
        rows,
        &[
            ptr(x.ptr),
            ptr(w.ptr),
            ptr(dy.ptr),
            ptr(dx.ptr),
            int(rows),
            int(dim),
            double(eps),
        ],
    )?;
    Ok(dx)
}

fn rms_dw(cx: &Ctx, eps: f64, x: &DevTensor, dy: &DevTensor) -> Result<DevTensor, GpuTrainError> {
    let (rows, dim) = x.rows_cols();
    check_dy(cx, dy, rows, dim)?;
    let inv = cx.empty(vec![rows], Elem::I64)?;
    cx.k.rows(
        cx.dev,
        "tr_row_inv_rms",
        rows,
        &[ptr(x.ptr), ptr(inv.ptr), int(rows), int(dim), double(eps)],
    )?;
    let dw = cx.empty(vec![dim], Elem::F32)?;
    cx.k.elems(
        cx.dev,
        "tr_rmsnorm_dw",
        dim,
        &[
            ptr(x.ptr),
            ptr(dy.ptr),
            ptr(inv.ptr),
            ptr(dw.ptr),
            int(rows),
            int(dim),
        ],
    )?;
    Ok(dw)
}

fn swiglu_grad(
    cx: &Ctx,
    which: usize,
    g: &DevTensor,
    u: &DevTensor,
    dy: &DevTensor,
) -> Result<DevTensor, GpuTrainError> {
    if g.shape != u.shape || dy.shape != g.shape {
        return Err(cx.shape_err(format!(
            "SwiGlu gate {:?}, up {:?}, gradient {:?}",
            g.shape, u.shape, dy.shape
        )));
    }
    let out = cx.empty(g.shape.clone(), Elem::F32)?;
    let n = out.numel();
    if which == 0 {
        cx.k.elems(
            cx.dev,
            "tr_swiglu_dg",
            n,
            &[
                ptr(g.ptr),
                ptr(u.ptr),
                ptr(dy.ptr),
                ptr(out.ptr),
                long(n as i64),
            ],
        )?;
    } else {
        cx.k.elems(
            cx.dev,
            "tr_swiglu_du",
            n,
            &[ptr(g.ptr), ptr(dy.ptr), ptr(out.ptr), long(n as i64)],
        )?;
    }
    Ok(out)
}

fn xent_grad(
    cx: &Ctx,
    ignore: i64,
    logits: &DevTensor,
    targets: &DevTensor,
    dy: &DevTensor,
) -> Result<DevTensor, GpuTrainError> {
    if dy.numel() != 1 {
        return Err(cx.shape_err(format!(
            "CrossEntropy loss gradient must be a scalar, is {:?}",
            dy.shape
        )));
    }
    let (lse, _loss) = xent_rows(cx, ignore, logits, targets)?;
    let (rows, vocab) = logits.rows_cols();
    let dx = cx.empty(logits.shape.clone(), Elem::F32)?;
    cx.k.rows(
        cx.dev,
        "tr_xent_grad",
        rows,
        &[
            ptr(logits.ptr),
            ptr(targets.ptr),
            ptr(lse.ptr),
            ptr(dy.ptr),
            ptr(dx.ptr),
            int(rows),
            int(vocab),
            long(ignore),
        ],
    )?;
    Ok(dx)
}
