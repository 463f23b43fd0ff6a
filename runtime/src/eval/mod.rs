//! Evaluation of a language model: perplexity on text (overall and by
//! position bucket), zero-shot multiple choice from OE-Eval request files
//! with lm-eval's scoring conventions, and passkey retrieval.
//!
//! Everything here talks to the model through [`LanguageModel`], so the same
//! scoring runs on the CPU reference [`crate::Session`] ([`CpuModel`]) and on
//! the CUDA runtime ([`CudaModel`]). This module owns scoring and request
//! parsing; it does not load models, run passes or print anything (the
//! `ligerc eval` command does). The conventions — which tokens are scored,
//! how a context/continuation pair is tokenized, what `acc_norm` divides by —
//! are written down in each submodule and in `docs/EVAL.md`.

mod backend;
mod encode;
mod error;
mod logprob;
mod multiple_choice;
mod passkey;
mod requests;
mod windows;

pub use backend::{CpuModel, CudaModel, LanguageModel, Logits};
pub use encode::encode_pair;
pub use error::EvalError;
pub use logprob::log_softmax_at;
pub use multiple_choice::{
    ChoiceScore, McOptions, QuestionScore, TaskScore, score_question, score_task,
};
pub use passkey::{PasskeyOptions, PasskeyResult, PasskeyTrial, passkey_prompt, run_passkey};
pub use requests::{
    Choice, Question, UNCONDITIONAL_DOC_ID, default_task_path, parse_requests, read_requests,
};
pub use windows::{Bucket, TextScore, WindowOptions, parse_buckets, score_text};
