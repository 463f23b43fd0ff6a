//! `Embedding`: rows of a table picked by token ids.

use rayon::prelude::*;

use super::kernels::{consistent, f32_data};
use crate::{RuntimeError, Tensor};

/// `table[ids]`: `table [V, D]` (f32), `ids [..]` (integers) → `[.., D]`.
///
/// An id outside `0..V` is an error naming the id and `V`.
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor, RuntimeError> {
    let data = f32_data(table, "embedding table")?;
    let (vocab, dim) = match table.shape[..] {
        [v, d] => (v, d),
        _ => {
            return Err(RuntimeError::Shape(format!(
                "embedding table must be [vocab, dim], is {:?}",
                table.shape
            )));
        }
    };
    let id_values = ids.as_i64("token ids")?;
    consistent(ids, "token ids")?;
    if let Some(&bad) = id_values
        .iter()
        .find(|&&id| usize::try_from(id).map_or(true, |i| i >= vocab))
    {
        return Err(RuntimeError::Input(format!(
            "token id {bad} is out of range for a vocabulary of {vocab}"
        )));
    }
    let mut out = vec![0.0f32; id_values.len() * dim];
    if dim > 0 {
        out.par_chunks_mut(dim)
            .zip(id_values.par_iter())
            .for_each(|(row, &id)| {
                let start = id as usize * dim;
                row.copy_from_slice(&data[start..start + dim]);
            });
    }
    let mut shape = ids.shape.clone();
    shape.push(dim);
    Tensor::f32(shape, out)
}
