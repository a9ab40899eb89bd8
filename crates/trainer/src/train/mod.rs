//! Training runs (`docs/training.md`): AdamW with backbone/decoder learning rates, warm-up +
//! cosine decay, gradient clipping and accumulation; MiDaS loss on disparity or SILog on metric
//! depth; periodic validation and spectral probes; atomic checkpoints with the optimiser state;
//! logs and a report.
//!
//! - [`step`]: one update ([`Trainer`]) and the loss;
//! - [`run`]: the loop over updates with its schedule ([`train`]);
//! - [`logs`]: the JSONL logs and the progress display;
//! - [`parallel`]: data-parallel updates over torch.distributed process groups.
//!
//! A NaN or infinite loss (or gradient) stops the run with [`TrainError::NonFinite`] naming the
//! step; nothing is written after it, so `last.safetensors` stays the last good checkpoint.

pub mod logs;
pub mod parallel;
pub mod run;
pub mod step;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tch::Device;

pub use parallel::DataParallel;
pub use run::train;
pub use step::{SaliencyLog, StepOutcome, Trainer, depth_loss, segmentation_loss, task_loss};

use crate::eval::EvalReport;

/// Everything that stops a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Model(#[from] glassbox_dpt::DptError),
    #[error(transparent)]
    Open(#[from] crate::data::DataLoadError),
    /// Boxed, like every large source error here, so that results stay small.
    #[error("training data: {0}")]
    Data(Box<glassbox_data::DataError>),
    #[error(
        "segmentation needs labels, but training sample {sample} has none; use a source with \
         label PNGs (ADE20K, a folder with labels/, synthetic scenes)"
    )]
    NoLabels { sample: String },
    #[error("the training data stream ended before step {step}")]
    DataEnded { step: usize },
    #[error(transparent)]
    Loss(#[from] glassbox_losses::LossError),
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Weights(Box<crate::weights::WeightsError>),
    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
    #[error(transparent)]
    File(#[from] crate::fs::FileError),
    #[error("run figures: {0}")]
    Figure(Box<glassbox_spectral::SpectralError>),
    #[error(transparent)]
    Page(Box<crate::page::PageError>),
    #[error(transparent)]
    Report(Box<crate::report::ReportError>),
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
    #[error(transparent)]
    Distributed(#[from] glassbox_distributed::DistError),
    #[error(
        "distributed.world_size is {config} but {launch} process(es) were launched; leave it to \
         the launch (`glassbox train --nproc N` or WORLD_SIZE)"
    )]
    WorldSize { config: usize, launch: usize },
    #[error("unknown device {0:?}; expected auto, cpu, cuda or cuda:N")]
    Device(String),
    #[error(
        "device {asked:?} is not available: libtorch sees {count} CUDA device(s) here; use \
         --device cpu (or auto, which takes a GPU when there is one)"
    )]
    NoCuda { asked: String, count: i64 },
}

impl From<glassbox_data::DataError> for TrainError {
    fn from(e: glassbox_data::DataError) -> Self {
        Self::Data(Box::new(e))
    }
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
    /// This process's rank in a data-parallel run (`docs/distributed.md`); `None` (or a world of
    /// one) trains alone. Only rank 0 writes to the run folder.
    pub launch: Option<glassbox_distributed::Launch>,
}

impl TrainOptions {
    /// A fresh, reported run in `run_dir` with progress display.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            run_dir: run_dir.into(),
            resume: false,
            quiet: false,
            stop_after: None,
            report: true,
            interrupt: None,
            launch: None,
        }
    }
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
    /// Wall time of this invocation's training updates (loop included, validation, probes,
    /// checkpoints and the report excluded).
    pub update_seconds: f64,
    /// Training images per second of wall time over this invocation's updates.
    pub images_per_second: f64,
    /// Wall time of the whole run, including the invocations before a resume.
    pub train_seconds: f64,
    /// The run stopped early because `interrupt` was set.
    pub interrupted: bool,
    /// Trainable parameters of the model.
    pub parameters: i64,
    /// Of those, the parameters outside the encoder (decoder and head, or DEPICT).
    pub decoder_parameters: i64,
    /// Samples the loader skipped because they failed to load (with `data.skip_bad`).
    pub skipped_samples: usize,
}

/// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
pub fn resolve_device(name: &str) -> Result<Device, TrainError> {
    let index = match name {
        "auto" => return Ok(Device::cuda_if_available()),
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| TrainError::Device(other.to_string()))?,
    };
    // Asked for a GPU that is not there, libtorch would abort at the first tensor.
    let count = tch::Cuda::device_count();
    if index as i64 >= count {
        return Err(TrainError::NoCuda {
            asked: name.to_string(),
            count,
        });
    }
    Ok(Device::Cuda(index))
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

impl From<crate::weights::WeightsError> for TrainError {
    fn from(e: crate::weights::WeightsError) -> Self {
        Self::Weights(Box::new(e))
    }
}
