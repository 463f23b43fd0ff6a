//! One (batch row, KV head) of LigerAttention: the window branch and the
//! recurrence in the requested form, mixed, on the head's own state.

use ligerc_ir::{LigerSpec, LigerVariant};

use super::feature::{Recurrence, prepare};
use super::gsa::{GsaDims, SlotOperands, gsa};
use super::state::HeadState;
use super::swa::{Window, window_attention};
use super::{Dims, Form, Operands, gla_chunked, gla_quadratic, gla_recurrent};

/// The operands of one (batch row, KV head), token-major: `q`, `q_rot`
/// `[T][G·D]` (the group's query heads), `k`, `v`, `k_rot` `[T][D]`, `gate`
/// `[T][width]` (empty without a gate).
pub(super) struct HeadInputs {
    pub(super) q: Vec<f32>,
    pub(super) k: Vec<f32>,
    pub(super) v: Vec<f32>,
    pub(super) q_rot: Vec<f32>,
    pub(super) k_rot: Vec<f32>,
    pub(super) gate: Vec<f32>,
}

/// `mix_window · SWA + mix_linear · GRM` of the head's `len` tokens,
/// `[T][G·D]`, starting from `state` and leaving it after the last token
/// (`Quadratic` neither reads nor updates it).
pub(super) fn run_head(
    spec: &LigerSpec,
    form: Form,
    len: usize,
    inputs: HeadInputs,
    state: &mut HeadState,
) -> Vec<f32> {
    let groups = spec.heads / spec.kv_heads;
    let d = spec.head_dim;
    let mut out = vec![0.0f32; len * groups * d];
    let window = Window {
        groups,
        head_dim: d,
        window: spec.window,
        mix: spec.mix_window as f32,
    };
    let HeadInputs {
        q,
        k,
        v,
        q_rot,
        k_rot,
        gate,
    } = inputs;
    match form {
        Form::Quadratic => window_attention(window, &q_rot, &k_rot, &v, &mut out),
        Form::Chunked(_) => {
            let keep = spec.window.min(state.ring.len());
            let mut keys = Vec::with_capacity((keep + len) * d);
            let mut values = Vec::with_capacity((keep + len) * d);
            state.ring.copy_last(keep, &mut keys, &mut values);
            keys.extend_from_slice(&k_rot);
            values.extend_from_slice(&v);
            window_attention(window, &q_rot, &keys, &values, &mut out);
            state.ring.extend(&k_rot, &v);
        }
        Form::Recurrent => {
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            for t in 0..len {
                state
                    .ring
                    .push(&k_rot[t * d..(t + 1) * d], &v[t * d..(t + 1) * d]);
                keys.clear();
                values.clear();
                state
                    .ring
                    .copy_last(state.ring.len(), &mut keys, &mut values);
                let rows = t * groups * d..(t + 1) * groups * d;
                window_attention(window, &q_rot[rows.clone()], &keys, &values, &mut out[rows]);
            }
        }
    }
    if spec.variant == LigerVariant::SwaOnly {
        return out;
    }
    let mut recurrent = vec![0.0f32; len * groups * d];
    match prepare(spec.variant, d, q, k, gate) {
        Recurrence::Keyed { q, k, g } => {
            let dims = Dims {
                groups,
                len,
                key: d,
                value: d,
            };
            let ops = Operands {
                q: &q,
                k: &k,
                v: &v,
                g: &g,
            };
            match form {
                Form::Quadratic => gla_quadratic::quadratic(dims, ops, &mut recurrent),
                Form::Chunked(chunk) => {
                    gla_chunked::chunked(dims, ops, chunk, &mut state.memory, &mut recurrent)
                }
                Form::Recurrent => {
                    gla_recurrent::recurrent(dims, ops, &mut state.memory, &mut recurrent)
                }
            }
        }
        Recurrence::Slots { q, k, s, g } => {
            let dims = GsaDims {
                groups,
                len,
                head_dim: d,
                slots: spec.slots,
            };
            let ops = SlotOperands {
                q: &q,
                k: &k,
                v: &v,
                s: &s,
                g: &g,
            };
            gsa(
                form,
                dims,
                ops,
                &mut state.slot_keys,
                &mut state.memory,
                &mut recurrent,
            );
        }
        Recurrence::None => {}
    }
    let mix = spec.mix_linear as f32;
    for (o, r) in out.iter_mut().zip(&recurrent) {
        *o += mix * r;
    }
    out
}
