//! Metadata values of a GGUF file.

/// One metadata value. GGUF value type ids are noted on each variant.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 6.
    F32(f32),
    /// Type 12.
    F64(f64),
    /// Type 7 (a byte that must be 0 or 1).
    Bool(bool),
    /// Type 8 (u64 length + UTF-8 bytes).
    String(String),
    /// Type 9 (element type id, u64 length, elements).
    Array(Vec<GgufValue>),
}

/// GGUF metadata value type ids.
pub(crate) mod type_id {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

impl GgufValue {
    /// The GGUF name of the value's type (`"u32"`, `"string"`, `"array"`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F32(_) => "f32",
            Self::F64(_) => "f64",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
        }
    }

    /// The value as an `i128` if it is an integer of any width and sign.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as an `f64` if it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            // Integers above 2^53 round; metadata floats never get that large.
            _ => self.as_integer().map(|v| v as f64),
        }
    }

    /// The string, if the value is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if the value is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    /// A short description for error messages: type plus value for scalars.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::String(s) if s.len() <= 40 => format!("string {s:?}"),
            Self::String(s) => format!("string of {} bytes", s.len()),
            Self::Array(items) => format!("array of {} elements", items.len()),
            Self::Bool(b) => format!("bool {b}"),
            other => match (other.as_integer(), other.as_f64()) {
                (Some(i), _) => format!("{} {i}", other.type_name()),
                (None, Some(f)) => format!("{} {f}", other.type_name()),
                _ => other.type_name().to_owned(),
            },
        }
    }
}
