//! Evaluation of a depth model (`docs/metrics.md`) with glassbox-metrics: the model predicts
//! relative disparity, so every table has two aligned rows, median scaling of `1 / disparity` and
//! least-squares scale + shift in disparity, plus the trivial baseline (a constant prediction,
//! which after median scaling is the ground-truth median everywhere).
//!
//! [`evaluate_loader`] scores the validation loader's training-size batches during training;
//! [`evaluate_dataset`] scores benchmark images at their full ground-truth resolution: the input
//! is resized with glassbox-data's one resize function so its short side is the model's training
//! size (sides on the patch grid), the prediction is resized back bilinearly, then the
//! benchmark's crop and cap apply.

use glassbox_data::augment::{fit_size, resize_bilinear, resize_sample};
use glassbox_data::{Dataset, Loader, Sample};
use glassbox_dpt::Dpt;
use glassbox_losses::DisparityToDepth;
use glassbox_metrics::{
    Alignment, DepthAccumulator, DepthEvalConfig, DepthMetrics, MetricsError, depth_metrics,
};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::tensor::{TensorBatch, image_tensor, to_array2};

/// Anything that stops an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] glassbox_dpt::DptError),
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
    let raw = tch::no_grad(|| model.disparity_t(images, false))?;
    Ok(match output {
        Some(map) => (raw * map.scale + map.shift).clamp_min(map.min_disparity),
        None => raw,
    })
}

/// Scores the model on every batch of an evaluation loader (training-size images, no crop;
/// `protocol` gives the depth range).
pub fn evaluate_loader(
    model: &Dpt,
    output: Option<&DisparityToDepth>,
    loader: &Loader,
    device: Device,
    protocol: DepthEvalConfig,
) -> Result<EvalReport, EvalError> {
    let mut rows = Rows::new(protocol);
    for batch in loader.eval_batches() {
        let batch = TensorBatch::new(&batch?, device);
        let disparity = predict(model, output, &batch.rgb)?;
        for i in 0..batch.len() {
            let t = i as i64;
            let mask = to_array2(&batch.mask.get(t)).mapv(|m| m > 0.5);
            rows.push(
                &batch.names[i],
                to_array2(&disparity.get(t)).view(),
                to_array2(&batch.depth.get(t)).view(),
                Some(mask.view()),
            )?;
        }
    }
    rows.finish()
}

/// The network input for a full-resolution sample: its image resized with the training resize to
/// `fit_size(short_side)` on the model's patch grid, as a 1 x 3 x H x W tensor on `device`.
pub fn model_input(model: &Dpt, sample: &Sample, short_side: usize, device: Device) -> Tensor {
    let (h, w) = (sample.height(), sample.width());
    let patch = model.config().encoder.patch_size as usize;
    let input = resize_sample(sample, fit_size(h, w, short_side, patch));
    image_tensor(input.rgb.view(), device)
}

/// Disparity at the sample's full resolution: the image is resized with the training resize to
/// `fit_size(short_side)` on the patch grid, predicted, and the prediction resized back
/// (bilinear, half-pixel centres).
pub fn predict_full_resolution(
    model: &Dpt,
    output: Option<&DisparityToDepth>,
    sample: &Sample,
    short_side: usize,
    device: Device,
) -> Result<Array2<f32>, EvalError> {
    let (h, w) = (sample.height(), sample.width());
    let disparity = predict(
        model,
        output,
        &model_input(model, sample, short_side, device),
    )?;
    let small = to_array2(&disparity.get(0)).insert_axis(Axis(0));
    Ok(resize_bilinear(small.view(), (h, w)).index_axis_move(Axis(0), 0))
}

/// Scores the model on every sample of `dataset` at its ground-truth resolution with
/// `protocol`'s crop and depth cap (e.g. [`DepthEvalConfig::nyu`], [`DepthEvalConfig::kitti`]),
/// with a progress bar unless `quiet`.
pub fn evaluate_dataset(
    model: &Dpt,
    output: Option<&DisparityToDepth>,
    dataset: &dyn Dataset,
    short_side: usize,
    device: Device,
    protocol: DepthEvalConfig,
    quiet: bool,
) -> Result<EvalReport, EvalError> {
    let mut rows = Rows::new(protocol);
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(dataset.len() as u64).with_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} images [{elapsed_precise}<{eta_precise}]",
            )
            .expect("a valid template"),
        )
    };
    for i in 0..dataset.len() {
        let sample = dataset.get(i)?;
        let disparity = predict_full_resolution(model, output, &sample, short_side, device)?;
        rows.push(
            &sample.name,
            disparity.view(),
            sample.depth.view(),
            Some(sample.mask.view()),
        )?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    rows.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

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
