//! The `ligerc` command line: argument definitions and one module per command.

pub mod args;
pub mod bench;
pub mod common;
pub mod compile;
pub mod run;
