//! [`Dpt`]: ViT encoder -> Reassemble + RefineNet decoder -> depth or segmentation head
//! (`docs/architecture.md`).
//!
//! Variable names: the encoder under `encoder.` with timm names, the decoder and heads with HF's
//! (`neck.*`, `head.head.*`, `auxiliary_head.*`), so importing a checkpoint is one rename table
//! ([`crate::import`]).

use glassbox_attention::AttentionMaps;
use glassbox_decoder::{
    Decoder, Depict, DepictDiagnostics, DepthHead, SegmentationHead, SegmentationOutput,
};
use glassbox_encoder::{Backbone, Encoder, EncoderOutput, Saliency};
use tch::{Tensor, nn};

use crate::DptError;
use crate::config::{DptConfig, HeadConfig};

// One head per model, built once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Head {
    Depth(Decoder, DepthHead),
    Segmentation(Decoder, SegmentationHead),
    /// DEPICT reads the last encoder block's tokens directly; no Reassemble or fusion is built.
    Depict(Depict),
}

/// What a forward pass predicts.
#[derive(Debug)]
pub enum DptOutput {
    /// Non-negative inverse depth (disparity, up to scale and shift), B x H x W.
    Disparity(Tensor),
    /// Class logits B x K x H x W (and the auxiliary head's, when configured).
    Segmentation(SegmentationOutput),
}

/// A DPT model; its variables live in the `VarStore` whose root was passed to [`Dpt::new`].
/// With a DEPICT segmentation decoder, the model is the ViT encoder plus DEPICT (variables under
/// `depict.`), and DPT's Reassemble and fusion are not built.
#[derive(Debug)]
pub struct Dpt {
    config: DptConfig,
    encoder: Encoder,
    head: Head,
}

impl Dpt {
    /// Creates every parameter under `root` (the VarStore's root, so names match checkpoints).
    pub fn new(root: &nn::Path, config: &DptConfig) -> Result<Self, DptError> {
        config.validate()?;
        let encoder = Encoder::new(root / "encoder", &config.encoder)?;
        let d = config.encoder.hidden_size;
        let f = config.decoder.fusion_channels;
        let decoder = || match config.encoder.backbone {
            Backbone::Vit => Decoder::new(root, &config.decoder, d),
            Backbone::Hybrid(_) => Decoder::hybrid(root, &config.decoder, d),
        };
        let depict = match &config.head {
            HeadConfig::Segmentation(seg) => seg.depict(),
            HeadConfig::Depth {} => None,
        };
        let head = match (&config.head, depict) {
            (_, Some(depict)) => Head::Depict(Depict::new(&(root / "depict"), d, &depict)?),
            (HeadConfig::Depth {}, None) => Head::Depth(decoder()?, DepthHead::new(root, f)?),
            (HeadConfig::Segmentation(seg), None) => {
                Head::Segmentation(decoder()?, SegmentationHead::new(root, f, seg)?)
            }
        };
        Ok(Self {
            config: config.clone(),
            encoder,
            head,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &DptConfig {
        &self.config
    }

    /// The ViT encoder, e.g. to read SVDA's sigma per block.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    fn decode(
        &self,
        out: &EncoderOutput,
        size: (i64, i64),
        train: bool,
    ) -> Result<DptOutput, DptError> {
        let grid = out.grid;
        // DPT-Hybrid: the ResNet maps R0, R1 take the first two hooks' places.
        let hooks: Vec<Tensor> = out
            .features
            .iter()
            .chain(out.hooks.iter().skip(out.features.len()))
            .map(Tensor::shallow_clone)
            .collect();
        let hooks = hooks.as_slice();
        Ok(match &self.head {
            Head::Depict(depict) => {
                let logits = depict.forward(&last_patch_tokens(&out.hooks)?, grid, size)?;
                DptOutput::Segmentation(SegmentationOutput {
                    logits,
                    auxiliary: None,
                })
            }
            Head::Depth(decoder, head) => {
                let features = decoder.forward(hooks, grid, train)?;
                DptOutput::Disparity(head.forward(&features, Some(size))?)
            }
            Head::Segmentation(decoder, head) => {
                let levels = decoder.forward_levels(hooks, grid, train)?;
                DptOutput::Segmentation(head.forward(&levels, Some(size), train)?)
            }
        })
    }

    /// The DEPICT decoder, when the model has one (for its white-box diagnostics and pictures).
    pub fn depict(&self) -> Option<&Depict> {
        match &self.head {
            Head::Depict(depict) => Some(depict),
            _ => None,
        }
    }

    /// DEPICT's white-box diagnostics (`docs/architecture.md`, DEPICT) on the tokens the encoder
    /// makes of `images` (evaluation mode, no gradient); `None` for other heads.
    pub fn depict_diagnostics(
        &self,
        images: &Tensor,
    ) -> Result<Option<DepictDiagnostics>, DptError> {
        let Some(depict) = self.depict() else {
            return Ok(None);
        };
        tch::no_grad(|| {
            let out = self.encoder.forward_t(images, false)?;
            Ok(Some(depict.diagnostics(&last_patch_tokens(&out.hooks)?)?))
        })
    }

    /// The training and inference pass on normalised images B x 3 x H x W (H, W multiples of 16;
    /// need not be square). Predictions come back at H x W.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<DptOutput, DptError> {
        Ok(self.forward_with_saliency_t(images, train)?.0)
    }

    /// [`Self::forward_t`] plus, for a sparse encoder (keep ratio < 1, `docs/sparse.md`), what it
    /// kept and, in training passes, the saliency mass its scorer learns from.
    pub fn forward_with_saliency_t(
        &self,
        images: &Tensor,
        train: bool,
    ) -> Result<(DptOutput, Option<Saliency>), DptError> {
        let out = self.encoder.forward_t(images, train)?;
        let size = image_size(images);
        let prediction = self.decode(&out, size, train)?;
        Ok((prediction, out.saliency))
    }

    /// Runs later passes at another keep ratio (1 = dense); below 1 it needs a model configured
    /// sparse, which has the saliency scorer.
    pub fn set_keep_ratio(&mut self, keep_ratio: f64) -> Result<(), DptError> {
        Ok(self.encoder.set_keep_ratio(keep_ratio)?)
    }

    /// Disparity (relative inverse depth) B x H x W; an error for a segmentation model.
    pub fn disparity_t(&self, images: &Tensor, train: bool) -> Result<Tensor, DptError> {
        match self.forward_t(images, train)? {
            DptOutput::Disparity(d) => Ok(d),
            DptOutput::Segmentation(_) => Err(DptError::WrongHead {
                have: "segmentation",
                wanted: "disparity",
            }),
        }
    }

    /// The analysis pass (evaluation mode): the prediction plus every encoder block's attention
    /// maps, for the spectral indicators and attention pictures.
    pub fn forward_with_maps(
        &self,
        images: &Tensor,
    ) -> Result<(DptOutput, Vec<AttentionMaps>), DptError> {
        let out = self.encoder.forward_with_maps(images)?;
        let prediction = self.decode(&out, image_size(images), false)?;
        Ok((prediction, out.maps))
    }
}

/// The deepest hooked block's patch tokens B x N x D (readout token dropped): DEPICT's input.
fn last_patch_tokens(hooks: &[Tensor]) -> Result<Tensor, DptError> {
    let last = hooks.last().ok_or_else(|| {
        DptError::InvalidConfig("the encoder returned no hooked block for DEPICT".into())
    })?;
    let n = last.size()[1];
    Ok(last.narrow(1, 1, n - 1))
}

fn image_size(images: &Tensor) -> (i64, i64) {
    let s = images.size();
    (s[2], s[3])
}

/// Number of scalar parameters in a store, as papers count them.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.variables().values().map(|t| t.numel() as i64).sum()
}
