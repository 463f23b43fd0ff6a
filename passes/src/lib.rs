//! `ligerc-passes`: graph rewrites and the machinery that runs them.
//!
//! A [`Pass`] transforms a [`Graph`] in place; a [`PassManager`] runs a named
//! pipeline of passes and the verifier after every one, so a broken rewrite
//! is reported at the pass that broke it. [`registry`] maps the names users
//! type after `--pass` to passes. The same types are the public API another
//! compiler uses to run ligerc's passes on its own graphs.

mod adapter;
pub mod autodiff;
mod dce;
pub mod fold;
mod linearize;
mod lora;
mod manager;
mod merge_lora;
pub mod raise;
mod registry;
pub mod rewrite;

pub use adapter::{
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, AdapterError, AdapterReport, LoraSite, PEFT_PREFIX,
    adapter_config, load_adapter, load_adapter_bytes, lora_sites, save_adapter, write_adapter,
};
pub use autodiff::{AutodiffOptions, TrainingGraph, training_graph, training_graph_with};
pub use dce::DeadCodeElimination;
pub use linearize::{KeepSoftmax, Linearize};
pub use lora::{InsertLora, LoraConfig, LoraTarget, insert_lora, lora_a_init};
pub use manager::{Pass, PassContext, PassError, PassManager};
pub use merge_lora::{MergeLora, merge_lora};
pub use raise::Raise;
pub use registry::{PassSpec, available_passes, make_pass};
