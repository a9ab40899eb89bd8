//! Data-parallel updates (`docs/distributed.md`): rank 0's state is broadcast once, then every
//! update's gradients are averaged over the ranks before the optimiser step, so that every rank
//! applies the same update to the same weights.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use glassbox_distributed::{Backend, GradientBuckets, Launch, ProcessGroup};
use tch::{Device, Tensor};

use super::TrainError;
use super::step::Trainer;
use crate::config::DistributedConfig;
use crate::optim::AdamW;

/// One rank's share of a data-parallel run: its process group and the gradient buckets.
pub struct DataParallel {
    group: ProcessGroup,
    buckets: GradientBuckets,
    /// The optimiser's variables, in its order (sorted by name, the same on every rank).
    params: Vec<Tensor>,
    interrupt: Option<Arc<AtomicBool>>,
    spent: std::cell::Cell<Duration>,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("group", &self.group)
            .field("buckets", &self.buckets.len())
            .finish()
    }
}

impl DataParallel {
    /// Joins the launch's process group (Gloo for CPU, NCCL for CUDA) and buckets the variables
    /// `optimizer` updates. `interrupt` is this rank's Ctrl-C flag: any rank's request stops
    /// every rank after the same update.
    pub fn join(
        launch: &Launch,
        device: Device,
        optimizer: &AdamW,
        config: &DistributedConfig,
        interrupt: Option<Arc<AtomicBool>>,
    ) -> Result<Self, TrainError> {
        let group = ProcessGroup::new(
            launch,
            Backend::for_device(device),
            Duration::from_secs_f64(config.timeout_s),
        )?;
        let params = optimizer.parameters();
        let buckets = GradientBuckets::new(&params, config.bucket_mb << 20);
        Ok(Self {
            group,
            buckets,
            params,
            interrupt,
            spent: std::cell::Cell::new(Duration::ZERO),
        })
    }

    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    pub fn world_size(&self) -> usize {
        self.group.world_size()
    }

    /// All-reduce calls per update.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Makes every rank start from rank 0's state: all variables (trainable or not), the
    /// optimiser's moments and step, and the run's counters. Only rank 0 reads `--init`,
    /// `--backbone-weights` or the resumed checkpoint, so other nodes need no copy of them.
    pub fn synchronise(&self, trainer: &mut Trainer) -> Result<(), TrainError> {
        let variables = sorted(&trainer.vs);
        let state = trainer.optimizer.state();
        let mut tensors: Vec<&Tensor> = variables.iter().collect();
        tensors.extend(state.iter().filter(|(n, _)| n != "step").map(|(_, t)| t));
        let counters = Tensor::from_slice(&[
            trainer.step as f64,
            trainer.optimizer.step_count() as f64,
            trainer.best_abs_rel.unwrap_or(f64::NAN),
            trainer.best_miou.unwrap_or(f64::NAN),
            trainer.seconds,
        ]);
        tensors.push(&counters);
        self.group.broadcast(&tensors, 0)?;
        let c = Vec::<f64>::try_from(&counters).unwrap_or_default();
        let finite = |x: f64| x.is_finite().then_some(x);
        trainer.step = c[0] as usize;
        trainer.best_abs_rel = finite(c[2]);
        trainer.best_miou = finite(c[3]);
        trainer.seconds = c[4];
        let state: Vec<(String, Tensor)> = state
            .into_iter()
            .map(|(name, t)| {
                if name == "step" {
                    (name, Tensor::from(c[1] as i64))
                } else {
                    (name, t)
                }
            })
            .collect();
        trainer
            .optimizer
            .load_state(state)
            .map_err(|message| TrainError::Resume { message })?;
        Ok(())
    }

    /// Averages the update's gradients over the ranks (in buckets) together with the loss and
    /// the ranks' stop requests. Returns the mean loss over all ranks and whether any rank
    /// asked to stop.
    pub fn reduce(&self, loss: f64) -> Result<(f64, bool), TrainError> {
        let started = std::time::Instant::now();
        let out = self.reduce_now(loss);
        self.spent.set(self.spent.get() + started.elapsed());
        out
    }

    /// Wall time spent in [`DataParallel::reduce`] so far, waiting for the slower ranks
    /// included.
    pub fn all_reduce_time(&self) -> Duration {
        self.spent.get()
    }

    fn reduce_now(&self, loss: f64) -> Result<(f64, bool), TrainError> {
        let stop = self
            .interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst));
        let values = self.buckets.all_reduce_mean(
            &self.group,
            &self.params,
            &[loss, if stop { 1.0 } else { 0.0 }],
        )?;
        Ok((values[0], values[1] > 0.0))
    }

    /// Waits for every rank (e.g. before rank 0 reports that the run finished).
    pub fn barrier(&self) -> Result<(), TrainError> {
        Ok(self.group.barrier()?)
    }
}

/// `vs`'s variables, trainable or not, sorted by name: the same order in every process.
fn sorted(vs: &tch::nn::VarStore) -> Vec<Tensor> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, t)| t).collect()
}
