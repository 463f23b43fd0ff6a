//! The load-time check for NaN and infinity in weights.
//!
//! A checkpoint with a non-finite weight produces NaN logits at best and a
//! silently wrong fine-tune at worst, so every loader runs [`check_finite`]
//! unless the user opts out (`--no-check-finite`). The scan reads the raw
//! bits (no conversion) and splits the weights over the available cores.

use std::path::Path;

use ligerc_ir::{DType, Graph, TensorData};

use crate::error::{ImportError, ImportResult};

/// The first weight (in name order) holding a NaN or an infinity, as an
/// [`ImportError::Tensor`] naming the file, the tensor, the first bad element
/// and how many there are. Integer weights and literal constants (exported
/// masks legitimately hold `-inf`) are not checked.
pub fn check_finite(graph: &Graph, path: &Path) -> ImportResult<()> {
    let weights: Vec<(&String, &TensorData)> = graph
        .weights
        .iter()
        .filter(|(_, t)| t.dtype().is_float())
        .collect();
    let total: usize = weights.iter().map(|(_, t)| t.bytes().len()).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(weights.len().max(1));
    // Small models are scanned inline; thread start-up would dominate.
    let bad = if threads <= 1 || total < (64 << 20) {
        weights.iter().find_map(|(n, t)| scan(t).map(|b| (*n, b)))
    } else {
        // Interleave so every thread gets a mix of large and small tensors.
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|k| {
                    let mine: Vec<_> = weights.iter().skip(k).step_by(threads).collect();
                    s.spawn(move || mine.into_iter().find_map(|(n, t)| scan(t).map(|b| (*n, b))))
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok().flatten())
                .min_by(|a, b| a.0.cmp(b.0))
        })
    };
    match bad {
        None => Ok(()),
        Some((name, b)) => Err(ImportError::Tensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            detail: format!(
                "{} non-finite value{} (first: {} at flat index {}); pass --no-check-finite to load it anyway",
                b.count,
                if b.count == 1 { "" } else { "s" },
                b.first_value,
                b.first_index
            ),
        }),
    }
}

/// Where a tensor is not finite.
struct NonFinite {
    first_index: usize,
    first_value: f64,
    count: usize,
}

/// Whether an element's bits (zero-extended to u64) are NaN or infinite.
type BitTest = fn(u64) -> bool;
/// An element's value from its bits, for the message.
type BitValue = fn(u64) -> f64;

fn scan(t: &TensorData) -> Option<NonFinite> {
    let b = t.bytes();
    // Each dtype: bytes per element, the NaN/inf test and the value of its bits.
    let (size, bad, value): (usize, BitTest, BitValue) = match t.dtype() {
        DType::F32 => (
            4,
            |x| (x as u32) & 0x7f80_0000 == 0x7f80_0000,
            |x| f64::from(f32::from_bits(x as u32)),
        ),
        DType::F64 => (
            8,
            |x| x & 0x7ff0_0000_0000_0000 == 0x7ff0_0000_0000_0000,
            f64::from_bits,
        ),
        DType::F16 => (
            2,
            |x| (x as u16) & 0x7c00 == 0x7c00,
            |x| half::f16::from_bits(x as u16).to_f64(),
        ),
        DType::BF16 => (
            2,
            |x| (x as u16) & 0x7f80 == 0x7f80,
            |x| half::bf16::from_bits(x as u16).to_f64(),
        ),
        _ => return None,
    };
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    let mut chunks = b.chunks_exact(size);
    let first = chunks.position(|c| bad(word(c)))?;
    let first_value = value(word(&b[first * size..(first + 1) * size]));
    let count = 1 + b[(first + 1) * size..]
        .chunks_exact(size)
        .filter(|c| bad(word(c)))
        .count();
    Some(NonFinite {
        first_index: first,
        first_value,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph_with(name: &str, t: TensorData) -> Graph {
        let mut g = Graph::new("g");
        let w = g.add_weight(name, t);
        g.add_output("y", w);
        g
    }

    #[test]
    fn finds_nan_and_inf_in_every_float_dtype() {
        for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                let t = TensorData::from_f64_as(dtype, vec![4], &[1.0, bad, 2.0, bad]).unwrap();
                let err = check_finite(&graph_with("w.bad", t), Path::new("m.onnx")).unwrap_err();
                let msg = err.to_string();
                assert!(
                    matches!(err, ImportError::Tensor { ref tensor, .. } if tensor == "w.bad"),
                    "{msg}"
                );
                assert!(
                    msg.contains("2 non-finite values") && msg.contains("flat index 1"),
                    "{dtype}: {msg}"
                );
            }
            let ok = TensorData::from_f64_as(dtype, vec![3], &[0.0, -1.5, 65000.0]).unwrap();
            check_finite(&graph_with("w", ok), Path::new("m.onnx")).unwrap();
        }
    }

    #[test]
    fn integer_weights_are_not_checked() {
        let t = TensorData::from_i64(vec![2], &[i64::MAX, -1]).unwrap();
        check_finite(&graph_with("ids", t), Path::new("m.onnx")).unwrap();
    }
}
