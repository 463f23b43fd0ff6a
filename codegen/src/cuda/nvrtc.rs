//! Compiling CUDA C++ with NVRTC (through cudarc, loaded at run time).
//!
//! cudarc is built with `dynamic-loading`, so nothing links against CUDA: the
//! NVRTC library is opened on first use. cudarc **panics** when it cannot find
//! the library, so every entry point here checks first
//! ([`nvrtc_available`]) and turns absence into [`NvrtcError::LibraryMissing`].
//!
//! Finding the library: cudarc `dlopen`s bare names (`libnvrtc.so`,
//! `libnvrtc.so.13`, …), which the dynamic loader resolves through
//! `LD_LIBRARY_PATH` (read once, at process start) and the system's library
//! cache. [`load_nvrtc`] takes a directory instead (the PyPI wheel's
//! `nvidia/cu13/lib`, `LIGERC_NVRTC_LIB_DIR`) and opens `libnvrtc.so.13` there
//! by absolute path first: glibc then answers cudarc's later
//! `dlopen("libnvrtc.so.13")` with the already-loaded library (it matches the
//! soname), so no `LD_LIBRARY_PATH` is needed. `libnvrtc.so.13` finds its
//! `libnvrtc-builtins.so.13.*` through its own `RPATH=$ORIGIN`.
//!
//! [`compile`] returns the PTX (virtual `compute_XX` arch) or the cubin (real
//! `sm_XX` arch) plus the compiler log; [`compile_check`] returns just the log,
//! which callers (the CI test) scan for warnings with [`log_diagnostics`].

use std::ffi::{CStr, CString, c_char};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cudarc::nvrtc::{result, sys};

/// An NVRTC failure.
#[derive(Debug, thiserror::Error)]
pub enum NvrtcError {
    /// The NVRTC shared library could not be loaded.
    #[error(
        "the NVRTC library (libnvrtc.so.13, CUDA 13) is not available: {detail}. Install it \
         (scripts/setup-nvrtc.sh puts it in .venv) and set LIGERC_NVRTC_LIB_DIR to its folder, \
         or add that folder to LD_LIBRARY_PATH"
    )]
    LibraryMissing {
        /// What was tried.
        detail: String,
    },
    /// The source holds a NUL byte or an option is malformed.
    #[error("invalid NVRTC input: {0}")]
    Input(String),
    /// An NVRTC API call failed outside compilation.
    #[error("NVRTC {call} failed: {code}")]
    Api {
        /// The API function.
        call: &'static str,
        /// NVRTC's status.
        code: String,
    },
    /// The source did not compile.
    #[error("NVRTC could not compile `{name}` ({options}):\n{log}")]
    Compile {
        /// The program name (the kernel file).
        name: String,
        /// The options used, space-separated.
        options: String,
        /// The compiler log.
        log: String,
    },
}

/// The product of a successful compilation.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// PTX text (virtual `compute_XX` arch) or a cubin (real `sm_XX` arch).
    pub image: Vec<u8>,
    /// True when `image` is a cubin.
    pub cubin: bool,
    /// The compiler log (warnings; empty when clean).
    pub log: String,
}

static PRELOADED: OnceLock<Mutex<Vec<libloading::Library>>> = OnceLock::new();

/// Opens `dir/libnvrtc.so.13` by absolute path so that cudarc's later lookup by
/// name finds it (see the module doc). The library stays loaded for the life
/// of the process. Loading the same directory twice is harmless.
pub fn load_nvrtc(dir: &Path) -> Result<(), NvrtcError> {
    let path = dir.join("libnvrtc.so.13");
    if !path.is_file() {
        return Err(NvrtcError::LibraryMissing {
            detail: format!("{} does not exist", path.display()),
        });
    }
    // SAFETY: loading NVRTC runs its initialisers, which have no preconditions.
    let lib =
        unsafe { libloading::Library::new(&path) }.map_err(|e| NvrtcError::LibraryMissing {
            detail: format!("cannot load {}: {e}", path.display()),
        })?;
    let held = PRELOADED.get_or_init(|| Mutex::new(Vec::new()));
    held.lock().unwrap_or_else(|p| p.into_inner()).push(lib);
    Ok(())
}

/// Whether cudarc can load NVRTC now (after [`load_nvrtc`] or through the
/// loader's search path). Never panics.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen candidate names.
    unsafe { sys::is_culib_present() }
}

/// The directory named by `LIGERC_NVRTC_LIB_DIR`, if set.
pub fn lib_dir_from_env() -> Option<PathBuf> {
    std::env::var_os("LIGERC_NVRTC_LIB_DIR").map(PathBuf::from)
}

/// Loads NVRTC from `LIGERC_NVRTC_LIB_DIR` when set, then checks it is usable.
pub fn ensure_nvrtc() -> Result<(), NvrtcError> {
    if let Some(dir) = lib_dir_from_env() {
        load_nvrtc(&dir)?;
    }
    if nvrtc_available() {
        Ok(())
    } else {
        Err(NvrtcError::LibraryMissing {
            detail: "no libnvrtc.so / libnvrtc.so.13 on the loader's search path and \
                     LIGERC_NVRTC_LIB_DIR is not set"
                .into(),
        })
    }
}

/// NVRTC's version `(major, minor)`.
pub fn version() -> Result<(i32, i32), NvrtcError> {
    ensure_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is loaded (checked above); both pointers are valid.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| api("nvrtcVersion", e))?;
    Ok((major, minor))
}

fn api(call: &'static str, e: result::NvrtcError) -> NvrtcError {
    NvrtcError::Api {
        call,
        code: format!("{:?}", e.0),
    }
}

/// The options ligerc compiles with: `--gpu-architecture=ARCH -default-device
/// -std=c++17 --include-path=DIR…`.
pub fn options(arch: &str, include_dirs: &[PathBuf]) -> Vec<String> {
    let mut o = vec![
        format!("--gpu-architecture={arch}"),
        "-default-device".to_string(),
        "-std=c++17".to_string(),
    ];
    o.extend(
        include_dirs
            .iter()
            .map(|d| format!("--include-path={}", d.display())),
    );
    o
}

/// A program handle destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the handle came from create_program and is destroyed once.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

fn c_text(bytes: Vec<c_char>) -> String {
    let bytes: Vec<u8> = bytes.into_iter().map(|c| c as u8).collect();
    CStr::from_bytes_until_nul(&bytes)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned())
}

/// Compiles `source` (program name `name`, used in diagnostics) for `arch`
/// (`compute_90` gives PTX, `sm_90` a cubin) with `include_dirs` on the
/// include path. Errors name the program and carry NVRTC's log.
pub fn compile(
    name: &str,
    source: &str,
    arch: &str,
    include_dirs: &[PathBuf],
) -> Result<Compiled, NvrtcError> {
    compile_with(name, source, arch, include_dirs, &[])
}

/// [`compile`] with `extra` options after the usual ones (e.g. `--ptxas-options=-v`, whose
/// register counts [`ptxas_registers`] reads from the log).
pub fn compile_with(
    name: &str,
    source: &str,
    arch: &str,
    include_dirs: &[PathBuf],
    extra: &[&str],
) -> Result<Compiled, NvrtcError> {
    ensure_nvrtc()?;
    let src = CString::new(source)
        .map_err(|_| NvrtcError::Input(format!("{name}: source holds a NUL byte")))?;
    let cname = CString::new(name)
        .map_err(|_| NvrtcError::Input(format!("{name}: name holds a NUL byte")))?;
    let mut opts = options(arch, include_dirs);
    opts.extend(extra.iter().map(|o| o.to_string()));
    if opts.iter().any(|o| o.contains('\0')) {
        return Err(NvrtcError::Input(format!(
            "{name}: an option holds a NUL byte"
        )));
    }
    let prog = Program(
        result::create_program(&src, Some(&cname)).map_err(|e| api("nvrtcCreateProgram", e))?,
    );
    // SAFETY: `prog` is a live program; options are NUL-free (checked).
    let status = unsafe { result::compile_program(prog.0, &opts) };
    // SAFETY: as above.
    let log = c_text(
        unsafe { result::get_program_log(prog.0) }.map_err(|e| api("nvrtcGetProgramLog", e))?,
    );
    if status.is_err() {
        return Err(NvrtcError::Compile {
            name: name.to_string(),
            options: opts.join(" "),
            log,
        });
    }
    let cubin = arch.starts_with("sm_");
    let image = if cubin {
        let mut size = 0usize;
        // SAFETY: `prog` compiled for a real arch; `size` is a valid out-pointer.
        unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) }
            .result()
            .map_err(|e| api("nvrtcGetCUBINSize", e))?;
        let mut buf = vec![0 as c_char; size];
        // SAFETY: `buf` holds `size` bytes as NVRTC asked.
        unsafe { sys::nvrtcGetCUBIN(prog.0, buf.as_mut_ptr()) }
            .result()
            .map_err(|e| api("nvrtcGetCUBIN", e))?;
        buf.into_iter().map(|c| c as u8).collect()
    } else {
        // SAFETY: `prog` compiled successfully.
        let ptx = unsafe { result::get_ptx(prog.0) }.map_err(|e| api("nvrtcGetPTX", e))?;
        c_text(ptx).into_bytes()
    };
    Ok(Compiled { image, cubin, log })
}

/// Compiles `source` and returns only NVRTC's log (empty when clean): the CI
/// check of emitted kernels. A compile error is an `Err` carrying the log.
pub fn compile_check(
    source: &str,
    arch: &str,
    include_dirs: &[PathBuf],
) -> Result<String, NvrtcError> {
    compile("kernel.cu", source, arch, include_dirs).map(|c| c.log)
}

/// The registers a thread of the log's (first) kernel uses, from ptxas' `Used N registers`
/// line (compiled with `--ptxas-options=-v`); `None` without one.
pub fn ptxas_registers(log: &str) -> Option<u32> {
    log.lines().find_map(|l| {
        let rest = &l[l.find("Used ")? + 5..];
        let (n, tail) = rest.split_once(' ')?;
        tail.starts_with("registers").then(|| n.parse().ok())?
    })
}

/// The warning and error lines of an NVRTC log (empty for a clean compile).
pub fn log_diagnostics(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("warning") || l.contains("error") || l.contains("remark")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_name_arch_and_includes() {
        let o = options("sm_90", &[PathBuf::from("/x/include")]);
        assert_eq!(
            o,
            [
                "--gpu-architecture=sm_90",
                "-default-device",
                "-std=c++17",
                "--include-path=/x/include"
            ]
        );
    }

    #[test]
    fn register_count_from_the_ptxas_log() {
        let log = "ptxas info    : Compiling entry function 'k' for 'sm_90'\n\
                   ptxas info    : Function properties for k\n\
                   ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
                   ptxas info    : Used 128 registers, used 1 barriers, 114688 bytes smem\n";
        assert_eq!(ptxas_registers(log), Some(128));
        assert_eq!(ptxas_registers("ptxas info : Used 7 barriers"), None);
        assert_eq!(ptxas_registers(""), None);
    }

    #[test]
    fn diagnostics_pick_warnings() {
        let log =
            "k.cu(3): warning #177-D: variable \"x\" was declared but never referenced\n\nok\n";
        assert_eq!(log_diagnostics(log).len(), 1);
        assert!(log_diagnostics("").is_empty());
    }

    #[test]
    fn missing_directory_is_an_error() {
        let e = load_nvrtc(Path::new("/nonexistent/ligerc")).unwrap_err();
        assert!(matches!(e, NvrtcError::LibraryMissing { .. }), "{e}");
    }

    /// Runs only where NVRTC can be found (LIGERC_NVRTC_LIB_DIR or the loader path).
    #[test]
    fn compiles_and_reports_warnings_when_available() {
        if ensure_nvrtc().is_err() {
            eprintln!("NVRTC not available: skipped (tests/cuda_codegen.rs is the CI check)");
            return;
        }
        let ok = compile_check(
            "extern \"C\" __global__ void k(float* x) { x[threadIdx.x] = 1.0f; }",
            "sm_90",
            &[],
        )
        .unwrap();
        assert!(log_diagnostics(&ok).is_empty(), "{ok}");
        let warn = compile_check(
            "extern \"C\" __global__ void k(float* x) { int unused = 3; x[0] = 1.0f; }",
            "sm_90",
            &[],
        )
        .unwrap();
        assert!(
            !log_diagnostics(&warn).is_empty(),
            "expected a warning, log: {warn:?}"
        );
        let err = compile_check(
            "extern \"C\" __global__ void k() { undefined(); }",
            "compute_90",
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, NvrtcError::Compile { .. }), "{err}");
    }
}
