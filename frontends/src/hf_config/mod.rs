//! Hugging Face `config.json` of Llama-family models (`llama`, `mistral`,
//! `qwen2`), as written by transformers 4.x and 5.x.
//!
//! The two generations differ in where RoPE settings live (`rope_theta` +
//! `rope_scaling` vs `rope_parameters`; see [`RopeConfig`]) and in 5.x's
//! per-layer `layer_types`, of which only `"full_attention"` is accepted.
//! Missing optional keys take transformers' defaults; a `null` counts as
//! missing. Every error names the file and the key.
//!
//! This module reads the configuration only; weights are the importer's job.

mod error;
mod fields;
mod rope;

#[cfg(test)]
mod tests;

use std::path::Path;

use serde_json::Value;

pub use error::HfConfigError;
pub use rope::{RopeConfig, RopeScaling};

use fields::Fields;

/// The architecture family (`model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// `"llama"` (Llama 2/3, SmolLM2, TinyLlama, ...).
    Llama,
    /// `"mistral"`: Llama layout without biases, optional sliding window.
    Mistral,
    /// `"qwen2"`: bias on the q/k/v projections (never on o).
    Qwen2,
}

impl ModelType {
    /// The `model_type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
        }
    }
}

/// The hyperparameters of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Architecture family.
    pub model_type: ModelType,
    /// Model width (`hidden_size`).
    pub hidden_size: usize,
    /// MLP width (`intermediate_size`).
    pub intermediate_size: usize,
    /// Decoder layers (`num_hidden_layers`).
    pub num_hidden_layers: usize,
    /// Query heads (`num_attention_heads`).
    pub num_attention_heads: usize,
    /// Key/value heads (`num_key_value_heads`, default: `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// Per-head width (`head_dim`, default: `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// RMSNorm epsilon (`rms_norm_eps`).
    pub rms_norm_eps: f64,
    /// Vocabulary size (`vocab_size`).
    pub vocab_size: usize,
    /// Longest context (`max_position_embeddings`).
    pub max_position_embeddings: usize,
    /// The LM head shares the embedding matrix (`tie_word_embeddings`, default false).
    pub tie_word_embeddings: bool,
    /// q/k/v projections have a bias (llama: `attention_bias`; qwen2: always; mistral: never).
    pub qkv_bias: bool,
    /// The output projection has a bias (llama: `attention_bias`; qwen2, mistral: never).
    pub o_bias: bool,
    /// gate/up/down projections have a bias (llama: `mlp_bias`; others: never).
    pub mlp_bias: bool,
    /// RoPE base and scaling.
    pub rope: RopeConfig,
    /// Mistral's sliding attention window, if set (`sliding_window`).
    pub sliding_window: Option<usize>,
    /// Parameter dtype as saved (`dtype` in 5.x, `torch_dtype` in 4.x), if given.
    pub dtype: Option<String>,
}

impl LlamaConfig {
    /// Reads and parses the `config.json` at `path`.
    pub fn from_file(path: &Path) -> Result<Self, HfConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| HfConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| HfConfigError::Json {
            file: path.to_owned(),
            source,
        })?;
        Self::from_json(&value, path)
    }

    /// Parses a `config.json` already read as JSON; `file` is used in errors only.
    pub fn from_json(value: &Value, file: &Path) -> Result<Self, HfConfigError> {
        let root = Fields::root(value, file)?;
        let model_type = match root.str("model_type")? {
            "llama" => ModelType::Llama,
            "mistral" => ModelType::Mistral,
            "qwen2" => ModelType::Qwen2,
            other => {
                return Err(HfConfigError::UnsupportedModelType {
                    file: file.to_owned(),
                    model_type: other.to_owned(),
                });
            }
        };
        if let Some(act) = root.opt_str("hidden_act")?
            && act != "silu"
        {
            return Err(HfConfigError::Unsupported {
                file: file.to_owned(),
                key: "hidden_act".to_owned(),
                reason: format!("activation {act:?} (only \"silu\")"),
            });
        }

        let hidden_size = root.positive("hidden_size")?;
        let num_hidden_layers = root.positive("num_hidden_layers")?;
        let num_attention_heads = root.positive("num_attention_heads")?;
        let num_key_value_heads = match root.opt_usize("num_key_value_heads")? {
            None => num_attention_heads,
            Some(0) => return Err(root.invalid("num_key_value_heads", "must be at least 1")),
            Some(n) if !num_attention_heads.is_multiple_of(n) => {
                return Err(root.invalid(
                    "num_key_value_heads",
                    format!("{n} does not divide num_attention_heads = {num_attention_heads}"),
                ));
            }
            Some(n) => n,
        };
        let head_dim = match root.opt_usize("head_dim")? {
            Some(d) => d,
            None if hidden_size.is_multiple_of(num_attention_heads) => {
                hidden_size / num_attention_heads
            }
            None => {
                return Err(root.invalid(
                    "hidden_size",
                    format!("{hidden_size} is not divisible by num_attention_heads = {num_attention_heads} and head_dim is not given"),
                ));
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(root.invalid(
                "head_dim",
                format!("{head_dim} must be even and at least 2 for RoPE"),
            ));
        }
        let max_position_embeddings = root.positive("max_position_embeddings")?;

        let (qkv_bias, o_bias, mlp_bias) = match model_type {
            ModelType::Llama => {
                let attention_bias = root.bool_or("attention_bias", false)?;
                (
                    attention_bias,
                    attention_bias,
                    root.bool_or("mlp_bias", false)?,
                )
            }
            ModelType::Qwen2 => (true, false, false),
            ModelType::Mistral => (false, false, false),
        };

        check_layer_types(&root, num_hidden_layers)?;
        let sliding_window = match model_type {
            ModelType::Mistral => root.opt_usize("sliding_window")?,
            ModelType::Qwen2 if root.bool_or("use_sliding_window", false)? => {
                return Err(HfConfigError::Unsupported {
                    file: file.to_owned(),
                    key: "use_sliding_window".to_owned(),
                    reason: "Qwen2 sliding-window layers".to_owned(),
                });
            }
            ModelType::Qwen2 | ModelType::Llama => None,
        };
        let dtype = match root.opt_str("dtype")? {
            Some(d) => Some(d),
            None => root.opt_str("torch_dtype")?,
        };

        Ok(Self {
            model_type,
            hidden_size,
            intermediate_size: root.positive("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: root.positive_f64("rms_norm_eps")?,
            vocab_size: root.positive("vocab_size")?,
            max_position_embeddings,
            tie_word_embeddings: root.bool_or("tie_word_embeddings", false)?,
            qkv_bias,
            o_bias,
            mlp_bias,
            rope: RopeConfig::parse(&root, max_position_embeddings)?,
            sliding_window,
            dtype: dtype.map(str::to_owned),
        })
    }

    /// The `head_dim / 2` RoPE inverse frequencies, with this config's scaling
    /// applied (see [`RopeConfig::inv_freq`]).
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        self.rope.inv_freq(self.head_dim)
    }
}

/// 5.x `layer_types`: one entry per layer, each `"full_attention"`.
fn check_layer_types(root: &Fields<'_>, num_hidden_layers: usize) -> Result<(), HfConfigError> {
    let Some(value) = root.get("layer_types") else {
        return Ok(());
    };
    let items = value
        .as_array()
        .ok_or_else(|| root.wrong_type("layer_types", "an array of strings", value))?;
    if items.len() != num_hidden_layers {
        return Err(root.invalid(
            "layer_types",
            format!(
                "{} entries for num_hidden_layers = {num_hidden_layers}",
                items.len()
            ),
        ));
    }
    for (index, item) in items.iter().enumerate() {
        match item.as_str() {
            Some("full_attention") => {}
            Some(other) => {
                return Err(HfConfigError::UnsupportedLayerType {
                    file: root.file().to_owned(),
                    index,
                    value: other.to_owned(),
                });
            }
            None => {
                return Err(root.wrong_type(&format!("layer_types[{index}]"), "a string", item));
            }
        }
    }
    Ok(())
}
