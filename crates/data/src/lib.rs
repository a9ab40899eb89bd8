//! glassbox-data: the data side of glassbox (DESIGN.md section 10), with no libtorch dependency.
//!
//! - [`sample`]: one RGB-D(-S) [`Sample`], the [`Dataset`] trait and DPT's normalisation;
//! - [`render`]: the synthetic indoor/outdoor ray-cast renderer, the embedded default dataset;
//! - [`readers`]: NYU-v2 sync, KITTI (Eigen lists, Garg/KB crops), 7-Scenes, ADE20K;
//! - [`layout`]: writing samples in the NYU and KITTI layouts, with split lists and a contact sheet;
//! - [`augment`]: training augmentation and the evaluation resize with its inverse mapping;
//! - [`loader`]: the parallel, prefetching, seeded batch loader;
//! - [`colormap`]: turbo and label palettes for pictures;
//! - [`io`]: image decoding/encoding with typed errors.

pub mod colormap;
pub mod error;
pub mod io;
pub mod render;
pub mod sample;

pub use error::{DataError, Result};
pub use render::{SceneKind, SyntheticConfig, SyntheticDataset, classes};
pub use sample::{Dataset, IGNORE_LABEL, NORM_MEAN, NORM_STD, Sample, denormalize};
pub mod augment;
pub mod layout;
pub mod loader;
pub mod readers;

pub use augment::{Augment, EvalResize, Letterbox};
pub use layout::Layout;
pub use loader::{Batch, BatchLoader, LoaderConfig};
pub use readers::{FileDataset, ReaderOptions, SevenScenesSplit};
