//! Reading corpus files into documents: a plain-text file is one document
//! whose every token carries loss; a `.jsonl` file holds one record a line,
//! `{"text": ...}` (all loss) or Alpaca `{"instruction", "input"?, "output"}`
//! (loss on the response only). Owns file reading and validation; knows
//! nothing of tokens.

use std::path::Path;

use serde_json::{Map, Value};

use crate::data::alpaca::alpaca_prompt;
use crate::data::{DataError, Location};

/// A run of text that either carries loss or does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The text.
    pub text: String,
    /// Whether its tokens are training targets.
    pub loss: bool,
}

/// One document: segments encoded one after the other, then end-of-sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// Where it came from, for error messages.
    pub at: Location,
    /// Its parts in order.
    pub segments: Vec<Segment>,
}

impl Document {
    /// Bytes of text in the document.
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.text.len()).sum()
    }

    /// Whether the document holds no text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a path is read as JSONL (extension `.jsonl`) rather than text.
pub fn is_jsonl(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
}

/// The documents of one file.
pub fn read_documents(path: &Path) -> Result<Vec<Document>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = utf8(path, bytes)?;
    if text.trim().is_empty() {
        return Err(DataError::Empty {
            at: Location::file(path),
        });
    }
    if is_jsonl(path) {
        jsonl_documents(path, &text)
    } else {
        Ok(vec![Document {
            at: Location::file(path),
            segments: vec![Segment { text, loss: true }],
        }])
    }
}

/// The file's text, or [`DataError::NotUtf8`] naming the line of the first
/// bad byte.
fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, DataError> {
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        DataError::NotUtf8 {
            at: Location::line(path, line),
        }
    })
}

/// One document per non-blank line.
fn jsonl_documents(path: &Path, text: &str) -> Result<Vec<Document>, DataError> {
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = Location::line(path, i + 1);
        let record: Value = serde_json::from_str(line).map_err(|e| DataError::Json {
            at: at.clone(),
            message: e.to_string(),
        })?;
        let Value::Object(record) = record else {
            return Err(DataError::Json {
                at,
                message: "a record must be a JSON object".into(),
            });
        };
        let segments = record_segments(&record, &at)?;
        docs.push(Document { at, segments });
    }
    if docs.is_empty() {
        return Err(DataError::Empty {
            at: Location::file(path),
        });
    }
    Ok(docs)
}

/// The segments of a `{"text"}` or Alpaca record.
fn record_segments(record: &Map<String, Value>, at: &Location) -> Result<Vec<Segment>, DataError> {
    if record.contains_key("text") {
        let text = required(record, "text", at)?;
        return Ok(vec![Segment {
            text: text.to_owned(),
            loss: true,
        }]);
    }
    let instruction = required(record, "instruction", at)?;
    let output = required(record, "output", at)?;
    let input = string_field(record, "input", at)?;
    Ok(vec![
        Segment {
            text: alpaca_prompt(instruction, input),
            loss: false,
        },
        Segment {
            text: output.to_owned(),
            loss: true,
        },
    ])
}

/// A string field that must be present.
fn required<'a>(
    record: &'a Map<String, Value>,
    field: &'static str,
    at: &Location,
) -> Result<&'a str, DataError> {
    string_field(record, field, at)?.ok_or_else(|| DataError::MissingField {
        at: at.clone(),
        field,
    })
}

/// A string field; absent or `null` is `None`, another type an error.
fn string_field<'a>(
    record: &'a Map<String, Value>,
    field: &'static str,
    at: &Location,
) -> Result<Option<&'a str>, DataError> {
    match record.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(DataError::FieldType {
            at: at.clone(),
            field,
        }),
    }
}
