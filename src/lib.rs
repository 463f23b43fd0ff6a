//! `ligerc`: turn a pretrained Llama-family model into a Liger-linearized one.
//!
//! This crate is the library facade over the workspace: [`ir`] (the graph),
//! [`frontends`] (ONNX, Hugging Face and GGUF importers), [`passes`] (rewrites
//! and the pass manager), [`codegen`] (ONNX export) and [`runtime`] (the CPU
//! reference backend). [`load_model`] imports any supported file by its kind.
//!
//! ```no_run
//! let model = ligerc::load_model(std::path::Path::new("model.onnx"))?;
//! println!("{}", ligerc::ir::text::print(&model.graph)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use ligerc_codegen as codegen;
pub use ligerc_frontends as frontends;
pub use ligerc_ir as ir;
pub use ligerc_passes as passes;
pub use ligerc_runtime as runtime;

mod model;
pub mod npy;
pub mod output;

pub use model::{
    LoadOptions, LoadedModel, ModelFormat, TokenizerSource, load_model, load_model_with,
};
