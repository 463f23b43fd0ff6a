//! Builds the high-level graph of a Llama-family decoder from its shape and weights.
//!
//! ```text
//! h = Embedding(embed, input_ids)
//! per layer:  x = RmsNorm(h, input_layernorm)
//!             q, k, v = Linear(x, q/k/v_proj [, bias])
//!             a = Attention(Rope(q), Rope(k), v)          causal, GQA, 1/√head_dim
//!             h = h + Linear(a, o_proj)
//!             x = RmsNorm(h, post_attention_layernorm)
//!             h = h + Linear(SwiGlu(Linear(x, gate_proj), Linear(x, up_proj)), down_proj)
//! logits = LmHead(RmsNorm(h, norm), lm_head or embed when tied)
//! ```
//!
//! Weights are named as in Hugging Face checkpoints (`model.layers.3.self_attn.q_proj.weight`),
//! whatever file they came from, and kept in their stored dtype.

use ligerc_ir::{
    AttentionSpec, Attrs, DType, Dim, Graph, OnnxOp, Op, RopeScaling, RopeSpec, TensorData,
    TensorType, ValueRef,
};

use crate::error::{ImportError, ImportResult};

/// Everything about a Llama-family model's architecture the graph depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaShape {
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub hidden: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Features per head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE long-context scaling.
    pub rope_scaling: RopeScaling,
    /// `lm_head` shares the embedding table.
    pub tied_embeddings: bool,
    /// q/k/v projections have a bias (Qwen2).
    pub qkv_bias: bool,
    /// o_proj has a bias.
    pub o_bias: bool,
    /// MLP projections have a bias.
    pub mlp_bias: bool,
}

/// Where the builder gets each weight from.
pub trait WeightSource {
    /// The weight called `name` (Hugging Face naming), or `None` when the file has none.
    fn take(&mut self, name: &str) -> ImportResult<Option<TensorData>>;
    /// The file, for error messages.
    fn path(&self) -> &std::path::Path;
    /// Tensors the file has that no `take` asked for (a config that does not
    /// match its weights, e.g. biases the config says the model lacks).
    fn unused(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Builds the graph, checking every weight's presence, dtype and shape.
pub fn build_llama(name: &str, s: &LlamaShape, src: &mut dyn WeightSource) -> ImportResult<Graph> {
    check_shape(s, src.path())?;
    let mut b = Builder {
        g: Graph::new(name),
        src,
    };
    let (batch, seq) = (Dim::sym("batch"), Dim::sym("seq"));
    let act =
        |w: usize| TensorType::new(DType::F32, vec![batch.clone(), seq.clone(), Dim::Fixed(w)]);
    let ids = b.g.add_input(
        "input_ids",
        TensorType::new(DType::I64, vec![batch.clone(), seq.clone()]),
    );
    let embed = b.weight("model.embed_tokens.weight", &[s.vocab, s.hidden])?;
    let mut h = b.g.add(Op::Embedding, &[embed, ids], act(s.hidden));
    let (q_w, kv_w) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        let x = b.rms_norm(h, &format!("{p}.input_layernorm.weight"), s, act(s.hidden))?;
        let q = b.linear(
            x,
            &format!("{p}.self_attn.q_proj"),
            s.hidden,
            q_w,
            s.qkv_bias,
            act(q_w),
        )?;
        let k = b.linear(
            x,
            &format!("{p}.self_attn.k_proj"),
            s.hidden,
            kv_w,
            s.qkv_bias,
            act(kv_w),
        )?;
        let v = b.linear(
            x,
            &format!("{p}.self_attn.v_proj"),
            s.hidden,
            kv_w,
            s.qkv_bias,
            act(kv_w),
        )?;
        let rope = |heads| {
            Op::Rope(RopeSpec {
                heads,
                head_dim: s.head_dim,
                theta: s.rope_theta,
                scaling: s.rope_scaling.clone(),
            })
        };
        let q = b.g.add(rope(s.heads), &[q], act(q_w));
        let k = b.g.add(rope(s.kv_heads), &[k], act(kv_w));
        let attn = Op::Attention(AttentionSpec {
            heads: s.heads,
            kv_heads: s.kv_heads,
            head_dim: s.head_dim,
            scale: 1.0 / (s.head_dim as f64).sqrt(),
            causal: true,
        });
        let a = b.g.add(attn, &[q, k, v], act(q_w));
        let o = b.linear(
            a,
            &format!("{p}.self_attn.o_proj"),
            q_w,
            s.hidden,
            s.o_bias,
            act(s.hidden),
        )?;
        h = b.add(h, o, act(s.hidden));
        let x = b.rms_norm(
            h,
            &format!("{p}.post_attention_layernorm.weight"),
            s,
            act(s.hidden),
        )?;
        let gate = b.linear(
            x,
            &format!("{p}.mlp.gate_proj"),
            s.hidden,
            s.intermediate,
            s.mlp_bias,
            act(s.intermediate),
        )?;
        let up = b.linear(
            x,
            &format!("{p}.mlp.up_proj"),
            s.hidden,
            s.intermediate,
            s.mlp_bias,
            act(s.intermediate),
        )?;
        let m = b.g.add(Op::SwiGlu, &[gate, up], act(s.intermediate));
        let d = b.linear(
            m,
            &format!("{p}.mlp.down_proj"),
            s.intermediate,
            s.hidden,
            s.mlp_bias,
            act(s.hidden),
        )?;
        h = b.add(h, d, act(s.hidden));
    }
    let x = b.rms_norm(h, "model.norm.weight", s, act(s.hidden))?;
    let head = if s.tied_embeddings {
        embed
    } else {
        b.weight("lm_head.weight", &[s.vocab, s.hidden])?
    };
    let logits = b.g.add(Op::LmHead, &[x, head], act(s.vocab));
    b.g.add_output("logits", logits);
    let unused = b.src.unused();
    if !unused.is_empty() {
        let shown: Vec<&str> = unused.iter().take(5).map(String::as_str).collect();
        return Err(ImportError::Unsupported {
            path: b.src.path().to_path_buf(),
            detail: format!(
                "the checkpoint has {} tensors its config does not use ({}{}); is config.json for these weights?",
                unused.len(),
                shown.join(", "),
                if unused.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            ),
        });
    }
    ligerc_ir::verify(&b.g).map_err(|source| ImportError::Graph {
        path: b.src.path().to_path_buf(),
        source,
    })?;
    Ok(b.g)
}

/// Rejects shapes no Llama can have, before any weight is read.
fn check_shape(s: &LlamaShape, path: &std::path::Path) -> ImportResult<()> {
    let bad = |detail: String| ImportError::Unsupported {
        path: path.to_path_buf(),
        detail,
    };
    if s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
        return Err(bad(format!(
            "{} attention heads are not a multiple of {} KV heads",
            s.heads, s.kv_heads
        )));
    }
    if s.head_dim == 0 || !s.head_dim.is_multiple_of(2) {
        return Err(bad(format!(
            "head_dim {} must be even for rotary embeddings",
            s.head_dim
        )));
    }
    if !(s.rope_theta.is_finite() && s.rope_theta > 1.0) {
        return Err(bad(format!(
            "rope theta {} must be a finite number above 1",
            s.rope_theta
        )));
    }
    // A bound on what a CPU reference or one GPU can hold; larger is almost surely a corrupt header.
    const MAX_DIM: usize = 1 << 22;
    for (what, v) in [
        ("vocab", s.vocab),
        ("hidden", s.hidden),
        ("intermediate", s.intermediate),
        ("heads", s.heads),
        ("kv_heads", s.kv_heads),
        ("head_dim", s.head_dim),
    ] {
        if v == 0 || v > MAX_DIM {
            return Err(bad(format!("{what} size {v} is outside 1..={MAX_DIM}")));
        }
    }
    if s.layers == 0 || s.layers > 1024 {
        return Err(bad(format!("{} layers is outside 1..=1024", s.layers)));
    }
    // Attention widths are products; each factor is bounded above, so they cannot overflow,
    // but a width no projection can have is a corrupt header too.
    let q_width = s.heads * s.head_dim;
    if q_width > MAX_DIM {
        return Err(bad(format!(
            "{} heads × head_dim {} = {q_width} is above {MAX_DIM}",
            s.heads, s.head_dim
        )));
    }
    if !(s.rms_eps.is_finite() && s.rms_eps >= 0.0) {
        return Err(bad(format!(
            "RMSNorm epsilon {} must be finite and non-negative",
            s.rms_eps
        )));
    }
    Ok(())
}

struct Builder<'a> {
    g: Graph,
    src: &'a mut dyn WeightSource,
}

impl Builder<'_> {
    fn weight(&mut self, name: &str, shape: &[usize]) -> ImportResult<ValueRef> {
        let path = self.src.path().to_path_buf();
        let t = self.src.take(name)?.ok_or_else(|| ImportError::Tensor {
            path: path.clone(),
            tensor: name.to_string(),
            detail: "missing from the checkpoint".into(),
        })?;
        if t.shape() != shape {
            return Err(ImportError::Tensor {
                path,
                tensor: name.to_string(),
                detail: format!("has shape {:?}, the config implies {shape:?}", t.shape()),
            });
        }
        if !t.dtype().is_float() {
            return Err(ImportError::Tensor {
                path,
                tensor: name.to_string(),
                detail: format!("has dtype {}, expected a float type", t.dtype()),
            });
        }
        Ok(self.g.add_weight(name, t))
    }

    fn rms_norm(
        &mut self,
        x: ValueRef,
        w: &str,
        s: &LlamaShape,
        ty: TensorType,
    ) -> ImportResult<ValueRef> {
        let w = self.weight(w, &[s.hidden])?;
        Ok(self.g.add(Op::RmsNorm { eps: s.rms_eps }, &[x, w], ty))
    }

    fn linear(
        &mut self,
        x: ValueRef,
        prefix: &str,
        fan_in: usize,
        fan_out: usize,
        bias: bool,
        ty: TensorType,
    ) -> ImportResult<ValueRef> {
        let w = self.weight(&format!("{prefix}.weight"), &[fan_out, fan_in])?;
        let mut operands = vec![x, w];
        if bias {
            operands.push(self.weight(&format!("{prefix}.bias"), &[fan_out])?);
        }
        Ok(self.g.add(Op::Linear, &operands, ty))
    }

    fn add(&mut self, a: ValueRef, b: ValueRef, ty: TensorType) -> ValueRef {
        self.g.add(
            Op::Onnx(OnnxOp {
                op_type: "Add".into(),
                attrs: Attrs::new(),
            }),
            &[a, b],
            ty,
        )
    }
}
