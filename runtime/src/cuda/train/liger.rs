//! LigerGate and LigerAttention on the device, forward and backward: the
//! training kernels of `ligerc_codegen::cuda::kernels::liger_train`, compiled
//! once per distinct source (through the inference runtime's cubin cache) and
//! launched in the order their launch lists give, with every argument bound
//! to a device tensor, the scratch buffer or a size.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use ligerc_codegen::cuda::kernels::liger_train::{
    TrainArg, TrainLaunch, gate_backward_launches, gate_forward_launches, gate_train_source,
    liger_backward_launches, liger_forward_launches, liger_saved_floats, liger_scratch_floats,
    liger_train_source,
};
use ligerc_ir::{AttentionSpec, GateSpec, LigerSpec, LigerVariant};

use super::super::device::Function;
use super::super::{Param, cubin_for};
use super::GpuTrainError;
use super::forward::Ctx;
use super::value::{DevTensor, Elem};

/// Loaded Liger training kernels, by `(source, kernel)`, each with the
/// dynamic shared memory it may use so far.
#[derive(Default)]
pub(super) struct LigerCache {
    cubins: RefCell<HashMap<String, Rc<Vec<u8>>>>,
    funcs: RefCell<HashMap<(String, String), Loaded>>,
}

/// A loaded kernel and the dynamic shared memory (bytes) it may use so far.
type Loaded = (Rc<Function>, Rc<Cell<u32>>);

/// Dynamic shared memory every kernel may use without raising its limit.
const DEFAULT_DYNAMIC_SMEM: u32 = 48 * 1024;

impl LigerCache {
    /// The loaded kernel of `launch`, its dynamic shared-memory limit raised
    /// to what this launch asks for: one kernel's launches may ask for more
    /// than its first did (the tensor-core window kernels take more tiles a
    /// block when the batch is larger), and a launch above the limit fails.
    fn function(
        &self,
        cx: &Ctx,
        source: &str,
        launch: &TrainLaunch,
    ) -> Result<Rc<Function>, GpuTrainError> {
        let key = (source.to_string(), launch.kernel.clone());
        let cached = self.funcs.borrow().get(&key).cloned();
        let (f, limit) = match cached {
            Some(entry) => entry,
            None => {
                let f = Rc::new(
                    cx.dev
                        .load_function(&self.cubin(cx, source)?, &launch.kernel)?,
                );
                let entry = (f, Rc::new(Cell::new(DEFAULT_DYNAMIC_SMEM)));
                self.funcs.borrow_mut().insert(key, entry.clone());
                entry
            }
        };
        if launch.dynamic_smem > limit.get() {
            cx.dev.set_max_dynamic_smem(&f, launch.dynamic_smem)?;
            limit.set(launch.dynamic_smem);
        }
        Ok(f)
    }

    /// The compiled `source` (NVRTC once per source; the inference runtime's
    /// cubin cache on disk).
    fn cubin(&self, cx: &Ctx, source: &str) -> Result<Rc<Vec<u8>>, GpuTrainError> {
        if let Some(c) = self.cubins.borrow().get(source) {
            return Ok(c.clone());
        }
        let (bytes, _) = cubin_for("liger_train", source, &cx.dev.arch())?;
        let c = Rc::new(bytes);
        self.cubins
            .borrow_mut()
            .insert(source.to_string(), c.clone());
        Ok(c)
    }
}

/// The tensors one launch list reads and writes.
#[derive(Default)]
struct Bound<'a> {
    q: Option<&'a DevTensor>,
    k: Option<&'a DevTensor>,
    v: Option<&'a DevTensor>,
    q_rot: Option<&'a DevTensor>,
    k_rot: Option<&'a DevTensor>,
    gate: Option<&'a DevTensor>,
    y: Option<&'a DevTensor>,
    dy: Option<&'a DevTensor>,
    grads: [Option<&'a DevTensor>; 6],
    scratch: Option<&'a DevTensor>,
    saved: Option<&'a DevTensor>,
}

/// The buffers LigerAttention forwards saved for their backward
/// ([`liger_saved_floats`]: the window branch's output and log-sum-exp), by
/// [`SavedKey`]. A backward takes its entry out; one that finds none (no
/// forward of that name kept one in this run) runs the forward again to
/// make it.
pub(super) type SavedMap = RefCell<HashMap<SavedKey, DevTensor>>;

/// A forward's identity: the node's name (`Ctx::saved_as`: the backward's
/// operands are recomputed clones, so their buffers differ from the
/// forward's), the spec and math it ran (`Debug` text) and the operands'
/// shapes.
type SavedKey = (String, String, Vec<Vec<usize>>);

fn saved_key(cx: &Ctx, spec: &LigerSpec, args: &[&DevTensor]) -> Option<SavedKey> {
    Some((
        cx.saved_as.clone()?,
        format!("{spec:?}/{:?}", cx.math),
        args.iter().map(|t| t.shape.clone()).collect(),
    ))
}

/// A code-generation refusal (a variant without training kernels, a shape the
/// kernels cannot take) as this node's error.
fn codegen(cx: &Ctx, e: ligerc_codegen::cuda::CudaError) -> GpuTrainError {
    GpuTrainError::Unsupported {
        node: cx.node.clone(),
        reason: e.to_string(),
    }
}

fn run(
    cx: &Ctx,
    source: &str,
    launches: &[TrainLaunch],
    b: &Bound,
    (batch, seq): (usize, usize),
) -> Result<(), GpuTrainError> {
    let p = |t: Option<&DevTensor>| Param::Ptr(t.map_or(0, |t| t.ptr));
    for l in launches {
        let f = cx.liger.function(cx, source, l)?;
        let params: Vec<Param> = l
            .args
            .iter()
            .map(|a| match *a {
                TrainArg::Q => p(b.q),
                TrainArg::K => p(b.k),
                TrainArg::V => p(b.v),
                TrainArg::QRot => p(b.q_rot),
                TrainArg::KRot => p(b.k_rot),
                TrainArg::Gate => p(b.gate),
                TrainArg::Y => p(b.y),
                TrainArg::DY => p(b.dy),
                TrainArg::DQ => p(b.grads[0]),
                TrainArg::DK => p(b.grads[1]),
                TrainArg::DV => p(b.grads[2]),
                TrainArg::DQRot => p(b.grads[3]),
                TrainArg::DKRot => p(b.grads[4]),
                TrainArg::DGate => p(b.grads[5]),
                TrainArg::Scratch { offset_floats } => {
                    Param::Ptr(b.scratch.map_or(0, |s| s.ptr + 4 * offset_floats as u64))
                }
                TrainArg::Saved { offset_floats } => {
                    Param::Ptr(b.saved.map_or(0, |s| s.ptr + 4 * offset_floats as u64))
                }
                TrainArg::Batch => Param::I32(batch as i32),
                TrainArg::Seq => Param::I32(seq as i32),
            })
            .collect();
        cx.dev.launch(
            &f,
            [l.grid.0, l.grid.1, l.grid.2],
            [l.block, 1, 1],
            l.dynamic_smem,
            &params,
        )?;
    }
    Ok(())
}

/// `(batch, seq)` of a `[B, T, F]` activation.
fn rows(cx: &Ctx, t: &DevTensor) -> Result<(usize, usize), GpuTrainError> {
    cx.f32(t, "Liger operand")?;
    match t.shape[..] {
        [b, s, _] => Ok((b, s)),
        _ => Err(cx.shape_err(format!(
            "expected [batch, seq, features], got {:?}",
            t.shape
        ))),
    }
}

/// `LigerGate(k)`.
pub(super) fn gate_forward(
    cx: &Ctx,
    g: &GateSpec,
    k: &DevTensor,
) -> Result<DevTensor, GpuTrainError> {
    let (batch, seq) = rows(cx, k)?;
    let source = gate_train_source(g).map_err(|e| codegen(cx, e))?;
    let out = cx.empty(vec![batch, seq, g.kv_heads * g.width()], Elem::F32)?;
    let bound = Bound {
        k: Some(k),
        gate: Some(&out),
        ..Bound::default()
    };
    run(
        cx,
        &source,
        &gate_forward_launches(g, batch, seq).map_err(|e| codegen(cx, e))?,
        &bound,
        (batch, seq),
    )?;
    Ok(out)
}

/// The gradient of `LigerGate(k)` with respect to `k`.
pub(super) fn gate_backward(
    cx: &Ctx,
    g: &GateSpec,
    k: &DevTensor,
    dy: &DevTensor,
) -> Result<DevTensor, GpuTrainError> {
    let (batch, seq) = rows(cx, k)?;
    let source = gate_train_source(g).map_err(|e| codegen(cx, e))?;
    let dk = cx.empty(k.shape.clone(), Elem::F32)?;
    // The gate kernels read the incoming gradient as `DGate` and write `DK`.
    let mut grads = [None; 6];
    grads[1] = Some(&dk);
    grads[5] = Some(dy);
    let bound = Bound {
        k: Some(k),
        grads,
        ..Bound::default()
    };
    let launches = gate_backward_launches(g, batch, seq).map_err(|e| codegen(cx, e))?;
    run(cx, &source, &launches, &bound, (batch, seq))?;
    Ok(dk)
}

fn scratch(cx: &Ctx, floats: usize) -> Result<Option<DevTensor>, GpuTrainError> {
    if floats == 0 {
        return Ok(None);
    }
    Ok(Some(cx.empty(vec![floats], Elem::F32)?))
}

/// The forward operands `q, k, v, q_rot, k_rot [, gate]` bound, and `(batch, seq)`.
fn operands<'a>(
    cx: &Ctx,
    args: &[&'a DevTensor],
) -> Result<(Bound<'a>, (usize, usize)), GpuTrainError> {
    let [q, k, v, q_rot, k_rot, rest @ ..] = args else {
        return Err(cx.shape_err(format!(
            "LigerAttention takes 5 or 6 operands, got {}",
            args.len()
        )));
    };
    if rest.len() > 1 {
        return Err(cx.shape_err(format!(
            "LigerAttention takes 5 or 6 operands, got {}",
            args.len()
        )));
    }
    let bound = Bound {
        q: Some(q),
        k: Some(k),
        v: Some(v),
        q_rot: Some(q_rot),
        k_rot: Some(k_rot),
        gate: rest.first().copied(),
        ..Bound::default()
    };
    Ok((bound, rows(cx, q)?))
}

/// `LigerAttention(q, k, v, q_rot, k_rot [, gate])`.
pub(super) fn attention_forward(
    cx: &Ctx,
    spec: &LigerSpec,
    args: &[&DevTensor],
) -> Result<DevTensor, GpuTrainError> {
    let (y, saved) = forward_with_saved(cx, spec, args)?;
    if let (Some(saved), Some(key), true) = (saved, saved_key(cx, spec, args), cx.keep_saved) {
        cx.saved.borrow_mut().insert(key, saved);
    }
    Ok(y)
}

/// The forward's output and the buffer it saved for the backward (`None`
/// where the spec's kernels save nothing).
fn forward_with_saved(
    cx: &Ctx,
    spec: &LigerSpec,
    args: &[&DevTensor],
) -> Result<(DevTensor, Option<DevTensor>), GpuTrainError> {
    let (mut bound, (batch, seq)) = operands(cx, args)?;
    let source = liger_train_source(spec, cx.math).map_err(|e| codegen(cx, e))?;
    let y = cx.empty(args[0].shape.clone(), Elem::F32)?;
    let launches = liger_forward_launches(spec, cx.math, batch, seq).map_err(|e| codegen(cx, e))?;
    let needs_scratch = launches
        .iter()
        .any(|l| l.args.iter().any(|a| matches!(a, TrainArg::Scratch { .. })));
    let s = if needs_scratch {
        scratch(cx, liger_scratch_floats(spec, cx.math, batch, seq))?
    } else {
        None
    };
    let saved = scratch(cx, liger_saved_floats(spec, cx.math, batch, seq))?;
    bound.y = Some(&y);
    bound.scratch = s.as_ref();
    bound.saved = saved.as_ref();
    run(cx, &source, &launches, &bound, (batch, seq))?;
    Ok((y, saved))
}

/// The gradients of `LigerAttention` with respect to the operands in `wrt`
/// (every operand's gradient is computed; the others are dropped).
pub(super) fn attention_backward(
    cx: &Ctx,
    spec: &LigerSpec,
    args: &[&DevTensor],
    dy: &DevTensor,
    wrt: &[usize],
) -> Result<Vec<DevTensor>, GpuTrainError> {
    let (mut bound, (batch, seq)) = operands(cx, args)?;
    let source = liger_train_source(spec, cx.math).map_err(|e| codegen(cx, e))?;
    let outs: Vec<DevTensor> = args
        .iter()
        .map(|t| cx.empty(t.shape.clone(), Elem::F32))
        .collect::<Result<_, _>>()?;
    let s = scratch(cx, liger_scratch_floats(spec, cx.math, batch, seq))?;
    let found = saved_key(cx, spec, args).and_then(|key| cx.saved.borrow_mut().remove(&key));
    let saved = match found {
        Some(saved) => Some(saved),
        None if liger_saved_floats(spec, cx.math, batch, seq) > 0 => {
            forward_with_saved(cx, spec, args)?.1
        }
        None => None,
    };
    for (slot, o) in bound.grads.iter_mut().zip(&outs) {
        *slot = Some(o);
    }
    bound.dy = Some(dy);
    bound.scratch = s.as_ref();
    bound.saved = saved.as_ref();
    let launches =
        liger_backward_launches(spec, cx.math, batch, seq).map_err(|e| codegen(cx, e))?;
    run(cx, &source, &launches, &bound, (batch, seq))?;
    wrt.iter()
        .map(|&w| {
            outs.get(w)
                .cloned()
                .ok_or_else(|| cx.shape_err(format!("LigerAttention has no operand {w}")))
        })
        .collect()
}

/// Window longer than any sequence: the window kernels then compute full
/// causal softmax attention.
const UNBOUNDED_WINDOW: usize = 1 << 29;

/// Causal softmax `Attention(q, k, v)` as the window branch of a
/// swa-only LigerAttention whose window covers the whole sequence (mix 1, no
/// recurrence). Refuses what those kernels cannot express: a mask operand, a
/// non-causal attention, a scale other than `1/√head_dim`, or a cache.
fn as_window_spec(
    cx: &Ctx,
    a: &AttentionSpec,
    operands: usize,
) -> Result<LigerSpec, GpuTrainError> {
    let unsupported = |reason: String| GpuTrainError::Unsupported {
        node: cx.node.clone(),
        reason,
    };
    if operands != 3 {
        return Err(unsupported(format!(
            "softmax Attention with a mask operand has no GPU training kernel (got {operands} operands; \
             packed training sequences need none)"
        )));
    }
    let want = 1.0 / (a.head_dim as f64).sqrt();
    if !a.causal || (a.scale - want).abs() > 1e-6 * want {
        return Err(unsupported(format!(
            "the GPU training kernel computes causal attention with scale 1/sqrt(head_dim) = {want:.6}; \
             this node is causal={} with scale {}",
            a.causal, a.scale
        )));
    }
    Ok(LigerSpec {
        variant: LigerVariant::SwaOnly,
        heads: a.heads,
        kv_heads: a.kv_heads,
        head_dim: a.head_dim,
        window: UNBOUNDED_WINDOW,
        mix_window: 1.0,
        mix_linear: 0.0,
        slots: 0,
    })
}

/// `Attention(q, k, v)`, causal, on the device.
pub(super) fn softmax_attention_forward(
    cx: &Ctx,
    a: &AttentionSpec,
    args: &[&DevTensor],
) -> Result<DevTensor, GpuTrainError> {
    let spec = as_window_spec(cx, a, args.len())?;
    let (q, k, v) = (args[0], args[1], args[2]);
    if q.shape.get(1) != k.shape.get(1) {
        return Err(cx.shape_err(format!(
            "query {:?} and key {:?} lengths differ (no KV cache in training)",
            q.shape, k.shape
        )));
    }
    attention_forward(cx, &spec, &[q, k, v, q, k])
}

/// The gradients of causal `Attention(q, k, v)` with respect to `wrt`.
pub(super) fn softmax_attention_backward(
    cx: &Ctx,
    a: &AttentionSpec,
    args: &[&DevTensor],
    dy: &DevTensor,
    wrt: &[usize],
) -> Result<Vec<DevTensor>, GpuTrainError> {
    let spec = as_window_spec(cx, a, args.len())?;
    let (q, k, v) = (args[0], args[1], args[2]);
    // The window kernels see q, k as the rotated operands: their gradients
    // are DQRot (3), DKRot (4); DV (2) is the value's.
    let slots: Vec<usize> = wrt
        .iter()
        .map(|&w| match w {
            0 => Ok(3),
            1 => Ok(4),
            2 => Ok(2),
            other => Err(cx.shape_err(format!("Attention has no operand {other}"))),
        })
        .collect::<Result<_, _>>()?;
    attention_backward(cx, &spec, &[q, k, v, q, k], dy, &slots)
}
