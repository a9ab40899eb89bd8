//! Command-line changes to a run configuration, as one struct: the `glassbox train` flags and the
//! ablation runner both go through [`Overrides::apply`], so a flag means the same everywhere and
//! is tested once.

use std::path::PathBuf;

use glassbox_attention::{AttentionKind, SigmaParameterisation};
use glassbox_data::SourceConfig;
use glassbox_decoder::SegmentationDecoder;
use glassbox_dpt::BackboneKind;
use glassbox_losses::LossConfig;

use crate::config::{ConfigError, Task, TrainConfig, VAL_SCENE_SEED, synthetic_indoor};

/// The datasets `--dataset` names; each becomes a glassbox-data source (`docs/data.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum DatasetKind {
    /// Rendered indoor scenes (no files).
    Synthetic,
    /// A 7-Scenes sequence folder (every frame found on disk).
    Sevenscenes,
    /// NYU-v2 "sync" (scene folders, or a split list with `--split`).
    Nyu,
    /// KITTI (`rgb/` + `depth/`, or an Eigen split list with `--split`).
    Kitti,
    /// A folder with `rgb/` and 16-bit `depth/` PNGs (`--depth-scale` metres per unit) and/or
    /// 8-bit `labels/` PNGs.
    Folder,
    /// ADE20K (ADEChallengeData2016: `images/` + `annotations/`, 150 classes, 0 = ignore);
    /// training on `training`, validating and evaluating on `validation`.
    Ade20k,
}

impl DatasetKind {
    /// The glassbox-data source of the files of this dataset under `root`: `split` for NYU and
    /// KITTI lists, `depth_scale` (default millimetres) for a folder. Rendered scenes on disk are
    /// gen-data's NYU layout, so `Synthetic` reads `root` as a NYU folder. The one mapping
    /// `train` and `eval` share.
    pub fn files(
        self,
        root: PathBuf,
        split: Option<PathBuf>,
        depth_scale: Option<f32>,
    ) -> SourceConfig {
        match self {
            DatasetKind::Nyu | DatasetKind::Synthetic => SourceConfig::Nyu { root, split },
            DatasetKind::Kitti => SourceConfig::Kitti {
                root,
                split,
                depth_root: None,
            },
            DatasetKind::Sevenscenes => SourceConfig::SevenScenes { root, frames: None },
            DatasetKind::Folder => SourceConfig::Folder {
                root,
                depth_scale: depth_scale.unwrap_or(0.001),
            },
            DatasetKind::Ade20k => SourceConfig::Ade20k {
                root,
                split: split.map_or_else(|| "validation".to_string(), |s| s.display().to_string()),
            },
        }
    }
}

/// Flags that change a run's configuration; `None` keeps the configured value.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct Overrides {
    /// Start from these weights, and their model: a run checkpoint, a `glassbox export` file or
    /// an HF `DPTForDepthEstimation` folder (config.json + model.safetensors). `--resume` wins.
    #[cfg_attr(feature = "cli", arg(long, value_name = "PATH"))]
    pub init: Option<PathBuf>,
    /// A timm ViT safetensors for the encoder (e.g. vit_tiny_patch16_224); its position
    /// embeddings are resized to the model's grid. Loaded after --init.
    #[cfg_attr(feature = "cli", arg(long, value_name = "PATH"))]
    pub backbone_weights: Option<PathBuf>,
    /// Token maker: vit (patch embedding) or hybrid (DPT-Hybrid's ResNet-50 stem under ViT-Base,
    /// a small stem under narrower ViTs; `docs/architecture.md`).
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_backbone))]
    pub backbone: Option<BackboneKind>,
    /// Standard or SVDA attention in every encoder block.
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_attention))]
    pub attention: Option<AttentionKind>,
    /// What the model predicts: depth or segmentation (head, loss, metrics and pictures).
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_task))]
    pub task: Option<Task>,
    /// Segmentation decoder: dpt (Reassemble + fusion + conv head), depict-sa or depict-ca.
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_decoder))]
    pub decoder: Option<SegmentationDecoder>,
    /// Class count of a segmentation run whose data does not know it (a folder of labels).
    #[cfg_attr(feature = "cli", arg(long))]
    pub num_classes: Option<usize>,
    /// Training loss: midas (SSI + gradient, disparity) or silog (depth = 1 / disparity).
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_loss))]
    pub loss: Option<LossConfig>,
    /// Optimiser updates.
    #[cfg_attr(feature = "cli", arg(long))]
    pub steps: Option<usize>,
    #[cfg_attr(feature = "cli", arg(long))]
    pub batch_size: Option<usize>,
    /// Gradient accumulation: micro-batches per update.
    #[cfg_attr(feature = "cli", arg(long))]
    pub accumulate: Option<usize>,
    /// Decoder learning rate; the backbone's keeps its ratio to it.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub lr: Option<f64>,
    /// Backbone (encoder) learning rate, set after --lr; fine-tuning from pretrained weights
    /// usually wants it below the decoder's (DPT: 1e-5 against 1e-4).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub lr_backbone: Option<f64>,
    /// Learning rate of SVDA's spectrum (log sigma and temperature; `model.encoder.svda.lr`).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub lr_sigma: Option<f64>,
    /// SVDA's initial gain: sigma (or the temperature) starts there (`model.encoder.svda.gain`;
    /// default 10 sqrt(d)).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub svda_gain: Option<f64>,
    /// SVDA's sigma storage: linear or log (`model.encoder.svda.parameterisation`).
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_parameterisation))]
    pub svda_parameterisation: Option<SigmaParameterisation>,
    /// A learnable per-head temperature in SVDA (`model.encoder.svda.temperature`).
    #[cfg_attr(feature = "cli", arg(long))]
    pub svda_temperature: Option<bool>,
    /// Sparse token updates: the share of patch tokens each encoder block updates, in (0, 1]
    /// (`model.encoder.keep_ratio`; 1 = dense, `docs/sparse.md`).
    #[cfg_attr(feature = "cli", arg(long))]
    pub keep_ratio: Option<f64>,
    /// Encoder layer (1-based) of the probe's attention-over-training strip
    /// (`schedule.strip_layer`; default: the last layer).
    #[cfg_attr(feature = "cli", arg(long))]
    pub strip_layer: Option<usize>,
    /// Square image size, or HxW (multiples of 16).
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_size))]
    pub image_size: Option<[usize; 2]>,
    /// Train on another dataset (with `--data-root` for the file datasets).
    #[cfg_attr(feature = "cli", arg(long, value_enum))]
    pub dataset: Option<DatasetKind>,
    /// Folder of the dataset; alone, it moves the preset's file sources there.
    #[cfg_attr(feature = "cli", arg(long))]
    pub data_root: Option<PathBuf>,
    /// Split list of the training images (NYU, KITTI).
    #[cfg_attr(feature = "cli", arg(long, requires = "dataset"))]
    pub split: Option<PathBuf>,
    /// Split list of the validation images; without it the last block of the training images
    /// is held out.
    #[cfg_attr(feature = "cli", arg(long, requires = "dataset"))]
    pub val_split: Option<PathBuf>,
    /// Metres per unit of a folder dataset's 16-bit depth PNGs (default 0.001: millimetres).
    #[cfg_attr(feature = "cli", arg(long))]
    pub depth_scale: Option<f32>,
    /// Run name (the run folder is RUN_DIR/NAME).
    #[cfg_attr(feature = "cli", arg(long))]
    pub name: Option<String>,
    #[cfg_attr(feature = "cli", arg(long))]
    pub seed: Option<u64>,
    /// auto, cpu, cuda or cuda:N.
    #[cfg_attr(feature = "cli", arg(long))]
    pub device: Option<String>,
    /// Intra-op threads of the model (0 = physical cores, shared out among this machine's
    /// data-parallel ranks).
    #[cfg_attr(feature = "cli", arg(long))]
    pub threads: Option<usize>,
    /// Seconds a data-parallel collective may wait for the other ranks
    /// (`distributed.timeout_s`).
    #[cfg_attr(feature = "cli", arg(long, value_name = "SECONDS"))]
    pub dist_timeout: Option<f64>,
}

impl Overrides {
    /// Applies every set flag to `config` and validates the result.
    pub fn apply(&self, config: &mut TrainConfig) -> Result<(), ConfigError> {
        if let Some(name) = &self.name {
            config.name = name.clone();
        }
        // The init file's model replaces the preset's first, so that flags below refine it.
        if let Some(path) = &self.init {
            let file = crate::weights::ModelFile::open(path).map_err(|e| ConfigError::Init {
                path: path.clone(),
                message: e.to_string(),
            })?;
            config.model = file.model_config().clone();
            config.init = Some(path.clone());
        }
        if let Some(path) = &self.backbone_weights {
            if !path.is_file() {
                return Err(ConfigError::Init {
                    path: path.clone(),
                    message: format!(
                        "{} does not exist (--backbone-weights takes a timm ViT safetensors)",
                        path.display()
                    ),
                });
            }
            config.backbone_weights = Some(path.clone());
        }
        if let Some(kind) = self.backbone {
            config.model = config.model.clone().with_backbone(kind);
        }
        if let Some(kind) = self.attention {
            config.set_attention(kind);
        }
        if let Some(loss) = self.loss {
            config.loss.loss = loss;
        }
        let o = &mut config.optim;
        o.steps = self.steps.unwrap_or(o.steps);
        o.batch_size = self.batch_size.unwrap_or(o.batch_size);
        o.accumulate = self.accumulate.unwrap_or(o.accumulate);
        if let Some(lr) = self.lr {
            let ratio = o.lr_backbone / o.lr_decoder;
            o.lr_decoder = lr;
            o.lr_backbone = lr * ratio;
        }
        o.lr_backbone = self.lr_backbone.unwrap_or(o.lr_backbone);
        let svda = &mut config.model.encoder.svda;
        if let Some(lr) = self.lr_sigma {
            svda.lr = Some(glassbox_attention::SpectrumRate::Rate(lr));
        }
        if self.svda_gain.is_some() {
            svda.gain = self.svda_gain;
        }
        if self.svda_parameterisation.is_some() {
            svda.parameterisation = self.svda_parameterisation;
        }
        if self.svda_temperature.is_some() {
            svda.temperature = self.svda_temperature;
        }
        if let Some(rho) = self.keep_ratio {
            config.model.encoder.keep_ratio = rho;
        }
        if self.strip_layer.is_some() {
            config.schedule.strip_layer = self.strip_layer;
        }
        if let Some(size) = self.image_size {
            config.data.image_size = size;
        }
        match self.dataset {
            Some(kind) => self.set_dataset(config, kind)?,
            None => {
                if let Some(root) = &self.data_root {
                    config.set_data_root(root.clone())?;
                }
            }
        }
        if let Some(task) = self.task {
            config.set_task(task, self.num_classes)?;
        } else if config.task() == Task::Segmentation {
            // The class count follows a new dataset unless given.
            let known = self.num_classes.or_else(|| config.data.train.num_classes());
            if let Some(k) = known {
                config.set_num_classes(k)?;
            }
        } else if let Some(k) = self.num_classes {
            config.set_num_classes(k)?;
        }
        if let Some(decoder) = self.decoder {
            config.set_decoder(decoder)?;
        }
        config.seed = self.seed.unwrap_or(config.seed);
        if let Some(device) = &self.device {
            config.device = device.clone();
        }
        config.threads = self.threads.unwrap_or(config.threads);
        if let Some(seconds) = self.dist_timeout {
            config.distributed.timeout_s = seconds;
        }
        config.validate()
    }

    fn set_dataset(&self, config: &mut TrainConfig, kind: DatasetKind) -> Result<(), ConfigError> {
        let needs_root = || {
            self.data_root.clone().ok_or(ConfigError::Invalid {
                field: "--data-root",
                value: "(none)".into(),
                expected: "the dataset's folder, for every dataset but synthetic",
            })
        };
        let d = &mut config.data;
        d.holdout = 0;
        if kind == DatasetKind::Synthetic {
            if self.data_root.is_some() {
                return Err(ConfigError::Invalid {
                    field: "--data-root",
                    value: "a folder".into(),
                    expected: "none for rendered scenes",
                });
            }
            d.train = synthetic_indoor(512, 0);
            d.val = Some(synthetic_indoor(64, VAL_SCENE_SEED));
            return Ok(());
        }
        let root = needs_root()?;
        if kind == DatasetKind::Ade20k {
            let split = |s: &str| SourceConfig::Ade20k {
                root: root.clone(),
                split: s.to_string(),
            };
            d.train = split("training");
            d.val = Some(split("validation"));
            return Ok(());
        }
        d.train = kind.files(root.clone(), self.split.clone(), self.depth_scale);
        d.val = self
            .val_split
            .clone()
            .map(|split| kind.files(root, Some(split), self.depth_scale));
        Ok(())
    }
}

/// `depth` or `segmentation`.
pub fn parse_task(text: &str) -> Result<Task, String> {
    text.parse()
}

/// `dpt`, `depict-sa` or `depict-ca`.
pub fn parse_decoder(text: &str) -> Result<SegmentationDecoder, String> {
    text.parse()
}

/// `standard`, `svda` or `svda-paper`.
pub fn parse_attention(text: &str) -> Result<AttentionKind, String> {
    text.parse::<AttentionKind>()
        .map_err(|_| format!("attention {text:?}: expected standard, svda or svda-paper"))
}

/// `vit` or `hybrid`.
pub fn parse_backbone(text: &str) -> Result<BackboneKind, String> {
    text.parse::<BackboneKind>()
}

/// `linear` or `log`.
pub fn parse_parameterisation(text: &str) -> Result<SigmaParameterisation, String> {
    match text {
        "linear" => Ok(SigmaParameterisation::Linear),
        "log" => Ok(SigmaParameterisation::Log),
        other => Err(format!(
            "sigma parameterisation {other:?}: expected linear or log"
        )),
    }
}

/// `midas` or `silog`, with their default settings.
pub fn parse_loss(text: &str) -> Result<LossConfig, String> {
    match text {
        "midas" => Ok(LossConfig::Midas(Default::default())),
        "silog" => Ok(LossConfig::Silog(Default::default())),
        other => Err(format!("loss {other:?}: expected midas or silog")),
    }
}

/// `64` (square) or `96x128` (height x width).
pub fn parse_size(text: &str) -> Result<[usize; 2], String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("image size {text:?}: expected N or HxW, e.g. 64 or 96x128"))
    };
    Ok(match text.split_once(['x', 'X']) {
        Some((h, w)) => [parse(h)?, parse(w)?],
        None => [parse(text)?; 2],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_flags_change_nothing() {
        let mut config = TrainConfig::preset("default").unwrap();
        let before = config.clone();
        Overrides::default().apply(&mut config).unwrap();
        assert_eq!(config, before);
    }

    #[test]
    fn lr_keeps_the_backbone_ratio_and_flags_land_in_their_fields() {
        let mut config = TrainConfig::preset("default").unwrap();
        let ratio = config.optim.lr_backbone / config.optim.lr_decoder;
        let flags = Overrides {
            lr: Some(1e-3),
            steps: Some(7),
            image_size: Some(parse_size("32x48").unwrap()),
            attention: Some(parse_attention("svda").unwrap()),
            name: Some("x".into()),
            ..Overrides::default()
        };
        flags.apply(&mut config).unwrap();
        assert_eq!(config.optim.lr_decoder, 1e-3);
        assert!((config.optim.lr_backbone - 1e-3 * ratio).abs() < 1e-15);
        assert_eq!(config.optim.steps, 7);
        assert_eq!(config.data.image_size, [32, 48]);
        assert_eq!(config.model.encoder.attention, AttentionKind::Svda);
        assert_eq!(config.name, "x");
    }

    #[test]
    fn lr_backbone_is_set_after_lr_and_missing_init_files_are_named() {
        let mut config = TrainConfig::preset("default").unwrap();
        let flags = Overrides {
            lr: Some(1e-3),
            lr_backbone: Some(1e-5),
            ..Overrides::default()
        };
        flags.apply(&mut config).unwrap();
        assert_eq!(
            (config.optim.lr_backbone, config.optim.lr_decoder),
            (1e-5, 1e-3)
        );
        for flags in [
            Overrides {
                init: Some("no/such/run/last.safetensors".into()),
                ..Overrides::default()
            },
            Overrides {
                backbone_weights: Some("no/such/vit.safetensors".into()),
                ..Overrides::default()
            },
        ] {
            let err = flags.apply(&mut config).unwrap_err().to_string();
            assert!(err.contains("no/such/"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        assert_eq!(config.init, None);
    }

    #[test]
    fn real_data_presets_carry_their_protocol() {
        let kitti = TrainConfig::preset("kitti").unwrap();
        assert_eq!(kitti.schedule.eval_crop, glassbox_metrics::Crop::Garg);
        assert_eq!(kitti.schedule.max_depth, 80.0);
        let nyu = TrainConfig::preset("nyu").unwrap();
        assert_eq!(
            (nyu.schedule.eval_crop, nyu.schedule.max_depth),
            (glassbox_metrics::Crop::None, 10.0)
        );
        let mut eigen = nyu.clone();
        eigen.schedule.eval_crop = glassbox_metrics::Crop::Eigen;
        let err = eigen.validate().unwrap_err().to_string();
        assert!(
            err.contains("schedule.eval_crop") && err.contains("480 x 640"),
            "{err}"
        );
    }

    #[test]
    fn backbone_hybrid_puts_a_resnet_stem_under_the_presets_vit() {
        let mut config = TrainConfig::preset("default").unwrap();
        let vit = config.model.encoder.clone();
        let flags = Overrides {
            backbone: Some(BackboneKind::Hybrid),
            attention: Some(AttentionKind::Svda),
            ..Default::default()
        };
        flags.apply(&mut config).unwrap();
        let encoder = &config.model.encoder;
        assert_eq!(
            encoder.backbone,
            glassbox_encoder::Backbone::Hybrid(glassbox_encoder::BitConfig::tiny())
        );
        assert_eq!(
            (encoder.hidden_size, encoder.num_layers),
            (vit.hidden_size, vit.num_layers)
        );
        assert_eq!(encoder.attention, AttentionKind::Svda);
        assert_eq!(parse_backbone("vit"), Ok(BackboneKind::Vit));
        let msg = parse_backbone("resnet").unwrap_err();
        assert!(msg.contains("vit, hybrid"), "{msg}");
    }

    #[test]
    fn a_file_dataset_needs_a_root_and_synthetic_refuses_one() {
        let mut config = TrainConfig::preset("default").unwrap();
        let nyu = Overrides {
            dataset: Some(DatasetKind::Nyu),
            ..Overrides::default()
        };
        let err = nyu.apply(&mut config).unwrap_err().to_string();
        assert!(err.contains("--data-root"), "{err}");
        let synthetic = Overrides {
            dataset: Some(DatasetKind::Synthetic),
            data_root: Some("/data".into()),
            ..Overrides::default()
        };
        assert!(synthetic.apply(&mut config).is_err());
    }

    #[test]
    fn kitti_with_a_split_trains_on_it_and_holds_out_a_block_without_a_val_split() {
        let mut config = TrainConfig::preset("default").unwrap();
        let flags = Overrides {
            dataset: Some(DatasetKind::Kitti),
            data_root: Some("/kitti".into()),
            split: Some("eigen_train.txt".into()),
            ..Overrides::default()
        };
        flags.apply(&mut config).unwrap();
        assert_eq!(
            config.data.train,
            SourceConfig::Kitti {
                root: "/kitti".into(),
                split: Some("eigen_train.txt".into()),
                depth_root: None
            }
        );
        assert_eq!(config.data.val, None);
    }

    #[test]
    fn a_data_root_alone_moves_the_preset_sources() {
        let mut config = TrainConfig::preset("sevenscenes").unwrap();
        let flags = Overrides {
            data_root: Some("/seq-01".into()),
            ..Overrides::default()
        };
        flags.apply(&mut config).unwrap();
        assert_eq!(
            config.data.train.root(),
            Some(std::path::Path::new("/seq-01"))
        );
        assert_eq!(
            config.data.val.as_ref().and_then(SourceConfig::root),
            Some(std::path::Path::new("/seq-01"))
        );
    }

    #[test]
    fn a_negative_svda_gain_is_a_config_error_naming_the_value() {
        let mut config = TrainConfig::preset("test").unwrap();
        let overrides = Overrides {
            attention: Some(AttentionKind::Svda),
            svda_gain: Some(-2.5),
            ..Overrides::default()
        };
        let msg = overrides.apply(&mut config).unwrap_err().to_string();
        assert!(msg.contains("svda.gain") && msg.contains("-2.5"), "{msg}");
    }

    #[test]
    fn bad_sizes_attention_and_losses_are_one_sentence_naming_the_value() {
        assert!(parse_size("64x").unwrap_err().contains("64x"));
        assert!(parse_attention("sdva").unwrap_err().contains("sdva"));
        assert_eq!(
            parse_attention("svda-paper").unwrap(),
            AttentionKind::SvdaPaper
        );
        assert!(parse_parameterisation("exp").unwrap_err().contains("exp"));
        assert!(parse_loss("l1").unwrap_err().contains("l1"));
        assert_eq!(parse_size("96x128").unwrap(), [96, 128]);
        assert_eq!(parse_size("64").unwrap(), [64, 64]);
    }
}
