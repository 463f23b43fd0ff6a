//! ligerc as a library inside another compiler's pipeline.
//!
//! Imports a model, runs the host compiler's own pass (here: counting ops),
//! then ligerc's `raise` and `linearize` through the same `Pass` trait and
//! `PassManager`, verifies, and prints a summary of the rewritten graph.
//!
//! ```sh
//! cargo run --example linearize_as_pass -- tests/fixtures/onnx/tiny_dynamo_op18_eager.onnx
//! ```

use std::collections::BTreeMap;

use ligerc::ir::{Graph, LigerVariant};
use ligerc::passes::{Linearize, Pass, PassContext, PassError, PassManager, Raise};

/// A pass written by the host compiler: it reports how many ops of each kind the graph has.
struct OpCensus;

impl Pass for OpCensus {
    fn name(&self) -> &str {
        "op-census"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<(), PassError> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for id in graph.node_ids() {
            if let Some(n) = graph.node(id) {
                *counts.entry(n.op.mnemonic()).or_default() += 1;
            }
        }
        let top: Vec<String> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| format!("{k}×{n}"))
            .collect();
        cx.notes.push(format!("op-census: {}", top.join(" ")));
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/onnx/tiny_dynamo_op18_eager.onnx".into());
    let mut graph = ligerc::load_model(std::path::Path::new(&path))?.graph;

    let mut pm = PassManager::new();
    pm.add(Box::new(OpCensus))
        .add(Box::new(Raise::default()))
        .add(Box::new(Linearize {
            window: 32,
            ..Linearize::for_variant(LigerVariant::Gla)
        }))
        .add(Box::new(OpCensus));
    let mut cx = PassContext::default();
    pm.run(&mut graph, &mut cx, |pass, g| {
        println!("after {pass}: {} nodes", g.node_count())
    })?;
    for note in &cx.notes {
        println!("{note}");
    }
    ligerc::ir::verify(&graph)?;
    Ok(())
}
