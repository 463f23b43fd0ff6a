//! The launch plan (`plan.json`): what a CUDA runtime executes, in order.
//!
//! A plan names every buffer with its dtype and shape, every kernel launch
//! with its grid, block, dynamic shared memory and arguments, and every cuBLAS
//! GEMM with its `cublasGemmEx` parameters. Sizes that depend on the run are
//! [`Extent`]s over a few symbols ([`Sym`]): `batch` (rows decoded together),
//! `seq` (tokens per row in this call; 1 in the decode phase), `tokens`
//! (`batch·seq`) and `max_seq` (the KV-cache capacity of softmax layers kept by
//! a hybrid). The runtime binds them ([`Bindings`]) and evaluates.
//!
//! Namespaces of arguments ([`Arg`]): `input` (fed by the caller), `buffer`
//! (transient, per phase, reused between steps), `persistent` (lives across
//! calls: recurrent states, window rings, KV caches; zeroed at the start of a
//! sequence), `weight` (from `weights.safetensors`), `scalar` (a run-time
//! number, [`Scalar`]) and `null` (a null pointer for a parameter the kernel
//! variant ignores). docs/CUDA.md describes the format with examples.
//!
//! The runtime deserialises this same type (`serde_json::from_str::<Plan>`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `format` field of every plan.
pub const PLAN_FORMAT: &str = "ligerc-cuda-plan";
/// The plan format's version.
pub const PLAN_VERSION: u32 = 1;

/// A run-time size symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sym {
    /// Sequences processed together.
    Batch,
    /// Tokens per sequence in this call (prefill length; 1 when decoding).
    Seq,
    /// `batch · seq`: rows of every activation.
    Tokens,
    /// Positions a KV cache of a kept softmax layer holds.
    MaxSeq,
}

impl Sym {
    /// The name in the plan.
    pub fn name(self) -> &'static str {
        match self {
            Sym::Batch => "batch",
            Sym::Seq => "seq",
            Sym::Tokens => "tokens",
            Sym::MaxSeq => "max_seq",
        }
    }

    fn parse(s: &str) -> Option<Sym> {
        [Sym::Batch, Sym::Seq, Sym::Tokens, Sym::MaxSeq]
            .into_iter()
            .find(|x| x.name() == s)
    }
}

/// Values of the size symbols for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bindings {
    /// Sequences.
    pub batch: u64,
    /// Tokens per sequence in this call.
    pub seq: u64,
    /// KV-cache capacity.
    pub max_seq: u64,
}

impl Bindings {
    /// The value of `sym`.
    pub fn get(&self, sym: Sym) -> u64 {
        match sym {
            Sym::Batch => self.batch,
            Sym::Seq => self.seq,
            Sym::Tokens => self.batch * self.seq,
            Sym::MaxSeq => self.max_seq,
        }
    }
}

/// A size: `ceil(mul · sym / div)`, or the constant `ceil(mul / div)` without a symbol.
///
/// Written in JSON as a number when constant, else as `"tokens"`, `"3*batch"`
/// or `"ceil(seq/4)"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Multiplier.
    pub mul: u64,
    /// The symbol, if any.
    pub sym: Option<Sym>,
    /// Divisor (rounding up), at least 1.
    pub div: u64,
}

impl Extent {
    /// A constant.
    pub const fn fixed(n: u64) -> Extent {
        Extent {
            mul: n,
            sym: None,
            div: 1,
        }
    }

    /// A symbol.
    pub const fn sym(s: Sym) -> Extent {
        Extent {
            mul: 1,
            sym: Some(s),
            div: 1,
        }
    }

    /// `ceil(self / n)`; for a constant, the constant itself.
    pub fn ceil_div(self, n: u64) -> Extent {
        match self.sym {
            None => Extent::fixed(self.value_fixed().div_ceil(n.max(1))),
            Some(_) => Extent {
                div: self.div * n.max(1),
                ..self
            },
        }
    }

    /// `self · n`.
    pub fn times(self, n: u64) -> Extent {
        Extent {
            mul: self.mul * n,
            ..self
        }
    }

    fn value_fixed(self) -> u64 {
        self.mul.div_ceil(self.div.max(1))
    }

    /// The constant value, if the extent has no symbol.
    pub fn as_fixed(self) -> Option<u64> {
        self.sym.is_none().then(|| self.value_fixed())
    }

    /// The value under `b`.
    pub fn eval(self, b: &Bindings) -> u64 {
        let n = self.mul * self.sym.map_or(1, |s| b.get(s));
        n.div_ceil(self.div.max(1))
    }
}

impl From<usize> for Extent {
    fn from(n: usize) -> Self {
        Extent::fixed(n as u64)
    }
}

impl fmt::Display for Extent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(sym) = self.sym else {
            return write!(f, "{}", self.value_fixed());
        };
        let base = if self.mul == 1 {
            sym.name().to_string()
        } else {
            format!("{}*{}", self.mul, sym.name())
        };
        if self.div > 1 {
            write!(f, "ceil({base}/{})", self.div)
        } else {
            f.write_str(&base)
        }
    }
}

impl FromStr for Extent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad extent `{s}`: expected N, SYM, N*SYM or ceil(…/N)");
        let s = s.trim();
        if let Ok(n) = s.parse::<u64>() {
            return Ok(Extent::fixed(n));
        }
        let (inner, div) = match s.strip_prefix("ceil(").and_then(|r| r.strip_suffix(')')) {
            Some(r) => {
                let (a, d) = r.rsplit_once('/').ok_or_else(bad)?;
                (a, d.trim().parse::<u64>().map_err(|_| bad())?)
            }
            None => (s, 1),
        };
        let (mul, sym) = match inner.split_once('*') {
            Some((m, x)) => (m.trim().parse::<u64>().map_err(|_| bad())?, x.trim()),
            None => (1, inner.trim()),
        };
        let sym = Sym::parse(sym).ok_or_else(bad)?;
        if div == 0 {
            return Err(bad());
        }
        Ok(Extent {
            mul,
            sym: Some(sym),
            div,
        })
    }
}

impl Serialize for Extent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_fixed() {
            Some(n) => s.serialize_u64(n),
            None => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Extent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Extent::fixed(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A run-time scalar argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scalar {
    /// `batch · seq` (i32).
    Tokens,
    /// Tokens per sequence in this call (i32).
    Seq,
    /// Sequences (i32).
    Batch,
    /// Absolute position of this call's first token (i32): 0 for a fresh
    /// prefill, the number of tokens already folded into the state otherwise.
    /// Passed **by device pointer** (`const int*`, one `int` in device memory that the
    /// kernel reads once), so that one captured CUDA graph replays every decode step
    /// while the runtime advances the value on the device.
    Pos0,
    /// KV-cache capacity (i32).
    MaxSeq,
    /// Top-k of the sampler (i32, 1 ..= the kernel's `KMAX`).
    TopK,
    /// Sampling temperature (f32; ≤ 0 means greedy).
    Temperature,
    /// Seed of the sampler (u64).
    Seed,
    /// Decode step counter, mixed into the sampler's random stream (u64), passed by
    /// device pointer (`const unsigned long long*`) like [`Scalar::Pos0`].
    Step,
}

impl Scalar {
    /// The C type the kernel declares (a pointer for the per-step scalars that live in
    /// device memory: see [`Scalar::in_device_memory`]).
    pub fn c_type(self) -> &'static str {
        match self {
            Scalar::Temperature => "float",
            Scalar::Seed => "unsigned long long",
            Scalar::Step => "const unsigned long long*",
            Scalar::Pos0 => "const int*",
            _ => "int",
        }
    }

    /// Whether the kernel receives a pointer to the value in device memory rather than
    /// the value (`pos0` and `step`: they change every decode step).
    pub fn in_device_memory(self) -> bool {
        matches!(self, Scalar::Pos0 | Scalar::Step)
    }
}

/// One argument of a kernel launch or one operand of a GEMM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arg {
    /// A caller-fed input (`input_ids`, `attention_mask`).
    Input(String),
    /// A transient buffer of the phase.
    Buffer(String),
    /// A buffer that lives across calls.
    Persistent(String),
    /// A tensor of `weights.safetensors`.
    Weight(String),
    /// A run-time scalar.
    Scalar(Scalar),
    /// A null pointer (a parameter the kernel's variant ignores).
    Null,
}

impl Arg {
    /// The buffer, input, persistent or weight name (None for scalars and null).
    pub fn name(&self) -> Option<&str> {
        match self {
            Arg::Input(n) | Arg::Buffer(n) | Arg::Persistent(n) | Arg::Weight(n) => Some(n),
            Arg::Scalar(_) | Arg::Null => None,
        }
    }
}

/// A tensor declaration: name, element type, shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorDecl {
    /// Name.
    pub name: String,
    /// Element type (`bf16`, `f32`, `i64`, `u8`, …).
    pub dtype: String,
    /// Row-major shape.
    pub shape: Vec<Extent>,
}

/// A buffer that survives between calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistentDecl {
    /// The buffer.
    #[serde(flatten)]
    pub tensor: TensorDecl,
    /// The decoder layer it belongs to (None for shared ones such as the key mask).
    pub layer: Option<usize>,
    /// What it holds.
    pub role: String,
}

/// A graph output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputDecl {
    /// The source graph's output name.
    pub name: String,
    /// The buffer holding it after the phase.
    pub buffer: String,
}

/// A kernel of `kernels/`, with what is fixed about its launches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelDecl {
    /// The `extern "C"` entry point (also the file stem).
    pub name: String,
    /// Path relative to the output folder (`kernels/NAME.cu`).
    pub file: String,
    /// Threads per block.
    pub block: [u32; 3],
    /// Dynamic shared memory per block, bytes. Above 48 KiB the runtime must
    /// raise `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` first.
    pub dynamic_smem: u32,
    /// What it computes (one line).
    pub summary: String,
}

/// A kernel launch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchStep {
    /// The kernel's name.
    pub kernel: String,
    /// Blocks.
    pub grid: [Extent; 3],
    /// Threads per block (as in the kernel declaration).
    pub block: [u32; 3],
    /// Dynamic shared memory, bytes.
    pub dynamic_smem: u32,
    /// Arguments in the kernel's parameter order.
    pub args: Vec<Arg>,
    /// Names of the tensors the step only reads.
    pub reads: Vec<String>,
    /// Names of the tensors it writes; tensors updated in place (recurrent
    /// states, rings, an in-place residual) are listed here only.
    pub writes: Vec<String>,
    /// The IR nodes this launch implements.
    pub nodes: Vec<String>,
    /// The decoder layer, if the step belongs to one.
    pub layer: Option<usize>,
}

/// A cuBLAS `cublasGemmEx` call, column-major as cuBLAS sees it:
/// `C = alpha · op(A) · op(B) + beta · C` with `op(A)` `m×k`, `op(B)` `k×n`.
///
/// For a row-major `y[n_rows, out] = x[n_rows, in] · W[out, in]ᵀ` the plan
/// writes `transa = T, transb = N, m = out, n = n_rows, k = in, A = W (lda =
/// in), B = x (ldb = in), C = y (ldc = out)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmStep {
    /// The row-major product this call computes, for people.
    pub op: String,
    /// `N` or `T`.
    pub transa: String,
    /// `N` or `T`.
    pub transb: String,
    /// Rows of `op(A)` and `C`.
    pub m: Extent,
    /// Columns of `op(B)` and `C`.
    pub n: Extent,
    /// Inner dimension.
    pub k: Extent,
    /// `A`.
    pub a: Arg,
    /// Leading dimension of `A`.
    pub lda: Extent,
    /// `B`.
    pub b: Arg,
    /// Leading dimension of `B`.
    pub ldb: Extent,
    /// `C` (read when `beta ≠ 0`).
    pub c: Arg,
    /// Leading dimension of `C`.
    pub ldc: Extent,
    /// Scale of the product.
    pub alpha: f64,
    /// Scale of the prior `C`.
    pub beta: f64,
    /// Element type of `A` (`bf16`).
    pub a_type: String,
    /// Element type of `B` (`bf16`).
    pub b_type: String,
    /// Element type of `C` (`bf16` or `f32`).
    pub c_type: String,
    /// Accumulation (`f32`: `CUBLAS_COMPUTE_32F`).
    pub compute: String,
    /// The IR nodes this call implements (part of).
    pub nodes: Vec<String>,
    /// The decoder layer, if any.
    pub layer: Option<usize>,
}

/// One step of a phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // a plan holds a few hundred steps; boxing buys nothing
pub enum Step {
    /// A kernel of `kernels/`.
    Launch(LaunchStep),
    /// A cuBLAS GEMM.
    Gemm(GemmStep),
}

/// A launch sequence and the transient buffers it uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Inputs the caller feeds for this phase.
    pub inputs: Vec<TensorDecl>,
    /// Transient buffers (allocate once at their largest binding; reused between steps).
    pub buffers: Vec<TensorDecl>,
    /// The steps, in stream order.
    pub steps: Vec<Step>,
    /// Where the graph's outputs are after the last step.
    pub outputs: Vec<OutputDecl>,
    /// Sampling from the phase's logits (absent when the graph has no logits output).
    pub sampling: Option<PhaseSampling>,
}

/// The weights file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightTable {
    /// File name relative to the output folder.
    pub file: String,
    /// Its tensors (dtype and shape as stored).
    pub tensors: Vec<TensorDecl>,
}

/// Choosing the next token after a phase: kernels reading the last position's
/// logits of each row and writing the persistent `next_ids [batch]` (i64),
/// which the next decode call may take as its `input_ids`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseSampling {
    /// Greedy: `next_ids[b] = argmax(logits[b, seq−1, :])` (first index on ties).
    pub argmax: LaunchStep,
    /// Top-k with temperature (`top_k` ≤ [`Plan::top_k_max`]; temperature ≤ 0 is greedy).
    pub top_k: LaunchStep,
}

/// Model facts a runtime needs besides the steps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Vocabulary size (logits width).
    pub vocab: usize,
    /// One entry per attention layer, in order.
    pub layers: Vec<String>,
}

/// The whole plan (`plan.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Always [`PLAN_FORMAT`].
    pub format: String,
    /// [`PLAN_VERSION`].
    pub version: u32,
    /// The source graph's name.
    pub model: String,
    /// The architecture the kernels were checked for (`sm_90`).
    pub arch: String,
    /// How to read and run the plan (free text).
    pub notes: Vec<String>,
    /// Model facts.
    pub model_info: ModelInfo,
    /// The kernels.
    pub kernels: Vec<KernelDecl>,
    /// The weights.
    pub weights: WeightTable,
    /// Buffers living across calls (zero them at the start of a sequence).
    pub persistent: Vec<PersistentDecl>,
    /// The whole prompt (`seq` tokens per row, starting at position `pos0`).
    pub prefill: Phase,
    /// One token per row (`seq = 1`) at position `pos0`.
    pub decode: Phase,
    /// The largest `top_k` the sampling kernels accept.
    pub top_k_max: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_print_parse_and_evaluate() {
        let b = Bindings {
            batch: 3,
            seq: 10,
            max_seq: 100,
        };
        for (e, text, value) in [
            (Extent::fixed(7), "7", 7),
            (Extent::sym(Sym::Tokens), "tokens", 30),
            (Extent::sym(Sym::Seq).ceil_div(4), "ceil(seq/4)", 3),
            (Extent::sym(Sym::Batch).times(3), "3*batch", 9),
            (
                Extent::sym(Sym::MaxSeq).times(2).ceil_div(3),
                "ceil(2*max_seq/3)",
                67,
            ),
        ] {
            assert_eq!(e.to_string(), text);
            assert_eq!(text.parse::<Extent>().unwrap(), e);
            assert_eq!(e.eval(&b), value);
        }
        assert!("ceil(seq/0)".parse::<Extent>().is_err());
        assert!("rows".parse::<Extent>().is_err());
        assert_eq!(Extent::fixed(10).ceil_div(4), Extent::fixed(3));
    }

    #[test]
    fn args_and_extents_round_trip_through_json() {
        let step = Step::Gemm(GemmStep {
            op: "y = x·Wᵀ".into(),
            transa: "T".into(),
            transb: "N".into(),
            m: Extent::fixed(64),
            n: Extent::sym(Sym::Tokens),
            k: Extent::fixed(32),
            a: Arg::Weight("w".into()),
            lda: Extent::fixed(32),
            b: Arg::Buffer("act.0".into()),
            ldb: Extent::fixed(32),
            c: Arg::Buffer("act.1".into()),
            ldc: Extent::fixed(64),
            alpha: 1.0,
            beta: 0.0,
            a_type: "bf16".into(),
            b_type: "bf16".into(),
            c_type: "f32".into(),
            compute: "f32".into(),
            nodes: vec![],
            layer: None,
        });
        let text = serde_json::to_string(&step).unwrap();
        assert!(
            text.contains(r#""kind":"gemm""#) && text.contains(r#""n":"tokens""#),
            "{text}"
        );
        assert!(text.contains(r#""a":{"weight":"w"}"#), "{text}");
        assert_eq!(serde_json::from_str::<Step>(&text).unwrap(), step);
        let s = serde_json::to_string(&Arg::Scalar(Scalar::Pos0)).unwrap();
        assert_eq!(s, r#"{"scalar":"pos0"}"#);
    }
}
