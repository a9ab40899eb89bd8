//! Evaluation of a depth model (DESIGN.md section 8) with glassbox-metrics: the model predicts
//! relative disparity, so every table has two aligned rows, median scaling of `1 / disparity` and
//! least-squares scale + shift in disparity, plus the trivial baseline (a constant prediction,
//! which after median scaling is the ground-truth median everywhere).
//!
//! [`evaluate_set`] scores a training-size [`TensorSet`] (the validation split during training);
//! [`evaluate_files`] scores real benchmark images at their full ground-truth resolution: the
//! input is resized so its short side is the model's training size (sides rounded to the patch
//! size), the prediction is resized back bilinearly, then the benchmark's crop and cap apply.

use glassbox_data::{Dataset, FileDataset, Sample};
use glassbox_losses::DisparityToDepth;
use glassbox_metrics::{
    Alignment, DepthAccumulator, DepthEvalConfig, DepthMetrics, MetricsError, depth_metrics,
};
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::TensorSet;
use crate::model::Dpt;

/// Anything that stops an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("image {name}: {source}")]
    Metrics {
        name: String,
        #[source]
        source: MetricsError,
    },
    #[error(transparent)]
    Data(#[from] glassbox_data::DataError),
    #[error("no image had valid ground truth ({skipped} skipped)")]
    Nothing { skipped: usize },
}

/// The metrics of one evaluation: both alignments, the constant baseline, and what was scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Median-scaled depth (the headline numbers).
    pub median: DepthMetrics,
    /// Least-squares scale and shift in disparity.
    pub scale_shift: DepthMetrics,
    /// A constant prediction, median-scaled.
    pub baseline: DepthMetrics,
    /// Images scored.
    pub images: usize,
    /// Images skipped because no pixel was valid.
    pub skipped: usize,
    /// The protocol (crop, depth range); alignment is per row.
    pub protocol: DepthEvalConfig,
}

impl EvalReport {
    /// A markdown table with one row per alignment and the baseline.
    pub fn markdown(&self) -> String {
        let header = DepthMetrics::markdown_header();
        let mut lines = header.lines();
        let titles = lines.next().unwrap_or_default();
        let rule = lines.next().unwrap_or_default();
        let mut out = format!("| prediction {titles}\n| --- {rule}\n");
        for (label, m) in [
            ("model, median-scaled", &self.median),
            ("model, scale+shift (disparity)", &self.scale_shift),
            ("constant (per-image median)", &self.baseline),
        ] {
            out.push_str(&format!("| {label} {}\n", m.markdown_row()));
        }
        out.push_str(&format!(
            "\n{} images ({} without valid depth skipped), crop {}, depth in ({}, {}) m.\n",
            self.images,
            self.skipped,
            self.protocol.crop,
            self.protocol.min_depth,
            self.protocol.max_depth
        ));
        out
    }
}

/// Streaming sums of the three rows.
struct Rows {
    protocol: DepthEvalConfig,
    median: DepthAccumulator,
    scale_shift: DepthAccumulator,
    baseline: DepthAccumulator,
    skipped: usize,
}

impl Rows {
    fn new(protocol: DepthEvalConfig) -> Self {
        Self {
            protocol,
            median: DepthAccumulator::new(),
            scale_shift: DepthAccumulator::new(),
            baseline: DepthAccumulator::new(),
            skipped: 0,
        }
    }

    /// Scores one disparity prediction against metric depth.
    fn push(
        &mut self,
        name: &str,
        disparity: ArrayView2<f32>,
        gt: ArrayView2<f32>,
        mask: Option<ArrayView2<bool>>,
    ) -> Result<(), EvalError> {
        let depth = disparity.mapv(|d| 1.0 / d.max(1e-6));
        let constant = Array2::<f32>::ones(gt.dim());
        let score = |pred: ArrayView2<f32>, alignment| {
            depth_metrics(pred, gt, mask, &self.protocol.with_alignment(alignment))
        };
        let median = match score(depth.view(), Alignment::Median) {
            Err(MetricsError::NoValidPixels { .. }) => {
                self.skipped += 1;
                return Ok(());
            }
            other => other,
        };
        let wrap = |source| EvalError::Metrics {
            name: name.to_string(),
            source,
        };
        let median = median.map_err(wrap)?;
        // A constant prediction has no affine fit; its best fit is then a constant, scored as
        // the median-scaled prediction (which is constant too).
        let scale_shift = match score(disparity, Alignment::ScaleShiftDisparity) {
            Err(MetricsError::DegenerateAlignment { .. }) => median,
            other => other.map_err(wrap)?,
        };
        let baseline = score(constant.view(), Alignment::Median).map_err(wrap)?;
        self.median.push(&median);
        self.scale_shift.push(&scale_shift);
        self.baseline.push(&baseline);
        Ok(())
    }

    fn finish(self) -> Result<EvalReport, EvalError> {
        let nothing = EvalError::Nothing {
            skipped: self.skipped,
        };
        let images = self.median.count() as usize;
        let (Ok(median), Ok(scale_shift), Ok(baseline)) = (
            self.median.mean(),
            self.scale_shift.mean(),
            self.baseline.mean(),
        ) else {
            return Err(nothing);
        };
        Ok(EvalReport {
            median,
            scale_shift,
            baseline,
            images,
            skipped: self.skipped,
            protocol: self.protocol,
        })
    }
}

/// Disparity B x H x W of normalised images B x 3 x H x W, in evaluation mode without gradients.
/// `output` is the run's disparity map for SILog-trained models (`max(scale * x + shift, min)`,
/// whose inverse is the depth the loss saw); `None` keeps the raw output (MiDaS runs).
pub fn predict(
    model: &Dpt,
    output: Option<&DisparityToDepth>,
    images: &Tensor,
) -> Result<Tensor, EvalError> {
    let raw = tch::no_grad(|| model.depth_t(images, false))?;
    Ok(match output {
        Some(map) => (raw * map.scale + map.shift).clamp_min(map.min_disparity),
        None => raw,
    })
}

fn to_array(t: &Tensor) -> Array2<f32> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let (h, w) = (t.size()[0] as usize, t.size()[1] as usize);
    let v = Vec::<f32>::try_from(&t.view([-1])).expect("a float tensor converts to Vec<f32>");
    Array2::from_shape_vec((h, w), v).expect("the shape matches the element count")
}

/// Scores the model on a training-size set (no crop; `protocol` gives the depth range).
pub fn evaluate_set(
    model: &Dpt,
    output: Option<&DisparityToDepth>,
    set: &TensorSet,
    batch_size: usize,
    device: Device,
    protocol: DepthEvalConfig,
) -> Result<EvalReport, EvalError> {
    let mut rows = Rows::new(protocol);
    let mut start = 0;
    while start < set.len() {
        let batch = set.chunk(start, batch_size, device);
        let disparity = predict(model, output, &batch.rgb)?;
        for i in 0..disparity.size()[0] {
            let gt = to_array(&batch.depth.get(i));
            let mask = to_array(&batch.mask.get(i).to_kind(Kind::Float)).mapv(|m| m > 0.5);
            let name = &set.names[start + i as usize];
            rows.push(
                name,
                to_array(&disparity.get(i)).view(),
                gt.view(),
                Some(mask.view()),
            )?;
        }
        start += batch_size;
    }
    rows.finish()
}

/// The model input size for an H x W image: short side `short_side`, both sides multiples of
/// `patch` (at least one patch).
pub fn input_size(h: usize, w: usize, short_side: usize, patch: usize) -> (usize, usize) {
    let s = short_side as f64 / h.min(w) as f64;
    let round = |x: usize| (((x as f64 * s) / patch as f64).round() as usize).max(1) * patch;
    (round(h), round(w))
}

/// Disparity at the sample's full resolution: the image is resized to [`input_size`], predicted,
/// and the prediction resized back (bilinear, align_corners = false).
pub fn predict_full_resolution(
    model: &Dpt,
    output: Option<&DisparityToDepth>,
    sample: &Sample,
    short_side: usize,
    device: Device,
) -> Result<Array2<f32>, EvalError> {
    let (h, w) = (sample.height(), sample.width());
    let patch = model.config().encoder.patch_size as usize;
    let (ih, iw) = input_size(h, w, short_side, patch);
    let rgb = Tensor::from_slice(
        sample
            .rgb
            .as_standard_layout()
            .as_slice()
            .expect("standard layout"),
    )
    .view([1, 3, h as i64, w as i64])
    .to_device(device);
    let resized = rgb.upsample_bilinear2d([ih as i64, iw as i64], false, None, None);
    let disparity = predict(model, output, &resized)?;
    let back = disparity
        .unsqueeze(1)
        .upsample_bilinear2d([h as i64, w as i64], false, None, None)
        .squeeze_dim(1);
    Ok(to_array(&back.get(0)))
}

/// Scores the model on real images at their ground-truth resolution with `protocol`'s crop and
/// depth cap (e.g. [`DepthEvalConfig::nyu`], [`DepthEvalConfig::kitti`]).
pub fn evaluate_files(
    model: &Dpt,
    output: Option<&DisparityToDepth>,
    dataset: &FileDataset,
    short_side: usize,
    device: Device,
    protocol: DepthEvalConfig,
) -> Result<EvalReport, EvalError> {
    let mut rows = Rows::new(protocol);
    for i in 0..dataset.len() {
        let sample = dataset.get(i)?;
        let disparity = predict_full_resolution(model, output, &sample, short_side, device)?;
        rows.push(
            &sample.name,
            disparity.view(),
            sample.depth.view(),
            Some(sample.mask.view()),
        )?;
    }
    rows.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_size_keeps_the_aspect_on_the_patch_grid() {
        assert_eq!(input_size(480, 640, 128, 16), (128, 176));
        assert_eq!(input_size(375, 1242, 128, 16), (128, 416));
        assert_eq!(input_size(64, 64, 64, 16), (64, 64));
    }

    #[test]
    fn a_perfect_disparity_scores_zero_and_the_baseline_does_not() {
        let gt = Array2::from_shape_fn((8, 8), |(r, c)| 1.0 + (r * 8 + c) as f32 / 10.0);
        let disparity = gt.mapv(|d| 2.0 / d);
        let mut rows = Rows::new(DepthEvalConfig::nyu().with_crop(glassbox_metrics::Crop::None));
        rows.push("x", disparity.view(), gt.view(), None).unwrap();
        let report = rows.finish().unwrap();
        assert!(report.median.abs_rel < 1e-5, "{:?}", report.median);
        assert!(
            report.scale_shift.abs_rel < 1e-4,
            "{:?}",
            report.scale_shift
        );
        assert!(report.baseline.abs_rel > 0.1);
        assert_eq!(report.images, 1);
    }
}
