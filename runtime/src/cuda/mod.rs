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
//! `cublasGemmEx` (bf16 in, f32 accumulation). Decode steps are plain launches (no CUDA
//! graph yet: `pos0` is a by-value kernel parameter that changes every step).

mod device;

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};

use ligerc_codegen::cuda::plan::{Arg, Bindings, Phase, Plan, Scalar, Step, TensorDecl};
use ligerc_codegen::cuda::{CudaProgram, nvrtc};

pub use device::{Device, DeviceBuffer};

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
        let bufs_owned;
        let bufs: &HashMap<String, DeviceBuffer> = if decode {
            if self.decode_bufs.as_ref().map(|x| x.0) != Some(b) {
                let m = self.alloc_phase(phase, &b)?;
                self.decode_bufs = Some((b, m));
            }
            &self.decode_bufs.as_ref().expect("set above").1
        } else {
            bufs_owned = self.alloc_phase(phase, &b)?;
            &bufs_owned
        };
        // Inputs.
        for i in &phase.inputs {
            let buf = &bufs[&i.name];
            if i.name == "input_ids" {
                if let Some(ids) = ids {
                    let bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
                    self.dev.upload(buf, &bytes)?;
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
                self.dev.upload(buf, &bytes)?;
            }
        }
        let next_ids = self.persistent.get("next_ids").map(|x| x.ptr);
        let resolve = |a: &Arg| -> Result<Param, CudaError> {
            let ptr = |m: Option<&DeviceBuffer>, n: &str| {
                m.map(|x| Param::Ptr(x.ptr))
                    .ok_or_else(|| CudaError::Plan(format!("argument `{n}` is not allocated")))
            };
            Ok(match a {
                Arg::Input(n) if n == "input_ids" && ids.is_none() => Param::Ptr(
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
                    Scalar::Pos0 => Param::I32(call.pos0 as i32),
                    Scalar::MaxSeq => Param::I32(b.max_seq as i32),
                    Scalar::TopK => Param::I32(1),
                    Scalar::Temperature => Param::F32(0.0),
                    Scalar::Seed => Param::U64(0),
                    Scalar::Step => Param::U64(call.step),
                },
            })
        };
        let mut steps: Vec<&Step> = phase.steps.iter().collect();
        let argmax;
        if sample && let Some(s) = &phase.sampling {
            argmax = Step::Launch(s.argmax.clone());
            steps.push(&argmax);
        }
        for (si, step) in steps.iter().enumerate() {
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
                    self.dev
                        .gemm(&gp)
                        .map_err(|e| step_err(si, &format!("gemm {}", g.op), e))?;
                }
            }
            if self.sync_each_step {
                self.dev.sync().map_err(|e| step_err(si, "sync", e))?;
            }
        }
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
        } else if !decode {
            // The prefill's transient buffers are freed on return: wait for their users.
            // (Decode buffers live in the session, so decode steps queue without a sync.)
            self.dev.sync()?;
        }
        Ok(out)
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
    /// decode seconds) measured with device events.
    pub fn bench_decode(
        &mut self,
        batch: usize,
        prompt_len: usize,
        steps: usize,
    ) -> Result<(f64, f64), CudaError> {
        let total = prompt_len + steps + 1;
        let vocab = self.plan.model_info.vocab.max(1) as i64;
        let ids: Vec<i64> = (0..batch * prompt_len)
            .map(|i| (i as i64 * 7919 + 13) % vocab)
            .collect();
        self.reset(batch, total)?;
        let b = |seq: usize| Bindings {
            batch: batch as u64,
            seq: seq as u64,
            max_seq: total as u64,
        };
        let e0 = self.dev.record()?;
        let c = Call {
            b: b(prompt_len),
            pos0: 0,
            step: 0,
        };
        self.run_phase(false, Some(&ids), c, false, true)?;
        let e1 = self.dev.record()?;
        for i in 0..steps {
            let c = Call {
                b: b(1),
                pos0: (prompt_len + i) as u64,
                step: (i + 1) as u64,
            };
            // Steps queue back to back: no host sync between them.
            self.run_phase(true, None, c, false, true)?;
        }
        let e2 = self.dev.record()?;
        self.dev.sync()?;
        Ok((
            self.dev.elapsed(&e0, &e1)? as f64 / 1e3,
            self.dev.elapsed(&e1, &e2)? as f64 / 1e3,
        ))
    }
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
