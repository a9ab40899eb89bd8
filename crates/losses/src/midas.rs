//! The MiDaS objective: scale- and shift-invariant trimmed MAE plus multi-scale gradient matching
//! (Ranftl et al., "Towards Robust Monocular Depth Estimation: Mixing Datasets for Zero-shot
//! Cross-dataset Transfer", TPAMI 2022, eqs. 6-7 and 11; `docs/losses.md`).
//!
//! Per image, on its `M` valid pixels and in disparity space:
//! `t = median(d)`, `s = mean |d - t|`, `d^ = (d - t) / s` (same for the target `d^*`);
//! `L_ssi = sum of the smallest (1 - trim) share of |d^ - d^*| / (2M)`;
//! with `R = d^ - d^*`, `L_grad = sum_k sum(|grad_x R_k| + |grad_y R_k|) / M_k` where `R_k` is `R`
//! subsampled with stride `2^k` and only pairs of two valid neighbours count;
//! `L = L_ssi + alpha * L_grad`.
//!
//! Choices where the paper is silent (also in the crate docs):
//! - Batch reduction is MiDaS's "batch-based" one: per-image sums are added and divided by the
//!   valid-pixel count of the whole batch (`2 * sum M` for the trimmed term, `sum M_k` per scale for
//!   gradient matching), so images with more valid pixels weigh more and an image without any
//!   contributes nothing.
//! - The median is the lower median (`torch.median`) of the valid pixels; the number of residuals
//!   kept is `floor((1 - trim) * M)` as in the MiDaS reference (`M = 16`, `trim = 0.2` keeps 12).
//! - `s` is clamped below at [`SCALE_EPS`], so a constant image normalises to zeros instead of NaN.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::input::{DenseInputs, zero_with_grad};
use crate::{DepthLoss, LossError};

/// Lower bound on the per-image scale `s = mean |d - t|`: a constant disparity map would otherwise
/// divide by zero. Small enough not to touch any real disparity map.
pub const SCALE_EPS: f64 = 1e-6;

/// Most gradient-matching scales accepted: stride `2^15` already exceeds any image side.
const MAX_SCALES: usize = 16;

/// MiDaS training loss for relative (disparity) predictions: SSI-trim plus `alpha` times
/// gradient matching over `scales` scales. Doubles as its serde configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MidasLoss {
    /// Weight of the gradient-matching term (MiDaS: 0.5).
    pub alpha: f64,
    /// Number of gradient-matching scales, strides `1, 2, ..., 2^(scales - 1)` (MiDaS: 4).
    pub scales: usize,
    /// Share of the largest residuals dropped per image (MiDaS: 0.2).
    pub trim: f64,
}

impl Default for MidasLoss {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            scales: 4,
            trim: 0.2,
        }
    }
}

/// The two MiDaS terms and their weighted sum, so a trainer can log each one.
#[derive(Debug)]
pub struct MidasTerms {
    /// Trimmed scale- and shift-invariant MAE.
    pub ssi: Tensor,
    /// Multi-scale gradient matching of the aligned residual (unweighted).
    pub gradient: Tensor,
    /// `ssi + alpha * gradient`.
    pub total: Tensor,
}

impl MidasLoss {
    /// Checks that the settings make sense: `alpha` finite and non-negative, `trim` in `[0, 1)`,
    /// `scales` in `1..=16`.
    pub fn validate(&self) -> Result<(), LossError> {
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(LossError::InvalidConfig {
                field: "alpha",
                value: self.alpha.to_string(),
                expected: "a finite number >= 0",
            });
        }
        if !(0.0..1.0).contains(&self.trim) {
            return Err(LossError::InvalidConfig {
                field: "trim",
                value: self.trim.to_string(),
                expected: "a share in [0, 1)",
            });
        }
        if !(1..=MAX_SCALES).contains(&self.scales) {
            return Err(LossError::InvalidConfig {
                field: "scales",
                value: self.scales.to_string(),
                expected: "an integer in 1..=16",
            });
        }
        Ok(())
    }

    /// Both terms and the total for disparity `pred` and `target` (`B x H x W` or
    /// `B x 1 x H x W`) on the pixels where `mask` is true.
    pub fn terms(
        &self,
        pred: &Tensor,
        target: &Tensor,
        mask: &Tensor,
    ) -> Result<MidasTerms, LossError> {
        self.validate()?;
        let inputs = DenseInputs::new(pred, target, mask)?;
        let aligned = Aligned::new(&inputs);
        if aligned.counts.iter().sum::<i64>() == 0 {
            let zero = zero_with_grad(&aligned.residual);
            return Ok(MidasTerms {
                ssi: zero.shallow_clone(),
                gradient: zero.shallow_clone(),
                total: zero,
            });
        }
        let ssi = aligned.trimmed_mae(self.trim);
        let gradient = gradient_matching(&aligned.residual, &aligned.mask, self.scales);
        let total = &ssi + &gradient * self.alpha;
        Ok(MidasTerms {
            ssi,
            gradient,
            total,
        })
    }
}

impl DepthLoss for MidasLoss {
    fn compute(&self, pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor, LossError> {
        Ok(self.terms(pred, target, mask)?.total)
    }
}

/// Prediction and target after per-image median/mean-absolute-deviation alignment.
struct Aligned {
    /// `d^ - d^*`, `B x H x W`, exactly zero on masked pixels.
    residual: Tensor,
    mask: Tensor,
    /// Valid pixels per image.
    counts: Vec<i64>,
}

impl Aligned {
    /// Aligns the whole batch at once: medians with NaN standing for masked pixels
    /// (`nanmedian` returns the lower middle value, as `median` of the valid pixels does), mean
    /// absolute deviations from masked sums. No per-image loop: one kernel per operation for
    /// the batch, which is most of the loss's cost at training sizes.
    fn new(inputs: &DenseInputs) -> Self {
        let (pred, target) = inputs.cleaned(0.0);
        let mask = inputs.mask.shallow_clone();
        let counts = per_image_counts(&mask);
        let valid = Tensor::from_slice(&counts)
            .to_device(pred.device())
            .to_kind(pred.kind());
        let residual = normalise(&pred, &mask, &valid) - normalise(&target, &mask, &valid);
        Self {
            residual,
            mask,
            counts,
        }
    }

    /// Batch-based trimmed MAE: sum of each image's kept residuals (the smallest
    /// `kept_count(valid)`) over `2 * sum M`.
    fn trimmed_mae(&self, trim: f64) -> Tensor {
        let b = self.counts.len() as i64;
        let abs = self
            .residual
            .abs()
            .where_scalarother(&self.mask, f64::INFINITY)
            .reshape([b, -1]);
        let (sorted, _) = abs.sort(1, false);
        let kept: Vec<i64> = self.counts.iter().map(|&n| kept_count(n, trim)).collect();
        let kept = Tensor::from_slice(&kept).to_device(sorted.device());
        let n = sorted.size()[1];
        let rank = Tensor::arange(n, (tch::Kind::Int64, sorted.device()));
        let keep = rank.unsqueeze(0).lt_tensor(&kept.unsqueeze(1));
        let total = sorted
            .where_scalarother(&keep, 0.0)
            .sum(self.residual.kind());
        total / (2 * self.counts.iter().sum::<i64>()) as f64
    }
}

/// Valid pixels of each image of a `B x H x W` mask (one read-back for the batch).
fn per_image_counts(mask: &Tensor) -> Vec<i64> {
    let b = mask.size()[0];
    let sums = mask
        .reshape([b, -1])
        .sum_dim_intlist([1].as_slice(), false, tch::Kind::Int64)
        .to_device(tch::Device::Cpu);
    Vec::<i64>::try_from(&sums).expect("an int64 vector")
}

/// `(x - median) / max(mean |x - median|, eps)` per image over its valid pixels, zero elsewhere
/// (and zero for an image without valid pixels). `valid` holds the per-image counts.
fn normalise(x: &Tensor, mask: &Tensor, valid: &Tensor) -> Tensor {
    let b = x.size()[0];
    let flat = x.reshape([b, -1]);
    let m = mask.reshape([b, -1]);
    let (median, _) = flat.where_scalarother(&m, f64::NAN).nanmedian_dim(1, true);
    let shift = median.nan_to_num(0.0, None, None);
    let centred = &flat - &shift;
    let deviation =
        centred
            .abs()
            .where_scalarother(&m, 0.0)
            .sum_dim_intlist([1].as_slice(), true, x.kind())
            / valid.clamp_min(1.0).unsqueeze(1);
    (centred / deviation.clamp_min(SCALE_EPS))
        .where_scalarother(&m, 0.0)
        .reshape(x.size())
}

/// How many of `valid` residuals survive trimming: `floor((1 - trim) * valid)`, with a tolerance
/// so that e.g. `0.7 * 10` counts as 7, not 6.
pub(crate) fn kept_count(valid: i64, trim: f64) -> i64 {
    (((1.0 - trim) * valid as f64 + 1e-9).floor() as i64).clamp(0, valid)
}

/// Sum of the smallest `kept_count` entries of the 1-D tensor `residuals` (the definition the
/// batched [`Aligned::trimmed_mae`] is tested against).
#[cfg(test)]
pub(crate) fn trimmed_sum(residuals: &Tensor, trim: f64) -> Tensor {
    let kept = kept_count(residuals.size()[0], trim);
    let (sorted, _) = residuals.sort(0, false);
    sorted.narrow(0, 0, kept).sum(residuals.kind())
}

/// Multi-scale gradient matching of `residual` (zero on masked pixels), batch-based reduction.
/// A scale without valid pixels has no valid pair either and adds zero; dividing by the count
/// floored at 1 says so without reading the count back to the host.
pub(crate) fn gradient_matching(residual: &Tensor, mask: &Tensor, scales: usize) -> Tensor {
    (0..scales)
        .map(|k| {
            let step = 1i64 << k;
            let r = residual.slice(1, 0, None, step).slice(2, 0, None, step);
            let m = mask.slice(1, 0, None, step).slice(2, 0, None, step);
            let valid = m.sum(residual.kind()).clamp_min(1.0);
            neighbour_differences(&r, &m) / valid
        })
        .fold(zero_with_grad(residual), |acc, scale| acc + scale)
}

/// `sum |grad_x r| + |grad_y r|` over horizontally and vertically adjacent pairs that are both valid.
fn neighbour_differences(r: &Tensor, m: &Tensor) -> Tensor {
    let [x, y] = [2, 1].map(|dim| {
        let diff = (r.slice(dim, 1, None, 1) - r.slice(dim, 0, -1, 1)).abs();
        let pairs = m
            .slice(dim, 1, None, 1)
            .logical_and(&m.slice(dim, 0, -1, 1));
        diff.where_scalarother(&pairs, 0.0).sum(r.kind())
    });
    x + y
}

#[cfg(test)]
mod tests {
    use approx::assert_abs_diff_eq;
    use tch::{Kind, Tensor};

    use super::*;

    fn f64s(values: &[f64], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values).reshape(shape)
    }

    #[test]
    fn trim_drops_exactly_the_largest_20_percent_of_residuals() {
        // Ten residuals 1..=10 in scrambled order: 20% of 10 is 2, so 9 and 10 go, 1+...+8 = 36.
        let residuals = f64s(&[7.0, 2.0, 10.0, 4.0, 1.0, 9.0, 3.0, 8.0, 6.0, 5.0], &[10]);
        assert_eq!(kept_count(10, 0.2), 8);
        assert_abs_diff_eq!(trimmed_sum(&residuals, 0.2).double_value(&[]), 36.0);
        // Sixteen residuals 1..=16: floor(0.8 * 16) = 12 kept, the four largest dropped: 78.
        let sixteen: Vec<f64> = (1..=16).rev().map(f64::from).collect();
        assert_eq!(kept_count(16, 0.2), 12);
        assert_abs_diff_eq!(
            trimmed_sum(&f64s(&sixteen, &[16]), 0.2).double_value(&[]),
            78.0
        );
    }

    #[test]
    fn trim_count_is_robust_to_floating_point_products() {
        // (1 - 0.3) * 10 = 6.999... in binary floating point; the intended count is 7.
        assert_eq!(kept_count(10, 0.3), 7);
        assert_eq!(kept_count(10, 0.0), 10);
        assert_eq!(kept_count(1, 0.2), 0);
        assert_eq!(kept_count(0, 0.2), 0);
    }

    #[test]
    fn gradient_matching_matches_a_hand_computed_residual() {
        // R = [[0, 1, 3], [0, 0, 0]], one scale, all valid:
        // x-pairs |1-0| + |3-1| + 0 + 0 = 3, y-pairs 0 + 1 + 3 = 4, M = 6.
        let r = f64s(&[0.0, 1.0, 3.0, 0.0, 0.0, 0.0], &[1, 2, 3]);
        let all = Tensor::ones([1, 2, 3], (Kind::Bool, tch::Device::Cpu));
        assert_abs_diff_eq!(
            gradient_matching(&r, &all, 1).double_value(&[]),
            7.0 / 6.0,
            epsilon = 1e-12
        );
        // Masking the pixel holding 3 (its residual is zero then, as `Aligned` guarantees)
        // removes the pairs (1,3) and (3,0): x 1, y 1, over M = 5.
        let r = f64s(&[0.0, 1.0, 0.0, 0.0, 0.0, 0.0], &[1, 2, 3]);
        let mask = f64s(&[1.0, 1.0, 0.0, 1.0, 1.0, 1.0], &[1, 2, 3]).ne(0);
        assert_abs_diff_eq!(
            gradient_matching(&r, &mask, 1).double_value(&[]),
            2.0 / 5.0,
            epsilon = 1e-12
        );
    }

    #[test]
    fn gradient_matching_second_scale_uses_stride_two() {
        // 3 x 3 residual; at stride 2 only the corners remain: [[1, 2], [4, 8]].
        // Scale 0 alone is checked against scale 0 + scale 1 to isolate the second term:
        // corners x: |2-1| + |8-4| = 5, y: |4-1| + |8-2| = 9, M_1 = 4.
        let r = f64s(&[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 4.0, 0.0, 8.0], &[1, 3, 3]);
        let all = Tensor::ones([1, 3, 3], (Kind::Bool, tch::Device::Cpu));
        let one = gradient_matching(&r, &all, 1).double_value(&[]);
        let two = gradient_matching(&r, &all, 2).double_value(&[]);
        assert_abs_diff_eq!(two - one, 14.0 / 4.0, epsilon = 1e-12);
    }

    #[test]
    fn ssi_loss_is_zero_for_a_perfect_prediction() {
        let target =
            Tensor::from_slice(&[0.5, 1.0, 2.0, 0.25, 3.0, 1.5, 0.75, 2.5]).reshape([2, 2, 2]);
        let mask = Tensor::ones([2, 2, 2], (Kind::Bool, tch::Device::Cpu));
        let terms = MidasLoss::default().terms(&target, &target, &mask).unwrap();
        assert_abs_diff_eq!(terms.ssi.double_value(&[]), 0.0, epsilon = 1e-12);
        assert_abs_diff_eq!(terms.total.double_value(&[]), 0.0, epsilon = 1e-12);
    }

    #[test]
    fn constant_image_normalises_to_zero_instead_of_nan() {
        let pred = Tensor::full([1, 2, 2], 3.0, (Kind::Double, tch::Device::Cpu));
        let target = f64s(&[1.0, 2.0, 3.0, 4.0], &[1, 2, 2]);
        let mask = Tensor::ones([1, 2, 2], (Kind::Bool, tch::Device::Cpu));
        let loss = MidasLoss::default().compute(&pred, &target, &mask).unwrap();
        assert!(loss.double_value(&[]).is_finite());
    }

    #[test]
    fn invalid_settings_are_rejected() {
        for bad in [
            MidasLoss {
                trim: 1.0,
                ..MidasLoss::default()
            },
            MidasLoss {
                trim: -0.1,
                ..MidasLoss::default()
            },
            MidasLoss {
                alpha: f64::NAN,
                ..MidasLoss::default()
            },
            MidasLoss {
                scales: 0,
                ..MidasLoss::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(LossError::InvalidConfig { .. })),
                "{bad:?}"
            );
        }
    }
}
