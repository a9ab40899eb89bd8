//! The invariances that make the depth losses usable on relative and metric predictions.

mod common;

use common::{field, mask, scalar};
use glassbox_losses::{DepthLoss, MidasLoss, SilogLoss};
use proptest::prelude::*;

const SHAPE: [i64; 3] = [2, 6, 5];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn ssi_loss_is_invariant_to_positive_scale_and_shift_of_the_prediction(
        seed in 0u64..1_000,
        scale in 0.01f64..100.0,
        shift in -10.0f64..10.0,
    ) {
        let pred = field(seed, &SHAPE, 0.1, 2.0);
        let target = field(seed + 1, &SHAPE, 0.1, 2.0);
        let valid = mask(seed + 2, &SHAPE, 0.8);
        let loss = MidasLoss::default();
        let plain = loss.terms(&pred, &target, &valid).unwrap();
        let moved = loss.terms(&(&pred * scale + shift), &target, &valid).unwrap();
        prop_assert!((scalar(&plain.ssi) - scalar(&moved.ssi)).abs() < 1e-5);
        prop_assert!((scalar(&plain.total) - scalar(&moved.total)).abs() < 1e-5);
    }

    #[test]
    fn gradient_matching_is_zero_for_a_prediction_equal_to_the_target_up_to_scale_and_shift(
        seed in 0u64..1_000,
        scale in 0.01f64..100.0,
        shift in -10.0f64..10.0,
    ) {
        let target = field(seed, &SHAPE, 0.1, 2.0);
        let valid = mask(seed + 2, &SHAPE, 0.7);
        let terms = MidasLoss::default()
            .terms(&(&target * scale + shift), &target, &valid)
            .unwrap();
        prop_assert!(scalar(&terms.gradient).abs() < 1e-9);
        prop_assert!(scalar(&terms.ssi).abs() < 1e-9);
    }

    #[test]
    fn silog_is_invariant_to_a_global_scale_when_lambda_is_one(
        seed in 0u64..1_000,
        scale in 0.01f64..100.0,
    ) {
        let pred = field(seed, &SHAPE, 0.5, 10.0);
        let target = field(seed + 1, &SHAPE, 0.5, 10.0);
        let valid = mask(seed + 2, &SHAPE, 0.8);
        let loss = SilogLoss { lambda: 1.0, ..SilogLoss::default() };
        let plain = scalar(&loss.compute(&pred, &target, &valid).unwrap());
        let scaled = scalar(&loss.compute(&(&pred * scale), &target, &valid).unwrap());
        prop_assert!((plain - scaled).abs() < 1e-6, "{plain} vs {scaled}");
    }
}

#[test]
fn silog_with_default_lambda_is_not_scale_invariant() {
    // The property above is specific to lambda = 1: with 0.85 a global scale costs something.
    let pred = field(3, &SHAPE, 0.5, 10.0);
    let target = field(4, &SHAPE, 0.5, 10.0);
    let valid = mask(5, &SHAPE, 0.8);
    let loss = SilogLoss::default();
    let plain = scalar(&loss.compute(&pred, &target, &valid).unwrap());
    let scaled = scalar(&loss.compute(&(&pred * 3.0), &target, &valid).unwrap());
    assert!((plain - scaled).abs() > 1e-3, "{plain} vs {scaled}");
}
