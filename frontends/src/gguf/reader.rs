//! The bounded GGUF parser: a cursor that checks every read against the bytes
//! left, and the header / metadata / tensor-info walk built on it.
//!
//! Every count read from the file is checked twice before anything is
//! allocated: against [`GgufLimits`] and against what could possibly fit in
//! the remaining bytes (each element has a minimum encoded size).

use std::collections::{BTreeMap, HashSet};

use super::value::type_id;
use super::{GgmlType, GgufError, GgufFile, GgufTensorInfo, GgufValue};

/// Upper bounds applied while parsing, so that a hostile file cannot make the
/// reader allocate or loop without limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufLimits {
    /// Longest string (key or value), in bytes.
    pub max_string_len: u64,
    /// Most elements in one metadata array.
    pub max_array_len: u64,
    /// Deepest array nesting (1: arrays of scalars only; 2: arrays of arrays).
    pub max_array_depth: u32,
    /// Most metadata key/value pairs.
    pub max_kv_count: u64,
    /// Most tensors.
    pub max_tensor_count: u64,
    /// Most dimensions of one tensor.
    pub max_dims: u32,
    /// Most elements in one tensor.
    pub max_tensor_elements: u64,
}

impl Default for GgufLimits {
    fn default() -> Self {
        Self {
            max_string_len: 16 << 20,
            max_array_len: 64 << 20,
            max_array_depth: 2,
            max_kv_count: 1 << 20,
            max_tensor_count: 1 << 20,
            max_dims: 8,
            max_tensor_elements: 1 << 40,
        }
    }
}

/// Default of `general.alignment`.
const DEFAULT_ALIGNMENT: u64 = 32;
/// Smallest encoded key/value pair: empty key (8) + type (4) + one byte.
const MIN_KV_BYTES: u64 = 13;
/// Smallest encoded tensor info: empty name (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;

/// A read position over the file bytes; `pos <= bytes.len()` always.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn truncated(&self, what: &'static str, needed: u64) -> GgufError {
        GgufError::Truncated {
            offset: self.pos,
            what,
            needed,
            available: self.remaining(),
            context: String::new(),
        }
    }

    /// Fails unless `count` items of at least `min_size` bytes each can fit.
    fn ensure_fits(&self, what: &'static str, count: u64, min_size: u64) -> Result<(), GgufError> {
        let needed = count.saturating_mul(min_size);
        if needed > self.remaining() as u64 {
            return Err(self.truncated(what, needed));
        }
        Ok(())
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        let slice = usize::try_from(n)
            .ok()
            .and_then(|n| self.bytes.get(self.pos..self.pos.checked_add(n)?))
            .ok_or_else(|| self.truncated(what, n))?;
        self.pos += slice.len();
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let (head, _) = self
            .bytes
            .get(self.pos..)
            .and_then(<[u8]>::split_first_chunk::<N>)
            .ok_or_else(|| self.truncated(what, N as u64))?;
        self.pos += N;
        Ok(*head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, GgufError> {
        self.array::<1>(what).map(u8::from_le_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, limits: &GgufLimits) -> Result<String, GgufError> {
        let len_at = self.pos;
        let len = self.u64("string length")?;
        if len > limits.max_string_len {
            return Err(GgufError::LimitExceeded {
                what: "string length",
                value: len,
                limit: limits.max_string_len,
                offset: len_at,
                context: String::new(),
            });
        }
        let bytes_at = self.pos;
        let bytes = self.take(len, "string bytes")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            offset: bytes_at,
            context: String::new(),
        })
    }
}

/// Smallest encoded size of one value of type `id`, or `None` if `id` is not
/// a GGUF value type.
fn min_value_size(id: u32) -> Option<u64> {
    Some(match id {
        type_id::U8 | type_id::I8 | type_id::BOOL => 1,
        type_id::U16 | type_id::I16 => 2,
        type_id::U32 | type_id::I32 | type_id::F32 => 4,
        type_id::U64 | type_id::I64 | type_id::F64 | type_id::STRING => 8,
        type_id::ARRAY => 12,
        _ => return None,
    })
}

fn read_value(
    cur: &mut Cursor<'_>,
    ty: u32,
    type_at: usize,
    depth: u32,
    limits: &GgufLimits,
) -> Result<GgufValue, GgufError> {
    Ok(match ty {
        type_id::U8 => GgufValue::U8(cur.u8("u8")?),
        type_id::I8 => GgufValue::I8(i8::from_le_bytes(cur.array("i8")?)),
        type_id::U16 => GgufValue::U16(u16::from_le_bytes(cur.array("u16")?)),
        type_id::I16 => GgufValue::I16(i16::from_le_bytes(cur.array("i16")?)),
        type_id::U32 => GgufValue::U32(cur.u32("u32")?),
        type_id::I32 => GgufValue::I32(i32::from_le_bytes(cur.array("i32")?)),
        type_id::U64 => GgufValue::U64(cur.u64("u64")?),
        type_id::I64 => GgufValue::I64(i64::from_le_bytes(cur.array("i64")?)),
        type_id::F32 => GgufValue::F32(f32::from_le_bytes(cur.array("f32")?)),
        type_id::F64 => GgufValue::F64(f64::from_le_bytes(cur.array("f64")?)),
        type_id::BOOL => {
            let offset = cur.pos;
            match cur.u8("bool")? {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                byte => {
                    return Err(GgufError::InvalidBool {
                        byte,
                        offset,
                        context: String::new(),
                    });
                }
            }
        }
        type_id::STRING => GgufValue::String(cur.string(limits)?),
        type_id::ARRAY => read_array(cur, type_at, depth, limits)?,
        type_id => {
            return Err(GgufError::UnknownValueType {
                type_id,
                offset: type_at,
                context: String::new(),
            });
        }
    })
}

fn read_array(
    cur: &mut Cursor<'_>,
    type_at: usize,
    depth: u32,
    limits: &GgufLimits,
) -> Result<GgufValue, GgufError> {
    if depth >= limits.max_array_depth {
        return Err(GgufError::LimitExceeded {
            what: "array nesting depth",
            value: u64::from(depth) + 1,
            limit: limits.max_array_depth.into(),
            offset: type_at,
            context: String::new(),
        });
    }
    let elem_at = cur.pos;
    let elem_ty = cur.u32("array element type")?;
    let min_size = min_value_size(elem_ty).ok_or(GgufError::UnknownValueType {
        type_id: elem_ty,
        offset: elem_at,
        context: String::new(),
    })?;
    let len_at = cur.pos;
    let len = cur.u64("array length")?;
    if len > limits.max_array_len {
        return Err(GgufError::LimitExceeded {
            what: "array length",
            value: len,
            limit: limits.max_array_len,
            offset: len_at,
            context: String::new(),
        });
    }
    cur.ensure_fits("array elements", len, min_size)?;
    // `len` fits in the remaining bytes, so it fits in usize.
    let mut items = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    for i in 0..len {
        let item = read_value(cur, elem_ty, elem_at, depth + 1, limits)
            .map_err(|e| e.within(|| format!(" in array element {i}")))?;
        items.push(item);
    }
    Ok(GgufValue::Array(items))
}

fn limit(what: &'static str, value: u64, limit: u64, offset: usize) -> Result<(), GgufError> {
    if value > limit {
        return Err(GgufError::LimitExceeded {
            what,
            value,
            limit,
            offset,
            context: String::new(),
        });
    }
    Ok(())
}

/// Reads the alignment from the metadata (default 32).
fn alignment(metadata: &BTreeMap<String, GgufValue>) -> Result<u64, GgufError> {
    const KEY: &str = "general.alignment";
    let Some(value) = metadata.get(KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let raw = value.as_integer().ok_or_else(|| GgufError::WrongType {
        key: KEY.to_owned(),
        expected: "u32",
        found: value.describe(),
    })?;
    match u32::try_from(raw) {
        Ok(a) if a.is_power_of_two() => Ok(a.into()),
        _ => Err(GgufError::BadAlignment {
            alignment: u64::try_from(raw).unwrap_or(0),
        }),
    }
}

fn read_tensor_info(
    cur: &mut Cursor<'_>,
    limits: &GgufLimits,
) -> Result<(GgufTensorInfo, u64), GgufError> {
    let name = cur.string(limits)?;
    let ctx = || format!(" in tensor `{name}`");
    let dims_at = cur.pos;
    let n_dims = cur.u32("n_dims").map_err(|e| e.within(ctx))?;
    limit("n_dims", n_dims.into(), limits.max_dims.into(), dims_at).map_err(|e| e.within(ctx))?;
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(cur.u64("dimension").map_err(|e| e.within(ctx))?);
    }
    let type_at = cur.pos;
    let type_id = cur.u32("ggml type").map_err(|e| e.within(ctx))?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownGgmlType {
        tensor: name.clone(),
        type_id,
        offset: type_at,
    })?;
    let rel_offset = cur.u64("tensor data offset").map_err(|e| e.within(ctx))?;

    let bad_shape = |reason: String| GgufError::BadShape {
        tensor: name.clone(),
        dims: dims.clone(),
        reason,
    };
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= limits.max_tensor_elements)
        .ok_or_else(|| bad_shape(format!("more than {} elements", limits.max_tensor_elements)))?;
    let block = ggml_type.block_size();
    let ne0 = dims.first().copied().unwrap_or(1);
    if !ne0.is_multiple_of(block) {
        return Err(bad_shape(format!(
            "ne[0] = {ne0} is not a multiple of the {ggml_type} block size {block}"
        )));
    }
    let n_bytes = (n_elements / block)
        .checked_mul(ggml_type.type_size())
        .ok_or_else(|| bad_shape("byte size overflows".to_owned()))?;
    let n_bytes =
        usize::try_from(n_bytes).map_err(|_| bad_shape("byte size overflows".to_owned()))?;
    let info = GgufTensorInfo {
        name,
        dims,
        ggml_type,
        offset: 0, // made absolute once the data section start is known
        n_bytes,
    };
    Ok((info, rel_offset))
}

/// Parses a whole GGUF file held in memory.
pub(crate) fn parse(bytes: &[u8], limits: &GgufLimits) -> Result<GgufFile, GgufError> {
    let mut cur = Cursor { bytes, pos: 0 };
    let magic = bytes.get(..4).unwrap_or(bytes);
    if magic != b"GGUF" {
        return Err(GgufError::BadMagic {
            found: magic.to_vec(),
        });
    }
    cur.pos = 4;
    let version = cur.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let count_at = cur.pos;
    let tensor_count = cur.u64("tensor count")?;
    limit(
        "tensor count",
        tensor_count,
        limits.max_tensor_count,
        count_at,
    )?;
    let kv_at = cur.pos;
    let kv_count = cur.u64("metadata key/value count")?;
    limit(
        "metadata key/value count",
        kv_count,
        limits.max_kv_count,
        kv_at,
    )?;
    cur.ensure_fits("metadata key/value pairs", kv_count, MIN_KV_BYTES)?;

    let mut metadata = BTreeMap::new();
    for index in 0..kv_count {
        let key_at = cur.pos;
        let key = cur
            .string(limits)
            .map_err(|e| e.within(|| format!(" in metadata key #{index}")))?;
        let ctx = || format!(" in metadata key `{key}`");
        let type_at = cur.pos;
        let ty = cur.u32("value type").map_err(|e| e.within(ctx))?;
        let value = read_value(&mut cur, ty, type_at, 0, limits).map_err(|e| e.within(ctx))?;
        if metadata.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                key,
                offset: key_at,
            });
        }
        metadata.insert(key, value);
    }
    let alignment = alignment(&metadata)?;

    cur.ensure_fits("tensor infos", tensor_count, MIN_TENSOR_INFO_BYTES)?;
    let mut infos = Vec::with_capacity(usize::try_from(tensor_count).unwrap_or(0));
    let mut names = HashSet::new();
    for index in 0..tensor_count {
        let (info, rel) = read_tensor_info(&mut cur, limits)
            .map_err(|e| e.within(|| format!(" in tensor info #{index}")))?;
        if !names.insert(info.name.clone()) {
            return Err(GgufError::DuplicateTensor { name: info.name });
        }
        if !rel.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedTensor {
                tensor: info.name,
                offset: rel,
                alignment,
            });
        }
        infos.push((info, rel));
    }

    // The data section starts at the next multiple of the alignment.
    let data_offset = (cur.pos as u64).next_multiple_of(alignment);
    let mut tensors = Vec::with_capacity(infos.len());
    for (mut info, rel) in infos {
        let start = data_offset.saturating_add(rel);
        let end = start.checked_add(info.n_bytes as u64);
        match (usize::try_from(start), end) {
            (Ok(start), Some(end)) if end <= bytes.len() as u64 => info.offset = start,
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    tensor: info.name,
                    start,
                    n_bytes: info.n_bytes as u64,
                    len: bytes.len(),
                });
            }
        }
        tensors.push(info);
    }

    Ok(GgufFile {
        version,
        metadata,
        tensors,
        alignment,
        data_offset: usize::try_from(data_offset).unwrap_or(usize::MAX),
    })
}
