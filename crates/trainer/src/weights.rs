//! Model files from and for elsewhere (`docs/checkpoints.md`). A model file is one of:
//! - a run checkpoint, `<run>/last.safetensors` or `best.safetensors`, rebuilt from the run
//!   folder's `config.toml` and checked against its record;
//! - one of our single-file exports: our tensor names, the resolved run config (TOML) in the
//!   safetensors metadata under [`CONFIG_METADATA_KEY`], so the file alone rebuilds the model;
//! - an HF folder (`config.json` + `model.safetensors` of a `DPTForDepthEstimation` or
//!   `DPTForSemanticSegmentation`), read through glassbox-dpt's rename table.
//!
//! `glassbox train --init`, `eval` and `predict` open all three through [`ModelFile::open`];
//! `glassbox export` writes the last two. Every load is strict: each variable present with its
//! shape, nothing copied otherwise, every mismatch listed by name and shape.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use glassbox_dpt::{DptConfig, DptError};
use tch::{Tensor, nn};

use crate::checkpoint::{self, CheckpointError, CheckpointPaths};
use crate::config::{ConfigError, TrainConfig};
use crate::fs::{FileError, file_error, write_atomic};

/// The safetensors metadata key that holds a single-file export's run config (TOML).
pub const CONFIG_METADATA_KEY: &str = "glassbox.config";
/// The metadata key that says which glassbox wrote the file.
const VERSION_METADATA_KEY: &str = "glassbox.version";
/// Safetensors headers beyond this many bytes are refused before they are read.
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Everything that stops reading or writing a model file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(
        "{0} is neither a run checkpoint (a .safetensors file beside its run's config.toml), a \
         glassbox export (config in its metadata) nor an HF folder (config.json + \
         model.safetensors)"
    )]
    Unknown(PathBuf),
    #[error("model file {path}: {message}")]
    Bad { path: PathBuf, message: String },
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Model(#[from] DptError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Where a model's weights and configuration come from.
#[derive(Clone, Debug)]
pub enum ModelFile {
    /// A checkpoint in a run folder.
    Run {
        weights: PathBuf,
        config: TrainConfig,
    },
    /// One of our single-file exports.
    Single { path: PathBuf, config: TrainConfig },
    /// An HF `DPTForDepthEstimation` / `DPTForSemanticSegmentation` folder.
    Hf { dir: PathBuf, model: DptConfig },
}

impl ModelFile {
    /// Recognises `path` (a folder with `config.json` is HF's; a file whose safetensors metadata
    /// holds a config is an export; any other file must sit in a run folder) and reads its
    /// configuration; the weights are read by [`ModelFile::load`].
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        if path.is_dir() {
            let json = path.join("config.json");
            if !json.is_file() || !path.join("model.safetensors").is_file() {
                return Err(WeightsError::Unknown(path.into()));
            }
            let text = std::fs::read_to_string(&json).map_err(file_error("read", &json))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| WeightsError::Bad {
                    path: json.clone(),
                    message: format!("not JSON: {e}"),
                })?;
            let model = DptConfig::from_hf_config(&value).map_err(|e| WeightsError::Bad {
                path: json.clone(),
                message: e.to_string(),
            })?;
            return Ok(Self::Hf {
                dir: path.into(),
                model,
            });
        }
        if !path.is_file() {
            return Err(WeightsError::Unknown(path.into()));
        }
        if let Some(text) = read_metadata(path)?.remove(CONFIG_METADATA_KEY) {
            let config = TrainConfig::from_toml(&text).map_err(|e| WeightsError::Bad {
                path: path.into(),
                message: format!("the embedded config does not parse: {e}"),
            })?;
            return Ok(Self::Single {
                path: path.into(),
                config,
            });
        }
        let run_config = path.parent().unwrap_or(Path::new(".")).join("config.toml");
        if !run_config.is_file() {
            return Err(WeightsError::Unknown(path.into()));
        }
        let config = TrainConfig::from_run_file(&run_config)?;
        Ok(Self::Run {
            weights: path.into(),
            config,
        })
    }

    /// The model these weights belong to.
    pub fn model_config(&self) -> &DptConfig {
        match self {
            Self::Run { config, .. } | Self::Single { config, .. } => &config.model,
            Self::Hf { model, .. } => model,
        }
    }

    /// The run configuration to predict and evaluate with: the saved one, or for an HF folder
    /// the `default` preset around HF's model at its square `image_size`.
    pub fn train_config(&self) -> Result<TrainConfig, WeightsError> {
        match self {
            Self::Run { config, .. } | Self::Single { config, .. } => Ok(config.clone()),
            Self::Hf { dir, model } => {
                let mut config = TrainConfig::preset("default")?;
                config.name = dir
                    .file_name()
                    .map_or_else(|| "hf".into(), |n| n.to_string_lossy().into_owned());
                let side = model.encoder.image_size as usize;
                config.data.image_size = [side, side];
                let classes = match &model.head {
                    glassbox_dpt::HeadConfig::Segmentation(seg) => Some(seg.num_classes as usize),
                    glassbox_dpt::HeadConfig::Depth {} => None,
                };
                if let Some(k) = classes {
                    config.set_task(crate::config::Task::Segmentation, Some(k))?;
                }
                config.model = model.clone();
                Ok(config)
            }
        }
    }

    /// The file or folder, for messages.
    pub fn path(&self) -> &Path {
        match self {
            Self::Run { weights: p, .. }
            | Self::Single { path: p, .. }
            | Self::Hf { dir: p, .. } => p,
        }
    }

    /// What kind of model file this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Run { .. } => "run checkpoint",
            Self::Single { .. } => "glassbox export",
            Self::Hf { .. } => "HF folder",
        }
    }

    /// Loads the weights into `vs`, which holds a model of [`ModelFile::model_config`] (or one
    /// with the same tensors). Nothing is copied unless every tensor fits; the error lists every
    /// missing, unexpected and wrong-shape tensor.
    pub fn load(&self, vs: &mut nn::VarStore) -> Result<(), WeightsError> {
        match self {
            Self::Run { weights, .. } => {
                checkpoint::load(&CheckpointPaths::for_weights(weights), vs)?;
            }
            Self::Single { path, .. } => {
                let tensors = Tensor::read_safetensors(path).map_err(|e| WeightsError::Bad {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                checkpoint::load_weights(vs, tensors, path)?;
            }
            Self::Hf { dir, .. } => {
                glassbox_dpt::import::load_hf_dpt(vs, dir.join("model.safetensors"))?;
            }
        }
        Ok(())
    }
}

/// Writes the model in `vs` (built from `config.model`) as an HF folder: `model.safetensors`
/// with HF's names and `config.json`, both atomically. Returns the two paths.
pub fn export_hf(
    vs: &nn::VarStore,
    config: &TrainConfig,
    dir: &Path,
) -> Result<[PathBuf; 2], WeightsError> {
    let json = glassbox_dpt::export::hf_config(&config.model, &config.class_names())?;
    let tensors = glassbox_dpt::export::hf_state_dict(vs, &config.model)?;
    std::fs::create_dir_all(dir).map_err(file_error("create", dir))?;
    let weights = dir.join("model.safetensors");
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    write_atomic(
        &weights,
        &with_metadata(
            checkpoint::safetensors_bytes(&tensors, &weights)?,
            &metadata,
        )?,
    )?;
    let config_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| WeightsError::Bad {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&config_path, text.as_bytes())?;
    Ok([weights, config_path])
}

/// Writes the model in `vs` as one safetensors file with our names and `config` (TOML) in its
/// metadata, atomically.
pub fn export_single(
    vs: &nn::VarStore,
    config: &TrainConfig,
    path: &Path,
) -> Result<(), WeightsError> {
    let tensors = checkpoint::sorted_variables(vs);
    let toml = config.to_toml()?;
    let mut metadata = BTreeMap::new();
    metadata.insert(CONFIG_METADATA_KEY.to_string(), toml);
    metadata.insert(
        VERSION_METADATA_KEY.to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(file_error("create", dir))?;
    }
    let bytes = with_metadata(checkpoint::safetensors_bytes(&tensors, path)?, &metadata)?;
    write_atomic(path, &bytes)?;
    Ok(())
}

/// Safetensors bytes with `metadata` in the header's `__metadata__` (the tensors' offsets are
/// relative to the data, so only the header changes; it stays padded to 8 bytes).
fn with_metadata(
    bytes: Vec<u8>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, WeightsError> {
    let bad = |message: String| WeightsError::Bad {
        path: PathBuf::from("<safetensors in memory>"),
        message,
    };
    let n = u64::from_le_bytes(
        bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("shorter than a header".into()))?,
    ) as usize;
    let header = bytes
        .get(8..8 + n)
        .ok_or_else(|| bad("header runs past the end".into()))?;
    let mut json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| bad(e.to_string()))?;
    json.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata).map_err(|e| bad(e.to_string()))?,
    );
    let mut header = serde_json::to_vec(&json).map_err(|e| bad(e.to_string()))?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// The `__metadata__` of a safetensors file (empty when it has none), reading only the header.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>, WeightsError> {
    let bad = |message: String| WeightsError::Bad {
        path: path.into(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(file_error("open", path))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| {
        bad("is not a safetensors file: shorter than its 8-byte header length".into())
    })?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "is not a safetensors file: its header would be {n} bytes"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|_| bad(format!("is truncated: its {n}-byte header is cut short")))?;
    let json: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
        bad(format!(
            "is not a safetensors file: its header is not JSON ({e})"
        ))
    })?;
    let Some(meta) = json.get("__metadata__") else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_value(meta.clone())
        .map_err(|e| bad(format!("its __metadata__ is not a map of strings ({e})")))
}
