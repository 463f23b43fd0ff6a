//! The passes users can name after `--pass`, with their options.
//!
//! A pass is written `NAME` or `NAME:key=value,key=value` on the command line.

use crate::{DeadCodeElimination, Pass, PassError};

/// A parsed `--pass` argument.
#[derive(Clone, Debug, PartialEq)]
pub struct PassSpec {
    /// Pass name.
    pub name: String,
    /// `key=value` options, in the order given.
    pub options: Vec<(String, String)>,
}

impl std::str::FromStr for PassSpec {
    type Err = PassError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, opts) = s.split_once(':').unwrap_or((s, ""));
        let mut options = Vec::new();
        for kv in opts.split(',').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                PassError::Usage(format!("pass option `{kv}` in `{s}` is not key=value"))
            })?;
            options.push((k.to_string(), v.to_string()));
        }
        Ok(PassSpec {
            name: name.to_string(),
            options,
        })
    }
}

/// `(name, one-line description)` of every pass.
pub fn available_passes() -> Vec<(&'static str, &'static str)> {
    vec![("dce", "remove nodes no output depends on")]
}

/// Instantiates the pass a spec names.
pub fn make_pass(spec: &PassSpec) -> Result<Box<dyn Pass>, PassError> {
    let no_options = |p: Box<dyn Pass>| {
        if let Some((k, _)) = spec.options.first() {
            return Err(PassError::Usage(format!(
                "pass `{}` takes no option `{k}`",
                spec.name
            )));
        }
        Ok(p)
    };
    match spec.name.as_str() {
        "dce" => no_options(Box::new(DeadCodeElimination)),
        other => {
            let known: Vec<&str> = available_passes().into_iter().map(|(n, _)| n).collect();
            Err(PassError::Usage(format!(
                "unknown pass `{other}`; available: {}",
                known.join(", ")
            )))
        }
    }
}
