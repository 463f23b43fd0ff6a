//! Hugging Face checkpoint directories: `config.json` + `model.safetensors`
//! (or shards listed in `model.safetensors.index.json`).
//!
//! Tensors are sliced out of memory-mapped shards without copying.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ligerc_ir::{DType, Graph, TensorData};
use safetensors::SafeTensors;

use super::builder::{LlamaShape, WeightSource, build_llama};
use crate::error::{ImportError, ImportResult};
use crate::hf_config::LlamaConfig;
use crate::limits::ImportLimits;

/// Imports a Hugging Face Llama-family directory.
pub fn import_hf_dir(dir: &Path) -> ImportResult<Graph> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(ImportError::Io {
            path: config_path,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "a Hugging Face model directory needs config.json",
            ),
        });
    }
    let cfg = LlamaConfig::from_file(&config_path).map_err(|e| ImportError::Malformed {
        path: config_path.clone(),
        format: "config.json",
        detail: e.to_string(),
    })?;
    if let Some(w) = cfg.sliding_window
        && w < cfg.max_position_embeddings
    {
        return Err(ImportError::Unsupported {
            path: config_path,
            detail: format!(
                "sliding-window attention (window {w}) in the original model; only full attention is supported"
            ),
        });
    }
    let shape = shape_from_config(&cfg);
    let mut src = SafetensorsDir::open(dir)?;
    let name = dir
        .file_name()
        .map_or("model".to_string(), |n| n.to_string_lossy().into_owned());
    build_llama(&name, &shape, &mut src)
}

/// The architecture a parsed `config.json` describes.
pub fn shape_from_config(c: &LlamaConfig) -> LlamaShape {
    LlamaShape {
        vocab: c.vocab_size,
        hidden: c.hidden_size,
        intermediate: c.intermediate_size,
        layers: c.num_hidden_layers,
        heads: c.num_attention_heads,
        kv_heads: c.num_key_value_heads,
        head_dim: c.head_dim,
        rms_eps: c.rms_norm_eps,
        rope_theta: c.rope.theta,
        rope_scaling: c.rope.scaling.clone(),
        tied_embeddings: c.tie_word_embeddings,
        qkv_bias: c.qkv_bias,
        o_bias: c.o_bias,
        mlp_bias: c.mlp_bias,
    }
}

/// One tensor's place in a mapped shard.
struct Entry {
    shard: usize,
    dtype: DType,
    shape: Vec<usize>,
    range: std::ops::Range<usize>,
}

/// The safetensors shards of a directory, indexed by tensor name.
pub struct SafetensorsDir {
    dir: PathBuf,
    shards: Vec<(PathBuf, Bytes)>,
    entries: HashMap<String, Entry>,
    taken: std::collections::HashSet<String>,
}

impl SafetensorsDir {
    /// Maps `model.safetensors`, or every shard named by `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> ImportResult<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.is_file() {
            shard_files(&index)?
                .into_iter()
                .map(|f| dir.join(f))
                .collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut me = SafetensorsDir {
            dir: dir.to_path_buf(),
            shards: Vec::new(),
            entries: HashMap::new(),
            taken: Default::default(),
        };
        for path in files {
            me.add_shard(path)?;
        }
        Ok(me)
    }

    /// A directory whose only shard, `file_name`, is already in memory (no
    /// file is read; `dir` names the checkpoint in errors).
    pub fn from_bytes(dir: &Path, file_name: &str, bytes: Bytes) -> ImportResult<Self> {
        let mut me = SafetensorsDir {
            dir: dir.to_path_buf(),
            shards: Vec::new(),
            entries: HashMap::new(),
            taken: Default::default(),
        };
        me.add_shard_bytes(dir.join(file_name), bytes)?;
        Ok(me)
    }

    fn add_shard(&mut self, path: PathBuf) -> ImportResult<()> {
        let io = |source| ImportError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        // SAFETY: read-only map; ligerc never writes a checkpoint while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        self.add_shard_bytes(path, Bytes::from_owner(map))
    }

    fn add_shard_bytes(&mut self, path: PathBuf, bytes: Bytes) -> ImportResult<()> {
        // The crate checks the header (size, JSON, offsets that tile the data,
        // shape × dtype against each byte range) before any tensor is sliced.
        let st = SafeTensors::deserialize(&bytes).map_err(|e| ImportError::Malformed {
            path: path.clone(),
            format: "safetensors",
            detail: e.to_string(),
        })?;
        let base = bytes.as_ptr() as usize;
        let shard = self.shards.len();
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                safetensors::Dtype::F64 => DType::F64,
                safetensors::Dtype::I64 => DType::I64,
                safetensors::Dtype::I32 => DType::I32,
                other => {
                    return Err(ImportError::Tensor {
                        path: path.clone(),
                        tensor: name,
                        detail: format!("unsupported dtype {other:?}"),
                    });
                }
            };
            ImportLimits::default()
                .check_usize_shape(view.shape())
                .map_err(|detail| ImportError::Tensor {
                    path: path.clone(),
                    tensor: name.clone(),
                    detail,
                })?;
            let start = (view.data().as_ptr() as usize).saturating_sub(base);
            let range = start..start + view.data().len();
            self.entries.insert(
                name,
                Entry {
                    shard,
                    dtype,
                    shape: view.shape().to_vec(),
                    range,
                },
            );
        }
        self.shards.push((path, bytes.clone()));
        Ok(())
    }
}

fn shard_files(index: &Path) -> ImportResult<Vec<String>> {
    let malformed = |detail: String| ImportError::Malformed {
        path: index.to_path_buf(),
        format: "safetensors index",
        detail,
    };
    let text = std::fs::read_to_string(index).map_err(|source| ImportError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| malformed("no `weight_map` object".into()))?;
    let mut files = BTreeMap::new();
    for (tensor, file) in map {
        let f = file
            .as_str()
            .ok_or_else(|| malformed(format!("weight_map[{tensor}] is not a string")))?;
        if f.contains('/') || f.contains('\\') || f == ".." {
            return Err(malformed(format!(
                "shard name `{f}` must be a plain file name"
            )));
        }
        files.insert(f.to_string(), ());
    }
    Ok(files.into_keys().collect())
}

impl WeightSource for SafetensorsDir {
    fn take(&mut self, name: &str) -> ImportResult<Option<TensorData>> {
        let Some(e) = self.entries.get(name) else {
            return Ok(None);
        };
        self.taken.insert(name.to_string());
        let Some((path, bytes)) = self.shards.get(e.shard) else {
            return Ok(None);
        };
        TensorData::new(e.dtype, e.shape.clone(), bytes.slice(e.range.clone()))
            .map(Some)
            .map_err(|err| ImportError::Tensor {
                path: path.clone(),
                tensor: name.to_string(),
                detail: err.to_string(),
            })
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    fn unused(&self) -> Vec<String> {
        // Buffers some checkpoints carry that the graph recomputes.
        let ignorable = |n: &str| n.ends_with("rotary_emb.inv_freq");
        let mut v: Vec<String> = self
            .entries
            .keys()
            .filter(|n| !self.taken.contains(*n) && !ignorable(n))
            .cloned()
            .collect();
        v.sort();
        v
    }
}
