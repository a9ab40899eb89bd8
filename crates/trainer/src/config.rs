//! Run configuration (`docs/training.md`): one serde struct, named presets in code, a TOML file
//! that overrides a preset, and command-line overrides on top. The resolved configuration is
//! written to `runs/<name>/config.toml`, so `eval` and `predict` can rebuild the model of any
//! checkpoint from its run folder.
//!
//! Presets:
//! - `default`: dpt-tiny on synthetic indoor scenes at 64 x 64, 600 steps, sized to finish on a
//!   2-core CPU in about four minutes;
//! - `pretrain-synthetic`: dpt-tiny on 4096 rendered rooms and streets at 128 x 128, the
//!   checkpoint the real-data presets start from with `--init`;
//! - `sevenscenes`: dpt-tiny on 7-Scenes redkitchen (frames 0-499 train, 500-599 validation);
//! - `nyu`, `kitti`: the same model on NYU-v2 (sync layout) and KITTI (annotated depth), each
//!   with its depth cap and crop (`--data-root` for a full dataset; the defaults read the samples);
//! - `segmentation`: dpt-tiny segmenting rendered indoor scenes into the renderer's classes at
//!   128 x 128 (an 8 x 8 patch grid, so objects span several patches);
//! - `test`: the dpt-test model (4 layers, D 32) at 64 x 64 for the crate's tests.
//!
//! Every struct refuses unknown keys, so a misspelled key in a TOML file is an error naming the
//! key and the file.
//!
//! Learning rates: DPT's 1e-5 (backbone) / 1e-4 (decoder) are fine-tuning values for a
//! pretrained backbone. The presets train from scratch, where 1e-5 barely moves the backbone, so
//! they use 3e-4 / 6e-4; both remain separate, configurable knobs.

use std::path::{Path, PathBuf};

use glassbox_attention::AttentionKind;
use glassbox_data::{AugmentConfig, SceneKind, SourceConfig};
use glassbox_decoder::{SegmentationDecoder, SegmentationHeadConfig};
use glassbox_dpt::{DptConfig, HeadConfig};
use glassbox_losses::{DisparityToDepth, LossConfig, SegmentationLoss};
use glassbox_metrics::Crop;
use serde::{Deserialize, Serialize};

/// Everything that can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown run preset {0:?}; known: {known}", known = RUN_PRESETS.join(", "))]
    UnknownPreset(String),
    #[error("cannot read config {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot write config {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("invalid config: {field} = {value} ({expected})")]
    Invalid {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(transparent)]
    Model(#[from] glassbox_dpt::DptError),
    #[error(transparent)]
    Loss(#[from] glassbox_losses::LossError),
    /// A configuration file that parses but does not validate: the file, then what is wrong.
    #[error("config {path}: {source}")]
    InFile {
        path: PathBuf,
        source: Box<ConfigError>,
    },
    #[error("data: {0}")]
    Data(#[from] glassbox_data::DataError),
    /// Starting weights that cannot be used; `message` already names the file.
    #[error("{message}")]
    Init { path: PathBuf, message: String },
}

/// Names accepted by [`TrainConfig::preset`].
pub const RUN_PRESETS: &[&str] = &[
    "default",
    "pretrain-synthetic",
    "sevenscenes",
    "nyu",
    "kitti",
    "segmentation",
    "test",
];

/// What a run predicts; it follows from the model's head, and the loss, evaluation, report and
/// predictions follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Relative or metric depth from the depth head.
    Depth,
    /// Per-pixel classes from the segmentation head or DEPICT.
    Segmentation,
}

impl Task {
    /// The name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Task::Depth => "depth",
            Task::Segmentation => "segmentation",
        }
    }
}

impl std::str::FromStr for Task {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "depth" => Ok(Task::Depth),
            "segmentation" => Ok(Task::Segmentation),
            _ => Err(format!(
                "unknown task {s:?}; expected depth or segmentation"
            )),
        }
    }
}

/// Which images a run trains and validates on, and how they are batched. Every source goes
/// through glassbox-data's one streaming loader (`docs/data.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The training images.
    pub train: SourceConfig,
    /// The validation images; without it, the last `holdout` samples of `train` (a contiguous
    /// block, so neighbouring frames of a sequence do not leak across).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<SourceConfig>,
    /// Size of the held-out block when `val` is absent; 0 = a tenth of the samples, 1 to 100.
    #[serde(default)]
    pub holdout: usize,
    /// Training and validation image size [height, width] (multiples of 16).
    pub image_size: [usize; 2],
    /// Training augmentation (random crop, flip, colour jitter).
    #[serde(default)]
    pub augment: AugmentConfig,
    /// Batches prepared ahead of the training step.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Threads decoding or rendering samples beside the model's own threads.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Budget of the decoded-sample cache in MiB (0 = off): small datasets are decoded once,
    /// large ones stream and stay within this bound.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: usize,
    /// Skip and count samples that fail to load, instead of stopping the run.
    #[serde(default)]
    pub skip_bad: bool,
}

fn default_prefetch() -> usize {
    4
}
fn default_workers() -> usize {
    1
}
fn default_cache_mb() -> usize {
    256
}

/// Optimiser and schedule (AdamW, linear warm-up then cosine decay to `min_lr_ratio`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub steps: usize,
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed before one update.
    pub accumulate: usize,
    /// Learning rate of the `encoder.*` variables.
    pub lr_backbone: f64,
    /// Learning rate of the decoder and head.
    pub lr_decoder: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub warmup_steps: usize,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// Global gradient-norm clip; 0 disables clipping.
    pub clip_grad_norm: f64,
}

/// How the model's disparity output is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSettings {
    /// `midas` trains disparity against 1 / depth; `silog` trains the depth `to_depth` gives.
    pub loss: LossConfig,
    pub to_depth: DisparityToDepth,
    /// Weight of a scale-only disparity term added to the MiDaS loss, `mean |x / mean(x) - d /
    /// mean(d)|` per image on valid pixels. MiDaS leaves the prediction's shift free, so
    /// `1 / x` is not depth up to scale; this term pins the shift to zero, which median-scaled
    /// evaluation needs (0 = plain MiDaS).
    #[serde(default)]
    pub scale_only_weight: f64,
}

/// Periodic evaluation, logging and checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Evaluate every this many steps (and at the end); 0 = only at the end.
    pub eval_every: usize,
    /// Write `last.safetensors` every this many steps (and at the end); 0 = only at the end.
    pub checkpoint_every: usize,
    /// Write a `metrics.jsonl` line every this many steps.
    pub log_every: usize,
    /// Depth range of the evaluation in metres.
    pub min_depth: f64,
    pub max_depth: f64,
    /// Images in the report's contact sheet.
    pub sheet_images: usize,
    /// Run the spectral probe (`docs/spectral.md`) before training, every this many steps and
    /// at the end, appending to `spectral.jsonl`; 0 = off.
    #[serde(default)]
    pub spectral_every: usize,
    /// Encoder layer (1-based, as the overlays number them) whose attention the probe's "over
    /// training" strip follows; absent: the last layer, the one that feeds the decoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_layer: Option<usize>,
    /// Region of the validation images that is scored: `None` (all), or `Garg` for KITTI-shaped
    /// images (fractions of the size, so it applies at the training size). NYU's Eigen crop is
    /// defined on 480 x 640 only: `glassbox eval` applies it at full resolution.
    #[serde(default)]
    pub eval_crop: Crop,
}

/// A whole run: model, data, optimiser, loss and schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub name: String,
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Intra-op threads; 0 = the number of physical cores.
    pub threads: usize,
    pub data: DataConfig,
    pub optim: OptimConfig,
    pub loss: LossSettings,
    pub schedule: ScheduleConfig,
    pub model: DptConfig,
    /// Starting weights for a fresh run (`--init`): a run checkpoint, a glassbox export or an HF
    /// `DPTForDepthEstimation` folder (`docs/checkpoints.md`); `model` is that file's model.
    /// `--resume` wins over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// A timm ViT safetensors loaded into the encoder of a fresh run after `init`
    /// (`--backbone-weights`), its position embeddings resized to the model's grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone_weights: Option<PathBuf>,
    /// Data-parallel settings (`docs/distributed.md`); `optim.batch_size` is per process.
    #[serde(default)]
    pub distributed: DistributedConfig,
}

/// How a data-parallel run (`glassbox train --nproc N`, or N processes started with torchrun's
/// variables) communicates. `optim.batch_size` is each process's batch, so the effective batch
/// of an update is `batch_size x accumulate x world_size`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedConfig {
    /// Processes that trained the run; set from the launch (`WORLD_SIZE`) and recorded in the
    /// run's config.toml, so that the folder says how its batch was formed.
    #[serde(default = "one")]
    pub world_size: usize,
    /// Seconds any collective (and the rendezvous) may wait before the run stops with an error
    /// naming the operation; rank 0's validation, probes and checkpoints happen while the
    /// others wait, so it must exceed them.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Cap of one gradient bucket in MiB (DDP's default 25): gradients travel as a few flat
    /// all-reduces of at most this size.
    #[serde(default = "default_bucket_mb")]
    pub bucket_mb: usize,
}

fn one() -> usize {
    1
}

fn default_timeout_s() -> f64 {
    600.0
}

fn default_bucket_mb() -> usize {
    25
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self {
            world_size: 1,
            timeout_s: default_timeout_s(),
            bucket_mb: default_bucket_mb(),
        }
    }
}

impl TrainConfig {
    /// A named preset (see the module docs).
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        match name {
            "default" => Ok(Self::default_synthetic()),
            "pretrain-synthetic" => Ok(Self::pretrain_synthetic()),
            "sevenscenes" => Ok(Self::seven_scenes(default_seven_scenes_root())),
            "nyu" => Ok(Self::nyu(real_data_root().join("nyu-sync-samples"))),
            "kitti" => Ok(Self::kitti(real_data_root().join("kitti-samples"))),
            "segmentation" => Ok(Self::segmentation()),
            "test" => Ok(Self::test()),
            _ => Err(ConfigError::UnknownPreset(name.to_string())),
        }
    }

    fn default_synthetic() -> Self {
        Self {
            name: "default".into(),
            seed: 0,
            device: "auto".into(),
            threads: 0,
            data: DataConfig {
                train: synthetic_indoor(512, 0),
                val: Some(synthetic_indoor(64, VAL_SCENE_SEED)),
                holdout: 0,
                image_size: [64, 64],
                augment: AugmentConfig {
                    hflip: true,
                    ..AugmentConfig::none()
                },
                prefetch: default_prefetch(),
                workers: default_workers(),
                cache_mb: default_cache_mb(),
                skip_bad: false,
            },
            optim: OptimConfig {
                steps: 600,
                batch_size: 8,
                accumulate: 1,
                lr_backbone: 3e-4,
                lr_decoder: 6e-4,
                weight_decay: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                warmup_steps: 30,
                min_lr_ratio: 0.02,
                clip_grad_norm: 1.0,
            },
            loss: LossSettings {
                loss: LossConfig::default(),
                to_depth: DisparityToDepth::default(),
                scale_only_weight: 1.0,
            },
            schedule: ScheduleConfig {
                eval_every: 200,
                checkpoint_every: 200,
                log_every: 10,
                min_depth: 1e-3,
                max_depth: 10.0,
                sheet_images: 4,
                spectral_every: 50,
                strip_layer: None,
                eval_crop: Crop::None,
            },
            model: DptConfig::dpt_tiny(),
            init: None,
            backbone_weights: None,
            distributed: DistributedConfig::default(),
        }
    }

    /// Rendered rooms and streets (4096 scenes, alternating) at 128 x 128, where furniture and
    /// cars span several 16-pixel patches: the checkpoint the real-data presets start from with
    /// `--init` (`docs/results.md`, "Synthetic pretraining"). The cache holds every scene, so
    /// after the first epoch nothing is rendered and the two cores belong to the model.
    fn pretrain_synthetic() -> Self {
        let mut c = Self::default_synthetic();
        c.name = "pretrain-synthetic".into();
        c.data.train = SourceConfig::Synthetic {
            scene: SceneKind::Mixed,
            len: 4096,
            seed: 0,
            size: None,
            lidar: false,
        };
        c.data.image_size = [128, 128];
        c.data.cache_mb = 1536;
        c.optim.steps = 1000;
        c.optim.warmup_steps = 60;
        c.schedule.eval_every = 500;
        c.schedule.checkpoint_every = 100;
        c.schedule.spectral_every = 500;
        c
    }

    fn seven_scenes(root: PathBuf) -> Self {
        let mut c = Self::default_synthetic();
        c.name = "sevenscenes".into();
        c.data.train = SourceConfig::SevenScenes {
            root: root.clone(),
            frames: Some([0, 500]),
        };
        c.data.val = Some(SourceConfig::SevenScenes {
            root,
            frames: Some([500, 600]),
        });
        c.data.image_size = [96, 128];
        c.optim.steps = 300;
        c.schedule.eval_every = 150;
        c.schedule.checkpoint_every = 150;
        c
    }

    /// NYU-v2 in the "sync" layout under `root` (every frame found, or `--split`), at 96 x 128
    /// (480 x 640 / 5); depth in (0.001, 10) m, median-scaled. The last tenth of the frames
    /// validates unless `--val-split` names a list. Start it from the synthetic checkpoint with
    /// `--init`; the Eigen-crop benchmark numbers come from `glassbox eval --dataset nyu`.
    fn nyu(root: PathBuf) -> Self {
        let mut c = Self::default_synthetic();
        c.name = "nyu".into();
        c.data.train = SourceConfig::Nyu { root, split: None };
        c.data.val = None;
        c.data.image_size = [96, 128];
        c.optim.steps = 600;
        c.schedule.eval_every = 200;
        c.schedule.max_depth = 10.0;
        c
    }

    /// KITTI (`rgb/` + annotated `depth/` under `root`, or `--split` lists) at 96 x 320 (the
    /// 375 x 1242 frames' aspect); depth in (0.001, 80) m with the Garg crop, median-scaled.
    /// LiDAR ground truth is sparse: the loss only sees the pixels it covers.
    fn kitti(root: PathBuf) -> Self {
        let mut c = Self::nyu(root.clone());
        c.name = "kitti".into();
        c.data.train = SourceConfig::Kitti {
            root,
            split: None,
            depth_root: None,
        };
        c.data.image_size = [96, 320];
        c.schedule.max_depth = 80.0;
        c.schedule.eval_crop = Crop::Garg;
        c
    }

    fn segmentation() -> Self {
        let mut c = Self::default_synthetic();
        c.name = "segmentation".into();
        c.data.image_size = [128, 128];
        c.optim.steps = 1000;
        c.schedule.eval_every = 250;
        c.schedule.checkpoint_every = 250;
        c.schedule.spectral_every = 250;
        c.set_task(Task::Segmentation, Some(glassbox_data::classes::COUNT))
            .expect("a class count is given");
        c
    }

    fn test() -> Self {
        let mut c = Self::default_synthetic();
        c.name = "test".into();
        c.data.train = synthetic_indoor(8, 0);
        c.data.val = Some(synthetic_indoor(4, VAL_SCENE_SEED));
        c.data.prefetch = 2;
        c.data.image_size = [64, 64];
        c.optim.steps = 6;
        c.optim.batch_size = 2;
        c.optim.warmup_steps = 2;
        c.optim.lr_backbone = 1e-3;
        c.optim.lr_decoder = 1e-3;
        c.schedule.eval_every = 0;
        c.schedule.checkpoint_every = 0;
        c.schedule.log_every = 1;
        c.schedule.sheet_images = 2;
        c.schedule.spectral_every = 0;
        c.threads = 1;
        c.model = DptConfig::dpt_test();
        c
    }

    /// Reads a TOML file holding a whole configuration.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::read(path, false)
    }

    /// Reads the `config.toml` a run wrote, so that the run's own model is rebuilt (`--resume`,
    /// `eval`, `predict`, the ablation's re-run check). Run folders from before SVDA's options
    /// existed hold `attention = "svda"` without a `[model.encoder.svda]` table (every run since
    /// writes the table in full, [`Self::to_toml`]) and may hold `optim.lr_sigma`: they are read
    /// as the SVDA they trained, sigma linear from ones, no temperature, at `lr_sigma` or the
    /// backbone's rate (docs/attention.md).
    pub fn from_run_file(path: &Path) -> Result<Self, ConfigError> {
        Self::read(path, true)
    }

    /// Parses a run config written by [`Self::to_toml`] (as a single-file export embeds it),
    /// and validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config = Self::parse(text, true).map_err(|message| ConfigError::Read {
            path: PathBuf::from("<embedded config>"),
            message,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// A configuration from TOML text; `run_folder` text is what a run wrote, so older runs'
    /// SVDA tables are migrated first.
    fn parse(text: &str, run_folder: bool) -> Result<Self, String> {
        if !run_folder {
            return toml::from_str(text).map_err(|e| e.to_string());
        }
        let mut value: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        migrate_first_svda(&mut value);
        value.try_into().map_err(|e: toml::de::Error| e.to_string())
    }

    fn read(path: &Path, run_folder: bool) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError::Read {
            path: path.into(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let config = Self::parse(&text, run_folder).map_err(error)?;
        config.validate().map_err(|source| ConfigError::InFile {
            path: path.into(),
            source: Box::new(source),
        })?;
        Ok(config)
    }

    /// The configuration as TOML text (what `config.toml` holds), with SVDA's options written out
    /// in full, so that a run folder keeps describing its model when the defaults change.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let mut resolved = self.clone();
        if let Some(options) = self.model.encoder.attention_config().svda_options() {
            resolved.model.encoder.svda = options.to_config();
        }
        toml::to_string_pretty(&resolved).map_err(|e| ConfigError::Write {
            path: PathBuf::from("config.toml"),
            message: e.to_string(),
        })
    }

    /// Writes `config.toml` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ConfigError> {
        let path = dir.join("config.toml");
        let o = &self.optim;
        let text = format!(
            "# Effective batch per update: {} = batch_size {} x accumulate {} x world_size {} \
             (docs/distributed.md).\n{}",
            self.effective_batch(),
            o.batch_size,
            o.accumulate,
            self.distributed.world_size,
            self.to_toml()?
        );
        std::fs::write(&path, text).map_err(|e| ConfigError::Write {
            path,
            message: e.to_string(),
        })
    }

    /// Images per optimiser update over all processes: `batch_size x accumulate x world_size`.
    pub fn effective_batch(&self) -> usize {
        self.optim.batch_size * self.optim.accumulate * self.distributed.world_size
    }

    /// The map from the model's raw output to the disparity whose inverse is the predicted depth:
    /// `to_depth`'s for SILog runs (trained through it), none for MiDaS runs (raw disparity).
    pub fn output_map(&self) -> Option<DisparityToDepth> {
        matches!(self.loss.loss, LossConfig::Silog(_)).then_some(self.loss.to_depth)
    }

    /// Points every file source of the run (training and validation) at another folder;
    /// synthetic runs have none, which is an error.
    pub fn set_data_root(&mut self, root: PathBuf) -> Result<(), ConfigError> {
        self.data.train.set_root(root.clone())?;
        if let Some(val) = &mut self.data.val {
            val.set_root(root)?;
        }
        Ok(())
    }

    /// What the run predicts, from its model head.
    pub fn task(&self) -> Task {
        match self.model.head {
            HeadConfig::Depth {} => Task::Depth,
            HeadConfig::Segmentation(_) => Task::Segmentation,
        }
    }

    /// The class count of a segmentation run.
    pub fn num_classes(&self) -> Option<usize> {
        match &self.model.head {
            HeadConfig::Segmentation(seg) => usize::try_from(seg.num_classes).ok(),
            HeadConfig::Depth {} => None,
        }
    }

    /// Makes the run a depth or segmentation run: the head, and the loss that trains it. A
    /// segmentation head takes `num_classes`, else the training source's class count when the
    /// source knows it (synthetic scenes, ADE20K), else asks for `--num-classes`.
    pub fn set_task(&mut self, task: Task, num_classes: Option<usize>) -> Result<(), ConfigError> {
        if task == self.task() {
            return match num_classes {
                Some(k) if task == Task::Segmentation => self.set_num_classes(k),
                _ => Ok(()),
            };
        }
        match task {
            Task::Depth => {
                self.model.head = HeadConfig::Depth {};
                self.model.decoder.fusion_batch_norm = false;
                self.loss.loss = LossConfig::default();
            }
            Task::Segmentation => {
                let known = num_classes.or_else(|| self.data.train.num_classes());
                let classes = known.ok_or(ConfigError::Invalid {
                    field: "model.head.num_classes",
                    value: self.data.train.describe(),
                    expected: "a class count: this source does not know its classes, \
                               give --num-classes",
                })?;
                self.model.head =
                    HeadConfig::Segmentation(SegmentationHeadConfig::new(classes as i64));
                self.model.decoder.fusion_batch_norm = true;
                self.loss.loss = LossConfig::CrossEntropy(SegmentationLoss::default());
            }
        }
        Ok(())
    }

    /// Names of the classes of a segmentation run, indexed by id: the renderer's for synthetic
    /// scenes, else `class K`.
    pub fn class_names(&self) -> Vec<String> {
        let count = self.num_classes().unwrap_or(0);
        match self.data.train {
            SourceConfig::Synthetic { .. } if count == glassbox_data::classes::COUNT => {
                glassbox_data::classes::NAMES
                    .iter()
                    .map(|n| n.to_string())
                    .collect()
            }
            _ => (0..count).map(|c| format!("class {c}")).collect(),
        }
    }

    /// Sets the class count of a segmentation run (for sources that do not know theirs).
    pub fn set_num_classes(&mut self, classes: usize) -> Result<(), ConfigError> {
        match &mut self.model.head {
            HeadConfig::Segmentation(seg) => {
                seg.num_classes = classes as i64;
                Ok(())
            }
            HeadConfig::Depth {} => Err(ConfigError::Invalid {
                field: "model.head.num_classes",
                value: classes.to_string(),
                expected: "a segmentation run (--task segmentation)",
            }),
        }
    }

    /// Chooses the segmentation decoder: DPT's head, DEPICT-SA or DEPICT-CA.
    pub fn set_decoder(&mut self, decoder: SegmentationDecoder) -> Result<(), ConfigError> {
        match &mut self.model.head {
            HeadConfig::Segmentation(seg) => {
                seg.decoder = decoder;
                Ok(())
            }
            HeadConfig::Depth {} => Err(ConfigError::Invalid {
                field: "model.head.decoder",
                value: decoder.name().into(),
                expected: "a segmentation run: the depth head has one decoder",
            }),
        }
    }

    /// Switches every encoder block to standard or SVDA attention.
    pub fn set_attention(&mut self, kind: AttentionKind) {
        self.model = self.model.clone().with_attention(kind);
    }

    /// Checks the numbers a run depends on, so a bad config fails before any work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: String, expected| ConfigError::Invalid {
            field,
            value,
            expected,
        };
        // The model first: the checks below divide by its patch size.
        self.model.validate()?;
        let [h, w] = self.data.image_size;
        let p = self.model.encoder.patch_size as usize;
        if h == 0 || w == 0 || h % p != 0 || w % p != 0 {
            return Err(invalid(
                "data.image_size",
                format!("{h}x{w}"),
                "positive multiples of the patch size",
            ));
        }
        if let Err(e) = self.schedule.eval_crop.window(h, w) {
            return Err(invalid(
                "schedule.eval_crop",
                self.schedule.eval_crop.to_string(),
                match e {
                    glassbox_metrics::MetricsError::CropSize { .. } => {
                        "a crop defined at data.image_size (Eigen needs 480 x 640)"
                    }
                    _ => "a crop defined at data.image_size",
                },
            ));
        }
        let o = &self.optim;
        if o.steps == 0 || o.batch_size == 0 || o.accumulate == 0 {
            return Err(invalid(
                "optim.steps/batch_size/accumulate",
                format!("{}/{}/{}", o.steps, o.batch_size, o.accumulate),
                "all >= 1",
            ));
        }
        for (field, v) in [
            ("optim.lr_decoder", o.lr_decoder),
            ("optim.lr_backbone", o.lr_backbone),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(field, v.to_string(), "a finite rate >= 0"));
            }
        }
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            return Err(invalid(
                "optim.beta1/beta2",
                format!("{}/{}", o.beta1, o.beta2),
                "both in [0, 1)",
            ));
        }
        if o.clip_grad_norm.is_nan() || o.clip_grad_norm < 0.0 {
            return Err(invalid(
                "optim.clip_grad_norm",
                o.clip_grad_norm.to_string(),
                ">= 0",
            ));
        }
        if self.data.prefetch == 0 || self.data.workers == 0 {
            return Err(invalid(
                "data.prefetch/workers",
                format!("{}/{}", self.data.prefetch, self.data.workers),
                "both >= 1",
            ));
        }
        match self.task() {
            Task::Depth if self.loss.loss.depth().is_err() => {
                return Err(invalid(
                    "loss.loss.kind",
                    self.loss.loss.name().into(),
                    "a depth loss for a depth head: midas or silog",
                ));
            }
            Task::Segmentation if self.loss.loss.segmentation().is_err() => {
                return Err(invalid(
                    "loss.loss.kind",
                    self.loss.loss.name().into(),
                    "cross_entropy for a segmentation head",
                ));
            }
            _ => {}
        }
        let layers = self.model.encoder.num_layers;
        if let Some(layer) = self.schedule.strip_layer
            && !(1..=layers).contains(&layer)
        {
            return Err(invalid(
                "schedule.strip_layer",
                layer.to_string(),
                "an encoder layer from 1 to model.encoder.num_layers",
            ));
        }
        if let Some(classes) = self.num_classes() {
            for source in std::iter::once(&self.data.train).chain(&self.data.val) {
                if let Some(known) = source.num_classes()
                    && known != classes
                {
                    return Err(invalid(
                        "model.head.num_classes",
                        classes.to_string(),
                        "the class count of the data source (synthetic scenes: 14, ADE20K: 150)",
                    ));
                }
            }
        }
        let d = &self.distributed;
        if d.world_size == 0 {
            return Err(invalid(
                "distributed.world_size",
                "0".into(),
                "at least 1 (it is set from the launch)",
            ));
        }
        if !(d.timeout_s.is_finite() && d.timeout_s > 0.0) {
            return Err(invalid(
                "distributed.timeout_s",
                d.timeout_s.to_string(),
                "a positive number of seconds",
            ));
        }
        if d.bucket_mb == 0 {
            return Err(invalid(
                "distributed.bucket_mb",
                "0".into(),
                "at least 1 MiB",
            ));
        }
        Ok(())
    }
}

/// Seed of the validation scenes of the synthetic presets: a stream apart from the training
/// scenes (seed 0), so no validation scene is also a training scene.
pub const VAL_SCENE_SEED: u64 = 0x005e_ed0f_4a11_d47e;

/// Rewrites a run folder's configuration from before SVDA's options (see
/// [`TrainConfig::from_run_file`]) into the options that describe the model it trained.
fn migrate_first_svda(config: &mut toml::Table) {
    let lr_sigma = config
        .get_mut("optim")
        .and_then(toml::Value::as_table_mut)
        .and_then(|optim| optim.remove("lr_sigma"));
    let Some(encoder) = config
        .get_mut("model")
        .and_then(toml::Value::as_table_mut)
        .and_then(|model| model.get_mut("encoder"))
        .and_then(toml::Value::as_table_mut)
    else {
        return;
    };
    let is_svda = encoder.get("attention").and_then(toml::Value::as_str) == Some("svda");
    if !is_svda || encoder.contains_key("svda") {
        return;
    }
    let mut svda = toml::Table::new();
    svda.insert("gain".into(), toml::Value::Float(1.0));
    svda.insert(
        "parameterisation".into(),
        toml::Value::String("linear".into()),
    );
    svda.insert("temperature".into(), toml::Value::Boolean(false));
    svda.insert(
        "lr".into(),
        lr_sigma.unwrap_or_else(|| toml::Value::String("backbone".into())),
    );
    encoder.insert("svda".into(), toml::Value::Table(svda));
}

/// `len` rendered indoor scenes from `seed` at the run's image size.
pub fn synthetic_indoor(len: usize, seed: u64) -> SourceConfig {
    SourceConfig::Synthetic {
        scene: SceneKind::Indoor,
        len,
        seed,
        size: None,
        lidar: false,
    }
}

/// `<workspace root>/../shared/data/real/7scenes-redkitchen`, or below `GLASSBOX_REAL_DATA`.
pub fn default_seven_scenes_root() -> PathBuf {
    real_data_root().join("7scenes-redkitchen")
}

/// Where the real RGB-D samples live: `GLASSBOX_REAL_DATA`, else `../shared/data/real` beside the
/// workspace root.
pub fn real_data_root() -> PathBuf {
    std::env::var_os("GLASSBOX_REAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/real")
                .components()
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_round_svda_run_folder_reads_as_the_svda_it_trained() {
        let mut old = TrainConfig::preset("test").unwrap();
        old.set_attention(AttentionKind::Svda);
        // What a run of the first SVDA wrote: no svda table, `optim.lr_sigma`.
        let mut text = toml::to_string(&old).unwrap();
        text = text.replace("[optim]\n", "[optim]\nlr_sigma = 0.05\n");
        assert!(!text.contains("[model.encoder.svda]"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &text).unwrap();
        let read = TrainConfig::from_run_file(&path).unwrap();
        let options = read
            .model
            .encoder
            .attention_config()
            .svda_options()
            .unwrap();
        assert_eq!(
            options.parameterisation,
            glassbox_attention::SigmaParameterisation::Linear
        );
        assert_eq!(options.initial_gain(), 1.0);
        assert_eq!((options.temperature, options.lr), (None, Some(0.05)));
        // A config file a user writes gets today's defaults, and `lr_sigma` is no key of it.
        let err = TrainConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("lr_sigma"), "{err}");
        // Written back, the run folder states its options in full and reads the same.
        read.save(dir.path()).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("[model.encoder.svda]")
        );
        assert_eq!(
            TrainConfig::from_run_file(&path)
                .unwrap()
                .to_toml()
                .unwrap(),
            read.to_toml().unwrap()
        );
    }

    #[test]
    fn every_preset_validates_and_survives_a_toml_round_trip() {
        for name in RUN_PRESETS {
            let config = TrainConfig::preset(name).unwrap();
            config.validate().unwrap();
            let text = config.to_toml().unwrap();
            let back: TrainConfig = toml::from_str(&text).unwrap();
            assert_eq!(back, config, "{name}");
        }
    }

    #[test]
    fn an_image_size_off_the_patch_grid_is_rejected_naming_the_field() {
        let mut config = TrainConfig::preset("test").unwrap();
        config.data.image_size = [60, 64];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("data.image_size"), "{err}");
    }

    #[test]
    fn a_strip_layer_outside_the_encoder_is_rejected_naming_the_value() {
        let mut config = TrainConfig::preset("test").unwrap();
        let layers = config.model.encoder.num_layers;
        config.schedule.strip_layer = Some(layers);
        config.validate().unwrap();
        for bad in [0, layers + 1] {
            config.schedule.strip_layer = Some(bad);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("schedule.strip_layer"), "{err}");
            assert!(err.contains(&bad.to_string()), "{err}");
        }
    }
}
