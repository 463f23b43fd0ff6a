//! Device values of a graph run: tensors in pooled device buffers.
//!
//! A [`Pool`] keeps freed allocations by size and hands them out again, so
//! the second and later steps of a run allocate nothing (every step has the
//! same shapes) and no `cuMemFree` synchronises the stream. Reuse is safe
//! because every launch goes to the one stream: a buffer is handed out again
//! only after the host has queued every kernel reading it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::super::{Device, DeviceBuffer};
use super::GpuTrainError;

/// Element type of a device tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Elem {
    /// 32-bit float.
    F32,
    /// 64-bit integer (token ids, targets).
    I64,
    /// bfloat16: frozen projection weights, and activations cast for their products.
    BF16,
}

impl Elem {
    /// Bytes per element.
    pub(super) fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::I64 => 8,
            Elem::BF16 => 2,
        }
    }
}

type FreeLists = Rc<RefCell<HashMap<usize, Vec<DeviceBuffer>>>>;

/// Device buffers by size, reused across steps.
#[derive(Clone, Default)]
pub(super) struct Pool {
    free: FreeLists,
}

/// A pooled allocation; returns to its pool when dropped.
pub(super) struct Block {
    buf: Option<DeviceBuffer>,
    size: usize,
    free: FreeLists,
}

impl Block {
    /// The device address.
    pub(super) fn ptr(&self) -> u64 {
        self.buf.as_ref().map_or(0, |b| b.ptr)
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.free.borrow_mut().entry(self.size).or_default().push(b);
        }
    }
}

impl Pool {
    /// A buffer of at least `bytes` (rounded up to 512), fresh or reused.
    pub(super) fn alloc(&self, dev: &Device, bytes: usize) -> Result<Rc<Block>, GpuTrainError> {
        let size = bytes.max(1).div_ceil(512) * 512;
        let reused = self.free.borrow_mut().get_mut(&size).and_then(|v| v.pop());
        let buf = match reused {
            Some(b) => b,
            None => dev.alloc(size)?,
        };
        Ok(Rc::new(Block {
            buf: Some(buf),
            size,
            free: self.free.clone(),
        }))
    }
}

/// A tensor on the device: an address, a shape and an element type, holding
/// the allocation it points into (none for views into buffers the engine
/// keeps, like the trainable parameters).
#[derive(Clone)]
pub(super) struct DevTensor {
    /// The device address of element 0.
    pub(super) ptr: u64,
    /// The shape.
    pub(super) shape: Vec<usize>,
    /// The element type.
    pub(super) elem: Elem,
    /// Keeps the allocation alive.
    pub(super) hold: Option<Rc<Block>>,
}

impl DevTensor {
    /// Elements.
    pub(super) fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// A fresh f32 tensor of `shape` from `pool`.
    pub(super) fn empty(
        dev: &Device,
        pool: &Pool,
        shape: Vec<usize>,
        elem: Elem,
    ) -> Result<DevTensor, GpuTrainError> {
        let n: usize = shape.iter().product();
        let block = pool.alloc(dev, n * elem.size())?;
        Ok(DevTensor {
            ptr: block.ptr(),
            shape,
            elem,
            hold: Some(block),
        })
    }

    /// Rows of the last axis (`numel / last`) and the last axis.
    pub(super) fn rows_cols(&self) -> (usize, usize) {
        let cols = self.shape.last().copied().unwrap_or(1);
        (self.numel().checked_div(cols).unwrap_or(0), cols)
    }
}

impl Block {
    /// The underlying buffer, while the block is live.
    pub(super) fn buffer(&self) -> Option<&DeviceBuffer> {
        self.buf.as_ref()
    }
}
