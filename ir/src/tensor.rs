//! Tensor data held by reference: weights, constants and attribute values.
//!
//! The bytes live in a [`bytes::Bytes`], so a weight sliced out of a
//! memory-mapped file is shared, never copied, by every node and pass that
//! touches it. Data is little-endian and row-major.

use bytes::Bytes;
use half::{bf16, f16};

use crate::{DType, IrError};

/// An immutable tensor: dtype, concrete shape and shared bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorData {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Bytes,
}

/// Product of dims, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl TensorData {
    /// Wraps `bytes` as a tensor, checking that their length matches the shape.
    pub fn new(dtype: DType, shape: Vec<usize>, bytes: Bytes) -> Result<Self, IrError> {
        let numel = checked_numel(&shape).ok_or_else(|| IrError::TensorSize {
            what: format!("shape {shape:?} overflows"),
        })?;
        let want = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| IrError::TensorSize {
                what: format!("{dtype}{shape:?} overflows"),
            })?;
        if bytes.len() != want {
            return Err(IrError::TensorSize {
                what: format!("{dtype}{shape:?} needs {want} bytes, got {}", bytes.len()),
            });
        }
        Ok(TensorData {
            dtype,
            shape,
            bytes,
        })
    }

    /// An f32 tensor from values (copied once).
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Self, IrError> {
        let mut out = Vec::with_capacity(values.len() * 4);
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        TensorData::new(DType::F32, shape, Bytes::from(out))
    }

    /// An i64 tensor from values (copied once).
    pub fn from_i64(shape: Vec<usize>, values: &[i64]) -> Result<Self, IrError> {
        let mut out = Vec::with_capacity(values.len() * 8);
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        TensorData::new(DType::I64, shape, Bytes::from(out))
    }

    /// Values of any dtype converted to `f64`, in `dtype`'s precision.
    pub fn from_f64_as(dtype: DType, shape: Vec<usize>, values: &[f64]) -> Result<Self, IrError> {
        let mut out = Vec::with_capacity(values.len() * dtype.size());
        for &v in values {
            match dtype {
                DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
                DType::F64 => out.extend_from_slice(&v.to_le_bytes()),
                DType::F16 => out.extend_from_slice(&f16::from_f64(v).to_le_bytes()),
                DType::BF16 => out.extend_from_slice(&bf16::from_f64(v).to_le_bytes()),
                DType::I64 => out.extend_from_slice(&(v as i64).to_le_bytes()),
                DType::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
                DType::I8 => out.push(v as i8 as u8),
                DType::U8 => out.push(v as u8),
                DType::Bool => out.push(u8::from(v != 0.0)),
            }
        }
        TensorData::new(dtype, shape, Bytes::from(out))
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Concrete shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The same data with another shape of equal element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Self, IrError> {
        TensorData::new(self.dtype, shape, self.bytes.clone())
    }

    /// Every element converted to `f32` (ints and bools by value).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let b = &self.bytes[..];
        match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => self.to_f64_vec().into_iter().map(|v| v as f32).collect(),
        }
    }

    /// Every element converted to `f64`.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let b = &self.bytes[..];
        match self.dtype {
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(le8(c)))
                .collect(),
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(le8(c)) as f64)
                .collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            DType::I8 => b.iter().map(|&v| v as i8 as f64).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&v| v as f64).collect(),
            DType::F32 | DType::F16 | DType::BF16 => {
                self.to_f32_vec().into_iter().map(f64::from).collect()
            }
        }
    }

    /// Every element converted to `i64` (floats truncated toward zero).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        let b = &self.bytes[..];
        match self.dtype {
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(le8(c)))
                .collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            DType::I8 => b.iter().map(|&v| v as i8 as i64).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&v| v as i64).collect(),
            _ => self.to_f64_vec().into_iter().map(|v| v as i64).collect(),
        }
    }
}

fn le8(c: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(c);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_checked() {
        let err = TensorData::new(DType::F32, vec![2, 3], Bytes::from(vec![0u8; 20]));
        assert!(matches!(err, Err(IrError::TensorSize { .. })));
        assert!(TensorData::new(DType::F32, vec![usize::MAX, 4], Bytes::new()).is_err());
    }

    #[test]
    fn conversions_round_trip() {
        let t = TensorData::from_f64_as(DType::BF16, vec![3], &[1.0, -2.5, 3.0]).unwrap();
        assert_eq!(t.to_f32_vec(), vec![1.0, -2.5, 3.0]);
        let i = TensorData::from_i64(vec![2], &[-7, 9]).unwrap();
        assert_eq!(i.to_f64_vec(), vec![-7.0, 9.0]);
    }
}
