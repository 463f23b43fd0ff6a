//! `SwiGlu`: the gated activation of Llama's MLP.

use rayon::prelude::*;

use super::kernels::f32_data;
use crate::{RuntimeError, Tensor};

/// Elements handed to one rayon task.
const CHUNK: usize = 4096;

/// `silu(gate) · up` element-wise, `silu(g) = g · sigmoid(g)`; `gate` and `up`
/// must have the same shape.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor, RuntimeError> {
    let g = f32_data(gate, "SwiGlu gate")?;
    let u = f32_data(up, "SwiGlu up")?;
    if gate.shape != up.shape {
        return Err(RuntimeError::Shape(format!(
            "SwiGlu gate {:?} and up {:?} differ in shape",
            gate.shape, up.shape
        )));
    }
    let mut out = vec![0.0f32; g.len()];
    out.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                let sigmoid = 1.0 / (1.0 + (-g).exp());
                *o = g * sigmoid * u;
            }
        });
    Tensor::f32(gate.shape.clone(), out)
}
