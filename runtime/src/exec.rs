//! The CPU interpreter: runs a graph in topological order on [`Tensor`]s.
//!
//! Weights are converted to f32 once, when an [`Executor`] is built. A run
//! binds graph inputs by name, evaluates every node and returns the graph
//! outputs. [`ExecState`] carries what incremental decoding needs across runs:
//! the position offset of the first new token, each attention node's KV
//! cache and each LigerAttention node's recurrent state (keyed by node).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ligerc_ir::{Graph, NodeId, Op, ValueRef};

use crate::ops::{LigerMode, LigerState, eval_high_level, eval_onnx};
use crate::{RuntimeError, Tensor};

/// Keys and values an attention node has seen so far: `[B, S, kv_features]`.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    /// Cached keys, `[batch, seen, kv_heads·head_dim]`.
    pub k: Option<Tensor>,
    /// Cached values, same shape as `k`.
    pub v: Option<Tensor>,
}

/// State carried across incremental runs of one graph.
#[derive(Clone, Debug, Default)]
pub struct ExecState {
    /// Absolute position of the first token of this run.
    pub position_offset: usize,
    /// When true, Attention nodes append to and read from `kv`.
    pub use_cache: bool,
    /// Per attention node.
    pub kv: HashMap<NodeId, KvCache>,
    /// How LigerAttention nodes evaluate their recurrence (chunked by default);
    /// with `use_cache` they always carry state (recurrent or chunked).
    pub liger_mode: LigerMode,
    /// Per LigerAttention node, when `use_cache`: the constant-size recurrent
    /// state and window ring.
    pub liger: HashMap<NodeId, LigerState>,
}

/// A graph prepared for execution on the CPU.
pub struct Executor {
    graph: Graph,
    order: Vec<NodeId>,
    weights: HashMap<String, Arc<Tensor>>,
    peak_bytes: AtomicUsize,
}

impl Executor {
    /// Verifies the graph and converts its weights to run-time tensors.
    pub fn new(graph: Graph) -> Result<Executor, RuntimeError> {
        ligerc_ir::verify(&graph)?;
        let order = sink_recomputation(&graph, graph.topo_order()?);
        let weights = graph
            .weights
            .iter()
            .map(|(k, v)| (k.clone(), Arc::new(Tensor::from_data(v))))
            .collect();
        Ok(Executor {
            graph,
            order,
            weights,
            peak_bytes: AtomicUsize::new(0),
        })
    }

    /// Replaces the run-time value of weight `name` (the trainer's parameter
    /// update); the graph's stored weight is left as it was. Errors when the
    /// graph has no such weight or the shape differs.
    pub fn set_weight(&mut self, name: &str, value: Tensor) -> Result<(), RuntimeError> {
        let slot = self
            .weights
            .get_mut(name)
            .ok_or_else(|| RuntimeError::Input(format!("the graph has no weight `{name}`")))?;
        if slot.shape != value.shape || slot.kind() != value.kind() {
            return Err(RuntimeError::Shape(format!(
                "weight `{name}` is {} {:?}, the new value is {} {:?}",
                slot.kind(),
                slot.shape,
                value.kind(),
                value.shape
            )));
        }
        *slot = Arc::new(value);
        Ok(())
    }

    /// The run-time value of weight `name`.
    pub fn weight(&self, name: &str) -> Option<&Tensor> {
        self.weights.get(name).map(|t| t.as_ref())
    }

    /// The largest number of bytes of activations (graph inputs and op
    /// results; weights excluded) alive at once during the last [`Executor::run`].
    pub fn peak_activation_bytes(&self) -> usize {
        self.peak_bytes.load(Ordering::Relaxed)
    }

    /// The graph being executed.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the graph on `inputs` (by input name); returns the outputs in order.
    pub fn run(
        &self,
        inputs: &HashMap<String, Tensor>,
        state: &mut ExecState,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        let graph = &self.graph;
        for (_, name) in graph.inputs() {
            if !inputs.contains_key(name) {
                return Err(RuntimeError::Input(format!(
                    "graph input `{name}` was not given"
                )));
            }
        }
        // How many consumers each value still has, so dead values are freed early.
        let mut remaining: HashMap<ValueRef, usize> = HashMap::new();
        for &id in &self.order {
            for v in graph.operands(id) {
                *remaining.entry(v).or_default() += 1;
            }
        }
        for o in &graph.outputs {
            *remaining.entry(o.value).or_default() += 1;
        }
        let mut values: HashMap<ValueRef, Arc<Tensor>> = HashMap::new();
        // Bytes of live activations (weights excluded) and their peak over the run.
        let (mut live, mut peak) = (0usize, 0usize);
        let mut weight_values = std::collections::HashSet::new();
        for &id in &self.order {
            let node = graph.try_node(id)?;
            let results: Vec<Arc<Tensor>> = match &node.op {
                Op::Input { name } => {
                    vec![Arc::new(inputs.get(name).cloned().ok_or_else(|| {
                        RuntimeError::Input(format!("graph input `{name}` was not given"))
                    })?)]
                }
                Op::Weight { name } => {
                    vec![self.weights.get(name).cloned().ok_or_else(|| {
                        RuntimeError::Input(format!("weight `{name}` has no data"))
                    })?]
                }
                Op::Const(t) => vec![Arc::new(Tensor::from_data(t))],
                op => {
                    let operands = graph.operands(id);
                    let args: Vec<&Tensor> = operands
                        .iter()
                        .map(|v| {
                            values.get(v).map(|t| t.as_ref()).ok_or(
                                ligerc_ir::IrError::DanglingNode {
                                    node: v.node.index(),
                                },
                            )
                        })
                        .collect::<Result<_, _>>()?;
                    let r = match op {
                        Op::Onnx(o) => eval_onnx(o, &args, &node.outputs),
                        other => eval_high_level(other, id, &args, state),
                    };
                    let r = r.map_err(|e| RuntimeError::Node {
                        node: graph.describe(id),
                        inner: Box::new(e),
                    })?;
                    peak = peak.max(live + r.iter().map(bytes_of).sum::<usize>());
                    for v in operands {
                        if let Some(n) = remaining.get_mut(&v) {
                            *n -= 1;
                            if *n == 0
                                && let Some(t) = values.remove(&v)
                                && !weight_values.contains(&v)
                            {
                                live -= bytes_of(&t);
                            }
                        }
                    }
                    r.into_iter().map(Arc::new).collect()
                }
            };
            for (port, t) in results.into_iter().enumerate() {
                let v = ValueRef {
                    node: id,
                    port: port as u32,
                };
                if remaining.get(&v).copied().unwrap_or(0) > 0 {
                    if matches!(node.op, Op::Weight { .. }) {
                        weight_values.insert(v);
                    } else {
                        live += bytes_of(&t);
                    }
                    values.insert(v, t);
                }
            }
        }
        self.peak_bytes.store(peak.max(live), Ordering::Relaxed);
        graph
            .outputs
            .iter()
            .map(|o| {
                values
                    .get(&o.value)
                    .map(|t| t.as_ref().clone())
                    .ok_or_else(|| {
                        RuntimeError::Input(format!("output `{}` was not computed", o.name))
                    })
            })
            .collect()
    }
}

fn bytes_of(t: &Tensor) -> usize {
    let elem = match t.data {
        crate::Data::F32(_) => 4,
        crate::Data::I64(_) => 8,
        crate::Data::Bool(_) => 1,
    };
    t.numel() * elem
}

/// Moves every node the autodiff pass cloned for recomputation (named
/// `recompute:…`) to just before its first consumer, so a recomputed
/// activation lives only while the backward op that needs it runs. Other nodes
/// keep their topological order; clones sharing a consumer keep theirs.
pub(crate) fn sink_recomputation(graph: &Graph, order: Vec<NodeId>) -> Vec<NodeId> {
    let is_clone = |id: NodeId| {
        graph
            .node(id)
            .and_then(|n| n.name.as_deref())
            .is_some_and(|n| n.starts_with(ligerc_ir::training::RECOMPUTE_PREFIX))
    };
    if !order.iter().any(|&id| is_clone(id)) {
        return order;
    }
    let topo: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let base: Vec<NodeId> = order.iter().copied().filter(|&id| !is_clone(id)).collect();
    let mut anchor: HashMap<NodeId, usize> =
        base.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    for &id in order.iter().rev().filter(|&&id| is_clone(id)) {
        let first = graph
            .users(id)
            .iter()
            .filter_map(|(u, _, _)| anchor.get(u).copied())
            .min()
            .unwrap_or(base.len());
        anchor.insert(id, first);
    }
    let mut before: Vec<Vec<NodeId>> = vec![Vec::new(); base.len() + 1];
    for &id in order.iter().filter(|&&id| is_clone(id)) {
        before[anchor[&id]].push(id);
    }
    let mut out = Vec::with_capacity(order.len());
    for (i, group) in before.iter_mut().enumerate() {
        group.sort_by_key(|id| topo[id]);
        out.append(group);
        if let Some(&id) = base.get(i) {
            out.push(id);
        }
    }
    out
}
