//! Thin, checked wrappers over the CUDA driver API and cuBLAS (cudarc `sys`, loaded at run time).

use std::cell::Cell;
use std::ffi::{CStr, CString, c_void};
use std::rc::Rc;

use cudarc::cublas::sys as blas;
use cudarc::driver::sys as drv;

use super::{CudaError, Param};

fn check(call: &str, r: drv::CUresult) -> Result<(), CudaError> {
    if r == drv::CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    let mut s: *const std::ffi::c_char = std::ptr::null();
    // SAFETY: the driver is loaded (checked in Device::open); `s` is a valid out-pointer.
    let detail = unsafe {
        if drv::cuGetErrorString(r, &mut s) == drv::CUresult::CUDA_SUCCESS && !s.is_null() {
            format!("{r:?}: {}", CStr::from_ptr(s).to_string_lossy())
        } else {
            format!("{r:?}")
        }
    };
    Err(CudaError::Api {
        call: call.to_string(),
        detail,
    })
}

fn check_blas(call: &str, r: blas::cublasStatus_t) -> Result<(), CudaError> {
    if r == blas::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(CudaError::Api {
            call: call.to_string(),
            detail: format!("{r:?}"),
        })
    }
}

struct Ctx {
    ctx: drv::CUcontext,
    stream: drv::CUstream,
    blas: blas::cublasHandle_t,
    /// cuBLAS workspace set explicitly (so GEMMs allocate nothing while a graph is captured).
    workspace: u64,
    /// Bytes allocated through [`Device::alloc`] and still live, and their peak.
    live: Cell<usize>,
    peak: Cell<usize>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: handles created in Device::open, destroyed once.
        unsafe {
            let _ = drv::cuCtxSetCurrent(self.ctx);
            let _ = blas::cublasDestroy_v2(self.blas);
            if self.workspace != 0 {
                let _ = drv::cuMemFree_v2(self.workspace);
            }
            let _ = drv::cuStreamDestroy_v2(self.stream);
        }
    }
}

/// One GPU: its primary context, a stream and a cuBLAS handle on it.
pub struct Device {
    inner: Rc<Ctx>,
    /// The device's name.
    pub name: String,
    /// Compute capability (major, minor).
    pub cc: (i32, i32),
    /// Multiprocessors.
    pub sms: i32,
}

/// A device allocation, freed on drop.
pub struct DeviceBuffer {
    /// The device address.
    pub ptr: u64,
    /// Bytes.
    pub len: usize,
    _ctx: Rc<Ctx>,
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from cuMemAlloc in this context and is freed once.
        unsafe {
            let _ = drv::cuCtxSetCurrent(self._ctx.ctx);
            let _ = drv::cuMemFree_v2(self.ptr);
        }
        let live = &self._ctx.live;
        live.set(live.get().saturating_sub(self.len.max(1)));
    }
}

/// An instantiated CUDA graph (a captured sequence of launches), replayed with
/// [`Device::launch_graph`].
pub struct GraphExec {
    graph: drv::CUgraph,
    exec: drv::CUgraphExec,
    /// Kernel and GEMM nodes captured.
    pub nodes: usize,
    _ctx: Rc<Ctx>,
}

impl Drop for GraphExec {
    fn drop(&mut self) {
        // SAFETY: both handles were created by capture/instantiate and are destroyed once.
        unsafe {
            let _ = drv::cuCtxSetCurrent(self._ctx.ctx);
            let _ = drv::cuGraphExecDestroy(self.exec);
            let _ = drv::cuGraphDestroy(self.graph);
        }
    }
}

/// A loaded kernel.
pub struct Function {
    f: drv::CUfunction,
    _module: drv::CUmodule,
}

/// A recorded event.
pub struct Event(drv::CUevent);

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Event")
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created by cuEventCreate, destroyed once.
        unsafe {
            let _ = drv::cuEventDestroy_v2(self.0);
        }
    }
}

/// Parameters of one `cublasGemmEx`.
#[derive(Clone, Copy, Debug)]
pub struct GemmParams {
    pub ta: bool,
    pub tb: bool,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub a: u64,
    pub lda: i32,
    pub b: u64,
    pub ldb: i32,
    pub c: u64,
    pub ldc: i32,
    pub alpha: f32,
    pub beta: f32,
    pub a_bf16: bool,
    pub b_bf16: bool,
    pub c_bf16: bool,
}

impl Device {
    /// Opens device `ordinal`, checking first that libcuda, a GPU, NVRTC and cuBLAS are
    /// there ([`CudaError::Unavailable`] otherwise).
    pub fn open(ordinal: i32) -> Result<Device, CudaError> {
        // SAFETY: only tries to dlopen candidate names.
        if !unsafe { drv::is_culib_present() } {
            return Err(CudaError::Unavailable(
                "the CUDA driver library (libcuda.so) was not found: no NVIDIA driver on this \
                 machine"
                    .into(),
            ));
        }
        // SAFETY: the driver library is present; plain API calls with valid out-pointers.
        unsafe {
            let r = drv::cuInit(0);
            if r != drv::CUresult::CUDA_SUCCESS {
                return Err(CudaError::Unavailable(format!(
                    "cuInit failed ({r:?}): no usable GPU"
                )));
            }
            let mut n = 0;
            check("cuDeviceGetCount", drv::cuDeviceGetCount(&mut n))
                .map_err(|e| CudaError::Unavailable(e.to_string()))?;
            if n <= ordinal {
                return Err(CudaError::Unavailable(format!(
                    "no CUDA device {ordinal} ({n} found)"
                )));
            }
        }
        ligerc_codegen::cuda::nvrtc::ensure_nvrtc()
            .map_err(|e| CudaError::Unavailable(e.to_string()))?;
        // SAFETY: only tries to dlopen candidate names.
        if !unsafe { blas::is_culib_present() } {
            return Err(CudaError::Unavailable(
                "the cuBLAS library (libcublas.so.13) was not found".into(),
            ));
        }
        // SAFETY: all libraries present; valid out-pointers; handles kept in `Ctx`.
        unsafe {
            let mut dev = 0;
            check("cuDeviceGet", drv::cuDeviceGet(&mut dev, ordinal))?;
            let mut ctx = std::ptr::null_mut();
            check(
                "cuDevicePrimaryCtxRetain",
                drv::cuDevicePrimaryCtxRetain(&mut ctx, dev),
            )?;
            check("cuCtxSetCurrent", drv::cuCtxSetCurrent(ctx))?;
            let attr = |a: drv::CUdevice_attribute| -> Result<i32, CudaError> {
                let mut v = 0;
                check(
                    "cuDeviceGetAttribute",
                    drv::cuDeviceGetAttribute(&mut v, a, dev),
                )?;
                Ok(v)
            };
            use drv::CUdevice_attribute as A;
            let cc = (
                attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            );
            let sms = attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
            let mut buf = [0 as std::ffi::c_char; 256];
            check(
                "cuDeviceGetName",
                drv::cuDeviceGetName(buf.as_mut_ptr(), 255, dev),
            )?;
            let name = CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
            let mut stream = std::ptr::null_mut();
            check(
                "cuStreamCreate",
                drv::cuStreamCreate(
                    &mut stream,
                    drv::CUstream_flags::CU_STREAM_NON_BLOCKING as u32,
                ),
            )?;
            let mut h = std::ptr::null_mut();
            let r = blas::cublasCreate_v2(&mut h);
            if r != blas::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                return Err(CudaError::Unavailable(format!(
                    "cublasCreate failed: {r:?}"
                )));
            }
            check_blas("cublasSetStream", blas::cublasSetStream_v2(h, stream as _))?;
            // An explicit workspace (after SetStream, which resets it): cuBLAS then needs
            // no allocation of its own inside a captured graph.
            const WS: usize = 32 << 20;
            let mut ws = 0;
            check(
                "cuMemAlloc(cuBLAS workspace)",
                drv::cuMemAlloc_v2(&mut ws, WS),
            )?;
            check_blas(
                "cublasSetWorkspace",
                blas::cublasSetWorkspace_v2(h, ws as *mut c_void, WS),
            )?;
            Ok(Device {
                inner: Rc::new(Ctx {
                    ctx,
                    stream,
                    blas: h,
                    workspace: ws,
                    live: Cell::new(0),
                    peak: Cell::new(0),
                }),
                name,
                cc,
                sms,
            })
        }
    }

    /// `sm_XY` for NVRTC.
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.cc.0, self.cc.1)
    }

    fn bind(&self) {
        // SAFETY: the context is alive while `self` is.
        unsafe {
            let _ = drv::cuCtxSetCurrent(self.inner.ctx);
        }
    }

    /// Loads a cubin and looks up `name`.
    pub fn load_function(&self, image: &[u8], name: &str) -> Result<Function, CudaError> {
        self.bind();
        let cname = CString::new(name).map_err(|_| CudaError::Plan(format!("bad name {name}")))?;
        // SAFETY: `image` is a complete cubin; valid out-pointers.
        unsafe {
            let mut m = std::ptr::null_mut();
            check(
                &format!("cuModuleLoadData({name})"),
                drv::cuModuleLoadData(&mut m, image.as_ptr() as *const c_void),
            )?;
            let mut f = std::ptr::null_mut();
            check(
                &format!("cuModuleGetFunction({name})"),
                drv::cuModuleGetFunction(&mut f, m, cname.as_ptr()),
            )?;
            Ok(Function { f, _module: m })
        }
    }

    /// Raises a kernel's dynamic shared-memory limit.
    pub fn set_max_dynamic_smem(&self, f: &Function, bytes: u32) -> Result<(), CudaError> {
        // SAFETY: `f` is a loaded function.
        unsafe {
            check(
                "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
                drv::cuFuncSetAttribute(
                    f.f,
                    drv::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes as i32,
                ),
            )
        }
    }

    /// Allocates `len` bytes.
    pub fn alloc(&self, len: usize) -> Result<DeviceBuffer, CudaError> {
        self.bind();
        let mut p = 0;
        // SAFETY: valid out-pointer.
        unsafe {
            check(
                &format!("cuMemAlloc({len})"),
                drv::cuMemAlloc_v2(&mut p, len.max(1)),
            )?
        };
        let live = self.inner.live.get() + len.max(1);
        self.inner.live.set(live);
        self.inner.peak.set(self.inner.peak.get().max(live));
        Ok(DeviceBuffer {
            ptr: p,
            len,
            _ctx: self.inner.clone(),
        })
    }

    /// Bytes currently allocated through [`Device::alloc`] (weights, state, buffers; not
    /// the cuBLAS workspace or the modules), and the peak since [`Device::reset_peak`].
    pub fn allocated(&self) -> (usize, usize) {
        (self.inner.live.get(), self.inner.peak.get())
    }

    /// Restarts the peak of [`Device::allocated`] at the current level.
    pub fn reset_peak(&self) {
        self.inner.peak.set(self.inner.live.get());
    }

    /// `(free, total)` device memory as the driver reports it.
    pub fn mem_info(&self) -> Result<(usize, usize), CudaError> {
        self.bind();
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: valid out-pointers.
        unsafe { check("cuMemGetInfo", drv::cuMemGetInfo_v2(&mut free, &mut total))? };
        Ok((free, total))
    }

    /// Copies host bytes into a buffer in stream order, without waiting (the driver stages
    /// pageable memory before returning, so `bytes` may be dropped at once).
    pub fn upload_async(
        &self,
        b: &DeviceBuffer,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), CudaError> {
        if offset + bytes.len() > b.len + 64 {
            return Err(CudaError::Plan(format!(
                "upload of {} bytes at {offset} into a buffer of {}",
                bytes.len(),
                b.len
            )));
        }
        self.bind();
        // SAFETY: sizes checked; the copy is ordered on the stream.
        unsafe {
            check(
                "cuMemcpyHtoDAsync",
                drv::cuMemcpyHtoDAsync_v2(
                    b.ptr + offset as u64,
                    bytes.as_ptr() as *const c_void,
                    bytes.len(),
                    self.inner.stream,
                ),
            )
        }
    }

    /// Starts capturing the stream's work into a graph (nothing runs until
    /// [`Device::launch_graph`]); end with [`Device::end_capture`] even on error.
    pub fn begin_capture(&self) -> Result<(), CudaError> {
        self.bind();
        // SAFETY: the stream is alive and not capturing.
        unsafe {
            check(
                "cuStreamBeginCapture",
                drv::cuStreamBeginCapture_v2(
                    self.inner.stream,
                    drv::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
                ),
            )
        }
    }

    /// Ends a capture and instantiates the graph (`nodes`: how many were enqueued, for reports).
    pub fn end_capture(&self, nodes: usize) -> Result<GraphExec, CudaError> {
        self.bind();
        // SAFETY: the stream is capturing (begin_capture); valid out-pointers; on failure
        // the partial graph is destroyed here.
        unsafe {
            let mut g = std::ptr::null_mut();
            check(
                "cuStreamEndCapture",
                drv::cuStreamEndCapture(self.inner.stream, &mut g),
            )?;
            let mut e = std::ptr::null_mut();
            if let Err(err) = check(
                "cuGraphInstantiate",
                drv::cuGraphInstantiateWithFlags(&mut e, g, 0),
            ) {
                let _ = drv::cuGraphDestroy(g);
                return Err(err);
            }
            Ok(GraphExec {
                graph: g,
                exec: e,
                nodes,
                _ctx: self.inner.clone(),
            })
        }
    }

    /// Replays a graph on the stream.
    pub fn launch_graph(&self, g: &GraphExec) -> Result<(), CudaError> {
        self.bind();
        // SAFETY: `g` is an instantiated graph of this context.
        unsafe {
            check(
                "cuGraphLaunch",
                drv::cuGraphLaunch(g.exec, self.inner.stream),
            )
        }
    }

    /// Zeroes a buffer (in stream order).
    pub fn memset0(&self, b: &DeviceBuffer) -> Result<(), CudaError> {
        // SAFETY: `b` is a live allocation of `len` bytes.
        unsafe {
            check(
                "cuMemsetD8Async",
                drv::cuMemsetD8Async(b.ptr, 0, b.len, self.inner.stream),
            )
        }
    }

    /// Copies host bytes into a buffer (synchronous with respect to the stream).
    pub fn upload(&self, b: &DeviceBuffer, bytes: &[u8]) -> Result<(), CudaError> {
        if bytes.len() > b.len + 64 {
            return Err(CudaError::Plan(format!(
                "upload of {} bytes into a buffer of {}",
                bytes.len(),
                b.len
            )));
        }
        self.sync()?;
        // SAFETY: sizes checked; the stream is idle.
        unsafe {
            check(
                "cuMemcpyHtoD",
                drv::cuMemcpyHtoD_v2(b.ptr, bytes.as_ptr() as *const c_void, bytes.len()),
            )
        }
    }

    /// Copies a buffer's first `out.len()` bytes to the host after the stream's work.
    pub fn download(&self, b: &DeviceBuffer, out: &mut [u8]) -> Result<(), CudaError> {
        if out.len() > b.len {
            return Err(CudaError::Plan("download larger than the buffer".into()));
        }
        self.sync()?;
        // SAFETY: sizes checked; the stream is idle.
        unsafe {
            check(
                "cuMemcpyDtoH",
                drv::cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, b.ptr, out.len()),
            )
        }
    }

    /// Waits for the stream.
    pub fn sync(&self) -> Result<(), CudaError> {
        self.bind();
        // SAFETY: the stream is alive.
        unsafe {
            check(
                "cuStreamSynchronize",
                drv::cuStreamSynchronize(self.inner.stream),
            )
        }
    }

    /// Launches `f`.
    pub fn launch(
        &self,
        f: &Function,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[Param],
    ) -> Result<(), CudaError> {
        let mut ptrs: Vec<*mut c_void> = params.iter().map(|p| p.as_ptr() as *mut c_void).collect();
        // SAFETY: `ptrs` point into `params`, alive for the call; the driver copies them.
        unsafe {
            check(
                "cuLaunchKernel",
                drv::cuLaunchKernel(
                    f.f,
                    grid[0],
                    grid[1],
                    grid[2],
                    block[0],
                    block[1],
                    block[2],
                    smem,
                    self.inner.stream,
                    ptrs.as_mut_ptr(),
                    std::ptr::null_mut(),
                ),
            )
        }
    }

    /// Launches `f` with `params` followed by one by-value struct parameter (`bytes`, laid
    /// out as the kernel declares it).
    pub fn launch_with_struct(
        &self,
        f: &Function,
        grid: [u32; 3],
        block: [u32; 3],
        params: &[Param],
        bytes: &[u8],
    ) -> Result<(), CudaError> {
        // 8-byte aligned copy of the struct.
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `words` holds at least `bytes.len()` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                words.as_mut_ptr() as *mut u8,
                bytes.len(),
            )
        };
        let mut ptrs: Vec<*mut c_void> = params.iter().map(|p| p.as_ptr() as *mut c_void).collect();
        ptrs.push(words.as_mut_ptr() as *mut c_void);
        // SAFETY: `ptrs` point into `params` and `words`, alive for the call; the driver copies them.
        unsafe {
            check(
                "cuLaunchKernel",
                drv::cuLaunchKernel(
                    f.f,
                    grid[0],
                    grid[1],
                    grid[2],
                    block[0],
                    block[1],
                    block[2],
                    0,
                    self.inner.stream,
                    ptrs.as_mut_ptr(),
                    std::ptr::null_mut(),
                ),
            )
        }
    }

    /// One `cublasGemmEx` with f32 compute.
    pub fn gemm(&self, g: &GemmParams) -> Result<(), CudaError> {
        let op = |t: bool| {
            if t {
                blas::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let ty = |bf: bool| {
            if bf {
                blas::cudaDataType::CUDA_R_16BF
            } else {
                blas::cudaDataType::CUDA_R_32F
            }
        };
        // SAFETY: operands are live device buffers of the plan's sizes; alpha/beta are
        // host scalars (the default pointer mode).
        unsafe {
            check_blas(
                "cublasGemmEx",
                blas::cublasGemmEx(
                    self.inner.blas,
                    op(g.ta),
                    op(g.tb),
                    g.m,
                    g.n,
                    g.k,
                    &g.alpha as *const f32 as *const c_void,
                    g.a as *const c_void,
                    ty(g.a_bf16),
                    g.lda,
                    g.b as *const c_void,
                    ty(g.b_bf16),
                    g.ldb,
                    &g.beta as *const f32 as *const c_void,
                    g.c as *mut c_void,
                    ty(g.c_bf16),
                    g.ldc,
                    blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                ),
            )
        }
    }

    /// Records an event on the stream.
    pub fn record(&self) -> Result<Event, CudaError> {
        self.bind();
        // SAFETY: valid out-pointer; the stream is alive.
        unsafe {
            let mut e = std::ptr::null_mut();
            check("cuEventCreate", drv::cuEventCreate(&mut e, 0))?;
            check("cuEventRecord", drv::cuEventRecord(e, self.inner.stream))?;
            Ok(Event(e))
        }
    }

    /// Milliseconds between two recorded events (waits for the second).
    pub fn elapsed(&self, a: &Event, b: &Event) -> Result<f32, CudaError> {
        let mut ms = 0f32;
        // SAFETY: both events were recorded.
        unsafe {
            check("cuEventSynchronize", drv::cuEventSynchronize(b.0))?;
            check(
                "cuEventElapsedTime",
                drv::cuEventElapsedTime_v2(&mut ms, a.0, b.0),
            )?;
        }
        Ok(ms)
    }
}
