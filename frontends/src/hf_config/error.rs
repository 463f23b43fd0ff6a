//! Errors of `config.json` parsing; each names the file and the key.

use std::path::PathBuf;

/// Everything that can be wrong with a Hugging Face `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum HfConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("{file}: invalid JSON: {source}")]
    Json {
        /// The config file.
        file: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A required key is absent (or `null`).
    #[error("{file}: missing required key `{key}`")]
    Missing {
        /// The config file.
        file: PathBuf,
        /// The key, dotted for nested ones (`rope_scaling.factor`).
        key: String,
    },
    /// A key holds a value of the wrong JSON type.
    #[error("{file}: key `{key}`: expected {expected}, found {found}")]
    WrongType {
        /// The config file.
        file: PathBuf,
        /// The key, dotted for nested ones.
        key: String,
        /// What was expected (`"a non-negative integer"`).
        expected: &'static str,
        /// What the file holds (`"string \"4096\""`).
        found: String,
    },
    /// A value of the right type that is out of range or inconsistent.
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// The key, dotted for nested ones.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A `model_type` this importer does not handle.
    #[error("{file}: unsupported model_type {model_type:?} (supported: llama, mistral, qwen2)")]
    UnsupportedModelType {
        /// The config file.
        file: PathBuf,
        /// The value found.
        model_type: String,
    },
    /// A RoPE scaling type other than default, linear and llama3.
    #[error(
        "{file}: key `{key}`: unsupported RoPE type {rope_type:?} (supported: default, linear, llama3)"
    )]
    UnsupportedRopeType {
        /// The config file.
        file: PathBuf,
        /// The key holding the type (`rope_scaling.rope_type`).
        key: String,
        /// The value found.
        rope_type: String,
    },
    /// A `layer_types` entry other than `full_attention`.
    #[error(
        "{file}: layer_types[{index}] = {value:?}: only \"full_attention\" layers are supported"
    )]
    UnsupportedLayerType {
        /// The config file.
        file: PathBuf,
        /// The layer index.
        index: usize,
        /// The value found.
        value: String,
    },
    /// A feature the importer does not implement (`hidden_act`, sliding windows in Qwen2, ...).
    #[error("{file}: key `{key}`: unsupported: {reason}")]
    Unsupported {
        /// The config file.
        file: PathBuf,
        /// The key.
        key: String,
        /// What is not supported.
        reason: String,
    },
}
