//! Metric depth from a relative (disparity) prediction: `depth = 1 / max(scale * x + shift,
//! min_disparity)` (`docs/losses.md`), for fine-tuning a MiDaS-style head on metric ground truth
//! or evaluating it in metres.
//!
//! "Clamped to a positive minimum" is applied to the disparity `scale * x + shift`, not to the
//! depth: clamping the denominator keeps depth positive *and* finite (at most `1 / min_disparity`),
//! whereas clamping the depth would still let a non-positive denominator produce inf or a sign flip.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::LossError;
use crate::input::{compute_kind, same_device};

/// A configured (fixed) disparity-to-depth map. For a learned one, keep `scale` and `shift` as
/// trainable tensors and call [`depth_from_disparity`] directly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DisparityToDepth {
    /// Multiplies the predicted disparity.
    pub scale: f64,
    /// Added after scaling.
    pub shift: f64,
    /// Smallest disparity allowed, i.e. `1 / max_depth` (default 1e-3: 1000 depth units).
    pub min_disparity: f64,
}

impl Default for DisparityToDepth {
    fn default() -> Self {
        Self {
            scale: 1.0,
            shift: 0.0,
            min_disparity: 1e-3,
        }
    }
}

impl DisparityToDepth {
    /// Depth for every element of `disparity` (any shape, floating kind).
    pub fn apply(&self, disparity: &Tensor) -> Result<Tensor, LossError> {
        let options = (compute_kind("disparity", disparity)?, disparity.device());
        depth_from_disparity(
            disparity,
            &Tensor::from(self.scale)
                .to_kind(options.0)
                .to_device(options.1),
            &Tensor::from(self.shift)
                .to_kind(options.0)
                .to_device(options.1),
            self.min_disparity,
        )
    }
}

/// `1 / max(scale * x + shift, min_disparity)`. `x` is `B x ...`; `scale` and `shift` each hold one
/// value (shared) or `B` values (one per image), so both fixed and learned alignments fit; gradients
/// flow to all three tensors.
pub fn depth_from_disparity(
    disparity: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    min_disparity: f64,
) -> Result<Tensor, LossError> {
    if !(min_disparity.is_finite() && min_disparity > 0.0) {
        return Err(LossError::InvalidConfig {
            field: "min_disparity",
            value: min_disparity.to_string(),
            expected: "a finite disparity > 0",
        });
    }
    let kind = compute_kind("disparity", disparity)?;
    let shape = disparity.size();
    let Some(&batch) = shape.first() else {
        return Err(LossError::BadRank {
            name: "disparity",
            expected: "B x ... (at least one dimension)",
            shape,
        });
    };
    let scale = per_image("scale", scale, disparity, batch)?;
    let shift = per_image("shift", shift, disparity, batch)?;
    let x = disparity.to_kind(kind);
    Ok((x * scale + shift).clamp_min(min_disparity).reciprocal())
}

/// Reshapes a one- or `B`-element tensor so it broadcasts over `disparity`'s images.
fn per_image(
    name: &'static str,
    t: &Tensor,
    disparity: &Tensor,
    batch: i64,
) -> Result<Tensor, LossError> {
    same_device(name, t, "disparity", disparity)?;
    let kind = compute_kind(name, t)?;
    let mut broadcast = vec![1i64; disparity.dim()];
    broadcast[0] = match t.numel() as i64 {
        1 => 1,
        n if n == batch => batch,
        _ => {
            return Err(LossError::ShapeMismatch {
                name,
                got: t.size(),
                reference: "disparity",
                expected: vec![batch],
            });
        }
    };
    Ok(t.to_kind(kind).reshape(&broadcast))
}

#[cfg(test)]
mod tests {
    use approx::assert_abs_diff_eq;
    use tch::{Device, Kind, Tensor};

    use super::*;

    #[test]
    fn depth_is_the_inverse_of_the_aligned_disparity() {
        let x = Tensor::from_slice(&[0.5, 1.0, 2.0, 4.0]).reshape([1, 2, 2]);
        let map = DisparityToDepth {
            scale: 2.0,
            shift: 0.5,
            min_disparity: 1e-3,
        };
        let depth = map.apply(&x).unwrap();
        let expected = [1.0 / 1.5, 1.0 / 2.5, 1.0 / 4.5, 1.0 / 8.5];
        for (i, e) in expected.iter().enumerate() {
            assert_abs_diff_eq!(depth.view(-1).double_value(&[i as i64]), e, epsilon = 1e-12);
        }
    }

    #[test]
    fn nonpositive_disparity_is_clamped_to_the_maximum_depth() {
        let x = Tensor::from_slice(&[-3.0, 0.0]).reshape([1, 1, 2]);
        let depth = DisparityToDepth {
            min_disparity: 0.01,
            ..DisparityToDepth::default()
        }
        .apply(&x)
        .unwrap();
        assert_abs_diff_eq!(depth.view(-1).double_value(&[0]), 100.0, epsilon = 1e-9);
        assert_abs_diff_eq!(depth.view(-1).double_value(&[1]), 100.0, epsilon = 1e-9);
    }

    #[test]
    fn learned_per_image_scale_and_shift_receive_gradients() {
        let x = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0]).reshape([2, 1, 2]);
        let scale = Tensor::from_slice(&[1.0, 2.0]).set_requires_grad(true);
        let shift = Tensor::from_slice(&[0.0]).set_requires_grad(true);
        let depth = depth_from_disparity(&x, &scale, &shift, 1e-3).unwrap();
        // Image 1 uses scale 2: 1 / (2 * 3) = 1/6.
        assert_abs_diff_eq!(depth.double_value(&[1, 0, 0]), 1.0 / 6.0, epsilon = 1e-12);
        depth.sum(Kind::Double).backward();
        // d/ds sum 1/(s x) over image 0 (s = 1, x = 1, 2) = -(1 + 1/2).
        assert_abs_diff_eq!(scale.grad().double_value(&[0]), -1.5, epsilon = 1e-12);
        assert!(shift.grad().double_value(&[0]).is_finite());
    }

    #[test]
    fn scale_with_the_wrong_number_of_images_is_a_typed_error() {
        let x = Tensor::zeros([2, 1, 2], (Kind::Float, Device::Cpu));
        let scale = Tensor::ones([3], (Kind::Float, Device::Cpu));
        let shift = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let err = depth_from_disparity(&x, &scale, &shift, 1e-3).unwrap_err();
        assert!(
            matches!(err, LossError::ShapeMismatch { name: "scale", .. }),
            "{err}"
        );
    }
}
