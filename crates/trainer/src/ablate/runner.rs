//! Running a grid: every planned run in sequence into `<out>/<grid>/runs/<run>/`, skipping
//! finished runs, resuming interrupted ones and refusing folders trained with another
//! configuration; the tables are written at the end and after an interruption.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::AblateError;
use super::grid::Grid;
use super::stats::{RunResult, Stat, final_record, final_sigma, mean_indicators};
use super::tables::write_tables;
use crate::checkpoint::CheckpointPaths;
use crate::config::TrainConfig;
use crate::fs::{FileError, file_error, write_atomic};
use crate::train::{TrainOptions, train};

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
    std::fs::create_dir_all(&runs_dir).map_err(file_error("create", &runs_dir))?;
    let grid_text = toml::to_string_pretty(grid).map_err(|e| AblateError::Grid {
        path: dir.join("grid.toml"),
        message: e.to_string(),
    })?;
    write_atomic(&dir.join("grid.toml"), grid_text.as_bytes())?;

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
                launch: None,
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
        let record = final_record(&run_dir);
        let depth = eval.depth().map(|d| &d.median);
        let segmentation = eval.segmentation();
        let result = RunResult {
            run: run.name.clone(),
            variant: run.variant.clone(),
            seed: run.seed,
            steps: outcome.steps,
            abs_rel: depth.map(|m| m.abs_rel),
            delta1: depth.map(|m| m.delta1),
            rmse: depth.map(|m| m.rmse),
            miou: segmentation.map(|s| s.metrics.miou),
            pixel_accuracy: segmentation.map(|s| s.metrics.pixel_accuracy),
            miou_baseline: segmentation.map(|s| s.baseline.miou),
            train_seconds: outcome.train_seconds,
            parameters: outcome.parameters,
            decoder_parameters: Some(outcome.decoder_parameters),
            seconds_per_step: (!outcome.losses.is_empty())
                .then(|| outcome.update_seconds / outcome.losses.len() as f64),
            encoder_gflops: Some(encoder_gflops(&run.config)),
            corr: last_value(&run_dir.join("metrics.jsonl"), "corr"),
            corr_dense: last_value(&run_dir.join("eval.jsonl"), "corr_dense"),
            target_overlap: last_value(&run_dir.join("eval.jsonl"), "target_overlap"),
            indicators: record.as_ref().map(mean_indicators),
            selectivity_by_layer: record
                .as_ref()
                .map(|r| r.layers.iter().map(|l| l.mean.selectivity).collect())
                .unwrap_or_default(),
            sigma: final_sigma(&run_dir),
        };
        let json = serde_json::to_string_pretty(&result)
            .map_err(|e| FileError::new("serialise", &run_dir.join(RESULT_FILE), e))?;
        write_atomic(&run_dir.join(RESULT_FILE), json.as_bytes())?;
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

/// A finished run's result, or `None` when it has none (or an unreadable one, which is redone).
fn read_result(run_dir: &Path) -> Result<Option<RunResult>, AblateError> {
    let path = run_dir.join(RESULT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(serde_json::from_str(&text).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_error("read", &path)(e).into()),
    }
}

/// Errors when `run_dir` holds a run of another configuration (device and threads may differ).
fn check_unchanged(run_dir: &Path, config: &TrainConfig) -> Result<(), AblateError> {
    let path = run_dir.join("config.toml");
    if !path.is_file() {
        return Ok(());
    }
    let mut saved = TrainConfig::from_run_file(&path)?;
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

/// Counted encoder GFLOPs of one image of the run (its image size and keep ratio, inference).
fn encoder_gflops(config: &TrainConfig) -> f64 {
    let encoder = &config.model.encoder;
    let [h, w] = config.data.image_size;
    let p = encoder.patch_size as usize;
    let grid = ((h / p) as i64, (w / p) as i64);
    glassbox_encoder::EncoderMacs::count(encoder, grid, encoder.keep_ratio).flops() / 1e9
}

/// The last value of `key` in a JSONL log of the run (sparse runs log `corr` with the loss and
/// the selection quality with each validation), if any.
fn last_value(log: &Path, key: &str) -> Option<f64> {
    crate::train::logs::read_series(log, key)
        .last()
        .map(|&(_, value)| value)
}
