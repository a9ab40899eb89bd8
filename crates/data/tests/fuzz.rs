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

/// Rewrites a PNG's IHDR (width, height, bit depth, colour type) and its CRC.
fn patch_ihdr(png: &mut [u8], width: u32, height: u32, depth_color: Option<(u8, u8)>) {
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    if let Some((depth, color)) = depth_color {
        png[24] = depth;
        png[25] = color;
    }
    // The CRC made right, so the mutation reaches the code behind the decoder's checksum.
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
}

/// Small valid files of every image format we read, written by our own writers.
fn seeds(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let rgb = ndarray::Array3::<f32>::from_shape_fn((3, 12, 16), |(c, y, x)| {
        ((c * 7 + y * 3 + x) % 11) as f32 / 10.0
    });
    let depth =
        ndarray::Array2::<f32>::from_shape_fn((12, 16), |(y, x)| 0.5 + (y + x) as f32 * 0.1);
    let labels = ndarray::Array2::<u8>::from_shape_fn((12, 16), |(y, x)| ((y * 16 + x) % 14) as u8);
    let write = |name: &str| dir.join(name);
    glassbox_data::io::write_rgb(&write("seed.png"), rgb.view()).unwrap();
    glassbox_data::io::write_rgb(&write("seed.jpg"), rgb.view()).unwrap();
    let mask = depth.mapv(|d| d > 0.6);
    glassbox_data::io::write_depth_png(&write("seed_depth.png"), depth.view(), mask.view(), 1e-3)
        .unwrap();
    glassbox_data::io::write_labels_png(&write("seed_labels.png"), labels.view()).unwrap();
    ["seed.png", "seed.jpg", "seed_depth.png", "seed_labels.png"]
        .into_iter()
        .zip(["rgb png", "rgb jpeg", "depth png", "label png"])
        .map(|(file, kind)| (kind, std::fs::read(write(file)).unwrap()))
        .collect()
}

/// A xorshift64 stream from `seed`: the same cases on every machine.
fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Cases per format of the mutational image fuzz (`GLASSBOX_FUZZ_CASES`; `cargo xtask soak` runs
/// more).
fn fuzz_cases() -> usize {
    std::env::var("GLASSBOX_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn mutated_images_of_every_format_give_a_typed_error_or_an_image_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cases = fuzz_cases();
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
    let mut refused_by_size = 0;
    let mut tally = Vec::new();
    for (kind, seed) in seeds(dir.path()) {
        let is_png = seed.starts_with(b"\x89PNG");
        let path = dir
            .path()
            .join(if is_png { "case.png" } else { "case.jpg" });
        let (mut ok, mut errors) = (0, 0);
        for case in 0..cases {
            let mut bytes = seed.clone();
            match case % 5 {
                // Byte flips, 1 to 8 of them anywhere.
                0 | 1 => {
                    for _ in 0..1 + next() % 8 {
                        let at = (next() % bytes.len() as u64) as usize;
                        bytes[at] ^= 1 << (next() % 8);
                    }
                }
                // Truncation: every length class, from empty to one byte short.
                2 => bytes.truncate((case / 5) % bytes.len()),
                // Header dimensions: huge, zero or odd, with the CRC made right (PNG); the
                // JPEG's frame header is patched where it sits.
                3 => {
                    let dims = [0, 1, 7, 100_000, 65_535, u32::MAX >> 1];
                    let w = dims[(next() % dims.len() as u64) as usize];
                    let h = dims[(next() % dims.len() as u64) as usize];
                    if is_png {
                        patch_ihdr(&mut bytes, w, h, None);
                    } else if let Some(sof) = bytes.windows(2).position(|p| p == [0xff, 0xc0]) {
                        bytes[sof + 5..sof + 7]
                            .copy_from_slice(&(h.min(65_535) as u16).to_be_bytes());
                        bytes[sof + 7..sof + 9]
                            .copy_from_slice(&(w.min(65_535) as u16).to_be_bytes());
                    }
                }
                // Wrong channel counts and bit depths (PNG colour type and depth; JPEG
                // component count).
                _ => {
                    if is_png {
                        let depths = [1, 2, 4, 8, 16, 3];
                        let colors = [0, 2, 3, 4, 6, 5];
                        let d = depths[(next() % 6) as usize];
                        let c = colors[(next() % 6) as usize];
                        let (w, h) = (16, 12);
                        patch_ihdr(&mut bytes, w, h, Some((d, c)));
                    } else if let Some(sof) = bytes.windows(2).position(|p| p == [0xff, 0xc0]) {
                        bytes[sof + 9] = [0, 1, 2, 4, 5][(next() % 5) as usize];
                    }
                }
            }
            std::fs::write(&path, &bytes).unwrap();
            for result in [
                read_rgb(&path).map(|_| ()),
                read_depth_png(&path, 1e-3).map(|_| ()),
                read_labels_png(&path).map(|_| ()),
            ] {
                match result {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        errors += 1;
                        refused_by_size += usize::from(matches!(e, DataError::ImageSize { .. }));
                        assert!(
                            e.to_string().contains(&path.display().to_string()),
                            "error does not name the file: {e}"
                        );
                    }
                }
            }
        }
        tally.push(format!(
            "{kind}: {cases} cases, {ok} reads, {errors} errors"
        ));
    }
    eprintln!(
        "{}; {refused_by_size} refused by size before decoding",
        tally.join("; ")
    );
    assert!(
        refused_by_size > 0,
        "no header-size case reached the size check"
    );
}

#[test]
fn a_header_claiming_100000_by_100000_pixels_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seeds(dir.path()).remove(0).1;
    for (w, h) in [(100_000, 100_000), (0, 12), (16, 0)] {
        let mut bytes = seed.clone();
        patch_ihdr(&mut bytes, w, h, None);
        let path = dir.path().join("huge.png");
        std::fs::write(&path, &bytes).unwrap();
        let err = read_rgb(&path).unwrap_err();
        assert!(
            matches!(err, DataError::ImageSize { .. } | DataError::Decode { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("huge.png"), "{err}");
        if w == 100_000 {
            assert!(
                matches!(
                    err,
                    DataError::ImageSize {
                        width: 100_000,
                        height: 100_000,
                        ..
                    }
                ),
                "{err}"
            );
        }
    }
}

#[test]
fn mutated_split_lists_give_entries_or_an_error_naming_the_file() {
    let seed = "# NYU-v2 sync and KITTI Eigen style\n\
        /kitchen_0028a/rgb_00045.jpg /kitchen_0028a/sync_depth_00045.png 518.8579\n\
        /bedroom_0004/rgb_00011.jpg /bedroom_0004/sync_depth_00011.png 518.8579 /bedroom_0004/labels_00011.png\n\
        2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png None 721.5377\n\
        rgb/a.png depth/a.png labels/a.png\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("split.txt");
    let hostile = [
        "0",
        "-1",
        "nan",
        "inf",
        "1e39",
        "None",
        "#",
        "\t",
        "\u{0}",
        "x y z w v",
    ];
    let mut next = xorshift(0x853c_49e6_748f_ea9bu64);
    let cases = fuzz_cases();
    let (mut parsed, mut refused) = (0, 0);
    for case in 0..cases {
        let mut bytes = seed.as_bytes().to_vec();
        match case % 4 {
            0 => {
                for _ in 0..1 + next() % 6 {
                    let at = (next() % bytes.len() as u64) as usize;
                    bytes[at] ^= 1 << (next() % 8);
                }
            }
            1 => bytes.truncate(case / 4 % bytes.len()),
            // A field replaced by a hostile token.
            _ => {
                let text = String::from_utf8(bytes).unwrap();
                let mut fields: Vec<String> = text.split(' ').map(str::to_string).collect();
                let i = (next() % fields.len() as u64) as usize;
                fields[i] = hostile[(next() % hostile.len() as u64) as usize].to_string();
                bytes = fields.join(" ").into_bytes();
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        match glassbox_data::readers::read_split(&path) {
            Ok(_) => parsed += 1,
            Err(e) => {
                assert!(e.to_string().contains("split.txt"), "{e}");
                refused += 1;
            }
        }
    }
    eprintln!("split lists: {cases} cases, {parsed} parsed, {refused} refused");
    assert!(refused > cases / 10);
}
