//! Per-image alignment of relative predictions to metric ground truth before the depth metrics
//! (`docs/metrics.md`), as in the zero-shot protocols of MiDaS (Ranftl et al., TPAMI 2022,
//! eq. 4: least-squares scale and shift, here in depth or in disparity space) and of monocular
//! self-supervised work (median scaling, Zhou et al. 2017).
//!
//! The fit uses the valid pixels only (those the metrics see) whose prediction is finite.
//! In disparity space the fitted disparity `d = s * pred + t` is turned back into depth `1 / d`;
//! a non-positive `d` (which has no depth) becomes `min_depth`, as the task asked. MiDaS' own
//! script instead clamps disparities below `1 / max_depth` (so non-positive ones become
//! `max_depth`); both are then clipped to `[min_depth, max_depth]` by the metrics.

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// How a prediction is brought to the scale of the ground truth before it is scored: `None` for
/// metric models, the others for relative (scale- or affine-ambiguous) models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Alignment {
    /// Score the prediction as metric depth.
    #[default]
    None,
    /// `pred * median(gt) / median(pred)` over the valid pixels.
    Median,
    /// Least-squares `s, t` with `s * pred + t ~ gt` (prediction is affine-invariant depth).
    ScaleShiftDepth,
    /// Least-squares `s, t` with `s * pred + t ~ 1 / gt`, then depth `1 / (s * pred + t)`
    /// (prediction is affine-invariant disparity, as MiDaS / DPT output).
    ScaleShiftDisparity,
}

/// A fitted affine map `y = scale * x + shift`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScaleShift {
    /// Multiplier of the prediction.
    pub scale: f64,
    /// Offset added after scaling.
    pub shift: f64,
}

/// Least-squares fit of `y ~ scale * x + shift` over `(x, y)` points, the closed form of MiDaS
/// eq. 4; `None` with fewer than two points or no spread in `x` (the fit is then not unique).
pub fn fit_scale_shift(points: &[(f64, f64)]) -> Option<ScaleShift> {
    let n = points.len();
    if n < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n as f64;
    // Centred sums avoid the cancellation of the raw normal equations when depths are large.
    let (sxx, sxy, sum_x2) = points
        .iter()
        .fold((0.0, 0.0, 0.0), |(sxx, sxy, s2), &(x, y)| {
            let dx = x - mean_x;
            (sxx + dx * dx, sxy + dx * (y - mean_y), s2 + x * x)
        });
    let has_spread = sxx.is_finite() && sxx > 1e-12 * sum_x2;
    if !has_spread {
        return None;
    }
    let scale = sxy / sxx;
    Some(ScaleShift {
        scale,
        shift: mean_y - scale * mean_x,
    })
}

/// Median as numpy computes it (mean of the two middle values for an even count); `None` for an
/// empty slice. Reorders `values`.
pub fn median(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let (lower, upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        return Some(upper);
    }
    let below = lower.iter().copied().max_by(f64::total_cmp)?;
    Some(0.5 * (below + upper))
}

impl Alignment {
    /// Aligns the predictions of `(pred, gt)` pixel pairs in place (valid pixels, depths in
    /// metres); non-finite predictions are left out of the fit and left as they are.
    pub fn align(self, pairs: &mut [(f64, f64)], min_depth: f64) -> Result<()> {
        if self == Alignment::None {
            return Ok(());
        }
        let points: Vec<(f64, f64)> = pairs
            .iter()
            .filter(|(p, _)| p.is_finite())
            .map(|&(p, g)| match self {
                Alignment::ScaleShiftDisparity => (p, 1.0 / g),
                _ => (p, g),
            })
            .collect();
        let degenerate = |reason: String| MetricsError::DegenerateAlignment {
            alignment: self,
            reason,
        };
        match self {
            Alignment::None => {}
            Alignment::Median => {
                let (mut x, mut y): (Vec<f64>, Vec<f64>) = points.into_iter().unzip();
                let (Some(median_pred), Some(median_gt)) = (median(&mut x), median(&mut y)) else {
                    return Err(degenerate("no finite prediction on a valid pixel".into()));
                };
                // Finite predictions only, so the median is finite too.
                if median_pred <= 0.0 {
                    return Err(degenerate(format!(
                        "median prediction is {median_pred}, expected > 0"
                    )));
                }
                let ratio = median_gt / median_pred;
                pairs.iter_mut().for_each(|(p, _)| *p *= ratio);
            }
            Alignment::ScaleShiftDepth | Alignment::ScaleShiftDisparity => {
                let fit = fit_scale_shift(&points).ok_or_else(|| {
                    degenerate(format!(
                        "{} finite predictions on valid pixels without spread, need at least 2 \
                         distinct values",
                        points.len()
                    ))
                })?;
                for (p, _) in pairs.iter_mut() {
                    let aligned = fit.scale * *p + fit.shift;
                    *p = match self {
                        Alignment::ScaleShiftDisparity if aligned <= 0.0 => min_depth,
                        Alignment::ScaleShiftDisparity => 1.0 / aligned,
                        _ => aligned,
                    };
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn pairs(pred: &[f64], gt: &[f64]) -> Vec<(f64, f64)> {
        pred.iter().copied().zip(gt.iter().copied()).collect()
    }

    #[test]
    fn median_averages_the_two_middle_values_of_an_even_count() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn fit_scale_shift_recovers_an_exact_line() {
        let points: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 7.0].map(|x| (x, 0.5 * x - 3.0)).into();
        let fit = fit_scale_shift(&points).unwrap();
        assert_relative_eq!(fit.scale, 0.5, epsilon = 1e-12);
        assert_relative_eq!(fit.shift, -3.0, epsilon = 1e-12);
    }

    #[test]
    fn fit_scale_shift_of_a_constant_prediction_is_none() {
        assert_eq!(
            fit_scale_shift(&pairs(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0])),
            None
        );
        assert_eq!(fit_scale_shift(&[(2.0, 1.0)]), None);
    }

    #[test]
    fn median_alignment_of_a_non_positive_prediction_is_a_typed_error() {
        let mut points = pairs(&[-1.0, -2.0, 0.5], &[1.0, 2.0, 3.0]);
        let err = Alignment::Median.align(&mut points, 1e-3).unwrap_err();
        assert!(matches!(
            err,
            MetricsError::DegenerateAlignment {
                alignment: Alignment::Median,
                ..
            }
        ));
    }

    #[test]
    fn disparity_alignment_turns_non_positive_disparity_into_min_depth() {
        // Disparities 1/gt = 0.1, 0.1, 10, 10 against pred 0, 1, 2, 3: mean pred 1.5, mean
        // disparity 5.05, slope 19.8 / 5 = 3.96, shift 5.05 - 3.96 * 1.5 = -0.89, so pred 0 maps
        // to disparity -0.89 (no depth -> min_depth) and pred 1 to 3.07 (depth 1 / 3.07).
        let mut points = pairs(&[0.0, 1.0, 2.0, 3.0], &[10.0, 10.0, 0.1, 0.1]);
        Alignment::ScaleShiftDisparity
            .align(&mut points, 1e-3)
            .unwrap();
        assert_eq!(points[0].0, 1e-3);
        assert_relative_eq!(points[1].0, 1.0 / 3.07, epsilon = 1e-12);
    }

    #[test]
    fn disparity_alignment_recovers_depth_from_exact_affine_disparity() {
        // 1/gt = 1, 0.5, 0.25 is exactly 0.25 * pred - 0.25 for pred 5, 3, 2.
        let mut points = pairs(&[5.0, 3.0, 2.0], &[1.0, 2.0, 4.0]);
        Alignment::ScaleShiftDisparity
            .align(&mut points, 1e-3)
            .unwrap();
        for (p, g) in points {
            assert_relative_eq!(p, g, epsilon = 1e-12);
        }
    }

    #[test]
    fn non_finite_predictions_stay_out_of_the_fit() {
        // Without the NaN pixel, 2 * [1, 2, 3] + 1 = [3, 5, 7] fits exactly.
        let mut points = pairs(&[1.0, f64::NAN, 2.0, 3.0], &[3.0, 100.0, 5.0, 7.0]);
        Alignment::ScaleShiftDepth.align(&mut points, 1e-3).unwrap();
        assert_relative_eq!(points[0].0, 3.0, epsilon = 1e-12);
        assert!(points[1].0.is_nan());
        assert_relative_eq!(points[3].0, 7.0, epsilon = 1e-12);
    }
}
