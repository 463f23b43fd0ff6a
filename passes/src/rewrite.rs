//! The patch-based rewriter.
//!
//! A [`Rule`] looks at one node of an immutable graph and may return a
//! [`Patch`]: new nodes (whose operands are existing values or earlier nodes
//! of the same patch), new weights, and which existing values the patch's
//! values replace. [`apply_patch`] is the one function that mutates the
//! graph. [`rewrite`] runs rules over the graph to a fixed point with an
//! iteration cap, each rule under an error context naming the rule and node;
//! dead nodes are removed at the end. No `NodeId` is kept across a patch.

use std::collections::HashMap;

use ligerc_ir::{Graph, NodeId, Op, TensorData, TensorType, ValueRef};

use crate::PassError;

/// An operand of a patch node: an existing graph value or the result of an
/// earlier node in the same patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchValue {
    /// A value already in the graph.
    Graph(ValueRef),
    /// Result 0 of patch node `i`.
    New(usize),
}

/// A node to add.
#[derive(Clone, Debug)]
pub struct PatchNode {
    /// Its op.
    pub op: Op,
    /// Its operands.
    pub operands: Vec<PatchValue>,
    /// Its result type.
    pub ty: TensorType,
}

/// A local rewrite, built by a rule without touching the graph.
#[derive(Clone, Debug, Default)]
pub struct Patch {
    /// Nodes to add, in dependency order.
    pub nodes: Vec<PatchNode>,
    /// Weights to add (or replace) in the store; `weight` nodes refer to them.
    pub weights: Vec<(String, TensorData)>,
    /// `(old, new)`: every use of `old` is redirected to `new`.
    pub replace: Vec<(ValueRef, PatchValue)>,
}

impl Patch {
    /// Appends a node; returns its value.
    pub fn add(&mut self, op: Op, operands: Vec<PatchValue>, ty: TensorType) -> PatchValue {
        self.nodes.push(PatchNode { op, operands, ty });
        PatchValue::New(self.nodes.len() - 1)
    }

    /// Adds a weight and a node reading it; returns the node's value.
    pub fn weight(&mut self, name: &str, data: TensorData) -> PatchValue {
        let ty = TensorType::fixed(data.dtype(), data.shape());
        self.weights.push((name.to_string(), data));
        self.add(
            Op::Weight {
                name: name.to_string(),
            },
            vec![],
            ty,
        )
    }
}

/// Adds the patch's nodes and weights and redirects the replaced values.
/// Returns the graph values of the patch nodes.
pub fn apply_patch(graph: &mut Graph, patch: Patch) -> Vec<ValueRef> {
    for (name, data) in patch.weights {
        graph.weights.insert(name, data);
    }
    let mut made: Vec<ValueRef> = Vec::with_capacity(patch.nodes.len());
    let resolve = |made: &[ValueRef], v: PatchValue| match v {
        PatchValue::Graph(v) => Some(v),
        PatchValue::New(i) => made.get(i).copied(),
    };
    for n in patch.nodes {
        let operands: Vec<ValueRef> = n
            .operands
            .iter()
            .filter_map(|&v| resolve(&made, v))
            .collect();
        made.push(graph.add(n.op, &operands, n.ty));
    }
    for (old, new) in patch.replace {
        if let Some(new) = resolve(&made, new) {
            graph.replace_all_uses(old, new);
        }
    }
    made
}

/// A named local rewrite.
pub trait Rule {
    /// The rule's name, for error messages and statistics.
    fn name(&self) -> &str;
    /// A patch for `node`, or `None` when the rule does not apply.
    fn apply(&self, graph: &Graph, node: NodeId) -> Result<Option<Patch>, String>;
}

/// How many times each rule fired.
pub type RewriteStats = HashMap<String, usize>;

/// Runs `rules` on every node until none applies (at most `max_rounds`
/// sweeps), then removes dead nodes. `pass` names the pass in errors.
pub fn rewrite(
    graph: &mut Graph,
    rules: &[&dyn Rule],
    pass: &str,
    max_rounds: usize,
) -> Result<RewriteStats, PassError> {
    let mut stats = RewriteStats::new();
    for _ in 0..max_rounds {
        let mut changed = false;
        let order = graph.topo_order().map_err(|e| PassError::Failed {
            pass: pass.into(),
            message: e.to_string(),
        })?;
        for id in order {
            for rule in rules {
                // An earlier patch in this sweep may have made the node dead; it is still valid to inspect.
                if graph.node(id).is_none() {
                    break;
                }
                let patch = rule.apply(graph, id).map_err(|e| PassError::Failed {
                    pass: pass.into(),
                    message: format!("rule `{}` on {}: {e}", rule.name(), graph.describe(id)),
                })?;
                if let Some(p) = patch {
                    apply_patch(graph, p);
                    *stats.entry(rule.name().to_string()).or_default() += 1;
                    changed = true;
                }
            }
        }
        graph.eliminate_dead_nodes();
        if !changed {
            return Ok(stats);
        }
    }
    Err(PassError::Failed {
        pass: pass.into(),
        message: format!("no fixed point after {max_rounds} rounds"),
    })
}
