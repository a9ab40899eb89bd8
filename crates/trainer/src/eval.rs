//! Evaluation (`docs/metrics.md`) with glassbox-metrics. A depth model predicts relative
//! disparity, so every depth table has two aligned rows, median scaling of `1 / disparity` and
//! least-squares scale + shift in disparity, plus the trivial baseline (a constant prediction,
//! which after median scaling is the ground-truth median everywhere). A segmentation model is
//! scored by pixel accuracy, per-class IoU and mIoU over the whole split (one confusion matrix,
//! the ignore label excluded), against the majority-class baseline.
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
    Alignment, DepthAccumulator, DepthEvalConfig, DepthMetrics, IGNORE_LABEL, MetricsError,
    SegmentationAccumulator, SegmentationMetrics, depth_metrics,
};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::tensor::{TensorBatch, image_tensor, to_array2, to_class_map};

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
    #[error(
        "validation image {name} has no labels, so a segmentation model cannot be scored on it"
    )]
    NoLabels { name: String },
}

/// The result of one evaluation, depth or segmentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "lowercase")]
pub enum EvalReport {
    Depth(DepthReport),
    Segmentation(SegmentationReport),
}

impl EvalReport {
    /// A markdown table of the scores and their baseline.
    pub fn markdown(&self) -> String {
        match self {
            EvalReport::Depth(r) => r.markdown(),
            EvalReport::Segmentation(r) => r.markdown(),
        }
    }

    /// Images scored.
    pub fn images(&self) -> usize {
        match self {
            EvalReport::Depth(r) => r.images,
            EvalReport::Segmentation(r) => r.images,
        }
    }

    /// The depth scores, for callers that only handle depth runs.
    pub fn depth(&self) -> Option<&DepthReport> {
        match self {
            EvalReport::Depth(r) => Some(r),
            EvalReport::Segmentation(_) => None,
        }
    }

    /// The segmentation scores.
    pub fn segmentation(&self) -> Option<&SegmentationReport> {
        match self {
            EvalReport::Segmentation(r) => Some(r),
            EvalReport::Depth(_) => None,
        }
    }

    /// The one number a run is judged by (median-scaled AbsRel, lower is better; mIoU, higher
    /// is better) with its name, e.g. to pick the best checkpoint.
    pub fn headline(&self) -> Headline {
        match self {
            EvalReport::Depth(r) => Headline {
                name: "AbsRel",
                value: r.median.abs_rel,
                higher_is_better: false,
            },
            EvalReport::Segmentation(r) => Headline {
                name: "mIoU",
                value: r.metrics.miou,
                higher_is_better: true,
            },
        }
    }

    /// The fields of an `eval.jsonl` line (without step and time).
    pub fn log_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let value = match self {
            EvalReport::Depth(r) => serde_json::json!({
                "abs_rel": r.median.abs_rel,
                "delta1": r.median.delta1,
                "abs_rel_scale_shift": r.scale_shift.abs_rel,
                "delta1_scale_shift": r.scale_shift.delta1,
                "abs_rel_baseline": r.baseline.abs_rel,
                "images": r.images,
            }),
            EvalReport::Segmentation(r) => serde_json::json!({
                "miou": r.metrics.miou,
                "pixel_accuracy": r.metrics.pixel_accuracy,
                "miou_baseline": r.baseline.miou,
                "pixel_accuracy_baseline": r.baseline.pixel_accuracy,
                "iou": r.metrics.iou,
                "images": r.images,
            }),
        };
        match value {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }

    /// One line for the run's log.
    pub fn summary(&self) -> String {
        match self {
            EvalReport::Depth(r) => format!(
                "validation AbsRel {:.4} (median-scaled), {:.4} (scale+shift), constant \
                 baseline {:.4}",
                r.median.abs_rel, r.scale_shift.abs_rel, r.baseline.abs_rel
            ),
            EvalReport::Segmentation(r) => format!(
                "validation mIoU {:.4}, pixel accuracy {:.4}; majority-class baseline mIoU \
                 {:.4}, pixel accuracy {:.4}",
                r.metrics.miou,
                r.metrics.pixel_accuracy,
                r.baseline.miou,
                r.baseline.pixel_accuracy
            ),
        }
    }
}

/// A run's headline metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Headline {
    pub name: &'static str,
    pub value: f64,
    pub higher_is_better: bool,
}

impl Headline {
    /// Whether this value beats `best` (a missing best is always beaten).
    pub fn beats(&self, best: Option<f64>) -> bool {
        match best {
            None => true,
            Some(b) if self.higher_is_better => self.value > b,
            Some(b) => self.value < b,
        }
    }
}

/// Segmentation scores of one evaluation, with the majority-class baseline on the same pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentationReport {
    pub metrics: SegmentationMetrics,
    /// A constant prediction of the most frequent ground-truth class.
    pub baseline: SegmentationMetrics,
    /// Class names, indexed by id (for the per-class table).
    pub class_names: Vec<String>,
    /// Images scored.
    pub images: usize,
}

impl SegmentationReport {
    /// The score table (model and baseline) and the per-class IoU table.
    pub fn markdown(&self) -> String {
        let header = SegmentationMetrics::markdown_header();
        let mut lines = header.lines();
        let titles = lines.next().unwrap_or_default();
        let rule = lines.next().unwrap_or_default();
        let mut out = format!("| prediction {titles}\n| --- {rule}\n");
        for (label, m) in [
            ("model", &self.metrics),
            ("majority class everywhere", &self.baseline),
        ] {
            out.push_str(&format!("| {label} {}\n", m.markdown_row()));
        }
        out.push_str(&format!(
            "\n{} images; the ignore label ({IGNORE_LABEL}) is not counted; mIoU is the mean \
             over classes present in the ground truth or the prediction.\n\n\
             | class | IoU ↑ |\n| --- | ---: |\n",
            self.images
        ));
        for (c, iou) in self.metrics.iou.iter().enumerate() {
            let name = self.class_names.get(c).map_or("?", String::as_str);
            match iou {
                Some(v) => out.push_str(&format!("| {c} {name} | {v:.4} |\n")),
                None => out.push_str(&format!("| {c} {name} | absent |\n")),
            }
        }
        out
    }
}

/// The metrics of one depth evaluation: both alignments, the constant baseline, and what was
/// scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DepthReport {
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

impl DepthReport {
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

    fn finish(self) -> Result<DepthReport, EvalError> {
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
        Ok(DepthReport {
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

/// Class logits B x K x H x W of normalised images, in evaluation mode without gradients; an
/// error for a depth model.
pub fn predict_logits(model: &Dpt, images: &Tensor) -> Result<Tensor, EvalError> {
    match tch::no_grad(|| model.forward_t(images, false))? {
        glassbox_dpt::DptOutput::Segmentation(out) => Ok(out.logits),
        glassbox_dpt::DptOutput::Disparity(_) => Err(glassbox_dpt::DptError::WrongHead {
            have: "depth",
            wanted: "class logits",
        }
        .into()),
    }
}

/// Scores the model on every batch of an evaluation loader (training-size images, no crop):
/// depth with `protocol`'s depth range, or segmentation against the batches' labels with
/// `class_names` naming the classes in the table.
pub fn evaluate_loader(
    model: &Dpt,
    output: Option<&DisparityToDepth>,
    loader: &Loader,
    device: Device,
    protocol: DepthEvalConfig,
    class_names: &[String],
) -> Result<EvalReport, EvalError> {
    match &model.config().head {
        glassbox_dpt::HeadConfig::Depth {} => {
            evaluate_depth_loader(model, output, loader, device, protocol).map(EvalReport::Depth)
        }
        glassbox_dpt::HeadConfig::Segmentation(head) => {
            let classes = head.num_classes as usize;
            evaluate_segmentation_loader(model, loader, device, classes, class_names)
                .map(EvalReport::Segmentation)
        }
    }
}

fn evaluate_segmentation_loader(
    model: &Dpt,
    loader: &Loader,
    device: Device,
    num_classes: usize,
    class_names: &[String],
) -> Result<SegmentationReport, EvalError> {
    let mut acc = SegmentationAccumulator::new(num_classes, Some(i64::from(IGNORE_LABEL)));
    let mut images = 0;
    for batch in loader.eval_batches() {
        let batch = TensorBatch::new(&batch?, device);
        let labels = batch.labels.as_ref().ok_or_else(|| EvalError::NoLabels {
            name: batch.names.first().cloned().unwrap_or_default(),
        })?;
        let predicted = predict_logits(model, &batch.rgb)?.argmax(1, false);
        for i in 0..batch.len() {
            let t = i as i64;
            let (pred, gt) = (
                to_class_map(&predicted.get(t)),
                to_class_map(&labels.get(t)),
            );
            acc.update(pred.view(), gt.view())
                .map_err(|source| EvalError::Metrics {
                    name: batch.names[i].clone(),
                    source,
                })?;
            images += 1;
        }
    }
    let wrap = |source| EvalError::Metrics {
        name: "the validation split".into(),
        source,
    };
    Ok(SegmentationReport {
        metrics: acc.metrics().map_err(wrap)?,
        baseline: acc.majority_baseline().map_err(wrap)?,
        class_names: class_names.to_vec(),
        images,
    })
}

fn evaluate_depth_loader(
    model: &Dpt,
    output: Option<&DisparityToDepth>,
    loader: &Loader,
    device: Device,
    protocol: DepthEvalConfig,
) -> Result<DepthReport, EvalError> {
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

/// Class ids at the sample's full resolution: the image is resized as for
/// [`predict_full_resolution`], the class logits resized back (bilinear, half-pixel centres) and
/// the most likely class taken per pixel.
pub fn predict_classes_full_resolution(
    model: &Dpt,
    sample: &Sample,
    short_side: usize,
    device: Device,
) -> Result<Array2<i64>, EvalError> {
    let (h, w) = (sample.height(), sample.width());
    let logits = predict_logits(model, &model_input(model, sample, short_side, device))?;
    let logits = crate::tensor::to_array3(&logits.get(0));
    let full = resize_bilinear(logits.view(), (h, w));
    Ok(full.map_axis(Axis(0), |scores| {
        scores
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(c, _)| c as i64)
    }))
}

/// Scores a segmentation model on every labelled sample of `dataset` at the labels' full
/// resolution ([`predict_classes_full_resolution`]), against the majority-class baseline.
pub fn evaluate_segmentation_dataset(
    model: &Dpt,
    dataset: &dyn Dataset,
    short_side: usize,
    device: Device,
    class_names: &[String],
    quiet: bool,
) -> Result<SegmentationReport, EvalError> {
    let num_classes = match &model.config().head {
        glassbox_dpt::HeadConfig::Segmentation(head) => head.num_classes as usize,
        glassbox_dpt::HeadConfig::Depth {} => {
            return Err(glassbox_dpt::DptError::WrongHead {
                have: "depth",
                wanted: "class logits",
            }
            .into());
        }
    };
    let mut acc = SegmentationAccumulator::new(num_classes, Some(i64::from(IGNORE_LABEL)));
    let bar = progress_bar(dataset.len(), quiet);
    for i in 0..dataset.len() {
        let sample = dataset.get(i)?;
        let labels = sample.labels.as_ref().ok_or_else(|| EvalError::NoLabels {
            name: sample.name.clone(),
        })?;
        let predicted = predict_classes_full_resolution(model, &sample, short_side, device)?;
        acc.update(predicted.view(), labels.view())
            .map_err(|source| EvalError::Metrics {
                name: sample.name.clone(),
                source,
            })?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let wrap = |source| EvalError::Metrics {
        name: "the dataset".into(),
        source,
    };
    Ok(SegmentationReport {
        metrics: acc.metrics().map_err(wrap)?,
        baseline: acc.majority_baseline().map_err(wrap)?,
        class_names: class_names.to_vec(),
        images: dataset.len(),
    })
}

fn progress_bar(len: usize, quiet: bool) -> ProgressBar {
    if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len as u64).with_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} images [{elapsed_precise}<{eta_precise}]",
            )
            .expect("a valid template"),
        )
    }
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
) -> Result<DepthReport, EvalError> {
    let mut rows = Rows::new(protocol);
    let bar = progress_bar(dataset.len(), quiet);
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
