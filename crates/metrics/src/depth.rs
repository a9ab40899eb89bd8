//! Per-image monocular depth metrics of `docs/metrics.md`, following the BTS / AdaBins
//! `compute_errors` (Eigen et al. 2014 for AbsRel, SqRel, RMSE, RMSElog, log10 and the
//! `delta < 1.25^k` accuracies; SILog = `100 * sqrt(mean e^2 - (mean e)^2)`, `e = ln pred - ln gt`).
//!
//! A pixel is valid when it lies in the crop, its user mask is `true` and
//! `min_depth < gt < max_depth` (NaN ground truth is never valid). Predictions are aligned (see
//! [`Alignment`]) on the valid pixels, then clipped to `[min_depth, max_depth]`; like the BTS
//! script, a NaN prediction becomes `min_depth` and `+inf` becomes `max_depth`. All sums are `f64`.

use std::fmt;

use ndarray::{ArrayView2, Zip};
use serde::{Deserialize, Serialize};

use crate::align::Alignment;
use crate::crop::Crop;
use crate::error::{MetricsError, Result};

/// What to evaluate and how: depth range, crop and alignment; benchmarks are presets so that a
/// run folder records the exact protocol (it serialises with serde).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DepthEvalConfig {
    /// Ground truth must be strictly above this (metres); also the lower clip of predictions.
    pub min_depth: f64,
    /// Ground truth must be strictly below this (metres); also the upper clip of predictions.
    pub max_depth: f64,
    /// Evaluated region.
    pub crop: Crop,
    /// Per-image alignment of relative predictions.
    pub alignment: Alignment,
}

impl DepthEvalConfig {
    /// NYU-Depth-v2 protocol: depth in (1e-3, 10) m, Eigen crop, metric prediction.
    pub fn nyu() -> Self {
        DepthEvalConfig {
            min_depth: 1e-3,
            max_depth: 10.0,
            crop: Crop::Eigen,
            alignment: Alignment::None,
        }
    }

    /// KITTI Eigen-split protocol: depth in (1e-3, 80) m, Garg crop, metric prediction.
    pub fn kitti() -> Self {
        DepthEvalConfig {
            min_depth: 1e-3,
            max_depth: 80.0,
            crop: Crop::Garg,
            alignment: Alignment::None,
        }
    }

    /// The same protocol with another alignment, for relative-depth models.
    pub fn with_alignment(self, alignment: Alignment) -> Self {
        DepthEvalConfig { alignment, ..self }
    }

    /// The same protocol with another crop.
    pub fn with_crop(self, crop: Crop) -> Self {
        DepthEvalConfig { crop, ..self }
    }

    /// Checks `0 < min_depth < max_depth < inf` (log metrics need a positive floor).
    pub fn validate(&self) -> Result<()> {
        if !(self.min_depth > 0.0 && self.min_depth.is_finite()) {
            return Err(MetricsError::InvalidConfig {
                field: "min_depth",
                value: self.min_depth,
                expected: "a finite depth > 0",
            });
        }
        if !(self.max_depth > self.min_depth && self.max_depth.is_finite()) {
            return Err(MetricsError::InvalidConfig {
                field: "max_depth",
                value: self.max_depth,
                expected: "a finite depth > min_depth",
            });
        }
        Ok(())
    }
}

/// The nine standard depth metrics of one image, or their mean over a dataset (mean of the
/// per-image values, as published tables report).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct DepthMetrics {
    /// mean |gt - pred| / gt (lower is better).
    pub abs_rel: f64,
    /// mean (gt - pred)^2 / gt (lower is better).
    pub sq_rel: f64,
    /// sqrt(mean (gt - pred)^2), metres (lower is better).
    pub rmse: f64,
    /// sqrt(mean (ln gt - ln pred)^2) (lower is better).
    pub rmse_log: f64,
    /// mean |log10 gt - log10 pred| (lower is better).
    pub log10: f64,
    /// 100 * sqrt(mean e^2 - (mean e)^2), e = ln pred - ln gt (lower is better).
    pub silog: f64,
    /// Fraction of pixels with max(gt/pred, pred/gt) < 1.25 (higher is better).
    pub delta1: f64,
    /// Same with 1.25^2.
    pub delta2: f64,
    /// Same with 1.25^3.
    pub delta3: f64,
}

impl DepthMetrics {
    /// Number of metrics, the length of [`DepthMetrics::to_array`].
    pub const LEN: usize = 9;

    /// Column titles, in [`DepthMetrics::to_array`] order, with the better direction.
    pub const TITLES: [&'static str; Self::LEN] = [
        "AbsRel ↓",
        "SqRel ↓",
        "RMSE ↓",
        "RMSElog ↓",
        "log10 ↓",
        "SILog ↓",
        "δ1 ↑",
        "δ2 ↑",
        "δ3 ↑",
    ];

    /// The metrics in table order, for code that treats them uniformly (sums, plots).
    pub fn to_array(&self) -> [f64; Self::LEN] {
        [
            self.abs_rel,
            self.sq_rel,
            self.rmse,
            self.rmse_log,
            self.log10,
            self.silog,
            self.delta1,
            self.delta2,
            self.delta3,
        ]
    }

    /// Inverse of [`DepthMetrics::to_array`].
    pub fn from_array(values: [f64; Self::LEN]) -> Self {
        let [
            abs_rel,
            sq_rel,
            rmse,
            rmse_log,
            log10,
            silog,
            delta1,
            delta2,
            delta3,
        ] = values;
        DepthMetrics {
            abs_rel,
            sq_rel,
            rmse,
            rmse_log,
            log10,
            silog,
            delta1,
            delta2,
            delta3,
        }
    }

    /// Header and separator lines of a markdown eval table whose rows are
    /// [`DepthMetrics::markdown_row`]; prepend your own label column to both if needed.
    pub fn markdown_header() -> String {
        let titles = Self::TITLES.join(" | ");
        let rule = ["---:"; Self::LEN].join(" | ");
        format!("| {titles} |\n| {rule} |")
    }

    /// One markdown table row (4 decimals; SILog, a percentage-like value, with 2).
    pub fn markdown_row(&self) -> String {
        let cells: Vec<String> = self
            .to_array()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if i == 5 {
                    format!("{v:.2}")
                } else {
                    format!("{v:.4}")
                }
            })
            .collect();
        format!("| {} |", cells.join(" | "))
    }
}

impl fmt::Display for DepthMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AbsRel {:.4}  SqRel {:.4}  RMSE {:.4}  RMSElog {:.4}  log10 {:.4}  SILog {:.2}  \
             δ1 {:.4}  δ2 {:.4}  δ3 {:.4}",
            self.abs_rel,
            self.sq_rel,
            self.rmse,
            self.rmse_log,
            self.log10,
            self.silog,
            self.delta1,
            self.delta2,
            self.delta3
        )
    }
}

/// Depth metrics of one predicted depth map against its ground truth (both HxW, metres), on the
/// pixels that are valid under `cfg` and `mask` (see the module docs for the exact rules).
pub fn depth_metrics(
    pred: ArrayView2<f32>,
    gt: ArrayView2<f32>,
    mask: Option<ArrayView2<bool>>,
    cfg: &DepthEvalConfig,
) -> Result<DepthMetrics> {
    cfg.validate()?;
    if pred.dim() != gt.dim() {
        return Err(MetricsError::ShapeMismatch {
            what: "prediction",
            expected: gt.dim(),
            found: pred.dim(),
        });
    }
    if let Some(mask) = mask
        && mask.dim() != gt.dim()
    {
        return Err(MetricsError::ShapeMismatch {
            what: "mask",
            expected: gt.dim(),
            found: mask.dim(),
        });
    }
    let (height, width) = gt.dim();
    let window = cfg.crop.window(height, width)?;
    let mut pairs = valid_pairs(pred, gt, mask, cfg, &window)?;
    if pairs.is_empty() {
        return Err(MetricsError::NoValidPixels {
            height,
            width,
            crop: cfg.crop,
            min_depth: cfg.min_depth,
            max_depth: cfg.max_depth,
        });
    }
    cfg.alignment.align(&mut pairs, cfg.min_depth)?;
    for (p, _) in pairs.iter_mut() {
        *p = clip(*p, cfg.min_depth, cfg.max_depth);
    }
    Ok(metrics_of_pairs(&pairs))
}

/// `(pred, gt)` as f64 for every valid pixel, in row-major order.
fn valid_pairs(
    pred: ArrayView2<f32>,
    gt: ArrayView2<f32>,
    mask: Option<ArrayView2<bool>>,
    cfg: &DepthEvalConfig,
    window: &crate::crop::CropWindow,
) -> Result<Vec<(f64, f64)>> {
    let pred = window.slice(pred, ndarray::Axis(0))?;
    let gt = window.slice(gt, ndarray::Axis(0))?;
    let mut pairs = Vec::with_capacity(gt.len());
    let mut keep = |p: f32, g: f32, m: bool| {
        let g = f64::from(g);
        if m && g > cfg.min_depth && g < cfg.max_depth {
            pairs.push((f64::from(p), g));
        }
    };
    match mask {
        Some(mask) => {
            let mask = window.slice(mask, ndarray::Axis(0))?;
            Zip::from(&pred)
                .and(&gt)
                .and(&mask)
                .for_each(|&p, &g, &m| keep(p, g, m));
        }
        None => Zip::from(&pred)
            .and(&gt)
            .for_each(|&p, &g| keep(p, g, true)),
    }
    Ok(pairs)
}

fn clip(pred: f64, min_depth: f64, max_depth: f64) -> f64 {
    if pred.is_nan() {
        min_depth
    } else {
        pred.clamp(min_depth, max_depth)
    }
}

/// The metrics of clipped, strictly positive `(pred, gt)` pairs; `pairs` is not empty.
fn metrics_of_pairs(pairs: &[(f64, f64)]) -> DepthMetrics {
    let thresholds = [1.25, 1.25f64.powi(2), 1.25f64.powi(3)];
    let mut sum = [0.0f64; 9];
    let mut sum_e = 0.0;
    for &(p, g) in pairs {
        let diff = g - p;
        let e = p.ln() - g.ln();
        let ratio = (g / p).max(p / g);
        sum[0] += diff.abs() / g;
        sum[1] += diff * diff / g;
        sum[2] += diff * diff;
        sum[3] += e * e;
        sum[4] += (p.log10() - g.log10()).abs();
        sum_e += e;
        for (k, t) in thresholds.iter().enumerate() {
            if ratio < *t {
                sum[6 + k] += 1.0;
            }
        }
    }
    let n = pairs.len() as f64;
    let mean = |s: f64| s / n;
    let mean_e2 = mean(sum[3]);
    let mean_e = mean(sum_e);
    DepthMetrics {
        abs_rel: mean(sum[0]),
        sq_rel: mean(sum[1]),
        rmse: mean(sum[2]).sqrt(),
        rmse_log: mean_e2.sqrt(),
        log10: mean(sum[4]),
        // Rounding can make the variance a hair negative for a perfect scale-only error.
        silog: 100.0 * (mean_e2 - mean_e * mean_e).max(0.0).sqrt(),
        delta1: mean(sum[6]),
        delta2: mean(sum[7]),
        delta3: mean(sum[8]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use ndarray::{Array2, array};

    fn assert_metrics_eq(a: &DepthMetrics, b: &DepthMetrics, epsilon: f64) {
        for (x, y) in a.to_array().iter().zip(b.to_array()) {
            assert_relative_eq!(*x, y, epsilon = epsilon);
        }
    }

    fn uncropped(max_depth: f64) -> DepthEvalConfig {
        DepthEvalConfig {
            min_depth: 1e-3,
            max_depth,
            crop: Crop::None,
            alignment: Alignment::None,
        }
    }

    #[test]
    fn two_by_two_image_matches_hand_computed_metrics() {
        // gt   = [[1, 5], [2, 10]], pred = [[1, 6], [3, 19]]; ratios max(g/p, p/g) = 1, 1.2, 1.5, 1.9.
        // AbsRel = (0 + 1/5 + 1/2 + 9/10) / 4 = 1.6 / 4 = 0.4
        // SqRel  = (0 + 1/5 + 1/2 + 81/10) / 4 = 8.8 / 4 = 2.2
        // RMSE   = sqrt((0 + 1 + 1 + 81) / 4) = sqrt(20.75)
        // e = ln(p/g) = 0, ln 1.2, ln 1.5, ln 1.9
        // RMSElog = sqrt((ln²1.2 + ln²1.5 + ln²1.9) / 4); log10 = log10(1.2 * 1.5 * 1.9) / 4
        // SILog = 100 * sqrt(mean e² - (ln(3.42) / 4)²)
        // δ1 = 2/4 (1, 1.2 < 1.25), δ2 = 3/4 (1.5 < 1.5625), δ3 = 4/4 (1.9 < 1.953125)
        let gt = array![[1.0f32, 5.0], [2.0, 10.0]];
        let pred = array![[1.0f32, 6.0], [3.0, 19.0]];
        let m = depth_metrics(pred.view(), gt.view(), None, &uncropped(80.0)).unwrap();
        let (l12, l15, l19) = (1.2f64.ln(), 1.5f64.ln(), 1.9f64.ln());
        let mean_e2 = (l12 * l12 + l15 * l15 + l19 * l19) / 4.0;
        let mean_e = 3.42f64.ln() / 4.0;
        let expected = DepthMetrics {
            abs_rel: 0.4,
            sq_rel: 2.2,
            rmse: 20.75f64.sqrt(),
            rmse_log: mean_e2.sqrt(),
            log10: 3.42f64.log10() / 4.0,
            silog: 100.0 * (mean_e2 - mean_e * mean_e).sqrt(),
            delta1: 0.5,
            delta2: 0.75,
            delta3: 1.0,
        };
        assert_metrics_eq(&m, &expected, 1e-6);
    }

    #[test]
    fn perfect_prediction_has_zero_error_and_full_accuracy() {
        let gt = Array2::from_shape_fn((480, 640), |(r, c)| 0.5 + (r * 640 + c) as f32 * 2e-5);
        let m = depth_metrics(gt.view(), gt.view(), None, &DepthEvalConfig::nyu()).unwrap();
        let expected = DepthMetrics {
            delta1: 1.0,
            delta2: 1.0,
            delta3: 1.0,
            ..DepthMetrics::default()
        };
        assert_eq!(m, expected);
    }

    #[test]
    fn masked_and_invalid_pixels_do_not_change_any_metric() {
        // Row 0 is the reference image; rows 1 and 2 hold garbage predictions on pixels that are
        // masked out by the user (row 1) or whose ground truth is invalid (row 2).
        let reference_gt = array![[1.0f32, 2.0, 3.0, 4.0]];
        let reference_pred = array![[1.5f32, 1.0, 3.3, 9.0]];
        let gt = array![
            [1.0f32, 2.0, 3.0, 4.0],
            [1.0, 2.0, 3.0, 4.0],
            [0.0, f32::NAN, 10.0, 1e-4]
        ];
        let pred = array![
            [1.5f32, 1.0, 3.3, 9.0],
            [f32::NAN, 1e9, -5.0, f32::INFINITY],
            [1e9, 0.0, f32::NAN, -1.0]
        ];
        let mask = array![
            [true, true, true, true],
            [false, false, false, false],
            [true, true, true, true]
        ];
        let cfg = uncropped(10.0);
        let reference = depth_metrics(reference_pred.view(), reference_gt.view(), None, &cfg);
        let masked = depth_metrics(pred.view(), gt.view(), Some(mask.view()), &cfg);
        assert_eq!(masked.unwrap(), reference.unwrap());
    }

    #[test]
    fn predictions_are_clipped_to_the_depth_range() {
        // pred 20 -> 10 and NaN -> 1e-3 (BTS rule); against gt 10 - eps and 1e-3 + eps they are
        // nearly perfect, far from what the raw values would give.
        let gt = array![[9.999f32, 0.0011]];
        let pred = array![[20.0f32, f32::NAN]];
        let m = depth_metrics(pred.view(), gt.view(), None, &uncropped(10.0)).unwrap();
        assert!(m.abs_rel < 0.1, "{m}");
        assert_eq!(m.delta1, 1.0);
    }

    #[test]
    fn pixels_outside_the_crop_do_not_count() {
        let gt = Array2::from_elem((480, 640), 2.0f32);
        let mut pred = gt.clone();
        pred.row_mut(44).fill(100.0);
        pred.row_mut(471).fill(100.0);
        pred.column_mut(40).fill(100.0);
        pred.column_mut(601).fill(100.0);
        let m = depth_metrics(pred.view(), gt.view(), None, &DepthEvalConfig::nyu()).unwrap();
        assert_eq!(m.abs_rel, 0.0);
        pred[[45, 41]] = 4.0;
        let m = depth_metrics(pred.view(), gt.view(), None, &DepthEvalConfig::nyu()).unwrap();
        assert_relative_eq!(m.abs_rel, 1.0 / (426.0 * 560.0), epsilon = 1e-12);
    }

    #[test]
    fn shape_mismatch_is_a_typed_error() {
        let gt = Array2::from_elem((2, 3), 1.0f32);
        let pred = Array2::from_elem((3, 2), 1.0f32);
        let err = depth_metrics(pred.view(), gt.view(), None, &uncropped(10.0)).unwrap_err();
        assert_eq!(
            err,
            MetricsError::ShapeMismatch {
                what: "prediction",
                expected: (2, 3),
                found: (3, 2)
            }
        );
        let mask = Array2::from_elem((2, 2), true);
        let err = depth_metrics(gt.view(), gt.view(), Some(mask.view()), &uncropped(10.0));
        assert!(matches!(
            err,
            Err(MetricsError::ShapeMismatch { what: "mask", .. })
        ));
    }

    #[test]
    fn image_without_valid_pixels_is_a_typed_error() {
        let gt = array![[0.0f32, 20.0], [f32::NAN, 10.0]];
        let err = depth_metrics(gt.view(), gt.view(), None, &uncropped(10.0)).unwrap_err();
        assert!(matches!(
            err,
            MetricsError::NoValidPixels {
                height: 2,
                width: 2,
                ..
            }
        ));
    }

    #[test]
    fn invalid_depth_range_is_a_typed_error() {
        let gt = array![[1.0f32]];
        let mut cfg = uncropped(10.0);
        cfg.min_depth = 0.0;
        assert!(matches!(
            depth_metrics(gt.view(), gt.view(), None, &cfg),
            Err(MetricsError::InvalidConfig {
                field: "min_depth",
                ..
            })
        ));
        cfg.min_depth = 20.0;
        assert!(matches!(
            depth_metrics(gt.view(), gt.view(), None, &cfg),
            Err(MetricsError::InvalidConfig {
                field: "max_depth",
                ..
            })
        ));
    }

    #[test]
    fn markdown_row_has_one_cell_per_header_column() {
        let header = DepthMetrics::markdown_header();
        let row = DepthMetrics::from_array([0.1, 0.2, 0.3, 0.4, 0.5, 12.3456, 0.9, 0.95, 0.99])
            .markdown_row();
        assert_eq!(
            row,
            "| 0.1000 | 0.2000 | 0.3000 | 0.4000 | 0.5000 | 12.35 | 0.9000 | 0.9500 | 0.9900 |"
        );
        for line in header.lines() {
            assert_eq!(line.matches('|').count(), row.matches('|').count());
        }
    }

    #[test]
    fn config_and_metrics_round_trip_through_serde() {
        let cfg = DepthEvalConfig::kitti().with_alignment(Alignment::ScaleShiftDisparity);
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<DepthEvalConfig>(&json).unwrap(), cfg);
        let m = DepthMetrics::from_array([0.1, 0.2, 0.3, 0.4, 0.5, 6.0, 0.7, 0.8, 0.9]);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"abs_rel\":0.1"), "{json}");
        assert_eq!(serde_json::from_str::<DepthMetrics>(&json).unwrap(), m);
    }
}
