//! Checkpoints: the trainable parameters, their AdamW moments, the data
//! cursor and the run's history, written so that a killed run resumes exactly.
//!
//! Layout of `DIR/checkpoint/`: `trainer.safetensors` (per parameter `NAME`,
//! `NAME.adam_m`, `NAME.adam_v`, f32) and `state.json` (counters, cursor,
//! settings, history). A checkpoint is written into a fresh temporary folder
//! and renamed into place; the previous one is moved aside first and removed
//! last, so at every instant one complete checkpoint exists, and a reader that
//! finds only the moved-aside one uses it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, serialize, tensor::TensorView};
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::optim::Moments;
use super::trainer::{Param, StepReport, TrainConfig};
use crate::data::Cursor;

/// The checkpoint folder's name inside a run's output folder.
pub const CHECKPOINT_DIR: &str = "checkpoint";
const TENSORS: &str = "trainer.safetensors";
const STATE: &str = "state.json";
const FORMAT: u32 = 1;

/// Everything a resumed run needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Parameters with their moments.
    pub params: Vec<Param>,
    /// The run's counters, cursor, settings and history.
    pub state: RunState,
}

/// The JSON half of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Format version of the checkpoint.
    pub format: u32,
    /// Updates done (skipped ones included).
    pub step: u64,
    /// Updates applied (AdamW's bias-correction count).
    pub updates: u64,
    /// Updates skipped for bad numerics.
    pub bad_steps: u64,
    /// Where the data loader stands.
    pub cursor: Cursor,
    /// The run's settings; a resume must use the same.
    pub config: TrainConfig,
    /// What identifies the model and data (checked on resume).
    pub fingerprint: String,
    /// Every update's report so far.
    pub history: Vec<StepReport>,
    /// Held-out evaluations so far: `(step, loss)`.
    pub heldout: Vec<(u64, f64)>,
}

impl RunState {
    /// A fresh state at step 0.
    pub fn new(config: TrainConfig, fingerprint: String) -> RunState {
        RunState {
            format: FORMAT,
            step: 0,
            updates: 0,
            bad_steps: 0,
            cursor: Cursor { epoch: 0, index: 0 },
            config,
            fingerprint,
            history: Vec::new(),
            heldout: Vec::new(),
        }
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint(format!("{}: {e}", path.display()))
}

/// Writes `ckpt` as `out/checkpoint/`, atomically (see the module docs).
/// Refuses non-finite parameters: a NaN checkpoint is never written.
pub fn save_checkpoint(out: &Path, ckpt: &Checkpoint) -> Result<(), TrainError> {
    if let Some(p) = ckpt
        .params
        .iter()
        .find(|p| !p.value.iter().all(|v| v.is_finite()))
    {
        return Err(TrainError::Checkpoint(format!(
            "parameter `{}` is not finite; refusing to write a checkpoint",
            p.name
        )));
    }
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for p in &ckpt.params {
        for (suffix, data) in [
            ("", &p.value),
            (".adam_m", &p.moments.m),
            (".adam_v", &p.moments.v),
        ] {
            let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            owned.push((format!("{}{suffix}", p.name), p.shape.clone(), bytes));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| TrainError::Checkpoint(format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let tensors = serialize(views, None).map_err(|e| TrainError::Checkpoint(e.to_string()))?;
    let state = serde_json::to_vec_pretty(&ckpt.state)
        .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let fin = out.join(CHECKPOINT_DIR);
    let tmp = out.join(format!(".{CHECKPOINT_DIR}.tmp{}", std::process::id()));
    let old = out.join(format!("{CHECKPOINT_DIR}.old"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let write = |name: &str, data: &[u8]| -> Result<(), TrainError> {
        let path = tmp.join(name);
        let mut f = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
        std::io::Write::write_all(&mut f, data).map_err(|e| io(&path, e))?;
        f.sync_all().map_err(|e| io(&path, e))
    };
    write(TENSORS, &tensors)?;
    write(STATE, &state)?;
    if fin.exists() {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&fin, &old).map_err(|e| io(&fin, e))?;
    }
    std::fs::rename(&tmp, &fin).map_err(|e| io(&fin, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Reads `out/checkpoint/` (or the moved-aside `checkpoint.old` of an
/// interrupted save); `Ok(None)` when neither exists.
pub fn load_checkpoint(out: &Path) -> Result<Option<Checkpoint>, TrainError> {
    let dir = [CHECKPOINT_DIR.to_string(), format!("{CHECKPOINT_DIR}.old")]
        .into_iter()
        .map(|n| out.join(n))
        .find(|d| d.join(STATE).is_file());
    let Some(dir) = dir else { return Ok(None) };
    let read = |name: &str| -> Result<Vec<u8>, TrainError> {
        let p: PathBuf = dir.join(name);
        std::fs::read(&p).map_err(|e| io(&p, e))
    };
    let state: RunState =
        serde_json::from_slice(&read(STATE)?).map_err(|e| io(&dir.join(STATE), e))?;
    if state.format != FORMAT {
        return Err(TrainError::Checkpoint(format!(
            "{}: format {} is not {FORMAT}",
            dir.display(),
            state.format
        )));
    }
    let bytes = read(TENSORS)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| io(&dir.join(TENSORS), e))?;
    let mut by_name: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(io(&dir.join(TENSORS), format!("`{name}` is not f32")));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        by_name.insert(name, (view.shape().to_vec(), data));
    }
    let mut names: Vec<&String> = by_name
        .keys()
        .filter(|n| !n.ends_with(".adam_m") && !n.ends_with(".adam_v"))
        .collect();
    names.sort();
    let mut params = Vec::with_capacity(names.len());
    for name in names {
        let take = |suffix: &str| {
            by_name
                .get(&format!("{name}{suffix}"))
                .cloned()
                .ok_or_else(|| io(&dir.join(TENSORS), format!("`{name}{suffix}` is missing")))
        };
        let (shape, value) = take("")?;
        let (_, m) = take(".adam_m")?;
        let (_, v) = take(".adam_v")?;
        if m.len() != value.len() || v.len() != value.len() {
            return Err(io(
                &dir.join(TENSORS),
                format!("`{name}` moments differ in size"),
            ));
        }
        params.push(Param {
            name: name.clone(),
            shape,
            value,
            moments: Moments { m, v },
        });
    }
    Ok(Some(Checkpoint { params, state }))
}
