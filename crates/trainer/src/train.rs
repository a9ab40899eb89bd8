//! The training loop (DESIGN.md section 11): AdamW with backbone/decoder learning rates, warm-up +
//! cosine decay, gradient clipping and accumulation; MiDaS loss on disparity or SILog on metric
//! depth; periodic validation; atomic checkpoints with the optimiser state; logs and a report.
//!
//! Determinism: the batch of each micro-step is a function of (seed, step) ([`crate::data`]), the
//! torch RNG is re-seeded from (seed, step) before every step, and the optimiser moments are saved
//! with the weights. So training to step k, stopping and resuming gives the same losses as an
//! uninterrupted run on the CPU.
//!
//! A NaN or infinite loss (or gradient) stops the run with [`TrainError::NonFinite`] naming the
//! step; nothing is written after it, so `last.safetensors` stays the last good checkpoint.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use glassbox_losses::LossConfig;
use glassbox_metrics::{Crop, DepthEvalConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tch::{Device, Kind, Tensor, nn};

use crate::checkpoint::{self, CheckpointError, CheckpointPaths, TrainState};
use crate::config::TrainConfig;
use crate::data::{self, Batch, Split, TensorSet};
use crate::eval::{self, EvalReport};
use crate::model::Dpt;
use crate::optim::{AdamW, lr_factor};
use crate::probe::{Probe, ProbeOptions};
use crate::report;

/// Everything that stops a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Data(#[from] data::DataLoadError),
    #[error(transparent)]
    Loss(#[from] glassbox_losses::LossError),
    #[error(transparent)]
    Eval(#[from] eval::EvalError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
    #[error(
        "step {step}: the {what} is {value}; stopping. The last good checkpoint ({last}) was \
         left untouched"
    )]
    NonFinite {
        step: usize,
        what: &'static str,
        value: f64,
        last: String,
    },
    #[error("cannot resume: {path} has no checkpoint (run without --resume to start afresh)")]
    NothingToResume { path: PathBuf },
    #[error("cannot resume: {message}")]
    Resume { message: String },
    #[error("{action} {path}: {message}")]
    Io {
        action: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("unknown device {0:?}; expected auto, cpu, cuda or cuda:N")]
    Device(String),
}

/// How a run is carried out (not part of its configuration).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// The run folder (`runs/<name>`).
    pub run_dir: PathBuf,
    /// Continue from `last.safetensors` in the run folder.
    pub resume: bool,
    /// No progress bar and no log lines.
    pub quiet: bool,
    /// Stop (with a checkpoint) after this many steps, as an interruption would.
    pub stop_after: Option<usize>,
    /// Write the report (evaluation table, loss curve, contact sheet) at the end.
    pub report: bool,
    /// Set (e.g. by a Ctrl-C handler) to stop after the current update with a checkpoint, so an
    /// interruption loses no finished step.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    /// Steps done in total (including those before a resume).
    pub steps: usize,
    /// (step, loss) of this invocation's updates.
    pub losses: Vec<(usize, f64)>,
    /// The final validation, when the run reached its end.
    pub eval: Option<EvalReport>,
    /// Wall time of this invocation.
    pub seconds: f64,
    /// Wall time of the whole run, including the invocations before a resume.
    pub train_seconds: f64,
    /// The run stopped early because `interrupt` was set.
    pub interrupted: bool,
    /// Trainable parameters of the model.
    pub parameters: i64,
}

/// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
pub fn resolve_device(name: &str) -> Result<Device, TrainError> {
    match name {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| TrainError::Device(other.to_string())),
    }
}

/// libtorch has one CPU generator per process. Seeding it and drawing from it happen under this
/// lock, so a run stays deterministic while other runs in the same process (parallel tests, a
/// driver running several trainers) seed and draw too.
static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Runs `draw` with the global torch generator seeded from `seed`, excluding every other seeded
/// section of this crate.
fn with_torch_seed<T>(seed: u64, draw: impl FnOnce() -> T) -> T {
    let _guard = TORCH_RNG.lock().unwrap_or_else(PoisonError::into_inner);
    tch::manual_seed(seed as i64);
    draw()
}

/// Physical cores (Linux: distinct (physical id, core id) pairs in /proc/cpuinfo), else the
/// logical count.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::BTreeSet::new();
    let mut physical = String::new();
    for line in info.lines() {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim() {
                "physical id" => physical = v.trim().to_string(),
                "core id" => {
                    cores.insert((physical.clone(), v.trim().to_string()));
                }
                _ => {}
            }
        }
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.to_path_buf();
    move |e| TrainError::Io {
        action,
        path,
        message: e.to_string(),
    }
}

/// The training loss of a disparity prediction against metric depth.
pub fn depth_loss(
    config: &TrainConfig,
    disparity: &Tensor,
    batch: &Batch,
) -> Result<Tensor, TrainError> {
    let mask = batch.mask.logical_and(&batch.depth.gt(0.0));
    let loss = config.loss.loss.depth()?;
    Ok(match config.loss.loss {
        LossConfig::Silog(_) => {
            let depth = config.loss.to_depth.apply(disparity)?;
            loss.compute(&depth, &batch.depth, &mask)?
        }
        _ => {
            let target = batch
                .depth
                .clamp_min(1e-6)
                .reciprocal()
                .where_self(&mask, &batch.depth.zeros_like());
            let midas = loss.compute(disparity, &target, &mask)?;
            let w = config.loss.scale_only_weight;
            if w > 0.0 {
                midas + scale_only_term(disparity, &target, &mask) * w
            } else {
                midas
            }
        }
    })
}

/// Mean over images of `mean |x / mean(x) - d / mean(d)|` on valid pixels (means over valid
/// pixels, floored at 1e-6): disparity up to scale but not shift.
fn scale_only_term(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(Kind::Float);
    let count = m
        .sum_dim_intlist([1, 2].as_slice(), true, Kind::Float)
        .clamp_min(1.0);
    let mean = |t: &Tensor| (t * &m).sum_dim_intlist([1, 2].as_slice(), true, Kind::Float) / &count;
    let p = pred / mean(pred).clamp_min(1e-6);
    let d = target / mean(target).clamp_min(1e-6);
    let per_image = mean(&(p - d).abs());
    per_image.mean(Kind::Float)
}

/// The validation protocol of a run: its depth range, no crop (training-size images).
pub fn validation_protocol(config: &TrainConfig) -> DepthEvalConfig {
    DepthEvalConfig {
        min_depth: config.schedule.min_depth,
        max_depth: config.schedule.max_depth,
        crop: Crop::None,
        alignment: glassbox_metrics::Alignment::Median,
    }
}

/// A model, its variables and optimiser, built from a config on a device.
pub struct Trainer {
    pub config: TrainConfig,
    pub device: Device,
    pub vs: nn::VarStore,
    pub model: Dpt,
    pub optimizer: AdamW,
    /// Updates done.
    pub step: usize,
    pub best_abs_rel: Option<f64>,
    /// Wall time spent on this run so far (saved in checkpoints, so it survives resumes).
    pub seconds: f64,
}

impl Trainer {
    /// Fresh weights from the config's seed.
    pub fn new(config: &TrainConfig, device: Device) -> Result<Self, TrainError> {
        config.validate()?;
        let vs = nn::VarStore::new(device);
        let model = with_torch_seed(config.seed, || Dpt::new(&vs.root(), &config.model))?;
        let optimizer = AdamW::new(&vs, &config.optim);
        Ok(Self {
            config: config.clone(),
            device,
            vs,
            model,
            optimizer,
            step: 0,
            best_abs_rel: None,
            seconds: 0.0,
        })
    }

    /// One optimiser update (with `accumulate` micro-batches) on `train`; returns the loss (mean
    /// over micro-batches) or a [`TrainError::NonFinite`] without changing any weight.
    pub fn train_step(&mut self, train: &TensorSet, last: &str) -> Result<f64, TrainError> {
        let step = self.step;
        let c = &self.config;
        let factor = lr_factor(
            step,
            c.optim.warmup_steps,
            c.optim.steps,
            c.optim.min_lr_ratio,
        );
        let accumulate = c.optim.accumulate;
        self.optimizer.zero_grad();
        let step_seed = data::splitmix64(c.seed ^ (step as u64).wrapping_mul(0x9e37));
        let total = with_torch_seed(step_seed, || -> Result<f64, TrainError> {
            let mut total = 0.0;
            for k in 0..accumulate {
                let micro = (step * accumulate + k) as u64;
                let (indices, flips) =
                    data::batch_plan(train.len(), c.optim.batch_size, c.seed, micro, c.data.hflip);
                let batch = train.batch(&indices, &flips, self.device);
                let disparity = self.model.depth_t(&batch.rgb, true)?;
                let loss = depth_loss(c, &disparity, &batch)? / accumulate as f64;
                let value = loss.double_value(&[]);
                if !value.is_finite() {
                    return Err(TrainError::NonFinite {
                        step: step + 1,
                        what: "loss",
                        value,
                        last: last.to_string(),
                    });
                }
                loss.backward();
                total += value;
            }
            Ok(total)
        })?;
        self.optimizer
            .step(factor)
            .map_err(|value| TrainError::NonFinite {
                step: step + 1,
                what: "gradient norm",
                value,
                last: last.to_string(),
            })?;
        self.step += 1;
        Ok(total)
    }

    /// Saves `last` (weights + optimiser + record) in `dir`.
    pub fn save_last(&self, dir: &Path, loss: f64) -> Result<(), TrainError> {
        let state = TrainState {
            step: self.step,
            seed: self.config.seed,
            loss,
            best_abs_rel: self.best_abs_rel,
            seconds: self.seconds,
            weights_checksum: 0,
            optimizer_checksum: None,
        };
        checkpoint::save(
            &CheckpointPaths::new(dir, "last"),
            &self.vs,
            Some(self.optimizer.state()),
            &state,
        )?;
        Ok(())
    }

    /// Restores weights, optimiser and step from `last` in `dir`; a corrupted or mismatched
    /// checkpoint is refused and left as it is.
    pub fn resume(&mut self, dir: &Path) -> Result<TrainState, TrainError> {
        let paths = CheckpointPaths::new(dir, "last");
        if !paths.record.is_file() {
            return Err(TrainError::NothingToResume { path: dir.into() });
        }
        let (state, optimizer) = checkpoint::load(&paths, &mut self.vs)?;
        let optimizer = optimizer.ok_or_else(|| TrainError::Resume {
            message: format!("{} holds no optimiser state", paths.record.display()),
        })?;
        self.optimizer
            .load_state(optimizer)
            .map_err(|message| TrainError::Resume {
                message: format!("{}: {message}", paths.optimizer.display()),
            })?;
        if state.seed != self.config.seed {
            return Err(TrainError::Resume {
                message: format!(
                    "the checkpoint was trained with seed {}, the config says {}",
                    state.seed, self.config.seed
                ),
            });
        }
        self.step = state.step;
        self.best_abs_rel = state.best_abs_rel;
        self.seconds = state.seconds;
        Ok(state)
    }
}

/// Keeps the lines of a JSONL log whose `step` is at most `step` (used on resume, so the log
/// continues without the steps after the checkpoint).
fn truncate_log(path: &Path, step: usize) -> Result<(), TrainError> {
    if !path.is_file() {
        return Ok(());
    }
    let file = File::open(path).map_err(io_err("read", path))?;
    let kept: Vec<String> = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(path, text).map_err(io_err("write", path))
}

fn append(path: &Path, value: &serde_json::Value) -> Result<(), TrainError> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("open", path))?;
    writeln!(file, "{value}").map_err(io_err("append to", path))
}

/// Progress display: an indicatif bar on a terminal, plain lines otherwise, nothing when quiet.
struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
}

impl Progress {
    fn new(quiet: bool, start: usize, total: usize) -> Self {
        if quiet {
            return Self {
                bar: None,
                lines: false,
            };
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .expect("a valid template"),
            );
            bar.set_position(start as u64);
            Self {
                bar: Some(bar),
                lines: false,
            }
        } else {
            Self {
                bar: None,
                lines: true,
            }
        }
    }

    fn update(&self, step: usize, total: usize, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            bar.set_message(message.to_string());
        } else if self.lines && (step.is_multiple_of((total / 20).max(1)) || step == total) {
            eprintln!("step {step}/{total} {message}");
        }
    }

    fn log(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None if self.lines => eprintln!("{message}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs (or resumes) a training run as configured, writing everything into `options.run_dir`.
pub fn train(config: &TrainConfig, options: &TrainOptions) -> Result<TrainSummary, TrainError> {
    config.validate()?;
    let started = Instant::now();
    let dir = &options.run_dir;
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let device = resolve_device(&config.device)?;
    let threads = if config.threads == 0 {
        physical_cores()
    } else {
        config.threads
    };
    tch::set_num_threads(threads as i32);

    let train_set = data::load_split(&config.data, config.seed, Split::Train)?;
    let val_set = data::load_split(&config.data, config.seed, Split::Val)?;
    let mut trainer = Trainer::new(config, device)?;
    let metrics_log = dir.join("metrics.jsonl");
    let eval_log = dir.join("eval.jsonl");
    let last_name = CheckpointPaths::new(dir, "last")
        .weights
        .display()
        .to_string();
    let spectral_logs = [
        dir.join(glassbox_spectral::SPECTRAL_FILE),
        dir.join(glassbox_spectral::SIGMA_FILE),
    ];
    if options.resume {
        let state = trainer.resume(dir)?;
        truncate_log(&metrics_log, state.step)?;
        truncate_log(&eval_log, state.step)?;
        for log in &spectral_logs {
            truncate_log(log, state.step)?;
        }
    } else {
        for log in [&metrics_log, &eval_log].into_iter().chain(&spectral_logs) {
            if log.is_file() {
                std::fs::remove_file(log).map_err(io_err("remove", log))?;
            }
        }
    }
    config.save(dir)?;

    let total = config.optim.steps;
    let end = options.stop_after.map_or(total, |s| s.min(total));
    let progress = Progress::new(options.quiet, trainer.step, total);
    let parameters = crate::model::parameter_count(&trainer.vs);
    progress.log(&format!(
        "training {} on {} ({} train / {} val images, {}x{}), {} threads, {} parameters",
        config.name,
        match device {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda(n) => format!("cuda:{n}"),
            other => format!("{other:?}"),
        },
        train_set.len(),
        val_set.len(),
        config.data.image_size[0],
        config.data.image_size[1],
        threads,
        parameters
    ));
    let images_per_step = (config.optim.batch_size * config.optim.accumulate) as f64;
    let protocol = validation_protocol(config);
    let mut losses = Vec::new();
    let mut window = Instant::now();
    let mut window_steps = 0usize;
    let mut last_eval = None;
    // The spectral probe: the first (up to) two validation images, fixed for the whole run.
    let probe = if config.schedule.spectral_every > 0 {
        let n = val_set.len().min(2);
        let options = ProbeOptions {
            seed: config.seed,
            ..ProbeOptions::default()
        };
        Some(Probe::new(val_set.chunk(0, n, device).rgb, options)?)
    } else {
        None
    };
    let mut last_spectral = None;
    let mut run_probe = |model: &crate::model::Dpt, step: usize| -> Result<(), TrainError> {
        if let Some(probe) = &probe {
            let out = probe.run(model, step as u64)?;
            out.write(dir)?;
            progress.log(&format!(
                "step {step}: spectral probe in {:.2} s (forward {:.2} s)",
                (out.timing.forward + out.timing.spectral).as_secs_f64(),
                out.timing.forward.as_secs_f64()
            ));
            last_spectral = Some(out.record);
        }
        Ok(())
    };
    if trainer.step == 0 && !options.resume {
        run_probe(&trainer.model, 0)?;
    }
    let output_map = config.output_map();
    let validate = |model: &Dpt| {
        eval::evaluate_set(
            model,
            output_map.as_ref(),
            &val_set,
            config.optim.batch_size,
            device,
            protocol,
        )
    };
    let seconds_before = trainer.seconds;
    let interrupted = || {
        options
            .interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    };
    let mut last_saved = trainer.step;
    let mut last_loss = f64::NAN;
    while trainer.step < end {
        if interrupted() {
            break;
        }
        let loss = trainer.train_step(&train_set, &last_name)?;
        last_loss = loss;
        trainer.seconds = seconds_before + started.elapsed().as_secs_f64();
        let step = trainer.step;
        losses.push((step, loss));
        window_steps += 1;
        let rate = images_per_step * window_steps as f64 / window.elapsed().as_secs_f64().max(1e-9);
        if window_steps >= 20 {
            window = Instant::now();
            window_steps = 0;
        }
        let factor = lr_factor(
            step - 1,
            config.optim.warmup_steps,
            total,
            config.optim.min_lr_ratio,
        );
        let (lr_b, lr_d) = trainer.optimizer.learning_rates(factor);
        let every = config.schedule.log_every.max(1);
        if step % every == 0 || step == end {
            append(
                &metrics_log,
                &json!({"step": step, "loss": loss, "lr_backbone": lr_b, "lr_decoder": lr_d,
                        "time": started.elapsed().as_secs_f64(), "images_per_s": rate}),
            )?;
        }
        progress.update(step, total, &format!("loss {loss:.4}  {rate:.1} img/s"));
        let due = |every: usize| every > 0 && step % every == 0;
        if due(config.schedule.eval_every) || step == total {
            let report = validate(&trainer.model)?;
            append(
                &eval_log,
                &json!({"step": step, "abs_rel": report.median.abs_rel,
                        "delta1": report.median.delta1,
                        "abs_rel_scale_shift": report.scale_shift.abs_rel,
                        "delta1_scale_shift": report.scale_shift.delta1,
                        "abs_rel_baseline": report.baseline.abs_rel,
                        "images": report.images, "time": started.elapsed().as_secs_f64()}),
            )?;
            progress.log(&format!(
                "step {step}: validation AbsRel {:.4} (median-scaled), {:.4} (scale+shift), \
                 constant baseline {:.4}",
                report.median.abs_rel, report.scale_shift.abs_rel, report.baseline.abs_rel
            ));
            if trainer
                .best_abs_rel
                .is_none_or(|b| report.median.abs_rel < b)
            {
                trainer.best_abs_rel = Some(report.median.abs_rel);
                let state = TrainState {
                    step,
                    seed: config.seed,
                    loss,
                    best_abs_rel: trainer.best_abs_rel,
                    seconds: trainer.seconds,
                    weights_checksum: 0,
                    optimizer_checksum: None,
                };
                checkpoint::save(
                    &CheckpointPaths::new(dir, "best"),
                    &trainer.vs,
                    None,
                    &state,
                )?;
            }
            last_eval = Some(report);
        }
        if due(config.schedule.spectral_every)
            || (config.schedule.spectral_every > 0 && step == end)
        {
            run_probe(&trainer.model, step)?;
        }
        if due(config.schedule.checkpoint_every) || step == end {
            trainer.save_last(dir, loss)?;
            last_saved = step;
        }
    }
    let was_interrupted = trainer.step < end && interrupted();
    if was_interrupted && trainer.step > last_saved {
        trainer.save_last(dir, last_loss)?;
        progress.log(&format!(
            "interrupted: checkpoint saved at step {} (resume with --resume)",
            trainer.step
        ));
    }
    if let Some(record) = &last_spectral {
        progress.log(&format!(
            "spectral indicators at step {} (mean over heads; docs/spectral.md):\n{}",
            record.step,
            glassbox_spectral::layer_table(record)
        ));
    }
    progress.finish();
    let finished = trainer.step >= total;
    if finished && last_eval.is_none() {
        // Resumed from the final checkpoint (e.g. after its report was lost): score it again.
        last_eval = Some(validate(&trainer.model)?);
    }
    let eval = if finished { last_eval } else { None };
    if finished
        && options.report
        && let Some(report) = &eval
    {
        write_report(dir, config, &trainer, &val_set, report)?;
    }
    Ok(TrainSummary {
        run_dir: dir.clone(),
        steps: trainer.step,
        losses,
        eval,
        seconds: started.elapsed().as_secs_f64(),
        train_seconds: seconds_before + started.elapsed().as_secs_f64(),
        interrupted: was_interrupted,
        parameters,
    })
}

/// Reads the (step, loss) pairs of a run's `metrics.jsonl`.
pub fn read_losses(path: &Path) -> Vec<(usize, f64)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_u64()? as usize, v.get("loss")?.as_f64()?)))
        .collect()
}

/// Writes `report.md` (evaluation table), `loss_curve.png` and `contact_sheet.png`.
fn write_report(
    dir: &Path,
    config: &TrainConfig,
    trainer: &Trainer,
    val: &TensorSet,
    eval: &EvalReport,
) -> Result<(), TrainError> {
    let curve = report::loss_curve(&read_losses(&dir.join("metrics.jsonl")), 640, 320);
    let curve_path = dir.join("loss_curve.png");
    glassbox_data::io::write_png(&curve_path, &curve).map_err(|e| TrainError::Io {
        action: "write",
        path: curve_path.clone(),
        message: e.to_string(),
    })?;
    let n = config.schedule.sheet_images.min(val.len());
    let batch = val.chunk(0, n, trainer.device);
    let disparity = eval::predict(&trainer.model, config.output_map().as_ref(), &batch.rgb)?
        .to_device(Device::Cpu);
    let rgb = batch.rgb.to_device(Device::Cpu);
    let mut rows = Vec::new();
    for i in 0..n as i64 {
        let arr3 = |t: &Tensor| {
            let s: Vec<usize> = t.size().iter().map(|&x| x as usize).collect();
            let v = Vec::<f32>::try_from(&t.to_kind(Kind::Float).contiguous().view([-1]))
                .expect("float tensor");
            ndarray::Array3::from_shape_vec((s[0], s[1], s[2]), v).expect("shape")
        };
        let arr2 = |t: &Tensor| arr3(&t.unsqueeze(0)).index_axis_move(ndarray::Axis(0), 0);
        let mask = arr2(&batch.mask.get(i).to_kind(Kind::Float)).mapv(|m| m > 0.5);
        rows.push(report::contact_row(
            arr3(&rgb.get(i)).view(),
            arr2(&disparity.get(i)).view(),
            arr2(&batch.depth.get(i)).view(),
            mask.view(),
        ));
    }
    let sheet_path = dir.join("contact_sheet.png");
    report::write_contact_sheet(&sheet_path, &rows).map_err(|e| TrainError::Io {
        action: "write",
        path: sheet_path,
        message: e.to_string(),
    })?;
    let text = format!(
        "# Run {name}\n\n{steps} steps, {attention:?} attention, {h}x{w} images, seed {seed}.\n\n\
         ## Validation ({images} held-out images)\n\n{table}\n\
         Best median-scaled AbsRel: {best:.4}.\n\n\
         Columns of contact_sheet.png: input | prediction (median-scaled) | ground truth | \
         relative error (0 blue .. 0.5 red).\nloss_curve.png: training loss on a log axis.\n",
        name = config.name,
        steps = trainer.step,
        attention = config.model.encoder.attention,
        h = config.data.image_size[0],
        w = config.data.image_size[1],
        seed = config.seed,
        images = eval.images,
        table = eval.markdown(),
        best = trainer.best_abs_rel.unwrap_or(f64::NAN),
    );
    let mut text = text;
    let spectral = dir.join(glassbox_spectral::SPECTRAL_FILE);
    if let Ok(records) = glassbox_spectral::read_spectral_log(&spectral)
        && let Some(last) = records.last()
    {
        text.push_str(&format!(
            "\n## Spectral indicators at step {} (mean over heads per layer)\n\n{}\n             Figures: `glassbox report {}`.\n",
            last.step,
            glassbox_spectral::layer_table(last),
            dir.display()
        ));
    }
    let md = dir.join("report.md");
    std::fs::write(&md, text).map_err(io_err("write", &md))
}
