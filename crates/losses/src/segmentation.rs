//! Pixel-wise cross-entropy for semantic segmentation with an ignore index and an auxiliary head
//! (`docs/losses.md`; the auxiliary weight 0.2 follows DPT's segmentation recipe):
//! `L = CE(main) + aux_weight * CE(aux)`, each the mean over the pixels that are not ignored.
//!
//! Choices where the design is silent:
//! - The default ignore index is [`glassbox_metrics::IGNORE_LABEL`] (255), the one constant of every
//!   crate and the common convention once ADE20K labels are shifted by one ("reduce zero label");
//!   for raw ADE20K label PNGs, where 0 means "other", set it to 0.
//! - An optional validity mask marks further pixels as ignored; a batch where every pixel is ignored
//!   gives 0 (PyTorch's mean reduction would give NaN).
//! - Logits at ignored pixels are replaced by zeros before the softmax, so NaN or infinite logits
//!   there reach neither the loss nor the gradient.
//! - Logits must already have the label resolution; resizing is the model's job, and a silent resize
//!   here would hide a wiring mistake.

use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

use crate::LossError;
use crate::input::{bool_mask, compute_kind, count, same_device, same_shape, squeeze_channel};

/// Cross-entropy on a main and an optional auxiliary head. Doubles as its serde configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentationLoss {
    /// Label value that marks a pixel as unlabelled.
    pub ignore_index: i64,
    /// Weight of the auxiliary head's cross-entropy.
    pub aux_weight: f64,
}

impl Default for SegmentationLoss {
    fn default() -> Self {
        Self {
            ignore_index: i64::from(glassbox_metrics::IGNORE_LABEL),
            aux_weight: 0.2,
        }
    }
}

impl SegmentationLoss {
    /// Checks that `aux_weight` is finite and non-negative.
    pub fn validate(&self) -> Result<(), LossError> {
        if self.aux_weight.is_finite() && self.aux_weight >= 0.0 {
            Ok(())
        } else {
            Err(LossError::InvalidConfig {
                field: "aux_weight",
                value: self.aux_weight.to_string(),
                expected: "a finite number >= 0",
            })
        }
    }

    /// `CE(main) + aux_weight * CE(aux)` for logits `B x C x H x W` and integer `labels`
    /// `B x H x W` (or `B x 1 x H x W`); pixels where `mask` is false count as ignored.
    pub fn compute(
        &self,
        main: &Tensor,
        aux: Option<&Tensor>,
        labels: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor, LossError> {
        self.validate()?;
        let labels = self.effective_labels(labels, mask)?;
        let main_loss = self.cross_entropy_checked("main", main, &labels)?;
        match aux {
            None => Ok(main_loss),
            Some(aux) => {
                let aux_loss = self.cross_entropy_checked("aux", aux, &labels)?;
                Ok(main_loss + aux_loss * self.aux_weight)
            }
        }
    }

    /// Mean cross-entropy of one head over the pixels that are not ignored.
    pub fn cross_entropy(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor, LossError> {
        let labels = self.effective_labels(labels, mask)?;
        self.cross_entropy_checked("logits", logits, &labels)
    }

    /// Labels as `Int64` `B x H x W`, with masked-out pixels set to the ignore index.
    fn effective_labels(
        &self,
        labels: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor, LossError> {
        let labels = squeeze_channel("labels", labels)?;
        let labels = match labels.kind() {
            Kind::Uint8 | Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64 => {
                labels.to_kind(Kind::Int64)
            }
            got => {
                return Err(LossError::DType {
                    name: "labels",
                    got,
                    expected: "an integer kind",
                });
            }
        };
        match mask {
            None => Ok(labels),
            Some(mask) => {
                let mask = squeeze_channel("mask", mask)?;
                same_shape("mask", &mask, "labels", &labels)?;
                same_device("mask", &mask, "labels", &labels)?;
                let mask = bool_mask("mask", &mask)?;
                Ok(labels.where_scalarother(&mask, self.ignore_index))
            }
        }
    }

    fn cross_entropy_checked(
        &self,
        name: &'static str,
        logits: &Tensor,
        labels: &Tensor,
    ) -> Result<Tensor, LossError> {
        let shape = logits.size();
        let &[batch, classes, height, width] = shape.as_slice() else {
            return Err(LossError::BadRank {
                name,
                expected: "B x C x H x W",
                shape,
            });
        };
        let kind = compute_kind(name, logits)?;
        if labels.size() != [batch, height, width] {
            return Err(LossError::ShapeMismatch {
                name: "labels",
                got: labels.size(),
                reference: name,
                expected: vec![batch, height, width],
            });
        }
        same_device("labels", labels, name, logits)?;
        let ignored = labels.eq(self.ignore_index);
        let bad = ignored
            .logical_not()
            .logical_and(&labels.lt(0).logical_or(&labels.ge(classes)));
        if count(&bad) > 0 {
            return Err(LossError::LabelOutOfRange {
                name: "labels",
                value: labels.masked_select(&bad).int64_value(&[0]),
                classes,
                ignore_index: self.ignore_index,
            });
        }
        let kept = ignored.logical_not();
        let logits = logits
            .to_kind(kind)
            .where_scalarother(&kept.unsqueeze(1), 0.0);
        let sum = logits.f_cross_entropy_loss::<Tensor>(
            labels,
            None,
            Reduction::Sum,
            self.ignore_index,
            0.0,
        )?;
        Ok(sum / count(&kept).max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use approx::assert_abs_diff_eq;
    use tch::{Device, Kind, Tensor};

    use super::*;

    /// Logits `1 x 3 x 1 x 3` (classes x pixels): pixel 0 = [1, 2, 0], pixel 1 = [0, 0, 0],
    /// pixel 2 = NaN everywhere (it is ignored).
    fn two_pixel_logits(offset: f64) -> Tensor {
        let nan = f64::NAN;
        Tensor::from_slice(&[1.0, 0.0, nan, 2.0, 0.0, nan, 0.0, 0.0, nan]).reshape([1, 3, 1, 3])
            + offset
                * Tensor::from_slice(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
                    .reshape([1, 3, 1, 3])
    }

    fn labels(ignore: i64) -> Tensor {
        Tensor::from_slice(&[1i64, 0, ignore]).reshape([1, 1, 3])
    }

    /// CE of pixel 0 (label 1) and pixel 1 (label 0) by hand, logits shifted by `offset` as above.
    fn hand_value(offset: f64) -> f64 {
        let (a, b, c) = (1.0 + offset, 2.0_f64, 0.0_f64);
        let first = -b + (a.exp() + b.exp() + c.exp()).ln();
        let second = -0.0 + (1.0 + 1.0 + offset.exp()).ln();
        (first + second) / 2.0
    }

    #[test]
    fn cross_entropy_ignores_ignore_index_pixels_and_matches_a_hand_value() {
        // Ignore index 255: pixel 2 (NaN logits) is ignored, the mean runs over pixels 0 and 1.
        let value = SegmentationLoss::default()
            .compute(&two_pixel_logits(0.0), None, &labels(255), None)
            .unwrap()
            .double_value(&[]);
        assert_abs_diff_eq!(value, hand_value(0.0), epsilon = 1e-12);
        // Ignore index 0 (raw ADE20K): pixels labelled 0 drop out, only pixel 0 (label 1) counts.
        let ade = SegmentationLoss {
            ignore_index: 0,
            ..SegmentationLoss::default()
        };
        let only_first = Tensor::from_slice(&[1i64, 0, 0]).reshape([1, 1, 3]);
        let value = ade
            .compute(&two_pixel_logits(0.0), None, &only_first, None)
            .unwrap()
            .double_value(&[]);
        assert_abs_diff_eq!(
            value,
            -2.0 + (1f64.exp() + 2f64.exp() + 1.0).ln(),
            epsilon = 1e-12
        );
    }

    #[test]
    fn auxiliary_head_is_weighted_by_aux_weight() {
        let loss = SegmentationLoss::default();
        let main = two_pixel_logits(0.0);
        let aux = two_pixel_logits(1.5);
        let value = loss
            .compute(&main, Some(&aux), &labels(255), None)
            .unwrap()
            .double_value(&[]);
        assert_abs_diff_eq!(
            value,
            hand_value(0.0) + 0.2 * hand_value(1.5),
            epsilon = 1e-12
        );
    }

    #[test]
    fn masked_pixels_count_as_ignored() {
        let loss = SegmentationLoss::default();
        let mask = Tensor::from_slice(&[true, false, false]).reshape([1, 1, 3]);
        let value = loss
            .compute(&two_pixel_logits(0.0), None, &labels(255), Some(&mask))
            .unwrap()
            .double_value(&[]);
        assert_abs_diff_eq!(
            value,
            -2.0 + (1f64.exp() + 2f64.exp() + 1.0).ln(),
            epsilon = 1e-12
        );
    }

    #[test]
    fn all_ignored_gives_zero_and_finite_gradients() {
        let loss = SegmentationLoss::default();
        let logits = two_pixel_logits(0.0).set_requires_grad(true);
        let labels = Tensor::full([1, 1, 3], 255, (Kind::Int64, Device::Cpu));
        let value = loss.compute(&logits, None, &labels, None).unwrap();
        value.backward();
        assert_eq!(value.double_value(&[]), 0.0);
        assert_eq!(logits.grad().isfinite().all().int64_value(&[]), 1);
    }

    #[test]
    fn gradients_stay_finite_with_nan_logits_on_ignored_pixels() {
        let loss = SegmentationLoss::default();
        let logits = two_pixel_logits(0.0).set_requires_grad(true);
        loss.compute(&logits, Some(&logits), &labels(255), None)
            .unwrap()
            .backward();
        assert_eq!(logits.grad().isfinite().all().int64_value(&[]), 1);
    }

    #[test]
    fn out_of_range_labels_are_a_typed_error() {
        let loss = SegmentationLoss::default();
        let bad = Tensor::from_slice(&[1i64, 3, 255]).reshape([1, 1, 3]);
        let err = loss
            .compute(&two_pixel_logits(0.0), None, &bad, None)
            .unwrap_err();
        assert!(
            matches!(
                err,
                LossError::LabelOutOfRange {
                    value: 3,
                    classes: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn logits_at_another_resolution_are_a_typed_error() {
        let loss = SegmentationLoss::default();
        let small = Tensor::zeros([1, 3, 1, 2], (Kind::Float, Device::Cpu));
        let err = loss.compute(&small, None, &labels(255), None).unwrap_err();
        assert!(
            matches!(err, LossError::ShapeMismatch { name: "labels", .. }),
            "{err}"
        );
        let err = loss
            .compute(&two_pixel_logits(0.0), Some(&small), &labels(255), None)
            .unwrap_err();
        assert!(
            matches!(
                err,
                LossError::ShapeMismatch {
                    reference: "aux",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn float_labels_are_a_typed_error() {
        let loss = SegmentationLoss::default();
        let err = loss
            .compute(
                &two_pixel_logits(0.0),
                None,
                &labels(255).to_kind(Kind::Float),
                None,
            )
            .unwrap_err();
        assert!(
            matches!(err, LossError::DType { name: "labels", .. }),
            "{err}"
        );
    }
}
