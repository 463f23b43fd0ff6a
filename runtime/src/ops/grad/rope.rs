//! Backward of Rope: the transposed rotation.
//!
//! A rotation's transpose is the rotation by the negated angle, so the input
//! gradient is the result gradient turned by `−θ`, from the very `cos`/`sin`
//! tables the forward uses (`high/rope.rs`'s [`RopeTables`] and [`rotate`]).

use ligerc_ir::RopeSpec;

use crate::ops::high::kernels::f32_data;
use crate::ops::high::rope::{RopeTables, Turn, check_rope_input, rotate};
use crate::{RuntimeError, Tensor};

/// Backward of `Rope` (`x [batch, seq, heads·head_dim]`) with token `t` at
/// absolute position `position_offset + t`: `dx = R(−θ)·dy`.
pub(super) fn rope_vjp(
    spec: &RopeSpec,
    position_offset: usize,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    let [x] = fwd else {
        return Err(RuntimeError::Shape(format!(
            "Rope takes 1 operand, got {}",
            fwd.len()
        )));
    };
    check_rope_input(x, spec, "Rope input")?;
    if dy.shape != x.shape {
        return Err(RuntimeError::Shape(format!(
            "Rope result gradient is {:?}, expected {:?}",
            dy.shape, x.shape
        )));
    }
    let (seq, features) = check_rope_input(dy, spec, "Rope result gradient")?;
    let g = f32_data(dy, "Rope result gradient")?;
    let tables = RopeTables::new(spec, seq, position_offset);
    let dx = Tensor::f32(
        x.shape.clone(),
        rotate(g, &tables, seq, features, Turn::Backward),
    )?;
    Ok(wrt.iter().map(|_| dx.clone()).collect())
}
