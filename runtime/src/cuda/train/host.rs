//! Copies between host tensors and device values, and running one node on
//! the host (the CPU kernel) for ops without a GPU kernel, when allowed.

use std::collections::HashMap;
use std::ffi::c_void;

use cudarc::driver::sys as drv;
use ligerc_ir::{Graph, NodeId, Op};

use super::super::{CudaError, Device};
use super::GpuTrainError;
use super::forward::{Ctx, device_buffer};
use super::value::{DevTensor, Elem, Pool};
use crate::ops::{eval_high_level, eval_onnx};
use crate::{Data, ExecState, Tensor};

/// Copies `bytes` bytes from device address `src` after the queued work.
pub(super) fn download_bytes(
    dev: &Device,
    src: u64,
    bytes: usize,
) -> Result<Vec<u8>, GpuTrainError> {
    dev.sync()?;
    let mut out = vec![0u8; bytes];
    if bytes == 0 {
        return Ok(out);
    }
    // SAFETY: `src` is a live device allocation of at least `bytes` bytes (a
    // DevTensor or an engine buffer); the context is current (sync bound it)
    // and the stream is idle.
    let r = unsafe { drv::cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, src, bytes) };
    if r != drv::CUresult::CUDA_SUCCESS {
        return Err(CudaError::Api {
            call: "cuMemcpyDtoH".into(),
            detail: format!("{r:?}"),
        }
        .into());
    }
    Ok(out)
}

/// The f32 values of a device tensor.
pub(super) fn download_f32(dev: &Device, t: &DevTensor) -> Result<Vec<f32>, GpuTrainError> {
    let b = download_bytes(dev, t.ptr, t.numel() * 4)?;
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// A device tensor on the host.
pub(super) fn download(dev: &Device, t: &DevTensor) -> Result<Tensor, GpuTrainError> {
    Ok(match t.elem {
        Elem::F32 => Tensor::f32(t.shape.clone(), download_f32(dev, t)?)?,
        Elem::I64 => {
            let b = download_bytes(dev, t.ptr, t.numel() * 8)?;
            let v = b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            Tensor::i64(t.shape.clone(), v)?
        }
        Elem::BF16 => {
            let b = download_bytes(dev, t.ptr, t.numel() * 2)?;
            let v = b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect();
            Tensor::f32(t.shape.clone(), v)?
        }
    })
}

/// A host tensor on the device (f32 or i64, as it is held).
pub(super) fn upload(dev: &Device, pool: &Pool, t: &Tensor) -> Result<DevTensor, GpuTrainError> {
    let (elem, bytes): (Elem, Vec<u8>) = match &t.data {
        Data::F32(v) => (Elem::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Data::I64(v) => (Elem::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Data::Bool(v) => (
            Elem::I64,
            v.iter().flat_map(|&x| i64::from(x).to_le_bytes()).collect(),
        ),
    };
    upload_bytes(dev, pool, t.shape.clone(), elem, &bytes)
}

/// An f32 host tensor on the device as bf16 (round to nearest even); other
/// element types as [`upload`] holds them.
pub(super) fn upload_bf16(
    dev: &Device,
    pool: &Pool,
    t: &Tensor,
) -> Result<DevTensor, GpuTrainError> {
    let Data::F32(v) = &t.data else {
        return upload(dev, pool, t);
    };
    let bytes: Vec<u8> = v
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    upload_bytes(dev, pool, t.shape.clone(), Elem::BF16, &bytes)
}

/// A pooled device tensor of `shape` and `elem` holding `bytes`.
fn upload_bytes(
    dev: &Device,
    pool: &Pool,
    shape: Vec<usize>,
    elem: Elem,
    bytes: &[u8],
) -> Result<DevTensor, GpuTrainError> {
    let d = DevTensor::empty(dev, pool, shape, elem)?;
    if let Some(b) = &d.hold
        && !bytes.is_empty()
    {
        dev.upload_async(device_buffer(b)?, 0, bytes)?;
        // The host bytes must outlive the copy.
        dev.sync()?;
    }
    Ok(d)
}

/// Runs node `id` (`op`) with the CPU kernel: operands down, results up.
pub(super) fn run_on_host(
    cx: &Ctx,
    graph: &Graph,
    id: NodeId,
    op: &Op,
    args: &[&DevTensor],
) -> Result<Vec<DevTensor>, GpuTrainError> {
    let host: Vec<Tensor> = args
        .iter()
        .map(|a| download(cx.dev, a))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&Tensor> = host.iter().collect();
    let node = graph.try_node(id).map_err(crate::RuntimeError::from)?;
    let out = match op {
        Op::Onnx(o) => eval_onnx(o, &refs, &node.outputs),
        other => eval_high_level(other, id, &refs, &mut ExecState::default()),
    }
    .map_err(|e| crate::RuntimeError::Node {
        node: graph.describe(id),
        inner: Box::new(e),
    })?;
    out.iter().map(|t| upload(cx.dev, cx.pool, t)).collect()
}

/// Nodes run on the host so far, by op mnemonic (for reports).
pub(super) type HostCounts = HashMap<String, usize>;
