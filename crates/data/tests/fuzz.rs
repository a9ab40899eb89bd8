//! Every reader fed truncated files and random bytes returns a typed error naming the file, never
//! panics.

mod common;

use std::path::Path;

use glassbox_data::io::{read_depth_png, read_labels_png, read_rgb};
use glassbox_data::readers::{FileDataset, ReaderOptions, parse_split};
use glassbox_data::{DataError, Dataset};
use proptest::prelude::*;

fn all_readers_fail_cleanly(path: &Path) {
    for result in [
        read_rgb(path).map(|_| ()),
        read_depth_png(path, 1e-3).map(|_| ()),
        read_labels_png(path).map(|_| ()),
    ] {
        if let Err(e) = result {
            assert!(
                e.to_string().contains(&path.display().to_string()),
                "error does not name the file: {e}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_bytes_give_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), png_header in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("noise.png");
        let mut data = if png_header { b"\x89PNG\r\n\x1a\n".to_vec() } else { Vec::new() };
        data.extend(bytes);
        std::fs::write(&path, &data).unwrap();
        all_readers_fail_cleanly(&path);
    }

    #[test]
    fn random_split_lists_parse_or_fail_with_a_line_number(text in "[a-z0-9 ./\n]{0,200}") {
        if let Err(e) = parse_split(Path::new("l.txt"), &text) {
            let is_split = matches!(e, DataError::Split { .. });
            prop_assert!(is_split, "unexpected error kind");
        }
    }
}

#[test]
fn truncated_real_files_give_errors_naming_them() {
    let real = common::real_data();
    let sources = [
        real.join("nyu-sync-samples/rgb_00000.jpg"),
        real.join("nyu-sync-samples/sync_depth_00000.png"),
        real.join("kitti-samples/rgb/0000000005.png"),
        real.join("kitti-samples/depth/0000000005.png"),
        real.join("7scenes-redkitchen/frame-000000.depth.png"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for source in &sources {
        let bytes = std::fs::read(source).unwrap();
        for keep in [0, 7, 33, 200, bytes.len() / 3, bytes.len() - 10] {
            let path = dir.path().join(format!(
                "cut{keep}.{}",
                source.extension().unwrap().to_str().unwrap()
            ));
            std::fs::write(&path, &bytes[..keep]).unwrap();
            all_readers_fail_cleanly(&path);
        }
    }
    // A PNG cut in its pixel data is an error for the depth reader, not a partial image.
    let bytes = std::fs::read(&sources[1]).unwrap();
    let path = dir.path().join("sync_depth_cut.png");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_depth_png(&path, 1e-3).unwrap_err();
    assert!(err.to_string().contains("sync_depth_cut.png"), "{err}");
}

#[test]
fn dataset_get_reports_corrupt_depth_mismatched_sizes_and_8_bit_depth_by_file() {
    let real = common::real_data();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Sample 00000: depth truncated. Sample 00001: depth of another size. Sample 00002: 8-bit depth.
    std::fs::copy(
        real.join("nyu-sync-samples/rgb_00000.jpg"),
        d.join("rgb_00000.jpg"),
    )
    .unwrap();
    let depth = std::fs::read(real.join("nyu-sync-samples/sync_depth_00000.png")).unwrap();
    std::fs::write(d.join("sync_depth_00000.png"), &depth[..depth.len() / 2]).unwrap();
    std::fs::copy(
        real.join("nyu-sync-samples/rgb_00000.jpg"),
        d.join("rgb_00001.jpg"),
    )
    .unwrap();
    std::fs::copy(
        real.join("kitti-samples/depth/0000000005.png"),
        d.join("sync_depth_00001.png"),
    )
    .unwrap();
    std::fs::copy(
        real.join("nyu-sync-samples/rgb_00000.jpg"),
        d.join("rgb_00002.jpg"),
    )
    .unwrap();
    glassbox_data::io::write_labels_png(
        &d.join("sync_depth_00002.png"),
        ndarray::Array2::<u8>::ones((480, 640)).view(),
    )
    .unwrap();
    let ds = FileDataset::nyu_dir(d, ReaderOptions::default()).unwrap();
    assert_eq!(ds.len(), 3);
    let e0 = ds.get(0).unwrap_err();
    assert!(e0.to_string().contains("sync_depth_00000.png"), "{e0}");
    let e1 = ds.get(1).unwrap_err();
    assert!(
        matches!(
            e1,
            DataError::SizeMismatch {
                found_w: 1242,
                found_h: 375,
                ..
            }
        ),
        "{e1}"
    );
    assert!(e1.to_string().contains("sync_depth_00001.png"));
    let e2 = ds.get(2).unwrap_err();
    assert!(matches!(e2, DataError::WrongFormat { .. }), "{e2}");
    assert!(e2.to_string().contains("sync_depth_00002.png"));
}
