//! Forward ops on the device: Embedding, Linear / LmHead / Lora (cuBLAS),
//! RmsNorm, Rope, SwiGlu, same-shape `onnx.Add`, CrossEntropy, and (through
//! `liger.rs`) LigerGate and LigerAttention.
//!
//! Each function returns `Ok(None)` when the op (or this configuration of it)
//! has no GPU kernel; the graph walk then refuses the node or runs it on the
//! host.

use std::cell::RefCell;
use std::collections::HashMap;

use ligerc_codegen::cuda::kernels::liger_train::TrainMath;
use ligerc_ir::{Op, RopeSpec};

use super::super::Device;
use super::GpuTrainError;
use super::gemm::{Operand, matmul, plain, trans};
use super::kernels::{Kernels, float, int, long, ptr};
use super::value::{DevTensor, Elem, Pool};

/// What an op needs to run: the device, the kernels, the buffer pool and the
/// RoPE tables (by spec and length).
pub(super) struct Ctx<'a> {
    /// The device.
    pub(super) dev: &'a Device,
    /// The loaded kernels.
    pub(super) k: &'a Kernels,
    /// The buffer pool.
    pub(super) pool: &'a Pool,
    /// `(cos, sin)` tables `[seq, head_dim/2]`, by `(spec, seq)`.
    pub(super) rope: &'a RefCell<HashMap<String, (DevTensor, DevTensor)>>,
    /// The Liger training kernels loaded so far.
    pub(super) liger: &'a super::liger::LigerCache,
    /// The node being run, for errors.
    pub(super) node: String,
    /// How the LigerAttention kernels multiply (bf16 tensor cores with bf16
    /// frozen weights).
    pub(super) math: TrainMath,
    /// What LigerAttention forwards saved for their backward (kept only when
    /// the graph has backward nodes: `keep_saved`).
    pub(super) saved: super::liger::SavedMap,
    /// Whether forwards keep their saved buffers for a backward (the training
    /// graph) or drop them (evaluation).
    pub(super) keep_saved: bool,
    /// The name under which the running node's forward keeps what it saves,
    /// or under which its backward finds it (`GpuGraph::saved_as`); `None`:
    /// nothing is kept.
    pub(super) saved_as: Option<String>,
}

impl Ctx<'_> {
    /// A fresh tensor.
    pub(super) fn empty(&self, shape: Vec<usize>, elem: Elem) -> Result<DevTensor, GpuTrainError> {
        DevTensor::empty(self.dev, self.pool, shape, elem)
    }

    /// A shape error naming the node.
    pub(super) fn shape_err(&self, problem: String) -> GpuTrainError {
        GpuTrainError::Shape {
            node: self.node.clone(),
            problem,
        }
    }

    /// Checks that `t` is f32.
    pub(super) fn f32(&self, t: &DevTensor, what: &str) -> Result<(), GpuTrainError> {
        if t.elem != Elem::F32 {
            return Err(self.shape_err(format!("{what} must be f32")));
        }
        Ok(())
    }

    /// The `(cos, sin)` tables of `spec` for `seq` tokens from position 0,
    /// computed as the CPU does (f32 `inv_freq`, f32 position, f32 product,
    /// then `cos`/`sin`) and uploaded once.
    pub(super) fn rope_tables(
        &self,
        spec: &RopeSpec,
        seq: usize,
    ) -> Result<(DevTensor, DevTensor), GpuTrainError> {
        let key = format!("{spec:?}/{seq}");
        if let Some(t) = self.rope.borrow().get(&key) {
            return Ok(t.clone());
        }
        let half = spec.head_dim / 2;
        let inv: Vec<f32> = spec.inv_freq().into_iter().map(|f| f as f32).collect();
        let (mut cos, mut sin) = (vec![0.0f32; seq * half], vec![0.0f32; seq * half]);
        for t in 0..seq {
            let pos = t as f32;
            for (i, &f) in inv.iter().enumerate().take(half) {
                let angle = pos * f;
                cos[t * half + i] = angle.cos();
                sin[t * half + i] = angle.sin();
            }
        }
        let up = |v: &[f32]| -> Result<DevTensor, GpuTrainError> {
            let t = self.empty(vec![seq, half], Elem::F32)?;
            if let Some(b) = &t.hold {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                self.dev.upload_async(device_buffer(b)?, 0, &bytes)?;
            }
            Ok(t)
        };
        let tables = (up(&cos)?, up(&sin)?);
        self.dev.sync()?;
        self.rope.borrow_mut().insert(key, tables.clone());
        Ok(tables)
    }
}

/// The buffer behind a pooled block (for uploads).
pub(super) fn device_buffer(
    b: &super::value::Block,
) -> Result<&super::super::DeviceBuffer, GpuTrainError> {
    b.buffer().ok_or_else(|| GpuTrainError::Shape {
        node: "upload".into(),
        problem: "internal: a released block".into(),
    })
}

/// Runs forward op `op` on `args`; `None` when it has no GPU kernel.
pub(super) fn forward(
    cx: &Ctx,
    op: &Op,
    args: &[&DevTensor],
) -> Result<Option<Vec<DevTensor>>, GpuTrainError> {
    Ok(Some(match (op, args) {
        (Op::Embedding, [table, ids]) => vec![embedding(cx, table, ids)?],
        (Op::Linear, [x, w]) | (Op::LmHead, [x, w]) => vec![dense(cx, x, w, None)?],
        (Op::Linear, [x, w, b]) => vec![dense(cx, x, w, Some(b))?],
        (Op::Lora { alpha }, [x, w, a, b, rest @ ..]) if rest.len() <= 1 => {
            vec![lora(cx, *alpha, x, w, a, b, rest.first().copied())?]
        }
        (Op::RmsNorm { eps }, [x, w]) => vec![rms_norm(cx, *eps, x, w)?],
        (Op::Rope(spec), [x]) => vec![rope(cx, spec, x, 1)?],
        (Op::SwiGlu, [g, u]) => vec![swiglu(cx, g, u)?],
        (Op::Onnx(o), [a, b]) if o.op_type == "Add" && a.shape == b.shape => {
            cx.f32(a, "Add operand")?;
            cx.f32(b, "Add operand")?;
            let y = cx.empty(a.shape.clone(), Elem::F32)?;
            let n = y.numel();
            cx.k.elems(
                cx.dev,
                "tr_add",
                n,
                &[ptr(a.ptr), ptr(b.ptr), ptr(y.ptr), long(n as i64)],
            )?;
            vec![y]
        }
        (Op::CrossEntropy { ignore_index }, [logits, targets]) => {
            cross_entropy(cx, *ignore_index, logits, targets)?
        }
        (Op::LigerGate(g), [k]) => vec![super::liger::gate_forward(cx, g, k)?],
        (Op::LigerAttention(l), args) => vec![super::liger::attention_forward(cx, l, args)?],
        (Op::Attention(a), args) => {
            vec![super::liger::softmax_attention_forward(cx, a, args)?]
        }
        _ => return Ok(None),
    }))
}

fn embedding(cx: &Ctx, table: &DevTensor, ids: &DevTensor) -> Result<DevTensor, GpuTrainError> {
    cx.f32(table, "embedding table")?;
    let [vocab, dim] = table.shape[..] else {
        return Err(cx.shape_err(format!("embedding table is {:?}", table.shape)));
    };
    if ids.elem != Elem::I64 {
        return Err(cx.shape_err("token ids must be integers".into()));
    }
    let mut shape = ids.shape.clone();
    shape.push(dim);
    let y = cx.empty(shape, Elem::F32)?;
    let rows = ids.numel();
    cx.k.rows(
        cx.dev,
        "tr_embedding",
        rows,
        &[
            ptr(ids.ptr),
            ptr(table.ptr),
            ptr(y.ptr),
            int(rows),
            int(dim),
            long(vocab as i64),
        ],
    )?;
    Ok(y)
}

/// `[out, in]` of a weight whose input width must be `in_f`.
pub(super) fn weight_dims(
    cx: &Ctx,
    w: &DevTensor,
    in_f: usize,
) -> Result<(usize, usize), GpuTrainError> {
    if !matches!(w.elem, Elem::F32 | Elem::BF16) {
        return Err(cx.shape_err(format!("weight is {:?}, expected f32 or bf16", w.elem)));
    }
    match w.shape[..] {
        [o, i] if i == in_f => Ok((o, i)),
        _ => Err(cx.shape_err(format!(
            "weight {:?} does not take {in_f} input features",
            w.shape
        ))),
    }
}

/// The output shape of a projection of `x` to `out_f` features.
fn out_shape(x: &DevTensor, out_f: usize) -> Vec<usize> {
    let mut s = x.shape.clone();
    if let Some(l) = s.last_mut() {
        *l = out_f;
    }
    s
}

fn add_bias(cx: &Ctx, y: &DevTensor, bias: &DevTensor) -> Result<(), GpuTrainError> {
    let (rows, cols) = y.rows_cols();
    if bias.shape != [cols] {
        return Err(cx.shape_err(format!("bias {:?}, expected [{cols}]", bias.shape)));
    }
    cx.k.elems(
        cx.dev,
        "tr_bias_add",
        rows * cols,
        &[ptr(y.ptr), ptr(bias.ptr), int(rows), int(cols)],
    )
}

fn dense(
    cx: &Ctx,
    x: &DevTensor,
    w: &DevTensor,
    bias: Option<&DevTensor>,
) -> Result<DevTensor, GpuTrainError> {
    cx.f32(x, "input")?;
    let (rows, in_f) = x.rows_cols();
    let (out_f, _) = weight_dims(cx, w, in_f)?;
    let y = cx.empty(out_shape(x, out_f), Elem::F32)?;
    times_weight(cx, (rows, out_f, in_f), x, trans(w.ptr), w, y.ptr)?;
    if let Some(b) = bias {
        add_bias(cx, &y, b)?;
    }
    Ok(y)
}

/// `out = a·op(W)` with `a` f32 and `w_op` the weight's operand (`plain` or
/// `trans` of `w.ptr`): an f32 product, or for a bf16 weight a bf16 × bf16 →
/// f32 one with `a` rounded to bf16 first (cuBLAS takes no mixed pair).
pub(super) fn times_weight(
    cx: &Ctx,
    dims: (usize, usize, usize),
    a: &DevTensor,
    w_op: Operand,
    w: &DevTensor,
    out: u64,
) -> Result<(), GpuTrainError> {
    if w.elem == Elem::BF16 {
        let ab = to_bf16(cx, a)?;
        matmul(
            cx.dev,
            dims,
            1.0,
            plain(ab.ptr).bf16(),
            w_op.bf16(),
            0.0,
            out,
        )
    } else {
        matmul(cx.dev, dims, 1.0, plain(a.ptr), w_op, 0.0, out)
    }
}

/// `x` (f32) rounded to bf16, for a product with a bf16 weight.
fn to_bf16(cx: &Ctx, x: &DevTensor) -> Result<DevTensor, GpuTrainError> {
    cx.f32(x, "bf16 cast input")?;
    let y = cx.empty(x.shape.clone(), Elem::BF16)?;
    let n = y.numel();
    cx.k.elems(
        cx.dev,
        "tr_to_bf16",
        n,
        &[ptr(x.ptr), ptr(y.ptr), long(n as i64)],
    )?;
    Ok(y)
}

/// The LoRA rank of `a [rank, in]`, `b [out, rank]`, and the branch scale.
pub(super) fn lora_rank(
    cx: &Ctx,
    alpha: f64,
    a: &DevTensor,
    b: &DevTensor,
    (out_f, in_f): (usize, usize),
) -> Result<(usize, f32), GpuTrainError> {
    let rank = match a.shape[..] {
        [r, i] if i == in_f => r,
        _ => return Err(cx.shape_err(format!("lora_A is {:?}", a.shape))),
    };
    if b.shape != [out_f, rank] {
        return Err(cx.shape_err(format!(
            "lora_B is {:?}, expected [{out_f}, {rank}]",
            b.shape
        )));
    }
    let scale = if rank == 0 {
        0.0
    } else {
        (alpha / rank as f64) as f32
    };
    Ok((rank, scale))
}

fn lora(
    cx: &Ctx,
    alpha: f64,
    x: &DevTensor,
    w: &DevTensor,
    a: &DevTensor,
    b: &DevTensor,
    bias: Option<&DevTensor>,
) -> Result<DevTensor, GpuTrainError> {
    let y = dense(cx, x, w, None)?;
    let (rows, in_f) = x.rows_cols();
    let out_f = w.shape[0];
    let (rank, scale) = lora_rank(cx, alpha, a, b, (out_f, in_f))?;
    if rank > 0 {
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
        matmul(
            cx.dev,
            (rows, out_f, rank),
            scale,
            plain(down.ptr),
            trans(b.ptr),
            1.0,
            y.ptr,
        )?;
    }
    if let Some(bias) = bias {
        add_bias(cx, &y, bias)?;
    }
    Ok(y)
}

fn rms_norm(cx: &Ctx, eps: f64, x: &DevTensor, w: &DevTensor) -> Result<DevTensor, GpuTrainError> {
    cx.f32(x, "RmsNorm input")?;
    let (rows, dim) = x.rows_cols();
    if w.shape != [dim] {
        return Err(cx.shape_err(format!("RmsNorm weight {:?}, expected [{dim}]", w.shape)));
    }
    let y = cx.empty(x.shape.clone(), Elem::F32)?;
    cx.k.rows(
        cx.dev,
        "tr_rmsnorm",
        rows,
        &[
            ptr(x.ptr),
            ptr(w.ptr),
            ptr(y.ptr),
            int(rows),
            int(dim),
            float(eps as f32),
        ],
    )?;
    Ok(y)
}

/// Rotates `x [batch, seq, heads·head_dim]` by `+θ` (`sign = 1`) or `−θ` (`-1`).
pub(super) fn rope(
    cx: &Ctx,
    spec: &RopeSpec,
    x: &DevTensor,
    sign: i32,
) -> Result<DevTensor, GpuTrainError> {
    cx.f32(x, "Rope input")?;
    let [_, seq, features] = x.shape[..] else {
        return Err(cx.shape_err(format!(
            "Rope input {:?} is not [batch, seq, features]",
            x.shape
        )));
    };
    let d = spec.head_dim;
    if d == 0 || !d.is_multiple_of(2) || spec.heads * d != features {
        return Err(cx.shape_err(format!(
            "Rope input has {features} features, expected {} heads × {d} (even)",
            spec.heads
        )));
    }
    let (cos, sin) = cx.rope_tables(spec, seq)?;
    let rows = x.numel() / features.max(1);
    let y = cx.empty(x.shape.clone(), Elem::F32)?;
    cx.k.elems(
        cx.dev,
        "tr_rope",
        rows * features / 2,
        &[
            ptr(x.ptr),
            ptr(cos.ptr),
            ptr(sin.ptr),
            ptr(y.ptr),
            int(rows),
            int(seq),
            int(features),
            int(d / 2),
            super::super::Param::I32(sign),
        ],
    )?;
    Ok(y)
}

fn swiglu(cx: &Ctx, g: &DevTensor, u: &DevTensor) -> Result<DevTensor, GpuTrainError> {
    cx.f32(g, "SwiGlu gate")?;
    cx.f32(u, "SwiGlu up")?;
    if g.shape != u.shape {
        return Err(cx.shape_err(format!("SwiGlu gate {:?} vs up {:?}", g.shape, u.shape)));
    }
    let y = cx.empty(g.shape.clone(), Elem::F32)?;
    let n = y.numel();
    cx.k.elems(
        cx.dev,
        "tr_swiglu",
        n,
        &[ptr(g.ptr), ptr(u.ptr), ptr(y.ptr), long(n as i64)],
    )?;
    Ok(y)
}

/// Checks logits `[.., V]` against targets `[..]`; returns `(rows, vocab)`.
pub(super) fn xent_dims(
    cx: &Ctx,
    logits: &DevTensor,
    targets: &DevTensor,
) -> Result<(usize, usize), GpuTrainError> {
    cx.f32(logits, "CrossEntropy logits")?;
    let (rows, vocab) = logits.rows_cols();
    if targets.elem != Elem::I64 || targets.shape[..] != logits.shape[..logits.shape.len() - 1] {
        return Err(cx.shape_err(format!(
            "CrossEntropy targets {:?} do not match logits {:?}",
            targets.shape, logits.shape
        )));
    }
    Ok((rows, vocab))
}

/// Per-row `lse` and loss (double) of `logits` against `targets`.
pub(super) fn xent_rows(
    cx: &Ctx,
    ignore: i64,
    logits: &DevTensor,
    targets: &DevTensor,
) -> Result<(DevTensor, DevTensor), GpuTrainError> {
    let (rows, vocab) = xent_dims(cx, logits, targets)?;
    // Two f64 arrays, allocated as i64-sized elements.
    let lse = cx.empty(vec![rows], Elem::I64)?;
    let loss = cx.empty(vec![rows], Elem::I64)?;
    cx.k.rows(
        cx.dev,
        "tr_xent_rows",
        rows,
        &[
            ptr(logits.ptr),
            ptr(targets.ptr),
            ptr(lse.ptr),
            ptr(loss.ptr),
            int(rows),
            int(vocab),
            long(ignore),
        ],
    )?;
    Ok((lse, loss))
}

fn cross_entropy(
    cx: &Ctx,
    ignore: i64,
    logits: &DevTensor,
    targets: &DevTensor,
) -> Result<Vec<DevTensor>, GpuTrainError> {
    let (rows, vocab) = xent_dims(cx, logits, targets)?;
    let (_lse, loss) = xent_rows(cx, ignore, logits, targets)?;
    let out = cx.empty(vec![2], Elem::F32)?;
    cx.k.blocks(
        cx.dev,
        "tr_xent_sum",
        1,
        &[
            ptr(loss.ptr),
            ptr(targets.ptr),
            ptr(out.ptr),
            int(rows),
            int(vocab),
            long(ignore),
        ],
    )?;
    let count = DevTensor {
        ptr: out.ptr + 4,
        shape: vec![],
        elem: Elem::F32,
        hold: out.hold.clone(),
    };
    let sum = DevTensor {
        shape: vec![],
        ..out
    };
    Ok(vec![sum, count])
}
