//! The batch loader: samples are loaded (and augmented) in parallel with rayon on a background
//! thread that stays `prefetch` batches ahead through a bounded channel, in an order shuffled per
//! epoch from a seed. Batches are contiguous ndarray arrays in the layouts a trainer turns into
//! tensors with one copy: RGB B x 3 x H x W f32, depth B x H x W f32, mask B x H x W bool, labels
//! B x H x W i64 (cross-entropy's target type).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use ndarray::{Array3, Array4, s};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::augment::Augment;
use crate::error::{DataError, Result};
use crate::sample::{Dataset, IGNORE_LABEL, Sample, derive_seed};

/// How batches are formed.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Shuffle the order every epoch (seeded by `seed` and the epoch number).
    pub shuffle: bool,
    /// Seed of the shuffles and of the per-sample augmentation.
    pub seed: u64,
    /// Drop the last batch when it would be smaller than `batch_size`.
    pub drop_last: bool,
    /// Batches prepared ahead of the consumer (bound of the channel, at least 1).
    pub prefetch: usize,
    /// Skip samples whose loading fails and count them, instead of yielding the error.
    pub skip_bad: bool,
    /// Augmentation applied to every sample (training); `None` for evaluation.
    pub augment: Option<Augment>,
}

impl LoaderConfig {
    /// Shuffled training batches of `batch_size` with drop_last, prefetch 2, no augmentation.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            seed,
            drop_last: true,
            prefetch: 2,
            skip_bad: false,
            augment: None,
        }
    }

    /// In-order evaluation batches, keeping the last partial batch.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: false,
            seed: 0,
            drop_last: false,
            prefetch: 2,
            skip_bad: false,
            augment: None,
        }
    }
}

/// A stack of samples of equal size.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// B x 3 x H x W normalised RGB.
    pub rgb: Array4<f32>,
    /// B x H x W depth in metres (0 where invalid).
    pub depth: Array3<f32>,
    /// B x H x W validity of depth.
    pub mask: Array3<bool>,
    /// B x H x W class ids ([`IGNORE_LABEL`] where a sample has none), if any sample has labels.
    pub labels: Option<Array3<i64>>,
    /// Dataset index of each row.
    pub indices: Vec<usize>,
    /// Sample names.
    pub names: Vec<String>,
}

impl Batch {
    /// Stacks samples (with their dataset indices); all must share one size.
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

/// Iterates a dataset in batches, epoch by epoch.
pub struct BatchLoader<D> {
    dataset: Arc<D>,
    config: LoaderConfig,
    skipped: Arc<AtomicUsize>,
}

impl<D: Dataset + 'static> BatchLoader<D> {
    /// Checks the configuration (batch size >= 1) and wraps the dataset.
    pub fn new(dataset: Arc<D>, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::Config("batch size must be at least 1".into()));
        }
        Ok(BatchLoader {
            dataset,
            config,
            skipped: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The sample order of `epoch`: a seeded permutation when shuffling, else 0..len.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
                self.config.seed,
                epoch,
                0x5eed,
            )));
        }
        order
    }

    /// Batches per epoch (before any skipping).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Samples skipped so far because they failed to load (with `skip_bad`).
    pub fn skipped(&self) -> usize {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Starts loading `epoch` in the background and returns the batches as an iterator. With
    /// `skip_bad` off, the first failing sample ends the epoch with its error.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let (tx, rx) = sync_channel(self.config.prefetch.max(1));
        let order = self.order(epoch);
        let dataset = Arc::clone(&self.dataset);
        let config = self.config.clone();
        let skipped = Arc::clone(&self.skipped);
        let handle =
            std::thread::spawn(move || produce(&*dataset, &config, epoch, &order, &skipped, &tx));
        Epoch {
            rx: Some(rx),
            handle: Some(handle),
        }
    }
}

fn load_one<D: Dataset>(
    dataset: &D,
    config: &LoaderConfig,
    epoch: u64,
    index: usize,
) -> Result<Sample> {
    let sample = dataset.get(index)?;
    match &config.augment {
        Some(augment) => {
            let mut rng =
                ChaCha8Rng::seed_from_u64(derive_seed(config.seed, epoch, index as u64 + 1));
            augment.apply(&sample, &mut rng)
        }
        None => Ok(sample),
    }
}

fn produce<D: Dataset>(
    dataset: &D,
    config: &LoaderConfig,
    epoch: u64,
    order: &[usize],
    skipped: &AtomicUsize,
    tx: &SyncSender<Result<Batch>>,
) {
    for chunk in order.chunks(config.batch_size) {
        if config.drop_last && chunk.len() < config.batch_size {
            break;
        }
        let loaded: Vec<(usize, Result<Sample>)> = chunk
            .par_iter()
            .map(|&i| (i, load_one(dataset, config, epoch, i)))
            .collect();
        let mut samples = Vec::with_capacity(chunk.len());
        for (i, result) in loaded {
            match result {
                Ok(sample) => samples.push((i, sample)),
                Err(_) if config.skip_bad => {
                    skipped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        if samples.is_empty() {
            continue;
        }
        let batch = Batch::stack(&samples);
        let failed = batch.is_err();
        if tx.send(batch).is_err() || failed {
            return;
        }
    }
}

/// The batches of one epoch; dropping it early stops the background thread.
pub struct Epoch {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for Epoch {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        // Closing the channel first makes a producer blocked on `send` return.
        self.rx.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
