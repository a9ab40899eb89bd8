//! The pictures of a run's report (`docs/training.md`): a loss curve and a contact sheet of
//! predictions (input | prediction | ground truth | error), coloured with glassbox-data's
//! `colormap` module so every depth picture of the project looks alike.
//!
//! The loss curve is drawn with the `image` crate alone (no fonts are assumed on the machine):
//! grey grid lines at every power of ten of the loss (log axis), the raw loss in light blue and a
//! 20-step moving average in dark blue; the numbers themselves are in `metrics.jsonl`.

use std::path::Path;

use glassbox_data::colormap::{colorize_depth, rgb_image, tile, turbo};
use glassbox_metrics::median;
use image::{Rgb, RgbImage};
use ndarray::{Array2, ArrayView2, ArrayView3};

/// Draws `losses` (step, loss) as a PNG of `width` x `height` pixels on a log axis.
pub fn loss_curve(losses: &[(usize, f64)], width: u32, height: u32) -> RgbImage {
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let points: Vec<(usize, f64)> = losses
        .iter()
        .copied()
        .filter(|(_, l)| l.is_finite() && *l > 0.0)
        .collect();
    if points.len() < 2 {
        return img;
    }
    let margin = 10.0;
    let (w, h) = (width as f64 - 2.0 * margin, height as f64 - 2.0 * margin);
    let (s0, s1) = (points[0].0 as f64, points[points.len() - 1].0 as f64);
    let logs: Vec<f64> = points.iter().map(|p| p.1.log10()).collect();
    let lo = logs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let x_of = |s: f64| margin + (s - s0) / (s1 - s0).max(1.0) * w;
    let y_of = |l: f64| margin + (hi - l) / (hi - lo) * h;
    for decade in (lo.floor() as i32)..=(hi.ceil() as i32) {
        let y = y_of(decade as f64);
        if (margin..=margin + h).contains(&y) {
            for x in margin as u32..(margin + w) as u32 {
                img.put_pixel(x, y as u32, Rgb([200, 200, 200]));
            }
        }
    }
    let axis = Rgb([0, 0, 0]);
    for x in margin as u32..=(margin + w) as u32 {
        img.put_pixel(x, (margin + h) as u32, axis);
    }
    for y in margin as u32..=(margin + h) as u32 {
        img.put_pixel(margin as u32, y, axis);
    }
    let polyline = |img: &mut RgbImage, ys: &[f64], colour: Rgb<u8>| {
        for i in 1..points.len() {
            let (x0, y0) = (x_of(points[i - 1].0 as f64), y_of(ys[i - 1]));
            let (x1, y1) = (x_of(points[i].0 as f64), y_of(ys[i]));
            let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
            for k in 0..=n {
                let t = k as f64 / n as f64;
                let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
                if x >= 0.0 && y >= 0.0 && x < width as f64 && y < height as f64 {
                    img.put_pixel(x as u32, y as u32, colour);
                }
            }
        }
    };
    polyline(&mut img, &logs, Rgb([150, 190, 240]));
    let smooth: Vec<f64> = (0..logs.len())
        .map(|i| {
            let from = i.saturating_sub(19);
            logs[from..=i].iter().sum::<f64>() / (i + 1 - from) as f64
        })
        .collect();
    polyline(&mut img, &smooth, Rgb([20, 60, 160]));
    img
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
    fn a_falling_loss_is_drawn_from_top_left_to_bottom_right() {
        let losses: Vec<(usize, f64)> = (0..100).map(|s| (s, 1.0 / (1.0 + s as f64))).collect();
        let img = loss_curve(&losses, 200, 100);
        let dark = |x: u32| {
            (0..100).find(|&y| img.get_pixel(x, y).0[2] > 200 && img.get_pixel(x, y).0[0] < 200)
        };
        let (first, last) = (dark(12).unwrap(), dark(185).unwrap());
        assert!(
            first < last,
            "curve starts at row {first}, ends at row {last}"
        );
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
