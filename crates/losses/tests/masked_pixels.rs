//! Masked pixels must not matter: NaN, inf or huge values there leave the loss and its gradient
//! finite and unchanged, and a batch without valid pixels gives 0 with a usable gradient path.

mod common;

use common::{all_finite, field, mask, scalar, values};
use glassbox_losses::{DepthLoss, MidasLoss, SilogLoss};
use tch::{Device, Kind, Tensor};

const SHAPE: [i64; 3] = [2, 5, 6];

fn losses() -> Vec<(&'static str, Box<dyn DepthLoss>)> {
    vec![
        ("midas", Box::new(MidasLoss::default())),
        ("silog", Box::new(SilogLoss::default())),
    ]
}

/// `x` with its masked pixels replaced by a cycle of NaN, +inf, -inf, 1e30, -1e30 and 0.
fn poison(x: &Tensor, valid: &Tensor) -> Tensor {
    let cycle = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e30, -1e30, 0.0];
    let n = x.numel();
    let bad: Vec<f64> = (0..n).map(|i| cycle[i % cycle.len()]).collect();
    x.where_self(
        valid,
        &Tensor::from_slice(&bad).reshape(x.size()).to_kind(x.kind()),
    )
}

#[test]
fn poisoned_masked_pixels_leave_loss_and_gradient_finite_and_unchanged() {
    let pred = field(21, &SHAPE, 0.2, 5.0);
    let target = field(22, &SHAPE, 0.2, 5.0);
    let valid = mask(23, &SHAPE, 0.7);
    for kind in [Kind::Float, Kind::Double] {
        let (pred, target) = (pred.to_kind(kind), target.to_kind(kind));
        let (bad_pred, bad_target) = (poison(&pred, &valid), poison(&target, &valid));
        for (name, loss) in losses() {
            let leaf = bad_pred.detach().set_requires_grad(true);
            let value = loss.compute(&leaf, &bad_target, &valid).unwrap();
            value.backward();
            assert!(all_finite(&value), "{name} {kind:?}: loss {value:?}");
            assert!(
                all_finite(&leaf.grad()),
                "{name} {kind:?}: gradient not finite"
            );
            let masked_grad = leaf.grad().masked_select(&valid.logical_not());
            assert!(
                values(&masked_grad).iter().all(|&g| g == 0.0),
                "{name}: masked pixel moved"
            );
            let clean = scalar(&loss.compute(&pred, &target, &valid).unwrap());
            let tolerance = if kind == Kind::Float { 1e-5 } else { 1e-12 };
            assert!(
                (scalar(&value) - clean).abs() <= tolerance * (1.0 + clean.abs()),
                "{name} {kind:?}: poisoned {} vs clean {clean}",
                scalar(&value)
            );
        }
    }
}

#[test]
fn a_batch_without_valid_pixels_gives_zero_with_a_gradient_path() {
    let pred = poison(
        &field(31, &SHAPE, 0.2, 5.0),
        &Tensor::zeros(SHAPE, (Kind::Bool, Device::Cpu)),
    );
    let target = pred.copy();
    let none = Tensor::zeros(SHAPE, (Kind::Bool, Device::Cpu));
    for (name, loss) in losses() {
        let leaf = pred.detach().set_requires_grad(true);
        let value = loss.compute(&leaf, &target, &none).unwrap();
        value.backward();
        assert_eq!(scalar(&value), 0.0, "{name}");
        assert!(values(&leaf.grad()).iter().all(|&g| g == 0.0), "{name}");
    }
}

#[test]
fn an_image_without_valid_pixels_contributes_nothing() {
    // Batch-based reduction: the empty image adds neither loss nor pixels to the divisor.
    let pred = field(41, &SHAPE, 0.2, 5.0);
    let target = field(42, &SHAPE, 0.2, 5.0);
    let first_only =
        mask(43, &SHAPE, 0.8).logical_and(&Tensor::from_slice(&[true, false]).reshape([2, 1, 1]));
    for (name, loss) in losses() {
        let batch = scalar(&loss.compute(&pred, &target, &first_only).unwrap());
        let single = scalar(
            &loss
                .compute(
                    &pred.narrow(0, 0, 1),
                    &target.narrow(0, 0, 1),
                    &first_only.narrow(0, 0, 1),
                )
                .unwrap(),
        );
        assert!(
            (batch - single).abs() < 1e-12,
            "{name}: {batch} vs {single}"
        );
    }
}
