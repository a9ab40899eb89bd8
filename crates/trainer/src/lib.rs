//! glassbox's DPT model assembly and run machinery (DESIGN.md sections 4 and 11).
//!
//! - [`model`]: composes the ViT encoder, the DPT decoder and a task head from one serde config
//!   with named presets, and imports HF `DPTForDepthEstimation` checkpoints through one rename table;
//! - [`config`]: the run configuration (TOML, presets, overrides) saved into every run folder;
//! - [`data`]: training/validation splits as tensors and the deterministic batch of every step;
//! - [`optim`]: AdamW with explicit, checkpointable moments, two learning-rate groups, warm-up +
//!   cosine decay and gradient clipping;
//! - [`checkpoint`]: atomic safetensors checkpoints with checksummed records;
//! - [`train`]: the training loop, logs and the end-of-run report;
//! - [`eval`]: validation and benchmark evaluation (median and scale-shift alignment, baseline);
//! - [`report`]: loss curve, contact sheet and attention overlays as PNG;
//! - [`predict`]: depth PNGs and attention maps for image files;
//! - [`ablate`]: ablation grids (attention x readout x hooks x seeds), resumable, summarised as
//!   CSV / markdown tables and figures;
//! - [`probe`]: the spectral indicators (section 9) of the model on a fixed probe batch, logged over
//!   training into `spectral.jsonl` (figures: `glassbox_spectral::report`).

pub mod ablate;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod model;
pub mod optim;
pub mod predict;
pub mod probe;
pub mod report;
pub mod train;

pub use config::TrainConfig;
pub use model::{Dpt, DptConfig, DptOutput, HeadConfig, ModelError};
pub use train::{TrainOptions, TrainSummary, Trainer, train};
