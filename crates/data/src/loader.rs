//! The one streaming loader (see `docs/data.md`): batches of any [`Dataset`] are decoded or
//! rendered on a background thread, `prefetch` batches ahead through a bounded channel, so memory
//! does not grow with the dataset and the trainer only turns batches into tensors.
//!
//! - **Order.** Training reads the endless sequence formed by concatenating per-epoch permutations
//!   `perm(seed, 0)`, `perm(seed, 1)`, ... of `0..len`; the batch of step `k` holds positions
//!   `k*B .. (k+1)*B` of it (a batch may straddle two epochs). The augmentation RNG of a sample is
//!   seeded from (seed, global position). Everything is a pure function of (seed, step), so
//!   `train_batches(k)` yields exactly what `train_batches(0)` yields after `k` batches: a resumed
//!   run needs no loader state. Evaluation reads every sample once, in dataset order.
//! - **Threads.** One producer thread per stream; inside it, the samples of a batch are loaded in
//!   parallel on the loader's own rayon pool of `workers` threads (the renderer's row parallelism
//!   runs there too), never on the global pool, so the trainer's torch threads keep their cores.
//! - **Memory.** At most `prefetch` batches wait in the channel, plus the one the producer is
//!   assembling. The optional cache holds samples after the part that is the same every epoch
//!   (decode, and the resize to `size` when no random crop follows) and before random
//!   augmentation; it stops inserting once `cache_bytes` would be exceeded, with no eviction, so
//!   a small rendered set is produced once while a large folder stays within the budget.
//! - **Errors.** A failing sample ends the stream with its error (which names the file), unless
//!   `skip_bad`, which counts it and yields a shorter batch; a batch whose every sample failed is an
//!   error. An `Err` is always the last item. A producer that panics or stops early surfaces as
//!   [`DataError::Loader`], never as a silent end or a hang. Dropping a stream stops its producer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ndarray::{Array3, Array4, s};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::augment::{Augment, check_size, resize_sample};
use crate::error::{DataError, Result};
use crate::sample::{Dataset, IGNORE_LABEL, Sample, derive_seed};

/// Stream tags of [`derive_seed`], so epoch shuffles and per-position augmentation never share a
/// random stream.
const ORDER_STREAM: u64 = 0;
const AUGMENT_STREAM: u64 = 1;

/// How the loader forms batches.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch (at least 1).
    pub batch_size: usize,
    /// Seed of the epoch permutations and of the per-position augmentation.
    pub seed: u64,
    /// (height, width) of every sample in a batch; positive multiples of 16.
    pub size: (usize, usize),
    /// Augmentation of training samples (its size must equal `size`); `None` only resizes.
    pub augment: Option<Augment>,
    /// Batches prepared ahead of the consumer (the channel bound; 0 = the producer hands each
    /// batch over directly).
    pub prefetch: usize,
    /// Threads of the loader's own rayon pool for decoding and rendering; 0 counts as 1.
    pub workers: usize,
    /// Skip samples that fail to load and count them, instead of ending the stream with the error.
    pub skip_bad: bool,
    /// Byte budget of the decoded-sample cache; 0 = no cache.
    pub cache_bytes: usize,
    /// This process's share of each training batch in data-parallel training.
    pub shard: Shard,
}

/// One rank's share of the global batch (docs/distributed.md, "Sharding").
///
/// The global batch of step `k` is positions `k*B*W .. (k+1)*B*W` of the endless sequence of
/// epoch permutations (`B` the per-rank batch, `W` the world size); rank `r` reads the `r`-th
/// block of `B` of it. The ranks' batches of a step therefore concatenate, in rank order, to the
/// batch that one process would read with batch `B*W`, every sample is read exactly once per
/// epoch over all ranks, and the augmentation, seeded by the global position, is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world_size: usize,
}

impl Default for Shard {
    /// The whole batch: rank 0 of 1.
    fn default() -> Self {
        Shard {
            rank: 0,
            world_size: 1,
        }
    }
}

impl LoaderConfig {
    /// Batches of `batch_size` at `size`: seed 0, no augmentation, prefetch 2, one worker,
    /// strict about bad samples, no cache.
    pub fn new(batch_size: usize, size: (usize, usize)) -> Self {
        LoaderConfig {
            batch_size,
            seed: 0,
            size,
            augment: None,
            prefetch: 2,
            workers: 1,
            skip_bad: false,
            cache_bytes: 0,
            shard: Shard::default(),
        }
    }
}

/// Where one row of a training batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The epoch whose permutation the position falls in.
    pub epoch: u64,
    /// The dataset index at that position.
    pub index: usize,
    /// The global position in the endless training sequence (seeds the augmentation).
    pub position: u64,
}

/// A stack of samples of equal size, in the layouts a trainer turns into tensors with one copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// B x 3 x H x W normalised RGB.
    pub rgb: Array4<f32>,
    /// B x H x W depth in metres (0 where invalid).
    pub depth: Array3<f32>,
    /// B x H x W validity of depth.
    pub mask: Array3<bool>,
    /// B x H x W class ids as i64 (cross-entropy's target type), [`IGNORE_LABEL`] where a sample
    /// has none; `None` when no sample of the batch has labels.
    pub labels: Option<Array3<i64>>,
    /// Dataset index of each row.
    pub indices: Vec<usize>,
    /// Sample names.
    pub names: Vec<String>,
}

impl Batch {
    /// Stacks samples (with their dataset indices) into standard-layout arrays; all must share one
    /// size.
    pub fn stack(samples: &[(usize, Sample)]) -> Result<Batch> {
        let Some((_, first)) = samples.first() else {
            return Err(DataError::Config("cannot stack an empty batch".into()));
        };
        let (b, h, w) = (samples.len(), first.height(), first.width());
        let mut rgb = Array4::<f32>::zeros((b, 3, h, w));
        let mut depth = Array3::<f32>::zeros((b, h, w));
        let mut mask = Array3::from_elem((b, h, w), false);
        let any_labels = samples.iter().any(|(_, s)| s.labels.is_some());
        let mut labels = any_labels.then(|| Array3::from_elem((b, h, w), IGNORE_LABEL as i64));
        for (i, (_, sample)) in samples.iter().enumerate() {
            if (sample.height(), sample.width()) != (h, w) {
                return Err(DataError::BatchShape {
                    name: sample.name.clone(),
                    expected_h: h,
                    expected_w: w,
                    found_h: sample.height(),
                    found_w: sample.width(),
                });
            }
            rgb.slice_mut(s![i, .., .., ..]).assign(&sample.rgb);
            depth.slice_mut(s![i, .., ..]).assign(&sample.depth);
            mask.slice_mut(s![i, .., ..]).assign(&sample.mask);
            if let (Some(dst), Some(src)) = (&mut labels, &sample.labels) {
                dst.slice_mut(s![i, .., ..]).assign(&src.mapv(i64::from));
            }
        }
        Ok(Batch {
            rgb,
            depth,
            mask,
            labels,
            indices: samples.iter().map(|(i, _)| *i).collect(),
            names: samples.iter().map(|(_, s)| s.name.clone()).collect(),
        })
    }

    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the batch is empty (never true for batches the loader yields).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Streams batches of a dataset for training and evaluation; see the module docs.
pub struct Loader {
    shared: Arc<Shared>,
}

/// What the loader and its producer threads share.
struct Shared {
    dataset: Arc<dyn Dataset>,
    config: LoaderConfig,
    pool: rayon::ThreadPool,
    cache: Cache,
    skipped: AtomicUsize,
}

/// One sample to load: its dataset index and, for training, its global position (which seeds the
/// augmentation); evaluation samples are only resized.
#[derive(Debug, Clone, Copy)]
struct Job {
    index: usize,
    position: Option<u64>,
}

impl Loader {
    /// Checks the configuration (batch size >= 1, sides multiples of 16, augmentation at the same
    /// size, a non-empty dataset) and builds the worker pool; nothing is loaded yet.
    pub fn new(dataset: Arc<dyn Dataset>, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::Config("batch size must be at least 1".into()));
        }
        check_size(config.size)?;
        if let Some(augment) = &config.augment
            && augment.size() != config.size
        {
            return Err(DataError::Config(format!(
                "augmentation size {:?} differs from the loader size {:?}",
                augment.size(),
                config.size
            )));
        }
        if dataset.is_empty() {
            return Err(DataError::Config("the loader's dataset is empty".into()));
        }
        let Shard { rank, world_size } = config.shard;
        if world_size == 0 || rank >= world_size {
            return Err(DataError::Config(format!(
                "shard rank {rank} of world size {world_size}: the rank must be below the world \
                 size, which must be at least 1"
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers.max(1))
            .thread_name(|i| format!("glassbox-data-{i}"))
            .build()
            .map_err(|e| DataError::Loader(format!("cannot start the worker pool: {e}")))?;
        let cache = Cache::new(config.cache_bytes);
        Ok(Loader {
            shared: Arc::new(Shared {
                dataset,
                config,
                pool,
                cache,
                skipped: AtomicUsize::new(0),
            }),
        })
    }

    /// The positions of training step `step`: `step*B .. (step+1)*B` of the endless sequence of
    /// per-epoch permutations `perm(seed, epoch)` of `0..len` (this rank's block of them when
    /// sharded, see [`Shard`]); a pure function of (seed, step, shard).
    pub fn plan(&self, step: u64) -> Vec<Position> {
        let config = &self.shared.config;
        Order::new(self.len(), config.seed).step(step, config.batch_size, config.shard)
    }

    /// Training batches for steps `start_step`, `start_step + 1`, ... forever, prepared by a
    /// background thread `prefetch` batches ahead.
    pub fn train_batches(&self, start_step: u64) -> TrainStream {
        let mut order = Order::new(self.len(), self.shared.config.seed);
        let (batch_size, shard) = (self.shared.config.batch_size, self.shared.config.shard);
        let plans = (start_step..).map(move |step| {
            order
                .step(step, batch_size, shard)
                .into_iter()
                .map(|p| Job {
                    index: p.index,
                    position: Some(p.position),
                })
                .collect()
        });
        TrainStream(Prefetch::spawn(Arc::clone(&self.shared), None, plans))
    }

    /// Evaluation batches: every sample once, in dataset order, resized to `size` without
    /// augmentation, the last batch partial; same background machinery as training.
    pub fn eval_batches(&self) -> EvalStream {
        let (len, batch_size) = (self.len(), self.shared.config.batch_size);
        let plans = (0..len).step_by(batch_size).map(move |start| {
            (start..(start + batch_size).min(len))
                .map(|index| Job {
                    index,
                    position: None,
                })
                .collect()
        });
        let count = self.steps_per_epoch();
        EvalStream(Prefetch::spawn(
            Arc::clone(&self.shared),
            Some(count),
            plans,
        ))
    }

    /// Samples skipped so far because they failed to load (with `skip_bad`), by all streams of
    /// this loader; a bad sample counts each time it is drawn, when the producer loads it (which
    /// may be up to `prefetch + 1` batches ahead of the consumer).
    pub fn skipped(&self) -> usize {
        self.shared.skipped.load(Ordering::Relaxed)
    }

    /// Number of samples in the dataset.
    pub fn len(&self) -> usize {
        self.shared.dataset.len()
    }

    /// Always false: [`Loader::new`] refuses an empty dataset.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Steps that cover one epoch's worth of positions, `len / B` rounded up (also the number of
    /// evaluation batches).
    pub fn steps_per_epoch(&self) -> usize {
        self.len().div_ceil(self.shared.config.batch_size)
    }

    /// The configuration the loader was built with.
    pub fn config(&self) -> &LoaderConfig {
        &self.shared.config
    }
}

/// The epoch permutations, keeping the latest one so consecutive steps do not reshuffle.
struct Order {
    len: usize,
    seed: u64,
    current: Option<(u64, Vec<usize>)>,
}

impl Order {
    fn new(len: usize, seed: u64) -> Self {
        Order {
            len,
            seed,
            current: None,
        }
    }

    fn step(&mut self, step: u64, batch_size: usize, shard: Shard) -> Vec<Position> {
        let b = batch_size as u64;
        let start = step * b * shard.world_size as u64 + shard.rank as u64 * b;
        (start..start + batch_size as u64)
            .map(|p| self.at(p))
            .collect()
    }

    fn at(&mut self, position: u64) -> Position {
        let len = self.len as u64;
        let epoch = position / len;
        if self.current.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut perm: Vec<usize> = (0..self.len).collect();
            let seed = derive_seed(self.seed, epoch, ORDER_STREAM);
            perm.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            self.current = Some((epoch, perm));
        }
        let perm = &self.current.as_ref().expect("set above").1;
        Position {
            epoch,
            index: perm[(position % len) as usize],
            position,
        }
    }
}

impl Shared {
    /// The sample after the deterministic part (decode, and the resize when no crop follows),
    /// from the cache when it holds it.
    fn prepared(&self, index: usize) -> Result<Arc<Sample>> {
        if let Some(sample) = self.cache.get(index) {
            return Ok(sample);
        }
        let sample = self.dataset.get(index)?;
        let crops = self.config.augment.as_ref().is_some_and(Augment::crops);
        let sample = Arc::new(if crops {
            sample
        } else {
            resize_sample(&sample, self.config.size)
        });
        self.cache.offer(index, &sample);
        Ok(sample)
    }

    fn load(&self, job: Job) -> Result<Sample> {
        let prepared = self.prepared(job.index)?;
        Ok(match (&self.config.augment, job.position) {
            (Some(augment), Some(position)) => {
                let seed = derive_seed(self.config.seed, position, AUGMENT_STREAM);
                augment.apply(&prepared, &mut ChaCha8Rng::seed_from_u64(seed))
            }
            _ => resize_sample(&prepared, self.config.size),
        })
    }

    fn load_batch(&self, jobs: &[Job], stop: &AtomicBool) -> Result<Batch> {
        let loaded: Vec<Result<Sample>> = self.pool.install(|| {
            jobs.par_iter()
                .map(|&job| {
                    if stop.load(Ordering::Relaxed) {
                        return Err(DataError::Loader("stream dropped".into()));
                    }
                    self.load(job)
                })
                .collect()
        });
        let mut samples = Vec::with_capacity(jobs.len());
        let mut last_error = None;
        for (job, result) in jobs.iter().zip(loaded) {
            match result {
                Ok(sample) => samples.push((job.index, sample)),
                Err(e) if self.config.skip_bad => {
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        if let (true, Some(e)) = (samples.is_empty(), last_error) {
            return Err(DataError::Loader(format!(
                "every sample of a batch failed to load ({} skipped); the last: {e}",
                jobs.len()
            )));
        }
        Batch::stack(&samples)
    }
}

/// Samples kept across epochs up to a byte budget; insertion stops at the budget (no eviction),
/// which suffices because the cached part of a sample never changes.
struct Cache {
    budget: usize,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    samples: HashMap<usize, Arc<Sample>>,
    bytes: usize,
}

impl Cache {
    fn new(budget: usize) -> Self {
        Cache {
            budget,
            state: Mutex::new(CacheState::default()),
        }
    }

    fn get(&self, index: usize) -> Option<Arc<Sample>> {
        if self.budget == 0 {
            return None;
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.samples.get(&index).cloned()
    }

    fn offer(&self, index: usize, sample: &Arc<Sample>) {
        if self.budget == 0 {
            return;
        }
        let size = sample_bytes(sample);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.bytes + size <= self.budget && !state.samples.contains_key(&index) {
            state.bytes += size;
            state.samples.insert(index, Arc::clone(sample));
        }
    }
}

/// Bytes held by a sample's arrays.
fn sample_bytes(sample: &Sample) -> usize {
    size_of::<f32>() * (sample.rgb.len() + sample.depth.len())
        + sample.mask.len()
        + sample.labels.as_ref().map_or(0, |l| l.len())
}

/// The consumer end of one producer thread.
struct Prefetch {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Batches still expected; `None` for the endless training stream.
    remaining: Option<usize>,
    done: bool,
}

impl Prefetch {
    fn spawn(
        shared: Arc<Shared>,
        count: Option<usize>,
        plans: impl Iterator<Item = Vec<Job>> + Send + 'static,
    ) -> Self {
        let (tx, rx) = sync_channel(shared.config.prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let producer_stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("glassbox-data-loader".into())
            .spawn(move || produce(&shared, plans, &producer_stop, &tx))
            .ok();
        Prefetch {
            rx: Some(rx),
            handle,
            stop,
            remaining: count,
            done: count == Some(0),
        }
    }

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.done {
            return None;
        }
        let received = self.rx.as_ref()?.recv();
        match received {
            Ok(Ok(batch)) => {
                if let Some(n) = &mut self.remaining {
                    *n -= 1;
                    self.done = *n == 0;
                }
                Some(Ok(batch))
            }
            Ok(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            Err(_) => {
                self.done = true;
                let why = match self.handle.take().map(JoinHandle::join) {
                    None => "the producer thread could not be started".to_string(),
                    Some(Err(panic)) => {
                        format!("the producer thread panicked: {}", panic_text(&*panic))
                    }
                    Some(Ok(())) => "the producer thread stopped before the end".to_string(),
                };
                Some(Err(DataError::Loader(why)))
            }
        }
    }

    fn remaining(&self) -> Option<usize> {
        if self.done { Some(0) } else { self.remaining }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Stop loading, then close the channel so a producer blocked on `send` returns.
        self.stop.store(true, Ordering::Relaxed);
        self.rx.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn produce(
    shared: &Shared,
    plans: impl Iterator<Item = Vec<Job>>,
    stop: &AtomicBool,
    tx: &SyncSender<Result<Batch>>,
) {
    for jobs in plans {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let batch = shared.load_batch(&jobs, stop);
        let failed = batch.is_err();
        if tx.send(batch).is_err() || failed {
            return;
        }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// Training batches for consecutive steps, endless; dropping it stops the producer.
pub struct TrainStream(Prefetch);

impl Iterator for TrainStream {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        self.0.next()
    }
}

/// Evaluation batches, every sample once in dataset order; dropping it stops the producer.
pub struct EvalStream(Prefetch);

impl Iterator for EvalStream {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        self.0.next()
    }

    /// At most the batches not yet yielded (fewer only if an error ends the stream).
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.0.remaining())
    }
}
