//! `RotaryEmbedding(X, cos_cache, sin_cache [, position_ids])` (opset 23).
//!
//! `X` is `[B, H, S, D]`, or `[B, S, H·D]` with attribute `num_heads`. The
//! first `rotary_embedding_dim` (default: all `D`) features of every head are
//! rotated, the rest copied. Pairs are `(x[i], x[i + rd/2])`, or
//! `(x[2i], x[2i+1])` when `interleaved = 1`:
//! `(x1, x2) → (cos·x1 − sin·x2, sin·x1 + cos·x2)`.
//!
//! With `position_ids [B, S]` the caches are tables `[max_pos, rd/2]`
//! indexed by position; without, they are `[B, S, rd/2]` per token, and a
//! cache of batch 1 (or a 2-D `[S, rd/2]` one) serves every batch, as
//! PyTorch broadcasting does.

use crate::{Data, RuntimeError, Tensor};

use super::common::Ctx;

/// Runs RotaryEmbedding.
pub(super) fn rotary_embedding(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let xv = ctx.f32_input(0, "X")?;
    let cos = ctx.f32_input(1, "cos_cache")?;
    let sin = ctx.f32_input(2, "sin_cache")?;
    let (cos_t, sin_t) = (ctx.input(1)?, ctx.input(2)?);
    if cos_t.shape != sin_t.shape {
        return Err(ctx.shape_err(format!(
            "cos_cache {:?} and sin_cache {:?} differ",
            cos_t.shape, sin_t.shape
        )));
    }
    // (batch, seq, heads, head_dim) and how X is laid out.
    let (b, s, h, d, four_d) = match x.shape[..] {
        [b, h, s, d] => (b, s, h, d, true),
        [b, s, hidden] => {
            let h = ctx.attrs.int_or("num_heads", 0)?;
            let h = usize::try_from(h)
                .ok()
                .filter(|&h| h > 0 && hidden % h == 0)
                .ok_or_else(|| {
                    ctx.shape_err(format!(
                        "3-D X {:?} needs num_heads dividing {hidden}, got {h}",
                        x.shape
                    ))
                })?;
            (b, s, h, hidden / h, false)
        }
        _ => return Err(ctx.shape_err(format!("X must be 3-D or 4-D, got {:?}", x.shape))),
    };
    if xv.len() != ctx.numel(&x.shape)? {
        return Err(ctx.shape_err("X data does not match its shape"));
    }
    let rd = match ctx.attrs.int_or("rotary_embedding_dim", 0)? {
        0 => d,
        r => ctx.dim(r, "rotary_embedding_dim")?,
    };
    if rd > d || rd % 2 != 0 {
        return Err(ctx.shape_err(format!(
            "rotary_embedding_dim {rd} must be even and <= head size {d}"
        )));
    }
    let half = rd / 2;
    let interleaved = ctx.attrs.int_or("interleaved", 0)? != 0;
    let cache_row = cache_rows(ctx, cos_t, (b, s, half))?;
    let mut out = xv.to_vec();
    for bi in 0..b {
        for si in 0..s {
            let c = cache_row(bi, si)?;
            let (cr, sr) = (
                cos.get(c..c + half)
                    .ok_or_else(|| ctx.shape_err("cos_cache is too small"))?,
                sin.get(c..c + half)
                    .ok_or_else(|| ctx.shape_err("sin_cache is too small"))?,
            );
            for hi in 0..h {
                let base = if four_d {
                    ((bi * h + hi) * s + si) * d
                } else {
                    ((bi * s + si) * h + hi) * d
                };
                rotate(&mut out[base..base + rd], cr, sr, interleaved);
            }
        }
    }
    ctx.tensor(x.shape.clone(), Data::F32(out))
}

/// Rotates one head's first `rd` features in place.
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = cos.len();
    for i in 0..half {
        let (i1, i2) = if interleaved {
            (2 * i, 2 * i + 1)
        } else {
            (i, i + half)
        };
        let (x1, x2) = (x[i1], x[i2]);
        x[i1] = cos[i] * x1 - sin[i] * x2;
        x[i2] = sin[i] * x1 + cos[i] * x2;
    }
}

/// A function from (batch, token) to the element offset of its cache row.
type RowOf<'a> = Box<dyn Fn(usize, usize) -> Result<usize, RuntimeError> + 'a>;

/// Where each token's cos/sin row lives, checking the cache shape.
fn cache_rows<'a>(
    ctx: &'a Ctx,
    cache: &Tensor,
    (b, s, half): (usize, usize, usize),
) -> Result<RowOf<'a>, RuntimeError> {
    let cs = &cache.shape;
    if cs.last() != Some(&half) {
        return Err(ctx.shape_err(format!("cache {cs:?} must end in rotary_dim/2 = {half}")));
    }
    if ctx.opt_input(3).is_some() {
        let pos = ctx.ints_input(3, "position_ids")?;
        let ps = &ctx.input(3)?.shape;
        let batch_ok = ps.len() == 2 && (ps[0] == b || ps[0] == 1) && ps[1] == s;
        if cs.len() != 2 || !batch_ok {
            return Err(ctx.shape_err(format!(
                "with position_ids {ps:?} ([B, S] = [{b}, {s}]) the caches must be 2-D, got {cs:?}"
            )));
        }
        let max_pos = cs[0];
        let pb = ps[0];
        return Ok(Box::new(move |bi, si| {
            let p = pos.get((bi % pb) * s + si).copied().unwrap_or(-1);
            match usize::try_from(p) {
                Ok(p) if p < max_pos => Ok(p * half),
                _ => Err(ctx.shape_err(format!(
                    "position id {p} is outside the cache of {max_pos} rows"
                ))),
            }
        }));
    }
    let cb = match cs[..] {
        [cb, cseq, _] if cseq == s && (cb == b || cb == 1) => cb,
        [cseq, _] if cseq == s => 1,
        _ => {
            return Err(ctx.shape_err(format!(
                "without position_ids the caches must be [{b} or 1, {s}, {half}], got {cs:?}"
            )));
        }
    };
    Ok(Box::new(move |bi, si| Ok(((bi % cb) * s + si) * half)))
}
