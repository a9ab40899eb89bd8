//! glassbox-data: the data side of glassbox (see `docs/data.md`), with no libtorch dependency.
//!
//! - [`sample`]: one RGB-D(-S) [`Sample`], the [`Dataset`] trait, contiguous [`Subset`]s and DPT's
//!   normalisation;
//! - [`source`]: [`SourceConfig`], the trainer's TOML description of a dataset, opened into a
//!   [`Source`];
//! - [`render`]: the synthetic indoor/outdoor ray-cast renderer, the embedded default dataset;
//! - [`readers`]: NYU-v2 sync, KITTI (Eigen lists, Garg/KB crops), 7-Scenes, ADE20K, a generic folder;
//! - [`layout`]: writing samples in the NYU and KITTI layouts, with split lists and a contact sheet;
//! - [`augment`]: the one resize function and the training augmentation;
//! - [`loader`]: the streaming, prefetching, seeded batch [`Loader`];
//! - [`colormap`]: turbo and label palettes for pictures;
//! - [`io`]: image decoding/encoding with typed errors.

pub mod augment;
pub mod colormap;
pub mod error;
pub mod io;
pub mod layout;
pub mod loader;
pub mod readers;
pub mod render;
pub mod sample;
pub mod source;

pub use augment::{Augment, AugmentConfig, ColorJitter, fit_size, resize_sample};
pub use error::{DataError, Result};
pub use layout::Layout;
pub use loader::{Batch, EvalStream, Loader, LoaderConfig, Position, Shard, TrainStream};
pub use readers::{FileDataset, ReaderOptions};
pub use render::{SceneKind, SyntheticConfig, SyntheticDataset, classes};
pub use sample::{
    Dataset, IGNORE_LABEL, NORM_MEAN, NORM_STD, Sample, Subset, denormalize, split_last,
};
pub use source::{ADE20K_CLASSES, Source, SourceConfig};
