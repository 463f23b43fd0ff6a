//! LoRA adapters in PEFT's on-disk format: `adapter_model.safetensors` plus
//! `adapter_config.json`.
//!
//! PEFT names a tensor `base_model.model.<module>.lora_A.weight` (and
//! `lora_B`), where `<module>` is the Hugging Face module path
//! (`model.layers.0.self_attn.q_proj`). The `lora` pass names the graph's
//! adapter weights `<module>.lora_A.weight`, so a tensor maps to a graph
//! weight by dropping the `base_model.model.` prefix (names without it are
//! accepted too). Loading is all or nothing: every tensor of the file must
//! fill an adapter of the graph with exactly its shape, every adapter of the
//! graph must be filled, and nothing is changed unless all of that holds.
//!
//! This module reads and writes adapter weights only; it never inserts or
//! removes nodes (the `lora` and `merge-lora` passes do).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use ligerc_ir::{DType, Graph, NodeId, Op, TensorData, TensorType};
use serde_json::{Map, Value, json};
use thiserror::Error;

/// The prefix PEFT puts before every module path of a causal LM.
pub const PEFT_PREFIX: &str = "base_model.model.";
/// File name of the adapter weights inside an adapter directory.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// File name of the adapter configuration inside an adapter directory.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";

/// Errors reading, applying or writing an adapter.
#[derive(Debug, Error)]
pub enum AdapterError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid safetensors or JSON.
    #[error("{}: not a valid {format} file: {detail}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// `safetensors` or `adapter_config.json`.
        format: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// A tensor of the file does not fit the graph, or one the graph needs is absent.
    #[error("{}: tensor `{tensor}` {detail}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name as it is (or would be) in the file.
        tensor: String,
        /// What is wrong, with the expected shape where that applies.
        detail: String,
    },
    /// `adapter_config.json` asks for something the graph cannot represent.
    #[error("{}: `{key}` {detail}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// The configuration key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// The graph's LoRA nodes cannot be read or written as a PEFT adapter.
    #[error("graph `{graph}`: {detail}")]
    Graph {
        /// The graph's name.
        graph: String,
        /// What is wrong, naming the node.
        detail: String,
    },
}

/// One LoRA adapter of a graph: a pair of `A`/`B` weights and the `Lora`
/// nodes that use them (several when a projection is applied more than once).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSite {
    /// The adapted module's path (`model.layers.0.self_attn.q_proj`).
    pub module: String,
    /// Name of the `A` weight (`<module>.lora_A.weight`), `[rank, in]`.
    pub a: String,
    /// Name of the `B` weight (`<module>.lora_B.weight`), `[out, rank]`.
    pub b: String,
    /// Shape of `A`.
    pub a_shape: Vec<usize>,
    /// Shape of `B`.
    pub b_shape: Vec<usize>,
    /// The `Lora` nodes, in index order.
    pub nodes: Vec<NodeId>,
    /// Their alpha (the first node's, when they differ).
    pub alpha: f64,
}

impl LoraSite {
    /// Adapter rank (rows of `A`).
    pub fn rank(&self) -> usize {
        self.a_shape.first().copied().unwrap_or(0)
    }
}

/// What [`load_adapter`] changed.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterReport {
    /// Tensors loaded (two per adapter).
    pub tensors: usize,
    /// The alpha every `Lora` node now has, when `adapter_config.json` set it.
    pub alpha: Option<f64>,
}

/// Every LoRA adapter of `graph`, sorted by module path. Errors when a `Lora`
/// node's `A` or `B` operand is not a stored weight.
pub fn lora_sites(graph: &Graph) -> Result<Vec<LoraSite>, AdapterError> {
    let mut sites: BTreeMap<String, LoraSite> = BTreeMap::new();
    for id in graph.node_ids() {
        let Some(node) = graph.node(id) else { continue };
        let Op::Lora { alpha } = node.op else {
            continue;
        };
        let operands = graph.operands(id);
        let mut names = Vec::with_capacity(2);
        for (slot, role) in [(2, "lora_A"), (3, "lora_B")] {
            let weight = operands
                .get(slot)
                .and_then(|v| graph.node(v.node))
                .and_then(|n| match &n.op {
                    Op::Weight { name } => Some(name.clone()),
                    _ => None,
                })
                .filter(|name| graph.weights.contains_key(name))
                .ok_or_else(|| AdapterError::Graph {
                    graph: graph.name.clone(),
                    detail: format!(
                        "{}: its {role} operand is not a stored weight",
                        graph.describe(id)
                    ),
                })?;
            names.push(weight);
        }
        let (a, b) = (names[0].clone(), names[1].clone());
        let module = a.strip_suffix(".lora_A.weight").unwrap_or(&a).to_string();
        let shape = |name: &str| {
            graph
                .weights
                .get(name)
                .map(|t| t.shape().to_vec())
                .unwrap_or_default()
        };
        let site = sites.entry(a.clone()).or_insert_with(|| LoraSite {
            module,
            a_shape: shape(&a),
            b_shape: shape(&b),
            a,
            b: b.clone(),
            nodes: Vec::new(),
            alpha,
        });
        if site.b != b {
            return Err(AdapterError::Graph {
                graph: graph.name.clone(),
                detail: format!(
                    "{}: lora_A `{}` is paired with lora_B `{b}` here and with `{}` elsewhere",
                    graph.describe(id),
                    site.a,
                    site.b
                ),
            });
        }
        site.nodes.push(id);
    }
    let mut sites: Vec<LoraSite> = sites.into_values().collect();
    sites.sort_by(|x, y| x.module.cmp(&y.module));
    Ok(sites)
}

/// Loads a PEFT adapter into the graph's `Lora` nodes.
///
/// `path` is an `adapter_model.safetensors` file or the directory holding one.
/// When an `adapter_config.json` sits next to it, its `lora_alpha` (times
/// `√r` under `use_rslora`) becomes every `Lora` node's alpha, and options the
/// graph cannot represent (DoRA, per-module rank or alpha patterns) are errors.
pub fn load_adapter(graph: &mut Graph, path: &Path) -> Result<AdapterReport, AdapterError> {
    let file = if path.is_dir() {
        path.join(ADAPTER_WEIGHTS_FILE)
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file).map_err(|source| AdapterError::Io {
        path: file.clone(),
        source,
    })?;
    let config_path = file
        .parent()
        .map(|d| d.join(ADAPTER_CONFIG_FILE))
        .filter(|p| p.is_file());
    let config = match &config_path {
        None => None,
        Some(p) => Some(
            std::fs::read_to_string(p).map_err(|source| AdapterError::Io {
                path: p.clone(),
                source,
            })?,
        ),
    };
    load_adapter_bytes(
        graph,
        &bytes,
        &file,
        config.as_deref().zip(config_path.as_deref()),
    )
}

/// [`load_adapter`] on bytes already in memory: `weights` is the safetensors
/// file (`origin` names it in errors) and `config` an optional
/// `(adapter_config.json text, its path)`.
pub fn load_adapter_bytes(
    graph: &mut Graph,
    weights: &[u8],
    origin: &Path,
    config: Option<(&str, &Path)>,
) -> Result<AdapterReport, AdapterError> {
    let sites = lora_sites(graph)?;
    if sites.is_empty() {
        return Err(AdapterError::Graph {
            graph: graph.name.clone(),
            detail: format!(
                "has no Lora nodes to load {} into; run the `lora` pass first",
                origin.display()
            ),
        });
    }
    let alpha = match config {
        Some((text, path)) => config_alpha(text, path, &sites)?,
        None => None,
    };
    let tensor_err = |tensor: &str, detail: String| AdapterError::Tensor {
        path: origin.to_path_buf(),
        tensor: tensor.to_string(),
        detail,
    };
    let st =
        safetensors::SafeTensors::deserialize(weights).map_err(|e| AdapterError::Malformed {
            path: origin.to_path_buf(),
            format: "safetensors",
            detail: e.to_string(),
        })?;
    // Graph weight name → (expected shape, role, module).
    let mut wanted: HashMap<&str, (&[usize], &str, &str)> = HashMap::new();
    for s in &sites {
        wanted.insert(&s.a, (&s.a_shape, "lora_A", &s.module));
        wanted.insert(&s.b, (&s.b_shape, "lora_B", &s.module));
    }
    let mut loaded: BTreeMap<String, TensorData> = BTreeMap::new();
    let mut file_names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    file_names.sort();
    for file_name in &file_names {
        let view = st
            .tensor(file_name)
            .map_err(|e| tensor_err(file_name, e.to_string()))?;
        let name = file_name.strip_prefix(PEFT_PREFIX).unwrap_or(file_name);
        let Some(&(shape, role, module)) = wanted.get(name) else {
            return Err(tensor_err(
                file_name,
                "matches no LoRA adapter of the graph (was the `lora` pass run with the \
                 targets this adapter was trained with?)"
                    .into(),
            ));
        };
        if loaded.contains_key(name) {
            return Err(tensor_err(
                file_name,
                format!("fills `{name}`, which another tensor of the file already fills"),
            ));
        }
        if view.shape() != shape {
            return Err(tensor_err(
                file_name,
                format!(
                    "has shape {:?}, expected {shape:?} ({role} of `{module}`)",
                    view.shape()
                ),
            ));
        }
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            other => {
                return Err(tensor_err(
                    file_name,
                    format!("has dtype {other:?}, expected a float type"),
                ));
            }
        };
        let data = TensorData::new(
            dtype,
            view.shape().to_vec(),
            bytes::Bytes::copy_from_slice(view.data()),
        )
        .map_err(|e| tensor_err(file_name, e.to_string()))?;
        let data = if dtype == DType::F32 {
            data
        } else {
            TensorData::from_f32(shape.to_vec(), &data.to_f32_vec())
                .map_err(|e| tensor_err(file_name, e.to_string()))?
        };
        loaded.insert(name.to_string(), data);
    }
    for s in &sites {
        for name in [&s.a, &s.b] {
            if !loaded.contains_key(name.as_str()) {
                return Err(tensor_err(
                    &format!("{PEFT_PREFIX}{name}"),
                    format!("is missing; the graph adapts `{}`", s.module),
                ));
            }
        }
    }
    // Everything checked: apply.
    let tensors = loaded.len();
    for (name, data) in loaded {
        set_weight(graph, &name, data);
    }
    if let Some(alpha) = alpha {
        for s in &sites {
            for &id in &s.nodes {
                if let Some(node) = graph.node_mut(id) {
                    node.op = Op::Lora { alpha };
                }
            }
        }
    }
    Ok(AdapterReport { tensors, alpha })
}

/// Reads the alpha an `adapter_config.json` implies, checking it against the
/// graph's adapters.
fn config_alpha(text: &str, path: &Path, sites: &[LoraSite]) -> Result<Option<f64>, AdapterError> {
    let config_err = |key: &str, detail: String| AdapterError::Config {
        path: path.to_path_buf(),
        key: key.to_string(),
        detail,
    };
    let v: Value = serde_json::from_str(text).map_err(|e| AdapterError::Malformed {
        path: path.to_path_buf(),
        format: "adapter_config.json",
        detail: e.to_string(),
    })?;
    let Some(obj) = v.as_object() else {
        return Err(AdapterError::Malformed {
            path: path.to_path_buf(),
            format: "adapter_config.json",
            detail: "the top level is not an object".into(),
        });
    };
    if let Some(t) = obj.get("peft_type")
        && t.as_str() != Some("LORA")
    {
        return Err(config_err(
            "peft_type",
            format!("is {t}, expected \"LORA\""),
        ));
    }
    if obj.get("use_dora").and_then(Value::as_bool) == Some(true) {
        return Err(config_err(
            "use_dora",
            "is true; DoRA adapters are not supported".into(),
        ));
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if obj
            .get(key)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(config_err(
                key,
                "is not empty; per-module ranks and alphas are not supported".into(),
            ));
        }
    }
    if let Some(r) = obj.get("r") {
        let r = r
            .as_u64()
            .ok_or_else(|| config_err("r", format!("is {r}, expected a positive integer")))?;
        if let Some(s) = sites.iter().find(|s| s.rank() as u64 != r) {
            return Err(config_err(
                "r",
                format!(
                    "is {r}, but the graph adapts `{}` with rank {}",
                    s.module,
                    s.rank()
                ),
            ));
        }
    }
    let Some(alpha) = obj.get("lora_alpha") else {
        return Ok(None);
    };
    let alpha = alpha
        .as_f64()
        .filter(|a| a.is_finite())
        .ok_or_else(|| config_err("lora_alpha", format!("is {alpha}, expected a number")))?;
    if obj.get("use_rslora").and_then(Value::as_bool) == Some(true) {
        // rsLoRA scales by alpha/√r; the graph scales by alpha'/r, so alpha' = alpha·√r.
        let ranks: BTreeSet<usize> = sites.iter().map(LoraSite::rank).collect();
        let &[rank] = ranks.iter().copied().collect::<Vec<_>>().as_slice() else {
            return Err(config_err(
                "use_rslora",
                format!("needs one rank for every adapter, the graph has {ranks:?}"),
            ));
        };
        return Ok(Some(alpha * (rank as f64).sqrt()));
    }
    Ok(Some(alpha))
}

/// Stores `data` as weight `name` and retypes every node that reads it.
fn set_weight(graph: &mut Graph, name: &str, data: TensorData) {
    let ty = TensorType::fixed(data.dtype(), data.shape());
    for id in graph.node_ids() {
        if let Some(node) = graph.node_mut(id)
            && matches!(&node.op, Op::Weight { name: n } if n == name)
        {
            node.outputs = vec![ty.clone()];
        }
    }
    graph.weights.insert(name.to_string(), data);
}

/// The graph's adapter weights as a PEFT `adapter_model.safetensors`: f32
/// tensors named `base_model.model.<module>.lora_{A,B}.weight`.
pub fn save_adapter(graph: &Graph) -> Result<Vec<u8>, AdapterError> {
    let sites = nonempty_sites(graph)?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(2 * sites.len());
    for s in &sites {
        for name in [&s.a, &s.b] {
            let data = graph.weights.get(name).ok_or_else(|| AdapterError::Graph {
                graph: graph.name.clone(),
                detail: format!("weight `{name}` is not in the weight store"),
            })?;
            let mut raw = Vec::with_capacity(data.numel() * 4);
            if data.dtype() == DType::F32 {
                raw.extend_from_slice(data.bytes());
            } else {
                for v in data.to_f32_vec() {
                    raw.extend_from_slice(&v.to_le_bytes());
                }
            }
            tensors.push((format!("{PEFT_PREFIX}{name}"), data.shape().to_vec(), raw));
        }
    }
    let graph_err = |detail: String| AdapterError::Graph {
        graph: graph.name.clone(),
        detail,
    };
    let mut views = Vec::with_capacity(tensors.len());
    for (name, shape, raw) in &tensors {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), raw)
                .map_err(|e| graph_err(format!("tensor `{name}`: {e}")))?;
        views.push((name.as_str(), view));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| graph_err(format!("serialising the adapter: {e}")))
}

/// The `adapter_config.json` PEFT needs to load [`save_adapter`]'s weights
/// onto `base_model` (a Hugging Face id or path): `r`, `lora_alpha`,
/// `target_modules` (the module names, `q_proj`, …), `peft_type: "LORA"`,
/// `task_type: "CAUSAL_LM"`, `lora_dropout: 0.0`, `bias: "none"`.
///
/// Errors when the adapters differ in rank or alpha (PEFT would need
/// per-module patterns).
pub fn adapter_config(graph: &Graph, base_model: &str) -> Result<String, AdapterError> {
    let sites = nonempty_sites(graph)?;
    let graph_err = |detail: String| AdapterError::Graph {
        graph: graph.name.clone(),
        detail,
    };
    let first = &sites[0];
    if let Some(s) = sites.iter().find(|s| s.rank() != first.rank()) {
        return Err(graph_err(format!(
            "adapters differ in rank (`{}` has {}, `{}` has {})",
            first.module,
            first.rank(),
            s.module,
            s.rank()
        )));
    }
    for s in &sites {
        for &id in &s.nodes {
            if let Some(Op::Lora { alpha }) = graph.node(id).map(|n| &n.op)
                && *alpha != first.alpha
            {
                return Err(graph_err(format!(
                    "adapters differ in alpha ({} has {alpha}, `{}` has {})",
                    graph.describe(id),
                    first.module,
                    first.alpha
                )));
            }
        }
    }
    let modules: BTreeSet<&str> = sites
        .iter()
        .map(|s| s.module.rsplit('.').next().unwrap_or(&s.module))
        .collect();
    let alpha = if first.alpha.fract() == 0.0 && first.alpha.abs() < 1e15 {
        json!(first.alpha as i64)
    } else {
        json!(first.alpha)
    };
    let mut c = Map::new();
    c.insert("alpha_pattern".into(), json!({}));
    c.insert("base_model_name_or_path".into(), json!(base_model));
    c.insert("bias".into(), json!("none"));
    c.insert("fan_in_fan_out".into(), json!(false));
    c.insert("inference_mode".into(), json!(true));
    c.insert("init_lora_weights".into(), json!(true));
    c.insert("lora_alpha".into(), alpha);
    c.insert("lora_dropout".into(), json!(0.0));
    c.insert("modules_to_save".into(), Value::Null);
    c.insert("peft_type".into(), json!("LORA"));
    c.insert("r".into(), json!(first.rank()));
    c.insert("rank_pattern".into(), json!({}));
    c.insert("target_modules".into(), json!(modules));
    c.insert("task_type".into(), json!("CAUSAL_LM"));
    c.insert("use_dora".into(), json!(false));
    c.insert("use_rslora".into(), json!(false));
    serde_json::to_string_pretty(&Value::Object(c))
        .map_err(|e| graph_err(format!("serialising adapter_config.json: {e}")))
}

/// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir`
/// (created if needed). Each file is written under a temporary name and then
/// renamed, so a failure never leaves a half-written adapter.
pub fn write_adapter(graph: &Graph, dir: &Path, base_model: &str) -> Result<(), AdapterError> {
    let weights = save_adapter(graph)?;
    let config = adapter_config(graph, base_model)?;
    std::fs::create_dir_all(dir).map_err(|source| AdapterError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write_atomically(&dir.join(ADAPTER_WEIGHTS_FILE), &weights)?;
    write_atomically(&dir.join(ADAPTER_CONFIG_FILE), config.as_bytes())
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<(), AdapterError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let io = |source| AdapterError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Err(e) = std::fs::write(&tmp, data) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

fn nonempty_sites(graph: &Graph) -> Result<Vec<LoraSite>, AdapterError> {
    let sites = lora_sites(graph)?;
    if sites.is_empty() {
        return Err(AdapterError::Graph {
            graph: graph.name.clone(),
            detail: "has no Lora nodes; run the `lora` pass first".into(),
        });
    }
    Ok(sites)
}
