//! The ViT encoder of glassbox's DPT (`docs/architecture.md`): a plain ViT whose blocks use
//! standard or SVDA attention from `glassbox-attention`, returning the hooked token maps the
//! DPT decoder reassembles, and every block's attention maps when asked.
//!
//! ``no_run
//! use glassbox_encoder::{Encoder, VitConfig};
//! use tch::{Device, Kind, Tensor, nn};
//!
//! # fn main() -> Result<(), glassbox_encoder::EncoderError> {
//! let vs = nn::VarStore::new(Device::Cpu);
//! let encoder = Encoder::new(vs.root() / "encoder", &VitConfig::vit_tiny())?;
//! let images = Tensor::randn([2, 3, 256, 320], (Kind::Float, Device::Cpu)); // non-square is fine
//! let out = encoder.forward_t(&images, false)?;
//! assert_eq!(out.grid, (16, 20));
//! assert_eq!(out.hooks[0].size(), [2, 1 + 16 * 20, 192]);
//! # Ok(()) }
//! ``
//!
//! The tokens come from a patch convolution or, for DPT-Hybrid, from a BiT ResNet stem ([`bit`],
//! chosen by [`VitConfig::backbone`]).
//!
//! Parameter names follow timm's `VisionTransformer`, so timm checkpoints load by name and HF
//! DPT checkpoints through one rename table ([`checkpoint`]).

pub mod bit;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod sparse;
pub mod vit;

pub use bit::BitConfig;
pub use config::{Backbone, VitConfig};
pub use error::EncoderError;
pub use sparse::{EncoderMacs, Saliency, SaliencyScorer, SelectionQuality};
pub use vit::{Block, Encoder, EncoderOutput};
