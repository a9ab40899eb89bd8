//! Checkpoints (`docs/training.md`): model weights as safetensors, the optimiser moments as a
//! second safetensors file, and a small JSON record (step, seed, loss, best AbsRel, train time, file checksums; the step and seed fix the data position).
//!
//! Every file is written atomically: to `<file>.tmp`, fsync, rename over the old file, fsync the
//! folder. The JSON record is renamed last and names the checksums (64-bit FNV-1a) of the two
//! tensor files, so a reader detects a truncated or corrupted checkpoint (or a crash between the
//! renames) and refuses it with a message, instead of resuming from garbage. A refused checkpoint
//! is never written over by the loader.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::fs::{FileError, file_error, tmp_path, write_atomic};

/// Everything that can go wrong reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(
        "checkpoint {path} is corrupted or truncated: checksum {found:016x}, the record says \
         {expected:016x}; refusing to load it (the file was left as it is)"
    )]
    Checksum {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("checkpoint {path} cannot be parsed: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    Weights(#[from] glassbox_decoder::checkpoint::CheckpointError),
}

/// Tensors with their names, as safetensors files hold them.
pub type NamedTensors = Vec<(String, Tensor)>;

/// The JSON record beside the weights: where training stands and how to check the files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser updates done; training continues with this step.
    pub step: usize,
    /// The run seed; with `step` it fixes every later random draw (batches, flips, torch RNG).
    pub seed: u64,
    /// Training loss of the last update.
    pub loss: f64,
    /// Best validation AbsRel so far (median-scaled), if a depth run was evaluated.
    pub best_abs_rel: Option<f64>,
    /// Best validation mIoU so far, if a segmentation run was evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_miou: Option<f64>,
    /// Wall time spent training up to this checkpoint, over all invocations (0 in checkpoints
    /// written before it was recorded).
    #[serde(default)]
    pub seconds: f64,
    /// FNV-1a 64 of the weights file.
    pub weights_checksum: u64,
    /// FNV-1a 64 of the optimiser file (absent for `best`, which holds weights only).
    pub optimizer_checksum: Option<u64>,
}

/// The three files of checkpoint `stem` (`last` or `best`) in a run folder.
#[derive(Clone, Debug)]
pub struct CheckpointPaths {
    pub weights: PathBuf,
    pub optimizer: PathBuf,
    pub record: PathBuf,
}

impl CheckpointPaths {
    /// `<dir>/<stem>.safetensors`, `<dir>/<stem>.optim.safetensors`, `<dir>/<stem>.json`.
    pub fn new(dir: &Path, stem: &str) -> Self {
        Self {
            weights: dir.join(format!("{stem}.safetensors")),
            optimizer: dir.join(format!("{stem}.optim.safetensors")),
            record: dir.join(format!("{stem}.json")),
        }
    }

    /// The paths that belong to a weights file `.../<stem>.safetensors`.
    pub fn for_weights(weights: &Path) -> Self {
        let dir = weights.parent().unwrap_or(Path::new("."));
        let stem = weights
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".safetensors"))
            .unwrap_or("last");
        Self::new(dir, stem)
    }
}

/// 64-bit FNV-1a of a byte string: a cheap check against truncation and bit rot (not against
/// tampering).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Serialises named tensors to safetensors bytes (through a temp file: tch writes to paths).
fn safetensors_bytes(
    tensors: &[(String, Tensor)],
    scratch: &Path,
) -> Result<Vec<u8>, CheckpointError> {
    let contiguous: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.contiguous()))
        .collect();
    let refs: Vec<(&str, &Tensor)> = contiguous.iter().map(|(n, t)| (*n, t)).collect();
    let tmp = tmp_path(scratch);
    Tensor::write_safetensors(&refs, &tmp).map_err(|e| FileError::new("write", &tmp, e))?;
    let bytes = std::fs::read(&tmp).map_err(file_error("read back", &tmp))?;
    std::fs::remove_file(&tmp).map_err(file_error("remove", &tmp))?;
    Ok(bytes)
}

fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(tch::Device::Cpu)))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Saves the model (and, when given, the optimiser state) as checkpoint `paths`; the record is
/// written last, so a crash before it leaves the previous checkpoint's record, whose checksums
/// then reject the half-written files rather than mixing them.
pub fn save(
    paths: &CheckpointPaths,
    vs: &nn::VarStore,
    optimizer: Option<Vec<(String, Tensor)>>,
    state: &TrainState,
) -> Result<TrainState, CheckpointError> {
    let weights = safetensors_bytes(&sorted_variables(vs), &paths.weights)?;
    let mut state = state.clone();
    state.weights_checksum = fnv1a64(&weights);
    write_atomic(&paths.weights, &weights)?;
    state.optimizer_checksum = match optimizer {
        Some(tensors) => {
            let cpu: Vec<(String, Tensor)> = tensors
                .into_iter()
                .map(|(n, t)| (n, t.to_device(tch::Device::Cpu)))
                .collect();
            let bytes = safetensors_bytes(&cpu, &paths.optimizer)?;
            write_atomic(&paths.optimizer, &bytes)?;
            Some(fnv1a64(&bytes))
        }
        None => None,
    };
    let json = serde_json::to_vec_pretty(&state).map_err(|e| CheckpointError::Parse {
        path: paths.record.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&paths.record, &json)?;
    Ok(state)
}

/// Reads a checkpoint's record.
pub fn read_state(paths: &CheckpointPaths) -> Result<TrainState, CheckpointError> {
    let bytes = std::fs::read(&paths.record).map_err(file_error("read", &paths.record))?;
    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Parse {
        path: paths.record.clone(),
        message: e.to_string(),
    })
}

/// Reads a tensor file after checking its checksum against the record.
fn read_checked(path: &Path, expected: u64) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(file_error("read", path))?;
    let found = fnv1a64(&bytes);
    if found != expected {
        return Err(CheckpointError::Checksum {
            path: path.into(),
            expected,
            found,
        });
    }
    drop(bytes);
    Tensor::read_safetensors(path).map_err(|e| CheckpointError::Parse {
        path: path.into(),
        message: e.to_string(),
    })
}

/// Loads checkpoint weights into `vs` (every variable must be present with its shape; nothing is
/// copied unless all fit) and returns the record and the optimiser tensors (if saved).
pub fn load(
    paths: &CheckpointPaths,
    vs: &mut nn::VarStore,
) -> Result<(TrainState, Option<NamedTensors>), CheckpointError> {
    let state = read_state(paths)?;
    let tensors = read_checked(&paths.weights, state.weights_checksum)?;
    let optimizer = match state.optimizer_checksum {
        Some(sum) => Some(read_checked(&paths.optimizer, sum)?),
        None => None,
    };
    // The strict loader shared with checkpoint imports: nothing is copied unless every variable
    // is present with its shape, and the error lists every problem at once.
    glassbox_decoder::checkpoint::load_named_tensors(
        vs,
        tensors,
        &paths.weights.display().to_string(),
        |name| Some(name.to_string()),
    )?;
    Ok((state, optimizer))
}
