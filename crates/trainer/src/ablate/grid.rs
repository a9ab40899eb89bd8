//! The grid schema: a TOML file of segmentation decoders x attention kinds x readouts x hook sets x
//! seeds (refusing unknown keys), and its plan, one validated training configuration per run.

use std::path::{Path, PathBuf};

use glassbox_attention::AttentionKind;
use glassbox_data::SourceConfig;
use glassbox_decoder::{Readout, SegmentationDecoder};
use glassbox_dpt::{BackboneKind, HeadConfig};
use serde::{Deserialize, Serialize};

use super::AblateError;
use crate::config::{Task, TrainConfig};

/// Grids shipped with the crate, by name: `default` (the reduced grid `cargo xtask ablate` runs),
/// `full` (every factor level of `docs/training.md` but the keep ratio), `segmentation` (DPT's
/// head against DEPICT-SA and DEPICT-CA), `sparsity` (keep ratios of sparse token updates) and
/// `backbone` (ViT against DPT-Hybrid's ResNet stem).
pub const GRID_PRESETS: &[(&str, &str)] = &[
    ("default", include_str!("../../grids/default.toml")),
    ("full", include_str!("../../grids/full.toml")),
    (
        "segmentation",
        include_str!("../../grids/segmentation.toml"),
    ),
    ("sparsity", include_str!("../../grids/sparsity.toml")),
    ("backbone", include_str!("../../grids/backbone.toml")),
];

/// Which data every run of the grid trains and validates on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GridDataset {
    /// Rendered indoor scenes (the data of the `default` and `segmentation` training presets,
    /// with depth and the renderer's class labels).
    #[default]
    Synthetic,
    /// A 7-Scenes sequence (`data_root`, default the shared red-kitchen sample).
    Sevenscenes,
}

/// An ablation grid as written in TOML; every combination of the lists is one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Folder of the ablation (`<out>/<name>`).
    pub name: String,
    /// Training preset the runs start from; default: `default` for synthetic data,
    /// `sevenscenes` for 7-Scenes. `segmentation` makes them segmentation runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// `depth` or `segmentation`: overrides the base preset's task, so a small preset (`test`)
    /// can train segmentation; default the base preset's own task.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "task_name")]
    pub task: Option<Task>,
    #[serde(default)]
    pub dataset: GridDataset,
    /// 7-Scenes sequence folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_root: Option<PathBuf>,
    /// Training budget of every run, in optimiser updates.
    pub steps: usize,
    /// Steps between checkpoints, i.e. the most work an interruption can cost (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    pub attention: Vec<AttentionKind>,
    pub readout: Vec<Readout>,
    /// Encoder blocks (1-based) whose outputs the decoder reassembles.
    pub hooks: Vec<Vec<usize>>,
    pub seeds: Vec<u64>,
    /// Segmentation decoders to compare (`dpt`, `depict-sa`, `depict-ca`); empty = the base
    /// preset's own head. Only segmentation runs have a choice of decoder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decoder: Vec<SegmentationDecoder>,
    /// Sparse token updates: keep ratios rho in (0, 1] to compare (1 = dense; `docs/sparse.md`);
    /// empty = the base preset's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_ratio: Vec<f64>,
    /// Token makers to compare (`vit`, `hybrid`: DPT-Hybrid's ResNet stem under the same ViT,
    /// `docs/architecture.md`); empty = the base preset's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backbone: Vec<BackboneKind>,
}

/// One model variant of a grid (a run without its seed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub attention: AttentionKind,
    pub readout: Readout,
    pub hooks: Vec<usize>,
    /// The segmentation decoder, when the grid varies it (absent in depth grids and in results
    /// written before the decoder axis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<SegmentationDecoder>,
    /// The keep ratio, when the grid varies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_ratio: Option<f64>,
    /// The backbone, when the grid varies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone: Option<BackboneKind>,
}

impl Variant {
    /// `svda / project / 3,6,9,12`, or `depict-sa / svda / project / 3,6,9,12` with a decoder,
    /// `rho 0.3 / standard / project / 3,6,9,12` with a keep ratio, `hybrid / ...` with a backbone.
    pub fn label(&self) -> String {
        let backbone = self
            .backbone
            .map(|b| format!("{} / ", b.name()))
            .unwrap_or_default();
        let decoder = self
            .decoder
            .map(|d| format!("{} / ", d.name()))
            .unwrap_or_default();
        let rho = self
            .keep_ratio
            .map(|r| format!("rho {r} / "))
            .unwrap_or_default();
        format!(
            "{backbone}{rho}{decoder}{} / {} / {}",
            attention_name(self.attention),
            readout_name(self.readout),
            join_hooks(&self.hooks, ",")
        )
    }

    /// The run folder name of this variant at `seed`: `svda-project-h3-6-9-12-s0`, with the
    /// decoder first when set (`depict-sa-svda-project-h3-6-9-12-s0`).
    pub fn run_name(&self, seed: u64) -> String {
        let backbone = self
            .backbone
            .map(|b| format!("{}-", b.name()))
            .unwrap_or_default();
        let decoder = self
            .decoder
            .map(|d| format!("{}-", d.name()))
            .unwrap_or_default();
        let rho = self
            .keep_ratio
            .map(|r| format!("rho{r}-"))
            .unwrap_or_default();
        format!(
            "{backbone}{rho}{decoder}{}-{}-h{}-s{seed}",
            attention_name(self.attention),
            readout_name(self.readout),
            join_hooks(&self.hooks, "-")
        )
    }
}

/// One run of a grid: its variant, seed, folder name and full training configuration.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    pub name: String,
    pub variant: Variant,
    pub seed: u64,
    pub config: TrainConfig,
}

impl Grid {
    /// A shipped grid by name, or a TOML file.
    pub fn load(name_or_path: &str) -> Result<Grid, AblateError> {
        if let Some((_, text)) = GRID_PRESETS.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(text, Path::new(name_or_path));
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|e| AblateError::Grid {
            path: path.into(),
            message: if path.extension().is_none() && !path.exists() {
                format!(
                    "{e} (not a file, and not a shipped grid: {})",
                    GRID_PRESETS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                e.to_string()
            },
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates grid TOML; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Grid, AblateError> {
        let grid: Grid = toml::from_str(text).map_err(|e| AblateError::Grid {
            path: path.into(),
            message: e.to_string(),
        })?;
        // A grid that parses but does not plan is named by its file too.
        grid.plan().map_err(|e| {
            let message = match e {
                AblateError::Invalid { message, .. } => message,
                other => other.to_string(),
            };
            AblateError::Invalid {
                grid: format!("{} ({})", grid.name, path.display()),
                message,
            }
        })?;
        Ok(grid)
    }

    /// Every run of the grid (backbone, then keep ratio, then decoder, then attention, then readout, then hooks, then seed,
    /// slowest first), each with a validated configuration.
    pub fn plan(&self) -> Result<Vec<PlannedRun>, AblateError> {
        let invalid = |message: String| AblateError::Invalid {
            grid: self.name.clone(),
            message,
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || self.name.starts_with('.')
        {
            return Err(invalid(format!(
                "name {:?} must be a folder name (letters, digits, - _ .)",
                self.name
            )));
        }
        if self.steps == 0 {
            return Err(invalid("steps must be at least 1".into()));
        }
        for (what, len) in [
            ("attention", self.attention.len()),
            ("readout", self.readout.len()),
            ("hooks", self.hooks.len()),
            ("seeds", self.seeds.len()),
        ] {
            if len == 0 {
                return Err(invalid(format!("{what} lists no value")));
            }
        }
        let repeated = |what: &str, dup: bool| {
            if dup {
                Err(invalid(format!("{what} lists a value twice")))
            } else {
                Ok(())
            }
        };
        repeated("attention", has_duplicates(&self.attention))?;
        repeated("readout", has_duplicates(&self.readout))?;
        repeated("hooks", has_duplicates(&self.hooks))?;
        repeated("seeds", has_duplicates(&self.seeds))?;
        repeated("decoder", has_duplicates(&self.decoder))?;
        repeated("keep_ratio", has_duplicates(&self.keep_ratio))?;
        repeated("backbone", has_duplicates(&self.backbone))?;

        let base = self.base_config()?;
        if !self.decoder.is_empty() && base.task() != Task::Segmentation {
            return Err(invalid(format!(
                "decoder lists {} but the runs are depth runs, which have one decoder; set \
                 base = \"segmentation\" or task = \"segmentation\"",
                self.decoder
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let decoders: Vec<Option<SegmentationDecoder>> = if self.decoder.is_empty() {
            vec![None]
        } else {
            self.decoder.iter().copied().map(Some).collect()
        };
        let ratios: Vec<Option<f64>> = if self.keep_ratio.is_empty() {
            vec![None]
        } else {
            self.keep_ratio.iter().copied().map(Some).collect()
        };
        let backbones: Vec<Option<BackboneKind>> = if self.backbone.is_empty() {
            vec![None]
        } else {
            self.backbone.iter().copied().map(Some).collect()
        };
        let mut runs = Vec::new();
        let mut outer = Vec::new();
        for &b in &backbones {
            for &r in &ratios {
                outer.extend(decoders.iter().map(|&d| (b, r, d)));
            }
        }
        for (backbone, keep_ratio, decoder) in outer {
            for &attention in &self.attention {
                for &readout in &self.readout {
                    for hooks in &self.hooks {
                        for &seed in &self.seeds {
                            let variant = Variant {
                                attention,
                                readout,
                                hooks: hooks.clone(),
                                decoder,
                                keep_ratio,
                                backbone,
                            };
                            let name = variant.run_name(seed);
                            let mut config = base.clone();
                            config.name = name.clone();
                            config.seed = seed;
                            if let Some(kind) = backbone {
                                config.model = config.model.clone().with_backbone(kind);
                            }
                            config.set_attention(attention);
                            config.model.decoder.readout = readout;
                            config.model.encoder.hooks = hooks.clone();
                            if let Some(rho) = keep_ratio {
                                config.model.encoder.keep_ratio = rho;
                            }
                            if let Some(decoder) = decoder {
                                config
                                    .set_decoder(decoder)
                                    .map_err(|e| invalid(format!("run {name}: {e}")))?;
                            }
                            config
                                .validate()
                                .map_err(|e| invalid(format!("run {name}: {e}")))?;
                            check_depict(&config)
                                .map_err(|e| invalid(format!("run {name}: {e}")))?;
                            runs.push(PlannedRun {
                                name,
                                variant,
                                seed,
                                config,
                            });
                        }
                    }
                }
            }
        }
        Ok(runs)
    }

    /// What the grid's runs predict: the `task` field, else the base preset's task.
    pub fn run_task(&self) -> Result<Task, AblateError> {
        Ok(self.base_config()?.task())
    }

    /// The configuration every run shares before its variant and seed are set.
    fn base_config(&self) -> Result<TrainConfig, AblateError> {
        let preset = self.base.clone().unwrap_or_else(|| {
            match self.dataset {
                GridDataset::Synthetic => "default",
                GridDataset::Sevenscenes => "sevenscenes",
            }
            .to_string()
        });
        let mut c = TrainConfig::preset(&preset)?;
        // The data first, so a segmentation head takes the class count of the grid's data.
        match (self.dataset, &c.data.train) {
            (GridDataset::Synthetic, SourceConfig::Synthetic { .. }) => {}
            (GridDataset::Synthetic, _) => c.data = TrainConfig::preset("default")?.data,
            (GridDataset::Sevenscenes, SourceConfig::SevenScenes { .. }) => {}
            (GridDataset::Sevenscenes, _) => c.data = TrainConfig::preset("sevenscenes")?.data,
        }
        if let Some(root) = &self.data_root {
            c.set_data_root(root.clone())
                .map_err(|e| AblateError::Invalid {
                    grid: self.name.clone(),
                    message: format!("data_root: {e}"),
                })?;
        }
        if let Some(task) = self.task {
            c.set_task(task, None).map_err(|e| AblateError::Invalid {
                grid: self.name.clone(),
                message: format!("task {}: {e}", task.name()),
            })?;
        }
        if c.task() == Task::Segmentation && self.dataset == GridDataset::Sevenscenes {
            return Err(AblateError::Invalid {
                grid: self.name.clone(),
                message: "segmentation runs need class labels, which 7-Scenes does not have; \
                          use dataset = \"synthetic\""
                    .into(),
            });
        }
        if let Some(size) = self.image_size {
            c.data.image_size = size;
        }
        if let Some(b) = self.batch_size {
            c.optim.batch_size = b;
        }
        c.optim.steps = self.steps;
        c.optim.warmup_steps = c.optim.warmup_steps.min(self.steps / 10);
        // One validation at the end (the number the table reports) and a spectral probe at the
        // start and the end; checkpoints often enough that an interruption costs little.
        c.schedule.eval_every = 0;
        c.schedule.spectral_every = self.steps;
        c.schedule.checkpoint_every = self.checkpoint_every.unwrap_or(50).min(self.steps);
        Ok(c)
    }
}

/// Whether a DEPICT decoder fits the encoder's width (its heads must divide it), which the
/// training configuration's own validation leaves to the model build: a grid refuses such a run
/// before training any other.
fn check_depict(config: &TrainConfig) -> Result<(), glassbox_decoder::DecoderError> {
    match &config.model.head {
        HeadConfig::Segmentation(head) => head
            .depict()
            .map_or(Ok(()), |d| d.validate(config.model.encoder.hidden_size)),
        HeadConfig::Depth {} => Ok(()),
    }
}

pub(super) fn has_duplicates<T: PartialEq>(items: &[T]) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, a)| items[..i].contains(a))
}

pub(super) fn attention_name(kind: AttentionKind) -> &'static str {
    kind.name()
}

pub(super) fn readout_name(readout: Readout) -> &'static str {
    match readout {
        Readout::Ignore => "ignore",
        Readout::Add => "add",
        Readout::Project => "project",
    }
}

/// `3,6,9,12` in tables, `3-6-9-12` in folder names, `3 6 9 12` in CSV cells.
pub(super) fn join_hooks(hooks: &[usize], separator: &str) -> String {
    hooks
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join(separator)
}

/// `task = "depth" | "segmentation"` in grid TOML, by [`Task::name`] (the training
/// configuration's task has no serde form of its own: it follows from the model head).
mod task_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::config::Task;

    pub fn serialize<S: Serializer>(task: &Option<Task>, s: S) -> Result<S::Ok, S::Error> {
        match task {
            Some(task) => s.serialize_str(task.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Task>, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map(Some).map_err(serde::de::Error::custom)
    }
}
