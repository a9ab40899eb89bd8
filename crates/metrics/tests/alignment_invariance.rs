//! Invariances of the aligned depth metrics: median scaling removes a global scale, least-squares
//! alignment removes an exact affine relation in depth or in disparity.

use approx::assert_relative_eq;
use glassbox_metrics::{Alignment, Crop, DepthEvalConfig, DepthMetrics, depth_metrics};
use ndarray::Array2;
use proptest::prelude::*;

const SIDE: usize = 6;

fn config(alignment: Alignment) -> DepthEvalConfig {
    DepthEvalConfig {
        min_depth: 1e-3,
        max_depth: 10.0,
        crop: Crop::None,
        alignment,
    }
}

fn image(values: &[f32]) -> Array2<f32> {
    Array2::from_shape_vec((SIDE, SIDE), values.to_vec()).unwrap()
}

fn depths() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(0.5f32..9.0, SIDE * SIDE)
}

fn assert_close(a: &DepthMetrics, b: &DepthMetrics) {
    for (x, y) in a.to_array().iter().zip(b.to_array()) {
        assert_relative_eq!(*x, y, epsilon = 1e-4, max_relative = 1e-4);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn median_scaling_makes_metrics_invariant_to_a_global_scale(
        gt in depths(),
        noise in prop::collection::vec(0.7f32..1.4, SIDE * SIDE),
        scale in 0.01f32..100.0,
    ) {
        let gt = image(&gt);
        let pred = &gt * &image(&noise);
        let scaled = pred.mapv(|p| p * scale);
        let cfg = config(Alignment::Median);
        let reference = depth_metrics(pred.view(), gt.view(), None, &cfg).unwrap();
        let rescaled = depth_metrics(scaled.view(), gt.view(), None, &cfg).unwrap();
        assert_close(&rescaled, &reference);
    }

    #[test]
    fn depth_scale_shift_alignment_recovers_an_exact_affine_relation(
        gt in depths(),
        a in prop_oneof![0.1f32..10.0, -10.0f32..-0.1],
        b in -5.0f32..5.0,
    ) {
        let gt = image(&gt);
        let pred = gt.mapv(|d| a * d + b);
        let m = depth_metrics(pred.view(), gt.view(), None, &config(Alignment::ScaleShiftDepth))
            .unwrap();
        prop_assert!(m.abs_rel < 1e-5 && m.rmse < 1e-4 && m.silog < 1e-3, "{m}");
        prop_assert_eq!(m.delta1, 1.0);
    }

    #[test]
    fn disparity_scale_shift_alignment_recovers_an_exact_affine_relation(
        gt in depths(),
        a in 0.1f32..10.0,
        b in -0.05f32..5.0,
    ) {
        // A relative-disparity model: pred = a / gt + b; the fit is linear in pred, so it recovers
        // 1 / gt even where b makes the raw value negative.
        let gt = image(&gt);
        let pred = gt.mapv(|d| a / d + b);
        let m = depth_metrics(
            pred.view(),
            gt.view(),
            None,
            &config(Alignment::ScaleShiftDisparity),
        )
        .unwrap();
        prop_assert!(m.abs_rel < 1e-4 && m.rmse < 1e-3 && m.silog < 1e-2, "{m}");
        prop_assert_eq!(m.delta1, 1.0);
    }
}

#[test]
fn unaligned_scaled_prediction_is_penalised_but_aligned_is_not() {
    let gt = Array2::from_shape_fn((SIDE, SIDE), |(r, c)| 1.0 + (r * SIDE + c) as f32 * 0.2);
    let pred = gt.mapv(|d| 0.3 * d + 0.2);
    let raw = depth_metrics(pred.view(), gt.view(), None, &config(Alignment::None)).unwrap();
    let aligned = depth_metrics(
        pred.view(),
        gt.view(),
        None,
        &config(Alignment::ScaleShiftDepth),
    )
    .unwrap();
    assert!(raw.abs_rel > 0.5, "{raw}");
    assert!(aligned.abs_rel < 1e-5, "{aligned}");
}

#[test]
fn constant_prediction_cannot_be_aligned() {
    let gt = Array2::from_shape_fn((SIDE, SIDE), |(r, c)| 1.0 + (r + c) as f32);
    let pred = Array2::from_elem((SIDE, SIDE), 0.5f32);
    let err = depth_metrics(
        pred.view(),
        gt.view(),
        None,
        &config(Alignment::ScaleShiftDisparity),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        glassbox_metrics::MetricsError::DegenerateAlignment {
            alignment: Alignment::ScaleShiftDisparity,
            ..
        }
    ));
}
