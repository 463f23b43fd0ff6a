//! Names shared by the autodiff pass, which builds training graphs, and the
//! runtimes, which bind and read them.

/// Name of the targets input of a training graph (integer, the logits' shape
/// without the vocabulary axis).
pub const TARGETS: &str = "targets";
/// Name of the loss-scale input: the f32 scalar gradient seeded into `loss_sum`.
pub const LOSS_SCALE: &str = "loss_scale";
/// Output: the summed cross-entropy over counted positions.
pub const LOSS_SUM: &str = "loss_sum";
/// Output: how many positions were counted.
pub const LOSS_TOKENS: &str = "loss_tokens";
/// Prefix of the gradient outputs: `grad:<weight name>`.
pub const GRAD_PREFIX: &str = "grad:";
/// The target value that carries no loss (PyTorch's default).
pub const IGNORE_INDEX: i64 = -100;
/// Prefix of the names of nodes the autodiff pass cloned to recompute an
/// activation during the backward sweep; executors schedule such a node just
/// before its first consumer instead of where a topological order puts it.
pub const RECOMPUTE_PREFIX: &str = "recompute:";
