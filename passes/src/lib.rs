//! `ligerc-passes`: graph rewrites and the machinery that runs them.
//!
//! A [`Pass`] transforms a [`Graph`] in place; a [`PassManager`] runs a named
//! pipeline of passes and the verifier after every one, so a broken rewrite
//! is reported at the pass that broke it. [`registry`] maps the names users
//! type after `--pass` to passes. The same types are the public API another
//! compiler uses to run ligerc's passes on its own graphs.

mod dce;
mod manager;
mod registry;

pub use dce::DeadCodeElimination;
pub use manager::{Pass, PassContext, PassError, PassManager};
pub use registry::{PassSpec, available_passes, make_pass};
