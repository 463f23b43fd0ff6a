//! Liger ops: the key-derived forget gate and Liger Attention (LIGER.md §2–§3).
//!
//! `LigerGate(k_raw)` turns the key projection's output into a log-space
//! forget gate; `LigerAttention(q, k, v, q_rot, k_rot [, gate])` mixes a gated
//! linear recurrence on the un-rotated q, k with sliding-window softmax
//! attention on the rotated q, k:
//!
//! ```text
//! o = mix_window · SWA(q_rot, k_rot, v) + mix_linear · GRM(q, k, v, gate)
//! ```
//!
//! The window branch lets query `t` see keys `t − window ..= t`, i.e.
//! `window + 1` keys (the released Liger checkpoints' flash-attn semantics with
//! `window = 64`: 65 keys), with scale `1/√head_dim`.

use std::fmt;
use std::str::FromStr;

/// Which gated recurrence replaces softmax attention (the paper's Table 10/12 ablations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LigerVariant {
    /// Gated linear attention: φ = softmax over the head dim on q and k,
    /// per-channel gate `logsigmoid(k)/normalizer`, state `S = diag(α)S + k̃ᵀv`, `o = q̃S`.
    Gla,
    /// HGRN2: gate `logsigmoid(k)/normalizer` (normalizer 1 upstream), key replaced
    /// by `1 − α`, φ = softmax on q only.
    Hgrn2,
    /// Gated slot attention with `slots` slots: gate pooled from k to `slots`
    /// channels per head, two-pass recurrence, no feature map.
    Gsa,
    /// Gated retention: one scalar gate per head, `logsigmoid(mean_d k)/normalizer`,
    /// φ = softmax on q and k.
    Retention,
    /// Linear attention without a gate (α = 1), φ = softmax on q and k.
    Linear,
    /// The sliding-window branch alone (`mix_window` weights it, no recurrence).
    SwaOnly,
}

impl LigerVariant {
    /// Every variant.
    pub const ALL: [LigerVariant; 6] = [
        LigerVariant::Gla,
        LigerVariant::Hgrn2,
        LigerVariant::Gsa,
        LigerVariant::Retention,
        LigerVariant::Linear,
        LigerVariant::SwaOnly,
    ];

    /// The name used on the command line and in the text form.
    pub fn name(self) -> &'static str {
        match self {
            LigerVariant::Gla => "gla",
            LigerVariant::Hgrn2 => "hgrn2",
            LigerVariant::Gsa => "gsa",
            LigerVariant::Retention => "retention",
            LigerVariant::Linear => "linear",
            LigerVariant::SwaOnly => "swa-only",
        }
    }

    /// Whether the variant has a gate operand.
    pub fn has_gate(self) -> bool {
        matches!(
            self,
            LigerVariant::Gla | LigerVariant::Hgrn2 | LigerVariant::Gsa | LigerVariant::Retention
        )
    }

    /// Gate channels per KV head: `head_dim` for vector gates, `slots` for GSA, 1 for retention.
    pub fn gate_width(self, head_dim: usize, slots: usize) -> usize {
        match self {
            LigerVariant::Gsa => slots,
            LigerVariant::Retention => 1,
            _ => head_dim,
        }
    }

    /// The gate normalizer upstream uses (`gate_logit_normalizer`): 16 for GLA,
    /// GSA and retention, 1 for HGRN2.
    pub fn default_normalizer(self) -> f64 {
        match self {
            LigerVariant::Hgrn2 => 1.0,
            _ => 16.0,
        }
    }
}

impl fmt::Display for LigerVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LigerVariant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LigerVariant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = LigerVariant::ALL.iter().map(|v| v.name()).collect();
                format!("unknown Liger variant `{s}`; one of {}", names.join(", "))
            })
    }
}

/// The forget gate derived from the key projection: operand `k_raw [B,T,kv_heads·head_dim]`,
/// result log α `[B,T,kv_heads·gate_width]`, every entry ≤ 0.
///
/// - vector gates (GLA, HGRN2): `logsigmoid(k)/normalizer` per channel;
/// - GSA: each head's `head_dim` channels average-pooled to `slots` bins
///   (`AdaptiveAvgPool1d` bins), then `logsigmoid(·)/normalizer`;
/// - retention: each head's channels averaged to one, then `logsigmoid(·)/normalizer`.
#[derive(Clone, Debug, PartialEq)]
pub struct GateSpec {
    /// The variant the gate feeds.
    pub variant: LigerVariant,
    /// KV heads.
    pub kv_heads: usize,
    /// Features per head of `k_raw`.
    pub head_dim: usize,
    /// Slots (GSA only; otherwise ignored).
    pub slots: usize,
    /// Divisor of `logsigmoid`.
    pub normalizer: f64,
}

impl GateSpec {
    /// Gate channels per KV head.
    pub fn width(&self) -> usize {
        self.variant.gate_width(self.head_dim, self.slots)
    }
}

/// Liger Attention. Operands `q [B,T,heads·head_dim]`, `k`, `v [B,T,kv_heads·head_dim]`
/// (un-rotated q and k feed the recurrence), `q_rot`, `k_rot` (rotated, feed the
/// window branch), and, for gated variants, `gate` from [`GateSpec`].
#[derive(Clone, Debug, PartialEq)]
pub struct LigerSpec {
    /// The recurrence.
    pub variant: LigerVariant,
    /// Query heads.
    pub heads: usize,
    /// KV heads; the recurrent state is kept per KV head.
    pub kv_heads: usize,
    /// Features per head.
    pub head_dim: usize,
    /// Earlier keys a query sees in the window branch (it sees `window + 1` keys).
    pub window: usize,
    /// Weight of the window branch.
    pub mix_window: f64,
    /// Weight of the recurrent branch.
    pub mix_linear: f64,
    /// GSA slots (ignored by other variants).
    pub slots: usize,
}
