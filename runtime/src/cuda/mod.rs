//! The CUDA runtime: executes an `--emit cuda` plan (docs/CUDA.md) on an NVIDIA GPU.
//!
//! Everything goes through the driver API, NVRTC and cuBLAS as loaded at run time by
//! cudarc (`dynamic-loading`): before the first call into any of them their presence is
//! checked, so a machine without a GPU or without the libraries gets
//! [`CudaError::Unavailable`] (the CLI's exit code 3), never a panic.
//!
//! [`CudaSession`] compiles every kernel with NVRTC for the device's architecture to a
//! cubin (cached by source hash under [`cache_dir`]), loads the modules, raises the
//! dynamic shared-memory limit where a kernel needs more than 48 KiB, uploads the weights
//! as stored (bf16 GEMM operands, f32 norms) and runs the plan's prefill and decode phases
//! in stream order: kernel launches with the plan's grid, block and arguments, GEMMs as
//! `cublasGemmEx` (bf16 in, f32 accumulation).
//!
//! Decode runs under CUDA graphs: the per-step scalars (`pos0`, `step`) live in device
//! memory (the kernels take pointers; docs/CUDA.md), a tiny runtime kernel advances them at
//! the end of every step, so the decode phase of one batch size is captured once (its
//! second step; the first runs eagerly as a warm-up) and every later step is one
//! `cuGraphLaunch`. `LIGERC_CUDA_GRAPHS=0` (or `LIGERC_CUDA_SYNC=1`) keeps plain launches.

mod device;
pub mod train;

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};

use ligerc_codegen::cuda::plan::{Arg, Bindings, Phase, Plan, Scalar, Step, TensorDecl};
use ligerc_codegen::cuda::{CudaProgram, nvrtc};

pub use device::{Device, DeviceBuffer, GraphExec};

/// Most GEMMs one [`GEMV_SRC`] launch fuses (consecutive plan GEMMs reading the same
/// activation, e.g. the q/k/v projections).
const GEMV_GROUPS: usize = 4;
/// Most activation rows (`n`) the GEMV path takes by default (`LIGERC_CUDA_GEMV_MAX_ROWS`
/// overrides, up to 8); larger GEMMs go to cuBLAS. Measured on an H100 (SmolLM2 decode,
/// graphs, tok/s GEMV vs cuBLAS): n = 1: 853 vs 705, n = 2: 1,537 vs 1,400; n = 4: 2,590
/// vs 2,811, n = 8: 3,828 vs 5,575.
const GEMV_MAX_ROWS: i32 = 2;

fn gemv_max_rows() -> i32 {
    std::env::var("LIGERC_CUDA_GEMV_MAX_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(GEMV_MAX_ROWS, |n: i32| n.clamp(0, 8))
}

/// The runtime's skinny-GEMM kernel for decode (`n ≤ 8` activation rows; used for
/// `n ≤` [`GEMV_MAX_ROWS`] by default): `y = alpha·x·Wᵀ +
/// beta·y` for up to 4 weights sharing `x`, one warp per output feature, 16-byte loads of
/// the bf16 weight row (read once for all rows of `x`), f32 accumulation. cuBLAS spends
/// several µs per call at these shapes; one launch here replaces the q/k/v (or gate/up)
/// GEMMs of a layer.
const GEMV_SRC: &str = r#"// ligerc runtime: grouped skinny GEMM y_g[n][m] = alpha_g * sum_k W_g[m][k] x[n][k] + beta_g * y_g[n][m]
#include <cuda_bf16.h>
constexpr int NG = 4, NMAX = 8;
struct Group { const __nv_bfloat16* w; void* y; int m, ldw, ldy, y_bf16; float alpha, beta; };
struct Groups { Group g[NG]; };
extern "C" __global__ void ligerc_gemv(const __nv_bfloat16* __restrict__ x, int ldx, int n, int k, int count, Groups gs) {
    const int lane = threadIdx.x & 31;
    int row = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    int gi = 0;
    for (; gi < count; ++gi) { if (row < gs.g[gi].m) break; row -= gs.g[gi].m; }
    if (gi >= count) return;
    const Group& G = gs.g[gi];
    const __nv_bfloat16* w = G.w + (long long)row * G.ldw;
    float acc[NMAX];
#pragma unroll
    for (int r = 0; r < NMAX; ++r) acc[r] = 0.0f;
    for (int c = lane * 8; c < k; c += 32 * 8) {
        const uint4 wv = *reinterpret_cast<const uint4*>(w + c);
        const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&wv);
        float wf[8];
#pragma unroll
        for (int i = 0; i < 4; ++i) { const float2 f = __bfloat1622float2(w2[i]); wf[2 * i] = f.x; wf[2 * i + 1] = f.y; }
#pragma unroll
        for (int r = 0; r < NMAX; ++r) {
            if (r < n) {
                const uint4 xv = *reinterpret_cast<const uint4*>(x + (long long)r * ldx + c);
                const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
                for (int i = 0; i < 4; ++i) { const float2 f = __bfloat1622float2(x2[i]); acc[r] += wf[2 * i] * f.x + wf[2 * i + 1] * f.y; }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < NMAX; ++r) {
        if (r < n) {
            float v = acc[r];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0) {
                const long long at = (long long)r * G.ldy + row;
                if (G.y_bf16) {
                    __nv_bfloat16* y = (__nv_bfloat16*)G.y;
                    const float old = G.beta != 0.0f ? G.beta * __bfloat162float(y[at]) : 0.0f;
                    y[at] = __float2bfloat16(G.alpha * v + old);
                } else {
                    float* y = (float*)G.y;
                    const float old = G.beta != 0.0f ? G.beta * y[at] : 0.0f;
                    y[at] = G.alpha * v + old;
                }
            }
        }
    }
}
"#;

/// The gate/up GEMV with the SwiGLU folded in: `y = bf16(silu(g)·u)` with `g`, `u` the two
/// projections rounded to bf16 as the plan's buffers would hold them; replaces a
/// two-weight [`GEMV_SRC`] launch and the plan's `swiglu_*` launch when nothing else reads
/// the gate/up buffers.
const GEMV_SWIGLU_SRC: &str = r#"// ligerc runtime: y[n][m] = silu(x.Wg^T) * (x.Wu^T), bf16 in/out, f32 accumulation
#include <cuda_bf16.h>
constexpr int NMAX = 8;
extern "C" __global__ void ligerc_gemv_swiglu(const __nv_bfloat16* __restrict__ x, int ldx, int n, int k,
        const __nv_bfloat16* __restrict__ wg, int ldwg, const __nv_bfloat16* __restrict__ wu, int ldwu,
        __nv_bfloat16* __restrict__ y, int m) {
    const int lane = threadIdx.x & 31;
    const int row = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    if (row >= m) return;
    const __nv_bfloat16* g_row = wg + (long long)row * ldwg;
    const __nv_bfloat16* u_row = wu + (long long)row * ldwu;
    float ag[NMAX], au[NMAX];
#pragma unroll
    for (int r = 0; r < NMAX; ++r) { ag[r] = 0.0f; au[r] = 0.0f; }
    for (int c = lane * 8; c < k; c += 32 * 8) {
        const uint4 gv = *reinterpret_cast<const uint4*>(g_row + c);
        const uint4 uv = *reinterpret_cast<const uint4*>(u_row + c);
        const __nv_bfloat162* g2 = reinterpret_cast<const __nv_bfloat162*>(&gv);
        const __nv_bfloat162* u2 = reinterpret_cast<const __nv_bfloat162*>(&uv);
        float gf[8], uf[8];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 a = __bfloat1622float2(g2[i]); gf[2 * i] = a.x; gf[2 * i + 1] = a.y;
            const float2 b = __bfloat1622float2(u2[i]); uf[2 * i] = b.x; uf[2 * i + 1] = b.y;
        }
#pragma unroll
        for (int r = 0; r < NMAX; ++r) {
            if (r < n) {
                const uint4 xv = *reinterpret_cast<const uint4*>(x + (long long)r * ldx + c);
                const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const float2 f = __bfloat1622float2(x2[i]);
                    ag[r] += gf[2 * i] * f.x + gf[2 * i + 1] * f.y;
                    au[r] += uf[2 * i] * f.x + uf[2 * i + 1] * f.y;
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < NMAX; ++r) {
        if (r < n) {
            float a = ag[r], b = au[r];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                a += __shfl_xor_sync(0xffffffffu, a, o);
                b += __shfl_xor_sync(0xffffffffu, b, o);
            }
            if (lane == 0) {
                const float g = __bfloat162float(__float2bfloat16(a));
                const float u = __bfloat162float(__float2bfloat16(b));
                y[(long long)r * m + row] = __float2bfloat16(g * (1.0f / (1.0f + expf(-g))) * u);
            }
        }
    }
}
"#;

/// One GEMV group's parameters, laid out as the kernel's `Group` struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct GemvGroup {
    w: u64,
    y: u64,
    m: i32,
    ldw: i32,
    ldy: i32,
    y_bf16: i32,
    alpha: f32,
    beta: f32,
}

/// Whether a GEMM can take the GEMV path: row-major `y = x·Wᵀ` with bf16 operands, few
/// rows, 16-byte aligned rows.
fn gemv_eligible(g: &device::GemmParams) -> bool {
    g.ta && !g.tb
        && g.a_bf16
        && g.b_bf16
        && g.n >= 1
        && g.n <= gemv_max_rows()
        && g.k % 8 == 0
        && g.lda % 8 == 0
        && g.ldb % 8 == 0
        && g.a.is_multiple_of(16)
        && g.b.is_multiple_of(16)
}

/// The runtime's own kernel: advances the device-resident `pos0` and `step` by one at the
/// end of a decode step (captured into the graph with the plan's launches).
const ADVANCE_SRC: &str = r#"// ligerc runtime: pos0 += 1, step += 1 (the per-step scalars live in device memory).
extern "C" __global__ void ligerc_advance_scalars(int* __restrict__ pos0, unsigned long long* __restrict__ step) {
    if (threadIdx.x == 0 && blockIdx.x == 0) { *pos0 += 1; *step += 1; }
}
"#;

/// A CUDA runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No GPU, no driver, or a CUDA library missing (exit code 3 in the CLI).
    #[error("CUDA device unavailable: {0}")]
    Unavailable(String),
    /// A driver or cuBLAS call failed.
    #[error("CUDA {call} failed: {detail}")]
    Api {
        /// The call.
        call: String,
        /// The error.
        detail: String,
    },
    /// A kernel did not compile.
    #[error("NVRTC: {0}")]
    Compile(String),
    /// The plan is malformed or does not fit the request.
    #[error("CUDA plan: {0}")]
    Plan(String),
    /// Reading the plan folder or the cache.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Where compiled cubins are cached: `$LIGERC_CUDA_CACHE`, else
/// `$XDG_CACHE_HOME/ligerc/cuda`, else `~/.cache/ligerc/cuda`, else the temp dir.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LIGERC_CUDA_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("ligerc/cuda");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/ligerc/cuda");
    }
    std::env::temp_dir().join("ligerc-cuda-cache")
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Include directories for `cuda_bf16.h`: `$LIGERC_CUDA_INCLUDE`, `$CUDA_HOME/include`,
/// `/usr/local/cuda/include`, those that exist.
fn include_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os("LIGERC_CUDA_INCLUDE") {
        v.push(PathBuf::from(d));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(d) = std::env::var_os(var) {
            v.push(PathBuf::from(d).join("include"));
        }
    }
    v.push(PathBuf::from("/usr/local/cuda/include"));
    v.retain(|d| d.join("cuda_bf16.h").is_file());
    v.dedup();
    v
}

/// Compiles (or takes from the cache) one kernel to a cubin for `arch`.
fn cubin_for(name: &str, source: &str, arch: &str) -> Result<(Vec<u8>, bool), CudaError> {
    let (maj, min) = nvrtc::version().map_err(|e| CudaError::Unavailable(e.to_string()))?;
    let incs = include_dirs();
    let opts = nvrtc::options(arch, &incs).join(" ");
    let ver = format!("{maj}.{min}");
    let key = fnv1a(&[
        source.as_bytes(),
        arch.as_bytes(),
        opts.as_bytes(),
        ver.as_bytes(),
    ]);
    let dir = cache_dir();
    let path = dir.join(format!("{name}-{key:016x}.cubin"));
    if let Ok(bytes) = std::fs::read(&path)
        && !bytes.is_empty()
    {
        return Ok((bytes, true));
    }
    let c = nvrtc::compile(name, source, arch, &incs).map_err(|e| match e {
        nvrtc::NvrtcError::LibraryMissing { .. } => CudaError::Unavailable(e.to_string()),
        _ => CudaError::Compile(e.to_string()),
    })?;
    if !c.log.trim().is_empty() && std::env::var_os("LIGERC_CUDA_VERBOSE").is_some() {
        eprintln!("nvrtc {name}: {}", c.log.trim());
    }
    // The cache is best effort: a read-only folder only costs a recompile.
    if std::fs::create_dir_all(&dir).is_ok() {
        let tmp = dir.join(format!(".{name}-{key:016x}.{}", std::process::id()));
        if std::fs::write(&tmp, &c.image).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok((c.image, false))
}

fn elem_size(dtype: &str) -> usize {
    match dtype {
        "bf16" | "f16" => 2,
        "f32" | "i32" => 4,
        "i64" => 8,
        _ => 1,
    }
}

fn numel(t: &TensorDecl, b: &Bindings) -> usize {
    t.shape.iter().map(|e| e.eval(b) as usize).product()
}

/// Counters of what a session did (for reports).
#[derive(Clone, Debug, Default)]
pub struct CudaStats {
    /// Kernels compiled by NVRTC in this process.
    pub compiled: usize,
    /// Kernels taken from the cubin cache.
    pub cached: usize,
    /// The device's name.
    pub device: String,
    /// `sm_XY`.
    pub arch: String,
    /// NVRTC's version.
    pub nvrtc: (i32, i32),
    /// Decode graphs captured (one per batch size and input binding).
    pub graphs_captured: usize,
    /// Decode steps replayed from a graph.
    pub graph_launches: usize,
    /// Decode steps run as plain launches (warm-ups, or graphs disabled).
    pub eager_steps: usize,
}

/// Values of the run-time scalars for one call.
#[derive(Clone, Copy, Debug)]
struct Call {
    b: Bindings,
    pos0: u64,
    step: u64,
}

/// A plan loaded onto a GPU, with its persistent state for one batch size.
pub struct CudaSession {
    dev: Device,
    plan: Plan,
    funcs: HashMap<String, device::Function>,
    weights: HashMap<String, DeviceBuffer>,
    persistent: HashMap<String, DeviceBuffer>,
    pers_bind: Option<Bindings>,
    decode_bufs: Option<(Bindings, HashMap<String, DeviceBuffer>)>,
    prefill_bufs: Option<(Bindings, HashMap<String, DeviceBuffer>)>,
    /// `pos0` (i32 at offset 0) and `step` (u64 at offset 8) in device memory.
    scalars: DeviceBuffer,
    /// What `scalars` will hold once the queued work has run (None: unknown).
    dev_scalars: Option<(u64, u64)>,
    advance: device::Function,
    gemv: Option<device::Function>,
    gemv_swiglu: Option<device::Function>,
    /// Decode graphs by (bindings, input_ids from next_ids, sampling): None = seen once
    /// (ran eagerly as the warm-up), Some = captured.
    graphs: HashMap<(Bindings, bool, bool), Option<GraphExec>>,
    use_graphs: bool,
    /// What was compiled and where.
    pub stats: CudaStats,
    sync_each_step: bool,
}

/// Checks that a GPU and the CUDA libraries are usable (driver, NVRTC, cuBLAS) without
/// touching anything else.
pub fn check_available() -> Result<(), CudaError> {
    Device::open(0).map(|_| ())
}

impl CudaSession {
    /// Loads an `--emit cuda` folder.
    pub fn from_dir(dir: &Path) -> Result<CudaSession, CudaError> {
        let io = |p: &Path, e| CudaError::Io {
            path: p.display().to_string(),
            source: e,
        };
        // Availability first: a missing GPU is the answer even for a bad folder.
        let dev = Device::open(0)?;
        let pp = dir.join("plan.json");
        let text = std::fs::read_to_string(&pp).map_err(|e| io(&pp, e))?;
        let plan: Plan = serde_json::from_str(&text)
            .map_err(|e| CudaError::Plan(format!("{}: {e}", pp.display())))?;
        let mut sources = Vec::new();
        for k in &plan.kernels {
            let p = dir.join(&k.file);
            sources.push((
                k.name.clone(),
                std::fs::read_to_string(&p).map_err(|e| io(&p, e))?,
            ));
        }
        let wp = dir.join(&plan.weights.file);
        let wbytes = std::fs::read(&wp).map_err(|e| io(&wp, e))?;
        let st = safetensors::SafeTensors::deserialize(&wbytes)
            .map_err(|e| CudaError::Plan(format!("{}: {e}", wp.display())))?;
        let mut weights = Vec::new();
        for w in &plan.weights.tensors {
            let t = st
                .tensor(&w.name)
                .map_err(|e| CudaError::Plan(format!("weight `{}`: {e}", w.name)))?;
            weights.push((w.name.clone(), t.data().to_vec()));
        }
        Self::build(dev, plan, sources, weights)
    }

    /// Loads a program emitted in this process (`emit_cuda`).
    pub fn from_program(prog: &CudaProgram) -> Result<CudaSession, CudaError> {
        let dev = Device::open(0)?;
        let sources = prog
            .kernels
            .iter()
            .map(|k| (k.name.clone(), k.source.clone()))
            .collect();
        let weights = prog
            .weight_bytes()
            .into_iter()
            .map(|(n, _, _, b)| (n, b))
            .collect();
        Self::build(dev, prog.plan.clone(), sources, weights)
    }

    fn build(
        dev: Device,
        plan: Plan,
        sources: Vec<(String, String)>,
        weights: Vec<(String, Vec<u8>)>,
    ) -> Result<CudaSession, CudaError> {
        let arch = dev.arch();
        let mut stats = CudaStats {
            device: dev.name.clone(),
            arch: arch.clone(),
            nvrtc: nvrtc::version().map_err(|e| CudaError::Unavailable(e.to_string()))?,
            ..Default::default()
        };
        let mut funcs = HashMap::new();
        for (name, src) in &sources {
            let (cubin, hit) = cubin_for(name, src, &arch)?;
            if hit {
                stats.cached += 1;
            } else {
                stats.compiled += 1;
            }
            let f = dev.load_function(&cubin, name)?;
            funcs.insert(name.clone(), f);
        }
        for k in &plan.kernels {
            let f = funcs
                .get(&k.name)
                .ok_or_else(|| CudaError::Plan(format!("kernel `{}` has no source", k.name)))?;
            if k.dynamic_smem > 48 * 1024 {
                dev.set_max_dynamic_smem(f, k.dynamic_smem)?;
            }
        }
        let (cubin, _) = cubin_for("ligerc_advance_scalars", ADVANCE_SRC, &arch)?;
        let advance = dev.load_function(&cubin, "ligerc_advance_scalars")?;
        // The GEMV path is optional: any failure to build it leaves every GEMM on cuBLAS.
        let gemv = if std::env::var("LIGERC_CUDA_GEMV").map_or(true, |v| v != "0") {
            cubin_for("ligerc_gemv", GEMV_SRC, &arch)
                .and_then(|(c, _)| dev.load_function(&c, "ligerc_gemv"))
                .map_err(|e| eprintln!("cuda: GEMV kernel unavailable ({e}); cuBLAS only"))
                .ok()
        } else {
            None
        };
        let gemv_swiglu = if gemv.is_some()
            && std::env::var("LIGERC_CUDA_FOLD_SWIGLU").map_or(true, |v| v != "0")
        {
            cubin_for("ligerc_gemv_swiglu", GEMV_SWIGLU_SRC, &arch)
                .and_then(|(c, _)| dev.load_function(&c, "ligerc_gemv_swiglu"))
                .map_err(|e| eprintln!("cuda: GEMV+SwiGLU kernel unavailable ({e})"))
                .ok()
        } else {
            None
        };
        let scalars = dev.alloc(16)?;
        dev.memset0(&scalars)?;
        let mut wmap = HashMap::new();
        for (name, bytes) in weights {
            let buf = dev.alloc(bytes.len())?;
            dev.upload(&buf, &bytes)?;
            wmap.insert(name, buf);
        }
        Ok(CudaSession {
            dev,
            plan,
            funcs,
            weights: wmap,
            persistent: HashMap::new(),
            pers_bind: None,
            decode_bufs: None,
            prefill_bufs: None,
            scalars,
            dev_scalars: Some((0, 0)),
            advance,
            gemv,
            gemv_swiglu,
            graphs: HashMap::new(),
            use_graphs: std::env::var("LIGERC_CUDA_GRAPHS").map_or(true, |v| v != "0"),
            stats,
            sync_each_step: std::env::var_os("LIGERC_CUDA_SYNC").is_some(),
        })
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Turns decode graphs on or off (default on unless `LIGERC_CUDA_GRAPHS=0`); turning
    /// them off drops the captured graphs.
    pub fn set_graphs(&mut self, on: bool) {
        self.use_graphs = on;
        if !on {
            self.graphs.clear();
        }
    }

    /// Whether decode steps replay captured graphs.
    pub fn graphs_enabled(&self) -> bool {
        self.use_graphs && !self.sync_each_step
    }

    /// Frees the cached transient buffers of both phases (after a sync).
    pub fn release_buffers(&mut self) -> Result<(), CudaError> {
        self.dev.sync()?;
        self.graphs.clear();
        self.decode_bufs = None;
        self.prefill_bufs = None;
        Ok(())
    }

    /// Allocates (for `batch` rows and a KV capacity `max_seq`) and zeroes the persistent
    /// buffers: the start of a sequence.
    pub fn reset(&mut self, batch: usize, max_seq: usize) -> Result<(), CudaError> {
        let b = Bindings {
            batch: batch as u64,
            seq: 1,
            max_seq: max_seq as u64,
        };
        if self.pers_bind != Some(b) {
            self.persistent.clear();
            for p in &self.plan.persistent {
                let n = numel(&p.tensor, &b) * elem_size(&p.tensor.dtype);
                let buf = self.dev.alloc(n.max(1))?;
                self.persistent.insert(p.tensor.name.clone(), buf);
            }
            self.pers_bind = Some(b);
            self.decode_bufs = None;
            self.graphs.clear();
        }
        for buf in self.persistent.values() {
            self.dev.memset0(buf)?;
        }
        Ok(())
    }

    fn alloc_phase(
        &self,
        phase: &Phase,
        b: &Bindings,
    ) -> Result<HashMap<String, DeviceBuffer>, CudaError> {
        let mut m = HashMap::new();
        for t in phase.buffers.iter().chain(phase.inputs.iter()) {
            let n = numel(t, b) * elem_size(&t.dtype);
            m.insert(t.name.clone(), self.dev.alloc(n.max(1) + 64)?);
        }
        Ok(m)
    }

    /// Runs a phase. `ids`: i64 `[batch, seq]` uploaded as `input_ids`, or None to bind
    /// `input_ids` to the persistent `next_ids` (decode after sampling). Returns the
    /// logits `[batch, seq, vocab]` when `want_logits`.
    fn run_phase(
        &mut self,
        decode: bool,
        ids: Option<&[i64]>,
        call: Call,
        want_logits: bool,
        sample: bool,
    ) -> Result<Option<Vec<f32>>, CudaError> {
        let plan = std::mem::replace(&mut self.plan, empty_plan());
        let r = self.run_phase_inner(&plan, decode, ids, call, want_logits, sample);
        self.plan = plan;
        r
    }

    fn run_phase_inner(
        &mut self,
        plan: &Plan,
        decode: bool,
        ids: Option<&[i64]>,
        call: Call,
        want_logits: bool,
        sample: bool,
    ) -> Result<Option<Vec<f32>>, CudaError> {
        let phase = if decode { &plan.decode } else { &plan.prefill };
        let b = call.b;
        // Transient buffers: allocated once per (phase, bindings) and kept (a decode graph
        // holds their addresses).
        let cached = if decode {
            self.decode_bufs.as_ref().map(|x| x.0)
        } else {
            self.prefill_bufs.as_ref().map(|x| x.0)
        };
        if cached != Some(b) {
            self.dev.sync()?;
            if decode {
                self.graphs.clear();
                self.decode_bufs = None;
            } else {
                self.prefill_bufs = None;
            }
            let m = self.alloc_phase(phase, &b)?;
            if decode {
                self.decode_bufs = Some((b, m));
            } else {
                self.prefill_bufs = Some((b, m));
            }
        }
        let entry = if decode {
            self.decode_bufs.take()
        } else {
            self.prefill_bufs.take()
        }
        .expect("allocated above");
        let r = self.run_with(
            plan,
            phase,
            &entry.1,
            decode,
            ids,
            call,
            want_logits,
            sample,
        );
        if decode {
            self.decode_bufs = Some(entry);
        } else {
            self.prefill_bufs = Some(entry);
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn run_with(
        &mut self,
        plan: &Plan,
        phase: &Phase,
        bufs: &HashMap<String, DeviceBuffer>,
        decode: bool,
        ids: Option<&[i64]>,
        call: Call,
        want_logits: bool,
        sample: bool,
    ) -> Result<Option<Vec<f32>>, CudaError> {
        let b = call.b;
        // Inputs, in stream order (outside any captured graph).
        for i in &phase.inputs {
            let buf = &bufs[&i.name];
            if i.name == "input_ids" {
                if let Some(ids) = ids {
                    let bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
                    self.dev.upload_async(buf, 0, &bytes)?;
                }
            } else {
                // A padding mask: all ones.
                let n = numel(i, &b) * elem_size(&i.dtype);
                let bytes: Vec<u8> = match i.dtype.as_str() {
                    "i64" => (0..n / 8).flat_map(|_| 1i64.to_le_bytes()).collect(),
                    "i32" => (0..n / 4).flat_map(|_| 1i32.to_le_bytes()).collect(),
                    "f32" => (0..n / 4).flat_map(|_| 1f32.to_le_bytes()).collect(),
                    _ => vec![1u8; n],
                };
                self.dev.upload_async(buf, 0, &bytes)?;
            }
        }
        // The per-step scalars: written only when the device does not already hold them
        // (a decode step advances them itself).
        if self.dev_scalars != Some((call.pos0, call.step)) {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&(call.pos0 as i32).to_le_bytes());
            bytes[8..].copy_from_slice(&call.step.to_le_bytes());
            self.dev.upload_async(&self.scalars, 0, &bytes)?;
        }
        self.dev_scalars = None;
        let from_next = ids.is_none();
        if decode && self.graphs_enabled() {
            let key = (b, from_next, sample);
            match self.graphs.get(&key) {
                Some(Some(g)) => {
                    self.dev.launch_graph(g)?;
                    self.stats.graph_launches += 1;
                }
                Some(None) => {
                    self.dev.begin_capture()?;
                    let r = self.enqueue(phase, bufs, true, from_next, b, sample, None);
                    let g = self.dev.end_capture(*r.as_ref().unwrap_or(&0));
                    match (r, g) {
                        (Ok(_), Ok(g)) => {
                            self.dev.launch_graph(&g)?;
                            self.graphs.insert(key, Some(g));
                            self.stats.graphs_captured += 1;
                            self.stats.graph_launches += 1;
                        }
                        (r, g) => {
                            // Not capturable here: say why once, and stay eager.
                            let why = r.err().or(g.err()).map(|e| e.to_string());
                            eprintln!(
                                "cuda: decode graph capture failed ({}); plain launches from now on",
                                why.unwrap_or_default()
                            );
                            self.use_graphs = false;
                            self.graphs.clear();
                            self.enqueue(phase, bufs, true, from_next, b, sample, None)?;
                            self.stats.eager_steps += 1;
                        }
                    }
                }
                None => {
                    self.enqueue(phase, bufs, true, from_next, b, sample, None)?;
                    self.graphs.insert(key, None);
                    self.stats.eager_steps += 1;
                }
            }
        } else {
            self.enqueue(phase, bufs, decode, from_next, b, sample, None)?;
            if decode {
                self.stats.eager_steps += 1;
            }
        }
        self.dev_scalars = Some(if decode {
            (call.pos0 + 1, call.step + 1)
        } else {
            (call.pos0, call.step)
        });
        let mut out = None;
        if want_logits {
            let o = phase
                .outputs
                .iter()
                .find(|o| o.name == "logits")
                .or(phase.outputs.first())
                .ok_or_else(|| CudaError::Plan("the phase has no output".into()))?;
            let buf = bufs
                .get(&o.buffer)
                .ok_or_else(|| CudaError::Plan(format!("output buffer `{}`", o.buffer)))?;
            let n = (b.batch * b.seq) as usize * plan.model_info.vocab;
            let mut bytes = vec![0u8; n * 4];
            self.dev.download(buf, &mut bytes)?;
            out = Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            );
        }
        Ok(out)
    }

    /// Enqueues a phase's steps (and the sampler, and for decode the scalar advance) on
    /// the stream; returns how many launches/GEMMs it queued.
    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &self,
        phase: &Phase,
        bufs: &HashMap<String, DeviceBuffer>,
        decode: bool,
        from_next: bool,
        b: Bindings,
        sample: bool,
        mut prof: Option<&mut Vec<(String, device::Event)>>,
    ) -> Result<usize, CudaError> {
        let next_ids = self.persistent.get("next_ids").map(|x| x.ptr);
        let (pos0_ptr, step_ptr) = (self.scalars.ptr, self.scalars.ptr + 8);
        let resolve = |a: &Arg| -> Result<Param, CudaError> {
            let ptr = |m: Option<&DeviceBuffer>, n: &str| {
                m.map(|x| Param::Ptr(x.ptr))
                    .ok_or_else(|| CudaError::Plan(format!("argument `{n}` is not allocated")))
            };
            Ok(match a {
                Arg::Input(n) if n == "input_ids" && from_next => Param::Ptr(
                    next_ids.ok_or_else(|| CudaError::Plan("no persistent next_ids".into()))?,
                ),
                Arg::Input(n) | Arg::Buffer(n) => ptr(bufs.get(n), n)?,
                Arg::Persistent(n) => ptr(self.persistent.get(n), n)?,
                Arg::Weight(n) => ptr(self.weights.get(n), n)?,
                Arg::Null => Param::Ptr(0),
                Arg::Scalar(s) => match s {
                    Scalar::Tokens => Param::I32((b.batch * b.seq) as i32),
                    Scalar::Seq => Param::I32(b.seq as i32),
                    Scalar::Batch => Param::I32(b.batch as i32),
                    Scalar::Pos0 => Param::Ptr(pos0_ptr),
                    Scalar::MaxSeq => Param::I32(b.max_seq as i32),
                    Scalar::TopK => Param::I32(1),
                    Scalar::Temperature => Param::F32(0.0),
                    Scalar::Seed => Param::U64(0),
                    Scalar::Step => Param::Ptr(step_ptr),
                },
            })
        };
        let mut steps: Vec<&Step> = phase.steps.iter().collect();
        let argmax;
        if sample && let Some(s) = &phase.sampling {
            argmax = Step::Launch(s.argmax.clone());
            steps.push(&argmax);
        }
        let mut queued = 0;
        // Consecutive GEMV-eligible GEMMs that read the same activation, not yet launched.
        let mut pending: Vec<device::GemmParams> = Vec::new();
        let flush = |pending: &mut Vec<device::GemmParams>| -> Result<usize, CudaError> {
            if pending.is_empty() {
                return Ok(0);
            }
            let f = self.gemv.as_ref().expect("pending only with a GEMV kernel");
            let first = &pending[0];
            let mut groups = [GemvGroup::default(); GEMV_GROUPS];
            let mut rows = 0u32;
            for (gr, p) in groups.iter_mut().zip(pending.iter()) {
                *gr = GemvGroup {
                    w: p.a,
                    y: p.c,
                    m: p.m,
                    ldw: p.lda,
                    ldy: p.ldc,
                    y_bf16: p.c_bf16 as i32,
                    alpha: p.alpha,
                    beta: p.beta,
                };
                rows += p.m as u32;
            }
            let bytes: Vec<u8> = groups
                .iter()
                .flat_map(|g| {
                    let mut v = Vec::with_capacity(32);
                    v.extend_from_slice(&g.w.to_le_bytes());
                    v.extend_from_slice(&g.y.to_le_bytes());
                    for x in [g.m, g.ldw, g.ldy, g.y_bf16] {
                        v.extend_from_slice(&x.to_le_bytes());
                    }
                    v.extend_from_slice(&g.alpha.to_le_bytes());
                    v.extend_from_slice(&g.beta.to_le_bytes());
                    v
                })
                .collect();
            let params = [
                Param::Ptr(first.b),
                Param::I32(first.ldb),
                Param::I32(first.n),
                Param::I32(first.k),
                Param::I32(pending.len() as i32),
            ];
            self.dev.launch_with_struct(
                f,
                [rows.div_ceil(8), 1, 1],
                [256, 1, 1],
                &params,
                &bytes,
            )?;
            pending.clear();
            Ok(1)
        };
        // Whether the value a buffer holds after step `si` is dead: the next step that
        // touches the address overwrites it without reading it (or none touches it). Lets
        // the SwiGLU fold skip writing the gate/up projections.
        let dead_after = |si: usize, ptr: u64| -> bool {
            for step in &steps[si + 1..] {
                match step {
                    Step::Gemm(g) => {
                        let (a, bb, c) = (resolve(&g.a), resolve(&g.b), resolve(&g.c));
                        let is = |r: &Result<Param, CudaError>| matches!(r, Ok(Param::Ptr(p)) if *p == ptr);
                        if is(&a) || is(&bb) || (is(&c) && g.beta != 0.0) {
                            return false;
                        }
                        if is(&c) {
                            return true;
                        }
                    }
                    Step::Launch(l) => {
                        let mut touched = false;
                        for a in &l.args {
                            if matches!(resolve(a), Ok(Param::Ptr(p)) if p == ptr) {
                                touched = true;
                                let name = match a {
                                    Arg::Input(n)
                                    | Arg::Buffer(n)
                                    | Arg::Persistent(n)
                                    | Arg::Weight(n) => n,
                                    _ => return false,
                                };
                                if l.reads.iter().any(|r| r == name)
                                    || !l.writes.iter().any(|w| w == name)
                                {
                                    return false;
                                }
                            }
                        }
                        if touched {
                            return true;
                        }
                    }
                }
            }
            true
        };
        for (si, step) in steps.iter().enumerate() {
            if let (Step::Launch(l), Some(fs), [p0, p1]) =
                (step, self.gemv_swiglu.as_ref(), pending.as_slice())
                && l.kernel.starts_with("swiglu_")
                && l.args.len() == 4
            {
                let ptr = |a: &Arg| match resolve(a) {
                    Ok(Param::Ptr(p)) => Some(p),
                    _ => None,
                };
                let (ga, ua, ya) = (ptr(&l.args[0]), ptr(&l.args[1]), ptr(&l.args[2]));
                // The plan may order the gate and up projections either way.
                let (gp, up) = if ga == Some(p1.c) { (p1, p0) } else { (p0, p1) };
                let plain = |p: &device::GemmParams| {
                    p.c_bf16 && p.alpha == 1.0 && p.beta == 0.0 && p.ldc == p.m
                };
                if ga == Some(gp.c)
                    && ua == Some(up.c)
                    && gp.m == up.m
                    && plain(gp)
                    && plain(up)
                    && dead_after(si, gp.c)
                    && dead_after(si, up.c)
                    && let Some(y) = ya
                {
                    let params = [
                        Param::Ptr(gp.b),
                        Param::I32(gp.ldb),
                        Param::I32(gp.n),
                        Param::I32(gp.k),
                        Param::Ptr(gp.a),
                        Param::I32(gp.lda),
                        Param::Ptr(up.a),
                        Param::I32(up.lda),
                        Param::Ptr(y),
                        Param::I32(gp.m),
                    ];
                    self.dev
                        .launch(
                            fs,
                            [(gp.m as u32).div_ceil(8), 1, 1],
                            [256, 1, 1],
                            0,
                            &params,
                        )
                        .map_err(|e| step_err(si, "gemv+swiglu", e))?;
                    pending.clear();
                    queued += 1;
                    continue;
                }
            }
            let fusable = match step {
                Step::Gemm(_) => self.gemv.is_some() && prof.is_none() && !self.sync_each_step,
                _ => false,
            };
            if !fusable {
                queued += flush(&mut pending)?;
            }
            if let Some(p) = prof.as_deref_mut() {
                let label = match step {
                    Step::Launch(l) => l.kernel.clone(),
                    Step::Gemm(g) => format!(
                        "gemm m={} n={} k={}",
                        g.m.eval(&b),
                        g.n.eval(&b),
                        g.k.eval(&b)
                    ),
                };
                p.push((label, self.dev.record()?));
            }
            match step {
                Step::Launch(l) => {
                    let f = self
                        .funcs
                        .get(&l.kernel)
                        .ok_or_else(|| CudaError::Plan(format!("unknown kernel `{}`", l.kernel)))?;
                    let params: Vec<Param> =
                        l.args.iter().map(&resolve).collect::<Result<_, _>>()?;
                    let grid = [
                        l.grid[0].eval(&b) as u32,
                        l.grid[1].eval(&b) as u32,
                        l.grid[2].eval(&b) as u32,
                    ];
                    if grid.contains(&0) {
                        continue;
                    }
                    self.dev
                        .launch(f, grid, l.block, l.dynamic_smem, &params)
                        .map_err(|e| step_err(si, &l.kernel, e))?;
                }
                Step::Gemm(g) => {
                    let p = |a: &Arg| -> Result<u64, CudaError> {
                        match resolve(a)? {
                            Param::Ptr(p) => Ok(p),
                            _ => Err(CudaError::Plan("GEMM operand is a scalar".into())),
                        }
                    };
                    let gp = device::GemmParams {
                        ta: g.transa == "T",
                        tb: g.transb == "T",
                        m: g.m.eval(&b) as i32,
                        n: g.n.eval(&b) as i32,
                        k: g.k.eval(&b) as i32,
                        a: p(&g.a)?,
                        lda: g.lda.eval(&b) as i32,
                        b: p(&g.b)?,
                        ldb: g.ldb.eval(&b) as i32,
                        c: p(&g.c)?,
                        ldc: g.ldc.eval(&b) as i32,
                        alpha: g.alpha as f32,
                        beta: g.beta as f32,
                        a_bf16: g.a_type == "bf16",
                        b_bf16: g.b_type == "bf16",
                        c_bf16: g.c_type == "bf16",
                    };
                    if gp.m == 0 || gp.n == 0 {
                        continue;
                    }
                    if fusable && gemv_eligible(&gp) {
                        // Joins the pending group when it reads the same activation and
                        // does not read a pending output.
                        let joins = pending.first().is_some_and(|f| {
                            f.b == gp.b
                                && f.ldb == gp.ldb
                                && f.n == gp.n
                                && f.k == gp.k
                                && gp.c != f.b
                        }) && pending.len() < GEMV_GROUPS
                            && !pending.iter().any(|p| p.c == gp.b || p.c == gp.c);
                        if !joins {
                            queued += flush(&mut pending)?;
                        }
                        pending.push(gp);
                        continue;
                    }
                    queued += flush(&mut pending)?;
                    self.dev
                        .gemm(&gp)
                        .map_err(|e| step_err(si, &format!("gemm {}", g.op), e))?;
                }
            }
            queued += 1;
            if self.sync_each_step {
                self.dev.sync().map_err(|e| step_err(si, "sync", e))?;
            }
        }
        queued += flush(&mut pending)?;
        if let Some(p) = prof.as_deref_mut() {
            p.push(("advance".into(), self.dev.record()?));
        }
        if decode {
            self.dev.launch(
                &self.advance,
                [1, 1, 1],
                [1, 1, 1],
                0,
                &[Param::Ptr(pos0_ptr), Param::Ptr(step_ptr)],
            )?;
            queued += 1;
        }
        if let Some(p) = prof {
            p.push(("(end)".into(), self.dev.record()?));
        }
        Ok(queued)
    }

    /// The logits `[batch, seq, vocab]` of a prefill of `rows` (equal lengths) from position 0.
    pub fn forward(&mut self, rows: &[Vec<i64>]) -> Result<Vec<f32>, CudaError> {
        let batch = rows.len();
        let seq = rows.first().map_or(0, |r| r.len());
        if batch == 0 || seq == 0 || rows.iter().any(|r| r.len() != seq) {
            return Err(CudaError::Plan(
                "rows must be non-empty and equally long".into(),
            ));
        }
        self.reset(batch, seq)?;
        let ids: Vec<i64> = rows.iter().flatten().copied().collect();
        let call = Call {
            b: Bindings {
                batch: batch as u64,
                seq: seq as u64,
                max_seq: seq as u64,
            },
            pos0: 0,
            step: 0,
        };
        Ok(self
            .run_phase(false, Some(&ids), call, true, false)?
            .unwrap_or_default())
    }

    /// Logits of a prefill of `rows[:, ..prefill]` then teacher-forced decode steps over
    /// the rest: `[batch, total, vocab]` (exercises both phases and the stored state).
    pub fn forward_decode(
        &mut self,
        rows: &[Vec<i64>],
        prefill: usize,
    ) -> Result<Vec<f32>, CudaError> {
        let batch = rows.len();
        let total = rows.first().map_or(0, |r| r.len());
        if batch == 0 || prefill == 0 || prefill > total {
            return Err(CudaError::Plan("bad prefill split".into()));
        }
        let vocab = self.plan.model_info.vocab;
        self.reset(batch, total)?;
        let ids: Vec<i64> = rows
            .iter()
            .flat_map(|r| r[..prefill].iter().copied())
            .collect();
        let b = |seq: usize| Bindings {
            batch: batch as u64,
            seq: seq as u64,
            max_seq: total as u64,
        };
        let pre = self
            .run_phase(
                false,
                Some(&ids),
                Call {
                    b: b(prefill),
                    pos0: 0,
                    step: 0,
                },
                true,
                false,
            )?
            .unwrap_or_default();
        let mut out = vec![0f32; batch * total * vocab];
        for r in 0..batch {
            out[r * total * vocab..(r * total + prefill) * vocab]
                .copy_from_slice(&pre[r * prefill * vocab..(r + 1) * prefill * vocab]);
        }
        for t in prefill..total {
            let tok: Vec<i64> = rows.iter().map(|r| r[t]).collect();
            let c = Call {
                b: b(1),
                pos0: t as u64,
                step: t as u64,
            };
            let l = self
                .run_phase(true, Some(&tok), c, true, false)?
                .unwrap_or_default();
            for r in 0..batch {
                out[(r * total + t) * vocab..(r * total + t + 1) * vocab]
                    .copy_from_slice(&l[r * vocab..(r + 1) * vocab]);
            }
        }
        Ok(out)
    }

    fn next_ids(&self, batch: usize) -> Result<Vec<i64>, CudaError> {
        let buf = self
            .persistent
            .get("next_ids")
            .ok_or_else(|| CudaError::Plan("the plan has no sampling (next_ids)".into()))?;
        let mut bytes = vec![0u8; batch * 8];
        self.dev.download(buf, &mut bytes)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    /// Greedy generation for one prompt: up to `max_new` tokens (the argmax kernel picks
    /// them on the GPU; the decode step reads `next_ids` directly), stopping after a token
    /// of `stop`. `on_token` sees each one. Returns the tokens and the decode time in
    /// seconds (excluding the prefill).
    pub fn generate_greedy(
        &mut self,
        prompt: &[i64],
        max_new: usize,
        stop: &[i64],
        mut on_token: impl FnMut(i64),
    ) -> Result<(Vec<i64>, f64, f64), CudaError> {
        if prompt.is_empty() {
            return Err(CudaError::Plan("empty prompt".into()));
        }
        let total = prompt.len() + max_new + 1;
        self.reset(1, total)?;
        let b = |seq: usize| Bindings {
            batch: 1,
            seq: seq as u64,
            max_seq: total as u64,
        };
        let t0 = std::time::Instant::now();
        let c = Call {
            b: b(prompt.len()),
            pos0: 0,
            step: 0,
        };
        self.run_phase(false, Some(prompt), c, false, true)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let mut out = Vec::new();
        let t1 = std::time::Instant::now();
        for i in 0..max_new {
            let tok = self.next_ids(1)?[0];
            out.push(tok);
            on_token(tok);
            if stop.contains(&tok) || i + 1 == max_new {
                break;
            }
            let pos = prompt.len() + i;
            let c = Call {
                b: b(1),
                pos0: pos as u64,
                step: (i + 1) as u64,
            };
            self.run_phase(true, None, c, false, true)?;
        }
        Ok((out, prefill_s, t1.elapsed().as_secs_f64()))
    }

    /// Times `steps` greedy decode steps at batch `batch` after a prefill of `prompt_len`
    /// tokens per row, with no host round trip between steps; returns (prefill seconds,
    /// decode seconds) measured with device events. See [`CudaSession::bench`].
    pub fn bench_decode(
        &mut self,
        batch: usize,
        prompt_len: usize,
        steps: usize,
    ) -> Result<(f64, f64), CudaError> {
        let r = self.bench(batch, prompt_len, steps, 0)?;
        Ok((r.prefill_s, r.decode_s))
    }

    /// Prefill `prompt_len` tokens per row in chunks of `chunk` tokens per row (0: up to
    /// 16384 tokens per call over the batch, at least 64 per row — the prefill's logits
    /// buffer is `batch × chunk × vocab` f32), then 2 untimed decode steps (the eager
    /// warm-up and, with graphs, the capture), then `steps` timed greedy decode steps with
    /// no host round trip. Times with device events; memory is what [`Device::alloc`]
    /// holds (weights, state, buffers).
    pub fn bench(
        &mut self,
        batch: usize,
        prompt_len: usize,
        steps: usize,
        chunk: usize,
    ) -> Result<BenchReport, CudaError> {
        const WARM: usize = 2;
        let prompt_len = prompt_len.max(1);
        let total = prompt_len + steps + WARM + 1;
        let vocab = self.plan.model_info.vocab.max(1) as i64;
        let chunk = if chunk == 0 {
            (16384 / batch.max(1)).max(64)
        } else {
            chunk
        }
        .min(prompt_len);
        self.release_buffers()?;
        self.reset(batch, total)?;
        self.dev.reset_peak();
        let b = |seq: usize| Bindings {
            batch: batch as u64,
            seq: seq as u64,
            max_seq: total as u64,
        };
        let e0 = self.dev.record()?;
        let mut pos = 0;
        while pos < prompt_len {
            let n = chunk.min(prompt_len - pos);
            let ids: Vec<i64> = (0..batch * n)
                .map(|i| ((pos * batch + i) as i64 * 7919 + 13) % vocab)
                .collect();
            let c = Call {
                b: b(n),
                pos0: pos as u64,
                step: 0,
            };
            // The last chunk samples the first token.
            self.run_phase(false, Some(&ids), c, false, pos + n == prompt_len)?;
            pos += n;
        }
        let e1 = self.dev.record()?;
        self.dev.sync()?;
        let after_prefill = self.dev.allocated().1;
        // Prefill buffers are not needed while decoding.
        self.prefill_bufs = None;
        self.dev.reset_peak();
        let mut e2 = None;
        for i in 0..WARM + steps {
            if i == WARM {
                self.dev.sync()?;
                e2 = Some(self.dev.record()?);
            }
            let c = Call {
                b: b(1),
                pos0: (prompt_len + i) as u64,
                step: (i + 1) as u64,
            };
            self.run_phase(true, None, c, false, true)?;
        }
        let e3 = self.dev.record()?;
        self.dev.sync()?;
        Ok(BenchReport {
            prefill_s: self.dev.elapsed(&e0, &e1)? as f64 / 1e3,
            decode_s: match &e2 {
                Some(e2) => self.dev.elapsed(e2, &e3)? as f64 / 1e3,
                None => 0.0,
            },
            graphs: self.graphs_enabled(),
            prefill_peak_bytes: after_prefill,
            decode_peak_bytes: self.dev.allocated().1,
            chunk,
        })
    }
}

impl CudaSession {
    /// Per-step GPU time of each launch of one decode step at the current bindings (after
    /// [`CudaSession::bench`]): `steps` eager steps with an event before every launch;
    /// returns (label, launches per step, µs per step) sorted by time. The events add a
    /// little to each gap, so the total exceeds the graph's step time slightly.
    pub fn profile_decode(&mut self, steps: usize) -> Result<Vec<(String, usize, f64)>, CudaError> {
        let (b, bufs) = self
            .decode_bufs
            .take()
            .ok_or_else(|| CudaError::Plan("profile_decode needs a bench first".into()))?;
        let plan = std::mem::replace(&mut self.plan, empty_plan());
        let mut acc: HashMap<String, (usize, f64)> = HashMap::new();
        let mut r = Ok(());
        for _ in 0..steps.max(1) {
            let mut ev = Vec::new();
            if let Err(e) = self.enqueue(&plan.decode, &bufs, true, true, b, true, Some(&mut ev)) {
                r = Err(e);
                break;
            }
            for w in ev.windows(2) {
                let us = match self.dev.elapsed(&w[0].1, &w[1].1) {
                    Ok(ms) => ms as f64 * 1e3,
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                };
                let a = acc.entry(w[0].0.clone()).or_default();
                a.0 += 1;
                a.1 += us;
            }
        }
        self.plan = plan;
        self.decode_bufs = Some((b, bufs));
        self.dev_scalars = None;
        r?;
        let n = steps.max(1);
        let mut v: Vec<(String, usize, f64)> = acc
            .into_iter()
            .map(|(k, (c, us))| (k, c / n, us / n as f64))
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        Ok(v)
    }
}

/// What [`CudaSession::bench`] measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Prefill seconds (all chunks, first call's buffer allocation included).
    pub prefill_s: f64,
    /// Seconds of the timed decode steps.
    pub decode_s: f64,
    /// Whether decode replayed CUDA graphs.
    pub graphs: bool,
    /// Peak bytes allocated by the session during the prefill (weights included).
    pub prefill_peak_bytes: usize,
    /// Peak bytes allocated during decode (weights, state, decode buffers).
    pub decode_peak_bytes: usize,
    /// Prefill tokens per row per call.
    pub chunk: usize,
}

fn step_err(i: usize, what: &str, e: CudaError) -> CudaError {
    match e {
        CudaError::Api { call, detail } => CudaError::Api {
            call: format!("{call} (step {i}: {what})"),
            detail,
        },
        e => e,
    }
}

fn empty_plan() -> Plan {
    Plan {
        format: String::new(),
        version: 0,
        model: String::new(),
        arch: String::new(),
        notes: vec![],
        model_info: Default::default(),
        kernels: vec![],
        weights: Default::default(),
        persistent: vec![],
        prefill: Default::default(),
        decode: Default::default(),
        top_k_max: 0,
    }
}

/// A kernel parameter value.
#[derive(Clone, Copy, Debug)]
pub enum Param {
    /// A device pointer.
    Ptr(u64),
    /// `int`.
    I32(i32),
    /// `float`.
    F32(f32),
    /// `unsigned long long`.
    U64(u64),
}

impl Param {
    fn as_ptr(&self) -> *const c_void {
        match self {
            Param::Ptr(p) => p as *const u64 as *const c_void,
            Param::I32(v) => v as *const i32 as *const c_void,
            Param::F32(v) => v as *const f32 as *const c_void,
            Param::U64(v) => v as *const u64 as *const c_void,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a GPU (CI), opening the device is an `Unavailable` error, not a panic.
    #[test]
    fn absent_device_is_unavailable_not_a_panic() {
        match check_available() {
            Ok(()) => eprintln!("a CUDA device is present: nothing to check"),
            Err(e) => assert!(matches!(e, CudaError::Unavailable(_)), "{e}"),
        }
    }

    #[test]
    fn cache_key_depends_on_every_part() {
        let a = fnv1a(&[b"src", b"sm_90"]);
        assert_ne!(a, fnv1a(&[b"src", b"sm_80"]));
        assert_ne!(a, fnv1a(&[b"sr", b"csm_90"]));
        assert_eq!(a, fnv1a(&[b"src", b"sm_90"]));
    }
}
