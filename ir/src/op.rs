//! Ops at two levels: generic ONNX-level ops and high-level transformer ops.
//!
//! High-level ops keep tensors in the layout Llama checkpoints use: activations
//! are `[batch, seq, features]` with heads flattened into the feature axis
//! (`heads × head_dim`), linear weights are `[out, in]`.

use crate::attr::{Attr, AttrReader, Attrs};
use crate::liger::{GateSpec, LigerSpec, LigerVariant};
use crate::onnx_ops::onnx_schema;
use crate::{IrError, TensorData};

/// A generic ONNX standard-domain op.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxOp {
    /// ONNX `op_type` (a name listed in [`crate::onnx_ops::ONNX_OPS`]).
    pub op_type: String,
    /// Its attributes.
    pub attrs: Attrs,
}

/// How rotary frequencies are scaled for long context.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE: `inv_freq[i] = theta^(-2i/d)`.
    None,
    /// Positions divided by `factor` (transformers `rope_type: linear`).
    Linear {
        /// Divisor of every frequency.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling (transformers `rope_type: llama3`).
    Llama3 {
        /// Scale for low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position / low_freq_factor` are scaled fully.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was pretrained with.
        original_max_position: f64,
    },
}

/// Rotary position embedding on `[batch, seq, heads × head_dim]`, the
/// "rotate half" convention of Hugging Face Llama, positions `0..seq` (plus the
/// decode offset when running incrementally).
#[derive(Clone, Debug, PartialEq)]
pub struct RopeSpec {
    /// Heads packed in the feature axis.
    pub heads: usize,
    /// Features per head.
    pub head_dim: usize,
    /// Base of the frequencies.
    pub theta: f64,
    /// Long-context scaling.
    pub scaling: RopeScaling,
}

impl RopeSpec {
    /// The inverse frequencies, `head_dim / 2` of them, as transformers computes
    /// them (`_compute_default_rope_parameters` / `_compute_llama3_parameters`).
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim as f64;
        let base: Vec<f64> = (0..self.head_dim / 2)
            .map(|i| 1.0 / self.theta.powf((2 * i) as f64 / d))
            .collect();
        match self.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                let low_wavelen = original_max_position / low_freq_factor;
                let high_wavelen = original_max_position / high_freq_factor;
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen > low_wavelen {
                            f / factor
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let smooth = (original_max_position / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Causal (or full) scaled dot-product attention with grouped KV heads.
///
/// Operands: `q [B,T,heads·head_dim]`, `k`, `v [B,S,kv_heads·head_dim]`, and
/// optionally a padding mask `[B,S]` (non-zero = attend). Query `t` of a causal
/// attention sees keys `0..=t + (S - T)`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionSpec {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads` must be a multiple).
    pub kv_heads: usize,
    /// Features per head.
    pub head_dim: usize,
    /// Multiplier of `q·k` before the softmax (usually `1/√head_dim`).
    pub scale: f64,
    /// Whether a query only sees earlier keys.
    pub causal: bool,
}

/// The attribute of a `vjp.*` node that lists the differentiated operands.
pub const VJP_WRT: &str = "vjp_wrt";

/// Operand and result counts an op accepts, as inclusive `(fewest, most)` ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arity {
    /// Operands.
    pub inputs: (usize, usize),
    /// Results.
    pub outputs: (usize, usize),
}

/// One operation of the graph.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input, bound at run time.
    Input {
        /// Name of the input.
        name: String,
    },
    /// A named weight from the graph's weight store.
    Weight {
        /// Key in [`crate::Graph::weights`].
        name: String,
    },
    /// A small literal tensor.
    Const(TensorData),
    /// A generic ONNX op.
    Onnx(OnnxOp),
    /// `table[ids]`: operands `(table [V,D], ids [..])` → `[.., D]`.
    Embedding,
    /// `x·Wᵀ (+ b)`: operands `(x [..,in], w [out,in] [, b [out]])`.
    Linear,
    /// `x / rms(x) · w`: operands `(x [..,D], w [D])`.
    RmsNorm {
        /// Added to the mean square.
        eps: f64,
    },
    /// Rotary embedding of one operand.
    Rope(RopeSpec),
    /// Scaled dot-product attention.
    Attention(AttentionSpec),
    /// `silu(gate) · up`: operands `(gate, up)` of equal shape.
    SwiGlu,
    /// Output projection to vocabulary logits: operands `(x [..,D], w [V,D])`.
    LmHead,
    /// The key-derived forget gate of Liger Attention.
    LigerGate(GateSpec),
    /// Liger Attention (gated recurrence + sliding-window attention).
    LigerAttention(LigerSpec),
    /// A linear layer with a LoRA branch: operands `(x, w [out,in], a [rank,in], b [out,rank] [, bias])`,
    /// `y = x·Wᵀ + (alpha/rank)·(x·Aᵀ)·Bᵀ (+ bias)`.
    Lora {
        /// LoRA alpha; the branch is scaled by `alpha / rank`.
        alpha: f64,
    },
    /// Summed next-token cross-entropy: operands `(logits [..,V], targets [..] integer)`,
    /// results `(loss_sum [], counted [])`, both f32 scalars. Targets equal to
    /// `ignore_index` contribute nothing and are not counted.
    CrossEntropy {
        /// The target value that marks a position without loss (−100, as in PyTorch).
        ignore_index: i64,
    },
    /// The vector-Jacobian product of a forward op (built by the autodiff pass).
    Vjp(VjpSpec),
}

/// A vector-Jacobian product node: operands are the forward op's operands
/// followed by the gradient of its first result; results are the gradients of
/// the forward operands listed in `wrt`, in that order, each shaped like its operand.
#[derive(Clone, Debug, PartialEq)]
pub struct VjpSpec {
    /// The op being differentiated.
    pub forward: Box<Op>,
    /// Indices of the forward operands whose gradients are produced.
    pub wrt: Vec<usize>,
}

impl Op {
    /// The mnemonic of the text form (`Linear`, `onnx.MatMul`, …).
    pub fn mnemonic(&self) -> String {
        match self {
            Op::Input { .. } => "input".into(),
            Op::Weight { .. } => "weight".into(),
            Op::Const(_) => "const".into(),
            Op::Onnx(o) => format!("onnx.{}", o.op_type),
            Op::Embedding => "Embedding".into(),
            Op::Linear => "Linear".into(),
            Op::RmsNorm { .. } => "RmsNorm".into(),
            Op::Rope(_) => "Rope".into(),
            Op::Attention(_) => "Attention".into(),
            Op::SwiGlu => "SwiGlu".into(),
            Op::LmHead => "LmHead".into(),
            Op::LigerGate(_) => "LigerGate".into(),
            Op::LigerAttention(_) => "LigerAttention".into(),
            Op::Lora { .. } => "Lora".into(),
            Op::CrossEntropy { .. } => "CrossEntropy".into(),
            Op::Vjp(v) => format!("vjp.{}", v.forward.mnemonic()),
        }
    }

    /// How many operands and results the op takes.
    pub fn arity(&self) -> Result<Arity, IrError> {
        let (inputs, outputs) = match self {
            Op::Input { .. } | Op::Weight { .. } | Op::Const(_) => ((0, 0), (1, 1)),
            Op::Onnx(o) => {
                let s = onnx_schema(&o.op_type).ok_or_else(|| IrError::UnknownOp {
                    op: o.op_type.clone(),
                })?;
                ((s.min_inputs, s.max_inputs), (s.min_outputs, s.max_outputs))
            }
            Op::Embedding | Op::RmsNorm { .. } | Op::SwiGlu | Op::LmHead => ((2, 2), (1, 1)),
            Op::Linear => ((2, 3), (1, 1)),
            Op::Rope(_) => ((1, 1), (1, 1)),
            Op::Attention(_) => ((3, 4), (1, 1)),
            Op::LigerGate(_) => ((1, 1), (1, 1)),
            Op::LigerAttention(s) if s.variant.has_gate() => ((6, 6), (1, 1)),
            Op::LigerAttention(_) => ((5, 5), (1, 1)),
            Op::Lora { .. } => ((4, 5), (1, 1)),
            Op::CrossEntropy { .. } => ((2, 2), (2, 2)),
            Op::Vjp(v) => {
                let fwd = v.forward.arity()?;
                let n = v.wrt.len();
                ((fwd.inputs.0 + 1, fwd.inputs.1 + 1), (n, n))
            }
        };
        Ok(Arity { inputs, outputs })
    }

    /// The op's parameters as attributes (what the text form prints in `{…}`).
    pub fn attrs(&self) -> Attrs {
        let mut a = Attrs::new();
        let mut put = |k: &str, v: Attr| {
            a.insert(k.to_string(), v);
        };
        match self {
            Op::Onnx(o) => return o.attrs.clone(),
            Op::RmsNorm { eps } => put("eps", Attr::Float(*eps)),
            Op::Rope(r) => {
                put("heads", Attr::Int(r.heads as i64));
                put("head_dim", Attr::Int(r.head_dim as i64));
                put("theta", Attr::Float(r.theta));
                match r.scaling {
                    RopeScaling::None => {}
                    RopeScaling::Linear { factor } => {
                        put("scaling", Attr::Str("linear".into()));
                        put("factor", Attr::Float(factor));
                    }
                    RopeScaling::Llama3 {
                        factor,
                        low_freq_factor,
                        high_freq_factor,
                        original_max_position,
                    } => {
                        put("scaling", Attr::Str("llama3".into()));
                        put("factor", Attr::Float(factor));
                        put("low_freq_factor", Attr::Float(low_freq_factor));
                        put("high_freq_factor", Attr::Float(high_freq_factor));
                        put("original_max_position", Attr::Float(original_max_position));
                    }
                }
            }
            Op::Attention(s) => {
                put("heads", Attr::Int(s.heads as i64));
                put("kv_heads", Attr::Int(s.kv_heads as i64));
                put("head_dim", Attr::Int(s.head_dim as i64));
                put("scale", Attr::Float(s.scale));
                put("causal", Attr::Int(i64::from(s.causal)));
            }
            Op::LigerGate(g) => {
                put("variant", Attr::Str(g.variant.name().into()));
                put("kv_heads", Attr::Int(g.kv_heads as i64));
                put("head_dim", Attr::Int(g.head_dim as i64));
                put("normalizer", Attr::Float(g.normalizer));
                if g.variant == LigerVariant::Gsa {
                    put("slots", Attr::Int(g.slots as i64));
                }
            }
            Op::LigerAttention(l) => {
                put("variant", Attr::Str(l.variant.name().into()));
                put("heads", Attr::Int(l.heads as i64));
                put("kv_heads", Attr::Int(l.kv_heads as i64));
                put("head_dim", Attr::Int(l.head_dim as i64));
                put("window", Attr::Int(l.window as i64));
                put("mix_window", Attr::Float(l.mix_window));
                put("mix_linear", Attr::Float(l.mix_linear));
                if l.variant == LigerVariant::Gsa {
                    put("slots", Attr::Int(l.slots as i64));
                }
            }
            Op::Lora { alpha } => put("alpha", Attr::Float(*alpha)),
            Op::CrossEntropy { ignore_index } => put("ignore_index", Attr::Int(*ignore_index)),
            Op::Vjp(v) => {
                let mut fwd = v.forward.attrs();
                fwd.insert(
                    VJP_WRT.to_string(),
                    Attr::Ints(v.wrt.iter().map(|&i| i as i64).collect()),
                );
                return fwd;
            }
            Op::Input { .. }
            | Op::Weight { .. }
            | Op::Const(_)
            | Op::Embedding
            | Op::Linear
            | Op::SwiGlu
            | Op::LmHead => {}
        }
        a
    }

    /// Builds a computational op (not `input`/`weight`/`const`) from its mnemonic
    /// and attributes, the inverse of [`Op::mnemonic`] + [`Op::attrs`].
    pub fn from_parts(mnemonic: &str, mut attrs: Attrs) -> Result<Op, IrError> {
        if let Some(fwd) = mnemonic.strip_prefix("vjp.") {
            let wrt = match attrs.remove(VJP_WRT) {
                Some(Attr::Ints(v)) if v.iter().all(|&i| i >= 0) => {
                    v.into_iter().map(|i| i as usize).collect()
                }
                _ => {
                    return Err(IrError::Attr {
                        op: mnemonic.to_string(),
                        key: VJP_WRT.into(),
                        problem: "needs a list of non-negative operand indices".into(),
                    });
                }
            };
            if fwd.starts_with("vjp.") {
                return Err(IrError::UnknownOp {
                    op: mnemonic.to_string(),
                });
            }
            let forward = Box::new(Op::from_parts(fwd, attrs)?);
            return Ok(Op::Vjp(VjpSpec { forward, wrt }));
        }
        if let Some(op_type) = mnemonic.strip_prefix("onnx.") {
            if onnx_schema(op_type).is_none() {
                return Err(IrError::UnknownOp {
                    op: op_type.to_string(),
                });
            }
            return Ok(Op::Onnx(OnnxOp {
                op_type: op_type.to_string(),
                attrs,
            }));
        }
        let r = AttrReader::new(mnemonic, &attrs);
        let known: &[&str] = match mnemonic {
            "RmsNorm" => &["eps"],
            "Rope" => &[
                "heads",
                "head_dim",
                "theta",
                "scaling",
                "factor",
                "low_freq_factor",
                "high_freq_factor",
                "original_max_position",
            ],
            "Attention" => &["heads", "kv_heads", "head_dim", "scale", "causal"],
            "LigerGate" => &["variant", "kv_heads", "head_dim", "normalizer", "slots"],
            "LigerAttention" => &[
                "variant",
                "heads",
                "kv_heads",
                "head_dim",
                "window",
                "mix_window",
                "mix_linear",
                "slots",
            ],
            "Lora" => &["alpha"],
            "CrossEntropy" => &["ignore_index"],
            _ => &[],
        };
        if let Some(k) = attrs.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(IrError::Attr {
                op: mnemonic.to_string(),
                key: k.clone(),
                problem: "not an attribute of this op".into(),
            });
        }
        let op = match mnemonic {
            "Embedding" => Op::Embedding,
            "Linear" => Op::Linear,
            "SwiGlu" => Op::SwiGlu,
            "LmHead" => Op::LmHead,
            "RmsNorm" => Op::RmsNorm {
                eps: r.float("eps")?,
            },
            "Rope" => Op::Rope(RopeSpec {
                heads: r.usize("heads")?,
                head_dim: r.usize("head_dim")?,
                theta: r.float("theta")?,
                scaling: match r.str_or("scaling", "none")? {
                    "none" => RopeScaling::None,
                    "linear" => RopeScaling::Linear {
                        factor: r.float("factor")?,
                    },
                    "llama3" => RopeScaling::Llama3 {
                        factor: r.float("factor")?,
                        low_freq_factor: r.float("low_freq_factor")?,
                        high_freq_factor: r.float("high_freq_factor")?,
                        original_max_position: r.float("original_max_position")?,
                    },
                    other => {
                        return Err(IrError::Attr {
                            op: mnemonic.into(),
                            key: "scaling".into(),
                            problem: format!("unknown scaling `{other}`"),
                        });
                    }
                },
            }),
            "Attention" => Op::Attention(AttentionSpec {
                heads: r.usize("heads")?,
                kv_heads: r.usize("kv_heads")?,
                head_dim: r.usize("head_dim")?,
                scale: r.float("scale")?,
                causal: r.int_or("causal", 1)? != 0,
            }),
            "LigerGate" => {
                let variant = variant_attr(&r, mnemonic)?;
                Op::LigerGate(GateSpec {
                    variant,
                    kv_heads: r.usize("kv_heads")?,
                    head_dim: r.usize("head_dim")?,
                    normalizer: r.float("normalizer")?,
                    slots: r.int_or("slots", 0)?.max(0) as usize,
                })
            }
            "LigerAttention" => {
                let variant = variant_attr(&r, mnemonic)?;
                Op::LigerAttention(LigerSpec {
                    variant,
                    heads: r.usize("heads")?,
                    kv_heads: r.usize("kv_heads")?,
                    head_dim: r.usize("head_dim")?,
                    window: r.usize("window")?,
                    mix_window: r.float("mix_window")?,
                    mix_linear: r.float("mix_linear")?,
                    slots: r.int_or("slots", 0)?.max(0) as usize,
                })
            }
            "Lora" => Op::Lora {
                alpha: r.float("alpha")?,
            },
            "CrossEntropy" => Op::CrossEntropy {
                ignore_index: r.int_or("ignore_index", -100)?,
            },
            other => {
                return Err(IrError::UnknownOp {
                    op: other.to_string(),
                });
            }
        };
        Ok(op)
    }
}

fn variant_attr(r: &AttrReader<'_>, op: &str) -> Result<LigerVariant, IrError> {
    r.str_or("variant", "")?
        .parse()
        .map_err(|problem| IrError::Attr {
            op: op.to_string(),
            key: "variant".into(),
            problem,
        })
}
