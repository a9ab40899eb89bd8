//! The streaming loader: every sample exactly once per epoch in a seed-determined order, a resumed
//! stream continues exactly, bad samples surface as errors naming the file (or are skipped and
//! counted), a dying producer is an error rather than a hang, and the cache spares reloading.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use glassbox_data::augment::{Augment, AugmentConfig};
use glassbox_data::io::{write_depth_png, write_rgb};
use glassbox_data::loader::{Batch, Loader, LoaderConfig, Shard};
use glassbox_data::readers::ReaderOptions;
use glassbox_data::{DataError, Dataset, Sample, SourceConfig, SyntheticConfig, SyntheticDataset};
use ndarray::{Array2, Array3};
use proptest::prelude::*;

/// A tiny dataset whose sample i (2 x 3 pixels) has depth i everywhere; indices in `bad` fail to
/// load; `calls` counts loads.
struct Numbered {
    len: usize,
    bad: Vec<usize>,
    calls: AtomicUsize,
}

fn numbered(len: usize, bad: Vec<usize>) -> Arc<Numbered> {
    Arc::new(Numbered {
        len,
        bad,
        calls: AtomicUsize::new(0),
    })
}

impl Dataset for Numbered {
    fn len(&self) -> usize {
        self.len
    }
    fn get(&self, index: usize) -> glassbox_data::Result<Sample> {
        self.calls.fetch_add(1, Ordering::Relaxed);
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

/// Runs `f` on another thread and waits for it generously: a hang fails the test instead of
/// blocking it forever. Not a timing assertion; the bound is far above any real run.
fn without_hanging<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the loader hung for 120 s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the checked code panicked"),
    }
}

fn config(batch_size: usize, seed: u64) -> LoaderConfig {
    LoaderConfig {
        seed,
        ..LoaderConfig::new(batch_size, (16, 16))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_sample_appears_exactly_once_per_epoch_in_a_seed_determined_order(
        len in 1usize..40, batch in 1usize..9, seed in any::<u64>()
    ) {
        let loader = Loader::new(numbered(len, vec![]), config(batch, seed)).unwrap();
        let steps = (3 * len).div_ceil(batch) as u64;
        let positions: Vec<_> = (0..steps).flat_map(|k| loader.plan(k)).collect();
        for (p, pos) in positions.iter().enumerate() {
            prop_assert_eq!(pos.position, p as u64);
            prop_assert_eq!(pos.epoch, p as u64 / len as u64);
        }
        for epoch in 0..3 {
            let mut seen: Vec<usize> = positions[epoch * len..(epoch + 1) * len].iter().map(|p| p.index).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..len).collect::<Vec<_>>());
        }
        let again = Loader::new(numbered(len, vec![]), config(batch, seed)).unwrap();
        prop_assert_eq!(again.plan(steps - 1), loader.plan(steps - 1));
        let streamed: Vec<usize> = loader.train_batches(0).take(3).flat_map(|b| b.unwrap().indices).collect();
        let planned: Vec<usize> = (0..3).flat_map(|k| loader.plan(k)).map(|p| p.index).collect();
        prop_assert_eq!(streamed, planned);
    }
}

fn sharded(batch_size: usize, seed: u64, rank: usize, world_size: usize) -> LoaderConfig {
    LoaderConfig {
        shard: Shard { rank, world_size },
        ..config(batch_size, seed)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Data-parallel equivalence rests on this: at every step the ranks' batches, in rank order,
    /// are exactly the batch one process reads with the whole global batch.
    #[test]
    fn the_ranks_batches_concatenate_to_the_single_process_global_batch(
        len in 1usize..40, batch in 1usize..5, world in 1usize..5, seed in any::<u64>(),
        step in 0u64..30
    ) {
        let data = numbered(len, vec![]);
        let whole = Loader::new(data.clone(), config(batch * world, seed)).unwrap();
        let mut joined = Vec::new();
        for rank in 0..world {
            let loader = Loader::new(data.clone(), sharded(batch, seed, rank, world)).unwrap();
            joined.extend(loader.plan(step));
        }
        prop_assert_eq!(joined, whole.plan(step));
    }

    #[test]
    fn over_one_epoch_the_ranks_read_every_sample_exactly_once(
        batches in 1usize..6, batch in 1usize..5, world in 1usize..5, seed in any::<u64>(),
        epoch in 0u64..4
    ) {
        let len = batches * batch * world;
        let data = numbered(len, vec![]);
        let mut seen = vec![0usize; len];
        for rank in 0..world {
            let loader = Loader::new(data.clone(), sharded(batch, seed, rank, world)).unwrap();
            for step in 0..batches as u64 {
                for p in loader.plan(epoch * batches as u64 + step) {
                    prop_assert_eq!(p.epoch, epoch);
                    seen[p.index] += 1;
                }
            }
        }
        prop_assert!(seen.iter().all(|&n| n == 1), "{:?}", seen);
    }
}

#[test]
fn a_shard_outside_the_world_is_refused_in_one_sentence() {
    for (rank, world) in [(2, 2), (0, 0)] {
        let Err(err) = Loader::new(numbered(4, vec![]), sharded(2, 0, rank, world)) else {
            panic!("shard rank {rank} of world size {world} was accepted");
        };
        let text = err.to_string();
        assert!(
            text.contains(&format!("shard rank {rank} of world size {world}")),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }
}

#[test]
fn epochs_are_reshuffled_and_a_step_straddles_the_epoch_boundary_when_len_is_not_divisible() {
    let loader = Loader::new(numbered(10, vec![]), config(4, 3)).unwrap();
    assert_eq!(loader.steps_per_epoch(), 3);
    let step2 = loader.plan(2);
    assert_eq!(
        step2.iter().map(|p| p.epoch).collect::<Vec<_>>(),
        [0, 0, 1, 1]
    );
    let epoch = |e: usize| -> Vec<usize> {
        (0..5)
            .flat_map(|k| loader.plan(k))
            .skip(10 * e)
            .take(10)
            .map(|p| p.index)
            .collect()
    };
    assert_ne!(epoch(0), epoch(1));
    let other_seed = Loader::new(numbered(10, vec![]), config(4, 4)).unwrap();
    assert_ne!(other_seed.plan(0), loader.plan(0));
    let divisible = Loader::new(numbered(12, vec![]), config(4, 3)).unwrap();
    assert!(divisible.plan(3).iter().all(|p| p.epoch == 1));
}

#[test]
fn a_resumed_stream_yields_exactly_what_the_uninterrupted_one_yields_after_k_batches() {
    let data: Arc<dyn Dataset> =
        Arc::new(SyntheticDataset::new(SyntheticConfig::indoor(48, 40, 6, 1)).unwrap());
    let augment = Augment::new(&AugmentConfig::standard(), (32, 32)).unwrap();
    let loader_config = LoaderConfig {
        augment: Some(augment),
        workers: 2,
        ..LoaderConfig::new(4, (32, 32))
    };
    let cached_config = LoaderConfig {
        cache_bytes: 1 << 24,
        ..loader_config.clone()
    };
    let (full, resumed, cached) = without_hanging(move || {
        let loader = Loader::new(Arc::clone(&data), loader_config).unwrap();
        let full: Vec<Batch> = loader
            .train_batches(0)
            .take(7)
            .map(Result::unwrap)
            .collect();
        let resumed: Vec<Batch> = loader
            .train_batches(3)
            .take(4)
            .map(Result::unwrap)
            .collect();
        let cached: Vec<Batch> = Loader::new(data, cached_config)
            .unwrap()
            .train_batches(0)
            .take(7)
            .map(Result::unwrap)
            .collect();
        (full, resumed, cached)
    });
    assert_eq!(&full[3..], &resumed[..]);
    assert_eq!(full, cached);
    assert_eq!(full[0].rgb.dim(), (4, 3, 32, 32));
    assert!(full[0].labels.is_some());
    // Positions differ, so the same scene drawn in two epochs is augmented differently.
    let first = &full[0];
    let later = full
        .iter()
        .skip(1)
        .find(|b| b.indices.contains(&first.indices[0]))
        .unwrap();
    let row = later
        .indices
        .iter()
        .position(|&i| i == first.indices[0])
        .unwrap();
    assert_ne!(
        first.rgb.index_axis(ndarray::Axis(0), 0),
        later.rgb.index_axis(ndarray::Axis(0), row)
    );
}

#[test]
fn evaluation_covers_every_sample_once_in_order_with_a_partial_last_batch() {
    let loader = Loader::new(numbered(10, vec![]), config(4, 0)).unwrap();
    let batches: Vec<Batch> = without_hanging(move || {
        let stream = loader.eval_batches();
        assert_eq!(stream.size_hint(), (0, Some(3)));
        stream.map(Result::unwrap).collect()
    });
    let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
    assert_eq!(sizes, [4, 4, 2]);
    let order: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
}

#[test]
fn batches_are_standard_layout_at_the_loader_size_and_rows_match_their_indices() {
    let loader = Loader::new(numbered(10, vec![]), config(4, 9)).unwrap();
    for batch in loader.train_batches(0).take(3) {
        let batch = batch.unwrap();
        assert_eq!(batch.rgb.dim(), (4, 3, 16, 16));
        assert!(batch.rgb.is_standard_layout() && batch.depth.is_standard_layout());
        for (row, &i) in batch.indices.iter().enumerate() {
            assert_eq!(batch.depth[[row, 15, 15]], i as f32);
            assert_eq!(batch.mask[[row, 0, 0]], i > 0);
            assert_eq!(batch.names[row], format!("n{i}"));
        }
        assert!(batch.labels.is_none());
    }
}

/// A folder dataset of `n` 16 x 16 samples (`rgb/NNN.png`, `depth/NNN.png`) whose depth PNG of
/// sample `corrupt` is truncated.
fn folder_with_a_truncated_png(dir: &std::path::Path, n: usize, corrupt: usize) -> SourceConfig {
    for i in 0..n {
        let rgb = Array3::from_elem((3, 16, 16), i as f32 / n as f32 - 0.5);
        write_rgb(&dir.join(format!("rgb/{i:03}.png")), rgb.view()).unwrap();
        let depth = Array2::from_elem((16, 16), 1.0 + i as f32);
        let mask = Array2::from_elem((16, 16), true);
        let path = dir.join(format!("depth/{i:03}.png"));
        write_depth_png(&path, depth.view(), mask.view(), 1e-3).unwrap();
        if i == corrupt {
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        }
    }
    SourceConfig::Folder {
        root: dir.to_path_buf(),
        depth_scale: 1e-3,
    }
}

#[test]
fn a_corrupt_png_inside_the_prefetch_queue_ends_the_stream_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = folder_with_a_truncated_png(dir.path(), 6, 3);
    let data: Arc<dyn Dataset> = Arc::new(source.open((16, 16), ReaderOptions::default()).unwrap());
    let (ok_batches, err, after) = without_hanging(move || {
        let loader = Loader::new(data, config(2, 5)).unwrap();
        let mut stream = loader.train_batches(0);
        let mut ok = 0;
        let err = loop {
            match stream.next().expect("the stream ended without an error") {
                Ok(_) => ok += 1,
                Err(e) => break e,
            }
        };
        (ok, err, stream.next().is_none())
    });
    assert!(ok_batches < 3, "the bad sample is in the first epoch");
    assert!(err.to_string().contains("003.png"), "{err}");
    assert!(after, "an error is the last item");
}

#[test]
fn with_skip_bad_the_corrupt_sample_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let source = folder_with_a_truncated_png(dir.path(), 6, 3);
    let data: Arc<dyn Dataset> = Arc::new(source.open((16, 16), ReaderOptions::default()).unwrap());
    let loader = Loader::new(
        data,
        LoaderConfig {
            skip_bad: true,
            ..config(4, 5)
        },
    )
    .unwrap();
    let (rows, skipped) = without_hanging(move || {
        let rows: Vec<usize> = loader
            .eval_batches()
            .flat_map(|b| b.unwrap().indices)
            .collect();
        (rows, loader.skipped())
    });
    assert_eq!(rows, [0, 1, 2, 4, 5]);
    assert_eq!(skipped, 1);
}

#[test]
fn a_batch_whose_every_sample_fails_is_an_error_even_with_skip_bad() {
    let loader = Loader::new(
        numbered(4, vec![0, 1]),
        LoaderConfig {
            skip_bad: true,
            ..config(2, 0)
        },
    )
    .unwrap();
    let items: Vec<_> = without_hanging(move || loader.eval_batches().collect());
    assert_eq!(items.len(), 1);
    let err = items[0].as_ref().unwrap_err();
    assert!(matches!(err, DataError::Loader(_)), "{err}");
    assert!(err.to_string().contains("every sample"), "{err}");
    assert!(err.to_string().contains("sample 1 is bad"), "{err}");
}

#[test]
fn a_panicking_dataset_is_a_loader_error_not_a_hang_or_a_silent_end() {
    struct Panics;
    impl Dataset for Panics {
        fn len(&self) -> usize {
            3
        }
        fn get(&self, index: usize) -> glassbox_data::Result<Sample> {
            panic!("sample {index} cannot be decoded by this test");
        }
    }
    let items: Vec<_> = without_hanging(|| {
        let loader = Loader::new(Arc::new(Panics), config(2, 0)).unwrap();
        loader.train_batches(0).take(5).collect()
    });
    assert_eq!(items.len(), 1);
    let err = items[0].as_ref().unwrap_err();
    assert!(matches!(err, DataError::Loader(_)), "{err}");
    assert!(err.to_string().contains("panicked"), "{err}");
}

#[test]
fn dropping_a_stream_midway_stops_its_producer() {
    let data = numbered(1000, vec![]);
    let loader_data: Arc<dyn Dataset> = data.clone();
    let calls_after_drop = without_hanging(move || {
        let loader = Loader::new(
            loader_data,
            LoaderConfig {
                prefetch: 1,
                ..config(8, 0)
            },
        )
        .unwrap();
        let mut stream = loader.train_batches(0);
        stream.next().unwrap().unwrap();
        drop(stream);
        data.calls.load(Ordering::Relaxed)
    });
    // One batch consumed, at most one queued and one being assembled when the stream was dropped.
    assert!(
        calls_after_drop <= 3 * 8,
        "{calls_after_drop} samples loaded"
    );
}

#[test]
fn the_cache_spares_reloading_up_to_its_byte_budget() {
    // A 16 x 16 sample without labels holds 4 * (3 + 1) * 256 + 256 bytes.
    let sample_bytes = 4 * 4 * 256 + 256;
    for (budget, expected_loads) in [(0, 20), (2 * sample_bytes, 18), (1 << 20, 10)] {
        let data = numbered(10, vec![]);
        let loader = Loader::new(
            data.clone(),
            LoaderConfig {
                cache_bytes: budget,
                ..config(1, 0)
            },
        )
        .unwrap();
        for _ in 0..2 {
            assert_eq!(loader.eval_batches().count(), 10);
        }
        assert_eq!(
            data.calls.load(Ordering::Relaxed),
            expected_loads,
            "budget {budget}"
        );
    }
}

#[test]
fn invalid_configurations_are_refused() {
    let data = || -> Arc<dyn Dataset> { numbered(3, vec![]) };
    assert!(Loader::new(data(), config(0, 0)).is_err());
    let err = Loader::new(data(), LoaderConfig::new(2, (20, 32)))
        .err()
        .unwrap();
    assert!(err.to_string().contains("multiples of 16"), "{err}");
    let other_size = Augment::new(&AugmentConfig::none(), (32, 32)).unwrap();
    let mismatched = LoaderConfig {
        augment: Some(other_size),
        ..config(2, 0)
    };
    assert!(Loader::new(data(), mismatched).is_err());
    assert!(Loader::new(numbered(0, vec![]), config(2, 0)).is_err());
}

#[test]
fn samples_of_different_sizes_cannot_be_stacked() {
    let sample = |w: usize| {
        Sample::from_depth("m", Array3::zeros((3, 2, w)), Array2::ones((2, w)), None).unwrap()
    };
    let err = Batch::stack(&[(0, sample(2)), (1, sample(3))]).unwrap_err();
    assert!(matches!(err, DataError::BatchShape { .. }), "{err}");
    let indices: HashSet<usize> = Batch::stack(&[(4, sample(2)), (7, sample(2))])
        .unwrap()
        .indices
        .into_iter()
        .collect();
    assert_eq!(indices, HashSet::from([4, 7]));
}
