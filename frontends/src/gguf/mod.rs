//! GGUF (llama.cpp checkpoint) reading: header, metadata, tensor infos, and
//! dequantization of the common tensor types to `f32`.
//!
//! The parser works over a byte slice (the caller memory-maps the file) and
//! never panics: every read is bounds-checked, every count is capped by
//! [`GgufLimits`] and by what could fit in the bytes left, and tensor data
//! ranges are checked against the file length and `general.alignment`.
//! GGUF versions 2 and 3 (little-endian) are accepted.
//!
//! Shapes are kept in GGUF order: `dims[0]` (ggml's `ne[0]`) varies fastest.
//! A Hugging Face weight of shape `[out, in]` is stored with
//! `dims = [in, out]`, its data row-major `[out][in]`. Query/key projection
//! rows are permuted by llama.cpp's converter: see [`unpermute_qk_rows`].
//!
//! This module owns file parsing only; turning tensors into IR weights is the
//! importer's job.

mod error;
mod permute;
mod quant;
mod reader;
mod types;
mod value;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_smollm2;

use std::collections::BTreeMap;

pub use error::GgufError;
pub use permute::{permute_qk_rows, unpermute_qk_rows};
pub use reader::GgufLimits;
pub use types::GgmlType;
pub use value::GgufValue;

/// One tensor's description from the GGUF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// Tensor name (`"blk.0.attn_q.weight"`).
    pub name: String,
    /// Dimensions in GGUF order: `dims[0]` (`ne[0]`) is the fastest-varying.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file (checked to lie inside it).
    pub offset: usize,
    /// Size of the data in bytes.
    pub n_bytes: usize,
}

impl GgufTensorInfo {
    /// Number of elements (product of `dims`; bounded at parse time, and
    /// saturating at `u64::MAX` for a hand-made info).
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// The shape in row-major order, outermost first (`dims` reversed): the
    /// Hugging Face shape, e.g. `[out, in]` for a linear weight.
    pub fn shape_row_major(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file: metadata and tensor infos. Tensor data stays in the
/// caller's bytes; read it with [`GgufFile::tensor_data`] or
/// [`GgufFile::dequantize`].
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata key/value pairs, sorted by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor infos in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// Alignment of the data section and of every tensor offset in it.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: usize,
}

impl GgufFile {
    /// Parses `bytes` (a whole GGUF file) with the default [`GgufLimits`].
    pub fn parse(bytes: &[u8]) -> Result<Self, GgufError> {
        reader::parse(bytes, &GgufLimits::default())
    }

    /// Parses `bytes` (a whole GGUF file) with explicit limits.
    pub fn parse_with_limits(bytes: &[u8], limits: &GgufLimits) -> Result<Self, GgufError> {
        reader::parse(bytes, limits)
    }

    /// The tensor named `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw data of `t` inside `bytes` (the same bytes that were parsed).
    pub fn tensor_data<'a>(
        &self,
        bytes: &'a [u8],
        t: &GgufTensorInfo,
    ) -> Result<&'a [u8], GgufError> {
        t.offset
            .checked_add(t.n_bytes)
            .and_then(|end| bytes.get(t.offset..end))
            .ok_or_else(|| GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                start: t.offset as u64,
                n_bytes: t.n_bytes as u64,
                len: bytes.len(),
            })
    }

    /// Decodes tensor `t` from `bytes` (the same bytes that were parsed) to
    /// `f32`s in storage order (`dims[0]` fastest, i.e. row-major over
    /// [`GgufTensorInfo::shape_row_major`]). Supports F32, F16, BF16, Q8_0,
    /// Q4_0 and Q4_1; other types give [`GgufError::UnsupportedDequant`].
    pub fn dequantize(&self, bytes: &[u8], t: &GgufTensorInfo) -> Result<Vec<f32>, GgufError> {
        quant::dequantize(self.tensor_data(bytes, t)?, t)
    }

    // ── typed metadata getters ─────────────────────────────────────────────

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The value of `key`, or [`GgufError::MissingKey`].
    pub fn require(&self, key: &str) -> Result<&GgufValue, GgufError> {
        self.metadata.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    fn wrong_type(key: &str, expected: &'static str, found: &GgufValue) -> GgufError {
        GgufError::WrongType {
            key: key.to_owned(),
            expected,
            found: found.describe(),
        }
    }

    fn integer<T: TryFrom<i128>>(&self, key: &str, expected: &'static str) -> Result<T, GgufError> {
        let value = self.require(key)?;
        value
            .as_integer()
            .and_then(|v| T::try_from(v).ok())
            .ok_or_else(|| Self::wrong_type(key, expected, value))
    }

    /// `key` as a `u32`; any integer type is accepted if the value fits.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.integer(key, "u32")
    }

    /// `key` as a `u64`; any integer type is accepted if the value fits.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.integer(key, "u64")
    }

    /// `key` as a `usize`; any integer type is accepted if the value fits.
    pub fn get_usize(&self, key: &str) -> Result<usize, GgufError> {
        self.integer(key, "usize")
    }

    /// `key` as an `i64`; any integer type is accepted if the value fits.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        self.integer(key, "i64")
    }

    /// `key` as an `f32` (an `f64` value is rounded to `f32`).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match *self.require(key)? {
            GgufValue::F32(v) => Ok(v),
            GgufValue::F64(v) => Ok(v as f32),
            ref other => Err(Self::wrong_type(key, "f32", other)),
        }
    }

    /// `key` as an `f64` (an `f32` value is widened).
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        match *self.require(key)? {
            GgufValue::F32(v) => Ok(v.into()),
            GgufValue::F64(v) => Ok(v),
            ref other => Err(Self::wrong_type(key, "f64", other)),
        }
    }

    /// `key` as a `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match *self.require(key)? {
            GgufValue::Bool(v) => Ok(v),
            ref other => Err(Self::wrong_type(key, "bool", other)),
        }
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let value = self.require(key)?;
        value
            .as_str()
            .ok_or_else(|| Self::wrong_type(key, "string", value))
    }

    /// `key` as an array of any element type.
    pub fn get_array(&self, key: &str) -> Result<&[GgufValue], GgufError> {
        let value = self.require(key)?;
        value
            .as_array()
            .ok_or_else(|| Self::wrong_type(key, "array", value))
    }

    /// `key` as an array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let value = self.require(key)?;
        value
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(GgufValue::as_str)
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| Self::wrong_type(key, "array of strings", value))
    }

    /// `key` as an array of floats (f32 or f64 elements; e.g. `tokenizer.ggml.scores`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        let value = self.require(key)?;
        value
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|v| match *v {
                        GgufValue::F32(x) => Some(x),
                        GgufValue::F64(x) => Some(x as f32),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| Self::wrong_type(key, "array of floats", value))
    }

    /// `key` as an array of integers that fit in `i64` (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        let value = self.require(key)?;
        value
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|v| v.as_integer().and_then(|i| i64::try_from(i).ok()))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| Self::wrong_type(key, "array of integers", value))
    }

    /// `general.architecture` (`"llama"`), the prefix of the model's hyperparameter keys.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }
}
