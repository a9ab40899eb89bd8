//! Rendered samples written in the NYU and KITTI layouts read back identically, to the precision
//! of each format (1 mm, 1/256 m, JPEG RGB within a tolerance, PNG RGB exactly).

use glassbox_data::layout::{Layout, WriteOptions, write_synthetic};
use glassbox_data::readers::{FileDataset, ReaderOptions, read_split};
use glassbox_data::{Dataset, SyntheticConfig, SyntheticDataset};

fn compare(
    original: &SyntheticDataset,
    read: &FileDataset,
    depth_tol: f32,
    rgb_mean_tol: f32,
    rgb_max_tol: f32,
) {
    assert_eq!(read.len(), original.len());
    for i in 0..original.len() {
        let a = original.get(i).unwrap();
        let b = read.get(i).unwrap();
        assert_eq!(a.mask, b.mask, "sample {i}: mask");
        assert_eq!(a.labels, b.labels, "sample {i}: labels");
        let worst = a
            .depth
            .iter()
            .zip(b.depth.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst <= depth_tol, "sample {i}: depth error {worst}");
        let diffs: Vec<f32> = a
            .rgb
            .iter()
            .zip(b.rgb.iter())
            .map(|(x, y)| (x - y).abs() * 127.5)
            .collect();
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        let max = diffs.iter().copied().fold(0.0, f32::max);
        assert!(
            mean <= rgb_mean_tol && max <= rgb_max_tol,
            "sample {i}: RGB error mean {mean} max {max} levels"
        );
    }
}

#[test]
fn nyu_layout_round_trips_depth_to_a_millimetre_and_jpeg_rgb_to_a_few_levels() {
    let dir = tempfile::tempdir().unwrap();
    let ds = SyntheticDataset::new(SyntheticConfig::indoor(64, 48, 4, 11)).unwrap();
    let opts = WriteOptions {
        layout: Layout::Nyu,
        test_fraction: 0.25,
        sheet_rows: 2,
    };
    let summary = write_synthetic(&ds, dir.path(), opts, &|| {}).unwrap();
    assert_eq!((summary.train, summary.test), (3, 1));
    assert!(dir.path().join("contact_sheet.png").is_file());
    let read = FileDataset::nyu_dir(dir.path(), ReaderOptions::default()).unwrap();
    compare(&ds, &read, 0.5e-3 + 1e-6, 3.0, 40.0);

    let train = FileDataset::nyu_split(
        &dir.path().join("train.txt"),
        dir.path(),
        ReaderOptions::default(),
    )
    .unwrap();
    let test = FileDataset::nyu_split(
        &dir.path().join("test.txt"),
        dir.path(),
        ReaderOptions::default(),
    )
    .unwrap();
    assert_eq!((train.len(), test.len()), (3, 1));
    assert!(test.entries()[0].rgb.ends_with("rgb_00003.jpg"));
    let focal = read_split(&dir.path().join("test.txt")).unwrap()[0]
        .focal
        .unwrap();
    assert!((focal - ds.scene(3).1.fx).abs() < 1e-3);
}

#[test]
fn kitti_layout_round_trips_depth_to_1_over_256_m_and_png_rgb_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ds = SyntheticDataset::new(SyntheticConfig::outdoor(96, 32, 3, 5)).unwrap();
    let opts = WriteOptions {
        layout: Layout::Kitti,
        test_fraction: 0.0,
        sheet_rows: 1,
    };
    write_synthetic(&ds, dir.path(), opts, &|| {}).unwrap();
    let read = FileDataset::kitti_split(
        &dir.path().join("train.txt"),
        dir.path(),
        dir.path(),
        ReaderOptions::default(),
    )
    .unwrap();
    assert!(read.entries()[0].labels.is_some());
    compare(&ds, &read, 0.5 / 256.0 + 1e-5, 0.0, 1e-3);
    let by_dirs = FileDataset::kitti_dir(dir.path(), ReaderOptions::default()).unwrap();
    compare(&ds, &by_dirs, 0.5 / 256.0 + 1e-5, 0.0, 1e-3);
}
