//! Decoding tensor data to `f32`: plain F32 / F16 / BF16 and the 32-element
//! block formats Q8_0, Q4_0 and Q4_1 (layouts as in llama.cpp's
//! `ggml-common.h`; every scale is a little-endian f16).
//!
//! | type | block bytes | layout | value |
//! |------|-------------|--------|-------|
//! | Q8_0 | 34 | d, 32 × i8 q | `y[j] = d·q[j]` |
//! | Q4_0 | 18 | d, 16 × u8 nibbles | `y[j] = d·((q[j] & 0xF) − 8)`, `y[j+16] = d·((q[j] >> 4) − 8)` |
//! | Q4_1 | 20 | d, m, 16 × u8 nibbles | `y[j] = d·(q[j] & 0xF) + m`, `y[j+16] = d·(q[j] >> 4) + m` |

use half::{bf16, f16};

use super::{GgmlType, GgufError, GgufTensorInfo};

/// Elements per block of the Q8_0 / Q4_0 / Q4_1 formats.
const QK: usize = 32;

fn half_le(lo: u8, hi: u8) -> f32 {
    f16::from_le_bytes([lo, hi]).to_f32()
}

/// Decodes the `data` of tensor `t` (exactly `t.n_bytes` bytes) to `f32`s in
/// storage order (`ne[0]` fastest).
pub(crate) fn dequantize(data: &[u8], t: &GgufTensorInfo) -> Result<Vec<f32>, GgufError> {
    let n_elements = usize::try_from(t.n_elements()).ok();
    let expected_bytes = n_elements.and_then(|n| {
        let block = usize::try_from(t.ggml_type.block_size()).ok()?;
        let size = usize::try_from(t.ggml_type.type_size()).ok()?;
        n.is_multiple_of(block).then(|| n / block * size)
    });
    let (Some(n_elements), Some(expected)) = (n_elements, expected_bytes) else {
        return Err(GgufError::BadShape {
            tensor: t.name.clone(),
            dims: t.dims.clone(),
            reason: format!(
                "element count is not a whole number of {} blocks",
                t.ggml_type
            ),
        });
    };
    if data.len() != expected || expected != t.n_bytes {
        return Err(GgufError::TensorOutOfBounds {
            tensor: t.name.clone(),
            start: t.offset as u64,
            n_bytes: expected as u64,
            len: data.len(),
        });
    }
    let mut out = Vec::with_capacity(n_elements);
    match t.ggml_type {
        GgmlType::F32 => {
            let (words, _) = data.as_chunks::<4>();
            out.extend(words.iter().map(|w| f32::from_le_bytes(*w)));
        }
        GgmlType::F16 => {
            let (halves, _) = data.as_chunks::<2>();
            out.extend(halves.iter().map(|&[lo, hi]| half_le(lo, hi)));
        }
        GgmlType::BF16 => {
            let (halves, _) = data.as_chunks::<2>();
            out.extend(halves.iter().map(|h| bf16::from_le_bytes(*h).to_f32()));
        }
        GgmlType::Q8_0 => q8_0(data, &mut out),
        GgmlType::Q4_0 => q4_0(data, &mut out),
        GgmlType::Q4_1 => q4_1(data, &mut out),
        ggml_type => {
            return Err(GgufError::UnsupportedDequant {
                tensor: t.name.clone(),
                ggml_type,
            });
        }
    }
    Ok(out)
}

fn q8_0(data: &[u8], out: &mut Vec<f32>) {
    let (blocks, _) = data.as_chunks::<{ 2 + QK }>();
    for [d0, d1, qs @ ..] in blocks {
        let d = half_le(*d0, *d1);
        out.extend(qs.iter().map(|&q| f32::from(q as i8) * d));
    }
}

fn q4_0(data: &[u8], out: &mut Vec<f32>) {
    let (blocks, _) = data.as_chunks::<{ 2 + QK / 2 }>();
    let mut y = [0f32; QK];
    for [d0, d1, qs @ ..] in blocks {
        let d = half_le(*d0, *d1);
        let (low, high) = y.split_at_mut(QK / 2);
        for ((q, lo), hi) in qs.iter().zip(low).zip(high) {
            *lo = f32::from(i16::from(q & 0xF) - 8) * d;
            *hi = f32::from(i16::from(q >> 4) - 8) * d;
        }
        out.extend_from_slice(&y);
    }
}

fn q4_1(data: &[u8], out: &mut Vec<f32>) {
    let (blocks, _) = data.as_chunks::<{ 4 + QK / 2 }>();
    let mut y = [0f32; QK];
    for [d0, d1, m0, m1, qs @ ..] in blocks {
        let d = half_le(*d0, *d1);
        let m = half_le(*m0, *m1);
        let (low, high) = y.split_at_mut(QK / 2);
        for ((q, lo), hi) in qs.iter().zip(low).zip(high) {
            *lo = f32::from(q & 0xF) * d + m;
            *hi = f32::from(q >> 4) * d + m;
        }
        out.extend_from_slice(&y);
    }
}
