//! The CUDA back end: fused kernels as readable CUDA C++, a launch plan, and
//! the weights the plan reads (`--emit cuda`; docs/CUDA.md is the guide).
//!
//! [`emit_cuda`] groups the graph's nodes ([`fuse`]), lowers the groups twice
//! — the prefill of a prompt and one decode step — into launch sequences of
//! kernels and cuBLAS GEMMs ([`lower`], [`plan`]), and collects the kernels
//! (one per distinct shape, constants baked in; [`kernels`]).
//! [`CudaProgram::write_to`] writes `kernels/*.cu`, `plan.json` and
//! `weights.safetensors` (bf16; norm weights and biases f32).
//!
//! [`nvrtc`] compiles a kernel with NVRTC (the CI check, and the CUDA
//! runtime's compiler); [`emulate`] runs a whole plan on CPU threads (the
//! kernels compiled as C++) so tests can compare it with the CPU runtime.
//! Nothing here needs a GPU.

pub mod emulate;
pub mod error;
pub mod fuse;
pub mod kernels;
pub mod lower;
pub mod nvrtc;
pub mod plan;

use std::path::Path;

use half::bf16;
use ligerc_ir::{DType, Graph};
use safetensors::tensor::TensorView;

pub use error::CudaError;
use lower::{PhaseKind, PlanWeight, Shared};
use plan::{PLAN_FORMAT, PLAN_VERSION, Plan, TensorDecl, WeightTable};

/// Options of [`emit_cuda`].
#[derive(Clone, Debug)]
pub struct CudaOptions {
    /// The architecture the plan is meant for (`sm_90`: H100/H200).
    pub arch: String,
    /// Chunk length of the chunked recurrence (reduced when shared memory is short).
    pub chunk: usize,
    /// Shared memory a block may use, bytes (227 KiB on sm_90).
    pub smem_limit: usize,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            arch: "sm_90".into(),
            chunk: 64,
            smem_limit: 227 * 1024,
        }
    }
}

/// One emitted kernel file.
#[derive(Clone, Debug)]
pub struct KernelFile {
    /// The entry point and file stem.
    pub name: String,
    /// The complete `.cu` source.
    pub source: String,
}

/// The result of [`emit_cuda`].
#[derive(Clone, Debug)]
pub struct CudaProgram {
    /// The plan (`plan.json`).
    pub plan: Plan,
    /// The kernels (`kernels/NAME.cu`).
    pub kernels: Vec<KernelFile>,
    weights: Vec<(PlanWeight, ligerc_ir::TensorData)>,
}

/// Lowers `graph` (normally after `--pass linearize`) to CUDA kernels and a plan.
///
/// Errors name the node the back end cannot handle (an op without a kernel, a
/// shape it does not support) and never leave anything half-done: nothing is
/// written here.
pub fn emit_cuda(graph: &Graph, opts: &CudaOptions) -> Result<CudaProgram, CudaError> {
    let groups = fuse::fuse(graph)?;
    let mut shared = Shared::default();
    let prefill = lower::lower_phase(graph, &groups, opts, PhaseKind::Prefill, &mut shared)?;
    let decode = lower::lower_phase(graph, &groups, opts, PhaseKind::Decode, &mut shared)?;
    let mut weights = Vec::new();
    let mut table = Vec::new();
    for w in &shared.weights.list {
        let data = graph
            .weights
            .get(&w.source)
            .cloned()
            .ok_or_else(|| CudaError::Shape {
                node: format!("weight `{}`", w.source),
                problem: "missing from the graph's weight store".into(),
            })?;
        table.push(TensorDecl {
            name: w.name.clone(),
            dtype: w.dtype.name().into(),
            shape: w.shape.iter().map(|&d| plan::Extent::from(d)).collect(),
        });
        weights.push((w.clone(), data));
    }
    let kernels: Vec<KernelFile> = shared
        .kernels
        .entries
        .iter()
        .map(|e| KernelFile {
            name: e.src.name.clone(),
            source: e.source(),
        })
        .collect();
    let plan = Plan {
        format: PLAN_FORMAT.into(),
        version: PLAN_VERSION,
        model: graph.name.clone(),
        arch: opts.arch.clone(),
        notes: vec![
            "Bind batch, seq (tokens per row in this call; 1 for decode), max_seq (KV-cache capacity); tokens = batch*seq.".into(),
            "Zero every persistent buffer at the start of a sequence; prefill with pos0 = 0, then decode with pos0 = tokens seen so far.".into(),
            "The scalars pos0 and step are passed by device pointer (const int*, const unsigned long long*): the caller keeps them in device memory, so one captured CUDA graph can replay every decode step.".into(),
            "Kernels: NVRTC-compile kernels/NAME.cu (entry NAME) with --gpu-architecture=sm_90 -default-device -std=c++17 and the CUDA include dir.".into(),
            "A kernel whose dynamic_smem exceeds 48 KiB needs CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES raised before launch.".into(),
            "GEMMs are cublasGemmEx calls (column-major): A/B bf16, C as c_type, CUBLAS_COMPUTE_32F.".into(),
            "Activations are row-major [batch, seq, features]; a null argument is passed as a null pointer.".into(),
        ],
        model_info: plan::ModelInfo {
            vocab: shared.vocab.unwrap_or(0),
            layers: shared.layers.clone(),
        },
        kernels: shared.kernels.decls(),
        weights: WeightTable {
            file: "weights.safetensors".into(),
            tensors: table,
        },
        persistent: shared.persistent.list.clone(),
        prefill,
        decode,
        top_k_max: kernels::sample::TOP_K_MAX,
    };
    Ok(CudaProgram {
        plan,
        kernels,
        weights,
    })
}

fn io_err(path: &Path, source: std::io::Error) -> CudaError {
    CudaError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl CudaProgram {
    /// `plan.json`: fields in declaration order, indented, every array or
    /// object that fits in 100 columns on one line.
    pub fn plan_json(&self) -> String {
        let flat = serde_json::to_string(&self.plan).unwrap_or_default();
        let mut out = String::new();
        match json::parse(&flat) {
            Some(tree) => json::write(&tree, 0, &mut out),
            None => out.push_str(&flat),
        }
        out.push('\n');
        out
    }

    /// The weights converted to their plan dtypes, as `(name, dtype, shape, bytes)`.
    pub fn weight_bytes(&self) -> Vec<(String, DType, Vec<usize>, Vec<u8>)> {
        self.weights
            .iter()
            .map(|(w, data)| {
                let values = data.to_f32_vec();
                let bytes: Vec<u8> = match w.dtype {
                    DType::BF16 => values
                        .iter()
                        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
                        .collect(),
                    _ => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
                };
                (w.name.clone(), w.dtype, w.shape.clone(), bytes)
            })
            .collect()
    }

    /// Writes `kernels/*.cu`, `plan.json` and `weights.safetensors` into `dir`
    /// (which must exist; the CLI passes a fresh temporary folder and renames it).
    pub fn write_to(&self, dir: &Path) -> Result<(), CudaError> {
        let kdir = dir.join("kernels");
        std::fs::create_dir_all(&kdir).map_err(|e| io_err(&kdir, e))?;
        for k in &self.kernels {
            let p = kdir.join(format!("{}.cu", k.name));
            std::fs::write(&p, &k.source).map_err(|e| io_err(&p, e))?;
        }
        let p = dir.join("plan.json");
        std::fs::write(&p, self.plan_json()).map_err(|e| io_err(&p, e))?;
        let converted = self.weight_bytes();
        let mut views = Vec::with_capacity(converted.len());
        for (name, dtype, shape, bytes) in &converted {
            let st = match dtype {
                DType::BF16 => safetensors::Dtype::BF16,
                _ => safetensors::Dtype::F32,
            };
            let view = TensorView::new(st, shape.clone(), bytes).map_err(|e| CudaError::Shape {
                node: format!("weight `{name}`"),
                problem: e.to_string(),
            })?;
            views.push((name.clone(), view));
        }
        let p = dir.join("weights.safetensors");
        safetensors::serialize_to_file(views, None, &p)
            .map_err(|e| io_err(&p, std::io::Error::other(e.to_string())))?;
        Ok(())
    }
}

/// A small order-preserving JSON re-indenter for `plan.json` (the workspace's
/// serde_json sorts object keys when going through `Value`).
mod json {
    /// A parsed JSON value holding slices of the compact text.
    pub enum Node<'a> {
        /// A string, number, bool or null, as written.
        Atom(&'a str),
        /// An array.
        Array(Vec<Node<'a>>, &'a str),
        /// An object: (quoted key, value) pairs.
        Object(Vec<(&'a str, Node<'a>)>, &'a str),
    }

    /// Parses compact JSON (as `serde_json::to_string` writes it).
    pub fn parse(s: &str) -> Option<Node<'_>> {
        let (node, rest) = value(s)?;
        rest.is_empty().then_some(node)
    }

    fn string(s: &str) -> Option<(&str, &str)> {
        let b = s.as_bytes();
        let mut i = 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return Some((&s[..=i], &s[i + 1..])),
                _ => i += 1,
            }
        }
        None
    }

    fn value(s: &str) -> Option<(Node<'_>, &str)> {
        match s.as_bytes().first()? {
            b'"' => string(s).map(|(a, r)| (Node::Atom(a), r)),
            b'[' => {
                let mut items = Vec::new();
                let mut rest = &s[1..];
                if let Some(r) = rest.strip_prefix(']') {
                    return Some((Node::Array(items, &s[..s.len() - r.len()]), r));
                }
                loop {
                    let (v, r) = value(rest)?;
                    items.push(v);
                    match r.as_bytes().first()? {
                        b',' => rest = &r[1..],
                        b']' => {
                            return Some((
                                Node::Array(items, &s[..s.len() - r.len() + 1]),
                                &r[1..],
                            ));
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                let mut items = Vec::new();
                let mut rest = &s[1..];
                if let Some(r) = rest.strip_prefix('}') {
                    return Some((Node::Object(items, &s[..s.len() - r.len()]), r));
                }
                loop {
                    let (k, r) = string(rest)?;
                    let (v, r) = value(r.strip_prefix(':')?)?;
                    items.push((k, v));
                    match r.as_bytes().first()? {
                        b',' => rest = &r[1..],
                        b'}' => {
                            return Some((
                                Node::Object(items, &s[..s.len() - r.len() + 1]),
                                &r[1..],
                            ));
                        }
                        _ => return None,
                    }
                }
            }
            _ => {
                let end = s.find([',', ']', '}']).unwrap_or(s.len());
                Some((Node::Atom(&s[..end]), &s[end..]))
            }
        }
    }

    /// Writes `n` at `indent` levels, inlining containers that fit in 100 columns.
    pub fn write(n: &Node<'_>, indent: usize, out: &mut String) {
        let pad = "  ".repeat(indent + 1);
        match n {
            Node::Atom(a) => out.push_str(a),
            Node::Array(_, flat) | Node::Object(_, flat) if flat.len() + indent * 2 <= 100 => {
                out.push_str(flat)
            }
            Node::Array(items, _) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    out.push_str(&pad);
                    write(item, indent + 1, out);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                out.push_str(&"  ".repeat(indent));
                out.push(']');
            }
            Node::Object(items, _) => {
                out.push_str("{\n");
                for (i, (k, item)) in items.iter().enumerate() {
                    out.push_str(&pad);
                    out.push_str(k);
                    out.push_str(": ");
                    write(item, indent + 1, out);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                out.push_str(&"  ".repeat(indent));
                out.push('}');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::json;

    #[test]
    fn plan_json_keeps_field_order_and_escapes() {
        let flat = r#"{"b":1,"a":[1,2,{"k":"x\"],y"}],"long":["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"],"e":[],"o":{}}"#;
        let tree = json::parse(flat).unwrap();
        let mut out = String::new();
        json::write(&tree, 0, &mut out);
        assert!(
            out.starts_with(
                "{\n  \"b\": 1,\n  \"a\": [1,2,{\"k\":\"x\\\"],y\"}],\n  \"long\": [\n"
            ),
            "{out}"
        );
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(flat).unwrap()
        );
        assert!(json::parse("{\"a\":").is_none());
    }
}
