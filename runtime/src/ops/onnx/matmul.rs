//! MatMul (numpy semantics: batch dims broadcast, 1-D operands promoted and
//! their unit dim dropped again) and Gemm.
//!
//! Float products go through `matrixmultiply::sgemm`, one call per batch,
//! batches spread over rayon when the work is large. When the right operand
//! has no batch (activations × weight, the common case) the left operand's
//! batch is folded into its rows: one large GEMM instead of many small ones.
//! Integer products use a plain triple loop.

use rayon::prelude::*;

use crate::{Data, RuntimeError, Tensor};

use super::broadcast::{broadcast_pair, broadcast_shapes};
use super::common::{Ctx, product};
use super::strided::{broadcast_strides, broadcast_to, for_each_offset};

/// Multiply-adds above which batches run in parallel.
const PAR_FLOPS: usize = 1 << 20;

/// `c ← alpha · a · b + beta · c` for an `m × k` by `k × n` product; `a` and
/// `b` are read through (row, column) strides, `c` is row-major `m × n`.
/// Every stride-reachable element is bounds-checked before the call.
#[allow(clippy::too_many_arguments)]
pub(super) fn sgemm(
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
) -> Result<(), RuntimeError> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let Some(c) = c.get_mut(..m * n) else {
        return Err(RuntimeError::Shape(
            "internal: gemm output too small".into(),
        ));
    };
    if k == 0 {
        for v in c.iter_mut() {
            *v = if beta == 0.0 { 0.0 } else { *v * beta };
        }
        return Ok(());
    }
    let last = |r: usize, rs: usize, cc: usize, cs: usize| {
        (r - 1)
            .checked_mul(rs)?
            .checked_add((cc - 1).checked_mul(cs)?)
    };
    let fits = |len: usize, end: Option<usize>| end.is_some_and(|e| e < len);
    if !fits(a.len(), last(m, rsa, k, csa)) || !fits(b.len(), last(k, rsb, n, csb)) {
        return Err(RuntimeError::Shape(
            "internal: gemm operand too small".into(),
        ));
    }
    let cast = |v: usize| {
        isize::try_from(v).map_err(|_| RuntimeError::Shape("gemm stride overflows".into()))
    };
    let (rsa, csa, rsb, csb, rsc) = (cast(rsa)?, cast(csa)?, cast(rsb)?, cast(csb)?, cast(n)?);
    // SAFETY: the last element reachable through each operand's strides was
    // checked to lie inside its slice above, `c` holds exactly `m × n`
    // row-major elements (row stride `n`, column stride 1, no aliasing), and
    // the shared borrows of `a`/`b` cannot alias the exclusive borrow of `c`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            rsc,
            1,
        );
    }
    Ok(())
}

/// How a (possibly batched) MatMul maps onto 2-D products.
struct Plan {
    m: usize,
    k: usize,
    n: usize,
    /// Result shape, with the unit dims of 1-D operands dropped.
    out_shape: Vec<usize>,
    /// Per output batch: element offsets of its `a` and `b` matrices.
    offsets: Vec<(usize, usize)>,
}

fn plan(ctx: &Ctx, sa: &[usize], sb: &[usize]) -> Result<Plan, RuntimeError> {
    if sa.is_empty() || sb.is_empty() {
        return Err(ctx.shape_err(format!(
            "operands must have rank >= 1, got {sa:?} and {sb:?}"
        )));
    }
    let a2: Vec<usize> = if sa.len() == 1 {
        vec![1, sa[0]]
    } else {
        sa.to_vec()
    };
    let b2: Vec<usize> = if sb.len() == 1 {
        vec![sb[0], 1]
    } else {
        sb.to_vec()
    };
    let (ba, mk) = a2.split_at(a2.len() - 2);
    let (bb, kn) = b2.split_at(b2.len() - 2);
    let (m, k, n) = (mk[0], mk[1], kn[1]);
    if kn[0] != k {
        return Err(ctx.shape_err(format!("inner dims differ: {sa:?} × {sb:?}")));
    }
    let batch = broadcast_shapes(ctx.op, &[ba, bb])
        .map_err(|_| ctx.shape_err(format!("batch dims of {sa:?} and {sb:?} do not broadcast")))?;
    let mut out_shape = batch.clone();
    if sa.len() > 1 {
        out_shape.push(m);
    }
    if sb.len() > 1 {
        out_shape.push(n);
    }
    ctx.numel(&out_shape)?;
    let (mat_a, mat_b) = (m * k, k * n);
    let mut offsets = Vec::with_capacity(product(&batch));
    let (st_a, st_b) = (broadcast_strides(ba, &batch), broadcast_strides(bb, &batch));
    for_each_offset(&batch, [&st_a, &st_b], [0, 0], |[oa, ob]| {
        offsets.push((oa as usize * mat_a, ob as usize * mat_b));
        Ok(())
    })?;
    Ok(Plan {
        m,
        k,
        n,
        out_shape,
        offsets,
    })
}

/// `MatMul(a, b)`.
pub(super) fn matmul(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    let p = plan(ctx, &a.shape, &b.shape)?;
    let data = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => Data::F32(matmul_f32(&p, x, y)?),
        (Data::I64(x), Data::I64(y)) => Data::I64(matmul_i64(&p, x, y)?),
        _ => {
            return Err(ctx.type_err(format!(
                "expected two float or two integer tensors, got {} and {}",
                a.kind(),
                b.kind()
            )));
        }
    };
    ctx.tensor(p.out_shape, data)
}

fn matmul_f32(p: &Plan, a: &[f32], b: &[f32]) -> Result<Vec<f32>, RuntimeError> {
    let (m, k, n) = (p.m, p.k, p.n);
    let batches = p.offsets.len();
    let mut out = vec![0f32; batches * m * n];
    if out.is_empty() {
        return Ok(out);
    }
    // Right operand shared by every batch, left batches contiguous: one GEMM.
    let shared_b = p.offsets.iter().all(|&(_, ob)| ob == 0);
    let contiguous_a = p
        .offsets
        .iter()
        .enumerate()
        .all(|(i, &(oa, _))| oa == i * m * k);
    if shared_b && contiguous_a {
        return sgemm(
            (batches * m, k, n),
            1.0,
            a,
            (k, 1),
            b,
            (n, 1),
            0.0,
            &mut out,
        )
        .map(|()| out);
    }
    let one = |(c, &(oa, ob)): (&mut [f32], &(usize, usize))| {
        let (ra, rb) = (a.get(oa..).unwrap_or(&[]), b.get(ob..).unwrap_or(&[]));
        sgemm((m, k, n), 1.0, ra, (k, 1), rb, (n, 1), 0.0, c)
    };
    if batches > 1 && batches * m * n * k >= PAR_FLOPS {
        out.par_chunks_mut(m * n)
            .zip(p.offsets.par_iter())
            .try_for_each(one)?;
    } else {
        out.chunks_mut(m * n)
            .zip(p.offsets.iter())
            .try_for_each(one)?;
    }
    Ok(out)
}

fn matmul_i64(p: &Plan, a: &[i64], b: &[i64]) -> Result<Vec<i64>, RuntimeError> {
    let (m, k, n) = (p.m, p.k, p.n);
    let mut out = vec![0i64; p.offsets.len() * m * n];
    let oob = || RuntimeError::Shape("MatMul: operand data does not match its shape".into());
    if m * n == 0 {
        return Ok(out);
    }
    for (c, &(oa, ob)) in out.chunks_mut(m * n).zip(&p.offsets) {
        for i in 0..m {
            for l in 0..k {
                let x = *a.get(oa + i * k + l).ok_or_else(oob)?;
                let rb = b.get(ob + l * n..ob + (l + 1) * n).ok_or_else(oob)?;
                for (cv, &y) in c[i * n..(i + 1) * n].iter_mut().zip(rb) {
                    *cv = cv.wrapping_add(x.wrapping_mul(y));
                }
            }
        }
    }
    Ok(out)
}

/// `Gemm(a, b [, c])`: `alpha · a' · b' + beta · c`, with `a' = aᵀ` when
/// `transA` and `b' = bᵀ` when `transB`; `c` broadcasts to the result.
pub(super) fn gemm(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let a = ctx.f32_input(0, "A")?;
    let b = ctx.f32_input(1, "B")?;
    let (sa, sb) = (&ctx.input(0)?.shape, &ctx.input(1)?.shape);
    if sa.len() != 2 || sb.len() != 2 {
        return Err(ctx.shape_err(format!("A and B must be 2-D, got {sa:?} and {sb:?}")));
    }
    let trans_a = ctx.attrs.int_or("transA", 0)? != 0;
    let trans_b = ctx.attrs.int_or("transB", 0)? != 0;
    let alpha = ctx.attrs.float_or("alpha", 1.0)? as f32;
    let beta = ctx.attrs.float_or("beta", 1.0)? as f32;
    let (m, k) = if trans_a {
        (sa[1], sa[0])
    } else {
        (sa[0], sa[1])
    };
    let (kb, n) = if trans_b {
        (sb[1], sb[0])
    } else {
        (sb[0], sb[1])
    };
    if k != kb {
        return Err(ctx.shape_err(format!(
            "inner dims differ: A {sa:?} (transA={trans_a}) × B {sb:?} (transB={trans_b})"
        )));
    }
    let out_shape = vec![m, n];
    let (mut out, beta) = match ctx.opt_input(2) {
        Some(c) => {
            let cv = ctx.f32_input(2, "C")?;
            if broadcast_pair(&c.shape, &out_shape).as_deref() != Some(&out_shape[..]) {
                return Err(ctx.shape_err(format!(
                    "C {:?} does not broadcast to {out_shape:?}",
                    c.shape
                )));
            }
            (broadcast_to(cv, &c.shape, &out_shape)?, beta)
        }
        None => (vec![0f32; ctx.numel(&out_shape)?], 0.0),
    };
    let st_a = if trans_a { (1, m) } else { (k, 1) };
    let st_b = if trans_b { (1, k) } else { (n, 1) };
    sgemm((m, k, n), alpha, a, st_a, b, st_b, beta, &mut out)?;
    ctx.tensor(out_shape, Data::F32(out))
}
