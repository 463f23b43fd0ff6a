//! ONNX value types → IR types, and result dtypes of ops without declared types.

use ligerc_ir::{Attrs, DType, Dim, TensorType};

use super::tensor::dtype_from_onnx;
use crate::onnx_proto::{TypeProto, tensor_shape_proto::dimension, type_proto};

/// The IR type of an ONNX `TypeProto`, if it is a tensor of a supported dtype.
pub fn tensor_type(t: &TypeProto) -> Option<TensorType> {
    let type_proto::Value::TensorType(tt) = t.value.as_ref()? else {
        return None;
    };
    let dtype = dtype_from_onnx(tt.elem_type())?;
    let Some(shape) = &tt.shape else {
        return Some(TensorType::unranked(dtype));
    };
    let dims = shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as usize),
            Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
            _ => Dim::Unknown,
        })
        .collect();
    Some(TensorType::new(dtype, dims))
}

/// The dtype of result `port` of `op_type` when the file declares no type for it.
pub fn infer_dtype(op_type: &str, attrs: &Attrs, operands: &[DType], port: usize) -> DType {
    let first = operands.first().copied().unwrap_or(DType::F32);
    match op_type {
        "Shape" => DType::I64,
        "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "And" | "Or" | "Not"
        | "IsNaN" | "IsInf" => DType::Bool,
        "Cast" => match attrs.get("to") {
            Some(ligerc_ir::Attr::Int(code)) => dtype_from_onnx(*code as i32).unwrap_or(first),
            _ => first,
        },
        "CastLike" => operands.get(1).copied().unwrap_or(first),
        "Where" => operands.get(1).copied().unwrap_or(first),
        "ConstantOfShape" => match attrs.get("value") {
            Some(ligerc_ir::Attr::Tensor(t)) => t.dtype(),
            _ => DType::F32,
        },
        "Attention" if port > 0 => operands.get(1).copied().unwrap_or(first),
        _ => first,
    }
}
