//! The training loop: a [`Run`] whose methods are the steps of one invocation of `glassbox
//! train`: open the data and the model (or resume them), then update, log, validate, probe and
//! checkpoint on the configured schedule, and finish with the final validation and the report.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use glassbox_metrics::DepthEvalConfig;
use glassbox_spectral::SpectralRecord;
use serde_json::json;
use tch::Device;

use super::logs::{Progress, append, read_losses, read_series, truncate_log};
use super::step::{StepOutcome, Trainer};
use super::{DataParallel, TrainError, TrainOptions, TrainSummary, physical_cores, resolve_device};
use crate::checkpoint::CheckpointPaths;
use crate::config::TrainConfig;
use crate::data::{self, RunData};
use crate::eval::{self, EvalReport};
use crate::fs::{file_error, write_atomic};
use crate::optim::lr_factor;
use crate::probe::{Probe, ProbeOptions};
use crate::report;
use crate::tensor::{TensorBatch, to_array2, to_array3, to_class_map};

/// The validation protocol of a run: its depth range and crop, median alignment.
pub fn validation_protocol(config: &TrainConfig) -> DepthEvalConfig {
    DepthEvalConfig {
        min_depth: config.schedule.min_depth,
        max_depth: config.schedule.max_depth,
        crop: config.schedule.eval_crop,
        alignment: glassbox_metrics::Alignment::Median,
    }
}

/// Runs (or resumes) a training run as configured, writing everything into `options.run_dir`.
pub fn train(config: &TrainConfig, options: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let mut run = Run::start(config, options)?;
    run.update_until_done()?;
    run.finish()
}

/// The log files of a run folder.
struct Logs {
    metrics: PathBuf,
    eval: PathBuf,
    depict: PathBuf,
    spectral: [PathBuf; 2],
    /// The heat maps of the over-training strip: a log like the others, so resume cuts it back.
    strip: PathBuf,
}

impl Logs {
    fn new(dir: &Path) -> Self {
        Self {
            metrics: dir.join("metrics.jsonl"),
            eval: dir.join("eval.jsonl"),
            depict: dir.join(crate::whitebox::DEPICT_FILE),
            spectral: [
                dir.join(glassbox_spectral::SPECTRAL_FILE),
                dir.join(glassbox_spectral::SIGMA_FILE),
            ],
            strip: dir
                .join(glassbox_spectral::ATTENTION_DIR)
                .join(crate::probe::OVER_TRAINING_LOG),
        }
    }

    fn all(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.metrics, &self.eval, &self.depict, &self.strip]
            .into_iter()
            .chain(&self.spectral)
    }
}

/// Training images per second over the last few updates, for the progress display.
struct RateWindow {
    since: Instant,
    steps: usize,
}

/// One invocation of a training run.
pub struct Run<'a> {
    config: &'a TrainConfig,
    options: &'a TrainOptions,
    dir: PathBuf,
    data: RunData,
    trainer: Trainer,
    progress: Progress,
    probe: Option<Probe>,
    logs: Logs,
    last_name: String,
    started: Instant,
    seconds_before: f64,
    losses: Vec<(usize, f64)>,
    last_eval: Option<EvalReport>,
    last_spectral: Option<SpectralRecord>,
    last_loss: f64,
    last_saved: usize,
    update_time: Duration,
    window: RateWindow,
    parameters: i64,
    /// Rank 0 of a data-parallel run, or a run alone: the one process that writes files.
    writer: bool,
    /// A data-parallel run agreed to stop (some rank was interrupted).
    stopped: bool,
}

impl<'a> Run<'a> {
    /// Opens data and model, restores the checkpoint on resume (or clears old logs), saves the
    /// resolved config and probes the untrained model.
    pub fn start(config: &'a TrainConfig, options: &'a TrainOptions) -> Result<Self, TrainError> {
        config.validate()?;
        let started = Instant::now();
        let dir = options.run_dir.clone();
        let launch = options.launch.as_ref().filter(|l| l.world_size > 1);
        let world = launch.map_or(1, |l| l.world_size);
        if config.distributed.world_size != world {
            return Err(TrainError::WorldSize {
                config: config.distributed.world_size,
                launch: world,
            });
        }
        let writer = launch.is_none_or(|l| l.is_writer());
        if writer {
            std::fs::create_dir_all(&dir).map_err(file_error("create", &dir))?;
        }
        let device = match (resolve_device(&config.device)?, launch) {
            // One GPU per local rank, as torchrun's LOCAL_RANK means.
            (Device::Cuda(_), Some(l)) => {
                Device::Cuda(l.local_rank % tch::Cuda::device_count().max(1) as usize)
            }
            (device, _) => device,
        };
        let threads = if config.threads == 0 {
            // The ranks of one machine share its cores.
            (physical_cores() / launch.map_or(1, |l| l.local_world_size)).max(1)
        } else {
            config.threads
        };
        tch::set_num_threads(threads as i32);
        glassbox_spectral::single_threaded_blas();
        let shard = glassbox_data::Shard {
            rank: launch.map_or(0, |l| l.rank),
            world_size: world,
        };
        let data = data::open_sharded(config, shard)?;
        let mut trainer = Trainer::new(config, device)?;
        let logs = Logs::new(&dir);
        let mut starts = Vec::new();
        // Only rank 0 loads and clears files; the others get its state by broadcast below.
        if writer && options.resume {
            let state = trainer.resume(&dir)?;
            for log in logs.all() {
                truncate_log(log, state.step)?;
            }
            for path in config.init.iter().chain(&config.backbone_weights) {
                starts.push(format!(
                    "resuming at step {}: {} is not loaded again (resume wins over --init and \
                     --backbone-weights)",
                    state.step,
                    path.display()
                ));
            }
        } else if writer {
            starts = trainer.initialise()?;
            for log in logs.all() {
                if log.is_file() {
                    std::fs::remove_file(log).map_err(file_error("remove", log))?;
                }
            }
            // An older run's overlays would otherwise sit beside this run's on its page.
            let pictures = dir.join(glassbox_spectral::ATTENTION_DIR);
            if pictures.is_dir() {
                std::fs::remove_dir_all(&pictures).map_err(file_error("remove", &pictures))?;
            }
        }
        if let Some(launch) = launch {
            let dp = DataParallel::join(
                launch,
                device,
                &trainer.optimizer,
                &config.distributed,
                options.interrupt.clone(),
            )?;
            dp.synchronise(&mut trainer)?;
            starts.push(format!(
                "data-parallel: rank {} of {} ({:?}), {} gradient bucket(s) per update, effective \
                 batch {}",
                dp.rank(),
                dp.world_size(),
                glassbox_distributed::Backend::for_device(device),
                dp.buckets(),
                config.effective_batch()
            ));
            trainer.data_parallel = Some(dp);
        }
        if writer {
            config.save(&dir)?;
        }
        let progress = Progress::new(options.quiet || !writer, trainer.step, config.optim.steps);
        let parameters = glassbox_dpt::parameter_count(&trainer.vs);
        progress.log(&format!(
            "training {} on {} ({}x{}), {threads} threads, {parameters} parameters\n  {}",
            config.name,
            device_name(device),
            config.data.image_size[0],
            config.data.image_size[1],
            data.description,
        ));
        for line in &starts {
            progress.log(line);
        }
        let probe = if writer && config.schedule.spectral_every > 0 {
            let first = first_images(&data, 2, device)?;
            let options = ProbeOptions {
                seed: config.seed,
                strip_layer: config.schedule.strip_layer,
                ..ProbeOptions::default()
            };
            Some(Probe::new(first.rgb, options)?)
        } else {
            None
        };
        let last_name = CheckpointPaths::new(&dir, "last")
            .weights
            .display()
            .to_string();
        let mut run = Self {
            config,
            options,
            dir,
            data,
            seconds_before: trainer.seconds,
            last_saved: trainer.step,
            trainer,
            progress,
            probe,
            logs,
            last_name,
            started,
            losses: Vec::new(),
            last_eval: None,
            last_spectral: None,
            last_loss: f64::NAN,
            update_time: Duration::ZERO,
            window: RateWindow {
                since: Instant::now(),
                steps: 0,
            },
            parameters,
            writer,
            stopped: false,
        };
        if writer && run.trainer.step == 0 && !options.resume {
            run.run_probe(0)?;
            run.log_depict(0)?;
        }
        Ok(run)
    }

    /// Whether the run should stop early: this process's interrupt flag, or in a data-parallel
    /// run the ranks' joint decision (taken with the gradients, so all stop after one update).
    fn interrupted(&self) -> bool {
        if self.trainer.data_parallel.is_some() {
            return self.stopped;
        }
        self.options
            .interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    }

    fn end(&self) -> usize {
        let total = self.config.optim.steps;
        self.options.stop_after.map_or(total, |s| s.min(total))
    }

    /// Updates until the end of the run (or `stop_after`), or until interrupted.
    pub fn update_until_done(&mut self) -> Result<(), TrainError> {
        let end = self.end();
        if self.trainer.step >= end {
            return Ok(());
        }
        let mut batches = self
            .data
            .train
            .train_batches(self.trainer.next_micro_step());
        while self.trainer.step < end && !self.interrupted() {
            let began = Instant::now();
            let outcome = self.trainer.train_step(&mut batches, &self.last_name)?;
            self.update_time += began.elapsed();
            self.trainer.seconds = self.seconds_before + self.started.elapsed().as_secs_f64();
            self.stopped |= outcome.stop;
            self.after_update(outcome)?;
        }
        Ok(())
    }

    /// Logging, validation, probe and checkpoint after an update, as scheduled.
    fn after_update(&mut self, outcome: StepOutcome) -> Result<(), TrainError> {
        let c = self.config;
        let step = self.trainer.step;
        let (total, end) = (c.optim.steps, self.end());
        self.last_loss = outcome.loss;
        self.losses.push((step, outcome.loss));
        let images_per_step = c.effective_batch() as f64;
        self.window.steps += 1;
        let rate = images_per_step * self.window.steps as f64
            / self.window.since.elapsed().as_secs_f64().max(1e-9);
        if self.window.steps >= 20 {
            self.window = RateWindow {
                since: Instant::now(),
                steps: 0,
            };
        }
        if !self.writer {
            return Ok(());
        }
        if step.is_multiple_of(c.schedule.log_every.max(1)) || step == end {
            let factor = lr_factor(step - 1, c.optim.warmup_steps, total, c.optim.min_lr_ratio);
            let (lr_b, lr_d) = self.trainer.optimizer.learning_rates(factor);
            let mut line = json!({"step": step, "loss": outcome.loss, "lr_backbone": lr_b,
                    "lr_decoder": lr_d, "time": self.started.elapsed().as_secs_f64(),
                    "images_per_s": rate, "data_wait_s": outcome.data_wait.as_secs_f64()});
            if let Some(s) = outcome.saliency {
                line["saliency_loss"] = json!(s.loss);
                line["corr"] = json!(s.corr);
            }
            if let Some(dp) = &self.trainer.data_parallel {
                // Cumulative over this invocation, like `time`: differences give the share.
                line["allreduce_s"] = json!(dp.all_reduce_time().as_secs_f64());
            }
            append(&self.logs.metrics, &line)?;
        }
        self.progress.update(
            step,
            total,
            &format!("loss {:.4}  {rate:.1} img/s", outcome.loss),
        );
        let due = |every: usize| every > 0 && step.is_multiple_of(every);
        if due(c.schedule.eval_every) || step == total {
            self.validate(step)?;
        }
        if due(c.schedule.spectral_every) || (c.schedule.spectral_every > 0 && step == end) {
            self.run_probe(step)?;
        }
        if due(c.schedule.checkpoint_every) || step == end {
            self.trainer.save_last(&self.dir, outcome.loss)?;
            self.last_saved = step;
        }
        Ok(())
    }

    fn validate(&mut self, step: usize) -> Result<(), TrainError> {
        let report = eval::evaluate_loader(
            &self.trainer.model,
            self.config.output_map().as_ref(),
            &self.data.val,
            self.trainer.device,
            validation_protocol(self.config),
            &self.config.class_names(),
        )?;
        let mut line = serde_json::Map::new();
        line.insert("step".into(), json!(step));
        line.extend(report.log_fields());
        if let Some(quality) = self.selection_quality()? {
            for (key, value) in [
                ("corr", quality.corr),
                ("corr_dense", quality.corr_dense),
                ("target_overlap", quality.target_overlap),
                ("kept_share", quality.kept_share),
            ] {
                line.insert(key.into(), json!(value));
            }
        }
        line.insert("time".into(), json!(self.started.elapsed().as_secs_f64()));
        append(&self.logs.eval, &serde_json::Value::Object(line))?;
        self.progress
            .log(&format!("step {step}: {}", report.summary()));
        self.log_depict(step)?;
        let headline = report.headline();
        let best = match report {
            EvalReport::Depth(_) => &mut self.trainer.best_abs_rel,
            EvalReport::Segmentation(_) => &mut self.trainer.best_miou,
        };
        if headline.beats(*best) {
            *best = Some(headline.value);
            self.trainer.save_best(&self.dir, self.last_loss)?;
        }
        self.last_eval = Some(report);
        Ok(())
    }

    /// The report's sparse-token section and its figure (`selection.png`): keep ratio, counted
    /// encoder cost against dense, and the last logged selection numbers.
    fn sparse_section(&self) -> Result<String, TrainError> {
        let (dir, config) = (&self.dir, self.config);
        let encoder = &config.model.encoder;
        let rho = self.trainer.model.encoder().keep_ratio();
        report::selection_curves(
            &dir.join("metrics.jsonl"),
            &dir.join("eval.jsonl"),
            rho,
            &dir.join(report::SELECTION_STEM),
        )
        .map_err(|e| TrainError::Figure(Box::new(e)))?;
        let [h, w] = config.data.image_size;
        let p = encoder.patch_size as usize;
        let grid = ((h / p) as i64, (w / p) as i64);
        let np = grid.0 * grid.1;
        let gflops = |r| glassbox_encoder::EncoderMacs::count(encoder, grid, r).flops() / 1e9;
        let last = |log: &str, key: &str| {
            read_series(&dir.join(log), key)
                .last()
                .map_or_else(|| "–".to_string(), |&(_, v)| format!("{v:.3}"))
        };
        Ok(format!(
            "\n## Sparse token updates (docs/sparse.md)\n\nKeep ratio {rho}: each block updates \
             {k} of the {np} patch tokens of a {h}x{w} image (plus the readout token); encoder \
             {sparse:.3} GFLOPs per image against {dense:.3} dense (counted, inference). \
             Last training step: corr {corr} (share of the kept queries' attention mass on the \
             kept tokens). Last validation: {dense_corr} of a dense pass's attention mass falls \
             on the kept tokens, and {overlap} of the scorer's target is also a dense pass's \
             top-k (chance: {rho}).\nselection.png (and .svg): the same over training.\n",
            k = glassbox_encoder::sparse::kept_count(rho, np),
            sparse = gflops(rho),
            dense = gflops(1.0),
            corr = last("metrics.jsonl", "corr"),
            dense_corr = last("eval.jsonl", "corr_dense"),
            overlap = last("eval.jsonl", "target_overlap"),
        ))
    }

    /// A sparse encoder's selection quality on the first validation images (`docs/sparse.md`);
    /// `None` for a dense one.
    fn selection_quality(&self) -> Result<Option<glassbox_encoder::SelectionQuality>, TrainError> {
        if self.trainer.model.encoder().keep_ratio() >= 1.0 {
            return Ok(None);
        }
        let images = first_images(&self.data, 8, self.trainer.device)?;
        Ok(self
            .trainer
            .model
            .encoder()
            .selection_quality(&images.rgb)
            .map_err(glassbox_dpt::DptError::from)?)
    }

    /// Appends DEPICT's white-box diagnostics on the first validation images to `depict.jsonl`
    /// (nothing for other decoders).
    fn log_depict(&mut self, step: usize) -> Result<(), TrainError> {
        if self.trainer.model.depict().is_none() {
            return Ok(());
        }
        let images = first_images(&self.data, 4, self.trainer.device)?;
        if let Some(diagnostics) = self.trainer.model.depict_diagnostics(&images.rgb)? {
            let record = crate::whitebox::DepictRecord { step, diagnostics };
            let line = serde_json::to_value(&record).unwrap_or_default();
            append(&self.logs.depict, &line)?;
        }
        Ok(())
    }

    fn run_probe(&mut self, step: usize) -> Result<(), TrainError> {
        if let Some(probe) = &self.probe {
            let out = probe.run(&self.trainer.model, step as u64)?;
            out.write(&self.dir)?;
            self.progress.log(&format!(
                "step {step}: spectral probe in {:.2} s (forward {:.2} s)",
                (out.timing.forward + out.timing.spectral).as_secs_f64(),
                out.timing.forward.as_secs_f64()
            ));
            self.last_spectral = Some(out.record);
        }
        Ok(())
    }

    /// Saves an interrupted run, validates a finished one if needed, writes the report.
    pub fn finish(mut self) -> Result<TrainSummary, TrainError> {
        let end = self.end();
        let interrupted = self.trainer.step < end && self.interrupted();
        if interrupted && self.writer && self.trainer.step > self.last_saved {
            self.trainer.save_last(&self.dir, self.last_loss)?;
            self.progress.log(&format!(
                "interrupted: checkpoint saved at step {} (resume with --resume)",
                self.trainer.step
            ));
        }
        if let Some(record) = &self.last_spectral {
            self.progress.log(&format!(
                "spectral indicators at step {} (mean over heads; layers 1-based; \
                 docs/spectral.md):\n{}",
                record.step,
                glassbox_spectral::layer_table(record)
            ));
        }
        self.progress.finish();
        let finished = self.trainer.step >= self.config.optim.steps;
        if finished && self.writer && self.last_eval.is_none() {
            // Resumed from the final checkpoint (e.g. after its report was lost): score it again.
            self.validate(self.trainer.step)?;
        }
        let eval = if finished {
            self.last_eval.clone()
        } else {
            None
        };
        if finished
            && self.options.report
            && let Some(report) = &eval
        {
            self.write_report(report)?;
        }
        let update_seconds = self.update_time.as_secs_f64();
        let images = (self.losses.len() * self.config.effective_batch()) as f64;
        Ok(TrainSummary {
            run_dir: self.dir.clone(),
            steps: self.trainer.step,
            losses: self.losses,
            eval,
            seconds: self.started.elapsed().as_secs_f64(),
            update_seconds,
            images_per_second: images / update_seconds.max(1e-9),
            train_seconds: self.seconds_before + self.started.elapsed().as_secs_f64(),
            interrupted,
            parameters: self.parameters,
            decoder_parameters: decoder_parameters(&self.trainer.vs),
            skipped_samples: self.data.train.skipped() + self.data.val.skipped(),
        })
    }

    /// Writes `report.md` (evaluation table), `loss_curve.png` and `contact_sheet.png`.
    fn write_report(&self, eval: &EvalReport) -> Result<(), TrainError> {
        let (dir, config) = (&self.dir, self.config);
        let losses = read_losses(&dir.join("metrics.jsonl"));
        let evals = report::EvalSeries::read(&dir.join("eval.jsonl"));
        let stem = dir.join("loss_curve");
        match eval {
            EvalReport::Depth(_) => report::training_curves(&losses, &evals, &stem),
            EvalReport::Segmentation(_) => report::segmentation_curves(&losses, &evals, &stem),
        }
        .map_err(|e| TrainError::Figure(Box::new(e)))?;
        let batch = first_images(
            &self.data,
            config.schedule.sheet_images,
            self.trainer.device,
        )?;
        let sheet_path = dir.join("contact_sheet.png");
        let (columns, curves, best) = match eval {
            EvalReport::Depth(_) => {
                self.depth_sheet(&batch, &sheet_path)?;
                (
                    "Columns of contact_sheet.png: input | prediction (median-scaled) | ground \
                     truth | relative error (0 blue .. 0.5 red); depth colours span each row's \
                     ground-truth range (near red, far blue), shown by the bar beside the row in \
                     metres.",
                    "validation AbsRel against the constant baseline, and validation δ1",
                    format!(
                        "Best median-scaled AbsRel: {:.4}.",
                        self.trainer.best_abs_rel.unwrap_or(f64::NAN)
                    ),
                )
            }
            EvalReport::Segmentation(_) => {
                self.segmentation_sheet(&batch, &sheet_path)?;
                (
                    "Columns of contact_sheet.png: input | prediction | ground truth, coloured by \
                     class (the legend names every class shown; black = ignored).",
                    "validation mIoU and pixel accuracy against the majority-class baseline",
                    format!(
                        "Best mIoU: {:.4}.",
                        self.trainer.best_miou.unwrap_or(f64::NAN)
                    ),
                )
            }
        };
        let decoder = match &config.model.head {
            glassbox_dpt::HeadConfig::Segmentation(seg) => {
                format!(
                    ", {} decoder, {} classes",
                    seg.decoder.name(),
                    seg.num_classes
                )
            }
            glassbox_dpt::HeadConfig::Depth {} => String::new(),
        };
        let mut text = format!(
            "# Run {name}\n\n{task}: {steps} steps, {attention} attention{decoder}, {h}x{w} \
             images, seed {seed}, {parameters} parameters{parallel}.\n\n\
             Data: {data}.\n\n\
             ## Validation ({images} held-out images)\n\n{table}\n\
             {best}\n\n\
             {columns}\nloss_curve.png (and .svg): training loss (raw and 20-step moving \
             average, log scale), {curves}, over optimiser steps.\nindex.html: this report \
             with every figure of the run.\n",
            name = config.name,
            task = config.task().name(),
            steps = self.trainer.step,
            attention = config.model.encoder.attention.name(),
            h = config.data.image_size[0],
            w = config.data.image_size[1],
            seed = config.seed,
            parameters = self.parameters,
            parallel = match config.distributed.world_size {
                1 => String::new(),
                world => format!(
                    "; data-parallel over {world} processes of batch {} (effective batch {}, \
                     docs/distributed.md)",
                    config.optim.batch_size,
                    config.effective_batch()
                ),
            },
            data = self.data.description,
            images = eval.images(),
            table = eval.markdown(),
        );
        let depict = crate::whitebox::read_log(&self.logs.depict);
        if let Some(last) = depict.last() {
            let figure = |e| TrainError::Figure(Box::new(e));
            crate::whitebox::diagnostics_figure(
                &depict,
                &dir.join(crate::whitebox::DIAGNOSTICS_STEM),
            )
            .map_err(figure)?;
            crate::whitebox::gram_figure(
                &self.trainer.model,
                &dir.join(crate::whitebox::GRAMS_STEM),
            )
            .map_err(figure)?;
            text.push_str(&format!(
                "\n## DEPICT white-box diagnostics (docs/architecture.md, DEPICT)\n\n{}\n\
                 Figures: depict_diagnostics.png (over training), depict_grams.png (final Gram \
                 matrices).\n",
                crate::whitebox::markdown(last)
            ));
        }
        if config.model.encoder.is_sparse() {
            text.push_str(&self.sparse_section()?);
        }
        let spectral = dir.join(glassbox_spectral::SPECTRAL_FILE);
        if let Ok(records) = glassbox_spectral::read_spectral_log(&spectral)
            && let Some(last) = records.last()
        {
            text.push_str(&format!(
                "\n{} {} (mean over heads per layer; layers 1-based)\n\n{}",
                crate::page::SPECTRAL_TABLES,
                last.step,
                glassbox_spectral::layer_table(last),
            ));
        }
        write_atomic(&dir.join("report.md"), text.as_bytes())?;
        crate::page::write_run_page(dir).map_err(|e| TrainError::Page(Box::new(e)))?;
        Ok(())
    }
}

impl Run<'_> {
    /// The depth contact sheet of `batch`.
    fn depth_sheet(&self, batch: &TensorBatch, path: &Path) -> Result<(), TrainError> {
        let disparity = eval::predict(
            &self.trainer.model,
            self.config.output_map().as_ref(),
            &batch.rgb,
        )?;
        let rows: Vec<_> = (0..batch.len() as i64)
            .map(|i| {
                let mask = to_array2(&batch.mask.get(i)).mapv(|m| m > 0.5);
                report::contact_row(
                    to_array3(&batch.rgb.get(i)).view(),
                    to_array2(&disparity.get(i)).view(),
                    to_array2(&batch.depth.get(i)).view(),
                    mask.view(),
                )
            })
            .collect();
        report::write_contact_sheet(path, &rows).map_err(|e| TrainError::Report(Box::new(e)))
    }

    /// The segmentation contact sheet of `batch`, with its class legend.
    fn segmentation_sheet(&self, batch: &TensorBatch, path: &Path) -> Result<(), TrainError> {
        let predicted = eval::predict_logits(&self.trainer.model, &batch.rgb)?.argmax(1, false);
        let labels = batch.labels.as_ref().ok_or_else(|| TrainError::NoLabels {
            sample: batch.names.first().cloned().unwrap_or_default(),
        })?;
        let rows: Vec<_> = (0..batch.len() as i64)
            .map(|i| report::SegmentationRow {
                rgb: glassbox_data::colormap::rgb_image(to_array3(&batch.rgb.get(i)).view()),
                predicted: report::class_map_u8(to_class_map(&predicted.get(i)).view()),
                labels: report::class_map_u8(to_class_map(&labels.get(i)).view()),
            })
            .collect();
        report::write_segmentation_sheet(path, &rows, &self.config.class_names())
            .map_err(|e| TrainError::Report(Box::new(e)))
    }
}

/// The first `n` validation images (fewer if the split is smaller), as one batch on `device`.
fn first_images(data: &RunData, n: usize, device: Device) -> Result<TensorBatch, TrainError> {
    let mut taken: Vec<TensorBatch> = Vec::new();
    let mut have = 0;
    for batch in data.val.eval_batches() {
        let batch = TensorBatch::new(&batch?, device);
        have += batch.len();
        taken.push(batch);
        if have >= n {
            break;
        }
    }
    let cat = |f: fn(&TensorBatch) -> &tch::Tensor| {
        tch::Tensor::cat(&taken.iter().map(f).collect::<Vec<_>>(), 0)
    };
    let joined = TensorBatch {
        rgb: cat(|b| &b.rgb),
        depth: cat(|b| &b.depth),
        mask: cat(|b| &b.mask),
        labels: taken
            .iter()
            .map(|b| b.labels.as_ref())
            .collect::<Option<Vec<_>>>()
            .map(|l| tch::Tensor::cat(&l, 0)),
        names: taken.iter().flat_map(|b| b.names.clone()).collect(),
    };
    Ok(joined.first(n))
}

/// Parameters outside the encoder (DPT's Reassemble, fusion and head, or DEPICT), counted as
/// `glassbox_dpt::parameter_count` counts the whole model.
fn decoder_parameters(vs: &tch::nn::VarStore) -> i64 {
    vs.variables()
        .iter()
        .filter(|(name, _)| !name.starts_with("encoder."))
        .map(|(_, t)| t.numel() as i64)
        .sum()
}

fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}"),
    }
}
