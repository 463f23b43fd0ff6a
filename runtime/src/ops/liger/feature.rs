//! Per-variant preparation of the recurrence's operands: feature maps
//! (softmax over the head dim), the key HGRN2 derives from its gate, the
//! broadcast of retention's scalar gate (LIGER.md §2.4, §3 table, §4).

use ligerc_ir::LigerVariant;

/// `log σ(x)`, stable for any `x`: `min(x, 0) − ln(1 + e^{−|x|})`.
pub(crate) fn logsigmoid(x: f32) -> f32 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

/// Softmax of every `width`-long row of `x`, in place.
pub(crate) fn softmax_rows(x: &mut [f32], width: usize) {
    if width == 0 {
        return;
    }
    for row in x.chunks_mut(width) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0f32;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

/// `1 − e^{γ}` for every log-gate `γ` (exact near `γ = 0`).
fn one_minus_exp(gate: &[f32]) -> Vec<f32> {
    gate.iter().map(|g| -g.exp_m1()).collect()
}

/// The recurrence of one (batch row, KV head), operands laid out token-major:
/// queries `[T][G·D]`, everything else `[T][·]`.
pub(super) enum Recurrence {
    /// `S_t = diag(e^{g_t}) S_{t−1} + k_tᵀ v_t`, `o_t = q_t S_t` (GLA, HGRN2,
    /// retention, linear), with feature maps already applied; `g` is `[T][D]`.
    Keyed {
        /// Feature-mapped queries `[T][G·D]`.
        q: Vec<f32>,
        /// Keys `[T][D]` (feature-mapped, or `1 − α` for HGRN2).
        k: Vec<f32>,
        /// Per-channel log-gates `[T][D]`.
        g: Vec<f32>,
    },
    /// GSA's two-pass slot recurrence on raw q, k with `[T][M]` gates.
    Slots {
        /// Raw queries `[T][G·D]`.
        q: Vec<f32>,
        /// Raw keys `[T][D]`.
        k: Vec<f32>,
        /// Slot writes `s = 1 − e^{γ}` `[T][M]`.
        s: Vec<f32>,
        /// Log-gates `γ` `[T][M]`.
        g: Vec<f32>,
    },
    /// No recurrence (swa-only).
    None,
}

/// Builds the recurrence of `variant` from raw `q [T][G·D]`, `k [T][D]` and
/// the gate operand `[T][width]` (empty when the variant has none).
pub(super) fn prepare(
    variant: LigerVariant,
    head_dim: usize,
    mut q: Vec<f32>,
    mut k: Vec<f32>,
    gate: Vec<f32>,
) -> Recurrence {
    let d = head_dim;
    match variant {
        LigerVariant::Gla => {
            softmax_rows(&mut q, d);
            softmax_rows(&mut k, d);
            Recurrence::Keyed { q, k, g: gate }
        }
        LigerVariant::Hgrn2 => {
            softmax_rows(&mut q, d);
            Recurrence::Keyed {
                q,
                k: one_minus_exp(&gate),
                g: gate,
            }
        }
        LigerVariant::Retention => {
            softmax_rows(&mut q, d);
            softmax_rows(&mut k, d);
            let g = gate
                .iter()
                .flat_map(|&g| std::iter::repeat_n(g, d))
                .collect();
            Recurrence::Keyed { q, k, g }
        }
        LigerVariant::Linear => {
            softmax_rows(&mut q, d);
            softmax_rows(&mut k, d);
            let g = vec![0.0; k.len()];
            Recurrence::Keyed { q, k, g }
        }
        LigerVariant::Gsa => Recurrence::Slots {
            s: one_minus_exp(&gate),
            q,
            k,
            g: gate,
        },
        LigerVariant::SwaOnly => Recurrence::None,
    }
}
