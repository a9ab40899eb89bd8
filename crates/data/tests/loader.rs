//! The batch loader yields every index exactly once per epoch, in the same order for the same
//! seed, stacks contiguous arrays, and skips and counts bad samples when told to.

use std::sync::Arc;

use glassbox_data::augment::Augment;
use glassbox_data::loader::{BatchLoader, LoaderConfig};
use glassbox_data::{DataError, Dataset, Sample, SyntheticConfig, SyntheticDataset};
use ndarray::{Array2, Array3};
use proptest::prelude::*;

/// A tiny dataset whose sample i has depth i everywhere; indices in `bad` fail to load.
struct Numbered {
    len: usize,
    bad: Vec<usize>,
}

impl Dataset for Numbered {
    fn len(&self) -> usize {
        self.len
    }
    fn get(&self, index: usize) -> glassbox_data::Result<Sample> {
        if self.bad.contains(&index) {
            return Err(DataError::Config(format!("sample {index} is bad")));
        }
        Sample::from_depth(
            format!("n{index}"),
            Array3::zeros((3, 2, 3)),
            Array2::from_elem((2, 3), index as f32),
            None,
        )
    }
}

fn collect(loader: &BatchLoader<Numbered>, epoch: u64) -> Vec<usize> {
    loader
        .epoch(epoch)
        .flat_map(|b| b.unwrap().indices)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_index_exactly_once_per_epoch_in_a_seeded_order(len in 1usize..40, batch in 1usize..9, seed in any::<u64>()) {
        let config = LoaderConfig { drop_last: false, ..LoaderConfig::train(batch, seed) };
        let loader = BatchLoader::new(Arc::new(Numbered { len, bad: vec![] }), config.clone()).unwrap();
        let first = collect(&loader, 0);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        prop_assert_eq!(sorted, (0..len).collect::<Vec<_>>());
        prop_assert_eq!(&first, &loader.order(0));
        let again = BatchLoader::new(Arc::new(Numbered { len, bad: vec![] }), config).unwrap();
        prop_assert_eq!(&collect(&again, 0), &first);
        prop_assert_eq!(loader.epoch(0).count(), loader.batches_per_epoch());
    }
}

#[test]
fn epochs_are_reshuffled_and_drop_last_drops_the_partial_batch() {
    let loader = BatchLoader::new(
        Arc::new(Numbered {
            len: 50,
            bad: vec![],
        }),
        LoaderConfig::train(8, 3),
    )
    .unwrap();
    assert_ne!(loader.order(0), loader.order(1));
    let batches: Vec<_> = loader.epoch(1).map(Result::unwrap).collect();
    assert_eq!(batches.len(), 6);
    assert!(batches.iter().all(|b| b.len() == 8));
    let eval = BatchLoader::new(
        Arc::new(Numbered {
            len: 50,
            bad: vec![],
        }),
        LoaderConfig::eval(8),
    )
    .unwrap();
    assert_eq!(collect(&eval, 0), (0..50).collect::<Vec<_>>());
}

#[test]
fn batches_are_contiguous_and_rows_match_their_indices() {
    let loader = BatchLoader::new(
        Arc::new(Numbered {
            len: 10,
            bad: vec![],
        }),
        LoaderConfig::train(4, 9),
    )
    .unwrap();
    for batch in loader.epoch(0) {
        let batch = batch.unwrap();
        assert_eq!(batch.rgb.dim(), (4, 3, 2, 3));
        assert!(batch.rgb.is_standard_layout() && batch.depth.is_standard_layout());
        for (row, &i) in batch.indices.iter().enumerate() {
            assert_eq!(batch.depth[[row, 1, 2]], i as f32);
            assert_eq!(batch.mask[[row, 0, 0]], i > 0);
        }
        assert!(batch.labels.is_none());
    }
}

#[test]
fn bad_samples_end_the_epoch_with_their_error_or_are_skipped_and_counted() {
    let data = Arc::new(Numbered {
        len: 12,
        bad: vec![3, 7],
    });
    let strict = BatchLoader::new(Arc::clone(&data), LoaderConfig::eval(4)).unwrap();
    let results: Vec<_> = strict.epoch(0).collect();
    assert!(
        results
            .last()
            .unwrap()
            .as_ref()
            .is_err_and(|e| e.to_string().contains("sample 3"))
    );
    let lenient = BatchLoader::new(
        data,
        LoaderConfig {
            skip_bad: true,
            ..LoaderConfig::eval(4)
        },
    )
    .unwrap();
    let seen = collect_any(&lenient);
    assert_eq!(seen.len(), 10);
    assert!(!seen.contains(&3) && !seen.contains(&7));
    assert_eq!(lenient.skipped(), 2);
}

fn collect_any(loader: &BatchLoader<Numbered>) -> Vec<usize> {
    loader.epoch(0).flat_map(|b| b.unwrap().indices).collect()
}

#[test]
fn augmented_synthetic_batches_are_reproducible_and_dropping_an_epoch_early_is_clean() {
    let data = Arc::new(SyntheticDataset::new(SyntheticConfig::indoor(48, 40, 6, 1)).unwrap());
    let config = LoaderConfig {
        augment: Some(Augment::new(32, 32).unwrap()),
        ..LoaderConfig::train(3, 4)
    };
    let loader = BatchLoader::new(Arc::clone(&data), config.clone()).unwrap();
    let a: Vec<_> = loader.epoch(2).map(Result::unwrap).collect();
    let b: Vec<_> = BatchLoader::new(data, config)
        .unwrap()
        .epoch(2)
        .map(Result::unwrap)
        .collect();
    assert_eq!(a, b);
    assert_eq!(a[0].rgb.dim(), (3, 3, 32, 32));
    assert!(a[0].labels.is_some());
    let mut early = loader.epoch(3);
    assert!(early.next().is_some());
    drop(early);
}

#[test]
fn samples_of_different_sizes_cannot_be_stacked() {
    struct Mixed;
    impl Dataset for Mixed {
        fn len(&self) -> usize {
            2
        }
        fn get(&self, i: usize) -> glassbox_data::Result<Sample> {
            Sample::from_depth(
                "m",
                Array3::zeros((3, 2, 2 + i)),
                Array2::ones((2, 2 + i)),
                None,
            )
        }
    }
    let loader = BatchLoader::new(Arc::new(Mixed), LoaderConfig::eval(2)).unwrap();
    let err = loader.epoch(0).next().unwrap().unwrap_err();
    assert!(matches!(err, DataError::BatchShape { .. }), "{err}");
    assert!(BatchLoader::new(Arc::new(Mixed), LoaderConfig::eval(0)).is_err());
}
