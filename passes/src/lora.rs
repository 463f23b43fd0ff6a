//! `lora`: puts a LoRA adapter on chosen projections of every decoder layer.
//!
//! ```text
//!   y = Linear(x, W [, bias])              W named `….self_attn.q_proj.weight`
//!     ⇒ y = Lora{alpha}(x, W, A, B [, bias])
//!          A = `….self_attn.q_proj.lora_A.weight`  [rank, in]  ~ U(−1/√in, 1/√in)
//!          B = `….self_attn.q_proj.lora_B.weight`  [out, rank] = 0
//! ```
//!
//! The initialisation is PEFT's default (`kaiming_uniform_(A, a=√5)`, `B = 0`),
//! so the adapted graph computes exactly what the original did until `B` is
//! trained or loaded (see [`crate::load_adapter`]). `A` of a projection depends
//! only on the seed, the projection's name and its shape, so adding another
//! target never changes the initial `A` of the others.
//!
//! Projections are found by the Hugging Face weight name (`self_attn.q_proj`,
//! …, `mlp.down_proj`), which every Llama-family importer preserves. Linear
//! nodes that read the same weight share one adapter, as they share one module
//! in PEFT. The pass rewrites nodes in place and removes nothing; the graph's
//! other nodes and weights are untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use ligerc_ir::{Graph, NodeId, Op, TensorData, ValueRef};

use crate::{Pass, PassContext, PassError};

/// The name users type after `--pass`.
const PASS: &str = "lora";

/// A projection of a Llama decoder layer that can carry an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoraTarget {
    /// `self_attn.q_proj`.
    Q,
    /// `self_attn.k_proj`.
    K,
    /// `self_attn.v_proj`.
    V,
    /// `self_attn.o_proj`.
    O,
    /// `mlp.gate_proj`.
    Gate,
    /// `mlp.up_proj`.
    Up,
    /// `mlp.down_proj`.
    Down,
}

impl LoraTarget {
    /// Every target, in layer order.
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::Q,
        LoraTarget::K,
        LoraTarget::V,
        LoraTarget::O,
        LoraTarget::Gate,
        LoraTarget::Up,
        LoraTarget::Down,
    ];

    /// The short name of the `targets=` option (`q`, …, `down`).
    pub fn short_name(self) -> &'static str {
        match self {
            LoraTarget::Q => "q",
            LoraTarget::K => "k",
            LoraTarget::V => "v",
            LoraTarget::O => "o",
            LoraTarget::Gate => "gate",
            LoraTarget::Up => "up",
            LoraTarget::Down => "down",
        }
    }

    /// The module name PEFT's `target_modules` uses (`q_proj`, …).
    pub fn module(self) -> &'static str {
        match self {
            LoraTarget::Q => "q_proj",
            LoraTarget::K => "k_proj",
            LoraTarget::V => "v_proj",
            LoraTarget::O => "o_proj",
            LoraTarget::Gate => "gate_proj",
            LoraTarget::Up => "up_proj",
            LoraTarget::Down => "down_proj",
        }
    }

    /// The Hugging Face weight-name suffix that identifies the projection
    /// (`self_attn.q_proj.weight`, …, `mlp.down_proj.weight`).
    pub fn weight_suffix(self) -> &'static str {
        match self {
            LoraTarget::Q => "self_attn.q_proj.weight",
            LoraTarget::K => "self_attn.k_proj.weight",
            LoraTarget::V => "self_attn.v_proj.weight",
            LoraTarget::O => "self_attn.o_proj.weight",
            LoraTarget::Gate => "mlp.gate_proj.weight",
            LoraTarget::Up => "mlp.up_proj.weight",
            LoraTarget::Down => "mlp.down_proj.weight",
        }
    }

    /// Whether weight `name` is this projection's: it is the suffix, or ends
    /// with `.` followed by the suffix.
    pub fn matches_weight(self, name: &str) -> bool {
        match name.strip_suffix(self.weight_suffix()) {
            Some(rest) => rest.is_empty() || rest.ends_with('.'),
            None => false,
        }
    }

    /// Parses a comma- or `+`-separated list (`q,k,v`, `q+k+v`; `all` for
    /// every target); duplicates are dropped, layer order is kept.
    pub fn parse_list(list: &str) -> Result<Vec<LoraTarget>, PassError> {
        let mut set = BTreeSet::new();
        for item in list
            .split([',', '+'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if item == "all" {
                set.extend(LoraTarget::ALL);
            } else {
                set.insert(item.parse::<LoraTarget>()?);
            }
        }
        if set.is_empty() {
            return Err(PassError::Usage(format!(
                "pass `{PASS}`: `targets` names no projection; choose from {}",
                target_names()
            )));
        }
        Ok(set.into_iter().collect())
    }
}

impl fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

impl FromStr for LoraTarget {
    type Err = PassError;

    /// Accepts the short name (`q`) or the module name (`q_proj`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LoraTarget::ALL
            .into_iter()
            .find(|t| t.short_name() == s || t.module() == s)
            .ok_or_else(|| {
                PassError::Usage(format!(
                    "pass `{PASS}`: unknown target `{s}`; choose from {}",
                    target_names()
                ))
            })
    }
}

fn target_names() -> String {
    let names: Vec<&str> = LoraTarget::ALL.iter().map(|t| t.short_name()).collect();
    format!("{} (or `all`)", names.join(", "))
}

fn join_targets(targets: &[LoraTarget]) -> String {
    let names: Vec<&str> = targets.iter().map(|t| t.short_name()).collect();
    names.join(",")
}

/// What the `lora` pass inserts.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    /// The projections that get an adapter.
    pub targets: Vec<LoraTarget>,
    /// Rank `r` of every adapter (at least 1).
    pub rank: usize,
    /// LoRA alpha; the branch is scaled by `alpha / rank`.
    pub alpha: f64,
    /// Seed of the `A` initialisation.
    pub seed: u64,
}

impl Default for LoraConfig {
    /// The Liger recipe: q, k, v; rank 8; alpha 8 (scale 1); seed 0.
    fn default() -> Self {
        LoraConfig {
            targets: vec![LoraTarget::Q, LoraTarget::K, LoraTarget::V],
            rank: 8,
            alpha: 8.0,
            seed: 0,
        }
    }
}

/// The `lora` pass: inserts adapters, then optionally loads trained weights.
///
/// Options: `targets=q,k,v` (any of q, k, v, o, gate, up, down, or `all`;
/// `+` also separates), `rank=8`, `alpha=8`, `seed=0`, `adapter=PATH` (a PEFT
/// `adapter_model.safetensors` or the directory holding it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InsertLora {
    /// What to insert.
    pub config: LoraConfig,
    /// Trained adapter to load after inserting, if any.
    pub adapter: Option<PathBuf>,
}

impl InsertLora {
    /// The pass for `config`, with freshly initialised adapters.
    pub fn new(config: LoraConfig) -> Self {
        InsertLora {
            config,
            adapter: None,
        }
    }

    /// The pass from `--pass lora:key=value,…` options; unknown keys and bad
    /// values are [`PassError::Usage`].
    pub fn from_options(options: &[(String, String)]) -> Result<Self, PassError> {
        let mut pass = InsertLora::default();
        let bad = |key: &str, value: &str, want: &str| {
            PassError::Usage(format!(
                "pass `{PASS}`: option `{key}={value}` must be {want}"
            ))
        };
        for (key, value) in options {
            let v = value.trim();
            match key.as_str() {
                "targets" => pass.config.targets = LoraTarget::parse_list(v)?,
                "rank" | "r" => {
                    pass.config.rank = v
                        .parse::<usize>()
                        .ok()
                        .filter(|&r| r >= 1)
                        .ok_or_else(|| bad(key, value, "a positive integer"))?;
                }
                "alpha" => {
                    pass.config.alpha = v
                        .parse::<f64>()
                        .ok()
                        .filter(|a| a.is_finite())
                        .ok_or_else(|| bad(key, value, "a finite number"))?;
                }
                "seed" => {
                    pass.config.seed = v
                        .parse::<u64>()
                        .map_err(|_| bad(key, value, "a non-negative integer"))?;
                }
                "adapter" => {
                    if v.is_empty() {
                        return Err(bad(key, value, "a path"));
                    }
                    pass.adapter = Some(PathBuf::from(v));
                }
                other => {
                    return Err(PassError::Usage(format!(
                        "pass `{PASS}` takes no option `{other}`; options: targets, rank, alpha, seed, adapter"
                    )));
                }
            }
        }
        Ok(pass)
    }
}

impl Pass for InsertLora {
    fn name(&self) -> &str {
        PASS
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<(), PassError> {
        let n = insert_lora(graph, &self.config)?;
        cx.notes.push(format!(
            "{PASS}: {n} projections adapted (rank {}, alpha {})",
            self.config.rank, self.config.alpha
        ));
        if let Some(path) = &self.adapter {
            let report = crate::load_adapter(graph, path).map_err(|e| PassError::Failed {
                pass: PASS.into(),
                message: e.to_string(),
            })?;
            let mut note = format!(
                "{PASS}: loaded {} adapter tensors from {}",
                report.tensors,
                path.display()
            );
            if let Some(alpha) = report.alpha {
                note.push_str(&format!(" (alpha {alpha} from its adapter_config.json)"));
            }
            cx.notes.push(note);
        }
        Ok(())
    }
}

/// One projection to adapt: the Linear nodes reading weight `weight`.
struct Site {
    weight: String,
    out_features: usize,
    in_features: usize,
    linears: Vec<NodeId>,
}

/// Replaces every Linear whose weight is a target projection by a `Lora` node
/// with fresh adapter weights; returns how many projections were adapted.
///
/// Errors with [`PassError::Failed`] when no Linear matches, when a matched
/// weight is not `[out, in]`, or when an adapter weight name is taken; the
/// graph is unchanged then. Errors with [`PassError::Usage`] on rank 0 or a
/// non-finite alpha.
pub fn insert_lora(graph: &mut Graph, config: &LoraConfig) -> Result<usize, PassError> {
    let fail = |message: String| PassError::Failed {
        pass: PASS.into(),
        message,
    };
    if config.rank == 0 {
        return Err(PassError::Usage(format!(
            "pass `{PASS}`: rank must be at least 1"
        )));
    }
    if !config.alpha.is_finite() {
        return Err(PassError::Usage(format!(
            "pass `{PASS}`: alpha must be finite, is {}",
            config.alpha
        )));
    }
    // Find the projections without touching the graph.
    let mut sites: BTreeMap<String, Site> = BTreeMap::new();
    let mut existing_lora = 0usize;
    for id in graph.node_ids() {
        let Some(node) = graph.node(id) else { continue };
        match node.op {
            Op::Linear => {}
            Op::Lora { .. } => {
                existing_lora += 1;
                continue;
            }
            _ => continue,
        }
        let Some(w) = graph.operands(id).get(1).copied() else {
            continue;
        };
        let Some(Op::Weight { name }) = graph.node(w.node).map(|n| &n.op) else {
            continue;
        };
        if !config.targets.iter().any(|t| t.matches_weight(name)) {
            continue;
        }
        let data = graph.weights.get(name).ok_or_else(|| {
            fail(format!(
                "{}: weight `{name}` is not in the weight store",
                graph.describe(id)
            ))
        })?;
        let (out_features, in_features) = match data.shape() {
            &[o, i] => (o, i),
            other => {
                return Err(fail(format!(
                    "{}: weight `{name}` is {other:?}, expected [out, in]",
                    graph.describe(id)
                )));
            }
        };
        sites
            .entry(name.clone())
            .or_insert_with(|| Site {
                weight: name.clone(),
                out_features,
                in_features,
                linears: Vec::new(),
            })
            .linears
            .push(id);
    }
    if sites.is_empty() {
        let suffixes: Vec<String> = config
            .targets
            .iter()
            .map(|t| format!("`*.{}`", t.weight_suffix()))
            .collect();
        let mut message = format!(
            "no Linear projection matches targets {} (weights named {})",
            join_targets(&config.targets),
            suffixes.join(", ")
        );
        if existing_lora > 0 {
            message.push_str(&format!(
                "; the graph already has {existing_lora} Lora nodes"
            ));
        }
        return Err(fail(message));
    }
    let mut plans = Vec::with_capacity(sites.len());
    for site in sites.values() {
        let stem = site.weight.strip_suffix(".weight").unwrap_or(&site.weight);
        let a_name = format!("{stem}.lora_A.weight");
        let b_name = format!("{stem}.lora_B.weight");
        for name in [&a_name, &b_name] {
            if graph.weights.contains_key(name) {
                return Err(fail(format!(
                    "weight `{name}` already exists; cannot adapt `{}` twice",
                    site.weight
                )));
            }
        }
        let a = lora_a_init(stem, config.rank, site.in_features, config.seed);
        let a = TensorData::from_f32(vec![config.rank, site.in_features], &a)
            .map_err(|e| fail(format!("lora_A of `{stem}`: {e}")))?;
        let zeros = vec![0.0f32; site.out_features * config.rank];
        let b = TensorData::from_f32(vec![site.out_features, config.rank], &zeros)
            .map_err(|e| fail(format!("lora_B of `{stem}`: {e}")))?;
        plans.push((site, a_name, a, b_name, b));
    }
    // Rewrite: each Linear becomes a Lora node with the same id, result and name.
    for (site, a_name, a, b_name, b) in plans {
        let a: ValueRef = graph.add_weight(&a_name, a);
        let b: ValueRef = graph.add_weight(&b_name, b);
        for &id in &site.linears {
            let operands = graph.operands(id);
            let bias = operands.get(2).copied();
            graph.set_operand(id, 2, a);
            graph.set_operand(id, 3, b);
            if let Some(bias) = bias {
                graph.set_operand(id, 4, bias);
            }
            if let Some(node) = graph.node_mut(id) {
                node.op = Op::Lora {
                    alpha: config.alpha,
                };
            }
        }
    }
    Ok(sites.len())
}

/// PEFT's initial `A` for the projection whose weights are named `prefix.*`:
/// `rank × fan_in` values, row-major, uniform in `[−1/√fan_in, 1/√fan_in)`.
///
/// This is `kaiming_uniform_(a=√5)`: gain `√(2/(1+5))`, bound
/// `gain·√(3/fan_in) = 1/√fan_in`. The stream is a SplitMix64 generator seeded
/// with `seed` mixed with a hash of `prefix`, so it is reproducible and
/// independent between projections.
pub fn lora_a_init(prefix: &str, rank: usize, fan_in: usize, seed: u64) -> Vec<f32> {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    let mut rng = SplitMix64::new(seed ^ fnv1a64(prefix.as_bytes()));
    (0..rank * fan_in)
        .map(|_| ((2.0 * rng.next_unit() - 1.0) * bound) as f32)
        .collect()
}

/// FNV-1a, 64-bit: a stable hash of a name (std's hashers may change).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64 (Steele, Lea & Flood 2014).
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_matching_respects_name_boundaries() {
        assert!(LoraTarget::Q.matches_weight("model.layers.0.self_attn.q_proj.weight"));
        assert!(LoraTarget::Q.matches_weight("self_attn.q_proj.weight"));
        assert!(!LoraTarget::Q.matches_weight("model.layers.0.xself_attn.q_proj.weight"));
        assert!(!LoraTarget::Q.matches_weight("model.layers.0.self_attn.q_proj.bias"));
        assert!(LoraTarget::Down.matches_weight("model.layers.9.mlp.down_proj.weight"));
    }

    #[test]
    fn target_lists_parse() {
        use LoraTarget::*;
        assert_eq!(LoraTarget::parse_list("v,q+k,q").unwrap(), vec![Q, K, V]);
        assert_eq!(
            LoraTarget::parse_list("o_proj,down").unwrap(),
            vec![O, Down]
        );
        assert_eq!(
            LoraTarget::parse_list("all").unwrap(),
            LoraTarget::ALL.to_vec()
        );
        assert!(matches!(
            LoraTarget::parse_list("q,x"),
            Err(PassError::Usage(_))
        ));
        assert!(matches!(
            LoraTarget::parse_list(""),
            Err(PassError::Usage(_))
        ));
    }

    #[test]
    fn splitmix_matches_the_reference_stream() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }
}
