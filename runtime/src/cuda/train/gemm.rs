//! Row-major matrix products on cuBLAS (`cublasGemmEx`, f32 compute): f32
//! operands, or bf16 operands (both; cuBLAS takes no mixed pair) into f32.

use super::super::Device;
use super::super::device::GemmParams;
use super::GpuTrainError;

/// One row-major operand: its address and whether it is stored transposed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Operand {
    /// Device address.
    pub(super) ptr: u64,
    /// `true`: the matrix used is the transpose of the stored one.
    pub(super) t: bool,
    /// `true`: stored as bf16.
    pub(super) bf16: bool,
}

impl Operand {
    /// The same operand, stored as bf16.
    pub(super) fn bf16(self) -> Operand {
        Operand { bf16: true, ..self }
    }
}

/// `C[m, n] = alpha·op(A)·op(B) + beta·C`, row-major: `A` is stored `[m, k]`
/// (`[k, m]` when `a.t`), `B` `[k, n]` (`[n, k]` when `b.t`).
///
/// Row-major `C = A·B` is column-major `Cᵀ = Bᵀ·Aᵀ`, so cuBLAS gets `B` first.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
    dev: &Device,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: u64,
) -> Result<(), GpuTrainError> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if a.bf16 != b.bf16 {
        return Err(GpuTrainError::Shape {
            node: "gemm".into(),
            problem: "internal: one bf16 and one f32 operand".into(),
        });
    }
    let dim = |v: usize| {
        i32::try_from(v).map_err(|_| GpuTrainError::Shape {
            node: "gemm".into(),
            problem: format!("dimension {v} exceeds cuBLAS's int range"),
        })
    };
    let (mi, ni, ki) = (dim(m)?, dim(n)?, dim(k.max(1))?);
    dev.gemm(&GemmParams {
        ta: b.t,
        tb: a.t,
        m: ni,
        n: mi,
        k: if k == 0 { 1 } else { ki },
        a: b.ptr,
        lda: if b.t { ki } else { ni },
        b: a.ptr,
        ldb: if a.t { mi } else { ki },
        c,
        ldc: ni,
        alpha: if k == 0 { 0.0 } else { alpha },
        beta,
        a_bf16: b.bf16,
        b_bf16: a.bf16,
        c_bf16: false,
    })?;
    Ok(())
}

/// A stored operand used as is.
pub(super) fn plain(ptr: u64) -> Operand {
    Operand {
        ptr,
        t: false,
        bf16: false,
    }
}

/// A stored operand used transposed.
pub(super) fn trans(ptr: u64) -> Operand {
    Operand {
        ptr,
        t: true,
        bf16: false,
    }
}
