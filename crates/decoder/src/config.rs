//! Decoder configuration (`docs/architecture.md`): serde structs with the dpt-tiny, dpt-base and
//! dpt-large presets, so a run folder records exactly which decoder was trained.

use serde::{Deserialize, Serialize};

use crate::error::{DecoderError, Result};

/// Number of hooked encoder layers, reassemble stages and fusion layers in DPT.
pub const NUM_STAGES: usize = 4;

/// How Read folds the readout (class) token into the patch tokens (DPT paper, section 3, "Read").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readout {
    /// Drop the readout token.
    Ignore,
    /// Add the readout token to every patch token: t_i + t_0.
    Add,
    /// GELU(Linear 2D -> D) of cat(t_i, t_0), one projection per stage.
    Project,
}

/// Shape of the decoder: Reassemble (Read / Concatenate / Resample), neck convs and RefineNet fusion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// Channels C_i after the 1x1 projection of each stage (HF `neck_hidden_sizes`).
    pub reassemble_channels: [i64; NUM_STAGES],
    /// Spatial resampling factor of each stage relative to the patch grid: > 1 integer
    /// (ConvTranspose k = s = factor), 1 (identity) or 1/n (Conv k3, stride n, padding 1).
    pub reassemble_factors: [f64; NUM_STAGES],
    /// Fusion width F (HF `fusion_hidden_size`).
    pub fusion_channels: i64,
    /// How the readout token is used.
    pub readout: Readout,
    /// Batch norm after each convolution of the residual conv units (HF
    /// `use_batch_norm_in_fusion_residual`); off for depth, allowed for segmentation.
    #[serde(default)]
    pub fusion_batch_norm: bool,
}

impl DecoderConfig {
    /// dpt-tiny: the CPU workhorse on a vit-tiny encoder (D 192).
    pub fn tiny() -> Self {
        Self {
            reassemble_channels: [48, 96, 192, 384],
            reassemble_factors: [4.0, 2.0, 1.0, 0.5],
            fusion_channels: 64,
            readout: Readout::Project,
            fusion_batch_norm: false,
        }
    }

    /// dpt-base on a vit-base encoder (D 768), as HF `Intel/dpt-base`-style configs.
    pub fn base() -> Self {
        Self {
            reassemble_channels: [96, 192, 384, 768],
            fusion_channels: 256,
            ..Self::tiny()
        }
    }

    /// dpt-large on a vit-large encoder (D 1024), as HF `Intel/dpt-large`.
    pub fn large() -> Self {
        Self {
            reassemble_channels: [256, 512, 1024, 1024],
            fusion_channels: 256,
            ..Self::tiny()
        }
    }

    /// Checks every field, so that a bad config fails at construction with the field's name
    /// instead of deep inside a convolution.
    pub fn validate(&self) -> Result<()> {
        positive("fusion_channels", self.fusion_channels)?;
        for (i, &c) in self.reassemble_channels.iter().enumerate() {
            if c <= 0 {
                return Err(DecoderError::InvalidConfig {
                    field: "reassemble_channels",
                    value: format!("{c} (stage {i})"),
                    expected: "a positive channel count",
                });
            }
        }
        for (i, &f) in self.reassemble_factors.iter().enumerate() {
            Resampling::from_factor(f).map_err(|_| DecoderError::InvalidConfig {
                field: "reassemble_factors",
                value: format!("{f} (stage {i})"),
                expected: "an integer >= 1 or 1/n for an integer n >= 2",
            })?;
        }
        Ok(())
    }
}

fn positive(field: &'static str, value: i64) -> Result<()> {
    if value > 0 {
        Ok(())
    } else {
        Err(DecoderError::InvalidConfig {
            field,
            value: value.to_string(),
            expected: "a positive integer",
        })
    }
}

/// The resampling a reassemble factor stands for, with its integer stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resampling {
    /// ConvTranspose with kernel = stride = the factor.
    Up(i64),
    /// Nothing.
    Identity,
    /// Conv k3, padding 1, stride = 1 / factor.
    Down(i64),
}

impl Resampling {
    pub(crate) fn from_factor(factor: f64) -> std::result::Result<Self, ()> {
        let integral = |x: f64| x.is_finite() && (x - x.round()).abs() < 1e-9 && x.round() >= 1.0;
        if !(factor.is_finite() && factor > 0.0) {
            Err(())
        } else if factor == 1.0 {
            Ok(Self::Identity)
        } else if factor > 1.0 && integral(factor) {
            Ok(Self::Up(factor.round() as i64))
        } else if factor < 1.0 && integral(1.0 / factor) {
            Ok(Self::Down((1.0 / factor).round() as i64))
        } else {
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_design_table() {
        let t = DecoderConfig::tiny();
        assert_eq!(
            (t.reassemble_channels, t.fusion_channels),
            ([48, 96, 192, 384], 64)
        );
        let b = DecoderConfig::base();
        assert_eq!(
            (b.reassemble_channels, b.fusion_channels),
            ([96, 192, 384, 768], 256)
        );
        let l = DecoderConfig::large();
        assert_eq!(
            (l.reassemble_channels, l.fusion_channels),
            ([256, 512, 1024, 1024], 256)
        );
        for cfg in [t, b, l] {
            assert_eq!(cfg.reassemble_factors, [4.0, 2.0, 1.0, 0.5]);
            assert_eq!(cfg.readout, Readout::Project);
            cfg.validate().unwrap();
        }
    }

    #[test]
    fn config_round_trips_through_json_with_lowercase_readout() {
        let cfg = DecoderConfig {
            readout: Readout::Ignore,
            ..DecoderConfig::base()
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"readout\":\"ignore\""), "{json}");
        let back: DecoderConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn factors_map_to_their_resampling() {
        assert_eq!(Resampling::from_factor(4.0), Ok(Resampling::Up(4)));
        assert_eq!(Resampling::from_factor(2.0), Ok(Resampling::Up(2)));
        assert_eq!(Resampling::from_factor(1.0), Ok(Resampling::Identity));
        assert_eq!(Resampling::from_factor(0.5), Ok(Resampling::Down(2)));
        assert_eq!(Resampling::from_factor(0.25), Ok(Resampling::Down(4)));
        for bad in [0.0, -2.0, 1.5, 0.3, f64::NAN, f64::INFINITY] {
            assert!(Resampling::from_factor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_names_the_bad_field() {
        let cfg = DecoderConfig {
            reassemble_factors: [4.0, 2.0, 1.5, 0.5],
            ..DecoderConfig::tiny()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("reassemble_factors") && err.contains("1.5 (stage 2)"),
            "{err}"
        );
        let cfg = DecoderConfig {
            fusion_channels: 0,
            ..DecoderConfig::tiny()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("fusion_channels")
        );
        let cfg = DecoderConfig {
            reassemble_channels: [48, -1, 192, 384],
            ..DecoderConfig::tiny()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("reassemble_channels")
        );
    }
}
