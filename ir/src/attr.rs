//! Attribute values carried by ops (ONNX attributes and high-level op parameters).

use std::collections::BTreeMap;

use crate::{IrError, TensorData};

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// A signed integer.
    Int(i64),
    /// A float (f32 attributes are widened exactly).
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A list of floats.
    Floats(Vec<f64>),
    /// A small tensor (ONNX `ConstantOfShape.value`, …).
    Tensor(TensorData),
}

/// Attributes by name, kept sorted so every graph prints the same way.
pub type Attrs = BTreeMap<String, Attr>;

/// Typed access to an [`Attrs`] map, naming the op and key in every error.
pub struct AttrReader<'a> {
    op: &'a str,
    attrs: &'a Attrs,
}

impl<'a> AttrReader<'a> {
    /// Reads attributes of op `op`.
    pub fn new(op: &'a str, attrs: &'a Attrs) -> Self {
        AttrReader { op, attrs }
    }

    fn missing(&self, key: &str) -> IrError {
        IrError::Attr {
            op: self.op.to_string(),
            key: key.to_string(),
            problem: "missing".into(),
        }
    }

    fn wrong(&self, key: &str, want: &str) -> IrError {
        IrError::Attr {
            op: self.op.to_string(),
            key: key.to_string(),
            problem: format!("expected {want}"),
        }
    }

    /// An integer attribute, or `default` when absent.
    pub fn int_or(&self, key: &str, default: i64) -> Result<i64, IrError> {
        match self.attrs.get(key) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(_) => Err(self.wrong(key, "an integer")),
        }
    }

    /// A required integer attribute.
    pub fn int(&self, key: &str) -> Result<i64, IrError> {
        match self.attrs.get(key) {
            None => Err(self.missing(key)),
            Some(Attr::Int(v)) => Ok(*v),
            Some(_) => Err(self.wrong(key, "an integer")),
        }
    }

    /// A required non-negative integer attribute that fits `usize`.
    pub fn usize(&self, key: &str) -> Result<usize, IrError> {
        let v = self.int(key)?;
        usize::try_from(v).map_err(|_| self.wrong(key, "a non-negative integer"))
    }

    /// A float attribute (integers are accepted), or `default` when absent.
    pub fn float_or(&self, key: &str, default: f64) -> Result<f64, IrError> {
        match self.attrs.get(key) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f64),
            Some(_) => Err(self.wrong(key, "a float")),
        }
    }

    /// A required float attribute.
    pub fn float(&self, key: &str) -> Result<f64, IrError> {
        if !self.attrs.contains_key(key) {
            return Err(self.missing(key));
        }
        self.float_or(key, 0.0)
    }

    /// A string attribute, or `default` when absent.
    pub fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str, IrError> {
        match self.attrs.get(key) {
            None => Ok(default),
            Some(Attr::Str(s)) => Ok(s),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    /// An integer-list attribute, if present.
    pub fn ints_opt(&self, key: &str) -> Result<Option<&'a [i64]>, IrError> {
        match self.attrs.get(key) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(_) => Err(self.wrong(key, "a list of integers")),
        }
    }

    /// A tensor attribute, if present.
    pub fn tensor_opt(&self, key: &str) -> Result<Option<&'a TensorData>, IrError> {
        match self.attrs.get(key) {
            None => Ok(None),
            Some(Attr::Tensor(t)) => Ok(Some(t)),
            Some(_) => Err(self.wrong(key, "a tensor")),
        }
    }
}
