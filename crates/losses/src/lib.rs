//! Training losses for glassbox's dense-prediction models (`docs/losses.md`).
//!
//! - [`MidasLoss`]: scale- and shift-invariant trimmed MAE plus multi-scale gradient matching, for
//!   relative depth in disparity space (MiDaS).
//! - [`SilogLoss`]: scale-invariant log loss for metric depth.
//! - [`SegmentationLoss`]: cross-entropy with an ignore index and an auxiliary head.
//! - [`depth_from_disparity`] / [`DisparityToDepth`]: metric depth from a disparity prediction.
//!
//! Every depth loss takes `(pred, target, mask)` with shapes `B x H x W` (or `B x 1 x H x W`) and
//! returns a scalar tensor ready for `backward`. Masked pixels are removed with `where` before any
//! arithmetic, so NaN, inf or huge values there influence neither the loss nor the gradient, and a
//! batch without a single valid pixel yields 0 with a (zero) gradient path. Inputs are validated
//! first: a wrong shape, dtype or device is a [`LossError`] naming the tensor, not a libtorch abort.
//!
//! [`LossConfig`] is the serde (TOML) selection of one loss with its settings, e.g.
//!
//! ``toml
//! [loss]
//! kind = "midas"   # or "silog", "cross_entropy"
//! alpha = 0.5      # omitted fields take the defaults
//! ``
//!
//! Decisions where the design is silent are listed in each module's documentation: MiDaS's
//! batch-based reduction, SILog's batch-pooled means, and the default ignore index 255.

mod error;
mod input;
mod metric_depth;
mod midas;
mod segmentation;
mod silog;

use serde::{Deserialize, Serialize};
use tch::Tensor;

pub use error::LossError;
pub use metric_depth::{DisparityToDepth, depth_from_disparity};
pub use midas::{MidasLoss, MidasTerms, SCALE_EPS};
pub use segmentation::SegmentationLoss;
pub use silog::{SQRT_EPS, SilogLoss};

/// A loss on dense depth (or disparity) maps, so the trainer can hold any of them behind one type.
pub trait DepthLoss: std::fmt::Debug + Send + Sync {
    /// The scalar loss of `pred` against `target` on the pixels where `mask` is true (or non-zero).
    /// All three are `B x H x W` or `B x 1 x H x W`.
    fn compute(&self, pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor, LossError>;
}

/// The loss a run trains with, as read from its TOML config (`kind` selects the variant; missing
/// fields take the defaults of the variant's struct).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LossConfig {
    /// Relative depth: SSI-trim + gradient matching in disparity space.
    Midas(MidasLoss),
    /// Metric depth: scale-invariant log loss.
    Silog(SilogLoss),
    /// Semantic segmentation: cross-entropy with ignore index and auxiliary head.
    CrossEntropy(SegmentationLoss),
}

impl Default for LossConfig {
    fn default() -> Self {
        Self::Midas(MidasLoss::default())
    }
}

impl LossConfig {
    /// The `kind` string of this variant, as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Midas(_) => "midas",
            Self::Silog(_) => "silog",
            Self::CrossEntropy(_) => "cross_entropy",
        }
    }

    /// Checks the settings of the selected loss, so a bad config fails when it is loaded rather
    /// than at the first training step.
    pub fn validate(&self) -> Result<(), LossError> {
        match self {
            Self::Midas(loss) => loss.validate(),
            Self::Silog(loss) => loss.validate(),
            Self::CrossEntropy(loss) => loss.validate(),
        }
    }

    /// The selected loss as a depth loss; an error for the segmentation variant.
    pub fn depth(&self) -> Result<&dyn DepthLoss, LossError> {
        self.validate()?;
        match self {
            Self::Midas(loss) => Ok(loss),
            Self::Silog(loss) => Ok(loss),
            Self::CrossEntropy(_) => Err(LossError::WrongFamily {
                configured: self.name(),
                requested: "depth",
            }),
        }
    }

    /// The selected loss as a segmentation loss; an error for the depth variants.
    pub fn segmentation(&self) -> Result<&SegmentationLoss, LossError> {
        self.validate()?;
        match self {
            Self::CrossEntropy(loss) => Ok(loss),
            _ => Err(LossError::WrongFamily {
                configured: self.name(),
                requested: "segmentation",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_selects_a_loss_and_fills_missing_fields_with_defaults() {
        let config: LossConfig = toml::from_str("kind = \"midas\"\nalpha = 1.0\n").unwrap();
        assert_eq!(
            config,
            LossConfig::Midas(MidasLoss {
                alpha: 1.0,
                ..MidasLoss::default()
            })
        );
        let config: LossConfig = toml::from_str("kind = \"silog\"").unwrap();
        assert_eq!(config, LossConfig::Silog(SilogLoss::default()));
        let config: LossConfig =
            toml::from_str("kind = \"cross_entropy\"\nignore_index = 0").unwrap();
        assert_eq!(
            config,
            LossConfig::CrossEntropy(SegmentationLoss {
                ignore_index: 0,
                aux_weight: 0.2
            })
        );
    }

    #[test]
    fn toml_round_trips() {
        for config in [
            LossConfig::default(),
            LossConfig::Silog(SilogLoss {
                lambda: 1.0,
                min_depth: 0.01,
            }),
            LossConfig::CrossEntropy(SegmentationLoss::default()),
        ] {
            let text = toml::to_string(&config).unwrap();
            assert_eq!(
                toml::from_str::<LossConfig>(&text).unwrap(),
                config,
                "{text}"
            );
        }
    }

    #[test]
    fn toml_typos_and_unknown_kinds_are_rejected() {
        assert!(toml::from_str::<LossConfig>("kind = \"midas\"\nalpah = 1.0").is_err());
        assert!(toml::from_str::<LossConfig>("kind = \"l1\"").is_err());
    }

    #[test]
    fn families_are_checked() {
        assert!(LossConfig::default().depth().is_ok());
        assert!(matches!(
            LossConfig::default().segmentation(),
            Err(LossError::WrongFamily {
                configured: "midas",
                ..
            })
        ));
        let ce = LossConfig::CrossEntropy(SegmentationLoss::default());
        assert!(ce.segmentation().is_ok());
        assert!(matches!(ce.depth(), Err(LossError::WrongFamily { .. })));
        let bad = LossConfig::Silog(SilogLoss {
            lambda: 2.0,
            ..SilogLoss::default()
        });
        assert!(matches!(
            bad.depth(),
            Err(LossError::InvalidConfig {
                field: "lambda",
                ..
            })
        ));
    }
}
