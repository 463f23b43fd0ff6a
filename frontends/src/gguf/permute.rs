//! Undoing llama.cpp's reordering of the query and key projection rows.
//!
//! `convert_hf_to_gguf.py` (`LlamaModel.permute`) stores `q_proj` / `k_proj`
//! weights with each head's rows interleaved, so that ggml's "normal" RoPE
//! (adjacent pairs) computes what Hugging Face's rotate-half RoPE computes:
//!
//! ```text
//! w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2).reshape(rows, cols)
//! ```
//!
//! Within a head of `r` rows, permuted row `2i + k` is original row
//! `k·r/2 + i`. `n_head` is the query head count for `attn_q` and the
//! key/value head count for `attn_k`. GGUF dims of such a weight are
//! `[in, out]`; its data is row-major `[out][in]`, so `rows = out`,
//! `cols = in`.

use super::GgufError;

/// Checks the shape and returns the number of `f32`s in one head.
fn head_len(len: usize, n_head: usize, rows: usize, cols: usize) -> Result<usize, GgufError> {
    let bad = |reason: String| Err(GgufError::BadPermute { reason });
    let per_pair = n_head.checked_mul(2).filter(|&d| d > 0);
    if per_pair.is_none_or(|d| !rows.is_multiple_of(d)) {
        return bad(format!(
            "{rows} rows do not split into {n_head} heads of an even number of rows"
        ));
    }
    if rows.checked_mul(cols) != Some(len) {
        return bad(format!("{len} values are not {rows} rows × {cols} columns"));
    }
    Ok(rows / n_head * cols)
}

/// Undoes llama.cpp's q/k row permutation in place: the inverse of
/// [`permute_qk_rows`], i.e.
/// `w.reshape(n_head, rows/n_head/2, 2, cols).swapaxes(1, 2).reshape(rows, cols)`.
///
/// `data` is row-major `rows × cols`. Errors if `rows` is not a multiple of
/// `2 · n_head` or `data.len() != rows · cols`.
pub fn unpermute_qk_rows(
    data: &mut [f32],
    n_head: usize,
    rows: usize,
    cols: usize,
) -> Result<(), GgufError> {
    let head = head_len(data.len(), n_head, rows, cols)?;
    if head == 0 {
        return Ok(());
    }
    let mut scratch = vec![0f32; head];
    for block in data.chunks_exact_mut(head) {
        scratch.copy_from_slice(block);
        let (first, second) = block.split_at_mut(head / 2);
        // Permuted rows 2i and 2i + 1 go back to rows i and r/2 + i.
        for ((pair, a), b) in scratch
            .chunks_exact(2 * cols)
            .zip(first.chunks_exact_mut(cols))
            .zip(second.chunks_exact_mut(cols))
        {
            let (even, odd) = pair.split_at(cols);
            a.copy_from_slice(even);
            b.copy_from_slice(odd);
        }
    }
    Ok(())
}

/// Applies llama.cpp's q/k row permutation in place (what
/// `convert_hf_to_gguf.py` does before writing `attn_q` / `attn_k`):
/// `w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2).reshape(rows, cols)`.
///
/// Same shape requirements as [`unpermute_qk_rows`].
pub fn permute_qk_rows(
    data: &mut [f32],
    n_head: usize,
    rows: usize,
    cols: usize,
) -> Result<(), GgufError> {
    let head = head_len(data.len(), n_head, rows, cols)?;
    if head == 0 {
        return Ok(());
    }
    let mut scratch = vec![0f32; head];
    for block in data.chunks_exact_mut(head) {
        scratch.copy_from_slice(block);
        let (first, second) = scratch.split_at(head / 2);
        // Rows i and r/2 + i become rows 2i and 2i + 1.
        for ((pair, a), b) in block
            .chunks_exact_mut(2 * cols)
            .zip(first.chunks_exact(cols))
            .zip(second.chunks_exact(cols))
        {
            let (even, odd) = pair.split_at_mut(cols);
            even.copy_from_slice(a);
            odd.copy_from_slice(b);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{permute_qk_rows, unpermute_qk_rows};
    use crate::gguf::GgufError;

    #[test]
    fn permute_matches_the_numpy_formula() {
        // 1 head, 4 rows of 1 column: rows [0, 1, 2, 3] -> [0, 2, 1, 3].
        let mut w = vec![0.0, 1.0, 2.0, 3.0];
        permute_qk_rows(&mut w, 1, 4, 1).unwrap();
        assert_eq!(w, [0.0, 2.0, 1.0, 3.0]);
        // 2 heads of 6 rows: head-local [0..6] -> [0, 3, 1, 4, 2, 5].
        let mut w: Vec<f32> = (0..12).map(|x| x as f32).collect();
        permute_qk_rows(&mut w, 2, 12, 1).unwrap();
        assert_eq!(w, [0., 3., 1., 4., 2., 5., 6., 9., 7., 10., 8., 11.]);
    }

    #[test]
    fn unpermute_inverts_permute() {
        let (n_head, rows, cols) = (3, 24, 5);
        let original: Vec<f32> = (0..rows * cols).map(|x| x as f32 * 0.5 - 7.0).collect();
        let mut w = original.clone();
        permute_qk_rows(&mut w, n_head, rows, cols).unwrap();
        assert_ne!(w, original);
        unpermute_qk_rows(&mut w, n_head, rows, cols).unwrap();
        assert_eq!(w, original);
        // And the other way round.
        unpermute_qk_rows(&mut w, n_head, rows, cols).unwrap();
        permute_qk_rows(&mut w, n_head, rows, cols).unwrap();
        assert_eq!(w, original);
    }

    #[test]
    fn rejects_inconsistent_shapes() {
        let mut w = vec![0f32; 12];
        for (n_head, rows, cols) in [(0, 12, 1), (4, 12, 1), (1, 6, 3), (2, 4, 2)] {
            let err = unpermute_qk_rows(&mut w, n_head, rows, cols).unwrap_err();
            assert!(matches!(err, GgufError::BadPermute { .. }), "{err}");
        }
        let mut empty: Vec<f32> = vec![];
        unpermute_qk_rows(&mut empty, 2, 4, 0).unwrap();
    }
}
