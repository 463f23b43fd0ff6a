//! Small numeric helpers shared by the high-level kernels.

use crate::{RuntimeError, Tensor};

/// Dot product in f32 with eight independent partial sums, so the compiler
/// vectorises it.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    let pairs = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]) + tail
}

/// `y += a·x`.
pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// The f32 elements of `t`, checked to match its shape (tensor fields are
/// public, so a caller may have built an inconsistent one).
pub(crate) fn f32_data<'t>(t: &'t Tensor, what: &str) -> Result<&'t [f32], RuntimeError> {
    let data = t.as_f32(what)?;
    consistent(t, what)?;
    Ok(data)
}

/// Errors unless `t`'s element count matches its shape.
pub(crate) fn consistent(t: &Tensor, what: &str) -> Result<(), RuntimeError> {
    if ligerc_ir::checked_numel(&t.shape) != Some(t.numel()) {
        return Err(RuntimeError::Shape(format!(
            "{what} has {} elements, which does not match its shape {:?}",
            t.numel(),
            t.shape
        )));
    }
    Ok(())
}

/// The shape of `t` as `[batch, seq, features]`, or an error naming `what`.
pub(crate) fn rank3(t: &Tensor, what: &str) -> Result<(usize, usize, usize), RuntimeError> {
    match t.shape[..] {
        [b, s, f] => Ok((b, s, f)),
        _ => Err(RuntimeError::Shape(format!(
            "{what} must be [batch, seq, features], is {:?}",
            t.shape
        ))),
    }
}
