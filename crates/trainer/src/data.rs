//! A run's data: the glassbox-data loaders of its training and validation images
//! (`docs/data.md`). The loader decodes or renders on its own threads, a bounded queue ahead of the
//! model, so memory does not grow with the dataset; the batch of every training micro-step is a
//! pure function of (seed, micro-step), so a resumed run sees exactly the batches the
//! uninterrupted run would have seen. The trainer only turns batches into tensors
//! ([`crate::tensor::TensorBatch`]).

use std::sync::Arc;

use glassbox_data::{
    Augment, Dataset, Loader, LoaderConfig, ReaderOptions, Shard, SourceConfig, Subset, split_last,
};

use crate::config::TrainConfig;

/// Anything that stops a split from opening.
#[derive(Debug, thiserror::Error)]
pub enum DataLoadError {
    #[error("cannot open the {split} data ({source_name}): {source}")]
    Data {
        split: &'static str,
        source_name: String,
        // Boxed: a data error names files and sizes, and errors travel by value.
        #[source]
        source: Box<glassbox_data::DataError>,
    },
    #[error(
        "the training data ({source_name}) has {len} samples, too few to hold out {holdout} for \
         validation; give a validation source or a smaller data.holdout"
    )]
    Holdout {
        source_name: String,
        len: usize,
        holdout: usize,
    },
}

/// The loaders of one run.
pub struct RunData {
    /// Shuffled, augmented training batches of `optim.batch_size`.
    pub train: Loader,
    /// Validation images in order, resized to the training size, no augmentation.
    pub val: Loader,
    /// What the two hold, for the run's log line.
    pub description: String,
}

/// Size of the held-out validation block for a training source of `len` samples when the config
/// asks for `holdout` (0 = a tenth, between 1 and 100).
pub fn holdout_size(len: usize, holdout: usize) -> usize {
    if holdout > 0 {
        holdout
    } else {
        (len / 10).clamp(1, 100)
    }
}

fn open_source(
    source: &SourceConfig,
    config: &TrainConfig,
    split: &'static str,
) -> Result<Arc<dyn Dataset>, DataLoadError> {
    let [h, w] = config.data.image_size;
    let options = ReaderOptions {
        skip_bad: config.data.skip_bad,
        num_classes: config.num_classes(),
        ..ReaderOptions::default()
    };
    let dataset = source
        .open((h, w), options)
        .map_err(data_error(split, source))?;
    Ok(Arc::new(dataset))
}

/// For `map_err`: a data error of `split`, naming its source.
fn data_error(
    split: &'static str,
    source: &SourceConfig,
) -> impl FnOnce(glassbox_data::DataError) -> DataLoadError {
    let source_name = source.describe();
    move |e| DataLoadError::Data {
        split,
        source_name,
        source: Box::new(e),
    }
}

/// Opens the training and validation data of `config`.
pub fn open(config: &TrainConfig) -> Result<RunData, DataLoadError> {
    open_sharded(config, Shard::default())
}

/// [`open`] for one rank of a data-parallel run: its training loader reads `shard`'s block of
/// each global batch (`glassbox_data::Shard`); validation reads everything.
pub fn open_sharded(config: &TrainConfig, shard: Shard) -> Result<RunData, DataLoadError> {
    let d = &config.data;
    let [h, w] = d.image_size;
    let train_source = open_source(&d.train, config, "training")?;
    let (train, val, description): (Arc<dyn Dataset>, Arc<dyn Dataset>, String) = match &d.val {
        Some(val) => {
            let val_set = open_source(val, config, "validation")?;
            let text = format!(
                "train: {} ({} images); validation: {} ({} images)",
                d.train.describe(),
                train_source.len(),
                val.describe(),
                val_set.len()
            );
            (train_source, val_set, text)
        }
        None => {
            let len = train_source.len();
            let holdout = holdout_size(len, d.holdout);
            if holdout >= len {
                return Err(DataLoadError::Holdout {
                    source_name: d.train.describe(),
                    len,
                    holdout,
                });
            }
            let (first, last) = split_last(len, holdout);
            let text = format!(
                "{}: samples {}..{} train, the last {} validate",
                d.train.describe(),
                first.start,
                first.end,
                holdout
            );
            let train_block = Subset::new(train_source.clone(), first)
                .map_err(data_error("training", &d.train))?;
            let val_block =
                Subset::new(train_source, last).map_err(data_error("validation", &d.train))?;
            (Arc::new(train_block), Arc::new(val_block), text)
        }
    };
    let augment = Augment::new(&d.augment, (h, w)).map_err(data_error("training", &d.train))?;
    let loader = |augment, batch_size| LoaderConfig {
        batch_size,
        seed: config.seed,
        size: (h, w),
        augment,
        prefetch: d.prefetch,
        workers: d.workers,
        skip_bad: d.skip_bad,
        cache_bytes: d.cache_mb << 20,
        shard: Shard::default(),
    };
    let train_config = LoaderConfig {
        shard,
        ..loader(Some(augment), config.optim.batch_size)
    };
    let train = Loader::new(train, train_config).map_err(data_error("training", &d.train))?;
    let val_source = d.val.as_ref().unwrap_or(&d.train);
    let val = Loader::new(val, loader(None, config.optim.batch_size))
        .map_err(data_error("validation", val_source))?;
    Ok(RunData {
        train,
        val,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automatic_holdout_is_a_tenth_between_1_and_100() {
        assert_eq!(holdout_size(600, 0), 60);
        assert_eq!(holdout_size(5000, 0), 100);
        assert_eq!(holdout_size(4, 0), 1);
        assert_eq!(holdout_size(600, 7), 7);
    }
}
