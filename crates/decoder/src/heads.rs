//! Prediction heads on the fused features (`docs/architecture.md`), named as HF's so that checkpoints
//! load by name: the depth head (`head.head.{0,2,4}`, HF `DPTDepthEstimationHead`) and the
//! segmentation head (`head.head.{0,1,4}`, HF `DPTSemanticSegmentationHead`) with its auxiliary head
//! (`auxiliary_head.head.{0,1,4}`, HF `DPTAuxiliaryHead`).
//!
//! Output resolution: the heads end with HF's bilinear x2 (align_corners = true), which gives the full
//! input resolution for patch grids whose sides are even. For odd grids HF's fusion grows the maps
//! (see `fusion`), so when the caller passes the image size and the native output differs, the heads
//! resize bilinearly (align_corners = false, as HF resizes logits to the labels) to exactly that size.

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn, nn::Module, nn::ModuleT};

use crate::error::{DecoderError, Result};

fn check_features(head: &'static str, features: &Tensor, channels: i64) -> Result<()> {
    let shape = features.size();
    if shape.len() != 4 || shape[1] != channels {
        return Err(DecoderError::FeatureShape {
            head,
            expected_channels: channels,
            shape,
        });
    }
    Ok(())
}

fn resize_to(head: &'static str, x: Tensor, size: Option<(i64, i64)>) -> Result<Tensor> {
    match size {
        None => Ok(x),
        Some((h, w)) if h < 1 || w < 1 => Err(DecoderError::EmptyOutput { head, h, w }),
        Some((h, w)) if x.size()[2..] == [h, w] => Ok(x),
        Some((h, w)) => Ok(x.upsample_bilinear2d([h, w], false, None, None)),
    }
}

pub(crate) fn upsample2(x: &Tensor) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    x.upsample_bilinear2d([2 * h, 2 * w], true, None, None)
}

/// Monocular depth head: conv3x3 F -> F/2, bilinear x2, conv3x3 F/2 -> 32, ReLU, conv1x1 32 -> 1,
/// ReLU; the output is a non-negative inverse depth (disparity) map B x H x W.
#[derive(Debug)]
pub struct DepthHead {
    channels: i64,
    conv0: nn::Conv2D,
    conv2: nn::Conv2D,
    conv4: nn::Conv2D,
}

impl DepthHead {
    /// Builds the head under `vs / "head" / "head"` (`vs` is the model root) for fusion width F.
    pub fn new(vs: &nn::Path, fusion_channels: i64) -> Result<Self> {
        if fusion_channels < 2 {
            return Err(DecoderError::InvalidConfig {
                field: "fusion_channels",
                value: fusion_channels.to_string(),
                expected: "at least 2 (the depth head halves it)",
            });
        }
        let seq = vs / "head" / "head";
        let pad = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let half = fusion_channels / 2;
        Ok(Self {
            channels: fusion_channels,
            conv0: nn::conv2d(&seq / 0, fusion_channels, half, 3, pad),
            conv2: nn::conv2d(&seq / 2, half, 32, 3, pad),
            conv4: nn::conv2d(&seq / 4, 32, 1, 1, Default::default()),
        })
    }

    /// Finest fused features B x F x h x w to disparity B x 2h x 2w, or B x H x W when `image_size`
    /// is given (see the module docs for odd grids).
    pub fn forward(&self, features: &Tensor, image_size: Option<(i64, i64)>) -> Result<Tensor> {
        check_features("depth head", features, self.channels)?;
        let x = upsample2(&self.conv0.forward(features));
        // In-place ReLUs on fresh conv outputs: the largest map of the model is not copied.
        let x = self.conv4.forward(&self.conv2.forward(&x).relu_()).relu_();
        Ok(resize_to("depth head", x, image_size)?.squeeze_dim(1))
    }
}

/// Which fusion output the auxiliary head reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuxiliaryInput {
    /// The second-to-last fusion output, as the DPT paper supervises an intermediate level.
    #[default]
    Penultimate,
    /// The last fusion output, the main head's own input: what HF `DPTForSemanticSegmentation`
    /// (transformers 4.57.1) does, so imported HF models reproduce their auxiliary logits.
    Last,
}

/// What turns encoder tokens into class logits: DPT's Reassemble + fusion + this head, or the
/// DEPICT white-box decoder on the last encoder block's tokens (`docs/architecture.md`, DEPICT).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentationDecoder {
    /// Reassemble, RefineNet fusion and the convolutional segmentation head.
    #[default]
    Dpt,
    /// DEPICT with self-attention over image and class tokens jointly (the reference default).
    DepictSa,
    /// DEPICT with self-attention over image tokens, then cross-attention from the classes.
    DepictCa,
}

impl SegmentationDecoder {
    /// Every decoder, in the order the ablation tables list them.
    pub const ALL: [SegmentationDecoder; 3] = [Self::Dpt, Self::DepictSa, Self::DepictCa];

    /// The name used in configs, on the command line and in run names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dpt => "dpt",
            Self::DepictSa => "depict-sa",
            Self::DepictCa => "depict-ca",
        }
    }
}

impl std::str::FromStr for SegmentationDecoder {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown decoder {s:?}; expected dpt, depict-sa or depict-ca"))
    }
}

fn default_depict_layers() -> usize {
    3
}

fn default_depict_heads() -> i64 {
    3
}

/// Settings of the segmentation head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentationHeadConfig {
    /// Number of classes K (HF `num_labels`).
    pub num_classes: i64,
    /// Dropout before the classifier conv (HF `semantic_classifier_dropout`).
    pub dropout: f64,
    /// Whether to build the auxiliary head (DPT decoder only).
    pub auxiliary: bool,
    /// Which fusion output the auxiliary head reads.
    #[serde(default)]
    pub auxiliary_input: AuxiliaryInput,
    /// DPT's convolutional decoder or DEPICT.
    #[serde(default)]
    pub decoder: SegmentationDecoder,
    /// DEPICT layers (ignored by the DPT decoder).
    #[serde(default = "default_depict_layers")]
    pub depict_layers: usize,
    /// DEPICT attention heads (ignored by the DPT decoder).
    #[serde(default = "default_depict_heads")]
    pub depict_heads: i64,
}

impl SegmentationHeadConfig {
    /// The DPT paper's defaults (`docs/architecture.md`): dropout 0.1 and an auxiliary head on
    /// the penultimate fusion output; DEPICT's reference sizes (3 layers, 3 heads) when chosen.
    pub fn new(num_classes: i64) -> Self {
        Self {
            num_classes,
            dropout: 0.1,
            auxiliary: true,
            auxiliary_input: AuxiliaryInput::Penultimate,
            decoder: SegmentationDecoder::Dpt,
            depict_layers: default_depict_layers(),
            depict_heads: default_depict_heads(),
        }
    }

    /// The DEPICT decoder this head config asks for, `None` for DPT's convolutional head.
    pub fn depict(&self) -> Option<crate::DepictConfig> {
        let variant = match self.decoder {
            SegmentationDecoder::Dpt => return None,
            SegmentationDecoder::DepictSa => crate::DepictVariant::Sa,
            SegmentationDecoder::DepictCa => crate::DepictVariant::Ca,
        };
        Some(crate::DepictConfig {
            num_layers: self.depict_layers,
            num_heads: self.depict_heads,
            ..crate::DepictConfig::new(variant, self.num_classes)
        })
    }
}

/// conv3x3 F -> F (no bias), BN, ReLU, dropout, conv1x1 F -> K: the body HF's segmentation and
/// auxiliary heads share (indices 0, 1, 4 of their `head` Sequential).
#[derive(Debug)]
struct Classifier {
    channels: i64,
    dropout: f64,
    conv0: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv4: nn::Conv2D,
}

impl Classifier {
    fn new(seq: &nn::Path, channels: i64, cfg: &SegmentationHeadConfig) -> Result<Self> {
        if cfg.num_classes < 1 {
            return Err(DecoderError::InvalidConfig {
                field: "num_classes",
                value: cfg.num_classes.to_string(),
                expected: "a positive class count",
            });
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            return Err(DecoderError::InvalidConfig {
                field: "dropout",
                value: cfg.dropout.to_string(),
                expected: "a probability in [0, 1)",
            });
        }
        if channels < 1 {
            return Err(DecoderError::InvalidConfig {
                field: "fusion_channels",
                value: channels.to_string(),
                expected: "a positive integer",
            });
        }
        let conv = nn::ConvConfig {
            padding: 1,
            bias: false,
            ..Default::default()
        };
        Ok(Self {
            channels,
            dropout: cfg.dropout,
            conv0: nn::conv2d(seq / 0, channels, channels, 3, conv),
            bn1: nn::batch_norm2d(seq / 1, channels, Default::default()),
            conv4: nn::conv2d(seq / 4, channels, cfg.num_classes, 1, Default::default()),
        })
    }

    fn forward(&self, features: &Tensor, train: bool) -> Tensor {
        let x = self
            .bn1
            .forward_t(&self.conv0.forward(features), train)
            .relu_();
        self.conv4.forward(&x.dropout(self.dropout, train))
    }
}

/// Auxiliary segmentation head (HF `DPTAuxiliaryHead`): deep supervision of an intermediate fusion
/// level, whose loss the trainer weighs by 0.2.
#[derive(Debug)]
pub struct AuxiliaryHead {
    body: Classifier,
}

impl AuxiliaryHead {
    /// Builds the head under `vs / "auxiliary_head" / "head"` (`vs` is the model root).
    pub fn new(vs: &nn::Path, fusion_channels: i64, cfg: &SegmentationHeadConfig) -> Result<Self> {
        Ok(Self {
            body: Classifier::new(&(vs / "auxiliary_head" / "head"), fusion_channels, cfg)?,
        })
    }

    /// Fused features B x F x h x w to logits B x K x h x w, resized bilinearly (align_corners =
    /// false, as HF does before its loss) to `image_size` when given.
    pub fn forward(
        &self,
        features: &Tensor,
        image_size: Option<(i64, i64)>,
        train: bool,
    ) -> Result<Tensor> {
        check_features("auxiliary head", features, self.body.channels)?;
        Ok(resize_to(
            "auxiliary head",
            self.body.forward(features, train),
            image_size,
        )?
        .contiguous())
    }
}

/// Logits of the segmentation head and, when built, of its auxiliary head.
#[derive(Debug)]
pub struct SegmentationOutput {
    /// Main logits B x K x H x W.
    pub logits: Tensor,
    /// Auxiliary logits B x K x H x W, always at the size of `logits`.
    pub auxiliary: Option<Tensor>,
}

/// Semantic segmentation head (HF `DPTSemanticSegmentationHead`) with the optional auxiliary head.
#[derive(Debug)]
pub struct SegmentationHead {
    body: Classifier,
    auxiliary: Option<AuxiliaryHead>,
    auxiliary_input: AuxiliaryInput,
}

impl SegmentationHead {
    /// Builds `head.head.{0,1,4}` and, if configured, `auxiliary_head.head.{0,1,4}` under the model
    /// root `vs`.
    pub fn new(vs: &nn::Path, fusion_channels: i64, cfg: &SegmentationHeadConfig) -> Result<Self> {
        let body = Classifier::new(&(vs / "head" / "head"), fusion_channels, cfg)?;
        let auxiliary = if cfg.auxiliary {
            Some(AuxiliaryHead::new(vs, fusion_channels, cfg)?)
        } else {
            None
        };
        Ok(Self {
            body,
            auxiliary,
            auxiliary_input: cfg.auxiliary_input,
        })
    }

    /// `levels` are the decoder's fusion outputs (`Decoder::forward_levels`): the main head reads the
    /// last (finest) and ends with bilinear x2 (align_corners = true, as HF); the auxiliary head reads
    /// the second-to-last by default (`docs/architecture.md`), or the last with
    /// [`AuxiliaryInput::Last`] as HF 4.57.1 does.
    pub fn forward(
        &self,
        levels: &[Tensor],
        image_size: Option<(i64, i64)>,
        train: bool,
    ) -> Result<SegmentationOutput> {
        let needed = match (&self.auxiliary, self.auxiliary_input) {
            (Some(_), AuxiliaryInput::Penultimate) => 2,
            _ => 1,
        };
        if levels.len() < needed {
            return Err(DecoderError::FusionLevels {
                head: "segmentation head",
                expected: needed,
                got: levels.len(),
            });
        }
        let finest = &levels[levels.len() - 1];
        check_features("segmentation head", finest, self.body.channels)?;
        let logits = upsample2(&self.body.forward(finest, train));
        // The decoder runs channels-last; logits leave in the default (NCHW) layout for the losses.
        let logits = resize_to("segmentation head", logits, image_size)?.contiguous();
        let auxiliary = match &self.auxiliary {
            None => None,
            Some(aux) => {
                let size = image_size.or_else(|| Some((logits.size()[2], logits.size()[3])));
                let level = match self.auxiliary_input {
                    AuxiliaryInput::Penultimate => &levels[levels.len() - 2],
                    AuxiliaryInput::Last => finest,
                };
                Some(aux.forward(level, size, train)?)
            }
        };
        Ok(SegmentationOutput { logits, auxiliary })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, nn::VarStore};

    fn features(b: i64, c: i64, h: i64, w: i64) -> Tensor {
        Tensor::randn([b, c, h, w], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn depth_head_doubles_resolution_and_names_its_convs_as_hf() {
        let vs = VarStore::new(Device::Cpu);
        let head = DepthHead::new(&vs.root(), 8).unwrap();
        let depth = head.forward(&features(2, 8, 5, 7), None).unwrap();
        assert_eq!(depth.size(), [2, 10, 14]);
        assert!(depth.min().double_value(&[]) >= 0.0);
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "head.head.0.bias",
                "head.head.0.weight",
                "head.head.2.bias",
                "head.head.2.weight",
                "head.head.4.bias",
                "head.head.4.weight"
            ]
        );
        assert_eq!(vs.variables()["head.head.0.weight"].size(), [4, 8, 3, 3]);
    }

    #[test]
    fn segmentation_head_gives_full_resolution_main_and_auxiliary_logits() {
        let vs = VarStore::new(Device::Cpu);
        let head = SegmentationHead::new(&vs.root(), 8, &SegmentationHeadConfig::new(5)).unwrap();
        let levels = [features(2, 8, 4, 6), features(2, 8, 8, 12)];
        let out = head.forward(&levels, None, false).unwrap();
        assert_eq!(out.logits.size(), [2, 5, 16, 24]);
        assert_eq!(out.auxiliary.unwrap().size(), [2, 5, 16, 24]);
        let out = head.forward(&levels, Some((15, 23)), false).unwrap();
        assert_eq!(out.logits.size(), [2, 5, 15, 23]);
        assert_eq!(out.auxiliary.unwrap().size(), [2, 5, 15, 23]);
        assert!(
            vs.variables()
                .contains_key("auxiliary_head.head.1.running_var")
        );
        assert!(!vs.variables().contains_key("head.head.0.bias"));
    }

    #[test]
    fn auxiliary_head_reads_the_second_to_last_fusion_level() {
        let vs = VarStore::new(Device::Cpu);
        let head = SegmentationHead::new(&vs.root(), 8, &SegmentationHeadConfig::new(3)).unwrap();
        let (coarse, fine) = (features(1, 8, 4, 4), features(1, 8, 8, 8));
        let a = head
            .forward(&[coarse.shallow_clone(), fine.shallow_clone()], None, false)
            .unwrap();
        let b = head
            .forward(&[coarse.shallow_clone(), features(1, 8, 8, 8)], None, false)
            .unwrap();
        let c = head
            .forward(&[features(1, 8, 4, 4), fine], None, false)
            .unwrap();
        assert!(
            a.auxiliary
                .as_ref()
                .unwrap()
                .equal(b.auxiliary.as_ref().unwrap())
        );
        assert!(!a.logits.equal(&b.logits));
        assert!(a.logits.equal(&c.logits));
        assert!(!a.auxiliary.unwrap().equal(&c.auxiliary.unwrap()));
    }

    #[test]
    fn dropout_acts_only_in_training() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = SegmentationHeadConfig {
            dropout: 0.5,
            auxiliary: false,
            ..SegmentationHeadConfig::new(3)
        };
        let head = SegmentationHead::new(&vs.root(), 8, &cfg).unwrap();
        let levels = [features(1, 8, 6, 6)];
        let eval = |h: &SegmentationHead| h.forward(&levels, None, false).unwrap().logits;
        assert!(eval(&head).equal(&eval(&head)));
        let train = |h: &SegmentationHead| h.forward(&levels, None, true).unwrap().logits;
        assert!(!train(&head).equal(&train(&head)));
    }

    #[test]
    fn heads_reject_wrong_features_and_configs() {
        let vs = VarStore::new(Device::Cpu);
        let depth = DepthHead::new(&vs.root(), 8).unwrap();
        assert!(matches!(
            depth.forward(&features(1, 6, 4, 4), None).unwrap_err(),
            DecoderError::FeatureShape {
                expected_channels: 8,
                ..
            }
        ));
        assert!(matches!(
            depth.forward(&features(1, 8, 4, 4), Some((0, 4))),
            Err(DecoderError::EmptyOutput { .. })
        ));
        assert!(matches!(
            DepthHead::new(&vs.root(), 1),
            Err(DecoderError::InvalidConfig { .. })
        ));
        let seg =
            SegmentationHead::new(&(vs.root() / "s"), 8, &SegmentationHeadConfig::new(2)).unwrap();
        assert!(matches!(
            seg.forward(&[features(1, 8, 4, 4)], None, false),
            Err(DecoderError::FusionLevels {
                expected: 2,
                got: 1,
                ..
            })
        ));
        let bad = SegmentationHeadConfig {
            num_classes: 0,
            ..SegmentationHeadConfig::new(2)
        };
        assert!(matches!(
            SegmentationHead::new(&(vs.root() / "t"), 8, &bad),
            Err(DecoderError::InvalidConfig {
                field: "num_classes",
                ..
            })
        ));
    }
}
