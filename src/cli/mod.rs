//! The `ligerc` command line: argument definitions and one module per command.

pub mod args;
pub mod bench;
pub mod bench_cuda;
pub mod common;
pub mod compile;
pub mod eval;
pub mod finetune;
pub mod finetune_args;
pub mod finetune_output;
pub mod run;
