//! Rotary position embedding settings: where transformers 4.x and 5.x keep
//! them, and the inverse frequencies they imply.
//!
//! | | theta | scaling |
//! |---|---|---|
//! | 4.x | `rope_theta` | `rope_scaling` (`rope_type` or older `type`) |
//! | 5.x | `rope_parameters.rope_theta` | `rope_parameters` (`rope_type`) |
//!
//! Theta defaults to 10000 (`LlamaConfig`'s default) when neither is given.

use serde_json::Value;

use super::HfConfigError;
use super::fields::Fields;

/// How RoPE frequencies are rescaled: the IR's own type, so a parsed config
/// and the graph built from it cannot disagree.
pub use ligerc_ir::RopeScaling;

/// RoPE base and scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// The base θ of the frequencies `θ^(-2i/d)`.
    pub theta: f64,
    /// Long-context rescaling.
    pub scaling: RopeScaling,
}

const DEFAULT_THETA: f64 = 10_000.0;

impl RopeConfig {
    /// Reads the RoPE settings from the root object of a config (either
    /// transformers generation); `max_position_embeddings` is the fallback
    /// for llama3's `original_max_position_embeddings`.
    pub(crate) fn parse(
        root: &Fields<'_>,
        max_position_embeddings: usize,
    ) -> Result<Self, HfConfigError> {
        let params = match root.opt_object("rope_parameters")? {
            Some(p) => Some(p),
            None => root.opt_object("rope_scaling")?,
        };
        if let Some(p) = &params
            && p.values().any(Value::is_object)
        {
            return Err(HfConfigError::Unsupported {
                file: root.file().to_owned(),
                key: p.path("*"),
                reason: "per-layer-type RoPE parameters".to_owned(),
            });
        }
        for fields in params.iter().chain([root]) {
            if let Some(f) = fields.opt_f64("partial_rotary_factor")?
                && f != 1.0
            {
                return Err(HfConfigError::Unsupported {
                    file: root.file().to_owned(),
                    key: fields.path("partial_rotary_factor"),
                    reason: format!("partial rotary embeddings (factor {f})"),
                });
            }
        }

        let theta_in_params = match &params {
            Some(p) if p.has("rope_theta") => Some(p.positive_f64("rope_theta")?),
            _ => None,
        };
        let theta = match theta_in_params {
            Some(t) => t,
            None if root.has("rope_theta") => root.positive_f64("rope_theta")?,
            None => DEFAULT_THETA,
        };

        let Some(p) = params else {
            return Ok(Self {
                theta,
                scaling: RopeScaling::None,
            });
        };
        let type_key = if p.has("rope_type") {
            "rope_type"
        } else {
            "type"
        };
        let scaling = match p.opt_str(type_key)?.unwrap_or("default") {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: p.positive_f64("factor")?,
            },
            "llama3" => {
                let low_freq_factor = p.positive_f64("low_freq_factor")?;
                let high_freq_factor = p.positive_f64("high_freq_factor")?;
                if high_freq_factor <= low_freq_factor {
                    return Err(p.invalid(
                        "high_freq_factor",
                        format!("must be greater than low_freq_factor ({high_freq_factor} <= {low_freq_factor})"),
                    ));
                }
                let original = match p.opt_usize("original_max_position_embeddings")? {
                    Some(n) => n,
                    None => root
                        .opt_usize("original_max_position_embeddings")?
                        .unwrap_or(max_position_embeddings),
                };
                if original == 0 {
                    return Err(p.invalid("original_max_position_embeddings", "must be at least 1"));
                }
                RopeScaling::Llama3 {
                    factor: p.positive_f64("factor")?,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position: original as f64,
                }
            }
            other => {
                return Err(HfConfigError::UnsupportedRopeType {
                    file: root.file().to_owned(),
                    key: p.path(type_key),
                    rope_type: other.to_owned(),
                });
            }
        };
        Ok(Self { theta, scaling })
    }

    /// The `head_dim / 2` inverse frequencies, as transformers'
    /// `_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`
    /// and `_compute_llama3_parameters` compute them (in f64; transformers uses f32).
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f64> {
        ligerc_ir::RopeSpec {
            heads: 1,
            head_dim,
            theta: self.theta,
            scaling: self.scaling.clone(),
        }
        .inv_freq()
    }
}
