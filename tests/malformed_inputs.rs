//! The malformed-input suite: every hand-made bad file in `tests/malformed/`
//! (written by `scripts/make_malformed.py`, listed in its `MANIFEST.json`) is
//! refused with the exact error kind and a message naming the file and the
//! tensor, node or key at fault — through the library and through the CLI,
//! which exits 2 and leaves no output file (and an existing one untouched).

mod common;
use common::*;

use std::path::{Path, PathBuf};

use ligerc::frontends::ImportError;
use ligerc::ir::IrError;

/// One manifest entry.
struct Case {
    /// Path under `tests/malformed` (a file, or a directory for Hugging Face cases).
    rel: String,
    /// `ImportError` variant name, or `Parse` for text IR.
    kind: String,
    /// A phrase the error message must contain.
    needle: String,
}

impl Case {
    fn path(&self) -> PathBuf {
        malformed_dir().join(&self.rel)
    }

    fn is_text_ir(&self) -> bool {
        self.rel.ends_with(".ir")
    }

    /// The file or directory name, which every message must mention.
    fn name(&self) -> String {
        Path::new(&self.rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

fn malformed_dir() -> PathBuf {
    root().join("tests/malformed")
}

fn manifest() -> Vec<Case> {
    let text = std::fs::read_to_string(malformed_dir().join("MANIFEST.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let field = |c: &serde_json::Value, k: &str| c[k].as_str().unwrap().to_string();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            rel: field(c, "path"),
            kind: field(c, "kind"),
            needle: field(c, "needle"),
        })
        .collect()
}

fn variant(e: &ImportError) -> &'static str {
    match e {
        ImportError::Io { .. } => "Io",
        ImportError::Malformed { .. } => "Malformed",
        ImportError::UnsupportedOp { .. } => "UnsupportedOp",
        ImportError::Unsupported { .. } => "Unsupported",
        ImportError::Tensor { .. } => "Tensor",
        ImportError::Graph { .. } => "Graph",
    }
}

#[test]
fn the_suite_covers_every_format_with_at_least_40_cases() {
    let cases = manifest();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    for prefix in ["onnx/", "gguf/", "hf/", "ir/"] {
        let n = cases.iter().filter(|c| c.rel.starts_with(prefix)).count();
        assert!(n >= 8, "{prefix}: only {n} cases");
    }
    for c in &cases {
        assert!(c.path().exists(), "{} is listed but missing", c.rel);
    }
    // Every file in the folder belongs to a case (companion data files to the case they serve).
    for dir in ["onnx", "gguf", "ir"] {
        for e in std::fs::read_dir(malformed_dir().join(dir)).unwrap() {
            let p = e.unwrap().path();
            let rel = format!("{dir}/{}", p.file_name().unwrap().to_string_lossy());
            let stem = rel
                .rsplit_once('.')
                .map_or(rel.as_str(), |(s, _)| s)
                .to_string();
            assert!(
                cases
                    .iter()
                    .any(|c| c.rel == rel || c.rel.starts_with(&format!("{stem}."))),
                "{rel} is not in MANIFEST.json"
            );
        }
    }
}

#[test]
fn the_library_returns_the_exact_error_kind() {
    let mut failures = Vec::new();
    for c in manifest() {
        let msg = if c.is_text_ir() {
            let src = std::fs::read_to_string(c.path()).unwrap();
            match ligerc::ir::text::parse(&src) {
                Err(e @ IrError::Parse { .. }) => e.to_string(),
                Err(e) => {
                    failures.push(format!("{}: expected a parse error, got {e:?}", c.rel));
                    continue;
                }
                Ok(_) => {
                    failures.push(format!("{}: parsed", c.rel));
                    continue;
                }
            }
        } else {
            match ligerc::load_model(&c.path()) {
                Ok(_) => {
                    failures.push(format!("{}: imported without error", c.rel));
                    continue;
                }
                Err(e) => {
                    let msg = e.to_string();
                    if variant(&e) != c.kind {
                        failures.push(format!(
                            "{}: expected ImportError::{}, got {}: {msg}",
                            c.rel,
                            c.kind,
                            variant(&e)
                        ));
                        continue;
                    }
                    if !msg.contains(&c.name()) {
                        failures.push(format!("{}: message does not name the file: {msg}", c.rel));
                    }
                    msg
                }
            }
        };
        if !msg.contains(&c.needle) {
            failures.push(format!("{}: message lacks `{}`: {msg}", c.rel, c.needle));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_cli_exits_2_and_leaves_outputs_alone() {
    let dir = tempdir("malformed-cli");
    let fresh = dir.join("fresh.onnx");
    let previous = dir.join("previous.onnx");
    let before = b"the output of an earlier, successful run";
    let mut failures = Vec::new();
    for c in manifest().into_iter().filter(|c| !c.is_text_ir()) {
        std::fs::write(&previous, before).unwrap();
        for out in [&fresh, &previous] {
            let o = ligerc(&[
                c.path().to_str().unwrap(),
                "--emit",
                "onnx",
                "-o",
                out.to_str().unwrap(),
            ]);
            let err = String::from_utf8_lossy(&o.stderr);
            if o.status.code() != Some(2) {
                failures.push(format!("{}: exit {:?}: {err}", c.rel, o.status.code()));
            }
            if err.contains("panicked") || !err.contains(&c.needle) || !err.contains(&c.name()) {
                failures.push(format!(
                    "{}: stderr lacks `{}` or `{}`: {err}",
                    c.rel,
                    c.needle,
                    c.name()
                ));
            }
        }
        if fresh.exists() {
            failures.push(format!("{}: created {}", c.rel, fresh.display()));
            let _ = std::fs::remove_file(&fresh);
        }
        if std::fs::read(&previous).unwrap() != before {
            failures.push(format!("{}: changed the existing output", c.rel));
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "previous.onnx")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn no_check_finite_loads_models_with_nan_weights() {
    let nan_cases: Vec<Case> = manifest()
        .into_iter()
        .filter(|c| c.rel.contains("nan_weight") || c.rel.contains("inf_weight"))
        .collect();
    assert!(nan_cases.len() >= 4);
    let opts = ligerc::LoadOptions {
        check_finite: false,
    };
    for c in &nan_cases {
        if let Err(e) = ligerc::load_model_with(&c.path(), &opts) {
            panic!("{}: {e}", c.rel);
        }
        let o = ligerc(&[
            c.path().to_str().unwrap(),
            "--no-check-finite",
            "--emit",
            "ir",
        ]);
        assert!(
            o.status.success(),
            "{}: {}",
            c.rel,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // `run` and `bench` take the flag too (they share the loading options).
    let c = &nan_cases[0];
    let o = ligerc(&["run", c.path().to_str().unwrap(), "--ids", "1,2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(2) && err.contains("non-finite"),
        "{err}"
    );
    let o = ligerc(&[
        "bench",
        c.path().to_str().unwrap(),
        "--import-only",
        "--no-check-finite",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A minimal protobuf writer for the graphs below (length-delimited fields only).
fn field(num: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |mut n: u64| loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        out.push(b | if n > 0 { 0x80 } else { 0 });
        if n == 0 {
            break;
        }
    };
    put(u64::from(num) << 3 | 2);
    put(payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// `x → Relu → Relu → … → y`, `depth` nodes long, as ONNX bytes (opset 18).
fn relu_chain(depth: usize) -> Vec<u8> {
    let mut graph = Vec::new();
    for i in 0..depth {
        let out = if i + 1 == depth {
            "y".to_string()
        } else {
            format!("v{}", i + 1)
        };
        let input = if i == 0 {
            "x".to_string()
        } else {
            format!("v{i}")
        };
        let node = [
            field(1, input.as_bytes()),
            field(2, out.as_bytes()),
            field(4, b"Relu"),
        ]
        .concat();
        graph.extend(field(1, &node));
    }
    // TypeProto { tensor_type { elem_type: FLOAT } }
    let ty = field(1, &[0x08, 0x01]);
    graph.extend(field(11, &[field(1, b"x"), field(2, &ty)].concat()));
    graph.extend(field(12, &[field(1, b"y"), field(2, &ty)].concat()));
    let opset = [field(1, b""), vec![0x10, 18]].concat();
    [vec![0x08, 0x08], field(7, &graph), field(8, &opset)].concat()
}

#[test]
fn a_deep_graph_imports_prints_and_raises_without_recursion() {
    // Runs on a thread with a small stack, so recursion over graph depth would overflow it.
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(|| {
            let dir = tempdir("deep-chain");
            let p = dir.join("chain.onnx");
            std::fs::write(&p, relu_chain(100_000)).unwrap();
            let mut g = ligerc::load_model(&p).unwrap().graph;
            assert_eq!(g.node_count(), 100_001);
            ligerc::ir::text::print(&g).unwrap();
            let mut pm = ligerc::passes::PassManager::new();
            pm.add(Box::new(ligerc::passes::Raise {
                allow_partial: true,
            }));
            pm.add(Box::new(ligerc::passes::DeadCodeElimination));
            pm.run(&mut g, &mut Default::default(), |_, _| {}).unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}
