//! Semantic segmentation metrics of `docs/metrics.md` from a confusion matrix accumulated over
//! a dataset (the mmsegmentation / ADE20K convention: IoU_c = TP / (TP + FP + FN) summed over all
//! images, not averaged per image), with an ignore index that removes pixels from every count.
//!
//! A class that appears in neither ground truth nor prediction has no IoU (`None`); it is left out
//! of mIoU instead of contributing NaN or a made-up 0 or 1.

use std::fmt;

use ndarray::{Array2, ArrayView2, Zip};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// Label value that losses, metrics and loaders ignore: 255, the value PyTorch's loaders and
/// mmseg's ADE20K reader (after "reduce zero label") use, so class ids start at 0. glassbox-data
/// and glassbox-losses take it from here, so one constant serves every crate.
pub const IGNORE_LABEL: u8 = 255;

/// An integer class-label type (u8 masks from PNGs, i64 argmax from libtorch, ...).
pub trait Label: Copy + Send + Sync {
    /// The label as i64; values beyond i64 saturate (and are then out of range).
    fn to_i64(self) -> i64;
}

macro_rules! impl_label {
    ($($t:ty),*) => {$(
        impl Label for $t {
            fn to_i64(self) -> i64 {
                i64::try_from(self).unwrap_or(i64::MAX)
            }
        }
    )*};
}
impl_label!(u8, u16, u32, u64, usize, i8, i16, i32, i64);

/// Confusion matrix (rows: ground truth, columns: prediction) over all images seen, from which
/// pixel accuracy, per-class IoU and mIoU follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationAccumulator {
    num_classes: usize,
    ignore_index: Option<i64>,
    confusion: Array2<u64>,
}

/// Dataset-level segmentation scores, ready to serialise into a run folder or print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationMetrics {
    /// Correct pixels / counted pixels.
    pub pixel_accuracy: f64,
    /// Mean of the defined per-class IoUs.
    pub miou: f64,
    /// Per-class IoU; `None` for a class absent from both ground truth and prediction.
    pub iou: Vec<Option<f64>>,
}

impl SegmentationAccumulator {
    /// An empty accumulator for labels `0..num_classes`; ground-truth pixels equal to
    /// `ignore_index` (e.g. 255 for ADE20K, -1 for some loaders) are skipped.
    pub fn new(num_classes: usize, ignore_index: Option<i64>) -> Self {
        SegmentationAccumulator {
            num_classes,
            ignore_index,
            confusion: Array2::zeros((num_classes, num_classes)),
        }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The ignore index given at construction.
    pub fn ignore_index(&self) -> Option<i64> {
        self.ignore_index
    }

    /// The confusion matrix, `[gt class, predicted class]` pixel counts.
    pub fn confusion_matrix(&self) -> ArrayView2<'_, u64> {
        self.confusion.view()
    }

    /// Number of pixels counted so far (ignored ones excluded).
    pub fn total(&self) -> u64 {
        self.confusion.sum()
    }

    /// Adds one image. On error (shape mismatch, label out of range) the accumulator is unchanged.
    pub fn update<P: Label, G: Label>(
        &mut self,
        pred: ArrayView2<P>,
        gt: ArrayView2<G>,
    ) -> Result<()> {
        let image = self.counts_of(pred, gt)?;
        self.confusion += &image;
        Ok(())
    }

    /// Adds many images at once, in parallel with rayon; on error the accumulator is unchanged.
    pub fn update_batch<P: Label, G: Label>(
        &mut self,
        images: &[(ArrayView2<'_, P>, ArrayView2<'_, G>)],
    ) -> Result<()> {
        let empty = || Array2::<u64>::zeros((self.num_classes, self.num_classes));
        let counts = images
            .par_iter()
            .map(|(pred, gt)| self.counts_of(pred.view(), gt.view()))
            .try_reduce(empty, |mut a, b| {
                a += &b;
                Ok(a)
            })?;
        self.confusion += &counts;
        Ok(())
    }

    /// Adds everything `other` has seen; both must share class count and ignore index.
    pub fn merge(&mut self, other: &SegmentationAccumulator) -> Result<()> {
        if (self.num_classes, self.ignore_index) != (other.num_classes, other.ignore_index) {
            return Err(MetricsError::AccumulatorMismatch {
                num_classes: self.num_classes,
                ignore_index: self.ignore_index,
                other_num_classes: other.num_classes,
                other_ignore_index: other.ignore_index,
            });
        }
        self.confusion += &other.confusion;
        Ok(())
    }

    /// The scores of the majority-class baseline on the same pixels: a constant prediction of
    /// the ground truth's most frequent class (ties: the lowest id), the segmentation analogue of
    /// the constant depth baseline. Its pixel accuracy is that class's share and its mIoU that
    /// share over the number of classes present.
    pub fn majority_baseline(&self) -> Result<SegmentationMetrics> {
        let counts: Vec<u64> = self.confusion.rows().into_iter().map(|r| r.sum()).collect();
        let majority = counts
            .iter()
            .enumerate()
            .max_by(|(a, x), (b, y)| x.cmp(y).then(b.cmp(a)))
            .map_or(0, |(c, _)| c);
        let mut constant = Self::new(self.num_classes, self.ignore_index);
        for (c, n) in counts.into_iter().enumerate() {
            constant.confusion[[c, majority]] = n;
        }
        constant.metrics()
    }

    /// Fraction of counted pixels whose prediction equals the ground truth.
    pub fn pixel_accuracy(&self) -> Result<f64> {
        let total = self.total();
        if total == 0 {
            return Err(MetricsError::EmptyAccumulator {
                what: "segmentation",
            });
        }
        Ok(self.confusion.diag().sum() as f64 / total as f64)
    }

    /// Per-class IoU = TP / (TP + FP + FN); `None` where the class never occurs in ground truth
    /// or prediction.
    pub fn iou(&self) -> Vec<Option<f64>> {
        (0..self.num_classes)
            .map(|c| {
                let tp = self.confusion[[c, c]];
                let gt = self.confusion.row(c).sum();
                let pred = self.confusion.column(c).sum();
                let union = gt + pred - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// Mean IoU over the classes whose IoU is defined.
    pub fn miou(&self) -> Result<f64> {
        let defined: Vec<f64> = self.iou().into_iter().flatten().collect();
        if defined.is_empty() {
            return Err(MetricsError::EmptyAccumulator {
                what: "segmentation",
            });
        }
        Ok(defined.iter().sum::<f64>() / defined.len() as f64)
    }

    /// All scores at once.
    pub fn metrics(&self) -> Result<SegmentationMetrics> {
        Ok(SegmentationMetrics {
            pixel_accuracy: self.pixel_accuracy()?,
            miou: self.miou()?,
            iou: self.iou(),
        })
    }

    /// Confusion counts of one image, checked against this accumulator's classes.
    fn counts_of<P: Label, G: Label>(
        &self,
        pred: ArrayView2<P>,
        gt: ArrayView2<G>,
    ) -> Result<Array2<u64>> {
        if pred.dim() != gt.dim() {
            return Err(MetricsError::ShapeMismatch {
                what: "segmentation prediction",
                expected: gt.dim(),
                found: pred.dim(),
            });
        }
        let n = self.num_classes;
        let class = |what: &'static str, value: i64, (row, col): (usize, usize)| {
            usize::try_from(value)
                .ok()
                .filter(|&v| v < n)
                .ok_or(MetricsError::LabelOutOfRange {
                    what,
                    value,
                    row,
                    col,
                    num_classes: n,
                })
        };
        let mut counts = Array2::<u64>::zeros((n, n));
        let mut first_error = None;
        Zip::indexed(&pred).and(&gt).for_each(|at, &p, &g| {
            if first_error.is_some() {
                return;
            }
            let g = g.to_i64();
            if Some(g) == self.ignore_index {
                return;
            }
            match (
                class("ground-truth", g, at),
                class("predicted", p.to_i64(), at),
            ) {
                (Ok(g), Ok(p)) => counts[[g, p]] += 1,
                (Err(e), _) | (_, Err(e)) => first_error = Some(e),
            }
        });
        match first_error {
            Some(e) => Err(e),
            None => Ok(counts),
        }
    }
}

impl SegmentationMetrics {
    /// Header and separator of a markdown eval table whose rows are
    /// [`SegmentationMetrics::markdown_row`].
    pub fn markdown_header() -> &'static str {
        "| pixAcc ↑ | mIoU ↑ |\n| ---: | ---: |"
    }

    /// One markdown table row, 4 decimals.
    pub fn markdown_row(&self) -> String {
        format!("| {:.4} | {:.4} |", self.pixel_accuracy, self.miou)
    }
}

impl fmt::Display for SegmentationMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pixAcc {:.4}  mIoU {:.4}  IoU [",
            self.pixel_accuracy, self.miou
        )?;
        for (c, iou) in self.iou.iter().enumerate() {
            let sep = if c == 0 { "" } else { ", " };
            match iou {
                Some(v) => write!(f, "{sep}{v:.4}")?,
                None => write!(f, "{sep}-")?,
            }
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use ndarray::array;

    #[test]
    fn confusion_matrix_and_scores_match_hand_count() {
        // 4 classes, class 3 never occurs. gt / pred pixel pairs:
        // (0,0) (0,0) (0,1) (1,1) (1,1) (1,2) (2,2) (2,0) (2,2)
        // confusion rows gt, cols pred:  [[2,1,0,0],[0,2,1,0],[1,0,2,0],[0,0,0,0]]
        // pixAcc = 6/9; IoU_0 = 2/(3+3-2) = 1/2, IoU_1 = 2/(3+3-2) = 1/2, IoU_2 = 2/(3+3-2) = 1/2,
        // IoU_3 = None; mIoU = 1/2.
        let gt = array![[0u8, 0, 0], [1, 1, 1], [2, 2, 2]];
        let pred = array![[0i64, 0, 1], [1, 1, 2], [2, 0, 2]];
        let mut acc = SegmentationAccumulator::new(4, Some(255));
        acc.update(pred.view(), gt.view()).unwrap();
        assert_eq!(
            acc.confusion_matrix(),
            array![[2u64, 1, 0, 0], [0, 2, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
        );
        assert_relative_eq!(acc.pixel_accuracy().unwrap(), 6.0 / 9.0);
        assert_eq!(acc.iou(), vec![Some(0.5), Some(0.5), Some(0.5), None]);
        assert_relative_eq!(acc.miou().unwrap(), 0.5);
    }

    #[test]
    fn class_only_predicted_has_zero_iou_and_counts_in_miou() {
        // gt all 0, pred one pixel 1: IoU_0 = 3/4, IoU_1 = 0/1, mIoU = 3/8.
        let gt = array![[0u32, 0], [0, 0]];
        let pred = array![[0u32, 0], [0, 1]];
        let mut acc = SegmentationAccumulator::new(2, None);
        acc.update(pred.view(), gt.view()).unwrap();
        assert_eq!(acc.iou(), vec![Some(0.75), Some(0.0)]);
        assert_relative_eq!(acc.miou().unwrap(), 0.375);
    }

    #[test]
    fn majority_baseline_predicts_the_most_frequent_class_everywhere() {
        // Ground truth: class 1 on 3 pixels, class 0 on 1, one ignored pixel.
        let mut acc = SegmentationAccumulator::new(3, Some(i64::from(IGNORE_LABEL)));
        acc.update(
            array![[2u8, 2, 0], [0, 0, 0]].view(),
            array![[1u8, 1, 0], [1, 255, 2]].view(),
        )
        .unwrap();
        let b = acc.majority_baseline().unwrap();
        // Constant class 1: 3 of 5 counted pixels right; IoU(1) = 3 / 5, IoU(0) = IoU(2) = 0.
        assert_relative_eq!(b.pixel_accuracy, 0.6);
        assert_eq!(b.iou, vec![Some(0.0), Some(0.6), Some(0.0)]);
        assert_relative_eq!(b.miou, 0.2);
        assert!(
            SegmentationAccumulator::new(2, None)
                .majority_baseline()
                .is_err()
        );
    }

    #[test]
    fn ignore_index_pixels_do_not_count() {
        let gt = array![[0u8, 255], [1, 255]];
        let pred = array![[0u8, 1], [1, 0]];
        let mut acc = SegmentationAccumulator::new(2, Some(255));
        acc.update(pred.view(), gt.view()).unwrap();
        assert_eq!(acc.total(), 2);
        assert_eq!(acc.pixel_accuracy().unwrap(), 1.0);
        assert_eq!(acc.iou(), vec![Some(1.0), Some(1.0)]);
    }

    #[test]
    fn out_of_range_label_is_a_typed_error_and_leaves_the_accumulator_unchanged() {
        let gt = array![[0u8, 1], [7, 0]];
        let pred = array![[0u8, 1], [1, 0]];
        let mut acc = SegmentationAccumulator::new(2, Some(255));
        let err = acc.update(pred.view(), gt.view()).unwrap_err();
        assert_eq!(
            err,
            MetricsError::LabelOutOfRange {
                what: "ground-truth",
                value: 7,
                row: 1,
                col: 0,
                num_classes: 2
            }
        );
        assert_eq!(acc.total(), 0);
        let negative_pred = array![[0i64, -1], [1, 0]];
        let gt = array![[0i64, 1], [1, 0]];
        assert!(matches!(
            acc.update(negative_pred.view(), gt.view()),
            Err(MetricsError::LabelOutOfRange {
                what: "predicted",
                value: -1,
                ..
            })
        ));
    }

    #[test]
    fn shape_mismatch_and_class_count_mismatch_are_typed_errors() {
        let mut acc = SegmentationAccumulator::new(2, None);
        let a = array![[0u8, 1]];
        let b = array![[0u8], [1]];
        assert!(matches!(
            acc.update(a.view(), b.view()),
            Err(MetricsError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            acc.merge(&SegmentationAccumulator::new(3, None)),
            Err(MetricsError::AccumulatorMismatch { .. })
        ));
        assert!(matches!(
            acc.pixel_accuracy(),
            Err(MetricsError::EmptyAccumulator { .. })
        ));
    }

    #[test]
    fn display_marks_undefined_classes() {
        let metrics = SegmentationMetrics {
            pixel_accuracy: 0.5,
            miou: 0.25,
            iou: vec![Some(0.25), None],
        };
        assert_eq!(
            metrics.to_string(),
            "pixAcc 0.5000  mIoU 0.2500  IoU [0.2500, -]"
        );
        assert_eq!(metrics.markdown_row(), "| 0.5000 | 0.2500 |");
    }
}
