//! The one error type of the GGUF reader: every variant names what was being
//! read and where (byte offset, metadata key or tensor name).

use super::GgmlType;

/// Everything that can go wrong while reading a GGUF file or its tensors.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    // ── framing ────────────────────────────────────────────────────────────
    /// The file does not start with the bytes `GGUF`.
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The first four bytes of the file (fewer if the file is shorter).
        found: Vec<u8>,
    },
    /// A GGUF version other than 2 or 3.
    #[error("unsupported GGUF version {version} (supported: 2, 3)")]
    UnsupportedVersion {
        /// The version field of the header.
        version: u32,
    },
    /// The file ends before a field that should be there.
    #[error("truncated at byte {offset}: {what}{context} needs {needed} bytes, {available} left")]
    Truncated {
        /// Byte offset where the read started.
        offset: usize,
        /// What was being read (`"u64"`, `"string bytes"`, ...).
        what: &'static str,
        /// Bytes the read needed.
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: usize,
        /// Where in the structure: `" in metadata key `general.name`"`, or empty.
        context: String,
    },

    // ── limits ─────────────────────────────────────────────────────────────
    /// A count or length is above the configured [`super::GgufLimits`].
    #[error("{what} {value} at byte {offset}{context} exceeds the limit {limit}")]
    LimitExceeded {
        /// Which quantity (`"string length"`, `"array length"`, `"tensor count"`, ...).
        what: &'static str,
        /// The value read from the file.
        value: u64,
        /// The configured limit.
        limit: u64,
        /// Byte offset of the field.
        offset: usize,
        /// Where in the structure, or empty.
        context: String,
    },

    // ── metadata ───────────────────────────────────────────────────────────
    /// A string is not valid UTF-8.
    #[error("invalid UTF-8 in string at byte {offset}{context}")]
    InvalidUtf8 {
        /// Byte offset of the string bytes.
        offset: usize,
        /// Where in the structure, or empty.
        context: String,
    },
    /// A metadata value type id that GGUF does not define.
    #[error("unknown metadata value type {type_id} at byte {offset}{context}")]
    UnknownValueType {
        /// The type id read.
        type_id: u32,
        /// Byte offset of the type id.
        offset: usize,
        /// Where in the structure, or empty.
        context: String,
    },
    /// A boolean byte other than 0 or 1.
    #[error("invalid bool byte {byte} at byte {offset}{context}")]
    InvalidBool {
        /// The byte read.
        byte: u8,
        /// Byte offset of the byte.
        offset: usize,
        /// Where in the structure, or empty.
        context: String,
    },
    /// The same metadata key appears twice.
    #[error("duplicate metadata key `{key}` at byte {offset}")]
    DuplicateKey {
        /// The repeated key.
        key: String,
        /// Byte offset of the second occurrence.
        offset: usize,
    },
    /// A metadata key asked for by a getter is absent.
    #[error("missing metadata key `{key}`")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value has a type the getter cannot convert.
    #[error("metadata key `{key}`: expected {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// What the getter wanted (`"u32"`, `"array of strings"`, ...).
        expected: &'static str,
        /// What the file holds (`"f32"`, `"string"`, `"i64 -3"`, ...).
        found: String,
    },
    /// `general.alignment` is zero or not a power of two.
    #[error("general.alignment = {alignment} is not a non-zero power of two")]
    BadAlignment {
        /// The value read.
        alignment: u64,
    },

    // ── tensors ────────────────────────────────────────────────────────────
    /// Two tensors share a name.
    #[error("duplicate tensor name `{name}`")]
    DuplicateTensor {
        /// The repeated name.
        name: String,
    },
    /// A ggml type id this reader does not know.
    #[error("tensor `{tensor}`: unknown ggml type id {type_id} at byte {offset}")]
    UnknownGgmlType {
        /// The tensor name.
        tensor: String,
        /// The type id read.
        type_id: u32,
        /// Byte offset of the type id.
        offset: usize,
    },
    /// A tensor shape that ggml cannot store.
    #[error("tensor `{tensor}`: bad shape {dims:?}: {reason}")]
    BadShape {
        /// The tensor name.
        tensor: String,
        /// Its dims in GGUF order (`ne[0]` first).
        dims: Vec<u64>,
        /// What is wrong.
        reason: String,
    },
    /// A tensor data offset that is not a multiple of the file's alignment.
    #[error(
        "tensor `{tensor}`: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        /// The tensor name.
        tensor: String,
        /// The offset relative to the start of the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// Tensor data that does not lie inside the file (or the given bytes).
    #[error(
        "tensor `{tensor}`: data [{start}, {start} + {n_bytes}) lies outside the {len} bytes available"
    )]
    TensorOutOfBounds {
        /// The tensor name.
        tensor: String,
        /// Absolute start offset (saturated at `u64::MAX`).
        start: u64,
        /// Size of the tensor data.
        n_bytes: u64,
        /// Length of the file or slice.
        len: usize,
    },
    /// [`super::GgufFile::dequantize`] does not handle this ggml type.
    #[error(
        "tensor `{tensor}`: dequantization of ggml type {ggml_type} is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)"
    )]
    UnsupportedDequant {
        /// The tensor name.
        tensor: String,
        /// Its type.
        ggml_type: GgmlType,
    },
    /// Rows cannot be un-permuted with the given head count and shape.
    #[error("cannot un-permute q/k rows: {reason}")]
    BadPermute {
        /// What is inconsistent.
        reason: String,
    },
}

impl GgufError {
    /// Appends `ctx()` to the `context` of a low-level error, so that a
    /// truncated string says which array element, key or tensor it belonged to.
    pub(crate) fn within(mut self, ctx: impl FnOnce() -> String) -> Self {
        match &mut self {
            Self::Truncated { context, .. }
            | Self::LimitExceeded { context, .. }
            | Self::InvalidUtf8 { context, .. }
            | Self::UnknownValueType { context, .. }
            | Self::InvalidBool { context, .. } => context.push_str(&ctx()),
            _ => {}
        }
        self
    }
}
