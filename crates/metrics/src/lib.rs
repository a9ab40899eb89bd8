//! Evaluation metrics for glassbox's dense predictions (`docs/metrics.md`), on `ndarray` views
//! so they run without libtorch.
//!
//! - Depth: AbsRel, SqRel, RMSE, RMSElog, log10, SILog and δ1..δ3 per image ([`depth_metrics`]),
//!   averaged over a dataset by a streaming [`DepthAccumulator`] or by the rayon-parallel
//!   [`evaluate_depth_batch`]. Protocols are [`DepthEvalConfig`] presets: [`DepthEvalConfig::nyu`]
//!   (1e-3..10 m, Eigen crop) and [`DepthEvalConfig::kitti`] (1e-3..80 m, Garg crop).
//! - Crops ([`Crop`], [`kb_crop`]) with the integer rounding of the BTS / AdaBins scripts.
//! - Alignment of relative predictions ([`Alignment`]): median scaling and least-squares
//!   scale + shift in depth or disparity space, fitted per image on the valid pixels.
//! - Segmentation: a confusion-matrix [`SegmentationAccumulator`] with an ignore index, giving
//!   pixel accuracy, per-class IoU (`None` for absent classes), mIoU and the majority-class
//!   baseline; [`IGNORE_LABEL`] is the one ignore label of every crate.
//!
//! Decisions where the task was silent:
//! - The dataset value is the mean of per-image metrics (as BTS / AdaBins / DPT report), so
//!   [`DepthAccumulator`] sums per-image metrics, not pixels.
//! - The Eigen crop is only defined for 480x640 images; other sizes are a
//!   [`MetricsError::CropSize`] error rather than a rescaled window.
//! - [`Crop::Kb`] as an eval option scores only the 352x1216 window of a full-size image; to score a
//!   prediction made on a KB-cropped input, cut the ground truth with [`kb_crop`] and use
//!   [`Crop::None`] (or [`Crop::Garg`], whose fractions then apply to the cropped size).
//! - Alignment is fitted before the clip to `[min_depth, max_depth]`, on valid pixels with a
//!   finite prediction; in disparity space a non-positive fitted disparity becomes `min_depth`.
//! - A batch that contains a failing image fails as a whole ([`MetricsError::InImage`] names the
//!   first one); an eval loop that prefers to skip such images calls [`depth_metrics`] itself.
//!
//! ``
//! use glassbox_metrics::{
//!     Alignment, DepthAccumulator, DepthEvalConfig, SegmentationAccumulator, depth_metrics,
//! };
//! use ndarray::{Array2, array};
//!
//! // A relative prediction (half the true depth) scored with median scaling on NYU.
//! let gt = Array2::from_shape_fn((480, 640), |(r, c)| 1.0 + (r + c) as f32 / 200.0);
//! let pred = gt.mapv(|d| 0.5 * d);
//! let cfg = DepthEvalConfig::nyu().with_alignment(Alignment::Median);
//!
//! let mut acc = DepthAccumulator::new();
//! for _image in 0..2 {
//!     let m = depth_metrics(pred.view(), gt.view(), None, &cfg)?;
//!     acc.push(&m);
//! }
//! let mean = acc.mean()?;
//! assert!(mean.abs_rel < 1e-6 && mean.delta1 == 1.0);
//! println!("{}\n{}", glassbox_metrics::DepthMetrics::markdown_header(), mean.markdown_row());
//!
//! // Segmentation with ignore index 255.
//! let mut seg = SegmentationAccumulator::new(2, Some(255));
//! seg.update(array![[0u8, 1], [1, 1]].view(), array![[0u8, 1], [0, 255]].view())?;
//! assert_eq!(seg.pixel_accuracy()?, 2.0 / 3.0);
//! assert_eq!(seg.iou(), vec![Some(0.5), Some(0.5)]);
//! # Ok::<(), glassbox_metrics::MetricsError>(())
//! ``

mod accumulate;
mod align;
mod crop;
mod depth;
mod error;
mod segmentation;

pub use accumulate::{DepthAccumulator, DepthSample, evaluate_depth_batch};
pub use align::{Alignment, ScaleShift, fit_scale_shift, median};
pub use crop::{
    Crop, CropWindow, EIGEN_IMAGE_SIZE, KB_CROP_HEIGHT, KB_CROP_WIDTH, kb_crop, kb_crop_window,
};
pub use depth::{DepthEvalConfig, DepthMetrics, depth_metrics};
pub use error::{MetricsError, Result};
pub use segmentation::{IGNORE_LABEL, Label, SegmentationAccumulator, SegmentationMetrics};
