//! The fuzz harnesses: one function per target, each taking the raw fuzzer
//! input and driving one parser or importer the way ligerc does.
//!
//! Every function must return normally for *any* input: errors are fine, a
//! panic, a hang or an unbounded allocation is a bug. Where a stronger
//! property holds for accepted inputs (the text form round-trips, passes
//! leave a graph the verifier accepts), the harness asserts it.
//!
//! The same file is compiled twice: as the `ligerc-fuzz` library the
//! `fuzz_targets/*` binaries call (nightly, libFuzzer), and as a module of
//! `tests/fuzz_regressions.rs` (stable, CI), which replays every saved crash
//! input and seed through exactly these code paths. So it names no crate the
//! root package does not depend on, and carries no crate-level attributes.

use std::path::Path;

use ligerc_frontends::gguf::GgufFile;
use ligerc_frontends::hf_config::LlamaConfig;
use ligerc_frontends::llama::{
    SafetensorsDir, WeightSource, build_llama, import_gguf_bytes, shape_from_config,
};
use ligerc_frontends::onnx::import_onnx_bytes;
use ligerc_frontends::{ImportResult, check_finite};
use ligerc_ir::{Graph, TensorData, text};
use ligerc_passes::{DeadCodeElimination, PassContext, PassError, PassManager, Raise};

/// A harness: takes the fuzzer's bytes, returns normally or panics on a bug.
pub type Harness = fn(&[u8]);

/// Every harness, by target name (the names of `fuzz/fuzz_targets/*.rs`).
pub const TARGETS: [(&str, Harness); 6] = [
    ("onnx_import", onnx_import),
    ("gguf_parse", gguf_parse),
    ("safetensors_dir", safetensors_dir),
    ("hf_config", hf_config),
    ("text_ir", text_ir),
    ("importer_verifier", importer_verifier),
];

/// A model path in a folder that does not exist: errors name it, and ONNX
/// external data (resolved next to it) can never reach a real file.
const NOWHERE: &str = "/nonexistent-ligerc-fuzz";

/// The configuration `safetensors_dir` pairs every input with: a one-layer
/// Llama small enough that the fuzzer can write a whole valid checkpoint
/// (`fuzz/seeds/safetensors_dir/tiny.safetensors` is one).
pub const TINY_CONFIG: &str = r#"{
  "model_type": "llama", "hidden_act": "silu", "hidden_size": 8, "intermediate_size": 16,
  "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
  "rms_norm_eps": 1e-5, "vocab_size": 16, "max_position_embeddings": 32,
  "rope_theta": 10000.0, "tie_word_embeddings": false
}"#;

/// ONNX bytes → [`import_onnx_bytes`]; an imported graph must print, and its
/// text must parse back and print the same.
pub fn onnx_import(data: &[u8]) {
    let path = Path::new(NOWHERE).join("fuzz.onnx");
    let Ok(g) = import_onnx_bytes(data.to_vec().into(), &path) else {
        return;
    };
    let _ = check_finite(&g, &path);
    round_trip(&g);
}

/// GGUF bytes → [`GgufFile::parse`], dequantize every tensor, read every key
/// with every typed getter, then the whole GGUF importer.
pub fn gguf_parse(data: &[u8]) {
    // The importer starts with the same parse: when it fails, so would the import.
    let Ok(f) = GgufFile::parse(data) else {
        return;
    };
    {
        for t in &f.tensors {
            let _ = f.dequantize(data, t);
        }
        for key in f.metadata.keys() {
            let _ = f.get_u32(key);
            let _ = f.get_i64(key);
            let _ = f.get_f64(key);
            let _ = f.get_bool(key);
            let _ = f.get_str(key);
            let _ = f.get_str_array(key);
            let _ = f.get_f32_array(key);
            let _ = f.get_i64_array(key);
        }
    }
    let path = Path::new(NOWHERE).join("fuzz.gguf");
    if let Ok(m) = import_gguf_bytes(data.to_vec().into(), &path) {
        let _ = check_finite(&m.graph, &path);
        if let Err(e) = ligerc_ir::verify(&m.graph) {
            panic!("the GGUF importer returned a graph that does not verify: {e}");
        }
    }
}

/// Bytes as the `model.safetensors` of a directory whose config is
/// [`TINY_CONFIG`] → the Hugging Face importer (no file is read).
pub fn safetensors_dir(data: &[u8]) {
    let dir = Path::new(NOWHERE).join("tiny-hf");
    let Some(cfg) = serde_json::from_str(TINY_CONFIG)
        .ok()
        .and_then(|v| LlamaConfig::from_json(&v, &dir.join("config.json")).ok())
    else {
        panic!("TINY_CONFIG must parse");
    };
    let shape = shape_from_config(&cfg);
    let Ok(mut src) = SafetensorsDir::from_bytes(&dir, "model.safetensors", data.to_vec().into())
    else {
        return;
    };
    if let Ok(g) = build_llama("fuzz", &shape, &mut src) {
        let _ = check_finite(&g, &dir);
        round_trip(&g);
    }
}

/// A weight source with no weights: the builder's shape checks run, then the
/// first weight is reported missing.
struct NoWeights;

impl WeightSource for NoWeights {
    fn take(&mut self, _name: &str) -> ImportResult<Option<TensorData>> {
        Ok(None)
    }

    fn path(&self) -> &Path {
        Path::new(NOWHERE)
    }
}

/// Bytes as `config.json` → [`LlamaConfig::from_json`] → the Llama builder's
/// shape checks.
pub fn hf_config(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let file = Path::new(NOWHERE).join("config.json");
    let Ok(cfg) = LlamaConfig::from_json(&value, &file) else {
        return;
    };
    let shape = shape_from_config(&cfg);
    let _ = build_llama("fuzz", &shape, &mut NoWeights);
    // The builder refuses a head_dim above 2^22 before anything allocates this.
    if cfg.head_dim <= 1 << 22 {
        let _ = cfg.rope_inv_freq();
    }
}

/// Bytes as text IR → [`text::parse`] → verify → print → parse: a graph the
/// parser accepts must print, and the printed text must parse back and print
/// identically.
pub fn text_ir(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(g) = text::parse(src) else {
        return;
    };
    let _ = ligerc_ir::verify(&g);
    round_trip(&g);
}

/// Whether `importer_verifier` tolerates `PassError::Invalid` (set
/// `LIGERC_FUZZ_ALLOW_INVALID_PASS=1`): to keep fuzzing for other bugs while
/// a known one (`fuzz/known/importer_verifier/`) is open.
fn allow_invalid_pass() -> bool {
    static ALLOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOW.get_or_init(|| {
        std::env::var_os("LIGERC_FUZZ_ALLOW_INVALID_PASS").is_some_and(|v| v == "1")
    })
}

/// ONNX bytes → import → `raise` (allow-partial) and `dce`, verified after
/// each pass by the pass manager: a pass leaving an invalid graph is a bug.
pub fn importer_verifier(data: &[u8]) {
    let path = Path::new(NOWHERE).join("fuzz.onnx");
    let Ok(mut g) = import_onnx_bytes(data.to_vec().into(), &path) else {
        return;
    };
    if let Err(e) = ligerc_ir::verify(&g) {
        panic!("the ONNX importer returned a graph that does not verify: {e}");
    }
    let mut pm = PassManager::new();
    pm.add(Box::new(Raise {
        allow_partial: true,
    }));
    pm.add(Box::new(DeadCodeElimination));
    match pm.run(&mut g, &mut PassContext::default(), |_, _| {}) {
        Err(PassError::Invalid { pass, source }) if !allow_invalid_pass() => {
            panic!("pass `{pass}` left a graph the verifier rejects: {source}")
        }
        Err(_) => {}
        Ok(()) => round_trip(&g),
    }
}

/// `print(g)` succeeds, and `print(parse(print(g))) == print(g)`.
fn round_trip(g: &Graph) {
    let printed = match text::print(g) {
        Ok(t) => t,
        Err(e) => panic!("an acyclic graph failed to print: {e}"),
    };
    let again = match text::parse(&printed) {
        Ok(g) => g,
        Err(e) => panic!("printed text does not parse: {e}\n{printed}"),
    };
    match text::print(&again) {
        Ok(t) => assert_eq!(printed, t, "print(parse(print(g))) differs from print(g)"),
        Err(e) => panic!("a re-parsed graph failed to print: {e}"),
    }
}
