//! Accumulators are order-free sums: feeding a dataset in two halves (or in parallel batches) and
//! merging gives exactly what one accumulator fed everything gives.

use glassbox_metrics::{
    Crop, DepthAccumulator, DepthEvalConfig, SegmentationAccumulator, depth_metrics,
    evaluate_depth_batch,
};
use ndarray::Array2;
use proptest::prelude::*;

const NUM_CLASSES: usize = 4;
const IGNORE: u8 = 255;

/// Label maps of 3x5 pixels; gt also holds the ignore index.
fn label_pairs() -> impl Strategy<Value = Vec<(Array2<u8>, Array2<u8>)>> {
    let pred = prop::collection::vec(0u8..NUM_CLASSES as u8, 15);
    let gt = prop::collection::vec(prop_oneof![0u8..NUM_CLASSES as u8, Just(IGNORE)], 15);
    prop::collection::vec((pred, gt), 2..8).prop_map(|images| {
        images
            .into_iter()
            .map(|(p, g)| {
                (
                    Array2::from_shape_vec((3, 5), p).unwrap(),
                    Array2::from_shape_vec((3, 5), g).unwrap(),
                )
            })
            .collect()
    })
}

fn fed(images: &[(Array2<u8>, Array2<u8>)]) -> SegmentationAccumulator {
    let mut acc = SegmentationAccumulator::new(NUM_CLASSES, Some(i64::from(IGNORE)));
    for (pred, gt) in images {
        acc.update(pred.view(), gt.view()).unwrap();
    }
    acc
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn segmentation_accumulator_fed_in_two_halves_equals_one_fed_all_at_once(
        images in label_pairs(),
        split in 0usize..8,
    ) {
        let split = split.min(images.len());
        let whole = fed(&images);
        let mut first = fed(&images[..split]);
        first.merge(&fed(&images[split..])).unwrap();
        prop_assert_eq!(&first, &whole);
        prop_assert_eq!(first.iou(), whole.iou());

        let views: Vec<_> = images.iter().map(|(p, g)| (p.view(), g.view())).collect();
        let mut batched = SegmentationAccumulator::new(NUM_CLASSES, Some(i64::from(IGNORE)));
        batched.update_batch(&views).unwrap();
        prop_assert_eq!(&batched, &whole);

        let counted = images
            .iter()
            .flat_map(|(_, g)| g.iter())
            .filter(|&&g| g != IGNORE)
            .count() as u64;
        prop_assert_eq!(whole.total(), counted);
    }

    #[test]
    fn depth_accumulator_fed_in_two_halves_equals_one_fed_all_at_once(
        images in prop::collection::vec(
            (prop::collection::vec(0.5f32..9.0, 16), prop::collection::vec(0.5f32..9.0, 16)),
            2..8,
        ),
        split in 0usize..8,
    ) {
        let cfg = DepthEvalConfig::nyu().with_crop(Crop::None);
        let arrays: Vec<(Array2<f32>, Array2<f32>)> = images
            .into_iter()
            .map(|(p, g)| {
                (
                    Array2::from_shape_vec((4, 4), p).unwrap(),
                    Array2::from_shape_vec((4, 4), g).unwrap(),
                )
            })
            .collect();
        let samples: Vec<_> = arrays.iter().map(|(p, g)| (p.view(), g.view(), None)).collect();
        let per_image = evaluate_depth_batch(&samples, &cfg).unwrap();
        let split = split.min(per_image.len());

        let mut streamed = DepthAccumulator::new();
        for (pred, gt) in &arrays {
            streamed.push(&depth_metrics(pred.view(), gt.view(), None, &cfg).unwrap());
        }
        let mut halves: DepthAccumulator = per_image[..split].iter().collect();
        halves.merge(&per_image[split..].iter().collect());
        prop_assert_eq!(halves.count(), streamed.count());
        let (a, b) = (halves.mean().unwrap(), streamed.mean().unwrap());
        for (x, y) in a.to_array().iter().zip(b.to_array()) {
            prop_assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{a} vs {b}");
        }
    }
}

#[test]
fn failing_batch_image_leaves_the_segmentation_accumulator_unchanged() {
    let good = Array2::<u8>::zeros((2, 2));
    let bad = Array2::from_elem((2, 2), 9u8);
    let mut acc = SegmentationAccumulator::new(NUM_CLASSES, None);
    acc.update(good.view(), good.view()).unwrap();
    let before = acc.clone();
    let images = [(good.view(), good.view()), (bad.view(), good.view())];
    assert!(acc.update_batch(&images).is_err());
    assert_eq!(acc, before);
}
