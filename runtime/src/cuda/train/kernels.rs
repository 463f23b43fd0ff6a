//! The `train_basic` kernel family (`ligerc_codegen::cuda::kernels::train_basic`):
//! compiled once with NVRTC to a cubin for the device (through the inference
//! runtime's cubin cache), loaded, and launched by name.

use std::collections::HashMap;

use ligerc_codegen::cuda::kernels::train_basic::{
    ELEM_BLOCK, KERNELS, ROW_BLOCK, train_basic_source,
};

use super::super::device::Function;
use super::super::{Device, Param, cubin_for};
use super::GpuTrainError;

/// The loaded kernels of the family.
pub(super) struct Kernels {
    funcs: HashMap<&'static str, Function>,
    /// Whether the cubin came from the cache.
    pub(super) cached: bool,
}

impl Kernels {
    /// Compiles (or takes from the cache) and loads every kernel.
    pub(super) fn load(dev: &Device) -> Result<Kernels, GpuTrainError> {
        let (cubin, cached) = cubin_for("train_basic", train_basic_source(), &dev.arch())?;
        let mut funcs = HashMap::new();
        for (name, _) in KERNELS {
            funcs.insert(*name, dev.load_function(&cubin, name)?);
        }
        Ok(Kernels { funcs, cached })
    }

    fn func(&self, name: &str) -> Result<&Function, GpuTrainError> {
        self.funcs.get(name).ok_or_else(|| GpuTrainError::Shape {
            node: "train_basic".into(),
            problem: format!("internal: no kernel `{name}`"),
        })
    }

    /// One block of 256 threads per row.
    pub(super) fn rows(
        &self,
        dev: &Device,
        name: &str,
        rows: usize,
        params: &[Param],
    ) -> Result<(), GpuTrainError> {
        if rows == 0 {
            return Ok(());
        }
        dev.launch(
            self.func(name)?,
            [grid(rows)?, 1, 1],
            [ROW_BLOCK, 1, 1],
            0,
            params,
        )?;
        Ok(())
    }

    /// One thread per element of `n`.
    pub(super) fn elems(
        &self,
        dev: &Device,
        name: &str,
        n: usize,
        params: &[Param],
    ) -> Result<(), GpuTrainError> {
        if n == 0 {
            return Ok(());
        }
        let blocks = grid(n.div_ceil(ELEM_BLOCK as usize))?;
        dev.launch(
            self.func(name)?,
            [blocks, 1, 1],
            [ELEM_BLOCK, 1, 1],
            0,
            params,
        )?;
        Ok(())
    }

    /// A fixed grid of `blocks` blocks of 256 threads.
    pub(super) fn blocks(
        &self,
        dev: &Device,
        name: &str,
        blocks: u32,
        params: &[Param],
    ) -> Result<(), GpuTrainError> {
        dev.launch(
            self.func(name)?,
            [blocks, 1, 1],
            [ROW_BLOCK, 1, 1],
            0,
            params,
        )?;
        Ok(())
    }
}

fn grid(n: usize) -> Result<u32, GpuTrainError> {
    u32::try_from(n)
        .ok()
        .filter(|&g| g < (1 << 31))
        .ok_or_else(|| GpuTrainError::Shape {
            node: "launch".into(),
            problem: format!("{n} blocks exceed the grid limit"),
        })
}

/// A device pointer argument.
pub(super) fn ptr(p: u64) -> Param {
    Param::Ptr(p)
}

/// An `int` argument.
pub(super) fn int(v: usize) -> Param {
    Param::I32(v as i32)
}

/// A `long long` argument (same bytes as `unsigned long long`).
pub(super) fn long(v: i64) -> Param {
    Param::U64(v as u64)
}

/// A `double` argument (passed by its bits: the launch copies 8 bytes).
pub(super) fn double(v: f64) -> Param {
    Param::U64(v.to_bits())
}

/// A `float` argument.
pub(super) fn float(v: f32) -> Param {
    Param::F32(v)
}
