//! Ablation grids (DESIGN.md section 11): a TOML grid of attention kind x readout x hooks x seeds,
//! run one training run after another into `<out>/<grid name>/runs/<run>/`, then summarised as
//! `results.csv` (one row per variant, mean and std over seeds), `runs.csv` (every run with its
//! final spectral indicators), `results.md` and figures (one bar chart per factor, indicator depth
//! profiles per variant).
//!
//! Resumability: a run with a `result.json` and the same configuration is skipped; a run with a
//! checkpoint resumes from it; a run whose saved configuration differs is refused rather than
//! silently mixed into the table. Every file is written atomically, so an interruption (Ctrl-C
//! through [`AblateOptions::interrupt`], or a crash) leaves finished runs, checkpoints and tables
//! consistent.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use glassbox_attention::AttentionKind;
use glassbox_decoder::Readout;
use glassbox_spectral::plot::{Bar, BarPanel};
use glassbox_spectral::{Indicator, Indicators, LayerIndicators, SpectralRecord};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointError, CheckpointPaths};
use crate::config::{ConfigError, DataSource, TrainConfig};
use crate::train::{TrainError, TrainOptions, train};

/// Grids shipped with the crate, by name: `default` (the reduced grid `cargo xtask ablate` runs)
/// and `full` (every factor level of DESIGN.md section 11 but the keep ratio).
pub const GRID_PRESETS: &[(&str, &str)] = &[
    ("default", include_str!("../grids/default.toml")),
    ("full", include_str!("../grids/full.toml")),
];

/// What can go wrong while running or summarising a grid.
#[derive(Debug, thiserror::Error)]
pub enum AblateError {
    #[error("cannot read grid {path}: {message}")]
    Grid { path: PathBuf, message: String },
    #[error("grid {grid}: {message}")]
    Invalid { grid: String, message: String },
    #[error(
        "{dir} was trained with a different configuration ({difference}); delete that folder to \
         retrain it, or give the grid another name"
    )]
    Changed { dir: PathBuf, difference: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("run {run}: {source}")]
    Train {
        run: String,
        #[source]
        source: Box<TrainError>,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("figure: {0}")]
    Plot(#[from] glassbox_spectral::SpectralError),
}

/// Which data every run of the grid trains and validates on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GridDataset {
    /// Rendered indoor scenes (the `default` training preset's data).
    #[default]
    Synthetic,
    /// A 7-Scenes sequence (`data_root`, default the shared red-kitchen sample).
    Sevenscenes,
}

/// An ablation grid as written in TOML; every combination of the four lists is one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Folder of the ablation (`<out>/<name>`).
    pub name: String,
    /// Training preset the runs start from; default: `default` for synthetic data,
    /// `sevenscenes` for 7-Scenes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
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
}

/// One model variant of a grid (a run without its seed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub attention: AttentionKind,
    pub readout: Readout,
    pub hooks: Vec<usize>,
}

impl Variant {
    /// `svda / project / 3,6,9,12`.
    pub fn label(&self) -> String {
        format!(
            "{} / {} / {}",
            attention_name(self.attention),
            readout_name(self.readout),
            join_hooks(&self.hooks, ",")
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

/// What one finished run contributes to the tables (`result.json` in its folder).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub run: String,
    pub variant: Variant,
    pub seed: u64,
    pub steps: usize,
    /// Final validation, median-scaled depth.
    pub abs_rel: f64,
    pub delta1: f64,
    pub rmse: f64,
    /// Wall time of the run over all its invocations (training, the final validation and the
    /// spectral probes).
    pub train_seconds: f64,
    pub parameters: i64,
    /// Final spectral indicators, mean over layers and heads (absent if the run had no probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicators: Option<Indicators>,
}

/// Mean and sample standard deviation (n - 1; 0 for a single value).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

impl Stat {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Some(Stat { mean, std })
    }
}

/// The measures of a group of runs (one variant over seeds, or one factor level).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub runs: usize,
    pub abs_rel: Stat,
    pub delta1: Stat,
    pub rmse: Stat,
    pub train_seconds: Stat,
    pub parameters: Stat,
    /// Per indicator, over the runs that have it.
    pub indicators: Vec<(Indicator, Stat)>,
}

impl GroupStats {
    /// Statistics of a non-empty set of results.
    pub fn of(results: &[&RunResult]) -> Option<GroupStats> {
        let stat =
            |f: fn(&RunResult) -> f64| Stat::of(&results.iter().map(|r| f(r)).collect::<Vec<_>>());
        let indicators = Indicator::ALL
            .into_iter()
            .filter_map(|i| {
                let values: Vec<f64> = results
                    .iter()
                    .filter_map(|r| r.indicators.and_then(|x| x.get(i)))
                    .collect();
                Some((i, Stat::of(&values)?))
            })
            .collect();
        Some(GroupStats {
            runs: results.len(),
            abs_rel: stat(|r| r.abs_rel)?,
            delta1: stat(|r| r.delta1)?,
            rmse: stat(|r| r.rmse)?,
            train_seconds: stat(|r| r.train_seconds)?,
            parameters: stat(|r| r.parameters as f64)?,
            indicators,
        })
    }

    /// The statistic of one indicator, if any run of the group has it.
    pub fn indicator(&self, indicator: Indicator) -> Option<&Stat> {
        self.indicators
            .iter()
            .find(|(i, _)| *i == indicator)
            .map(|(_, s)| s)
    }
}

/// The factors a grid varies, for the per-factor tables and bar charts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Factor {
    Attention,
    Readout,
    Hooks,
}

impl Factor {
    pub const ALL: [Factor; 3] = [Factor::Attention, Factor::Readout, Factor::Hooks];

    pub fn name(self) -> &'static str {
        match self {
            Factor::Attention => "attention",
            Factor::Readout => "readout",
            Factor::Hooks => "hooks",
        }
    }

    /// The level of this factor in a variant, as printed.
    pub fn level(self, variant: &Variant) -> String {
        match self {
            Factor::Attention => attention_name(variant.attention).into(),
            Factor::Readout => readout_name(variant.readout).into(),
            Factor::Hooks => join_hooks(&variant.hooks, ","),
        }
    }
}

/// Mean +- std over seeds of every variant, in grid order.
pub fn aggregate_variants(results: &[RunResult]) -> Vec<(Variant, GroupStats)> {
    let mut order: Vec<Variant> = Vec::new();
    for r in results {
        if !order.contains(&r.variant) {
            order.push(r.variant.clone());
        }
    }
    order
        .into_iter()
        .filter_map(|v| {
            let group: Vec<&RunResult> = results.iter().filter(|r| r.variant == v).collect();
            Some((v, GroupStats::of(&group)?))
        })
        .collect()
}

/// Mean +- std over all runs at each level of `factor` (the other factors and seeds pooled), in
/// grid order.
pub fn aggregate_factor(results: &[RunResult], factor: Factor) -> Vec<(String, GroupStats)> {
    let mut order: Vec<String> = Vec::new();
    for r in results {
        let level = factor.level(&r.variant);
        if !order.contains(&level) {
            order.push(level);
        }
    }
    order
        .into_iter()
        .filter_map(|level| {
            let group: Vec<&RunResult> = results
                .iter()
                .filter(|r| factor.level(&r.variant) == level)
                .collect();
            Some((level, GroupStats::of(&group)?))
        })
        .collect()
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
        grid.plan()?;
        Ok(grid)
    }

    /// Every run of the grid (attention, then readout, then hooks, then seed, slowest first), each
    /// with a validated configuration.
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

        let base = self.base_config()?;
        let mut runs = Vec::new();
        for &attention in &self.attention {
            for &readout in &self.readout {
                for hooks in &self.hooks {
                    for &seed in &self.seeds {
                        let variant = Variant {
                            attention,
                            readout,
                            hooks: hooks.clone(),
                        };
                        let name = format!(
                            "{}-{}-h{}-s{seed}",
                            attention_name(attention),
                            readout_name(readout),
                            join_hooks(hooks, "-")
                        );
                        let mut config = base.clone();
                        config.name = name.clone();
                        config.seed = seed;
                        config.set_attention(attention);
                        config.model.decoder.readout = readout;
                        config.model.encoder.hooks = hooks.clone();
                        config
                            .validate()
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
        Ok(runs)
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
        match (self.dataset, &c.data.source) {
            (GridDataset::Synthetic, DataSource::Synthetic { .. }) => {}
            (GridDataset::Synthetic, _) => c.data = TrainConfig::preset("default")?.data,
            (GridDataset::Sevenscenes, DataSource::SevenScenes { .. }) => {}
            (GridDataset::Sevenscenes, _) => c.data = TrainConfig::preset("sevenscenes")?.data,
        }
        if let Some(root) = &self.data_root {
            c.set_data_root(root.clone())
                .map_err(|e| AblateError::Invalid {
                    grid: self.name.clone(),
                    message: format!("data_root: {e}"),
                })?;
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

fn has_duplicates<T: PartialEq>(items: &[T]) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, a)| items[..i].contains(a))
}

fn attention_name(kind: AttentionKind) -> &'static str {
    match kind {
        AttentionKind::Standard => "standard",
        AttentionKind::Svda => "svda",
    }
}

fn readout_name(readout: Readout) -> &'static str {
    match readout {
        Readout::Ignore => "ignore",
        Readout::Add => "add",
        Readout::Project => "project",
    }
}

/// `3,6,9,12` in tables, `3-6-9-12` in folder names, `3 6 9 12` in CSV cells.
fn join_hooks(hooks: &[usize], separator: &str) -> String {
    hooks
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join(separator)
}

/// How a grid is run (not part of it).
#[derive(Clone, Debug, Default)]
pub struct AblateOptions {
    /// Folder holding ablation folders (`ablations`).
    pub out: PathBuf,
    /// Overrides the runs' device (`auto`, `cpu`, `cuda:N`).
    pub device: Option<String>,
    /// Overrides the runs' intra-op thread count.
    pub threads: Option<usize>,
    /// No progress bars or log lines.
    pub quiet: bool,
    /// Set to stop after the current update of the current run, with a checkpoint.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// What a grid invocation did.
#[derive(Clone, Debug)]
pub struct AblationSummary {
    /// `<out>/<grid name>`.
    pub dir: PathBuf,
    pub planned: usize,
    /// Runs trained (fully or resumed) by this invocation.
    pub trained: Vec<String>,
    /// Runs skipped because their result was already there.
    pub skipped: Vec<String>,
    /// Results of every finished run, in grid order.
    pub results: Vec<RunResult>,
    /// The invocation stopped at an interruption before the grid was done.
    pub interrupted: bool,
}

/// `result.json` of a run folder.
pub const RESULT_FILE: &str = "result.json";

/// Runs the grid into `<out>/<name>`: skips finished runs, resumes partial ones, trains the rest
/// in sequence, then writes the tables and figures (also after an interruption, from the runs
/// finished so far).
pub fn run_grid(grid: &Grid, options: &AblateOptions) -> Result<AblationSummary, AblateError> {
    let mut planned = grid.plan()?;
    for run in &mut planned {
        if let Some(device) = &options.device {
            run.config.device = device.clone();
        }
        if let Some(threads) = options.threads {
            run.config.threads = threads;
        }
    }
    let dir = options.out.join(&grid.name);
    let runs_dir = dir.join("runs");
    std::fs::create_dir_all(&runs_dir).map_err(io_error(&runs_dir))?;
    let grid_text = toml::to_string_pretty(grid).map_err(|e| AblateError::Grid {
        path: dir.join("grid.toml"),
        message: e.to_string(),
    })?;
    checkpoint::write_atomic(&dir.join("grid.toml"), grid_text.as_bytes())?;

    // Refuse a changed configuration before any work, not after hours of other runs.
    for run in &planned {
        check_unchanged(&runs_dir.join(&run.name), &run.config)?;
    }

    let mut summary = AblationSummary {
        dir: dir.clone(),
        planned: planned.len(),
        trained: Vec::new(),
        skipped: Vec::new(),
        results: Vec::new(),
        interrupted: false,
    };
    let started = Instant::now();
    let mut trained_seconds = Vec::new();
    for (i, run) in planned.iter().enumerate() {
        let run_dir = runs_dir.join(&run.name);
        if let Some(result) = read_result(&run_dir)? {
            if !options.quiet {
                println!("[{}/{}] {}: done, skipped", i + 1, planned.len(), run.name);
            }
            summary.skipped.push(run.name.clone());
            summary.results.push(result);
            continue;
        }
        let resume = CheckpointPaths::new(&run_dir, "last").record.is_file();
        if !options.quiet {
            let left = planned.len() - i;
            let eta = Stat::of(&trained_seconds)
                .map(|s| format!(", about {:.0} min left", s.mean * left as f64 / 60.0))
                .unwrap_or_default();
            println!(
                "[{}/{}] {}: {} ({} steps){eta}",
                i + 1,
                planned.len(),
                run.name,
                if resume { "resuming" } else { "training" },
                run.config.optim.steps
            );
        }
        let run_started = Instant::now();
        let outcome = train(
            &run.config,
            &TrainOptions {
                run_dir: run_dir.clone(),
                resume,
                quiet: options.quiet,
                stop_after: None,
                report: true,
                interrupt: options.interrupt.clone(),
            },
        )
        .map_err(|source| AblateError::Train {
            run: run.name.clone(),
            source: Box::new(source),
        })?;
        if outcome.interrupted {
            summary.interrupted = true;
            break;
        }
        let Some(eval) = outcome.eval else {
            return Err(AblateError::Invalid {
                grid: grid.name.clone(),
                message: format!("run {} ended without a final validation", run.name),
            });
        };
        let result = RunResult {
            run: run.name.clone(),
            variant: run.variant.clone(),
            seed: run.seed,
            steps: outcome.steps,
            abs_rel: eval.median.abs_rel,
            delta1: eval.median.delta1,
            rmse: eval.median.rmse,
            train_seconds: outcome.train_seconds,
            parameters: outcome.parameters,
            indicators: final_record(&run_dir).map(|r| mean_indicators(&r)),
        };
        let json = serde_json::to_string_pretty(&result).map_err(|e| AblateError::Io {
            path: run_dir.join(RESULT_FILE),
            message: e.to_string(),
        })?;
        checkpoint::write_atomic(&run_dir.join(RESULT_FILE), json.as_bytes())?;
        trained_seconds.push(run_started.elapsed().as_secs_f64());
        summary.trained.push(run.name.clone());
        summary.results.push(result);
    }
    write_tables(grid, &dir, &summary.results, planned.len())?;
    if !options.quiet {
        println!(
            "{} of {} runs finished ({} trained now, {} skipped) in {:.1} min",
            summary.results.len(),
            planned.len(),
            summary.trained.len(),
            summary.skipped.len(),
            started.elapsed().as_secs_f64() / 60.0
        );
    }
    Ok(summary)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> AblateError {
    let path = path.to_path_buf();
    move |e| AblateError::Io {
        path,
        message: e.to_string(),
    }
}

/// A finished run's result, or `None` when it has none (or an unreadable one, which is redone).
fn read_result(run_dir: &Path) -> Result<Option<RunResult>, AblateError> {
    let path = run_dir.join(RESULT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(serde_json::from_str(&text).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// Errors when `run_dir` holds a run of another configuration (device and threads may differ).
fn check_unchanged(run_dir: &Path, config: &TrainConfig) -> Result<(), AblateError> {
    let path = run_dir.join("config.toml");
    if !path.is_file() {
        return Ok(());
    }
    let mut saved = TrainConfig::from_file(&path)?;
    saved.device = config.device.clone();
    saved.threads = config.threads;
    let (old, new) = (saved.to_toml()?, config.to_toml()?);
    if old == new {
        return Ok(());
    }
    let difference = old
        .lines()
        .zip(new.lines())
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("saved `{}`, grid wants `{}`", a.trim(), b.trim()))
        .unwrap_or_else(|| "the saved config.toml has other fields".into());
    Err(AblateError::Changed {
        dir: run_dir.into(),
        difference,
    })
}

/// The last record of a run's `spectral.jsonl`, if it has one.
fn final_record(run_dir: &Path) -> Option<SpectralRecord> {
    glassbox_spectral::read_spectral_log(&run_dir.join(glassbox_spectral::SPECTRAL_FILE))
        .ok()?
        .into_iter()
        .max_by_key(|r| r.step)
}

/// Mean over layers of the per-layer head means (= mean over all heads when layers have equal
/// head counts).
fn mean_indicators(record: &SpectralRecord) -> Indicators {
    let means: Vec<Indicators> = record.layers.iter().map(|l| l.mean).collect();
    Indicators::mean(&means).unwrap_or_default()
}

/// Per layer, the mean over records (seeds) of the head means: one depth profile per variant.
fn mean_record(records: &[SpectralRecord]) -> Option<SpectralRecord> {
    let first = records.first()?;
    let layers = first
        .layers
        .iter()
        .map(|layer| {
            let means: Vec<Indicators> = records
                .iter()
                .filter_map(|r| r.layers.iter().find(|l| l.layer == layer.layer))
                .map(|l| l.mean)
                .collect();
            LayerIndicators {
                layer: layer.layer,
                heads: Vec::new(),
                mean: Indicators::mean(&means).unwrap_or_default(),
            }
        })
        .collect();
    Some(SpectralRecord::from_layers(first.step, layers))
}

/// The indicators of DESIGN.md section 9 as table columns (robustness to sigma noise is SVDA only).
const INDICATOR_COLUMNS: [(Indicator, &str); 8] = [
    (Indicator::SpectralEntropy, "entropy"),
    (Indicator::EffectiveRank, "eff. rank"),
    (Indicator::HoyerSparsity, "Hoyer"),
    (Indicator::SmallSigmaShare, "small σ"),
    (Indicator::AngularAlignment, "alignment"),
    (Indicator::Selectivity, "selectivity"),
    (Indicator::RobustnessInput, "robust (input)"),
    (Indicator::RobustnessSigma, "robust (σ)"),
];

/// Writes `results.csv`, `runs.csv`, `results.md` and `figures/` of an ablation folder from the
/// results of its finished runs (`planned` = how many runs the grid has).
pub fn write_tables(
    grid: &Grid,
    dir: &Path,
    results: &[RunResult],
    planned: usize,
) -> Result<(), AblateError> {
    checkpoint::write_atomic(&dir.join("results.csv"), results_csv(results).as_bytes())?;
    checkpoint::write_atomic(&dir.join("runs.csv"), runs_csv(results).as_bytes())?;
    let figures = write_figures(dir, results)?;
    let md = results_markdown(grid, results, planned, &figures);
    checkpoint::write_atomic(&dir.join("results.md"), md.as_bytes())?;
    Ok(())
}

fn fmt_opt(stat: Option<&Stat>, digits: usize) -> (String, String) {
    stat.map_or((String::new(), String::new()), |s| {
        (
            format!("{:.*}", digits, s.mean),
            format!("{:.*}", digits, s.std),
        )
    })
}

/// One row per variant: mean and std over seeds of every measure and indicator.
pub fn results_csv(results: &[RunResult]) -> String {
    let mut out = String::from(
        "attention,readout,hooks,seeds,abs_rel_mean,abs_rel_std,delta1_mean,delta1_std,\
         rmse_mean,rmse_std,train_seconds_mean,train_seconds_std,parameters",
    );
    for (i, _) in INDICATOR_COLUMNS {
        let _ = write!(out, ",{0}_mean,{0}_std", i.name());
    }
    out.push('\n');
    for (v, s) in aggregate_variants(results) {
        let _ = write!(
            out,
            "{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.2},{:.2},{:.0}",
            attention_name(v.attention),
            readout_name(v.readout),
            join_hooks(&v.hooks, " "),
            s.runs,
            s.abs_rel.mean,
            s.abs_rel.std,
            s.delta1.mean,
            s.delta1.std,
            s.rmse.mean,
            s.rmse.std,
            s.train_seconds.mean,
            s.train_seconds.std,
            s.parameters.mean
        );
        for (i, _) in INDICATOR_COLUMNS {
            let (m, d) = fmt_opt(s.indicator(i), 6);
            let _ = write!(out, ",{m},{d}");
        }
        out.push('\n');
    }
    out
}

/// One row per run, with its final spectral indicators.
pub fn runs_csv(results: &[RunResult]) -> String {
    let mut out = String::from(
        "run,attention,readout,hooks,seed,steps,abs_rel,delta1,rmse,train_seconds,parameters",
    );
    for (i, _) in INDICATOR_COLUMNS {
        let _ = write!(out, ",{}", i.name());
    }
    out.push('\n');
    for r in results {
        let _ = write!(
            out,
            "{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.2},{}",
            r.run,
            attention_name(r.variant.attention),
            readout_name(r.variant.readout),
            join_hooks(&r.variant.hooks, " "),
            r.seed,
            r.steps,
            r.abs_rel,
            r.delta1,
            r.rmse,
            r.train_seconds,
            r.parameters
        );
        for (i, _) in INDICATOR_COLUMNS {
            let v = r
                .indicators
                .and_then(|x| x.get(i))
                .map(|v| format!("{v:.6}"))
                .unwrap_or_default();
            let _ = write!(out, ",{v}");
        }
        out.push('\n');
    }
    out
}

fn pm(s: &Stat, digits: usize) -> String {
    format!("{:.*} ± {:.*}", digits, s.mean, digits, s.std)
}

fn results_markdown(
    grid: &Grid,
    results: &[RunResult],
    planned: usize,
    figures: &[PathBuf],
) -> String {
    let mut md = format!("# Ablation `{}`\n\n", grid.name);
    let data = match grid.dataset {
        GridDataset::Synthetic => "synthetic indoor scenes".to_string(),
        GridDataset::Sevenscenes => "7-Scenes".to_string(),
    };
    let _ = writeln!(
        md,
        "{} of {planned} runs finished. Budget: {} steps per run on {data}; seeds {}. \
         Metrics: final validation, median-scaled depth; mean ± std (sample, n - 1) over seeds. \
         Train time: wall time of the run, including its final validation and spectral probes.\n",
        results.len(),
        grid.steps,
        grid.seeds
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    md.push_str("## Variants\n\n| attention | readout | hooks | seeds | AbsRel | δ1 | RMSE | train time (s) | parameters |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (v, s) in aggregate_variants(results) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            attention_name(v.attention),
            readout_name(v.readout),
            join_hooks(&v.hooks, ","),
            s.runs,
            pm(&s.abs_rel, 4),
            pm(&s.delta1, 4),
            pm(&s.rmse, 4),
            pm(&s.train_seconds, 1),
            s.parameters.mean
        );
    }
    for factor in Factor::ALL {
        let levels = aggregate_factor(results, factor);
        if levels.len() < 2 {
            continue;
        }
        let _ = writeln!(
            md,
            "\n## By {} (other factors and seeds pooled)\n\n| {} | runs | AbsRel | δ1 | RMSE | train time (s) |\n|---|---:|---:|---:|---:|---:|",
            factor.name(),
            factor.name()
        );
        for (level, s) in levels {
            let _ = writeln!(
                md,
                "| {level} | {} | {} | {} | {} | {} |",
                s.runs,
                pm(&s.abs_rel, 4),
                pm(&s.delta1, 4),
                pm(&s.rmse, 4),
                pm(&s.train_seconds, 1)
            );
        }
    }
    md.push_str(
        "\n## Final spectral indicators of every run (mean over layers and heads)\n\n| run |",
    );
    for (_, title) in INDICATOR_COLUMNS {
        let _ = write!(md, " {title} |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(INDICATOR_COLUMNS.len()));
    md.push('\n');
    for r in results {
        let _ = write!(md, "| {} |", r.run);
        for (i, _) in INDICATOR_COLUMNS {
            let v = r
                .indicators
                .and_then(|x| x.get(i))
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "–".into());
            let _ = write!(md, " {v} |");
        }
        md.push('\n');
    }
    if !figures.is_empty() {
        md.push_str("\n## Figures\n\n");
        for f in figures
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "png"))
        {
            let rel = format!(
                "figures/{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            );
            let _ = writeln!(md, "![{rel}]({rel})\n");
        }
    }
    md
}

/// Bar charts per factor (levels with 2+ values) and indicator depth profiles per variant (one
/// figure per hook set, so a figure compares at most attention x readout lines).
fn write_figures(dir: &Path, results: &[RunResult]) -> Result<Vec<PathBuf>, AblateError> {
    let figures = dir.join("figures");
    let mut written = Vec::new();
    for factor in Factor::ALL {
        let levels = aggregate_factor(results, factor);
        if levels.len() < 2 {
            continue;
        }
        let panel = |title: &str, y: &str, f: fn(&GroupStats) -> Stat| BarPanel {
            title: format!("{title} by {}", factor.name()),
            y_desc: y.into(),
            bars: levels
                .iter()
                .map(|(level, s)| Bar {
                    label: level.clone(),
                    mean: f(s).mean,
                    std: f(s).std,
                })
                .collect(),
        };
        let panels = [
            panel("AbsRel", "AbsRel (lower is better)", |s| s.abs_rel),
            panel("δ1", "δ1 (higher is better)", |s| s.delta1),
            panel("RMSE", "RMSE", |s| s.rmse),
            panel("train time", "seconds per run", |s| s.train_seconds),
        ];
        written.extend(glassbox_spectral::plot::bar_panels(
            &panels,
            &figures.join(format!("factor-{}", factor.name())),
        )?);
    }
    let mut hook_sets: Vec<Vec<usize>> = Vec::new();
    for r in results {
        if !hook_sets.contains(&r.variant.hooks) {
            hook_sets.push(r.variant.hooks.clone());
        }
    }
    for hooks in hook_sets {
        let mut profiles: Vec<(String, SpectralRecord)> = Vec::new();
        for (variant, _) in aggregate_variants(results) {
            if variant.hooks != hooks {
                continue;
            }
            let records: Vec<SpectralRecord> = results
                .iter()
                .filter(|r| r.variant == variant)
                .filter_map(|r| final_record(&dir.join("runs").join(&r.run)))
                .collect();
            if let Some(mean) = mean_record(&records) {
                let label = format!(
                    "{} / {}",
                    attention_name(variant.attention),
                    readout_name(variant.readout)
                );
                profiles.push((label, mean));
            }
        }
        if profiles.is_empty() {
            continue;
        }
        let refs: Vec<(String, &SpectralRecord)> =
            profiles.iter().map(|(l, r)| (l.clone(), r)).collect();
        let stem = figures.join(format!("depth-profiles-h{}", join_hooks(&hooks, "-")));
        written.extend(glassbox_spectral::plot::depth_profiles(&refs, &stem)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(attention: AttentionKind, readout: Readout, seed: u64, abs_rel: f64) -> RunResult {
        RunResult {
            run: format!(
                "{}-{}-s{seed}",
                attention_name(attention),
                readout_name(readout)
            ),
            variant: Variant {
                attention,
                readout,
                hooks: vec![3, 6, 9, 12],
            },
            seed,
            steps: 10,
            abs_rel,
            delta1: 1.0 - abs_rel,
            rmse: 2.0 * abs_rel,
            train_seconds: 100.0 + seed as f64,
            parameters: 1000,
            indicators: Some(Indicators {
                selectivity: abs_rel / 10.0,
                ..Indicators::default()
            }),
        }
    }

    #[test]
    fn stat_is_the_mean_and_the_sample_standard_deviation() {
        let s = Stat::of(&[0.1, 0.2, 0.3]).unwrap();
        assert!((s.mean - 0.2).abs() < 1e-12);
        assert!((s.std - 0.1).abs() < 1e-12, "{}", s.std);
        assert_eq!(
            Stat::of(&[4.0]).unwrap(),
            Stat {
                mean: 4.0,
                std: 0.0
            }
        );
        assert_eq!(Stat::of(&[]), None);
    }

    #[test]
    fn variants_average_over_seeds_and_factors_pool_the_other_factors() {
        use AttentionKind::{Standard, Svda};
        use Readout::{Add, Project};
        let results = vec![
            result(Standard, Project, 0, 0.20),
            result(Standard, Project, 1, 0.30),
            result(Svda, Project, 0, 0.10),
            result(Svda, Project, 1, 0.20),
            result(Svda, Add, 0, 0.40),
            result(Svda, Add, 1, 0.60),
        ];
        let variants = aggregate_variants(&results);
        assert_eq!(variants.len(), 3);
        let (v, s) = &variants[0];
        assert_eq!(v.label(), "standard / project / 3,6,9,12");
        assert_eq!(s.runs, 2);
        // 0.20 and 0.30: mean 0.25, sample std sqrt(2 * 0.05^2 / 1) = 0.070711.
        assert!((s.abs_rel.mean - 0.25).abs() < 1e-12);
        assert!((s.abs_rel.std - 0.070_710_678).abs() < 1e-8);
        assert!((s.delta1.mean - 0.75).abs() < 1e-12);
        assert!((s.rmse.std - 0.141_421_356).abs() < 1e-8);
        assert!((s.train_seconds.mean - 100.5).abs() < 1e-12);
        assert!((s.indicator(Indicator::Selectivity).unwrap().mean - 0.025).abs() < 1e-12);
        assert!(s.indicator(Indicator::SpectralEntropy).is_none());
        let (_, add) = &variants[2];
        assert!((add.abs_rel.mean - 0.5).abs() < 1e-12);
        assert!((add.abs_rel.std - 0.141_421_356).abs() < 1e-8);

        // SVDA pools project and add: 0.1, 0.2, 0.4, 0.6 -> mean 0.325,
        // std sqrt((0.050625 + 0.015625 + 0.005625 + 0.075625) / 3) = 0.221736.
        let attention = aggregate_factor(&results, Factor::Attention);
        assert_eq!(attention[0].0, "standard");
        assert_eq!(attention[1].0, "svda");
        assert_eq!(attention[1].1.runs, 4);
        assert!((attention[1].1.abs_rel.mean - 0.325).abs() < 1e-12);
        assert!((attention[1].1.abs_rel.std - 0.221_735_578).abs() < 1e-8);
        let readout = aggregate_factor(&results, Factor::Readout);
        assert_eq!(
            readout
                .iter()
                .map(|(l, s)| (l.as_str(), s.runs))
                .collect::<Vec<_>>(),
            vec![("project", 4), ("add", 2)]
        );
        assert_eq!(aggregate_factor(&results, Factor::Hooks).len(), 1);
    }

    #[test]
    fn csv_tables_hold_one_row_per_variant_and_per_run() {
        use AttentionKind::Svda;
        let results = vec![
            result(Svda, Readout::Ignore, 0, 0.25),
            result(Svda, Readout::Ignore, 1, 0.35),
        ];
        let variants = results_csv(&results);
        let lines: Vec<&str> = variants.lines().collect();
        assert_eq!(lines.len(), 2);
        let header: Vec<&str> = lines[0].split(',').collect();
        let row: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(header.len(), row.len());
        let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!(col("hooks"), "3 6 9 12");
        assert_eq!(col("seeds"), "2");
        assert_eq!(col("abs_rel_mean"), "0.300000");
        assert_eq!(col("abs_rel_std"), "0.070711");
        assert_eq!(col("selectivity_mean"), "0.030000");
        assert_eq!(col("spectral_entropy_mean"), "");
        let runs = runs_csv(&results);
        assert_eq!(runs.lines().count(), 3);
        assert!(
            runs.lines()
                .nth(2)
                .unwrap()
                .starts_with("svda-ignore-s1,svda,ignore,3 6 9 12,1,10,0.350000")
        );
    }

    #[test]
    fn the_shipped_grids_parse_and_plan_every_combination() {
        let default = Grid::load("default").unwrap();
        let runs = default.plan().unwrap();
        assert_eq!(runs.len(), 12, "standard|svda x 3 readouts x 2 seeds");
        assert!(runs.iter().all(|r| r.config.optim.steps == default.steps));
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names[0], "standard-ignore-h3-6-9-12-s0");
        assert_eq!(names[11], "svda-project-h3-6-9-12-s1");
        assert_eq!(runs[11].config.model.encoder.attention, AttentionKind::Svda);
        assert_eq!(runs[11].config.model.decoder.readout, Readout::Project);
        let full = Grid::load("full").unwrap().plan().unwrap();
        assert_eq!(
            full.len(),
            2 * 3
                * 3
                * full
                    .iter()
                    .filter(|r| r.name.starts_with("standard-ignore-h3-6-9-12-"))
                    .count()
        );
    }

    #[test]
    fn bad_grids_are_refused_naming_the_problem() {
        let base =
            "name = \"g\"\nsteps = 4\nattention = [\"svda\"]\nreadout = [\"add\"]\nseeds = [0]\n";
        let err = |extra: &str| {
            Grid::parse(&format!("{base}{extra}"), Path::new("grid.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = err("hooks = [[3, 6, 9, 13]]\n");
        assert!(
            e.contains("hook 13") && e.contains("svda-add-h3-6-9-13-s0"),
            "{e}"
        );
        let e = err("hooks = []\n");
        assert!(e.contains("hooks lists no value"), "{e}");
        let e = err("hooks = [[3, 6, 9, 12], [3, 6, 9, 12]]\n");
        assert!(e.contains("hooks lists a value twice"), "{e}");
        let e = err("hooks = [[3, 6, 9, 12]]\nreadouts = [\"add\"]\n");
        assert!(e.contains("grid.toml") && e.contains("readouts"), "{e}");
        let e = Grid::load("no-such-grid").unwrap_err().to_string();
        assert!(
            e.contains("no-such-grid") && e.contains("default, full"),
            "{e}"
        );
    }
}
