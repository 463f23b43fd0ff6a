//! What every kernel needs: operand and attribute access, error messages
//! that name the op, axis normalization and checked shape arithmetic.

use std::fmt::Display;

use ligerc_ir::{AttrReader, OnnxOp, TensorType, checked_numel};

use crate::{Data, RuntimeError, Tensor};

/// One op invocation: its name, attributes, operands and declared results.
pub(super) struct Ctx<'a> {
    /// ONNX `op_type`.
    pub op: &'a str,
    /// Typed access to the attributes.
    pub attrs: AttrReader<'a>,
    /// Operands, in slot order.
    pub inputs: &'a [&'a Tensor],
    /// Declared result types.
    pub out_types: &'a [TensorType],
}

impl<'a> Ctx<'a> {
    /// Wraps one invocation of `op`.
    pub fn new(op: &'a OnnxOp, inputs: &'a [&'a Tensor], out_types: &'a [TensorType]) -> Self {
        Ctx {
            op: &op.op_type,
            attrs: AttrReader::new(&op.op_type, &op.attrs),
            inputs,
            out_types,
        }
    }

    /// Operand `i`, or a shape error when it is missing.
    pub fn input(&self, i: usize) -> Result<&'a Tensor, RuntimeError> {
        self.inputs
            .get(i)
            .copied()
            .ok_or_else(|| self.shape_err(format!("operand {i} is missing")))
    }

    /// Operand `i` if present.
    pub fn opt_input(&self, i: usize) -> Option<&'a Tensor> {
        self.inputs.get(i).copied()
    }

    /// A shape error naming the op.
    pub fn shape_err(&self, msg: impl Display) -> RuntimeError {
        RuntimeError::Shape(format!("{}: {msg}", self.op))
    }

    /// A type error naming the op.
    pub fn type_err(&self, msg: impl Display) -> RuntimeError {
        RuntimeError::Type(format!("{}: {msg}", self.op))
    }

    /// An "unsupported" error naming the op.
    pub fn unsupported(&self, msg: impl Display) -> RuntimeError {
        RuntimeError::Unsupported(format!("{}: {msg}", self.op))
    }

    /// The f32 elements of operand `i`.
    pub fn f32_input(&self, i: usize, what: &str) -> Result<&'a [f32], RuntimeError> {
        match &self.input(i)?.data {
            Data::F32(v) => Ok(v),
            _ => Err(self.type_err(format!(
                "{what} (operand {i}) must be a float tensor, got {}",
                self.input(i)?.kind()
            ))),
        }
    }

    /// The integer elements of operand `i` (shape operands, indices, axes).
    pub fn ints_input(&self, i: usize, what: &str) -> Result<&'a [i64], RuntimeError> {
        match &self.input(i)?.data {
            Data::I64(v) => Ok(v),
            _ => Err(self.type_err(format!(
                "{what} (operand {i}) must be an integer tensor, got {}",
                self.input(i)?.kind()
            ))),
        }
    }

    /// Operand `i` as one integer (a scalar or a one-element tensor).
    pub fn scalar_int_input(&self, i: usize, what: &str) -> Result<i64, RuntimeError> {
        match self.ints_input(i, what)? {
            [v] => Ok(*v),
            other => Err(self.shape_err(format!(
                "{what} (operand {i}) must hold one element, got {}",
                other.len()
            ))),
        }
    }

    /// Normalizes an axis in `[-rank, rank)` to `[0, rank)`.
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize, RuntimeError> {
        normalize_axis(axis, rank)
            .ok_or_else(|| self.shape_err(format!("axis {axis} is out of range for rank {rank}")))
    }

    /// Normalizes a list of axes and refuses duplicates.
    pub fn axes(&self, axes: &[i64], rank: usize) -> Result<Vec<usize>, RuntimeError> {
        let mut out = Vec::with_capacity(axes.len());
        for &a in axes {
            let a = self.axis(a, rank)?;
            if out.contains(&a) {
                return Err(self.shape_err(format!("axis {a} is listed twice in {axes:?}")));
            }
            out.push(a);
        }
        Ok(out)
    }

    /// Element count of `shape`, or a shape error on overflow.
    pub fn numel(&self, shape: &[usize]) -> Result<usize, RuntimeError> {
        checked_numel(shape).ok_or_else(|| self.shape_err(format!("shape {shape:?} overflows")))
    }

    /// Converts a dim value read from a tensor to `usize`, refusing negatives.
    pub fn dim(&self, v: i64, what: &str) -> Result<usize, RuntimeError> {
        usize::try_from(v).map_err(|_| self.shape_err(format!("{what}: dim {v} is negative")))
    }

    /// Builds a result tensor, checking its element count.
    pub fn tensor(&self, shape: Vec<usize>, data: Data) -> Result<Tensor, RuntimeError> {
        let t = Tensor { shape, data };
        let want = self.numel(&t.shape)?;
        if t.numel() != want {
            return Err(self.shape_err(format!(
                "internal: result {:?} needs {want} elements, got {}",
                t.shape,
                t.numel()
            )));
        }
        Ok(t)
    }
}

/// `axis` in `[-rank, rank)` mapped to `[0, rank)`.
pub(super) fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = i64::try_from(rank).ok()?;
    let a = if axis < 0 { axis.checked_add(r)? } else { axis };
    if (0..r).contains(&a) {
        usize::try_from(a).ok()
    } else {
        None
    }
}

/// Row-major (contiguous) strides of `shape`, in elements.
pub(super) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

/// Product of `dims` (saturating: callers have checked the whole shape).
pub(super) fn product(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}
