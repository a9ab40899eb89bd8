//! One optimiser update: the [`Trainer`] holds the model, its variables and AdamW, and turns
//! `accumulate` micro-batches into one update; plus the depth loss of a batch and the
//! checkpoint save/restore of everything an update depends on.
//!
//! Determinism: libtorch's CPU generator (dropout) is re-seeded from (seed, step) before every
//! update, the batches come from the loader as a function of (seed, micro-step), and the
//! optimiser moments are saved with the weights, so training to step k, stopping and resuming
//! gives the same weights as an uninterrupted run on the CPU.

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use glassbox_data::sample::derive_seed;
use glassbox_dpt::{Dpt, DptOutput};
use glassbox_encoder::Saliency;
use glassbox_losses::LossConfig;
use tch::{Device, Kind, Tensor, nn};

use crate::checkpoint::{self, CheckpointPaths, TrainState};
use crate::config::TrainConfig;
use crate::optim::{AdamW, lr_factor};
use crate::tensor::TensorBatch;

use super::TrainError;

/// libtorch has one CPU generator per process. Seeding it and drawing from it happen under this
/// lock, so a run stays deterministic while other runs in the same process (parallel tests, a
/// driver running several trainers) seed and draw too.
static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Stream tag of the per-step torch seed (`derive_seed(seed, step, STEP_STREAM)`).
const STEP_STREAM: u64 = 0x57e9;

/// Runs `draw` with the global torch generator seeded from `seed`, excluding every other seeded
/// section of this crate.
pub fn with_torch_seed<T>(seed: u64, draw: impl FnOnce() -> T) -> T {
    let _guard = TORCH_RNG.lock().unwrap_or_else(PoisonError::into_inner);
    tch::manual_seed(seed as i64);
    draw()
}

/// The training loss of one batch for the run's task: the depth loss of the disparity, or
/// cross-entropy of the class logits (main + weighted auxiliary) against the batch's labels.
/// A sparse encoder's selection comes back with it, for the scorer's loss and the `corr` log.
pub fn task_loss(
    config: &TrainConfig,
    model: &Dpt,
    batch: &TensorBatch,
) -> Result<(Tensor, Option<Saliency>), TrainError> {
    let (prediction, saliency) = model.forward_with_saliency_t(&batch.rgb, true)?;
    let loss = match prediction {
        DptOutput::Disparity(disparity) => depth_loss(config, &disparity, batch)?,
        DptOutput::Segmentation(out) => segmentation_loss(config, &out, batch)?,
    };
    Ok((loss, saliency))
}

/// Cross-entropy of a segmentation output against the batch's labels (ignore label excluded).
pub fn segmentation_loss(
    config: &TrainConfig,
    out: &glassbox_decoder::SegmentationOutput,
    batch: &TensorBatch,
) -> Result<Tensor, TrainError> {
    let labels = batch.labels.as_ref().ok_or_else(|| TrainError::NoLabels {
        sample: batch.names.first().cloned().unwrap_or_default(),
    })?;
    let loss = config.loss.loss.segmentation()?;
    Ok(loss.compute(&out.logits, out.auxiliary.as_ref(), labels, None)?)
}

/// The training loss of a disparity prediction against the batch's metric depth.
pub fn depth_loss(
    config: &TrainConfig,
    disparity: &Tensor,
    batch: &TensorBatch,
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

/// The result of one update.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    /// Mean loss over the micro-batches.
    pub loss: f64,
    /// Time spent waiting for the loader (zero when the prefetch queue keeps up).
    pub data_wait: Duration,
    /// Sparse encoders: the scorer's BCE and `corr` (the share of the received attention mass
    /// on the kept tokens), means over the micro-batches (`docs/sparse.md`).
    pub saliency: Option<SaliencyLog>,
    /// Data-parallel runs: some rank was interrupted, so every rank stops after this update.
    pub stop: bool,
}

/// What a sparse update logs about its token selection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SaliencyLog {
    /// The scorer's binary cross-entropy (its whole loss; not part of the logged task loss).
    pub loss: f64,
    /// Share of the kept queries' attention mass that falls on the kept patch tokens.
    pub corr: f64,
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
    pub best_miou: Option<f64>,
    /// Wall time spent on this run so far (saved in checkpoints, so it survives resumes).
    pub seconds: f64,
    /// Set in data-parallel runs: gradients (and the logged loss) are averaged over the ranks
    /// before each optimiser step.
    pub data_parallel: Option<super::DataParallel>,
}

impl Trainer {
    /// Fresh weights from the config's seed.
    pub fn new(config: &TrainConfig, device: Device) -> Result<Self, TrainError> {
        config.validate()?;
        let vs = nn::VarStore::new(device);
        let model = with_torch_seed(config.seed, || Dpt::new(&vs.root(), &config.model))?;
        let sigma_lr = config
            .model
            .encoder
            .attention_config()
            .svda_options()
            .and_then(|o| o.lr);
        let optimizer = AdamW::new(&vs, &config.optim, sigma_lr);
        Ok(Self {
            config: config.clone(),
            device,
            vs,
            model,
            optimizer,
            step: 0,
            best_abs_rel: None,
            best_miou: None,
            seconds: 0.0,
            data_parallel: None,
        })
    }

    /// The loader micro-step of the first batch of the next update.
    pub fn next_micro_step(&self) -> u64 {
        (self.step * self.config.optim.accumulate) as u64
    }

    /// One optimiser update on the next `accumulate` batches of `batches` (the training stream
    /// started at [`Trainer::next_micro_step`]); returns the loss (mean over micro-batches) or a
    /// [`TrainError::NonFinite`] without changing any weight. `last` names the last good
    /// checkpoint for that message.
    pub fn train_step(
        &mut self,
        batches: &mut impl Iterator<Item = glassbox_data::Result<glassbox_data::Batch>>,
        last: &str,
    ) -> Result<StepOutcome, TrainError> {
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
        let mut data_wait = Duration::ZERO;
        let step_seed = derive_seed(c.seed, step as u64, STEP_STREAM);
        let mut saliency_log: Option<SaliencyLog> = None;
        let total = with_torch_seed(step_seed, || -> Result<f64, TrainError> {
            let mut total = 0.0;
            for _ in 0..accumulate {
                let waited = Instant::now();
                let batch = batches
                    .next()
                    .ok_or(TrainError::DataEnded { step: step + 1 })??;
                data_wait += waited.elapsed();
                let batch = TensorBatch::new(&batch, self.device);
                let (loss, saliency) = task_loss(c, &self.model, &batch)?;
                let mut loss = loss / accumulate as f64;
                let value = loss.double_value(&[]);
                if !value.is_finite() {
                    return Err(TrainError::NonFinite {
                        step: step + 1,
                        what: "loss",
                        value,
                        last: last.to_string(),
                    });
                }
                // The scorer learns from its BCE alone (its input is detached and top-k has no
                // gradient), so adding it changes no other parameter's gradient.
                if let Some(s) = &saliency
                    && let (Some(bce), Some(corr)) = (s.loss(), s.corr())
                {
                    let share = 1.0 / accumulate as f64;
                    let entry = saliency_log.get_or_insert(SaliencyLog {
                        loss: 0.0,
                        corr: 0.0,
                    });
                    entry.loss += bce.double_value(&[]) * share;
                    entry.corr += corr.double_value(&[]) * share;
                    loss += bce * share;
                }
                loss.backward();
                total += value;
            }
            // svda-paper's regulariser depends on the weights only: once per update, into the
            // gradient but not the logged loss, so loss curves compare across attention kinds.
            if let Some(penalty) = self
                .model
                .encoder()
                .penalty()
                .map_err(glassbox_dpt::DptError::from)?
            {
                penalty.backward();
            }
            Ok(total)
        })?;
        // Identical averaged gradients on every rank: the clipping, the non-finite check and the
        // update below agree everywhere.
        let (total, stop) = match &self.data_parallel {
            Some(dp) => dp.reduce(total)?,
            None => (total, false),
        };
        self.optimizer
            .step(factor)
            .map_err(|value| TrainError::NonFinite {
                step: step + 1,
                what: "gradient norm",
                value,
                last: last.to_string(),
            })?;
        self.step += 1;
        Ok(StepOutcome {
            loss: total,
            data_wait,
            saliency: saliency_log,
            stop,
        })
    }

    /// The checkpoint record of the current state.
    pub fn state(&self, loss: f64) -> TrainState {
        TrainState {
            step: self.step,
            seed: self.config.seed,
            loss,
            best_abs_rel: self.best_abs_rel,
            best_miou: self.best_miou,
            seconds: self.seconds,
            weights_checksum: 0,
            optimizer_checksum: None,
        }
    }

    /// Saves `last` (weights + optimiser + record) in `dir`.
    pub fn save_last(&self, dir: &Path, loss: f64) -> Result<(), TrainError> {
        checkpoint::save(
            &CheckpointPaths::new(dir, "last"),
            &self.vs,
            Some(self.optimizer.state()),
            &self.state(loss),
        )?;
        Ok(())
    }

    /// Saves `best` (weights + record) in `dir`.
    pub fn save_best(&self, dir: &Path, loss: f64) -> Result<(), TrainError> {
        checkpoint::save(
            &CheckpointPaths::new(dir, "best"),
            &self.vs,
            None,
            &self.state(loss),
        )?;
        Ok(())
    }

    /// Loads the starting weights a fresh run asks for: `init` (every tensor of the model), then
    /// `backbone_weights` (the encoder). Returns one line per file for the run's log.
    pub fn initialise(&mut self) -> Result<Vec<String>, TrainError> {
        let mut lines = Vec::new();
        if let Some(path) = &self.config.init {
            let file = crate::weights::ModelFile::open(path)?;
            file.load(&mut self.vs)?;
            lines.push(format!(
                "initialised every weight from {} ({})",
                path.display(),
                file.kind()
            ));
        }
        if let Some(path) = &self.config.backbone_weights {
            let report = glassbox_dpt::import::load_timm_backbone(&mut self.vs, path)?;
            lines.push(format!(
                "loaded the encoder from {} ({} tensors; skipped {})",
                path.display(),
                report
                    .loaded
                    .iter()
                    .filter(|n| n.starts_with("encoder."))
                    .count(),
                if report.skipped.is_empty() {
                    "none".to_string()
                } else {
                    report.skipped.join(", ")
                }
            ));
        }
        Ok(lines)
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
        self.best_miou = state.best_miou;
        self.seconds = state.seconds;
        Ok(state)
    }
}
