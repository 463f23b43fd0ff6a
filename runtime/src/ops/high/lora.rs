//! `Lora`: a linear layer with a low-rank branch,
//! `y = x·Wᵀ + (alpha/rank)·(x·Aᵀ)·Bᵀ (+ b)`.
//!
//! All three products go through the `Linear` kernel, so the frozen part
//! `x·Wᵀ (+ b)` is computed exactly as an un-adapted `Linear` computes it: with
//! `B = 0` (a fresh adapter) the result is bit-for-bit that of the `Linear`
//! the `lora` pass replaced. The branch is never merged into `W` here; that is
//! the `merge-lora` pass's job.

use super::kernels::{axpy, f32_data};
use super::linear::linear;
use crate::{Data, RuntimeError, Tensor};

/// `x·Wᵀ + (alpha/rank)·(x·Aᵀ)·Bᵀ (+ b)`: `x [.., in]`, `w [out, in]`,
/// `a [rank, in]`, `b [out, rank]`, optional `bias [out]` → `[.., out]`.
///
/// The two thin products run as `(x·Aᵀ)` then `·Bᵀ`, never forming `B·A`.
/// A rank of 0 is an empty branch (the result is `x·Wᵀ (+ b)`).
pub fn lora(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    alpha: f64,
) -> Result<Tensor, RuntimeError> {
    let (out_f, in_f) = match w.shape[..] {
        [o, i] => (o, i),
        _ => {
            return Err(RuntimeError::Shape(format!(
                "Lora weight must be [out, in], is {:?}",
                w.shape
            )));
        }
    };
    let rank = match a.shape[..] {
        [r, i] if i == in_f => r,
        _ => {
            return Err(RuntimeError::Shape(format!(
                "Lora lora_A is {:?}, expected [rank, {in_f}] for weight {:?}",
                a.shape, w.shape
            )));
        }
    };
    if b.shape != [out_f, rank] {
        return Err(RuntimeError::Shape(format!(
            "Lora lora_B is {:?}, expected [{out_f}, {rank}] for weight {:?} and lora_A {:?}",
            b.shape, w.shape, a.shape
        )));
    }
    if !alpha.is_finite() {
        return Err(RuntimeError::Unsupported(format!(
            "Lora alpha must be finite, is {alpha}"
        )));
    }
    f32_data(a, "Lora lora_A")?;
    f32_data(b, "Lora lora_B")?;
    let mut y = linear(x, w, bias)?;
    if rank == 0 {
        return Ok(y);
    }
    let down = linear(x, a, None)?;
    let up = linear(&down, b, None)?;
    let scale = (alpha / rank as f64) as f32;
    let up = f32_data(&up, "Lora branch")?;
    match &mut y.data {
        Data::F32(out) if out.len() == up.len() => axpy(out, scale, up),
        _ => {
            return Err(RuntimeError::Shape(format!(
                "Lora branch {:?} does not match the base product {:?}",
                up.len(),
                y.shape
            )));
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn adds_the_scaled_low_rank_branch() {
        // x [1, 2, 3], W [2, 3], A [1, 3], B [2, 1], alpha 2 ⇒ scale 2.
        let x = t(&[1, 2, 3], &[1.0, 2.0, 3.0, -1.0, 0.5, 0.0]);
        let w = t(&[2, 3], &[1.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
        let a = t(&[1, 3], &[1.0, 1.0, 1.0]);
        let b = t(&[2, 1], &[0.5, -1.0]);
        let bias = t(&[2], &[10.0, 20.0]);
        let y = lora(&x, &w, &a, &b, Some(&bias), 2.0).unwrap();
        // Row 0: xWᵀ = [1, 5], xAᵀ = 6, branch = 2·6·[0.5, -1] = [6, -12].
        // Row 1: xWᵀ = [-1, 0.5], xAᵀ = -0.5, branch = [-0.5, 1].
        assert_eq!(y.shape, vec![1, 2, 2]);
        assert_eq!(y.as_f32("y").unwrap(), &[17.0, 13.0, 8.5, 21.5]);
    }

    #[test]
    fn zero_b_is_the_plain_linear_bit_for_bit() {
        let n = 7 * 5;
        let xs: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
        let ws: Vec<f32> = (0..4 * 5)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) / 7.0)
            .collect();
        let x = t(&[7, 5], &xs);
        let w = t(&[4, 5], &ws);
        let a = t(&[2, 5], &[0.3; 10]);
        let b = t(&[4, 2], &[0.0; 8]);
        let plain = linear(&x, &w, None).unwrap();
        let adapted = lora(&x, &w, &a, &b, None, 8.0).unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            t.as_f32("t").unwrap().iter().map(|v| v.to_bits()).collect()
        };
        assert_eq!(bits(&plain), bits(&adapted));
    }

    #[test]
    fn mismatched_adapter_shapes_are_errors() {
        let x = t(&[1, 3], &[1.0; 3]);
        let w = t(&[2, 3], &[1.0; 6]);
        let err = lora(
            &x,
            &w,
            &t(&[1, 2], &[1.0; 2]),
            &t(&[2, 1], &[1.0; 2]),
            None,
            1.0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("lora_A"), "{err}");
        let err = lora(
            &x,
            &w,
            &t(&[1, 3], &[1.0; 3]),
            &t(&[2, 2], &[1.0; 4]),
            None,
            1.0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("lora_B"), "{err}");
    }
}
