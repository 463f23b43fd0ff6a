//! The generic (ONNX-level) ops the IR accepts, with their arities.
//!
//! These are the standard-domain ONNX operators that real Llama exports use
//! (torch legacy and dynamo exporters, opsets 13–23). Every op listed here is
//! executed by the CPU runtime; an op not listed is refused at import.

/// Arity of one generic op: operand count range and result count range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnnxSchema {
    /// ONNX `op_type`.
    pub op_type: &'static str,
    /// Fewest operands.
    pub min_inputs: usize,
    /// Most operands (trailing optional ones included).
    pub max_inputs: usize,
    /// Fewest results.
    pub min_outputs: usize,
    /// Most results.
    pub max_outputs: usize,
}

const fn s(
    op_type: &'static str,
    min_in: usize,
    max_in: usize,
    min_out: usize,
    max_out: usize,
) -> OnnxSchema {
    OnnxSchema {
        op_type,
        min_inputs: min_in,
        max_inputs: max_in,
        min_outputs: min_out,
        max_outputs: max_out,
    }
}

/// Every generic op, sorted by name.
pub const ONNX_OPS: &[OnnxSchema] = &[
    s("Abs", 1, 1, 1, 1),
    s("Add", 2, 2, 1, 1),
    s("And", 2, 2, 1, 1),
    s("Attention", 3, 6, 1, 4),
    s("Cast", 1, 1, 1, 1),
    s("CastLike", 2, 2, 1, 1),
    s("Concat", 1, usize::MAX, 1, 1),
    s("ConstantOfShape", 1, 1, 1, 1),
    s("Cos", 1, 1, 1, 1),
    s("Div", 2, 2, 1, 1),
    s("Equal", 2, 2, 1, 1),
    s("Erf", 1, 1, 1, 1),
    s("Exp", 1, 1, 1, 1),
    s("Expand", 2, 2, 1, 1),
    s("Flatten", 1, 1, 1, 1),
    s("Gather", 2, 2, 1, 1),
    s("GatherND", 2, 2, 1, 1),
    s("Gemm", 2, 3, 1, 1),
    s("Greater", 2, 2, 1, 1),
    s("GreaterOrEqual", 2, 2, 1, 1),
    s("Identity", 1, 1, 1, 1),
    s("IsInf", 1, 1, 1, 1),
    s("IsNaN", 1, 1, 1, 1),
    s("Less", 2, 2, 1, 1),
    s("LessOrEqual", 2, 2, 1, 1),
    s("Log", 1, 1, 1, 1),
    s("MatMul", 2, 2, 1, 1),
    s("Max", 1, usize::MAX, 1, 1),
    s("Min", 1, usize::MAX, 1, 1),
    s("Mul", 2, 2, 1, 1),
    s("Neg", 1, 1, 1, 1),
    s("Not", 1, 1, 1, 1),
    s("Or", 2, 2, 1, 1),
    s("Pow", 2, 2, 1, 1),
    s("RMSNormalization", 2, 2, 1, 1),
    s("Range", 3, 3, 1, 1),
    s("Reciprocal", 1, 1, 1, 1),
    s("ReduceMax", 1, 2, 1, 1),
    s("ReduceMean", 1, 2, 1, 1),
    s("ReduceSum", 1, 2, 1, 1),
    s("Relu", 1, 1, 1, 1),
    s("Reshape", 2, 2, 1, 1),
    s("RotaryEmbedding", 3, 4, 1, 1),
    s("Shape", 1, 1, 1, 1),
    s("Sigmoid", 1, 1, 1, 1),
    s("Sin", 1, 1, 1, 1),
    s("Slice", 3, 5, 1, 1),
    s("Softmax", 1, 1, 1, 1),
    s("Split", 1, 2, 1, usize::MAX),
    s("Sqrt", 1, 1, 1, 1),
    s("Squeeze", 1, 2, 1, 1),
    s("Sub", 2, 2, 1, 1),
    s("Tanh", 1, 1, 1, 1),
    s("Tile", 2, 2, 1, 1),
    s("Transpose", 1, 1, 1, 1),
    s("Trilu", 1, 2, 1, 1),
    s("Unsqueeze", 1, 2, 1, 1),
    s("Where", 3, 3, 1, 1),
];

/// The schema of `op_type`, if the IR supports it.
pub fn onnx_schema(op_type: &str) -> Option<&'static OnnxSchema> {
    ONNX_OPS
        .binary_search_by(|s| s.op_type.cmp(op_type))
        .ok()
        .and_then(|i| ONNX_OPS.get(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_so_lookup_works() {
        for w in ONNX_OPS.windows(2) {
            assert!(
                w[0].op_type < w[1].op_type,
                "{} !< {}",
                w[0].op_type,
                w[1].op_type
            );
        }
        assert_eq!(onnx_schema("MatMul").map(|s| s.max_inputs), Some(2));
        assert!(onnx_schema("LSTM").is_none());
    }
}
