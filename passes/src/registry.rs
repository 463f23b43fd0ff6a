//! The passes users can name after `--pass`, with their options.
//!
//! A pass is written `NAME` or `NAME:key=value,key=value` on the command line.
//! A piece without `=` continues the previous value, so list values read
//! naturally: `lora:targets=q,k,v,rank=16`.

use crate::{DeadCodeElimination, InsertLora, MergeLora, Pass, PassError, Raise};

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
        let mut options: Vec<(String, String)> = Vec::new();
        for kv in opts.split(',').filter(|kv| !kv.is_empty()) {
            // A piece without `=` continues the previous value: `targets=q,k,v`.
            if !kv.contains('=')
                && let Some((_, v)) = options.last_mut()
            {
                v.push(',');
                v.push_str(kv);
                continue;
            }
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
    vec![
        ("dce", "remove nodes no output depends on"),
        (
            "linearize",
            "softmax attention → Liger Attention (options variant, window, mix, keep-softmax, slots, normalizer)",
        ),
        (
            "lora",
            "insert LoRA adapters (options targets=q,k,v rank=8 alpha=8 seed=0 adapter=PATH)",
        ),
        (
            "merge-lora",
            "fold every LoRA branch into its weight: W += (alpha/rank)·B·A",
        ),
        (
            "raise",
            "decomposed exporter patterns → RmsNorm, Rope, Attention, SwiGlu, Linear (option allow-partial=true)",
        ),
    ]
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
        "lora" => Ok(Box::new(InsertLora::from_options(&spec.options)?)),
        "linearize" => Ok(Box::new(crate::Linearize::from_options(&spec.options)?)),
        "merge-lora" => no_options(Box::new(MergeLora)),
        "raise" => {
            let mut allow_partial = false;
            for (k, v) in &spec.options {
                match k.as_str() {
                    "allow-partial" => allow_partial = parse_bool(k, v)?,
                    _ => {
                        return Err(PassError::Usage(format!(
                            "pass `raise` has no option `{k}` (it takes allow-partial)"
                        )));
                    }
                }
            }
            Ok(Box::new(Raise { allow_partial }))
        }
        other => {
            let known: Vec<&str> = available_passes().into_iter().map(|(n, _)| n).collect();
            Err(PassError::Usage(format!(
                "unknown pass `{other}`; available: {}",
                known.join(", ")
            )))
        }
    }
}

/// `true`/`false` (also `1`/`0`) for option `key`.
pub(crate) fn parse_bool(key: &str, v: &str) -> Result<bool, PassError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(PassError::Usage(format!(
            "option `{key}` takes true or false, not `{v}`"
        ))),
    }
}
