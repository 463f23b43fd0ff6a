//! Replays fuzz inputs on stable Rust, through the very harnesses the fuzz
//! targets run (`fuzz/src/lib.rs` is compiled in as a module): every crash
//! input ever saved under `fuzz/regressions/<target>/`, every committed seed
//! under `fuzz/seeds/<target>/`, and the fixtures the fuzz corpora are seeded
//! from. A harness returning normally is the assertion; one that panics fails
//! the test naming the target and the file.

mod common;
#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    v.sort();
    v
}

/// A snapshot's text without insta's `---` header.
fn strip_insta_header(text: &str) -> String {
    let mut parts = text.splitn(3, "---\n");
    match (parts.next(), parts.next(), parts.next()) {
        (Some(""), Some(_), Some(body)) => body.to_string(),
        _ => text.to_string(),
    }
}

/// Every input of `target`: saved crashes, seeds and fixtures, as `(label, bytes)`.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = common::root();
    let mut paths = files_in(&root.join("fuzz/regressions").join(target));
    paths.extend(files_in(&root.join("fuzz/seeds").join(target)));
    let hf_dirs = || {
        files_in(&root.join("tests/fixtures/hf")).into_iter().chain(
            std::fs::read_dir(root.join("tests/fixtures/hf"))
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .flat_map(|d| files_in(&d)),
        )
    };
    let malformed = |sub: &str| files_in(&root.join("tests/malformed").join(sub));
    match target {
        "onnx_import" | "importer_verifier" => {
            paths.extend(common::fixtures());
            paths.extend(
                malformed("onnx")
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "onnx")),
            );
        }
        "gguf_parse" => paths.extend(malformed("gguf")),
        "safetensors_dir" => {
            paths.extend(hf_dirs().filter(|p| p.extension().is_some_and(|e| e == "safetensors")));
            for d in std::fs::read_dir(root.join("tests/malformed/hf"))
                .into_iter()
                .flatten()
                .flatten()
            {
                paths.push(d.path().join("model.safetensors"));
            }
        }
        "hf_config" => {
            paths.extend(hf_dirs().filter(|p| p.file_name().is_some_and(|n| n == "config.json")));
            for d in std::fs::read_dir(root.join("tests/malformed/hf"))
                .into_iter()
                .flatten()
                .flatten()
            {
                paths.push(d.path().join("config.json"));
            }
        }
        "text_ir" => paths.extend(malformed("ir")),
        _ => {}
    }
    let mut out: Vec<(String, Vec<u8>)> = paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), bytes)
        })
        .collect();
    if target == "text_ir" {
        for p in files_in(&root.join("tests/snapshots")) {
            let text = std::fs::read_to_string(&p).unwrap();
            out.push((
                p.display().to_string(),
                strip_insta_header(&text).into_bytes(),
            ));
        }
    }
    out
}

fn replay(target: &str) {
    let (_, run) = harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no harness `{target}`"));
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "{target}: no inputs");
    let mut failures = Vec::new();
    for (label, bytes) in &inputs {
        if std::panic::catch_unwind(|| run(bytes)).is_err() {
            failures.push(label.clone());
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: the harness panicked on {} of {} inputs:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn every_target_has_a_harness_and_a_seed() {
    let root = common::root();
    for (name, _) in harness::TARGETS {
        assert!(
            root.join(format!("fuzz/fuzz_targets/{name}.rs")).is_file(),
            "{name}"
        );
        assert!(
            !files_in(&root.join("fuzz/seeds").join(name)).is_empty(),
            "{name}: no seed"
        );
    }
}

#[test]
fn onnx_import() {
    replay("onnx_import");
}

#[test]
fn gguf_parse() {
    replay("gguf_parse");
}

#[test]
fn safetensors_dir() {
    replay("safetensors_dir");
}

#[test]
fn hf_config() {
    replay("hf_config");
}

#[test]
fn text_ir() {
    replay("text_ir");
}

#[test]
fn importer_verifier() {
    replay("importer_verifier");
}

/// The committed seeds are valid models, so each fuzzer starts from inputs
/// that reach the deep end of its importer.
#[test]
fn the_seeds_are_valid() {
    use ligerc_frontends::hf_config::LlamaConfig;
    use ligerc_frontends::llama::{
        SafetensorsDir, build_llama, import_gguf_bytes, shape_from_config,
    };
    let seeds = common::root().join("fuzz/seeds");
    let read = |rel: &str| std::fs::read(seeds.join(rel)).unwrap();
    let p = Path::new("seed");
    ligerc_frontends::onnx::import_onnx_bytes(read("onnx_import/tiny_matmul_relu.onnx").into(), p)
        .unwrap();
    import_gguf_bytes(read("gguf_parse/tiny_llama.gguf").into(), p).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(harness::TINY_CONFIG).unwrap();
    let cfg = LlamaConfig::from_json(&cfg, p).unwrap();
    let mut src = SafetensorsDir::from_bytes(
        p,
        "model.safetensors",
        read("safetensors_dir/tiny.safetensors").into(),
    )
    .unwrap();
    build_llama("seed", &shape_from_config(&cfg), &mut src).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&read("hf_config/tiny_config.json")).unwrap();
    LlamaConfig::from_json(&v, p).unwrap();
    let g = ligerc_ir::text::parse(&String::from_utf8(read("text_ir/tiny.ir")).unwrap()).unwrap();
    ligerc_ir::verify(&g).unwrap();
}

/// Open bugs the fuzzers found outside the code this suite covers (see
/// `fuzz/known/README.md`): each input under `fuzz/known/<target>/` must
/// still fail its harness the known way. When one stops failing, its bug is
/// fixed: move the file to `fuzz/regressions/<target>/`.
#[test]
fn known_bugs_still_reproduce() {
    let root = common::root();
    for (target, run) in harness::TARGETS {
        for p in files_in(&root.join("fuzz/known").join(target)) {
            if p.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            let payload = std::panic::catch_unwind(|| run(&bytes)).err();
            let msg = payload
                .as_ref()
                .and_then(|e| e.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            assert!(
                msg.contains("left a graph the verifier rejects"),
                "{}: no longer fails as known ({msg:?}); if the bug is fixed, move it to fuzz/regressions/{target}/",
                p.display()
            );
        }
    }
}
