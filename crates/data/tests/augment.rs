//! Augmentation keeps RGB, depth, mask and labels aligned: a planted marker stays in the same place
//! in every map, whatever crop, flip and jitter are drawn.

use glassbox_data::augment::{Augment, AugmentConfig, fit_size, resize_bilinear, resize_sample};
use glassbox_data::{Sample, sample::normalize_u8};
use ndarray::{Array2, Array3};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const MARKER: u8 = 7;

/// A 96 x 128 sample with a 24 x 20 marker: bright red RGB, depth 5 m (2 m elsewhere), labelled
/// MARKER, and the only valid depth in its rows.
fn planted(top: usize, left: usize) -> Sample {
    let inside =
        move |y: usize, x: usize| (top..top + 24).contains(&y) && (left..left + 20).contains(&x);
    let rgb = Array3::from_shape_fn((3, 96, 128), |(c, y, x)| {
        normalize_u8(if inside(y, x) && c == 0 { 255 } else { 40 }, c)
    });
    let depth = Array2::from_shape_fn((96, 128), |(y, x)| if inside(y, x) { 5.0 } else { 2.0 });
    let labels = Array2::from_shape_fn((96, 128), |(y, x)| if inside(y, x) { MARKER } else { 1 });
    let mut sample = Sample::from_depth("planted", rgb, depth, Some(labels)).unwrap();
    sample.mask = Array2::from_shape_fn((96, 128), |(y, x)| inside(y, x) || y % 2 == 0);
    sample
}

fn centroid(points: impl Iterator<Item = (usize, usize)>) -> Option<(f32, f32)> {
    let (mut n, mut sy, mut sx) = (0.0, 0.0, 0.0);
    for (y, x) in points {
        n += 1.0;
        sy += y as f32;
        sx += x as f32;
    }
    (n > 0.0).then(|| (sy / n, sx / n))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn augmentation_keeps_rgb_depth_mask_and_labels_aligned(seed in 0u64..10_000, top in 0usize..70, left in 0usize..100) {
        let config = AugmentConfig { jitter: None, ..AugmentConfig::standard() };
        let augment = Augment::new(&config, (64, 64)).unwrap();
        let out = augment.apply(&planted(top, left), &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(out.rgb.dim(), (3, 64, 64));
        let labels = out.labels.as_ref().unwrap();
        // Depth and mask are resampled by the same nearest-neighbour map as the labels: exact.
        for ((y, x), &l) in labels.indexed_iter() {
            prop_assert_eq!(l == MARKER, out.depth[[y, x]] == 5.0);
            if l == MARKER {
                prop_assert!(out.mask[[y, x]]);
            }
        }
        // RGB is bilinear: its bright-red region has the same centroid within a pixel.
        let from_labels = centroid(labels.indexed_iter().filter(|(_, l)| **l == MARKER).map(|(p, _)| p));
        let from_rgb = centroid(out.rgb.index_axis(ndarray::Axis(0), 0).indexed_iter().filter(|(_, v)| **v > 0.3).map(|(p, _)| p));
        match (from_labels, from_rgb) {
            (Some(a), Some(b)) => prop_assert!((a.0 - b.0).abs() <= 1.0 && (a.1 - b.1).abs() <= 1.0, "{:?} vs {:?}", a, b),
            (None, None) => {}
            (a, b) => prop_assert!(a.is_none() && b.is_none(), "marker in one map only: {:?} vs {:?}", a, b),
        }
    }

    #[test]
    fn colour_jitter_changes_rgb_only(seed in 0u64..10_000) {
        let sample = planted(10, 10);
        let config = AugmentConfig { crop_scale: Some([1.0, 1.0]), hflip: false, ..AugmentConfig::standard() };
        let augment = Augment::new(&config, (96, 128)).unwrap();
        let out = augment.apply(&sample, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(&out.depth, &sample.depth);
        prop_assert_eq!(&out.mask, &sample.mask);
        prop_assert_eq!(&out.labels, &sample.labels);
        prop_assert!(out.rgb.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}

#[test]
fn horizontal_flip_moves_the_marker_in_every_map() {
    let sample = planted(0, 0);
    let flipped = glassbox_data::augment::hflip(&sample);
    assert_eq!(flipped.labels.as_ref().unwrap()[[0, 127]], MARKER);
    assert_eq!(flipped.depth[[0, 127]], 5.0);
    assert!(flipped.rgb[[0, 0, 127]] > 0.9);
    assert!(flipped.mask[[1, 127]] && !flipped.mask[[1, 100]]);
}

#[test]
fn evaluation_resize_and_map_back_recover_the_marker_position() {
    let sample = planted(30, 50);
    let size = fit_size(sample.height(), sample.width(), 48, 16);
    assert_eq!(size, (48, 64));
    let input = resize_sample(&sample, size);
    assert_eq!(input.rgb.dim(), (3, 48, 64));
    // A "prediction" on the input grid (here its own depth) mapped back to the frame's size.
    let back = resize_bilinear(input.depth.view().insert_axis(ndarray::Axis(0)), (96, 128));
    assert!((back[[0, 40, 60]] - 5.0).abs() < 1e-5);
    assert!((back[[0, 5, 5]] - 2.0).abs() < 1e-5);
    assert_eq!(input.labels.as_ref().unwrap()[[20, 30]], MARKER);
}

#[test]
fn augment_config_reads_from_toml_and_rejects_unknown_keys() {
    let text = r#"
        crop_scale = [0.5, 1.0]
        hflip = true
        jitter = { brightness = 0.1, contrast = 0.0, saturation = 0.3 }
    "#;
    let config: AugmentConfig = toml::from_str(text).unwrap();
    assert_eq!(config.crop_scale, Some([0.5, 1.0]));
    assert_eq!(config.jitter.unwrap().saturation, 0.3);
    assert_eq!(
        toml::from_str::<AugmentConfig>("").unwrap(),
        AugmentConfig::none()
    );
    let err = toml::from_str::<AugmentConfig>("hflp = true").unwrap_err();
    assert!(err.to_string().contains("hflp"), "{err}");
    let err = toml::from_str::<AugmentConfig>(
        "jitter = { brightnes = 0.1, contrast = 0.0, saturation = 0.0 }",
    )
    .unwrap_err();
    assert!(err.to_string().contains("brightnes"), "{err}");
}
