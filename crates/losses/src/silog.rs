//! Scale-invariant logarithmic loss for metric depth (Eigen et al., NeurIPS 2014, eq. 4, in the
//! square-root form used by BTS/AdaBins; `docs/losses.md`):
//! `e = log y^ - log y` on valid pixels, `L = 10 * sqrt(mean e^2 - lambda * (mean e)^2)`.
//!
//! Choices where the design is silent:
//! - The means run over all valid pixels of the batch at once (as BTS and AdaBins do), not per
//!   image; with `lambda = 1` the loss is still invariant to one global scale of the prediction.
//! - Predictions are clamped below at `min_depth` before the log; pixels whose target is not
//!   positive are treated as masked (their log is undefined), as the GLPN/HF reference does.
//! - The square root's argument is clamped below at [`SQRT_EPS`], so a perfect (or, with
//!   `lambda = 1`, perfectly scaled) prediction gives a finite gradient instead of `0 / 0`.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::input::{DenseInputs, count, zero_with_grad};
use crate::{DepthLoss, LossError};

/// Lower bound on `mean e^2 - lambda (mean e)^2` before the square root; `d sqrt / dx` at this
/// value is 5e5, large but finite.
pub const SQRT_EPS: f64 = 1e-12;

/// SILog loss on metric depth. Doubles as its serde configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SilogLoss {
    /// Weight of the squared mean log error: 0 is a plain log-RMSE, 1 fully scale-invariant.
    pub lambda: f64,
    /// Predictions are clamped to at least this depth (same unit as the target) before the log.
    pub min_depth: f64,
}

impl Default for SilogLoss {
    fn default() -> Self {
        Self {
            lambda: 0.85,
            min_depth: 1e-3,
        }
    }
}

impl SilogLoss {
    /// Checks `lambda` in `[0, 1]` (above 1 the square root's argument can go negative) and a
    /// finite positive `min_depth`.
    pub fn validate(&self) -> Result<(), LossError> {
        if !(0.0..=1.0).contains(&self.lambda) {
            return Err(LossError::InvalidConfig {
                field: "lambda",
                value: self.lambda.to_string(),
                expected: "a weight in [0, 1]",
            });
        }
        if !(self.min_depth.is_finite() && self.min_depth > 0.0) {
            return Err(LossError::InvalidConfig {
                field: "min_depth",
                value: self.min_depth.to_string(),
                expected: "a finite depth > 0",
            });
        }
        Ok(())
    }
}

impl DepthLoss for SilogLoss {
    fn compute(&self, pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor, LossError> {
        self.validate()?;
        let inputs = DenseInputs::new(pred, target, mask)?;
        // Filling with 1 keeps both logs finite (log 1 = 0) wherever the pixel is masked.
        let (pred, target) = inputs.cleaned(1.0);
        let valid = inputs.mask.logical_and(&target.gt(0.0));
        let n = count(&valid);
        if n == 0 {
            return Ok(zero_with_grad(&pred));
        }
        let log_pred = pred
            .where_scalarother(&valid, 1.0)
            .clamp_min(self.min_depth)
            .log();
        let log_target = target.where_scalarother(&valid, 1.0).log();
        let e = (log_pred - log_target).where_scalarother(&valid, 0.0);
        let kind = e.kind();
        let mean = e.sum(kind) / n as f64;
        let mean_sq = e.square().sum(kind) / n as f64;
        let arg = (mean_sq - mean.square() * self.lambda).clamp_min(SQRT_EPS);
        Ok(arg.sqrt() * 10.0)
    }
}

#[cfg(test)]
mod tests {
    use approx::assert_abs_diff_eq;
    use tch::{Device, Kind, Tensor};

    use super::*;

    #[test]
    fn silog_matches_a_hand_computed_value() {
        // e = ln 2 and 0: mean e^2 = (ln 2)^2 / 2, mean e = ln 2 / 2,
        // L = 10 * sqrt((ln 2)^2 / 2 - 0.85 (ln 2)^2 / 4).
        let pred = Tensor::from_slice(&[2.0, 3.0]).reshape([1, 1, 2]);
        let target = Tensor::from_slice(&[1.0, 3.0]).reshape([1, 1, 2]);
        let mask = Tensor::ones([1, 1, 2], (Kind::Bool, Device::Cpu));
        let ln2 = 2f64.ln();
        let expected = 10.0 * (ln2 * ln2 / 2.0 - 0.85 * ln2 * ln2 / 4.0).sqrt();
        let loss = SilogLoss::default().compute(&pred, &target, &mask).unwrap();
        assert_abs_diff_eq!(loss.double_value(&[]), expected, epsilon = 1e-12);
    }

    #[test]
    fn silog_treats_nonpositive_targets_as_masked() {
        let pred = Tensor::from_slice(&[2.0, 3.0, 5.0]).reshape([1, 1, 3]);
        let target = Tensor::from_slice(&[1.0, 3.0, 0.0]).reshape([1, 1, 3]);
        let all = Tensor::ones([1, 1, 3], (Kind::Bool, Device::Cpu));
        let two = Tensor::from_slice(&[true, true, false]).reshape([1, 1, 3]);
        let loss = SilogLoss::default();
        assert_abs_diff_eq!(
            loss.compute(&pred, &target, &all)
                .unwrap()
                .double_value(&[]),
            loss.compute(&pred, &target, &two)
                .unwrap()
                .double_value(&[]),
            epsilon = 1e-12
        );
    }

    #[test]
    fn silog_clamps_predictions_to_the_minimum_depth() {
        let target = Tensor::from_slice(&[1.0, 2.0]).reshape([1, 1, 2]);
        let mask = Tensor::ones([1, 1, 2], (Kind::Bool, Device::Cpu));
        let loss = SilogLoss {
            lambda: 0.5,
            min_depth: 0.1,
        };
        let negative = Tensor::from_slice(&[-4.0, 2.0]).reshape([1, 1, 2]);
        let at_min = Tensor::from_slice(&[0.1, 2.0]).reshape([1, 1, 2]);
        assert_abs_diff_eq!(
            loss.compute(&negative, &target, &mask)
                .unwrap()
                .double_value(&[]),
            loss.compute(&at_min, &target, &mask)
                .unwrap()
                .double_value(&[]),
            epsilon = 1e-12
        );
    }

    #[test]
    fn invalid_settings_are_rejected() {
        for bad in [
            SilogLoss {
                lambda: 1.5,
                ..SilogLoss::default()
            },
            SilogLoss {
                lambda: -0.1,
                ..SilogLoss::default()
            },
            SilogLoss {
                min_depth: 0.0,
                ..SilogLoss::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(LossError::InvalidConfig { .. })),
                "{bad:?}"
            );
        }
    }
}
