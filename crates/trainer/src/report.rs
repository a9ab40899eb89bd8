//! The pictures of a run's report (`docs/training.md`): the training curves (loss and validation,
//! labelled panels drawn by glassbox-spectral's figure engine with its embedded font) and a
//! contact sheet of predictions (input | prediction | ground truth | error), coloured with
//! glassbox-data's `colormap` module so every depth picture of the project looks alike.

use std::path::Path;

use glassbox_spectral::SpectralError;
use glassbox_spectral::plot::{Curve, CurvePanel, CurveStyle, curve_panels};

use crate::train::logs::read_series;

use glassbox_data::colormap::{colorize_depth, rgb_image, tile, turbo};
use glassbox_metrics::median;
use image::{Rgb, RgbImage};
use ndarray::{Array2, ArrayView2, ArrayView3};

/// Steps of the trailing moving average drawn over the raw training loss.
pub const LOSS_SMOOTHING: usize = 20;

/// The training curves of a run as `<stem>.svg` and `<stem>.png` (the run folder's
/// `loss_curve.*`), three labelled panels: the training loss (raw and its 20-step moving average,
/// log scale), the validation AbsRel (median-scaled and scale+shift, with the constant
/// baseline) and the validation δ1, each against the optimiser step. `evals` are the `eval.jsonl`
/// series by name; a panel without points is left empty rather than dropped, so the layout is the
/// same for every run.
pub fn training_curves(
    losses: &[(usize, f64)],
    evals: &EvalSeries,
    stem: &Path,
) -> Result<Vec<std::path::PathBuf>, SpectralError> {
    let points = |series: &[(usize, f64)]| -> Vec<(f64, f64)> {
        series.iter().map(|&(s, v)| (s as f64, v)).collect()
    };
    let smooth: Vec<(f64, f64)> = (0..losses.len())
        .map(|i| {
            let from = i.saturating_sub(LOSS_SMOOTHING - 1);
            let window = &losses[from..=i];
            let mean = window.iter().map(|(_, l)| l).sum::<f64>() / window.len() as f64;
            (losses[i].0 as f64, mean)
        })
        .collect();
    // Every panel spans the whole run, and the constant baseline (a property of the validation
    // images, the same at every step) is drawn across it.
    let x_range = match (losses.first(), losses.last()) {
        (Some(a), Some(b)) => Some((a.0 as f64, b.0 as f64)),
        _ => None,
    };
    let baseline: Vec<(f64, f64)> = match (x_range, evals.abs_rel_baseline.last()) {
        (Some((lo, hi)), Some(&(_, b))) => vec![(lo, b), (hi, b)],
        _ => points(&evals.abs_rel_baseline),
    };
    let curve = |label: &str, style, points| Curve {
        label: label.to_string(),
        style,
        points,
    };
    // One validation metric, median-scaled and scale+shift, with an optional reference line.
    let validation =
        |title: &str, y_desc: &str, series: [&[(usize, f64)]; 2], reference| CurvePanel {
            title: title.into(),
            x_desc: "optimiser step".into(),
            y_desc: y_desc.into(),
            log_y: false,
            x_range,
            curves: [
                curve("median-scaled", CurveStyle::Main(1), points(series[0])),
                curve(
                    "scale+shift (disparity)",
                    CurveStyle::Main(2),
                    points(series[1]),
                ),
            ]
            .into_iter()
            .chain(reference)
            .collect(),
        };
    let panels = [
        CurvePanel {
            title: "training loss".into(),
            x_desc: "optimiser step".into(),
            y_desc: "loss".into(),
            log_y: true,
            x_range,
            curves: vec![
                curve("loss per step", CurveStyle::Faint(0), points(losses)),
                curve(
                    &format!("{LOSS_SMOOTHING}-step moving average"),
                    CurveStyle::Main(0),
                    smooth,
                ),
            ],
        },
        validation(
            "validation AbsRel (lower is better)",
            "AbsRel",
            [&evals.abs_rel, &evals.abs_rel_scale_shift],
            Some(curve(
                "constant baseline (per-image median)",
                CurveStyle::Reference,
                baseline,
            )),
        ),
        validation(
            "validation δ1 (higher is better)",
            "δ1 (share of pixels within 1.25x)",
            [&evals.delta1, &evals.delta1_scale_shift],
            None,
        ),
    ];
    curve_panels(&panels, 3, stem)
}

/// The validation series of a run's `eval.jsonl`, as (step, value) pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalSeries {
    pub abs_rel: Vec<(usize, f64)>,
    pub abs_rel_scale_shift: Vec<(usize, f64)>,
    pub abs_rel_baseline: Vec<(usize, f64)>,
    pub delta1: Vec<(usize, f64)>,
    pub delta1_scale_shift: Vec<(usize, f64)>,
}

impl EvalSeries {
    /// Reads `eval.jsonl` (missing file: no points).
    pub fn read(path: &Path) -> Self {
        let series = |key| read_series(path, key);
        Self {
            abs_rel: series("abs_rel"),
            abs_rel_scale_shift: series("abs_rel_scale_shift"),
            abs_rel_baseline: series("abs_rel_baseline"),
            delta1: series("delta1"),
            delta1_scale_shift: series("delta1_scale_shift"),
        }
    }
}

/// One contact-sheet row: the input, the median-scaled prediction and the ground truth (same
/// depth range), and the relative error |pred - gt| / gt on turbo from 0 (blue) to 0.5 (red).
pub fn contact_row(
    rgb: ArrayView3<f32>,
    disparity: ArrayView2<f32>,
    gt: ArrayView2<f32>,
    mask: ArrayView2<bool>,
) -> Vec<RgbImage> {
    let depth = disparity.mapv(|d| 1.0 / d.max(1e-6));
    let (mut preds, mut gts): (Vec<f64>, Vec<f64>) = depth
        .iter()
        .zip(gt.iter())
        .zip(mask.iter())
        .filter(|((_, g), m)| **m && **g > 0.0)
        .map(|((p, g), _)| (f64::from(*p), f64::from(*g)))
        .unzip();
    let (lo, hi) = gts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &g| {
            (lo.min(g), hi.max(g))
        });
    let range = (hi > lo).then_some((lo as f32, hi as f32));
    let scale = match (median(&mut preds), median(&mut gts)) {
        (Some(p), Some(g)) if p > 0.0 => (g / p) as f32,
        _ => 1.0,
    };
    let aligned = depth.mapv(|d| d * scale);
    let (h, w) = gt.dim();
    let error = Array2::from_shape_fn((h, w), |(y, x)| {
        if mask[[y, x]] && gt[[y, x]] > 0.0 {
            (aligned[[y, x]] - gt[[y, x]]).abs() / gt[[y, x]]
        } else {
            f32::NAN
        }
    });
    let error_img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let e = error[[y as usize, x as usize]];
        if e.is_finite() {
            Rgb(turbo(e / 0.5))
        } else {
            Rgb([0, 0, 0])
        }
    });
    vec![
        rgb_image(rgb),
        colorize_depth(aligned.view(), None, range),
        colorize_depth(gt, Some(mask), range),
        error_img,
    ]
}

/// Tiles contact rows into one sheet and writes it as PNG.
pub fn write_contact_sheet(
    path: &Path,
    rows: &[Vec<RgbImage>],
) -> Result<(), glassbox_data::DataError> {
    glassbox_data::io::write_png(path, &tile(rows, 2))
}

/// Blends a heat map (values in [0, 1], any size: resized nearest) over an image, turbo coloured.
pub fn overlay(base: &RgbImage, heat: ArrayView2<f32>, alpha: f32) -> RgbImage {
    let (hh, hw) = heat.dim();
    let (w, h) = base.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let (hy, hx) = (
            (y as usize * hh / h as usize).min(hh - 1),
            (x as usize * hw / w as usize).min(hw - 1),
        );
        let c = turbo(heat[[hy, hx]]);
        let b = base.get_pixel(x, y).0;
        let mix = |i: usize| (alpha * c[i] as f32 + (1.0 - alpha) * b[i] as f32).round() as u8;
        Rgb([mix(0), mix(1), mix(2)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_curves_label_their_axes_and_series_in_svg_and_png() {
        let dir = tempfile::tempdir().unwrap();
        let losses: Vec<(usize, f64)> = (1..=100).map(|s| (s, 1.0 / s as f64)).collect();
        let evals = EvalSeries {
            abs_rel: vec![(50, 0.3), (100, 0.2)],
            abs_rel_scale_shift: vec![(50, 0.25), (100, 0.15)],
            abs_rel_baseline: vec![(50, 0.37), (100, 0.37)],
            delta1: vec![(50, 0.5), (100, 0.7)],
            delta1_scale_shift: vec![(50, 0.6), (100, 0.8)],
        };
        let stem = dir.path().join("loss_curve");
        let files = training_curves(&losses, &evals, &stem).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files.iter().all(|f| f.is_file()));
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        for text in [
            "optimiser step",
            "loss (log scale)",
            "AbsRel",
            "20-step moving average",
            "constant baseline (per-image median)",
            "validation δ1 (higher is better)",
        ] {
            assert!(svg.contains(text), "the SVG lacks {text:?}");
        }
        // A run that has not been validated yet still gets the figure.
        training_curves(&losses, &EvalSeries::default(), &stem).unwrap();
    }

    #[test]
    fn a_perfect_prediction_has_a_blue_error_panel() {
        let gt = Array2::from_shape_fn((4, 4), |(r, c)| 1.0 + (r + c) as f32);
        let disparity = gt.mapv(|d| 3.0 / d);
        let mask = Array2::from_elem((4, 4), true);
        let rgb = ndarray::Array3::<f32>::zeros((3, 4, 4));
        let row = contact_row(rgb.view(), disparity.view(), gt.view(), mask.view());
        assert_eq!(row.len(), 4);
        assert_eq!(row[3].get_pixel(1, 1).0, turbo(0.0));
    }
}
