//! Dead-code elimination: removes nodes no graph output depends on.

use ligerc_ir::Graph;

use crate::{Pass, PassContext, PassError};

/// Removes every node (and weight) that no output needs; graph inputs stay.
pub struct DeadCodeElimination;

impl Pass for DeadCodeElimination {
    fn name(&self) -> &str {
        "dce"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<(), PassError> {
        let removed = graph.eliminate_dead_nodes();
        if removed > 0 {
            cx.notes.push(format!("dce: removed {removed} dead nodes"));
        }
        Ok(())
    }
}
