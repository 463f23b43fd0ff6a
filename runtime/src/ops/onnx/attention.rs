//! `Attention(Q, K, V [, attn_mask [, past_key, past_value]])` (opset 23).
//!
//! Inputs are 4-D `[B, H, S, D]`, or 3-D `[B, S, H·D]` with attributes
//! `q_num_heads` / `kv_num_heads`. Past keys/values (`[B, Hkv, P, D]`) are
//! prepended to K/V; the concatenations are results 1 and 2 (`present_*`,
//! always 4-D). Query head `h` uses KV head `h / (Hq / Hkv)` (GQA/MQA).
//!
//! Per head: `scores = scale · Q·Kᵀ` (`scale` defaults to `1/√D`), then
//! `softcap · tanh(scores / softcap)` when `softcap > 0`, plus the bias:
//! `-inf` above the causal frontier `j > i + P` when `is_causal`, plus the
//! mask (bool: `-inf` where false; float: added). A mask shorter than the
//! total key length is padded with masked positions; a mask with no elements
//! stands for an omitted one. Softmax over keys; a row whose bias is all
//! `-inf` gives zeros. `Y = P·V`. Result 3 is the `qk_matmul_output` chosen
//! by `qk_matmul_output_mode` (0 scaled QKᵀ, 1 after softcap, 2 after the
//! bias, 3 after softmax).

use std::borrow::Cow;

use rayon::prelude::*;

use crate::{Data, RuntimeError, Tensor};

use super::common::{Ctx, contiguous_strides};
use super::matmul::sgemm;
use super::softmax::softmax_row;
use super::strided::gather_strided;

/// A `[B, H, S, D]` contiguous view of Q, K or V.
struct Heads<'a> {
    data: Cow<'a, [f32]>,
    b: usize,
    h: usize,
    s: usize,
    d: usize,
}

impl Heads<'_> {
    /// The `[S, D]` matrix of batch `b`, head `h`.
    fn mat(&self, b: usize, h: usize) -> &[f32] {
        let n = self.s * self.d;
        let start = (b * self.h + h) * n;
        self.data.get(start..start + n).unwrap_or(&[])
    }
}

/// Operand `i` as heads: 4-D as is, 3-D split into `heads` and transposed.
fn heads<'a>(
    ctx: &Ctx<'a>,
    i: usize,
    what: &str,
    heads_attr: &str,
) -> Result<Heads<'a>, RuntimeError> {
    let t = ctx.input(i)?;
    let v = ctx.f32_input(i, what)?;
    if v.len() != ctx.numel(&t.shape)? {
        return Err(ctx.shape_err(format!("{what} data does not match its shape")));
    }
    match t.shape[..] {
        [b, h, s, d] => Ok(Heads {
            data: Cow::Borrowed(v),
            b,
            h,
            s,
            d,
        }),
        [b, s, hidden] => {
            let h = ctx.attrs.int_or(heads_attr, 0)?;
            let h = usize::try_from(h)
                .ok()
                .filter(|&h| h > 0 && hidden % h == 0)
                .ok_or_else(|| {
                    ctx.shape_err(format!(
                        "3-D {what} {:?} needs {heads_attr} dividing {hidden}, got {h}",
                        t.shape
                    ))
                })?;
            let d = hidden / h;
            let own = contiguous_strides(&[b, s, h, d]);
            let strides = [own[0], own[2], own[1], own[3]].map(|x| x as isize);
            let data = gather_strided(v, &[b, h, s, d], &strides, 0)?;
            Ok(Heads {
                data: Cow::Owned(data),
                b,
                h,
                s,
                d,
            })
        }
        _ => Err(ctx.shape_err(format!("{what} must be 3-D or 4-D, got {:?}", t.shape))),
    }
}

/// `past` then `new` along the sequence axis of `[B, H, S, D]` tensors.
fn concat_seq<'a>(past: Option<Heads<'a>>, new: Heads<'a>) -> Heads<'a> {
    let Some(past) = past else { return new };
    let (b, h, d) = (new.b, new.h, new.d);
    let s = past.s + new.s;
    let mut data = Vec::with_capacity(b * h * s * d);
    for bi in 0..b {
        for hi in 0..h {
            data.extend_from_slice(past.mat(bi, hi));
            data.extend_from_slice(new.mat(bi, hi));
        }
    }
    Heads {
        data: Cow::Owned(data),
        b,
        h,
        s,
        d,
    }
}

/// The attention mask, read with broadcast strides over `[B, Hq, Sq, ·]`.
struct Mask<'a> {
    data: &'a Data,
    /// Strides of batch, head and query (0 where broadcast).
    strides: [usize; 3],
    /// Keys the mask covers; later keys are masked (padding).
    len: usize,
}

impl Mask<'_> {
    /// The additive bias of key `j` for query `i` of head `h`, batch `b`.
    fn bias(&self, b: usize, h: usize, i: usize, j: usize) -> f32 {
        if j >= self.len {
            return f32::NEG_INFINITY;
        }
        let at = b * self.strides[0] + h * self.strides[1] + i * self.strides[2] + j;
        match self.data {
            Data::F32(v) => v.get(at).copied().unwrap_or(f32::NEG_INFINITY),
            Data::Bool(v) => match v.get(at) {
                Some(true) => 0.0,
                _ => f32::NEG_INFINITY,
            },
            Data::I64(_) => f32::NEG_INFINITY,
        }
    }
}

fn mask<'a>(
    ctx: &Ctx<'a>,
    (b, hq, sq, total): (usize, usize, usize, usize),
) -> Result<Option<Mask<'a>>, RuntimeError> {
    let Some(m) = ctx.opt_input(3) else {
        return Ok(None);
    };
    if m.numel() == 0 {
        return Ok(None);
    }
    if matches!(m.data, Data::I64(_)) {
        return Err(ctx.type_err("attn_mask must be bool or float, got an integer tensor"));
    }
    if m.shape.len() > 4 || m.shape.is_empty() || m.numel() != ctx.numel(&m.shape)? {
        return Err(ctx.shape_err(format!("attn_mask {:?} must have rank 1 to 4", m.shape)));
    }
    let mut ms = vec![1usize; 4 - m.shape.len()];
    ms.extend_from_slice(&m.shape);
    let fits = [b, hq, sq]
        .iter()
        .zip(&ms)
        .all(|(&want, &got)| got == 1 || got == want);
    if !fits || ms[3] > total {
        return Err(ctx.shape_err(format!(
            "attn_mask {:?} does not broadcast to [{b}, {hq}, {sq}, {total}]",
            m.shape
        )));
    }
    let own = contiguous_strides(&ms);
    let strides = [0, 1, 2].map(|d| if ms[d] == 1 { 0 } else { own[d] });
    Ok(Some(Mask {
        data: &m.data,
        strides,
        len: ms[3],
    }))
}

/// Runs Attention; returns as many results as the node declares (1 to 4).
pub(super) fn attention(ctx: &Ctx) -> Result<Vec<Tensor>, RuntimeError> {
    let rank = ctx.input(0)?.shape.len();
    if (1..3).any(|i| ctx.inputs.get(i).map(|t| t.shape.len()) != Some(rank)) {
        return Err(ctx.shape_err("Q, K and V must have the same rank"));
    }
    let q = heads(ctx, 0, "Q", "q_num_heads")?;
    let k = heads(ctx, 1, "K", "kv_num_heads")?;
    let v = heads(ctx, 2, "V", "kv_num_heads")?;
    let (past_k, past_v) = match (ctx.opt_input(4), ctx.opt_input(5)) {
        (None, None) => (None, None),
        (Some(pk), Some(pv)) if pk.shape.len() == 4 && pv.shape.len() == 4 => (
            Some(heads(ctx, 4, "past_key", "")?),
            Some(heads(ctx, 5, "past_value", "")?),
        ),
        _ => return Err(ctx.shape_err("past_key and past_value must both be given, 4-D")),
    };
    let past_len = past_k.as_ref().map_or(0, |p| p.s);
    let same = |a: &Heads, b: &Heads, seq: bool| a.b == b.b && a.h == b.h && (!seq || a.s == b.s);
    let shapes_ok = q.b == k.b
        && same(&k, &v, true)
        && q.d == k.d
        && k.h > 0
        && q.h % k.h == 0
        && past_k
            .as_ref()
            .is_none_or(|p| same(p, &k, false) && p.d == k.d)
        && past_v
            .as_ref()
            .is_none_or(|p| same(p, &v, false) && p.d == v.d && p.s == past_len);
    if !shapes_ok {
        return Err(ctx.shape_err(format!(
            "incompatible shapes: Q [{}, {}, {}, {}], K [{}, {}, {}, {}], V [{}, {}, {}, {}], past length {past_len}",
            q.b, q.h, q.s, q.d, k.b, k.h, k.s, k.d, v.b, v.h, v.s, v.d
        )));
    }
    let k = concat_seq(past_k, k);
    let v = concat_seq(past_v, v);
    let (b, hq, sq, total, dv) = (q.b, q.h, q.s, k.s, v.d);
    let mask = mask(ctx, (b, hq, sq, total))?;
    let scale = match ctx.attrs.float_or("scale", 0.0)? {
        s if s != 0.0 => s as f32,
        _ => 1.0 / (q.d as f32).sqrt(),
    };
    let params = Params {
        causal: ctx.attrs.int_or("is_causal", 0)? != 0,
        scale,
        softcap: ctx.attrs.float_or("softcap", 0.0)? as f32,
        mode: ctx.attrs.int_or("qk_matmul_output_mode", 0)?,
        want_qk: ctx.out_types.len() >= 4,
        past_len,
    };
    if !(0..=3).contains(&params.mode) {
        return Err(ctx.unsupported(format!("qk_matmul_output_mode {}", params.mode)));
    }
    let reps = hq / k.h;
    let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..b * hq)
        .into_par_iter()
        .map(|bh| {
            let (bi, hi) = (bh / hq, bh % hq);
            let kv = hi / reps;
            head(
                &params,
                (q.mat(bi, hi), k.mat(bi, kv), v.mat(bi, kv)),
                (sq, total, q.d, dv),
                |i, j| {
                    let causal = params.causal && j > i + params.past_len;
                    let m = mask.as_ref().map_or(0.0, |m| m.bias(bi, hi, i, j));
                    if causal { f32::NEG_INFINITY } else { m }
                },
            )
        })
        .collect::<Result<_, _>>()?;
    let mut y = Vec::with_capacity(b * hq * sq * dv);
    let mut qk = Vec::new();
    for (yh, qh) in per_head {
        y.extend_from_slice(&yh);
        qk.extend_from_slice(&qh);
    }
    let y = if rank == 3 {
        let own = contiguous_strides(&[b, hq, sq, dv]);
        let strides = [own[0], own[2], own[1], own[3]].map(|x| x as isize);
        let t = gather_strided(&y, &[b, sq, hq, dv], &strides, 0)?;
        ctx.tensor(vec![b, sq, hq * dv], Data::F32(t))?
    } else {
        ctx.tensor(vec![b, hq, sq, dv], Data::F32(y))?
    };
    let mut results = vec![y];
    let wanted = ctx.out_types.len().clamp(1, 4);
    if wanted >= 2 {
        results.push(ctx.tensor(vec![b, k.h, total, k.d], Data::F32(k.data.into_owned()))?);
    }
    if wanted >= 3 {
        results.push(ctx.tensor(vec![b, v.h, total, dv], Data::F32(v.data.into_owned()))?);
    }
    if wanted >= 4 {
        results.push(ctx.tensor(vec![b, hq, sq, total], Data::F32(qk))?);
    }
    Ok(results)
}

/// Attributes that shape the per-head computation.
struct Params {
    causal: bool,
    scale: f32,
    softcap: f32,
    mode: i64,
    want_qk: bool,
    past_len: usize,
}

/// One head: returns `Y [sq, dv]` and, if wanted, `qk_matmul_output [sq, total]`.
fn head(
    p: &Params,
    (q, k, v): (&[f32], &[f32], &[f32]),
    (sq, total, d, dv): (usize, usize, usize, usize),
    bias: impl Fn(usize, usize) -> f32,
) -> Result<(Vec<f32>, Vec<f32>), RuntimeError> {
    let mut scores = vec![0f32; sq * total];
    // scores = scale · Q [sq, d] · Kᵀ (K is [total, d]: row stride 1, column stride d).
    sgemm(
        (sq, d, total),
        p.scale,
        q,
        (d, 1),
        k,
        (1, d),
        0.0,
        &mut scores,
    )?;
    let mut qk = Vec::new();
    let capture = |stage: i64, s: &[f32], qk: &mut Vec<f32>| {
        if p.want_qk && p.mode == stage {
            qk.extend_from_slice(s);
        }
    };
    capture(0, &scores, &mut qk);
    if p.softcap > 0.0 {
        for s in scores.iter_mut() {
            *s = p.softcap * (*s / p.softcap).tanh();
        }
    }
    capture(1, &scores, &mut qk);
    let mut masked_rows = vec![false; sq];
    if total > 0 {
        for (i, row) in scores.chunks_mut(total).enumerate() {
            let mut all_masked = true;
            for (j, s) in row.iter_mut().enumerate() {
                let b = bias(i, j);
                all_masked &= b == f32::NEG_INFINITY;
                *s += b;
            }
            masked_rows[i] = all_masked;
        }
    }
    capture(2, &scores, &mut qk);
    if total > 0 {
        for (row, &masked) in scores.chunks_mut(total).zip(&masked_rows) {
            if masked {
                row.fill(0.0);
            } else {
                softmax_row(row);
            }
        }
    }
    capture(3, &scores, &mut qk);
    let mut y = vec![0f32; sq * dv];
    sgemm(
        (sq, total, dv),
        1.0,
        &scores,
        (total, 1),
        v,
        (dv, 1),
        0.0,
        &mut y,
    )?;
    Ok((y, qk))
}
