//! glassbox-trainer: training, evaluation, prediction and ablation runs of the DPT models of
//! glassbox-dpt, on the data of glassbox-data (`docs/training.md`). The `glassbox` binary is a
//! thin CLI over these modules.
//!
//! - [`config`]: the run configuration (TOML, presets) saved into every run folder, and
//!   [`overrides`], the command-line changes to it;
//! - [`data`]: the run's training and validation loaders; [`tensor`]: the one ndarray <-> tensor
//!   boundary;
//! - [`train`]: one update ([`train::step`]), the loop ([`train::run`]) and its logs;
//! - [`optim`]: AdamW with explicit, checkpointable moments, learning-rate groups, warm-up +
//!   cosine decay and gradient clipping;
//! - [`checkpoint`]: atomic safetensors checkpoints with checksummed records ([`fs`]: atomic
//!   writes and file errors);
//! - [`eval`]: validation and benchmark evaluation (median and scale-shift alignment, baseline);
//! - [`weights`]: model files from and for elsewhere (`--init`, HF folders, single-file
//!   exports);
//! - [`predict`]: depth PNGs and attention maps for image files;
//! - [`probe`]: the spectral indicators of the model on a fixed probe batch, logged over
//!   training (figures: `glassbox_spectral::report`);
//! - [`report`]: training curves, contact sheet and attention overlays; [`page`]: the run's one
//!   HTML page (`runs/<name>/index.html`) showing them all; [`comparison`]: the page comparing
//!   runs (`glassbox report`), tables side by side and curves overlaid;
//! - [`whitebox`]: DEPICT's white-box diagnostics over training and their figures;
//! - [`ablate`]: ablation grids (attention x readout x hooks x seeds), resumable, summarised as
//!   CSV / markdown tables and figures.

pub mod ablate;
pub mod checkpoint;
pub mod comparison;
pub mod config;
pub mod data;
pub mod eval;
pub mod fs;
pub mod launcher;
pub mod optim;
pub mod overrides;
pub mod page;
pub mod predict;
pub mod probe;
pub mod report;
pub mod tensor;
pub mod train;
pub mod weights;
pub mod whitebox;

pub use config::TrainConfig;
pub use overrides::Overrides;
pub use train::{TrainOptions, TrainSummary, Trainer, train};
