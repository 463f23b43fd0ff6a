//! The Stanford Alpaca prompt template (tatsu-lab/stanford_alpaca,
//! `train.py` `PROMPT_DICT`), which the Liger recipe fine-tunes on.
//!
//! With a non-empty input:
//!
//! ```text
//! Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.
//!
//! ### Instruction:
//! {instruction}
//!
//! ### Input:
//! {input}
//!
//! ### Response:
//! ```
//!
//! Without one (`input` absent, `null` or empty):
//!
//! ```text
//! Below is an instruction that describes a task. Write a response that appropriately completes the request.
//!
//! ### Instruction:
//! {instruction}
//!
//! ### Response:
//! ```
//!
//! Each ends in one newline after `### Response:`; the response (`output`)
//! follows directly and is the only part that carries loss.

/// The preamble used when the record has an input.
pub const PREAMBLE_WITH_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.";

/// The preamble used when the record has no input.
pub const PREAMBLE_NO_INPUT: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.";

/// The prompt for `instruction` and an optional `input` (empty means none),
/// ending with `"### Response:\n"`.
pub fn alpaca_prompt(instruction: &str, input: Option<&str>) -> String {
    match input.filter(|s| !s.is_empty()) {
        Some(input) => format!(
            "{PREAMBLE_WITH_INPUT}\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
        ),
        None => {
            format!("{PREAMBLE_NO_INPUT}\n\n### Instruction:\n{instruction}\n\n### Response:\n")
        }
    }
}
