//! Validation and cleaning of loss inputs, shared by every loss in the crate.
//!
//! Each loss first checks ranks, shapes, dtypes and devices here (so a mistake becomes a
//! [`LossError`] instead of a libtorch abort), then replaces masked pixels with a harmless
//! constant via `where`. Multiplying by the mask would not do: `NaN * 0 = NaN`, and even a
//! `where` applied *after* arithmetic leaks `0 * NaN` into the backward pass.

use tch::{Kind, Tensor};

use crate::LossError;

/// A validated depth-style triple: prediction and target in a floating kind, mask as `Bool`,
/// all `B x H x W` on one device.
#[derive(Debug)]
pub(crate) struct DenseInputs {
    pub pred: Tensor,
    pub target: Tensor,
    pub mask: Tensor,
}

impl DenseInputs {
    /// Checks `pred`, `target` and `mask`, squeezes a singleton channel and casts the target to
    /// the prediction's kind (half precision is computed in `f32`, as losses usually are).
    pub fn new(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Self, LossError> {
        let pred = squeeze_channel("pred", pred)?;
        let target = squeeze_channel("target", target)?;
        let mask = squeeze_channel("mask", mask)?;
        same_shape("target", &target, "pred", &pred)?;
        same_shape("mask", &mask, "pred", &pred)?;
        same_device("target", &target, "pred", &pred)?;
        same_device("mask", &mask, "pred", &pred)?;
        let kind = compute_kind("pred", &pred)?;
        floating("target", &target)?;
        let mask = bool_mask("mask", &mask)?;
        Ok(Self {
            pred: pred.to_kind(kind),
            target: target.to_kind(kind),
            mask,
        })
    }

    /// Prediction and target with every masked pixel replaced by `fill`.
    pub fn cleaned(&self, fill: f64) -> (Tensor, Tensor) {
        (
            self.pred.where_scalarother(&self.mask, fill),
            self.target.where_scalarother(&self.mask, fill),
        )
    }
}

/// The kind a loss computes in: `f32`/`f64` as given, half precisions promoted to `f32`.
pub(crate) fn compute_kind(name: &'static str, t: &Tensor) -> Result<Kind, LossError> {
    match t.kind() {
        Kind::Float | Kind::Double => Ok(t.kind()),
        Kind::Half | Kind::BFloat16 => Ok(Kind::Float),
        got => Err(LossError::DType {
            name,
            got,
            expected: "a floating kind (f32, f64, f16 or bf16)",
        }),
    }
}

pub(crate) fn floating(name: &'static str, t: &Tensor) -> Result<(), LossError> {
    compute_kind(name, t).map(|_| ())
}

/// Accepts `B x H x W`, or `B x 1 x H x W` which is squeezed to `B x H x W`.
pub(crate) fn squeeze_channel(name: &'static str, t: &Tensor) -> Result<Tensor, LossError> {
    let shape = t.size();
    match shape.as_slice() {
        [_, _, _] => Ok(t.shallow_clone()),
        [_, 1, _, _] => Ok(t.squeeze_dim(1)),
        _ => Err(LossError::BadRank {
            name,
            expected: "B x H x W or B x 1 x H x W",
            shape,
        }),
    }
}

pub(crate) fn same_shape(
    name: &'static str,
    t: &Tensor,
    reference: &'static str,
    r: &Tensor,
) -> Result<(), LossError> {
    if t.size() == r.size() {
        Ok(())
    } else {
        Err(LossError::ShapeMismatch {
            name,
            got: t.size(),
            reference,
            expected: r.size(),
        })
    }
}

pub(crate) fn same_device(
    name: &'static str,
    t: &Tensor,
    reference: &'static str,
    r: &Tensor,
) -> Result<(), LossError> {
    if t.device() == r.device() {
        Ok(())
    } else {
        Err(LossError::Device {
            name,
            got: t.device(),
            reference,
            expected: r.device(),
        })
    }
}

/// Masks may be `Bool` or any integer kind (non-zero = valid); floating masks are refused
/// because a fractional or NaN "validity" has no meaning here.
pub(crate) fn bool_mask(name: &'static str, mask: &Tensor) -> Result<Tensor, LossError> {
    match mask.kind() {
        Kind::Bool => Ok(mask.shallow_clone()),
        Kind::Uint8 | Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64 => Ok(mask.ne(0)),
        got => Err(LossError::DType {
            name,
            got,
            expected: "bool or an integer kind (non-zero = valid)",
        }),
    }
}

/// A zero scalar that still depends on `clean` (which must be finite), so `backward` works on
/// a batch without a single valid pixel and yields zero gradients instead of an error or NaN.
pub(crate) fn zero_with_grad(clean: &Tensor) -> Tensor {
    clean.sum(clean.kind()) * 0.0
}

/// Number of `true` entries of a boolean tensor.
pub(crate) fn count(mask: &Tensor) -> i64 {
    mask.sum(Kind::Int64).int64_value(&[])
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    use super::*;
    use crate::{DepthLoss, MidasLoss, SilogLoss};

    fn ones(shape: &[i64], kind: Kind) -> Tensor {
        Tensor::ones(shape, (kind, Device::Cpu))
    }

    #[test]
    fn singleton_channel_inputs_are_squeezed_and_may_mix_with_plain_ones() {
        let pred = Tensor::arange(12, (Kind::Double, Device::Cpu)).reshape([1, 1, 3, 4]) + 1.0;
        let target = pred.squeeze_dim(1) * 2.0;
        let mask = ones(&[1, 1, 3, 4], Kind::Uint8);
        let inputs = DenseInputs::new(&pred, &target, &mask).unwrap();
        assert_eq!(inputs.pred.size(), [1, 3, 4]);
        assert_eq!(inputs.mask.kind(), Kind::Bool);
        assert!(MidasLoss::default().compute(&pred, &target, &mask).is_ok());
    }

    #[test]
    fn shape_mismatches_name_the_offending_tensor() {
        let pred = ones(&[2, 3, 4], Kind::Float);
        let err = SilogLoss::default()
            .compute(
                &pred,
                &ones(&[2, 4, 3], Kind::Float),
                &ones(&[2, 3, 4], Kind::Bool),
            )
            .unwrap_err();
        assert!(
            matches!(&err, LossError::ShapeMismatch { name: "target", got, expected, .. }
                if got == &[2, 4, 3] && expected == &[2, 3, 4]),
            "{err}"
        );
        let err = SilogLoss::default()
            .compute(&pred, &pred, &ones(&[1, 3, 4], Kind::Bool))
            .unwrap_err();
        assert!(
            matches!(err, LossError::ShapeMismatch { name: "mask", .. }),
            "{err}"
        );
    }

    #[test]
    fn multi_channel_or_flat_inputs_are_a_rank_error() {
        let mask = ones(&[2, 3, 4], Kind::Bool);
        let err = MidasLoss::default()
            .compute(
                &ones(&[2, 2, 3, 4], Kind::Float),
                &mask.to_kind(Kind::Float),
                &mask,
            )
            .unwrap_err();
        assert!(
            matches!(err, LossError::BadRank { name: "pred", .. }),
            "{err}"
        );
        let err = MidasLoss::default()
            .compute(&ones(&[12], Kind::Float), &ones(&[12], Kind::Float), &mask)
            .unwrap_err();
        assert!(
            matches!(err, LossError::BadRank { name: "pred", .. }),
            "{err}"
        );
    }

    #[test]
    fn wrong_dtypes_are_typed_errors() {
        let float = ones(&[1, 2, 2], Kind::Float);
        let mask = ones(&[1, 2, 2], Kind::Bool);
        let loss = MidasLoss::default();
        let err = loss
            .compute(&ones(&[1, 2, 2], Kind::Int64), &float, &mask)
            .unwrap_err();
        assert!(
            matches!(
                err,
                LossError::DType {
                    name: "pred",
                    got: Kind::Int64,
                    ..
                }
            ),
            "{err}"
        );
        let err = loss
            .compute(&float, &ones(&[1, 2, 2], Kind::Int), &mask)
            .unwrap_err();
        assert!(
            matches!(err, LossError::DType { name: "target", .. }),
            "{err}"
        );
        let err = loss.compute(&float, &float, &float).unwrap_err();
        assert!(
            matches!(err, LossError::DType { name: "mask", .. }),
            "{err}"
        );
    }

    #[test]
    fn half_precision_is_computed_in_f32() {
        let pred = ones(&[1, 2, 2], Kind::Half);
        let inputs = DenseInputs::new(&pred, &pred, &ones(&[1, 2, 2], Kind::Bool)).unwrap();
        assert_eq!(inputs.pred.kind(), Kind::Float);
        assert_eq!(inputs.target.kind(), Kind::Float);
    }
}
