//! Symbolic shapes: concrete dims next to named ones (`batch`, `seq`).

use std::fmt;

use crate::DType;

/// One dimension of a tensor type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A dimension known at compile time.
    Fixed(usize),
    /// A named dimension bound at run time (`batch`, `seq`, …). Two dims with the
    /// same name are equal at run time.
    Sym(String),
    /// A dimension nothing is known about.
    Unknown,
}

impl Dim {
    /// The fixed size, if known.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            _ => None,
        }
    }

    /// A named symbolic dim.
    pub fn sym(name: &str) -> Dim {
        Dim::Sym(name.to_string())
    }

    /// Whether two dims may describe the same run-time size: unknown dims are
    /// compatible with anything; fixed dims must agree; symbolic dims are
    /// compatible with anything but a conflicting fixed dim is still allowed
    /// (a symbol may be bound to that number).
    pub fn compatible(&self, other: &Dim) -> bool {
        match (self, other) {
            (Dim::Fixed(a), Dim::Fixed(b)) => a == b,
            _ => true,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// The type of one value: element type and (possibly unknown) shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first; `None` when even the rank is unknown.
    pub shape: Option<Vec<Dim>>,
}

impl TensorType {
    /// A type with a known rank.
    pub fn new(dtype: DType, shape: Vec<Dim>) -> Self {
        TensorType {
            dtype,
            shape: Some(shape),
        }
    }

    /// A type with fixed dims only.
    pub fn fixed(dtype: DType, dims: &[usize]) -> Self {
        TensorType::new(dtype, dims.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    /// A type whose rank is unknown.
    pub fn unranked(dtype: DType) -> Self {
        TensorType { dtype, shape: None }
    }

    /// The rank, if known.
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }

    /// Dim `i` counted from the end when negative, if the rank is known and in range.
    pub fn dim(&self, i: isize) -> Option<&Dim> {
        let shape = self.shape.as_ref()?;
        let idx = if i < 0 {
            shape.len().checked_sub(i.unsigned_abs())?
        } else {
            i as usize
        };
        shape.get(idx)
    }

    /// All dims fixed: their values.
    pub fn fixed_dims(&self) -> Option<Vec<usize>> {
        self.shape.as_ref()?.iter().map(Dim::fixed).collect()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        match &self.shape {
            None => f.write_str("*")?,
            Some(dims) => {
                for (i, d) in dims.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{d}")?;
                }
            }
        }
        f.write_str("]")
    }
}
