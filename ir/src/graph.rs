//! The graph: a petgraph `StableGraph` of typed nodes whose edges carry operand slots.

use std::collections::{BTreeMap, HashMap};

use petgraph::Direction;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;

use crate::{IrError, Op, TensorData, TensorType};

/// Identifies a node; stable while other nodes are removed, but reused after
/// its own removal — never keep one across a pass that deletes nodes.
pub type NodeId = NodeIndex<u32>;

/// One node: an op, the types of its results, and the name it had in the source model.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// What the node computes.
    pub op: Op,
    /// Type of each result, in result order.
    pub outputs: Vec<TensorType>,
    /// Name in the source model (for error messages), if any.
    pub name: Option<String>,
}

/// An edge from a producer's result `port` into operand `slot` of a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Edge {
    /// Which result of the producer.
    pub port: u32,
    /// Which operand of the consumer.
    pub slot: u32,
}

/// A reference to one result of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef {
    /// Producer.
    pub node: NodeId,
    /// Result index.
    pub port: u32,
}

impl From<NodeId> for ValueRef {
    fn from(node: NodeId) -> Self {
        ValueRef { node, port: 0 }
    }
}

/// A named graph output.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphOutput {
    /// Output name.
    pub name: String,
    /// The value returned.
    pub value: ValueRef,
}

/// A dataflow graph with named inputs, outputs and a shared weight store.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Name of the graph (the model's name).
    pub name: String,
    g: StableGraph<Node, Edge, petgraph::Directed, u32>,
    /// Graph outputs, in order.
    pub outputs: Vec<GraphOutput>,
    /// Weights by name. Data is shared, never copied per node.
    pub weights: BTreeMap<String, TensorData>,
    /// The ONNX opset whose semantics the generic ops follow (`None` when the
    /// graph did not come from ONNX; exporters then choose one).
    pub opset: Option<i64>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: &str) -> Self {
        Graph {
            name: name.to_string(),
            ..Graph::default()
        }
    }

    /// Adds a node whose operands are `operands`, in slot order.
    pub fn add_node(
        &mut self,
        op: Op,
        operands: &[ValueRef],
        outputs: Vec<TensorType>,
        name: Option<String>,
    ) -> NodeId {
        let id = self.g.add_node(Node { op, outputs, name });
        for (slot, v) in operands.iter().enumerate() {
            self.g.add_edge(
                v.node,
                id,
                Edge {
                    port: v.port,
                    slot: slot as u32,
                },
            );
        }
        id
    }

    /// Adds a one-result node and returns that result.
    pub fn add(&mut self, op: Op, operands: &[ValueRef], ty: TensorType) -> ValueRef {
        self.add_node(op, operands, vec![ty], None).into()
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: &str, ty: TensorType) -> ValueRef {
        self.add(
            Op::Input {
                name: name.to_string(),
            },
            &[],
            ty,
        )
    }

    /// Stores `data` as weight `name` and adds a node referring to it.
    pub fn add_weight(&mut self, name: &str, data: TensorData) -> ValueRef {
        let ty = TensorType::fixed(data.dtype(), data.shape());
        self.weights.insert(name.to_string(), data);
        self.add(
            Op::Weight {
                name: name.to_string(),
            },
            &[],
            ty,
        )
    }

    /// Adds a literal constant.
    pub fn add_const(&mut self, data: TensorData) -> ValueRef {
        let ty = TensorType::fixed(data.dtype(), data.shape());
        self.add(Op::Const(data), &[], ty)
    }

    /// Appends a graph output.
    pub fn add_output(&mut self, name: &str, value: ValueRef) {
        self.outputs.push(GraphOutput {
            name: name.to_string(),
            value,
        });
    }

    /// The node `id`, if it exists.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.g.node_weight(id)
    }

    /// The node `id` for mutation, if it exists.
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.g.node_weight_mut(id)
    }

    /// The node `id`, or an error naming it.
    pub fn try_node(&self, id: NodeId) -> Result<&Node, IrError> {
        self.node(id)
            .ok_or(IrError::DanglingNode { node: id.index() })
    }

    /// The type of a value, or an error when it does not exist.
    pub fn value_type(&self, v: ValueRef) -> Result<&TensorType, IrError> {
        self.try_node(v.node)?
            .outputs
            .get(v.port as usize)
            .ok_or(IrError::DanglingNode {
                node: v.node.index(),
            })
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Every node id, in index order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.g.node_indices().collect()
    }

    /// The graph inputs, in the order they were added.
    pub fn inputs(&self) -> Vec<(NodeId, &str)> {
        self.g
            .node_indices()
            .filter_map(|id| match &self.g[id].op {
                Op::Input { name } => Some((id, name.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Operand edges of `id`, sorted by slot: `(slot, value)`.
    pub fn operand_edges(&self, id: NodeId) -> Vec<(u32, ValueRef)> {
        let mut v: Vec<(u32, ValueRef)> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| {
                (
                    e.weight().slot,
                    ValueRef {
                        node: e.source(),
                        port: e.weight().port,
                    },
                )
            })
            .collect();
        v.sort_by_key(|(slot, _)| *slot);
        v
    }

    /// Operands of `id` in slot order.
    pub fn operands(&self, id: NodeId) -> Vec<ValueRef> {
        self.operand_edges(id).into_iter().map(|(_, v)| v).collect()
    }

    /// Consumers of any result of `id`: `(consumer, port, slot)`, sorted.
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, u32, u32)> {
        let mut v: Vec<(NodeId, u32, u32)> = self
            .g
            .edges_directed(id, Direction::Outgoing)
            .map(|e| (e.target(), e.weight().port, e.weight().slot))
            .collect();
        v.sort();
        v
    }

    /// Consumers of one value: `(consumer, slot)`, sorted.
    pub fn value_users(&self, v: ValueRef) -> Vec<(NodeId, u32)> {
        self.users(v.node)
            .into_iter()
            .filter(|(_, port, _)| *port == v.port)
            .map(|(n, _, slot)| (n, slot))
            .collect()
    }

    /// Makes every use of `old` (operands and graph outputs) use `new` instead.
    pub fn replace_all_uses(&mut self, old: ValueRef, new: ValueRef) {
        let edges: Vec<(EdgeIndex<u32>, NodeId, u32)> = self
            .g
            .edges_directed(old.node, Direction::Outgoing)
            .filter(|e| e.weight().port == old.port)
            .map(|e| (e.id(), e.target(), e.weight().slot))
            .collect();
        for (e, target, slot) in edges {
            self.g.remove_edge(e);
            self.g.add_edge(
                new.node,
                target,
                Edge {
                    port: new.port,
                    slot,
                },
            );
        }
        for o in &mut self.outputs {
            if o.value == old {
                o.value = new;
            }
        }
    }

    /// Replaces operand `slot` of `id` with `v`.
    pub fn set_operand(&mut self, id: NodeId, slot: u32, v: ValueRef) {
        let old: Vec<EdgeIndex<u32>> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .filter(|e| e.weight().slot == slot)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        self.g.add_edge(v.node, id, Edge { port: v.port, slot });
    }

    /// Removes a node and its edges.
    pub fn remove_node(&mut self, id: NodeId) -> Option<Node> {
        self.g.remove_node(id)
    }

    /// Nodes in a deterministic topological order: among ready nodes the one
    /// with the smallest index comes first. Errors on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, IrError> {
        let mut indeg: HashMap<NodeId, usize> = HashMap::new();
        for id in self.g.node_indices() {
            indeg.insert(id, self.g.edges_directed(id, Direction::Incoming).count());
        }
        let mut ready: std::collections::BTreeSet<NodeId> = indeg
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(id, _)| *id)
            .collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(id) = ready.pop_first() {
            order.push(id);
            for e in self.g.edges_directed(id, Direction::Outgoing) {
                if let Some(d) = indeg.get_mut(&e.target()) {
                    *d -= 1;
                    if *d == 0 {
                        ready.insert(e.target());
                    }
                }
            }
        }
        if order.len() != indeg.len() {
            let stuck = indeg
                .iter()
                .filter(|(_, d)| **d > 0)
                .map(|(id, _)| *id)
                .min()
                .map(|id| self.describe(id))
                .unwrap_or_default();
            return Err(IrError::Cycle { node: stuck });
        }
        Ok(order)
    }

    /// Removes every node that no graph output depends on; returns how many.
    pub fn eliminate_dead_nodes(&mut self) -> usize {
        let mut live: std::collections::HashSet<NodeId> = std::collections::HashSet::new();
        let mut stack: Vec<NodeId> = self.outputs.iter().map(|o| o.value.node).collect();
        // Graph inputs stay even when unused: they are the model's signature.
        stack.extend(self.inputs().into_iter().map(|(id, _)| id));
        while let Some(id) = stack.pop() {
            if live.insert(id) {
                stack.extend(
                    self.g
                        .edges_directed(id, Direction::Incoming)
                        .map(|e| e.source()),
                );
            }
        }
        let dead: Vec<NodeId> = self
            .g
            .node_indices()
            .filter(|id| !live.contains(id))
            .collect();
        for &id in &dead {
            self.g.remove_node(id);
        }
        let used: std::collections::HashSet<String> = self
            .g
            .node_weights()
            .filter_map(|n| match &n.op {
                Op::Weight { name } => Some(name.clone()),
                _ => None,
            })
            .collect();
        self.weights.retain(|k, _| used.contains(k));
        dead.len()
    }

    /// A short description of a node for error messages: `%index (op "name")`.
    pub fn describe(&self, id: NodeId) -> String {
        match self.node(id) {
            None => format!("%{} (removed)", id.index()),
            Some(n) => match &n.name {
                Some(name) => format!("node {} `{}` ({})", id.index(), name, n.op.mnemonic()),
                None => format!("node {} ({})", id.index(), n.op.mnemonic()),
            },
        }
    }

    /// The underlying petgraph, for algorithms that want it.
    pub fn petgraph(&self) -> &StableGraph<Node, Edge, petgraph::Directed, u32> {
        &self.g
    }
}
