//! Llama-family checkpoints (Hugging Face directories, GGUF files) → the
//! high-level graph, built from the checkpoint's own configuration.

mod builder;
mod gguf;
mod hf;

pub use builder::{LlamaShape, WeightSource, build_llama};
pub use gguf::{GgufModel, GgufTokenizer, import_gguf, import_gguf_bytes};
pub use hf::{SafetensorsDir, import_hf_dir, shape_from_config};
