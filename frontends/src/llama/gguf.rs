//! llama.cpp GGUF checkpoints (architectures `llama` and `qwen2`) → the Llama graph.
//!
//! Configuration comes from the file's metadata, never from defaults. Tensors
//! are dequantized to f32 (F32, F16, BF16, Q8_0, Q4_0, Q4_1) and renamed to
//! Hugging Face names; the q/k row permutation llama.cpp's converter applies
//! for its rotary kernel is undone for `llama`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use ligerc_ir::{Graph, RopeScaling, TensorData};

use super::builder::{LlamaShape, WeightSource, build_llama};
use crate::error::{ImportError, ImportResult};
use crate::gguf::{GgufError, GgufFile, unpermute_qk_rows};

/// A byte-level BPE tokenizer as GGUF metadata describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTokenizer {
    /// `tokenizer.ggml.model` (`gpt2` for byte-level BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`: llama.cpp's name for the pre-tokenizer (`smollm`, `llama-bpe`, …).
    pub pre: Option<String>,
    /// Token strings, by id.
    pub tokens: Vec<String>,
    /// BPE merges, `"a b"`.
    pub merges: Vec<String>,
    /// llama.cpp token types (1 normal, 3 control, …), by id.
    pub token_types: Vec<i32>,
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
}

/// An imported GGUF model: its graph and, when the file has one, its tokenizer.
pub struct GgufModel {
    /// The high-level graph.
    pub graph: Graph,
    /// Tokenizer data from the metadata.
    pub tokenizer: Option<GgufTokenizer>,
}

/// Imports a GGUF file.
pub fn import_gguf(path: &Path) -> ImportResult<GgufModel> {
    let io = |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: read-only map; ligerc never writes a model file while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    import_gguf_bytes(Bytes::from_owner(map), path)
}

/// Imports a GGUF file already in memory; `path` names it in errors.
pub fn import_gguf_bytes(bytes: Bytes, path: &Path) -> ImportResult<GgufModel> {
    let gguf = GgufFile::parse(&bytes).map_err(|e| gguf_err(path, e))?;
    let arch = gguf
        .architecture()
        .map_err(|e| gguf_err(path, e))?
        .to_string();
    if arch != "llama" && arch != "qwen2" {
        return Err(ImportError::Unsupported {
            path: path.to_path_buf(),
            detail: format!("GGUF architecture `{arch}` (supported: llama, qwen2)"),
        });
    }
    if gguf.tensor("rope_freqs.weight").is_some() {
        return Err(ImportError::Unsupported {
            path: path.to_path_buf(),
            detail: "per-frequency RoPE factors (`rope_freqs.weight`, Llama 3.1 GGUFs); import the Hugging Face checkpoint instead".into(),
        });
    }
    let shape = shape_from_metadata(&gguf, &arch, path)?;
    let tokenizer = tokenizer(&gguf).map_err(|e| gguf_err(path, e))?;
    let name = path
        .file_stem()
        .map_or("model".to_string(), |n| n.to_string_lossy().into_owned());
    let mut src = GgufSource {
        path: path.to_path_buf(),
        bytes,
        gguf,
        arch,
        heads: shape.heads,
        kv_heads: shape.kv_heads,
    };
    let graph = build_llama(&name, &shape, &mut src)?;
    Ok(GgufModel { graph, tokenizer })
}

fn gguf_err(path: &Path, e: GgufError) -> ImportError {
    ImportError::Malformed {
        path: path.to_path_buf(),
        format: "GGUF",
        detail: e.to_string(),
    }
}

fn shape_from_metadata(g: &GgufFile, arch: &str, path: &Path) -> ImportResult<LlamaShape> {
    let key = |k: &str| format!("{arch}.{k}");
    let e = |err| gguf_err(path, err);
    let hidden = g.get_usize(&key("embedding_length")).map_err(e)?;
    let heads = g.get_usize(&key("attention.head_count")).map_err(e)?;
    let kv_heads = match g.get(&key("attention.head_count_kv")) {
        Some(_) => g.get_usize(&key("attention.head_count_kv")).map_err(e)?,
        None => heads,
    };
    let head_dim = match g.get(&key("attention.key_length")) {
        Some(_) => g.get_usize(&key("attention.key_length")).map_err(e)?,
        None => hidden / heads.max(1),
    };
    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| ImportError::Tensor {
            path: path.to_path_buf(),
            tensor: "token_embd.weight".into(),
            detail: "missing".into(),
        })?;
    let vocab = match g.get(&key("vocab_size")) {
        Some(_) => g.get_usize(&key("vocab_size")).map_err(e)?,
        None => embd.shape_row_major().first().copied().unwrap_or(0) as usize,
    };
    let rope_scaling = match g.get(&key("rope.scaling.type")) {
        None => RopeScaling::None,
        Some(_) => match g.get_str(&key("rope.scaling.type")).map_err(e)? {
            "none" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: g.get_f64(&key("rope.scaling.factor")).map_err(e)?,
            },
            other => {
                return Err(ImportError::Unsupported {
                    path: path.to_path_buf(),
                    detail: format!("RoPE scaling type `{other}`"),
                });
            }
        },
    };
    Ok(LlamaShape {
        vocab,
        hidden,
        intermediate: g.get_usize(&key("feed_forward_length")).map_err(e)?,
        layers: g.get_usize(&key("block_count")).map_err(e)?,
        heads,
        kv_heads,
        head_dim,
        rms_eps: g
            .get_f64(&key("attention.layer_norm_rms_epsilon"))
            .map_err(e)?,
        rope_theta: match g.get(&key("rope.freq_base")) {
            Some(_) => g.get_f64(&key("rope.freq_base")).map_err(e)?,
            None => 10000.0,
        },
        rope_scaling,
        tied_embeddings: g.tensor("output.weight").is_none(),
        qkv_bias: g.tensor("blk.0.attn_q.bias").is_some(),
        o_bias: g.tensor("blk.0.attn_output.bias").is_some(),
        mlp_bias: g.tensor("blk.0.ffn_gate.bias").is_some(),
    })
}

fn tokenizer(g: &GgufFile) -> Result<Option<GgufTokenizer>, GgufError> {
    if g.get("tokenizer.ggml.tokens").is_none() {
        return Ok(None);
    }
    let opt_u32 = |k: &str| -> Result<Option<u32>, GgufError> {
        match g.get(k) {
            None => Ok(None),
            Some(_) => g.get_u32(k).map(Some),
        }
    };
    Ok(Some(GgufTokenizer {
        model: g.get_str("tokenizer.ggml.model")?.to_string(),
        pre: match g.get("tokenizer.ggml.pre") {
            None => None,
            Some(_) => Some(g.get_str("tokenizer.ggml.pre")?.to_string()),
        },
        tokens: g
            .get_str_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(String::from)
            .collect(),
        merges: match g.get("tokenizer.ggml.merges") {
            None => Vec::new(),
            Some(_) => g
                .get_str_array("tokenizer.ggml.merges")?
                .into_iter()
                .map(String::from)
                .collect(),
        },
        token_types: match g.get("tokenizer.ggml.token_type") {
            None => Vec::new(),
            Some(_) => g
                .get_i64_array("tokenizer.ggml.token_type")?
                .into_iter()
                .map(|v| v as i32)
                .collect(),
        },
        bos: opt_u32("tokenizer.ggml.bos_token_id")?,
        eos: opt_u32("tokenizer.ggml.eos_token_id")?,
    }))
}

/// Hugging Face name → GGUF name.
fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let mapped = match tail {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.bias" => "attn_output.bias",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        "mlp.gate_proj.bias" => "ffn_gate.bias",
        "mlp.up_proj.bias" => "ffn_up.bias",
        "mlp.down_proj.bias" => "ffn_down.bias",
        _ => return None,
    };
    Some(format!("blk.{layer}.{mapped}"))
}

struct GgufSource {
    path: PathBuf,
    bytes: Bytes,
    gguf: GgufFile,
    arch: String,
    heads: usize,
    kv_heads: usize,
}

impl WeightSource for GgufSource {
    fn take(&mut self, name: &str) -> ImportResult<Option<TensorData>> {
        let Some(gname) = gguf_name(name) else {
            return Ok(None);
        };
        let Some(info) = self.gguf.tensor(&gname) else {
            return Ok(None);
        };
        let tensor_err = |detail: String| ImportError::Tensor {
            path: self.path.clone(),
            tensor: gname.clone(),
            detail,
        };
        // GgufError messages name the tensor already; the ImportError names it once.
        let prefix = format!("tensor `{gname}`: ");
        let mut data = self.gguf.dequantize(&self.bytes, info).map_err(|e| {
            let msg = e.to_string();
            tensor_err(msg.strip_prefix(&prefix).unwrap_or(&msg).to_string())
        })?;
        let shape: Vec<usize> = info
            .shape_row_major()
            .into_iter()
            .map(|d| d as usize)
            .collect();
        if self.arch == "llama" {
            let n_head = if gname.ends_with("attn_q.weight") {
                Some(self.heads)
            } else if gname.ends_with("attn_k.weight") {
                Some(self.kv_heads)
            } else {
                None
            };
            if let (Some(n_head), [rows, cols]) = (n_head, shape.as_slice()) {
                unpermute_qk_rows(&mut data, n_head, *rows, *cols)
                    .map_err(|e| tensor_err(e.to_string()))?;
            }
        }
        TensorData::from_f32(shape, &data)
            .map(Some)
            .map_err(|e| tensor_err(e.to_string()))
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
