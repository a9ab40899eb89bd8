//! Where samples come from, as the trainer's TOML config names it (see `docs/data.md`): one
//! [`SourceConfig`] per dataset kind, opened into a [`Source`] that every consumer reads through
//! the [`Dataset`] trait, so the loader streams rendered scenes and files on disk alike.
//!
//! Decisions where the brief is silent:
//! - a relative `split` path is looked up relative to the current directory first, then relative
//!   to `root` (a list kept beside the data works from anywhere; one given on the command line
//!   works as typed);
//! - an opened file source with no sample is an error ([`DataError::EmptySource`]) naming the
//!   source and the files it looked for: an empty training set is a wrong path, not a dataset;
//! - `ReaderOptions` (crop, skip_bad) concern files and are ignored by the synthetic source.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::readers::{FileDataset, ReaderOptions};
use crate::render::{LidarConfig, SceneKind, SyntheticConfig, SyntheticDataset};
use crate::sample::{Dataset, Sample};

/// ADE20K's class count once "other" (0) is the ignore label (SceneParsing's 150 classes).
pub const ADE20K_CLASSES: usize = 150;

/// One dataset as the training config describes it; `kind` selects the variant in TOML, e.g.
/// `{ kind = "sevenscenes", root = "data/redkitchen", frames = [0, 500] }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// Rendered scenes, nothing on disk; `size` = [height, width], `None` = the caller's image
    /// size (see [`SourceConfig::open`]).
    Synthetic {
        /// Indoor or outdoor scenes.
        scene: SceneKind,
        /// Number of scenes.
        len: usize,
        /// Dataset seed; scene `i` is a pure function of (seed, i).
        seed: u64,
        /// Rendered [height, width]; `None` renders at the training size.
        #[serde(default)]
        size: Option<[usize; 2]>,
        /// Sparse LiDAR-like ground truth (64 beams), as KITTI has.
        #[serde(default)]
        lidar: bool,
    },
    /// A 7-Scenes sequence folder: every `frame-N.color.jpg` that has its `.depth.png`, found on
    /// disk (any numbering, gaps allowed); with `frames` = [first, end), only those numbers.
    SevenScenes {
        /// The sequence folder.
        root: PathBuf,
        /// Frame numbers [first, end) to keep.
        #[serde(default)]
        frames: Option<[usize; 2]>,
    },
    /// NYU-v2 "sync": with `split`, a split list (lines `rgb depth [focal] [labels]`, paths
    /// relative to `root`); without, every `rgb_*.jpg` with its `sync_depth_*.png` in `root` and
    /// its immediate subfolders (the scene folders), sorted.
    Nyu {
        /// The sync folder.
        root: PathBuf,
        /// Split list.
        #[serde(default)]
        split: Option<PathBuf>,
    },
    /// KITTI: with `split`, an Eigen-style list (RGB relative to `root`, depth relative to
    /// `depth_root`, else `root`); without, `root/rgb/*.png` with `root/depth/<same name>` (and
    /// `root/label/` when present); depth = value / 256 m.
    Kitti {
        /// The raw-data root (RGB), or the gen-data folder.
        root: PathBuf,
        /// Split list.
        #[serde(default)]
        split: Option<PathBuf>,
        /// Root of the annotated depth, when it is not `root`.
        #[serde(default)]
        depth_root: Option<PathBuf>,
    },
    /// ADE20K in the ADEChallengeData2016 layout: `root/images/<split>/*.jpg` with
    /// `root/annotations/<split>/*.png`; `split` is "training" or "validation".
    Ade20k {
        /// The ADEChallengeData2016 folder.
        root: PathBuf,
        /// "training" or "validation".
        split: String,
    },
    /// A generic folder: `root/rgb/*.{png,jpg}` with `root/depth/<stem>.png` (16-bit, metres =
    /// value * `depth_scale`) and/or `root/labels/<stem>.png` (stored ids, 255 = ignore).
    Folder {
        /// The folder holding `rgb/`, `depth/`, `labels/`.
        root: PathBuf,
        /// Metres per depth PNG unit (1/1000 for millimetres).
        depth_scale: f32,
    },
}

impl SourceConfig {
    /// Opens the source: builds the renderer (at `size`, else `image_size` = (height, width)) or
    /// scans the folder / reads the split list. A file source with no sample is an error.
    pub fn open(&self, image_size: (usize, usize), options: ReaderOptions) -> Result<Source> {
        let files = match self {
            SourceConfig::Synthetic {
                scene,
                len,
                seed,
                size,
                lidar,
            } => {
                let [height, width] = size.unwrap_or([image_size.0, image_size.1]);
                let config = SyntheticConfig {
                    kind: *scene,
                    width,
                    height,
                    len: *len,
                    seed: *seed,
                    lidar: lidar.then(LidarConfig::default),
                };
                return SyntheticDataset::new(config).map(Source::Synthetic);
            }
            SourceConfig::SevenScenes { root, frames } => {
                if let Some([first, end]) = frames
                    && first >= end
                {
                    return Err(DataError::Config(format!(
                        "7-Scenes frames [{first}, {end}): the first frame must be below the end"
                    )));
                }
                FileDataset::seven_scenes(root, frames.map(|[a, b]| a..b), options)?
            }
            SourceConfig::Nyu { root, split: None } => FileDataset::nyu_dir(root, options)?,
            SourceConfig::Nyu {
                root,
                split: Some(split),
            } => FileDataset::nyu_split(&resolve_split(root, split)?, root, options)?,
            SourceConfig::Kitti {
                root, split: None, ..
            } => FileDataset::kitti_dir(root, options)?,
            SourceConfig::Kitti {
                root,
                split: Some(split),
                depth_root,
            } => FileDataset::kitti_split(
                &resolve_split(root, split)?,
                root,
                depth_root.as_deref().unwrap_or(root),
                options,
            )?,
            SourceConfig::Ade20k { root, split } => {
                if split != "training" && split != "validation" {
                    return Err(DataError::Config(format!(
                        "ADE20K split {split:?}, expected \"training\" or \"validation\""
                    )));
                }
                FileDataset::ade20k(
                    &root.join("images").join(split),
                    &root.join("annotations").join(split),
                    options,
                )?
            }
            SourceConfig::Folder { root, depth_scale } => {
                FileDataset::folder(root, *depth_scale, options)?
            }
        };
        if files.is_empty() {
            return Err(DataError::EmptySource {
                dataset: self.describe(),
                looked_for: self.looked_for(),
            });
        }
        Ok(Source::Files(files))
    }

    /// A one-line description for logs and error messages, e.g. `7-Scenes data/x (frames 0-499)`.
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Synthetic {
                scene,
                len,
                seed,
                size,
                lidar,
            } => {
                let size =
                    size.map_or("at the image size".to_string(), |[h, w]| format!("{h}x{w}"));
                let lidar = if *lidar { ", LiDAR depth" } else { "" };
                let scene = format!("{scene:?}").to_lowercase();
                format!("synthetic {scene}, {len} scenes, seed {seed}, {size}{lidar}")
            }
            SourceConfig::SevenScenes { root, frames } => {
                let frames = match frames {
                    Some([a, b]) => format!("frames {a}-{}", b.saturating_sub(1)),
                    None => "all frames".to_string(),
                };
                format!("7-Scenes {} ({frames})", root.display())
            }
            SourceConfig::Nyu { root, split } => {
                format!("NYU-v2 {}{}", root.display(), split_note(split.as_deref()))
            }
            SourceConfig::Kitti {
                root,
                split,
                depth_root,
            } => {
                let depth = depth_root
                    .as_ref()
                    .map_or(String::new(), |d| format!(", depth {}", d.display()));
                let split = split_note(split.as_deref());
                format!("KITTI {}{split}{depth}", root.display())
            }
            SourceConfig::Ade20k { root, split } => format!("ADE20K {} ({split})", root.display()),
            SourceConfig::Folder { root, depth_scale } => {
                format!("folder {} (depth scale {depth_scale})", root.display())
            }
        }
    }

    /// The files a file source looks for, for the empty-source error.
    fn looked_for(&self) -> String {
        match self {
            SourceConfig::Synthetic { .. } => "nothing: scenes are rendered".to_string(),
            SourceConfig::SevenScenes { .. } => {
                "frame-N.color.jpg with frame-N.depth.png beside it".to_string()
            }
            SourceConfig::Nyu { split: None, .. } => {
                "rgb_X.jpg with sync_depth_X.png, in the folder and its immediate subfolders"
                    .to_string()
            }
            SourceConfig::Nyu { split: Some(_), .. }
            | SourceConfig::Kitti { split: Some(_), .. } => "the lines of the split list".into(),
            SourceConfig::Kitti { split: None, .. } => {
                "rgb/NAME.png with depth/NAME.png".to_string()
            }
            SourceConfig::Ade20k { split, .. } => {
                format!("images/{split}/NAME.jpg with annotations/{split}/NAME.png")
            }
            SourceConfig::Folder { .. } => {
                "rgb/STEM.png|jpg with depth/STEM.png and/or labels/STEM.png".to_string()
            }
        }
    }

    /// The class count of a source whose label coding is known: the renderer's classes for
    /// synthetic scenes, ADE20K's 150; `None` where the labels are whatever the files hold (a
    /// folder, NYU or KITTI label PNGs), so the run must say.
    pub fn num_classes(&self) -> Option<usize> {
        match self {
            SourceConfig::Synthetic { .. } => Some(crate::render::classes::COUNT),
            SourceConfig::Ade20k { .. } => Some(ADE20K_CLASSES),
            _ => None,
        }
    }

    /// The data folder of a file source (`None` for synthetic scenes).
    pub fn root(&self) -> Option<&Path> {
        match self {
            SourceConfig::Synthetic { .. } => None,
            SourceConfig::SevenScenes { root, .. }
            | SourceConfig::Nyu { root, .. }
            | SourceConfig::Kitti { root, .. }
            | SourceConfig::Ade20k { root, .. }
            | SourceConfig::Folder { root, .. } => Some(root),
        }
    }

    /// Points a file source at another folder (a `--data-root` override); synthetic scenes have no
    /// folder, so setting one is an error rather than silently ignored.
    pub fn set_root(&mut self, new_root: PathBuf) -> Result<()> {
        match self {
            SourceConfig::Synthetic { .. } => Err(DataError::Config(format!(
                "cannot set the data root to {}: the source is synthetic",
                new_root.display()
            ))),
            SourceConfig::SevenScenes { root, .. }
            | SourceConfig::Nyu { root, .. }
            | SourceConfig::Kitti { root, .. }
            | SourceConfig::Ade20k { root, .. }
            | SourceConfig::Folder { root, .. } => {
                *root = new_root;
                Ok(())
            }
        }
    }
}

fn split_note(split: Option<&Path>) -> String {
    split.map_or(String::new(), |s| format!(" (split {})", s.display()))
}

/// A relative split list is taken relative to the current directory when it exists there, else
/// relative to `root`; a list found in neither place is an error naming both.
fn resolve_split(root: &Path, split: &Path) -> Result<PathBuf> {
    if split.is_absolute() || split.is_file() {
        return Ok(split.to_path_buf());
    }
    let under_root = root.join(split);
    if under_root.is_file() {
        return Ok(under_root);
    }
    Err(DataError::io(
        split,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("split list not found here nor as {}", under_root.display()),
        ),
    ))
}

/// An opened source: rendered scenes or files on disk, read through [`Dataset`].
#[derive(Debug, Clone)]
pub enum Source {
    /// The renderer.
    Synthetic(SyntheticDataset),
    /// One of the file readers.
    Files(FileDataset),
}

impl Dataset for Source {
    fn len(&self) -> usize {
        match self {
            Source::Synthetic(d) => d.len(),
            Source::Files(d) => d.len(),
        }
    }

    fn get(&self, index: usize) -> Result<Sample> {
        match self {
            Source::Synthetic(d) => d.get(index),
            Source::Files(d) => d.get(index),
        }
    }
}
