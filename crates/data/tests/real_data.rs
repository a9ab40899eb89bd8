//! Readers on the real frames in shared/data/real: sizes, value ranges and valid fractions as the
//! README there states them.

mod common;

use glassbox_data::readers::{FileDataset, ReaderOptions};
use glassbox_data::{Dataset, Sample, SourceConfig, Subset, split_last};
use glassbox_metrics::Crop;

fn depth_stats(s: &Sample) -> (f32, f32, f64) {
    let valid: Vec<f32> = s
        .depth
        .iter()
        .zip(s.mask.iter())
        .filter(|(_, m)| **m)
        .map(|(d, _)| *d)
        .collect();
    let lo = valid.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = valid.iter().copied().fold(0.0, f32::max);
    (lo, hi, s.valid_fraction())
}

fn rgb_in_range(s: &Sample) -> bool {
    s.rgb.iter().all(|v| (-1.0..=1.0).contains(v))
        && s.rgb.iter().any(|&v| v > 0.0)
        && s.rgb.iter().any(|&v| v < 0.0)
}

#[test]
fn nyu_sync_samples_are_640x480_with_depth_within_10_m() {
    let ds = FileDataset::nyu_dir(
        &common::real_data().join("nyu-sync-samples"),
        ReaderOptions::default(),
    )
    .unwrap();
    assert_eq!(ds.len(), 3);
    for i in 0..ds.len() {
        let s = ds.get(i).unwrap();
        assert_eq!((s.height(), s.width()), (480, 640), "{}", s.name);
        assert!(s.labels.is_none());
        assert!(rgb_in_range(&s));
        let (lo, hi, valid) = depth_stats(&s);
        assert!(lo > 0.2 && hi <= 10.0, "{}: depth {lo}..{hi}", s.name);
        assert!(valid > 0.5, "{}: valid fraction {valid}", s.name);
    }
}

#[test]
fn nyu_eigen_crop_masks_the_border() {
    let dir = common::real_data().join("nyu-sync-samples");
    let full = FileDataset::nyu_dir(&dir, ReaderOptions::default())
        .unwrap()
        .get(0)
        .unwrap();
    let cropped = FileDataset::nyu_dir(
        &dir,
        ReaderOptions {
            crop: Crop::Eigen,
            ..Default::default()
        },
    )
    .unwrap()
    .get(0)
    .unwrap();
    assert!(!cropped.mask[[10, 320]] && !cropped.mask[[240, 20]]);
    assert!(cropped.valid_fraction() < full.valid_fraction());
    assert_eq!(cropped.mask.dim(), (480, 640));
}

#[test]
fn kitti_samples_are_1242x375_sparse_and_within_85_m() {
    let root = common::real_data().join("kitti-samples");
    let ds = FileDataset::kitti_dir(&root, ReaderOptions::default()).unwrap();
    assert_eq!(ds.len(), 3);
    for i in 0..ds.len() {
        let s = ds.get(i).unwrap();
        assert_eq!((s.height(), s.width()), (375, 1242));
        assert!(rgb_in_range(&s));
        let (lo, hi, valid) = depth_stats(&s);
        assert!(
            (1.0..10.0).contains(&lo) && hi > 50.0 && hi < 90.0,
            "{}: depth {lo}..{hi}",
            s.name
        );
        assert!(
            (0.1..0.3).contains(&valid),
            "{}: valid fraction {valid}",
            s.name
        );
    }
}

#[test]
fn kitti_kb_crop_is_352x1216_and_garg_crop_masks_the_top() {
    let root = common::real_data().join("kitti-samples");
    let open = |crop| {
        FileDataset::kitti_dir(
            &root,
            ReaderOptions {
                crop,
                ..ReaderOptions::default()
            },
        )
        .unwrap()
    };
    let full = open(Crop::None).get(1).unwrap();
    let kb = open(Crop::Kb).get(1).unwrap();
    assert_eq!((kb.height(), kb.width()), (352, 1216));
    // KB keeps the bottom rows and the centre columns: pixel (374, 13) of the full frame is (351, 0).
    assert_eq!(kb.depth[[351, 0]], full.depth[[374, 13]]);
    assert_eq!(kb.rgb[[0, 351, 0]], full.rgb[[0, 374, 13]]);
    let garg = open(Crop::Garg).get(1).unwrap();
    assert!(
        garg.mask
            .rows()
            .into_iter()
            .take(150)
            .all(|r| r.iter().all(|m| !m))
    );
    assert!(garg.valid_fraction() > 0.0);
}

#[test]
fn seven_scenes_source_finds_all_600_frames_and_the_last_100_are_a_contiguous_validation_block() {
    let source = SourceConfig::SevenScenes {
        root: common::real_data().join("7scenes-redkitchen"),
        frames: None,
    };
    let all = source.open((64, 64), ReaderOptions::default()).unwrap();
    assert_eq!(all.len(), 600);
    let (train, val) = split_last(all.len(), 100);
    let (train, val) = (
        Subset::new(&all, train).unwrap(),
        Subset::new(&all, val).unwrap(),
    );
    assert_eq!((train.len(), val.len()), (500, 100));
    assert_eq!(val.get(0).unwrap().name, "frame-000500.color");
    for s in [
        train.get(0).unwrap(),
        train.get(499).unwrap(),
        val.get(99).unwrap(),
    ] {
        assert_eq!((s.height(), s.width()), (480, 640));
        assert!(rgb_in_range(&s));
        let (lo, hi, valid) = depth_stats(&s);
        assert!((0.8..0.97).contains(&valid), "{}: valid {valid}", s.name);
        assert!(
            lo > 0.3 && lo < 1.2 && hi > 2.0 && hi < 4.5,
            "{}: depth {lo}..{hi}",
            s.name
        );
    }
}

#[test]
fn seven_scenes_frames_past_the_sequence_keep_the_frames_that_exist() {
    let dir = common::real_data().join("7scenes-redkitchen");
    let ds = FileDataset::seven_scenes(&dir, Some(598..602), ReaderOptions::default()).unwrap();
    assert_eq!(ds.len(), 2);
    assert!(ds.entries()[1].rgb.ends_with("frame-000599.color.jpg"));
    let none = SourceConfig::SevenScenes {
        root: dir,
        frames: Some([700, 800]),
    };
    let err = none.open((64, 64), ReaderOptions::default()).unwrap_err();
    assert!(err.to_string().contains("frames 700-799"), "{err}");
    assert!(err.to_string().contains("frame-N.depth.png"), "{err}");
}
