//! Typed access to the keys of a JSON object, with errors naming the file and
//! the (dotted) key. A `null` value counts as absent, as transformers treats it.

use std::path::Path;

use serde_json::{Map, Value};

use super::HfConfigError;

/// A JSON object being read, with the file and key prefix used in errors.
pub(crate) struct Fields<'a> {
    obj: &'a Map<String, Value>,
    file: &'a Path,
    prefix: String,
}

/// A short description of a JSON value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("bool {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.len() <= 40 => format!("string {s:?}"),
        Value::String(s) => format!("string of {} bytes", s.len()),
        Value::Array(items) => format!("array of {} elements", items.len()),
        Value::Object(_) => "object".to_owned(),
    }
}

impl<'a> Fields<'a> {
    /// Reads the top-level object `value` of `file`.
    pub(crate) fn root(value: &'a Value, file: &'a Path) -> Result<Self, HfConfigError> {
        match value {
            Value::Object(obj) => Ok(Self {
                obj,
                file,
                prefix: String::new(),
            }),
            other => Err(HfConfigError::WrongType {
                file: file.to_owned(),
                key: "<root>".to_owned(),
                expected: "a JSON object",
                found: describe(other),
            }),
        }
    }

    pub(crate) fn file(&self) -> &'a Path {
        self.file
    }

    /// The dotted key for error messages.
    pub(crate) fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(crate) fn wrong_type(
        &self,
        key: &str,
        expected: &'static str,
        found: &Value,
    ) -> HfConfigError {
        HfConfigError::WrongType {
            file: self.file.to_owned(),
            key: self.path(key),
            expected,
            found: describe(found),
        }
    }

    pub(crate) fn invalid(&self, key: &str, reason: impl Into<String>) -> HfConfigError {
        HfConfigError::Invalid {
            file: self.file.to_owned(),
            key: self.path(key),
            reason: reason.into(),
        }
    }

    fn missing(&self, key: &str) -> HfConfigError {
        HfConfigError::Missing {
            file: self.file.to_owned(),
            key: self.path(key),
        }
    }

    /// The raw value of `key`, `None` if absent or `null`.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is present and not `null`.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The nested object under `key`, if present.
    pub(crate) fn opt_object(&self, key: &str) -> Result<Option<Fields<'a>>, HfConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(Fields {
                obj,
                file: self.file,
                prefix: format!("{}{key}.", self.prefix),
            })),
            Some(other) => Err(self.wrong_type(key, "an object", other)),
        }
    }

    /// The values of this object.
    pub(crate) fn values(&self) -> impl Iterator<Item = &'a Value> + use<'a> {
        self.obj.values()
    }

    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>, HfConfigError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| self.wrong_type(key, "a non-negative integer", v))
            })
            .transpose()
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize, HfConfigError> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    /// A required integer that must be at least 1.
    pub(crate) fn positive(&self, key: &str) -> Result<usize, HfConfigError> {
        match self.usize(key)? {
            0 => Err(self.invalid(key, "must be at least 1")),
            n => Ok(n),
        }
    }

    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>, HfConfigError> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.wrong_type(key, "a number", v))
            })
            .transpose()
    }

    pub(crate) fn f64(&self, key: &str) -> Result<f64, HfConfigError> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    /// A required number that must be finite and > 0.
    pub(crate) fn positive_f64(&self, key: &str) -> Result<f64, HfConfigError> {
        let v = self.f64(key)?;
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.invalid(key, format!("must be a finite number > 0, found {v}")))
        }
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool, HfConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.wrong_type(key, "a bool", other)),
        }
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>, HfConfigError> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.wrong_type(key, "a string", v))
            })
            .transpose()
    }

    pub(crate) fn str(&self, key: &str) -> Result<&'a str, HfConfigError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }
}
