//! Autograd against central finite differences on a tiny `1 x 4 x 4` f64 input with a few masked
//! pixels: the analytic gradient the optimiser sees is the derivative of the value we report.

mod common;

use common::{field, mask, scalar, values};
use glassbox_losses::{DepthLoss, MidasLoss, SegmentationLoss, SilogLoss};
use tch::Tensor;

const SHAPE: [i64; 3] = [1, 4, 4];
const STEP: f64 = 1e-6;

/// Compares d loss / d x from autograd with `(loss(x + h e_i) - loss(x - h e_i)) / 2h` for every i.
fn assert_gradient_matches_finite_differences(
    name: &str,
    x: &Tensor,
    loss: impl Fn(&Tensor) -> Tensor,
) {
    let leaf = x.detach().set_requires_grad(true);
    loss(&leaf).backward();
    let analytic = values(&leaf.grad());
    let base = values(x);
    for (i, &a) in analytic.iter().enumerate() {
        let probe = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            scalar(&loss(&Tensor::from_slice(&v).reshape(x.size())))
        };
        let numeric = (probe(STEP) - probe(-STEP)) / (2.0 * STEP);
        assert!(
            (a - numeric).abs() <= 1e-6 + 1e-5 * numeric.abs(),
            "{name}: element {i}: autograd {a} vs finite difference {numeric}"
        );
    }
    assert!(
        analytic.iter().any(|g| g.abs() > 1e-6),
        "{name}: gradient vanished everywhere"
    );
}

fn inputs() -> (Tensor, Tensor, Tensor) {
    let pred = field(11, &SHAPE, 0.2, 3.0);
    let target = field(12, &SHAPE, 0.2, 3.0);
    let valid = mask(13, &SHAPE, 0.8);
    assert!(
        values(&valid.to_kind(tch::Kind::Double)).contains(&0.0),
        "fixture must mask a pixel"
    );
    (pred, target, valid)
}

#[test]
fn ssi_trim_gradient_matches_finite_differences() {
    let (pred, target, valid) = inputs();
    assert_gradient_matches_finite_differences("ssi", &pred, |p| {
        MidasLoss::default().terms(p, &target, &valid).unwrap().ssi
    });
}

#[test]
fn gradient_matching_gradient_matches_finite_differences() {
    let (pred, target, valid) = inputs();
    assert_gradient_matches_finite_differences("gradient matching", &pred, |p| {
        MidasLoss::default()
            .terms(p, &target, &valid)
            .unwrap()
            .gradient
    });
}

#[test]
fn midas_total_gradient_matches_finite_differences() {
    let (pred, target, valid) = inputs();
    assert_gradient_matches_finite_differences("midas", &pred, |p| {
        MidasLoss::default().compute(p, &target, &valid).unwrap()
    });
}

#[test]
fn silog_gradient_matches_finite_differences() {
    let (pred, target, valid) = inputs();
    assert_gradient_matches_finite_differences("silog", &pred, |p| {
        SilogLoss::default().compute(p, &target, &valid).unwrap()
    });
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let logits = field(14, &[1, 3, 2, 2], -2.0, 2.0);
    let labels = Tensor::from_slice(&[0i64, 2, 255, 1]).reshape([1, 2, 2]);
    assert_gradient_matches_finite_differences("cross-entropy", &logits, |l| {
        SegmentationLoss::default()
            .compute(l, Some(l), &labels, None)
            .unwrap()
    });
}
