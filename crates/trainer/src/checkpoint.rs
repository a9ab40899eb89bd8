//! Checkpoints (`docs/training.md`): model weights as safetensors, the optimiser moments as a
//! second safetensors file, and a small JSON record (step, seed, loss, best AbsRel, train time, file checksums; the step and seed fix the data position).
//!
//! A save is journalled so that a kill at any instant leaves one whole checkpoint:
//! 1. each tensor file is written atomically (to `<file>.tmp`, fsync, rename, fsync the folder)
//!    as `<file>.next`, beside the current `<file>`;
//! 2. the JSON record, naming the checksums (64-bit FNV-1a) of the new tensor files, is written
//!    atomically over the old record: this rename is the commit;
//! 3. each `<file>.next` is renamed over `<file>`.
//!
//! A kill before 2 leaves the old record and the old files, which agree. A kill between 2 and 3
//! leaves a record whose checksums match the `.next` files: the loader finishes step 3 (rolls
//! forward) and loads them. Anything else that disagrees with the record (truncation, bit rot) is
//! refused with a message, instead of resuming from garbage, and a refused file is never written
//! over by the loader.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::fs::{FileError, file_error, rename_durable, tmp_path, write_atomic};

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

/// Serialises named tensors to safetensors bytes (through a temp file beside `scratch`: tch
/// writes to paths).
pub fn safetensors_bytes(
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

/// Every variable of `vs`, detached, on the CPU, sorted by name: what a weights file holds.
pub fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
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
    write_atomic(&next_path(&paths.weights), &weights)?;
    state.optimizer_checksum = match optimizer {
        Some(tensors) => {
            let cpu: Vec<(String, Tensor)> = tensors
                .into_iter()
                .map(|(n, t)| (n, t.to_device(tch::Device::Cpu)))
                .collect();
            let bytes = safetensors_bytes(&cpu, &paths.optimizer)?;
            write_atomic(&next_path(&paths.optimizer), &bytes)?;
            Some(fnv1a64(&bytes))
        }
        None => None,
    };
    let json = serde_json::to_vec_pretty(&state).map_err(|e| CheckpointError::Parse {
        path: paths.record.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&paths.record, &json)?;
    publish(&paths.weights)?;
    if state.optimizer_checksum.is_some() {
        publish(&paths.optimizer)?;
    }
    Ok(state)
}

/// `<file>.next`: where a save writes a tensor file before its record commits it.
pub fn next_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".next");
    path.with_file_name(name)
}

/// Step 3 of a save: renames the committed `<file>.next` over `<file>` and makes it durable.
fn publish(path: &Path) -> Result<(), FileError> {
    rename_durable(&next_path(path), path)
}

/// Reads a checkpoint's record.
pub fn read_state(paths: &CheckpointPaths) -> Result<TrainState, CheckpointError> {
    let bytes = std::fs::read(&paths.record).map_err(file_error("read", &paths.record))?;
    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Parse {
        path: paths.record.clone(),
        message: e.to_string(),
    })
}

/// Reads a tensor file after checking its checksum against the record; when the file disagrees
/// but its `.next` matches, a save was killed after its commit, and the `.next` is published.
fn read_checked(path: &Path, expected: u64) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(file_error("read", path))?;
    let found = fnv1a64(&bytes);
    drop(bytes);
    if found != expected {
        let next = next_path(path);
        let committed = std::fs::read(&next).is_ok_and(|b| fnv1a64(&b) == expected);
        if !committed {
            return Err(CheckpointError::Checksum {
                path: path.into(),
                expected,
                found,
            });
        }
        publish(path)?;
    }
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
    load_weights(vs, tensors, &paths.weights)?;
    Ok((state, optimizer))
}

/// Loads tensors with our names into `vs` through the strict loader shared with checkpoint
/// imports: nothing is copied unless every variable is present with its shape, and the error
/// lists every problem at once, naming `path`.
pub fn load_weights(
    vs: &mut nn::VarStore,
    tensors: NamedTensors,
    path: &Path,
) -> Result<(), CheckpointError> {
    glassbox_decoder::checkpoint::load_named_tensors(
        vs,
        tensors,
        &path.display().to_string(),
        |name| Some(name.to_string()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(value: f64) -> nn::VarStore {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _ = vs
            .root()
            .var("w", &[3], nn::Init::Const(value))
            .set_requires_grad(false);
        vs
    }

    fn state(step: usize) -> TrainState {
        TrainState {
            step,
            seed: 7,
            loss: 0.5,
            best_abs_rel: None,
            best_miou: None,
            seconds: 0.0,
            weights_checksum: 0,
            optimizer_checksum: None,
        }
    }

    fn loaded(paths: &CheckpointPaths) -> (usize, f64) {
        let mut vs = store(0.0);
        let (state, _) = load(paths, &mut vs).unwrap();
        let w = vs.variables()["w"].double_value(&[0]);
        (state.step, w)
    }

    #[test]
    fn a_save_killed_after_its_commit_rolls_forward_and_one_killed_before_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CheckpointPaths::new(dir.path(), "last");
        save(&paths, &store(1.0), None, &state(1)).unwrap();
        let first = std::fs::read(&paths.weights).unwrap();
        save(&paths, &store(2.0), None, &state(2)).unwrap();
        assert!(!next_path(&paths.weights).exists());

        // Killed between the record's rename (the commit) and the publishing rename.
        std::fs::rename(&paths.weights, next_path(&paths.weights)).unwrap();
        std::fs::write(&paths.weights, &first).unwrap();
        assert_eq!(loaded(&paths), (2, 2.0));
        assert!(!next_path(&paths.weights).exists());

        // Killed while writing the next files, before the commit: the old checkpoint stands.
        std::fs::write(next_path(&paths.weights), b"half a safetensors file").unwrap();
        assert_eq!(loaded(&paths), (2, 2.0));

        // A weights file that matches neither the record nor a committed .next is refused as it is.
        std::fs::write(&paths.weights, &first).unwrap();
        let err = load(&paths, &mut store(0.0)).unwrap_err().to_string();
        assert!(err.contains("corrupted or truncated"), "{err}");
        assert_eq!(std::fs::read(&paths.weights).unwrap(), first);
    }
}
