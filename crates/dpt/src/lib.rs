//! glassbox-dpt: the assembled Dense Prediction Transformer (Ranftl et al. 2021), a ViT encoder
//! whose tokens are reassembled at four depths and fused by RefineNet blocks into a depth or
//! segmentation prediction. The maths is in `docs/architecture.md`.
//!
//! This crate is what a user depends on for DPT inference or to build their own training loop:
//! it links tch and the attention, encoder and decoder crates only, with no CLI, plotting or BLAS
//! dependency (the `glassbox-trainer` crate adds those).
//!
//! - [`config`]: [`DptConfig`], one serde struct with named presets (`dpt-tiny`, `dpt-base`,
//!   `dpt-large`, `dpt-test`), each size stated once, and the translation of an HF `config.json`;
//! - [`model`]: [`Dpt`] with `new(path, config)` and `forward_t`;
//! - [`import`]: HF `DPTForDepthEstimation` / `DPTForSemanticSegmentation` and timm ViT
//!   safetensors through one rename table;
//! - [`export`]: the same table backwards, an HF `config.json` and state dict that
//!   `from_pretrained` loads.
//!
//! ```no_run
//! use glassbox_dpt::{Dpt, DptConfig};
//! use tch::{Device, Kind, Tensor, nn};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = Dpt::new(&vs.root(), &DptConfig::preset("dpt-tiny-svda")?)?;
//! let images = Tensor::zeros([1, 3, 256, 256], (Kind::Float, Device::Cpu));
//! let disparity = model.disparity_t(&images, false)?; // 1 x 256 x 256, relative inverse depth
//! # Ok::<(), glassbox_dpt::DptError>(())
//! ```

pub mod config;
pub mod export;
pub mod import;
pub mod model;

pub use config::{BackboneKind, DptConfig, HeadConfig, PRESETS};
pub use model::{Dpt, DptOutput, parameter_count};

/// Everything that can go wrong when building, running or loading a DPT.
#[derive(Debug, thiserror::Error)]
pub enum DptError {
    #[error("invalid DPT config: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Encoder(#[from] glassbox_encoder::EncoderError),
    #[error(transparent)]
    Decoder(#[from] glassbox_decoder::DecoderError),
    #[error(transparent)]
    Checkpoint(#[from] glassbox_decoder::checkpoint::CheckpointError),
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot export as an HF folder: {0}")]
    Export(String),
    #[error("this model has a {have} head, but {wanted} output was asked for")]
    WrongHead {
        have: &'static str,
        wanted: &'static str,
    },
}
