//! The graph walk: nodes in topological order, values freed (returned to the
//! pool) when their last consumer ran, as in `crate::exec`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use ligerc_codegen::cuda::kernels::liger_train;
use ligerc_ir::training::RECOMPUTE_PREFIX;
use ligerc_ir::{Graph, NodeId, Op, ValueRef};

use super::GpuTrainError;
use super::backward::backward;
use super::forward::{Ctx, forward};
use super::host::{HostCounts, run_on_host, upload};
use super::value::DevTensor;

/// A training or evaluation graph prepared for the GPU.
pub(super) struct GpuGraph {
    graph: Graph,
    order: Vec<NodeId>,
    uses: HashMap<ValueRef, usize>,
    /// Nodes run on the host, by mnemonic (counted on every run).
    pub(super) host_nodes: RefCell<HostCounts>,
    /// With `LIGERC_TRAIN_PROFILE` set: device seconds and runs per op
    /// mnemonic (each op synchronised), printed to stderr when dropped.
    profile: Option<RefCell<HashMap<String, (f64, usize)>>>,
    /// Names of the nodes the autodiff pass cloned for recomputation (a node
    /// `recompute:N` exists for each name `N`).
    recomputed: HashSet<String>,
}

impl Drop for GpuGraph {
    fn drop(&mut self) {
        let Some(p) = &self.profile else { return };
        let p = p.borrow();
        let total: f64 = p.values().map(|v| v.0).sum();
        let mut rows: Vec<_> = p.iter().collect();
        rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
        eprintln!("LIGERC_TRAIN_PROFILE: {total:.3} s of synchronised op time");
        for (op, (secs, n)) in rows {
            eprintln!(
                "  {op:<28} {secs:>9.4} s {:>5.1}% {n:>8} runs {:>9.1} us/run",
                100.0 * secs / total.max(1e-12),
                1e6 * secs / (*n).max(1) as f64
            );
        }
    }
}

/// Whether `op` has a GPU kernel (shapes aside: a broadcasting Add is found
/// at run time).
fn on_gpu(op: &Op) -> bool {
    match op {
        Op::Input { .. } | Op::Weight { .. } | Op::Const(_) => true,
        Op::Embedding
        | Op::Linear
        | Op::LmHead
        | Op::Lora { .. }
        | Op::RmsNorm { .. }
        | Op::Rope(_)
        | Op::SwiGlu
        | Op::CrossEntropy { .. } => true,
        Op::LigerGate(g) => liger_train::gate_train_source(g).is_ok(),
        Op::LigerAttention(l) => {
            liger_train::liger_train_source(l, liger_train::TrainMath::F32).is_ok()
        }
        Op::Onnx(o) => o.op_type == "Add",
        Op::Vjp(v) => match v.forward.as_ref() {
            Op::Embedding => false,
            inner => on_gpu(inner),
        },
        // Causal, unmasked, scale 1/√d: the window kernels with an unbounded
        // window (anything else is refused when the node runs).
        Op::Attention(_) => true,
    }
}

/// Why `op` has no GPU kernel.
fn missing(op: &Op) -> String {
    let what = match op {
        Op::Vjp(v) => format!("the backward of {}", v.forward.mnemonic()),
        other => other.mnemonic(),
    };
    format!("{what} has no GPU training kernel yet")
}

impl GpuGraph {
    /// Verifies and orders `graph`; refuses, naming the first node, an op
    /// without a GPU kernel unless `host_ops`.
    pub(super) fn new(graph: Graph, host_ops: bool) -> Result<GpuGraph, GpuTrainError> {
        ligerc_ir::verify(&graph).map_err(crate::RuntimeError::from)?;
        let order = crate::exec::sink_recomputation(
            &graph,
            graph.topo_order().map_err(crate::RuntimeError::from)?,
        );
        let mut uses: HashMap<ValueRef, usize> = HashMap::new();
        for &id in &order {
            for v in graph.operands(id) {
                *uses.entry(v).or_default() += 1;
            }
            let op = &graph.try_node(id).map_err(crate::RuntimeError::from)?.op;
            if !host_ops && !on_gpu(op) {
                return Err(GpuTrainError::Unsupported {
                    node: graph.describe(id),
                    reason: missing(op),
                });
            }
        }
        for o in &graph.outputs {
            *uses.entry(o.value).or_default() += 1;
        }
        let recomputed = order
            .iter()
            .filter_map(|&id| {
                graph
                    .node(id)?
                    .name
                    .as_deref()?
                    .strip_prefix(RECOMPUTE_PREFIX)
            })
            .map(str::to_string)
            .collect();
        Ok(GpuGraph {
            graph,
            order,
            uses,
            host_nodes: RefCell::new(HashMap::new()),
            profile: std::env::var_os("LIGERC_TRAIN_PROFILE").map(|_| RefCell::new(HashMap::new())),
            recomputed,
        })
    }

    /// Where node `id` keeps or finds what a LigerAttention forward saves for
    /// its backward, by the autodiff pass's naming (`N` a node's name, or its
    /// index when unnamed): a forward `N` keeps it under `N` unless the graph
    /// recomputes it — then its clone `recompute:N`, which runs just before
    /// the backward, does, and the first run's would only hold memory; the
    /// backward `N.vjp` finds it under `N`. A backward that finds nothing runs
    /// the forward again.
    fn saved_as(&self, id: NodeId) -> Option<String> {
        let node = self.graph.node(id)?;
        let name = match &node.name {
            Some(n) => n.clone(),
            None => id.index().to_string(),
        };
        if let Some(forward) = name.strip_suffix(".vjp") {
            return Some(forward.to_string());
        }
        match name.strip_prefix(RECOMPUTE_PREFIX) {
            Some(original) => Some(original.to_string()),
            None if self.recomputed.contains(&name) => None,
            None => Some(name),
        }
    }

    /// The graph.
    pub(super) fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the graph; `weights` and `inputs` by name. Returns the outputs in order.
    pub(super) fn run(
        &self,
        cx: &mut Ctx,
        weights: &HashMap<String, DevTensor>,
        inputs: &HashMap<String, DevTensor>,
        host_ops: bool,
    ) -> Result<Vec<DevTensor>, GpuTrainError> {
        let g = &self.graph;
        let mut remaining = self.uses.clone();
        let mut values: HashMap<ValueRef, DevTensor> = HashMap::new();
        for &id in &self.order {
            let node = g.try_node(id).map_err(crate::RuntimeError::from)?;
            cx.node = g.describe(id);
            cx.saved_as = self.saved_as(id);
            let results: Vec<DevTensor> = match &node.op {
                Op::Input { name } => vec![inputs.get(name).cloned().ok_or_else(|| {
                    crate::RuntimeError::Input(format!("graph input `{name}` was not given"))
                })?],
                Op::Weight { name } => vec![weights.get(name).cloned().ok_or_else(|| {
                    crate::RuntimeError::Input(format!("weight `{name}` has no data"))
                })?],
                Op::Const(t) => vec![upload(cx.dev, cx.pool, &crate::Tensor::from_data(t))?],
                op => {
                    let operands = g.operands(id);
                    let args: Vec<&DevTensor> = operands
                        .iter()
                        .map(|v| {
                            values.get(v).ok_or(GpuTrainError::Shape {
                                node: cx.node.clone(),
                                problem: format!("operand from node {} was freed", v.node.index()),
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    let started = self.profile.as_ref().map(|_| std::time::Instant::now());
                    let done = match op {
                        Op::Vjp(spec) => backward(cx, spec, &args)?,
                        other => forward(cx, other, &args)?,
                    };
                    if let (Some(p), Some(t0)) = (&self.profile, started) {
                        cx.dev.sync()?;
                        let mut p = p.borrow_mut();
                        let e = p.entry(op.mnemonic()).or_default();
                        e.0 += t0.elapsed().as_secs_f64();
                        e.1 += 1;
                    }
                    let r = match done {
                        Some(r) => r,
                        None if host_ops => {
                            *self
                                .host_nodes
                                .borrow_mut()
                                .entry(op.mnemonic())
                                .or_default() += 1;
                            run_on_host(cx, g, id, op, &args)?
                        }
                        None => {
                            return Err(GpuTrainError::Unsupported {
                                node: cx.node.clone(),
                                reason: missing(op),
                            });
                        }
                    };
                    drop(args);
                    for v in operands {
                        if let Some(n) = remaining.get_mut(&v) {
                            *n -= 1;
                            if *n == 0 {
                                values.remove(&v);
                            }
                        }
                    }
                    r
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
        g.outputs
            .iter()
            .map(|o| {
                values.get(&o.value).cloned().ok_or_else(|| {
                    crate::RuntimeError::Input(format!("output `{}` was not computed", o.name))
                        .into()
                })
            })
            .collect()
    }
}
