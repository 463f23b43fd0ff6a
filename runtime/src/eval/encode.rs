//! Tokenizing a context/continuation pair the way lm-eval does.
//!
//! lm-eval's `HFLM._encode_pair` (and the same code in OE-Eval):
//!
//! 1. trailing whitespace of the context moves to the front of the
//!    continuation (`"Answer: "` + `"x"` becomes `"Answer:"` + `" x"`);
//! 2. `whole = encode(context + continuation)`, `ctx = encode(context)`;
//! 3. the continuation's tokens are `whole[len(ctx)..]`.
//!
//! The model then reads `ctx ++ cont` (which can differ from `whole` when a
//! token spans the boundary) and the continuation is scored token by token.
//! No BOS or other special token is added (lm-eval's default for causal
//! models: `add_special_tokens=False`).

use crate::Tokenizer;

use super::EvalError;

/// `(context tokens, continuation tokens)` of a pair, as lm-eval splits it.
///
/// Errors when the context encodes to no token (lm-eval would substitute the
/// end-of-text token; no OE-Eval zero-shot task has an empty context) or the
/// continuation ends up with none.
pub fn encode_pair(
    tok: &Tokenizer,
    context: &str,
    continuation: &str,
) -> Result<(Vec<i64>, Vec<i64>), EvalError> {
    let trimmed = context.trim_end();
    let moved = &context[trimmed.len()..];
    let continuation = format!("{moved}{continuation}");
    let whole = tok.encode(&format!("{trimmed}{continuation}"), false)?;
    let ctx = tok.encode(trimmed, false)?;
    if ctx.is_empty() {
        return Err(EvalError::Input(format!(
            "the context {context:?} encodes to no tokens"
        )));
    }
    let cont = whole.get(ctx.len()..).unwrap_or_default().to_vec();
    if cont.is_empty() {
        return Err(EvalError::Input(format!(
            "the continuation {continuation:?} after {context:?} encodes to no tokens"
        )));
    }
    Ok((ctx, cont))
}
