//! Run-time tensors of the CPU backend: f32, i64 or bool, row-major.

use ligerc_ir::{DType, TensorData};

use crate::RuntimeError;

/// Element storage of a run-time tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// Every float dtype runs as f32.
    F32(Vec<f32>),
    /// Every integer dtype runs as i64.
    I64(Vec<i64>),
    /// Booleans.
    Bool(Vec<bool>),
}

/// A run-time tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements, row-major; `data.len() == shape.iter().product()`.
    pub data: Data,
}

impl Tensor {
    /// An f32 tensor; errors when the element count does not match the shape.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, RuntimeError> {
        check_len(&shape, data.len())?;
        Ok(Tensor {
            shape,
            data: Data::F32(data),
        })
    }

    /// An i64 tensor; errors when the element count does not match the shape.
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Tensor, RuntimeError> {
        check_len(&shape, data.len())?;
        Ok(Tensor {
            shape,
            data: Data::I64(data),
        })
    }

    /// A bool tensor; errors when the element count does not match the shape.
    pub fn bool(shape: Vec<usize>, data: Vec<bool>) -> Result<Tensor, RuntimeError> {
        check_len(&shape, data.len())?;
        Ok(Tensor {
            shape,
            data: Data::Bool(data),
        })
    }

    /// Converts IR tensor data (weights, constants) to a run-time tensor.
    pub fn from_data(t: &TensorData) -> Tensor {
        let shape = t.shape().to_vec();
        let data = match t.dtype() {
            d if d.is_float() => Data::F32(t.to_f32_vec()),
            DType::Bool => Data::Bool(t.to_i64_vec().into_iter().map(|v| v != 0).collect()),
            _ => Data::I64(t.to_i64_vec()),
        };
        Tensor { shape, data }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    /// The f32 elements, or an error naming `what` expected floats.
    pub fn as_f32(&self, what: &str) -> Result<&[f32], RuntimeError> {
        match &self.data {
            Data::F32(v) => Ok(v),
            _ => Err(RuntimeError::Type(format!(
                "{what}: expected a float tensor, got {}",
                self.kind()
            ))),
        }
    }

    /// The i64 elements, or an error naming `what` expected integers.
    pub fn as_i64(&self, what: &str) -> Result<&[i64], RuntimeError> {
        match &self.data {
            Data::I64(v) => Ok(v),
            _ => Err(RuntimeError::Type(format!(
                "{what}: expected an integer tensor, got {}",
                self.kind()
            ))),
        }
    }

    /// `f32`, `i64` or `bool`.
    pub fn kind(&self) -> &'static str {
        match &self.data {
            Data::F32(_) => "f32",
            Data::I64(_) => "i64",
            Data::Bool(_) => "bool",
        }
    }
}

fn check_len(shape: &[usize], len: usize) -> Result<(), RuntimeError> {
    let want = ligerc_ir::checked_numel(shape)
        .ok_or_else(|| RuntimeError::Shape(format!("shape {shape:?} overflows")))?;
    if want != len {
        return Err(RuntimeError::Shape(format!(
            "shape {shape:?} needs {want} elements, got {len}"
        )));
    }
    Ok(())
}
