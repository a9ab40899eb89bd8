//! Full-size NYU- and KITTI-like depth maps built in code (the crate reads no PNGs, so the real
//! frames in shared/data/real are left to the data crate): a scaled copy of the ground truth has
//! closed-form metrics, a blurred copy scores between perfect and scaled, and the protocol presets
//! (crop, cap, sparse LiDAR-like validity) are applied end to end.

use approx::assert_relative_eq;
use glassbox_metrics::{
    Alignment, Crop, DepthEvalConfig, DepthMetrics, depth_metrics, evaluate_depth_batch,
};
use ndarray::{Array2, ArrayView2};

/// An indoor view with NYU's intrinsics: a back wall at 5.5 m, a floor 1.2 m below and a ceiling
/// 1.4 m above the camera, a box 2.5 m away, and a Kinect-like shadow of missing depth (0).
fn nyu_like_scene() -> Array2<f32> {
    let (fy, cy) = (519.4696f32, 253.73617f32); // NYU fy = 519.46961, rounded to f32
    Array2::from_shape_fn((480, 640), |(r, c)| {
        let v = r as f32 - cy;
        let mut depth = 5.5f32;
        if v > 0.0 {
            depth = depth.min(1.2 * fy / v);
        } else if v < 0.0 {
            depth = depth.min(1.4 * fy / -v);
        }
        if (200..330).contains(&r) && (250..420).contains(&c) {
            depth = 2.5;
        }
        if (200..330).contains(&r) && (420..432).contains(&c) {
            depth = 0.0;
        }
        depth
    })
}

/// A road scene at KITTI's size and intrinsics: a ground plane 1.65 m below the camera capped by
/// far structure at 85 m (beyond the 80 m cap), with a sparse LiDAR-like pattern (about 1 pixel
/// in 5 valid, rows above the horizon empty).
fn kitti_like_scene() -> Array2<f32> {
    let (fy, cy) = (707.0493f32, 180.5066f32);
    Array2::from_shape_fn((375, 1242), |(r, c)| {
        let v = r as f32 - cy;
        let lidar_hit = (r * 7 + c * 3) % 5 == 0;
        if v <= 0.0 || !lidar_hit {
            return 0.0;
        }
        (1.65 * fy / v).min(85.0)
    })
}

/// 5x5 box blur that averages only valid (non-zero) neighbours, like a soft network output.
fn blur(depth: ArrayView2<f32>) -> Array2<f32> {
    let (h, w) = depth.dim();
    Array2::from_shape_fn((h, w), |(r, c)| {
        let (mut sum, mut n) = (0.0f32, 0.0f32);
        for rr in r.saturating_sub(2)..(r + 3).min(h) {
            for cc in c.saturating_sub(2)..(c + 3).min(w) {
                if depth[[rr, cc]] > 0.0 {
                    sum += depth[[rr, cc]];
                    n += 1.0;
                }
            }
        }
        if n > 0.0 { sum / n } else { 0.0 }
    })
}

/// The ground-truth depths the protocol scores (inside the crop and the depth range).
fn scored_depths(gt: ArrayView2<f32>, cfg: &DepthEvalConfig) -> Vec<f64> {
    let window = cfg.crop.window(gt.nrows(), gt.ncols()).unwrap();
    gt.indexed_iter()
        .filter(|((r, c), _)| window.contains(*r, *c))
        .map(|(_, &d)| f64::from(d))
        .filter(|&d| d > cfg.min_depth && d < cfg.max_depth)
        .collect()
}

/// Mean of `f(gt)` over the scored pixels.
fn mean_over_valid(gt: ArrayView2<f32>, cfg: &DepthEvalConfig, f: impl Fn(f64) -> f64) -> f64 {
    let depths = scored_depths(gt, cfg);
    depths.iter().map(|&d| f(d)).sum::<f64>() / depths.len() as f64
}

/// pred = k * gt (k > 1, no clipping) gives, per pixel, |gt - pred| / gt = k - 1,
/// (gt - pred)^2 / gt = (k - 1)^2 gt, (gt - pred)^2 = (k - 1)^2 gt^2, e = ln k (constant, so SILog
/// = 0) and ratio k; hence the closed forms below.
fn scaled_copy_metrics(gt: ArrayView2<f32>, cfg: &DepthEvalConfig, k: f64) -> DepthMetrics {
    let within = |t: f64| if k < t { 1.0 } else { 0.0 };
    DepthMetrics {
        abs_rel: k - 1.0,
        sq_rel: (k - 1.0).powi(2) * mean_over_valid(gt, cfg, |d| d),
        rmse: (k - 1.0) * mean_over_valid(gt, cfg, |d| d * d).sqrt(),
        rmse_log: k.ln(),
        log10: k.log10(),
        silog: 0.0,
        delta1: within(1.25),
        delta2: within(1.25f64.powi(2)),
        delta3: within(1.25f64.powi(3)),
    }
}

fn assert_metrics_close(actual: &DepthMetrics, expected: &DepthMetrics) {
    for (a, e) in actual.to_array().iter().zip(expected.to_array()) {
        assert_relative_eq!(*a, e, epsilon = 1e-3, max_relative = 1e-5);
    }
}

#[test]
fn nyu_scaled_copy_matches_closed_form_metrics() {
    let gt = nyu_like_scene();
    let cfg = DepthEvalConfig::nyu();
    for k in [1.1f32, 1.3] {
        let pred = gt.mapv(|d| d * k);
        let m = depth_metrics(pred.view(), gt.view(), None, &cfg).unwrap();
        assert_metrics_close(&m, &scaled_copy_metrics(gt.view(), &cfg, f64::from(k)));
    }
}

#[test]
fn kitti_sparse_scaled_copy_matches_closed_form_metrics_under_the_cap_and_garg_crop() {
    let gt = kitti_like_scene();
    let cfg = DepthEvalConfig::kitti();
    // 85 m pixels are beyond the 80 m cap and must be ignored; the farthest scored ground-plane
    // pixel (row 196: 1.65 * fy / 15.49 = 75.3 m) times 1.05 stays below the cap, so the closed
    // form (which assumes no clipping) applies.
    let farthest = scored_depths(gt.view(), &cfg)
        .into_iter()
        .fold(0.0, f64::max);
    assert!(farthest > 70.0 && farthest * 1.05 < 80.0, "{farthest}");
    assert!(gt.iter().any(|&d| d == 85.0));
    let pred = gt.mapv(|d| d * 1.05);
    let m = depth_metrics(pred.view(), gt.view(), None, &cfg).unwrap();
    assert_metrics_close(&m, &scaled_copy_metrics(gt.view(), &cfg, 1.05));
}

#[test]
fn blurred_copy_scores_between_perfect_and_scaled_and_silog_ignores_scale() {
    let gt = nyu_like_scene();
    let cfg = DepthEvalConfig::nyu();
    let blurred = blur(gt.view());
    let scaled_blur = blurred.mapv(|d| 1.3 * d);

    let m_blur = depth_metrics(blurred.view(), gt.view(), None, &cfg).unwrap();
    let m_scaled = depth_metrics(scaled_blur.view(), gt.view(), None, &cfg).unwrap();
    // Blur only errs at depth edges: small but non-zero, and far better than a 30% scale error.
    assert!(m_blur.abs_rel > 1e-4 && m_blur.abs_rel < 0.03, "{m_blur}");
    assert!(m_blur.delta1 > 0.97, "{m_blur}");
    assert!(m_scaled.abs_rel > 0.25, "{m_scaled}");
    // SILog is invariant to a global scale of the prediction.
    assert_relative_eq!(m_scaled.silog, m_blur.silog, max_relative = 1e-4);
    // Median alignment undoes the 1.3 exactly.
    let median = cfg.with_alignment(Alignment::Median);
    let aligned_blur = depth_metrics(blurred.view(), gt.view(), None, &median).unwrap();
    let aligned_scaled = depth_metrics(scaled_blur.view(), gt.view(), None, &median).unwrap();
    assert_metrics_close(&aligned_scaled, &aligned_blur);
}

#[test]
fn batch_evaluation_matches_image_by_image_and_names_the_failing_image() {
    let gt = nyu_like_scene();
    let blurred = blur(gt.view());
    let scaled = gt.mapv(|d| 1.1 * d);
    let cfg = DepthEvalConfig::nyu();
    let samples = [
        (blurred.view(), gt.view(), None),
        (scaled.view(), gt.view(), None),
    ];
    let batch = evaluate_depth_batch(&samples, &cfg).unwrap();
    for ((pred, gt, _), m) in samples.iter().zip(&batch) {
        assert_eq!(
            *m,
            depth_metrics(pred.view(), gt.view(), None, &cfg).unwrap()
        );
    }

    let empty = Array2::<f32>::zeros((480, 640));
    let small = Array2::<f32>::ones((4, 4));
    let failing = [
        (blurred.view(), gt.view(), None),
        (empty.view(), empty.view(), None),
        (small.view(), small.view(), None),
    ];
    match evaluate_depth_batch(&failing, &cfg).unwrap_err() {
        glassbox_metrics::MetricsError::InImage { index, source } => {
            assert_eq!(index, 1);
            assert!(matches!(
                *source,
                glassbox_metrics::MetricsError::NoValidPixels { .. }
            ));
        }
        other => panic!("expected InImage, got {other}"),
    }
}

#[test]
fn kb_crop_option_scores_only_the_benchmark_window() {
    let gt = kitti_like_scene();
    let mut pred = gt.mapv(|d| d * 1.05);
    // Garbage above the KB window (rows < 23) and in its side margins (cols < 13, >= 1229).
    pred.slice_mut(ndarray::s![..23, ..]).fill(1e4);
    pred.slice_mut(ndarray::s![.., ..13]).fill(1e4);
    pred.slice_mut(ndarray::s![.., 1229..]).fill(1e4);
    let cfg = DepthEvalConfig::kitti().with_crop(Crop::Kb);
    let m = depth_metrics(pred.view(), gt.view(), None, &cfg).unwrap();
    assert_metrics_close(&m, &scaled_copy_metrics(gt.view(), &cfg, 1.05));
}
