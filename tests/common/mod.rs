//! Helpers shared by the end-to-end tests: the repo's Python environment, the
//! real model files, `.npy` reading and running the `ligerc` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the repo's venv (made by `scripts/setup-python.sh`), or `$LIGERC_PYTHON`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("LIGERC_PYTHON") {
        return PathBuf::from(p);
    }
    let p = root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup-python.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A fixture from `tests/fixtures/onnx`.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/onnx").join(name)
}

/// Every ONNX fixture, sorted.
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/onnx"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    v
}

/// The SmolLM2 GGUF and its converted Hugging Face directory (`scripts/fetch-smollm2.sh`).
pub fn smollm2() -> (PathBuf, PathBuf) {
    let g = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let h = root().join("models/SmolLM2-135M-Instruct-hf");
    assert!(
        g.exists() && h.join("model.safetensors").exists(),
        "SmolLM2 files are missing: run scripts/fetch-smollm2.sh (scripts/test.sh does)"
    );
    (g, h)
}

/// A fresh temporary directory for one test, removed when dropped (so a run
/// of the suite leaves nothing behind: the SmolLM2 exports alone are 1 GB each).
/// Set `LIGERC_KEEP_TEST_DIRS=1` to keep them for debugging.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("LIGERC_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Makes a fresh [`TempDir`] for one test.
pub fn tempdir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("ligerc-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// Runs the `ligerc` binary.
pub fn ligerc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ligerc"))
        .args(args)
        .output()
        .expect("running ligerc")
}

/// Runs `ligerc`, failing the test with its stderr on a non-zero exit.
pub fn ligerc_ok(args: &[&str]) -> Output {
    let out = ligerc(args);
    assert!(
        out.status.success(),
        "ligerc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a repo Python script, failing the test with its stderr on error.
pub fn py(script: &str, args: &[&str]) -> Output {
    let out = Command::new(python())
        .arg(root().join(script))
        .args(args)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "{script} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Reads a little-endian f32 `.npy` file: (shape, data).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY", "{} is not .npy", path.display());
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(
        header.contains("'<f4'"),
        "{}: expected f32, header {header}",
        path.display()
    );
    let shape_txt = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_txt
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data: Vec<f32> = b[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, data)
}

/// Deterministic pseudo-random token ids in `0..vocab` (SplitMix64).
pub fn random_ids(seed: u64, rows: usize, len: usize, vocab: u64) -> Vec<Vec<i64>> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..rows)
        .map(|_| (0..len).map(|_| (next() % vocab) as i64).collect())
        .collect()
}

/// `--ids` arguments for rows of ids.
pub fn ids_args(rows: &[Vec<i64>]) -> Vec<String> {
    rows.iter()
        .flat_map(|r| {
            [
                "--ids".to_string(),
                r.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect()
}

/// max |a − b| and max |b|.
pub fn max_diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let m = b.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    (d, m)
}

/// Runs `ligerc run OURS [passes] --ids … --logits` and onnxruntime on `ORT_MODEL`
/// with the same ids, and asserts max|diff| ≤ `tol` × max|logit|.
pub fn assert_matches_ort(
    ours_model: &Path,
    passes: &[&str],
    ort_model: &Path,
    rows: &[Vec<i64>],
    dir: &Path,
    tag: &str,
    tol: f32,
) {
    let ours = dir.join(format!("{tag}-ours.npy"));
    let theirs = dir.join(format!("{tag}-ort.npy"));
    let ids = ids_args(rows);
    let mut args: Vec<&str> = vec!["run", ours_model.to_str().unwrap()];
    for p in passes {
        args.extend(["--pass", p]);
    }
    args.extend(ids.iter().map(String::as_str));
    args.extend(["--logits", ours.to_str().unwrap()]);
    ligerc_ok(&args);
    let mut pargs: Vec<&str> = vec![ort_model.to_str().unwrap()];
    pargs.extend(ids.iter().map(String::as_str));
    pargs.extend(["-o", theirs.to_str().unwrap()]);
    py("scripts/ort_logits.py", &pargs);
    let (s1, a) = read_npy(&ours);
    let (s2, b) = read_npy(&theirs);
    assert_eq!(s1, s2, "{tag}: logits shapes differ");
    let (d, m) = max_diff(&a, &b);
    assert!(
        d <= tol * m,
        "{tag}: max|diff| {d} > {tol} × max|logit| {m}"
    );
}

/// NVRTC loaded and the CUDA include dir (from `scripts/setup-nvrtc.sh`'s
/// environment) for the GPU-less kernel compile checks; `None` (skip) when
/// unset outside CI, a panic when unset under CI.
pub fn nvrtc_env() -> Option<Vec<PathBuf>> {
    let lib = std::env::var_os("LIGERC_NVRTC_LIB_DIR");
    let inc = std::env::var_os("LIGERC_CUDA_INCLUDE");
    let ci = std::env::var_os("CI").is_some();
    match (lib, inc) {
        (Some(_), Some(inc)) => {
            ligerc::codegen::cuda::nvrtc::ensure_nvrtc().unwrap_or_else(|e| {
                panic!("LIGERC_NVRTC_LIB_DIR is set but NVRTC does not load: {e}")
            });
            let inc = PathBuf::from(inc);
            assert!(
                inc.join("cuda_bf16.h").is_file(),
                "LIGERC_CUDA_INCLUDE={} has no cuda_bf16.h",
                inc.display()
            );
            Some(vec![inc])
        }
        _ if ci => panic!(
            "CI is set but LIGERC_NVRTC_LIB_DIR / LIGERC_CUDA_INCLUDE are not: run `eval \"$(scripts/setup-nvrtc.sh)\"` first"
        ),
        _ => {
            eprintln!(
                "NVRTC compile check skipped: LIGERC_NVRTC_LIB_DIR / LIGERC_CUDA_INCLUDE not set (scripts/setup-nvrtc.sh)"
            );
            None
        }
    }
}

/// Whether a kernel compiled with `--ptxas-options=-v` can launch at the block size its
/// header names: registers × threads within an SM's 65,536 (else the launch fails with
/// `CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES`, which a compile alone does not show). `Some`
/// message where it cannot.
pub fn launch_resources(name: &str, src: &str, log: &str) -> Option<String> {
    let Some(regs) = ligerc::codegen::cuda::nvrtc::ptxas_registers(log) else {
        return Some(format!(
            "{name}: no register count in the ptxas log:\n{log}"
        ));
    };
    let threads: u32 = src
        .lines()
        .find_map(|l| l.strip_prefix("//   block ("))
        .and_then(|r| r.split([',', ')']).next())
        .and_then(|n| n.trim().parse().ok())?;
    (regs * threads > 65_536).then(|| {
        format!(
            "{name}: {regs} registers × {threads} threads = {} > 65,536 a block: the launch would fail (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES)",
            regs * threads
        )
    })
}

/// Compiles every `(name, source)` for sm_90 on up to 4 threads (the NVRTC
/// program is named by `name` up to an `@`); panics listing each failure or
/// diagnostic, and each kernel whose registers × block threads exceed an SM's
/// ([`launch_resources`]).
pub fn compile_all<'a>(
    kernels: impl IntoIterator<Item = (&'a String, &'a String)>,
    include: &[PathBuf],
) {
    let items: Vec<(&String, &String)> = kernels.into_iter().collect();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let chunk = items.len().div_ceil(threads).max(1);
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut bad = Vec::new();
                    for (name, src) in part {
                        let label = name.split('@').next().unwrap_or(name);
                        let ptxas = ["--ptxas-options=-v"];
                        match ligerc::codegen::cuda::nvrtc::compile_with(
                            label, src, "sm_90", include, &ptxas,
                        ) {
                            Ok(c)
                                if ligerc::codegen::cuda::nvrtc::log_diagnostics(&c.log)
                                    .is_empty() =>
                            {
                                assert!(!c.image.is_empty() && c.cubin, "{name}: no cubin");
                                if let Some(msg) = launch_resources(label, src, &c.log) {
                                    bad.push(msg);
                                }
                            }
                            Ok(c) => bad.push(format!("{name}: NVRTC diagnostics:\n{}", c.log)),
                            Err(e) => bad.push(format!("{name}: {e}")),
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} kernels failed:\n{}",
        failures.len(),
        items.len(),
        failures.join("\n\n")
    );
    eprintln!("NVRTC: {} kernels compiled cleanly for sm_90", items.len());
}

/// g++ (C++20) for the CPU emulation of emitted CUDA, or None (the test is skipped) when
/// it is missing outside CI; under CI a missing g++ fails the test.
pub fn gxx() -> Option<PathBuf> {
    let ok = Command::new("g++")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match (ok, std::env::var_os("CI").is_some()) {
        (true, _) => Some(PathBuf::from("g++")),
        (false, true) => panic!("CI is set but g++ is missing: the CPU emulation of CUDA needs it"),
        (false, false) => {
            eprintln!("CPU emulation skipped: no g++");
            None
        }
    }
}

/// Writes `src` to `dir/main.cpp` and compiles it with `cxx` (`-std=c++20 -O1`) into
/// `dir/prog`, failing the test (labelled `tag`) with g++'s errors; returns the program.
pub fn gxx_build(cxx: &Path, dir: &Path, src: &str, tag: &str) -> PathBuf {
    std::fs::write(dir.join("main.cpp"), src).unwrap();
    let prog = dir.join("prog");
    let c = Command::new(cxx)
        .args(["-std=c++20", "-O1", "-pthread", "-w", "-o"])
        .arg(&prog)
        .arg(dir.join("main.cpp"))
        .output()
        .unwrap();
    assert!(
        c.status.success(),
        "{tag}: g++ failed:\n{}",
        String::from_utf8_lossy(&c.stderr)
    );
    prog
}

/// Runs an emulation program built by [`gxx_build`] with `args`, failing the test (labelled
/// `tag`) with its output when it exits non-zero; returns its stdout.
pub fn run_emulation<A: AsRef<std::ffi::OsStr>>(prog: &Path, args: &[A], tag: &str) -> String {
    let r = Command::new(prog).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&r.stdout).into_owned();
    assert!(
        r.status.success(),
        "{tag}: emulation failed:\n{text}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    text
}
