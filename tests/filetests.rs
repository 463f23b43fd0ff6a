//! File tests: each `tests/filetests/*.ir` holds a pipeline, a hand-written
//! text-IR input and the expected output after the pipeline, side by side:
//!
//! ```text
//! // pipeline: raise linearize:variant=gla
//! // ----- input
//! graph "x" { … }
//! // ----- expected
//! graph "x" { … }
//! ```
//!
//! Weights named in the input get zero data of their declared type (passes
//! read shapes and dtypes, not values). Run with `LIGERC_BLESS=1` to rewrite
//! the expected sections after an intended change.

use std::path::Path;

use ligerc::ir::{Op, TensorData, text};
use ligerc::passes::{PassContext, PassManager, PassSpec, make_pass};

fn run_file(path: &Path) -> Result<(), String> {
    let src = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let pipeline = src
        .lines()
        .find_map(|l| l.strip_prefix("// pipeline:"))
        .ok_or("missing `// pipeline:` line")?
        .split_whitespace()
        .map(String::from)
        .collect::<Vec<_>>();
    let (head, rest) = src
        .split_once("// ----- input\n")
        .ok_or("missing `// ----- input`")?;
    let (input, expected) = rest
        .split_once("// ----- expected\n")
        .ok_or("missing `// ----- expected`")?;
    let mut g = text::parse(input).map_err(|e| format!("input: {e}"))?;
    for id in g.node_ids() {
        if let Some(n) = g.node(id)
            && let Op::Weight { name } = &n.op
            && let Some(dims) = n.outputs[0].fixed_dims()
        {
            let zeros = vec![0.0; dims.iter().product()];
            let t = TensorData::from_f64_as(n.outputs[0].dtype, dims, &zeros)
                .map_err(|e| e.to_string())?;
            g.weights.insert(name.clone(), t);
        }
    }
    let mut pm = PassManager::new();
    for p in &pipeline {
        let spec: PassSpec = p
            .parse()
            .map_err(|e: ligerc::passes::PassError| e.to_string())?;
        pm.add(make_pass(&spec).map_err(|e| e.to_string())?);
    }
    pm.run(&mut g, &mut PassContext::default(), |_, _| {})
        .map_err(|e| e.to_string())?;
    let got = text::print(&g).map_err(|e| e.to_string())?;
    if got != expected {
        if std::env::var_os("LIGERC_BLESS").is_some() {
            std::fs::write(
                path,
                format!("{head}// ----- input\n{input}// ----- expected\n{got}"),
            )
            .map_err(|e| e.to_string())?;
            return Ok(());
        }
        return Err(format!(
            "output differs from the expected section:\n--- got\n{got}--- expected\n{expected}"
        ));
    }
    Ok(())
}

#[test]
fn filetests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ir"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| run_file(f).err().map(|e| format!("{}: {e}", f.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
