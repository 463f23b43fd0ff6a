//! ONNX `TensorProto` → [`TensorData`], including external data files.

use std::path::Path;

use bytes::Bytes;
use ligerc_ir::{DType, TensorData};

use crate::error::{ImportError, ImportResult};
use crate::limits::ImportLimits;
use crate::onnx_proto::TensorProto;
use crate::onnx_proto::tensor_proto::{DataLocation, DataType};

/// Maps an ONNX element type code to an IR dtype.
pub fn dtype_from_onnx(code: i32) -> Option<DType> {
    Some(match DataType::try_from(code).ok()? {
        DataType::Float => DType::F32,
        DataType::Float16 => DType::F16,
        DataType::Bfloat16 => DType::BF16,
        DataType::Double => DType::F64,
        DataType::Int64 => DType::I64,
        DataType::Int32 => DType::I32,
        DataType::Int8 => DType::I8,
        DataType::Uint8 => DType::U8,
        DataType::Bool => DType::Bool,
        _ => return None,
    })
}

/// Maps an IR dtype to its ONNX element type code.
pub fn dtype_to_onnx(d: DType) -> i32 {
    (match d {
        DType::F32 => DataType::Float,
        DType::F16 => DataType::Float16,
        DType::BF16 => DataType::Bfloat16,
        DType::F64 => DataType::Double,
        DType::I64 => DataType::Int64,
        DType::I32 => DataType::Int32,
        DType::I8 => DataType::Int8,
        DType::U8 => DataType::Uint8,
        DType::Bool => DataType::Bool,
    }) as i32
}

/// Where external data files are looked up; each file is mapped once.
pub struct ExternalData<'a> {
    /// The model file (errors name it; external paths are relative to its folder).
    pub model_path: &'a Path,
    /// Files mapped so far.
    pub maps: std::cell::RefCell<std::collections::HashMap<std::path::PathBuf, Bytes>>,
    /// Bounds on declared tensor shapes.
    pub limits: ImportLimits,
}

impl<'a> ExternalData<'a> {
    /// External data next to `model_path`, with the default [`ImportLimits`].
    pub fn new(model_path: &'a Path) -> Self {
        ExternalData {
            model_path,
            maps: Default::default(),
            limits: ImportLimits::default(),
        }
    }
}

/// Converts one tensor. Raw data is sliced from the decoded buffer without copying.
pub fn tensor_data(t: &TensorProto, ext: &ExternalData<'_>) -> ImportResult<TensorData> {
    let path = ext.model_path;
    let bad = |detail: String| ImportError::Tensor {
        path: path.to_path_buf(),
        tensor: t.name().to_string(),
        detail,
    };
    let dtype = dtype_from_onnx(t.data_type())
        .ok_or_else(|| bad(format!("unsupported element type code {}", t.data_type())))?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        shape.push(usize::try_from(d).map_err(|_| bad(format!("negative dim {d}")))?);
    }
    ext.limits.check_usize_shape(&shape).map_err(&bad)?;
    let n_bytes = ligerc_ir::checked_numel(&shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let numel = n_bytes / dtype.size();
    let bytes: Bytes = if t.data_location() == DataLocation::External {
        read_external(t, ext, n_bytes).map_err(bad)?
    } else if let Some(raw) = &t.raw_data {
        raw.clone()
    } else {
        typed_fields(t, dtype, numel).map_err(bad)?
    };
    TensorData::new(dtype, shape, bytes).map_err(|e| bad(e.to_string()))
}

/// Reads tensor values stored in the type-specific repeated fields. The count
/// is checked before anything is allocated: the shape alone may be a lie.
fn typed_fields(t: &TensorProto, dtype: DType, numel: usize) -> Result<Bytes, String> {
    let count = match dtype {
        DType::F32 => t.float_data.len(),
        DType::F64 => t.double_data.len(),
        DType::I64 => t.int64_data.len(),
        DType::I32 | DType::F16 | DType::BF16 | DType::I8 | DType::U8 | DType::Bool => {
            t.int32_data.len()
        }
    };
    if count != numel {
        return Err(format!("holds {count} values, its shape needs {numel}"));
    }
    let mut out = Vec::with_capacity(numel * dtype.size());
    match dtype {
        DType::F32 => {
            t.float_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        DType::F64 => {
            t.double_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        DType::I64 => {
            t.int64_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        // int32_data holds the bit patterns of every narrower type.
        DType::I32 => {
            t.int32_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        DType::F16 | DType::BF16 => {
            t.int32_data
                .iter()
                .for_each(|v| out.extend_from_slice(&(*v as u16).to_le_bytes()));
        }
        DType::I8 | DType::U8 | DType::Bool => {
            t.int32_data.iter().for_each(|v| out.push(*v as u8));
        }
    }
    Ok(Bytes::from(out))
}

fn read_external(t: &TensorProto, ext: &ExternalData<'_>, want: usize) -> Result<Bytes, String> {
    let (mut location, mut offset, mut length) = (None, 0usize, None);
    for kv in &t.external_data {
        match kv.key() {
            "location" => location = Some(kv.value().to_string()),
            "offset" => {
                offset = kv
                    .value()
                    .parse()
                    .map_err(|_| format!("bad external offset `{}`", kv.value()))?
            }
            "length" => {
                length = Some(
                    kv.value()
                        .parse::<usize>()
                        .map_err(|_| format!("bad external length `{}`", kv.value()))?,
                )
            }
            _ => {}
        }
    }
    let location = location.ok_or("external data without a location")?;
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "external data location `{location}` must be a relative path inside the model's folder"
        ));
    }
    if let Some(len) = length
        && len != want
    {
        return Err(format!(
            "external length {len} but the shape needs {want} bytes"
        ));
    }
    let dir = ext.model_path.parent().unwrap_or(Path::new("."));
    let file_path = dir.join(rel);
    let cached = ext.maps.borrow().get(&file_path).cloned();
    let map = match cached {
        Some(m) => m,
        None => {
            let file = std::fs::File::open(&file_path)
                .map_err(|e| format!("{}: {e}", file_path.display()))?;
            // SAFETY: the map is read-only; ligerc never writes the file while it is mapped.
            let m = unsafe { memmap2::Mmap::map(&file) }
                .map_err(|e| format!("{}: {e}", file_path.display()))?;
            let m = Bytes::from_owner(m);
            ext.maps.borrow_mut().insert(file_path.clone(), m.clone());
            m
        }
    };
    let end = offset
        .checked_add(want)
        .ok_or("external offset overflows")?;
    if end > map.len() {
        return Err(format!(
            "external data {}[{offset}..{end}] is past the end of the file ({} bytes)",
            file_path.display(),
            map.len()
        ));
    }
    Ok(map.slice(offset..end))
}
