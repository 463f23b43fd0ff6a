//! Bounds every importer applies to sizes a file declares, before anything is
//! allocated from them.
//!
//! A declared size is refused when it exceeds one of these bounds, or when the
//! bytes it describes do not fit the file. Zero-sized dims do not hide the
//! others: `[0, 2^40, 2^40]` is refused, since code that walks strides would
//! still multiply the non-zero dims.

/// Upper bounds on what a model file may declare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportLimits {
    /// Most dimensions of one tensor.
    pub max_rank: usize,
    /// Most elements of one tensor (product of its non-zero dims).
    pub max_tensor_elements: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            max_rank: 32,
            max_tensor_elements: 1 << 40,
        }
    }
}

impl ImportLimits {
    /// Checks a declared shape; `Err` says which bound it breaks.
    pub fn check_shape(&self, dims: &[u64]) -> Result<(), String> {
        self.check_dims(dims.iter().copied(), dims.len())
    }

    /// [`ImportLimits::check_shape`] for `usize` dims.
    pub fn check_usize_shape(&self, dims: &[usize]) -> Result<(), String> {
        self.check_dims(dims.iter().map(|&d| d as u64), dims.len())
    }

    fn check_dims(&self, dims: impl Iterator<Item = u64>, rank: usize) -> Result<(), String> {
        if rank > self.max_rank {
            return Err(format!(
                "rank {rank} exceeds the limit of {} dims",
                self.max_rank
            ));
        }
        let mut n: u64 = 1;
        for d in dims {
            n = n
                .checked_mul(d.max(1))
                .filter(|&n| n <= self.max_tensor_elements)
                .ok_or_else(|| {
                    format!(
                        "{rank} dims declare more than {} elements",
                        self.max_tensor_elements
                    )
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ImportLimits;

    #[test]
    fn zero_dims_do_not_hide_huge_ones() {
        let l = ImportLimits::default();
        assert!(l.check_shape(&[0u64, 1 << 40, 1 << 40]).is_err());
        assert!(l.check_shape(&[0u64, 4, 4]).is_ok());
        assert!(l.check_shape(&[2u64; 33]).is_err());
        assert!(l.check_shape(&[]).is_ok());
        assert!(l.check_usize_shape(&[usize::MAX]).is_err());
    }
}
