//! [`Dpt`]: ViT encoder -> Reassemble + RefineNet decoder -> depth or segmentation head
//! (`docs/architecture.md`).
//!
//! Variable names: the encoder under `encoder.` with timm names, the decoder and heads with HF's
//! (`neck.*`, `head.head.*`, `auxiliary_head.*`), so importing a checkpoint is one rename table
//! ([`crate::import`]).

use glassbox_attention::AttentionMaps;
use glassbox_decoder::{Decoder, DepthHead, SegmentationHead, SegmentationOutput};
use glassbox_encoder::Encoder;
use tch::{Tensor, nn};

use crate::DptError;
use crate::config::{DptConfig, HeadConfig};

// One head per model, built once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Head {
    Depth(DepthHead),
    Segmentation(SegmentationHead),
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
#[derive(Debug)]
pub struct Dpt {
    config: DptConfig,
    encoder: Encoder,
    decoder: Decoder,
    head: Head,
}

impl Dpt {
    /// Creates every parameter under `root` (the VarStore's root, so names match checkpoints).
    pub fn new(root: &nn::Path, config: &DptConfig) -> Result<Self, DptError> {
        config.validate()?;
        let encoder = Encoder::new(root / "encoder", &config.encoder)?;
        let decoder = Decoder::new(root, &config.decoder, config.encoder.hidden_size)?;
        let f = config.decoder.fusion_channels;
        let head = match &config.head {
            HeadConfig::Depth {} => Head::Depth(DepthHead::new(root, f)?),
            HeadConfig::Segmentation(seg) => {
                Head::Segmentation(SegmentationHead::new(root, f, seg)?)
            }
        };
        Ok(Self {
            config: config.clone(),
            encoder,
            decoder,
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
        hooks: &[Tensor],
        grid: (i64, i64),
        size: (i64, i64),
        train: bool,
    ) -> Result<DptOutput, DptError> {
        Ok(match &self.head {
            Head::Depth(head) => {
                let features = self.decoder.forward(hooks, grid, train)?;
                DptOutput::Disparity(head.forward(&features, Some(size))?)
            }
            Head::Segmentation(head) => {
                let levels = self.decoder.forward_levels(hooks, grid, train)?;
                DptOutput::Segmentation(head.forward(&levels, Some(size), train)?)
            }
        })
    }

    /// The training and inference pass on normalised images B x 3 x H x W (H, W multiples of 16;
    /// need not be square). Predictions come back at H x W.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<DptOutput, DptError> {
        let out = self.encoder.forward_t(images, train)?;
        let size = image_size(images);
        self.decode(&out.hooks, out.grid, size, train)
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
        let prediction = self.decode(&out.hooks, out.grid, image_size(images), false)?;
        Ok((prediction, out.maps))
    }
}

fn image_size(images: &Tensor) -> (i64, i64) {
    let s = images.size();
    (s[2], s[3])
}

/// Number of scalar parameters in a store, as papers count them.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.variables().values().map(|t| t.numel() as i64).sum()
}
