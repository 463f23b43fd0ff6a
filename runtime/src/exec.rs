//! The CPU interpreter: runs a graph in topological order on [`Tensor`]s.
//!
//! Weights are converted to f32 once, when an [`Executor`] is built. A run
//! binds graph inputs by name, evaluates every node and returns the graph
//! outputs. [`ExecState`] carries what incremental decoding needs across runs:
//! the position offset of the first new token, each attention node's KV
//! cache and each LigerAttention node's recurrent state (keyed by node).

use std::collections::HashMap;
use std::sync::Arc;

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
}

impl Executor {
    /// Verifies the graph and converts its weights to run-time tensors.
    pub fn new(graph: Graph) -> Result<Executor, RuntimeError> {
        ligerc_ir::verify(&graph)?;
        let order = graph.topo_order()?;
        let weights = graph
            .weights
            .iter()
            .map(|(k, v)| (k.clone(), Arc::new(Tensor::from_data(v))))
            .collect();
        Ok(Executor {
            graph,
            order,
            weights,
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
                    for v in operands {
                        if let Some(n) = remaining.get_mut(&v) {
                            *n -= 1;
                            if *n == 0 {
                                values.remove(&v);
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
                    values.insert(v, t);
                }
            }
        }
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
