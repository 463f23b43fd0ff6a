//! Reverse-mode automatic differentiation over the IR: turns a language-model
//! graph into a training graph whose outputs are the summed next-token loss
//! and the gradients of the trainable weights.
//!
//! The construction appends, to the forward graph:
//!
//! 1. inputs `targets` (integer, the logits' shape without the vocabulary
//!    axis; `ignore_index` marks positions without loss) and `loss_scale` (an
//!    f32 scalar, the gradient seeded into the summed loss — the trainer passes
//!    `1 / tokens` of the whole accumulated step, so micro-batches add up to a
//!    mean);
//! 2. `CrossEntropy(logits, targets)`;
//! 3. for every node on a path from a trainable weight to the loss, in reverse
//!    topological order, one `vjp.OP` node that takes the forward operands and
//!    the result gradient and returns the gradients of the operands that
//!    depend on a trainable weight — and only those, so a frozen weight's
//!    gradient is never formed and nothing upstream of the first adapted
//!    layer is differentiated;
//! 4. an `onnx.Add` wherever a value feeds several differentiated consumers.
//!
//! The outputs become `loss_sum`, `loss_tokens` and `grad:<weight>` per
//! trainable weight (the logits are no longer an output, so the executor
//! frees them once the loss and its gradient are computed). Activations kept
//! for the backward sweep are exactly the operands of differentiated ops; the
//! backward kernels recompute everything inside an op (the recurrent state,
//! attention probabilities) instead of storing it.

use std::collections::{HashMap, HashSet};

use ligerc_ir::{DType, Graph, NodeId, OnnxOp, Op, TensorType, ValueRef, VjpSpec};

use crate::PassError;

pub use ligerc_ir::training::{
    GRAD_PREFIX, IGNORE_INDEX, LOSS_SCALE, LOSS_SUM, LOSS_TOKENS, RECOMPUTE_PREFIX, TARGETS,
};

/// What [`training_graph`] built.
#[derive(Clone, Debug)]
pub struct TrainingGraph {
    /// The graph: forward, loss and backward.
    pub graph: Graph,
    /// The trainable weights, in output order (`grad:<name>` follows the two loss outputs).
    pub trainable: Vec<String>,
    /// `vjp.*` nodes added.
    pub vjp_nodes: usize,
}

/// How [`training_graph_with`] builds the backward sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutodiffOptions {
    /// Keep only the residual stream (the outputs of `Embedding` and of the
    /// residual `onnx.Add`s) alive between the forward and the backward sweep,
    /// and recompute every other activation a backward op needs from it, layer
    /// by layer, right before that layer's backward (activation checkpointing).
    /// Costs one more forward; the gradients are bit-identical.
    pub recompute: bool,
}

impl Default for AutodiffOptions {
    /// Recomputation on.
    fn default() -> Self {
        AutodiffOptions { recompute: true }
    }
}

/// [`training_graph_with`] with the default options (recomputation on).
pub fn training_graph(
    forward: &Graph,
    trainable: &dyn Fn(&str) -> bool,
    gradients: bool,
) -> Result<TrainingGraph, PassError> {
    training_graph_with(forward, trainable, gradients, AutodiffOptions::default())
}

/// Builds the training graph of `forward` for the weights `trainable` selects,
/// or, with `gradients == false`, only the loss (for held-out evaluation).
///
/// `forward` must have a float output named `logits` (or exactly one output)
/// of shape `[.., vocab]`. Errors name the first problem: no trainable weight
/// selected, a trainable weight that does not reach the loss, or an op on the
/// path that has no backward rule.
pub fn training_graph_with(
    forward: &Graph,
    trainable: &dyn Fn(&str) -> bool,
    gradients: bool,
    options: AutodiffOptions,
) -> Result<TrainingGraph, PassError> {
    let fail = |message: String| PassError::Failed {
        pass: "autodiff".into(),
        message,
    };
    let mut g = forward.clone();
    let logits = match g.outputs.iter().find(|o| o.name == "logits") {
        Some(o) => o.value,
        None if g.outputs.len() == 1 => g.outputs[0].value,
        None => {
            return Err(fail(format!(
                "graph `{}` has no output named `logits` (outputs: {})",
                g.name,
                g.outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let logits_ty = g
        .value_type(logits)
        .map_err(|e| fail(e.to_string()))?
        .clone();
    let Some(dims) = logits_ty.shape.clone().filter(|d| !d.is_empty()) else {
        return Err(fail(format!(
            "the logits are {logits_ty}; a training graph needs [.., vocab]"
        )));
    };
    let scalar = TensorType::new(DType::F32, vec![]);
    let targets = g.add_input(
        TARGETS,
        TensorType::new(DType::I64, dims[..dims.len() - 1].to_vec()),
    );
    let loss = g.add_node(
        Op::CrossEntropy {
            ignore_index: IGNORE_INDEX,
        },
        &[logits, targets],
        vec![scalar.clone(), scalar.clone()],
        Some("loss".into()),
    );
    g.outputs.clear();
    g.add_output(
        LOSS_SUM,
        ValueRef {
            node: loss,
            port: 0,
        },
    );
    g.add_output(
        LOSS_TOKENS,
        ValueRef {
            node: loss,
            port: 1,
        },
    );
    if !gradients {
        g.eliminate_dead_nodes();
        return Ok(TrainingGraph {
            graph: g,
            trainable: Vec::new(),
            vjp_nodes: 0,
        });
    }
    let seed = g.add_input(LOSS_SCALE, scalar);
    let order = g.topo_order().map_err(|e| fail(e.to_string()))?;
    let mut weights: Vec<(String, NodeId)> = Vec::new();
    let mut active: HashSet<NodeId> = HashSet::new();
    for &id in &order {
        let Some(node) = g.node(id) else { continue };
        match &node.op {
            Op::Weight { name } if trainable(name) => {
                if !node.outputs[0].dtype.is_float() {
                    return Err(fail(format!(
                        "trainable weight `{name}` is {}, not floating point",
                        node.outputs[0]
                    )));
                }
                weights.push((name.clone(), id));
                active.insert(id);
            }
            Op::Input { .. } | Op::Weight { .. } | Op::Const(_) => {}
            _ => {
                if g.operands(id).iter().any(|v| active.contains(&v.node)) {
                    active.insert(id);
                }
            }
        }
    }
    if weights.is_empty() {
        return Err(fail(
            "no trainable weights: the graph has no LoRA adapters (add `--pass lora`)".into(),
        ));
    }
    if !active.contains(&loss) {
        return Err(fail(
            "the loss does not depend on any trainable weight".into(),
        ));
    }
    let mut grads: HashMap<ValueRef, ValueRef> = HashMap::new();
    grads.insert(
        ValueRef {
            node: loss,
            port: 0,
        },
        seed,
    );
    let mut vjp_nodes = 0;
    let mut clones: HashMap<NodeId, NodeId> = HashMap::new();
    for &id in order.iter().rev() {
        if !active.contains(&id) || weights.iter().any(|(_, w)| *w == id) {
            continue;
        }
        let node = g.try_node(id).map_err(|e| fail(e.to_string()))?.clone();
        for port in 1..node.outputs.len() as u32 {
            if grads.contains_key(&ValueRef { node: id, port }) {
                return Err(fail(format!(
                    "{}: only the first result of an op can be differentiated",
                    g.describe(id)
                )));
            }
        }
        let Some(&dy) = grads.get(&ValueRef { node: id, port: 0 }) else {
            continue;
        };
        let operands = g.operands(id);
        let wrt: Vec<usize> = operands
            .iter()
            .enumerate()
            .filter(|(_, v)| active.contains(&v.node))
            .map(|(i, _)| i)
            .collect();
        check_rule(&node.op, &wrt).map_err(|why| fail(format!("{}: {why}", g.describe(id))))?;
        let types: Vec<TensorType> = wrt
            .iter()
            .map(|&i| g.value_type(operands[i]).cloned())
            .collect::<Result<_, _>>()
            .map_err(|e| fail(e.to_string()))?;
        let mut args = if options.recompute {
            let mut r = Recompute { loss };
            operands
                .iter()
                .map(|&v| r.value(&mut g, v, &mut clones))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(e.to_string()))?
        } else {
            operands.clone()
        };
        args.push(dy);
        // named as the recomputation clones are (`recompute:<name or index>`), so a runtime can
        // pair a backward with the clone that ran its forward just before it
        let name = Some(format!(
            "{}.vjp",
            node.name.clone().unwrap_or_else(|| id.index().to_string())
        ));
        let vjp = g.add_node(
            Op::Vjp(VjpSpec {
                forward: Box::new(node.op.clone()),
                wrt: wrt.clone(),
            }),
            &args,
            types.clone(),
            name,
        );
        vjp_nodes += 1;
        for (port, (&i, ty)) in wrt.iter().zip(types).enumerate() {
            let grad = ValueRef {
                node: vjp,
                port: port as u32,
            };
            accumulate(&mut g, &mut grads, operands[i], grad, ty);
        }
    }
    let mut trainable_names = Vec::with_capacity(weights.len());
    for (name, id) in weights {
        let Some(&grad) = grads.get(&ValueRef { node: id, port: 0 }) else {
            return Err(fail(format!(
                "trainable weight `{name}` does not reach the loss"
            )));
        };
        g.add_output(&format!("{GRAD_PREFIX}{name}"), grad);
        trainable_names.push(name);
    }
    g.eliminate_dead_nodes();
    ligerc_ir::verify(&g).map_err(|source| PassError::Invalid {
        pass: "autodiff".into(),
        source,
    })?;
    Ok(TrainingGraph {
        graph: g,
        trainable: trainable_names,
        vjp_nodes,
    })
}

/// Adds `grad` to the gradient of `value` (an `onnx.Add` when it already has one).
fn accumulate(
    g: &mut Graph,
    grads: &mut HashMap<ValueRef, ValueRef>,
    value: ValueRef,
    grad: ValueRef,
    ty: TensorType,
) {
    let sum = match grads.get(&value) {
        Some(&prev) => g.add(
            Op::Onnx(OnnxOp {
                op_type: "Add".into(),
                attrs: Default::default(),
            }),
            &[prev, grad],
            ty,
        ),
        None => grad,
    };
    grads.insert(value, sum);
}

/// Whether the runtime has a backward rule for `op` with respect to `wrt`.
fn check_rule(op: &Op, wrt: &[usize]) -> Result<(), String> {
    let bad = |i: usize, what: &str| Err(format!("operand {i} ({what}) cannot carry a gradient"));
    match op {
        Op::Embedding if wrt.contains(&1) => bad(1, "token ids"),
        Op::Attention(_) if wrt.contains(&3) => bad(3, "padding mask"),
        Op::CrossEntropy { .. } if wrt.contains(&1) => bad(1, "targets"),
        Op::Onnx(o) => match o.op_type.as_str() {
            "Add" | "Sub" | "Mul" | "Div" | "Neg" | "Identity" | "Cast" | "Transpose" => Ok(()),
            "Reshape" | "Unsqueeze" | "Squeeze" | "Flatten" if wrt.iter().all(|&i| i == 0) => {
                Ok(())
            }
            other => Err(format!(
                "no backward rule for onnx.{other} (run the raise pass so attention, norms and \
                 MLPs become high-level ops)"
            )),
        },
        Op::Input { .. } | Op::Weight { .. } | Op::Const(_) | Op::Vjp(_) => {
            Err(format!("{} cannot be differentiated", op.mnemonic()))
        }
        _ => Ok(()),
    }
}

/// The trainable-weight selector of LoRA fine-tuning: every `lora_A`/`lora_B` weight.
pub fn is_lora_weight(name: &str) -> bool {
    name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight")
}

/// Clones the forward nodes between the residual stream and a value, once per
/// node (the clones are shared by every backward op that needs them).
struct Recompute {
    loss: NodeId,
}

impl Recompute {
    /// Whether `v` stays alive from the forward sweep instead of being recomputed:
    /// leaves, the residual stream, clones, and what the loss reads (the logits
    /// are used at once by the first backward op).
    fn kept(&self, g: &Graph, v: ValueRef) -> bool {
        let Some(node) = g.node(v.node) else {
            return true;
        };
        match &node.op {
            Op::Input { .. } | Op::Weight { .. } | Op::Const(_) | Op::Embedding => true,
            Op::Onnx(o) if o.op_type == "Add" => true,
            Op::CrossEntropy { .. } | Op::Vjp(_) => true,
            _ => {
                node.name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(RECOMPUTE_PREFIX))
                    || g.value_users(v).iter().any(|&(u, _)| u == self.loss)
            }
        }
    }

    /// The value to feed a backward op in place of `v`: `v` itself when kept,
    /// otherwise the matching result of its producer's clone (made on demand,
    /// with an explicit stack, never recursion over graph depth).
    fn value(
        &mut self,
        g: &mut Graph,
        v: ValueRef,
        clones: &mut HashMap<NodeId, NodeId>,
    ) -> Result<ValueRef, ligerc_ir::IrError> {
        if self.kept(g, v) {
            return Ok(v);
        }
        let mut stack = vec![v.node];
        while let Some(&id) = stack.last() {
            if clones.contains_key(&id) {
                stack.pop();
                continue;
            }
            let operands = g.operands(id);
            let pending: Vec<NodeId> = operands
                .iter()
                .filter(|o| !self.kept(g, **o) && !clones.contains_key(&o.node))
                .map(|o| o.node)
                .collect();
            if !pending.is_empty() {
                stack.extend(pending);
                continue;
            }
            let node = g.try_node(id)?.clone();
            let mapped: Vec<ValueRef> = operands
                .iter()
                .map(|o| match clones.get(&o.node) {
                    Some(&c) if !self.kept(g, *o) => ValueRef {
                        node: c,
                        port: o.port,
                    },
                    _ => *o,
                })
                .collect();
            let name = format!(
                "{RECOMPUTE_PREFIX}{}",
                node.name.clone().unwrap_or_else(|| id.index().to_string())
            );
            let clone = g.add_node(node.op.clone(), &mapped, node.outputs.clone(), Some(name));
            clones.insert(id, clone);
            stack.pop();
        }
        Ok(ValueRef {
            node: clones[&v.node],
            port: v.port,
        })
    }
}
