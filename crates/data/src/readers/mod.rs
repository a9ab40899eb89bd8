//! Readers for the real datasets (see `docs/data.md`): NYU-v2 "sync" (RGB JPEG + 16-bit depth PNG
//! in millimetres), KITTI (RGB PNG + 16-bit depth PNG, value / 256 m, Eigen split lists, Garg and
//! KB crops), 7-Scenes sequence folders (`frame-NNNNNN.color.jpg` + `.depth.png` in mm), ADE20K
//! (image + 8-bit label PNG, class 0 "other" read as the ignore label) and a generic folder of RGB
//! with 16-bit depth and/or label PNGs. In every depth format 0 means invalid.
//!
//! All of them are one [`FileDataset`]: a list of file triples plus the depth scale, the label
//! coding and a crop. Opening scans folders or reads the split list and checks that listed files
//! exist; decoding happens in [`Dataset::get`], which returns a typed error naming the file for
//! anything wrong (the loader's `skip_bad` skips and counts). `SourceConfig` in `source.rs` is the
//! configured way to open them.

pub mod split;

use std::ops::Range;
use std::path::{Path, PathBuf};

use glassbox_metrics::{Crop, CropWindow};
use ndarray::{Array2, s};

use crate::error::{DataError, Result};
use crate::io::{read_depth_png, read_labels_png, read_rgb};
use crate::sample::{Dataset, IGNORE_LABEL, Sample, validate_depth};
pub use split::{SplitEntry, format_split, parse_split, read_split};

/// NYU-v2 depth PNG scale: value / 1000 = metres.
pub const NYU_DEPTH_SCALE: f32 = 1.0 / 1000.0;
/// KITTI depth PNG scale: value / 256 = metres.
pub const KITTI_DEPTH_SCALE: f32 = 1.0 / 256.0;
/// 7-Scenes depth PNG scale: millimetres.
pub const SEVEN_SCENES_DEPTH_SCALE: f32 = 1.0 / 1000.0;
/// 7-Scenes focal length in pixels (fx = fy of the Kinect colour camera, `camera-intrinsics.txt`).
pub const SEVEN_SCENES_FOCAL: f32 = 585.0;

/// Per-reader options.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReaderOptions {
    /// Skip (and count) listed samples whose files are missing instead of failing to open.
    pub skip_bad: bool,
    /// Crop applied to every sample, the same [`Crop`] the metrics evaluate with: `Kb` cuts the
    /// 352x1216 window out of every map; `Garg` and `Eigen` keep the image whole and mark depth
    /// outside their window invalid (the model still sees the context).
    pub crop: Crop,
    /// The class count of the model that will read the labels: a label file holding a class id
    /// at or above it (other than the ignore label) is an error naming the file, not a crash in
    /// the loss. `None` accepts every id.
    pub num_classes: Option<usize>,
}

/// One sample's files.
#[derive(Debug, Clone, PartialEq)]
pub struct FileEntry {
    /// RGB image.
    pub rgb: PathBuf,
    /// Depth PNG, if the sample has depth ground truth.
    pub depth: Option<PathBuf>,
    /// Label PNG, if the sample has labels.
    pub labels: Option<PathBuf>,
    /// Focal length in pixels, when known (split lists carry it). No reader uses it; it is kept
    /// for camera-aware consumers, e.g. metric-depth scaling by focal length.
    pub focal: Option<f32>,
}

/// A dataset of image files on disk; see the module docs for the formats.
#[derive(Debug, Clone)]
pub struct FileDataset {
    entries: Vec<FileEntry>,
    depth_scale: f32,
    options: ReaderOptions,
    skipped: Vec<(PathBuf, String)>,
    /// ADE20K coding: 0 ("other") becomes the ignore label and class k becomes k - 1.
    reduce_zero_label: bool,
}

impl FileDataset {
    /// Builds a dataset from explicit entries, checking that every named file exists (missing
    /// ones are an error, or skipped and recorded with `skip_bad`).
    pub fn from_entries(
        entries: Vec<FileEntry>,
        depth_scale: f32,
        options: ReaderOptions,
    ) -> Result<Self> {
        let mut kept = Vec::with_capacity(entries.len());
        let mut skipped = Vec::new();
        for entry in entries {
            let missing = std::iter::once(&entry.rgb)
                .chain(entry.depth.iter())
                .chain(entry.labels.iter())
                .find(|p| !p.is_file());
            match missing {
                None => kept.push(entry),
                Some(path) if options.skip_bad => {
                    skipped.push((path.clone(), "missing file".to_string()))
                }
                Some(path) => {
                    return Err(DataError::io(
                        path,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "listed file does not exist",
                        ),
                    ));
                }
            }
        }
        Ok(FileDataset {
            entries: kept,
            depth_scale,
            options,
            skipped,
            reduce_zero_label: false,
        })
    }

    /// Samples of a split list: RGB paths relative to `rgb_root`, depth and label paths relative to
    /// `depth_root`. Lines whose depth is `None` are kept (the sample has no valid depth).
    pub fn from_split(
        list: &Path,
        rgb_root: &Path,
        depth_root: &Path,
        depth_scale: f32,
        options: ReaderOptions,
    ) -> Result<Self> {
        let entries = read_split(list)?
            .into_iter()
            .map(|e| FileEntry {
                rgb: rgb_root.join(e.rgb),
                depth: e.depth.map(|d| depth_root.join(d)),
                labels: e.labels.map(|l| depth_root.join(l)),
                focal: e.focal,
            })
            .collect();
        Self::from_entries(entries, depth_scale, options)
    }

    /// NYU-v2 sync samples from a split list (paths relative to `root`), depth in millimetres.
    pub fn nyu_split(list: &Path, root: &Path, options: ReaderOptions) -> Result<Self> {
        Self::from_split(list, root, root, NYU_DEPTH_SCALE, options)
    }

    /// All NYU-v2 sync samples under `root`, in `root` itself and in its immediate subfolders (the
    /// scene folders of the sync release): every `rgb_X.jpg` that has its `sync_depth_X.png`, with
    /// `label_X.png` when present, sorted by relative path.
    pub fn nyu_dir(root: &Path, options: ReaderOptions) -> Result<Self> {
        let mut entries = nyu_pairs(root)?;
        for name in list_dir(root)? {
            let sub = root.join(&name);
            if sub.is_dir() {
                entries.extend(nyu_pairs(&sub)?);
            }
        }
        entries.sort_by(|a, b| a.rgb.cmp(&b.rgb));
        Self::from_entries(entries, NYU_DEPTH_SCALE, options)
    }

    /// KITTI samples from an Eigen-style split list: RGB relative to `rgb_root` (the raw data),
    /// ground truth relative to `depth_root` (the annotated depth), value / 256 m.
    pub fn kitti_split(
        list: &Path,
        rgb_root: &Path,
        depth_root: &Path,
        options: ReaderOptions,
    ) -> Result<Self> {
        Self::from_split(list, rgb_root, depth_root, KITTI_DEPTH_SCALE, options)
    }

    /// KITTI samples in the layout gen-data writes (and the project's kitti-samples use): every
    /// `root/rgb/NAME.png` with `root/depth/NAME.png`, plus `root/label/NAME.png` when `root/label`
    /// exists.
    pub fn kitti_dir(root: &Path, options: ReaderOptions) -> Result<Self> {
        let (rgb_dir, depth_dir, label_dir) =
            (root.join("rgb"), root.join("depth"), root.join("label"));
        let has_labels = label_dir.is_dir();
        let entries = list_dir(&rgb_dir)?
            .into_iter()
            .filter(|n| n.ends_with(".png"))
            .map(|name| FileEntry {
                rgb: rgb_dir.join(&name),
                depth: Some(depth_dir.join(&name)),
                labels: has_labels.then(|| label_dir.join(&name)),
                focal: None,
            })
            .collect();
        Self::from_entries(entries, KITTI_DEPTH_SCALE, options)
    }

    /// The frames of one 7-Scenes sequence folder found on disk: every `frame-N.color.jpg` that has
    /// its `frame-N.depth.png` (millimetres), whatever the numbering and with gaps allowed, sorted
    /// by frame number; with `frames`, only numbers in that range.
    pub fn seven_scenes(
        dir: &Path,
        frames: Option<Range<usize>>,
        options: ReaderOptions,
    ) -> Result<Self> {
        let mut numbered: Vec<(usize, FileEntry)> = list_dir(dir)?
            .into_iter()
            .filter_map(|name| {
                let digits = name.strip_prefix("frame-")?.strip_suffix(".color.jpg")?;
                let number: usize = digits.parse().ok()?;
                let depth = dir.join(format!("frame-{digits}.depth.png"));
                let wanted = frames.as_ref().is_none_or(|r| r.contains(&number));
                (wanted && depth.is_file()).then(|| {
                    let entry = FileEntry {
                        rgb: dir.join(&name),
                        depth: Some(depth),
                        labels: None,
                        focal: Some(SEVEN_SCENES_FOCAL),
                    };
                    (number, entry)
                })
            })
            .collect();
        numbered.sort_by_key(|(number, _)| *number);
        let entries = numbered.into_iter().map(|(_, entry)| entry).collect();
        Self::from_entries(entries, SEVEN_SCENES_DEPTH_SCALE, options)
    }

    /// ADE20K-style segmentation pairs: every `images_dir/NAME.jpg` (or `.png`) with
    /// `labels_dir/NAME.png`. The label PNGs use ADE20K's coding (0 = "other", classes 1..=150);
    /// they are read as 0 -> ignore, k -> k - 1, 255 stays ignore (mmseg's `reduce_zero_label`).
    /// Samples have no depth (mask all false).
    pub fn ade20k(images_dir: &Path, labels_dir: &Path, options: ReaderOptions) -> Result<Self> {
        let entries = list_dir(images_dir)?
            .into_iter()
            .filter_map(|name| {
                let stem = name
                    .strip_suffix(".jpg")
                    .or_else(|| name.strip_suffix(".png"))?;
                Some(FileEntry {
                    rgb: images_dir.join(&name),
                    depth: None,
                    labels: Some(labels_dir.join(format!("{stem}.png"))),
                    focal: None,
                })
            })
            .collect();
        let mut dataset = Self::from_entries(entries, 1.0, options)?;
        dataset.reduce_zero_label = true;
        Ok(dataset)
    }

    /// A generic folder: every `root/rgb/STEM.{png,jpg,jpeg}` with `root/depth/STEM.png` (16-bit,
    /// metres = value * `depth_scale`) and/or `root/labels/STEM.png` (8-bit, stored ids, 255 =
    /// ignore); an image with neither is left out. `depth_scale` must be positive and finite.
    pub fn folder(root: &Path, depth_scale: f32, options: ReaderOptions) -> Result<Self> {
        if !(depth_scale.is_finite() && depth_scale > 0.0) {
            return Err(DataError::Config(format!(
                "folder {}: depth_scale {depth_scale} must be positive",
                root.display()
            )));
        }
        let rgb_dir = root.join("rgb");
        let entries = list_dir(&rgb_dir)?
            .into_iter()
            .filter_map(|name| {
                let (stem, ext) = name.rsplit_once('.')?;
                if !["png", "jpg", "jpeg"].contains(&ext.to_ascii_lowercase().as_str()) {
                    return None;
                }
                let existing = |dir: &str| {
                    let path = root.join(dir).join(format!("{stem}.png"));
                    path.is_file().then_some(path)
                };
                let (depth, labels) = (existing("depth"), existing("labels"));
                (depth.is_some() || labels.is_some()).then(|| FileEntry {
                    rgb: rgb_dir.join(&name),
                    depth,
                    labels,
                    focal: None,
                })
            })
            .collect();
        Self::from_entries(entries, depth_scale, options)
    }

    /// The files of each sample, in dataset order.
    pub fn entries(&self) -> &[FileEntry] {
        &self.entries
    }

    /// Samples left out at opening with `skip_bad`, with the reason.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    fn load(&self, entry: &FileEntry) -> Result<Sample> {
        let rgb = read_rgb(&entry.rgb)?;
        let (_, h, w) = rgb.dim();
        let check = |path: &Path, (fh, fw): (usize, usize)| {
            if (fh, fw) == (h, w) {
                Ok(())
            } else {
                Err(DataError::SizeMismatch {
                    path: path.to_path_buf(),
                    expected_w: w,
                    expected_h: h,
                    found_w: fw,
                    found_h: fh,
                })
            }
        };
        let depth = match &entry.depth {
            Some(path) => {
                let depth = read_depth_png(path, self.depth_scale)?;
                check(path, depth.dim())?;
                validate_depth(&path.display().to_string(), &depth)?;
                depth
            }
            None => Array2::zeros((h, w)),
        };
        let labels = match &entry.labels {
            Some(path) => {
                let mut labels = read_labels_png(path)?;
                check(path, labels.dim())?;
                if self.reduce_zero_label {
                    labels.mapv_inplace(reduce_zero_label);
                }
                if let Some(classes) = self.options.num_classes
                    && let Some(((row, col), &class)) = labels
                        .indexed_iter()
                        .find(|(_, c)| **c != IGNORE_LABEL && usize::from(**c) >= classes)
                {
                    return Err(DataError::LabelOutOfRange {
                        path: path.clone(),
                        class,
                        row,
                        col,
                        num_classes: classes,
                    });
                }
                Some(labels)
            }
            None => None,
        };
        let name = entry
            .rgb
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let mut sample = Sample::from_depth(name, rgb, depth, labels)?;
        apply_crop(&mut sample, self.options.crop, &entry.rgb)?;
        Ok(sample)
    }
}

impl Dataset for FileDataset {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let entry = self.entries.get(index).ok_or(DataError::IndexOutOfRange {
            index,
            len: self.entries.len(),
        })?;
        self.load(entry)
    }
}

/// ADE20K's label coding to ours: 0 ("other") and 255 are ignored, class k in 1..=254 becomes k - 1.
fn reduce_zero_label(label: u8) -> u8 {
    match label {
        0 | IGNORE_LABEL => IGNORE_LABEL,
        k => k - 1,
    }
}

/// The NYU sync pairs directly in `dir`, labels attached when present.
fn nyu_pairs(dir: &Path) -> Result<Vec<FileEntry>> {
    Ok(list_dir(dir)?
        .into_iter()
        .filter_map(|name| {
            let id = name.strip_prefix("rgb_")?.strip_suffix(".jpg")?;
            let depth = dir.join(format!("sync_depth_{id}.png"));
            let labels = dir.join(format!("label_{id}.png"));
            depth.is_file().then(|| FileEntry {
                rgb: dir.join(&name),
                depth: Some(depth),
                labels: labels.is_file().then_some(labels),
                focal: None,
            })
        })
        .collect())
}

/// The names in `dir`, sorted.
fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// Marks depth outside `window` invalid, keeping every map its size.
fn keep_only(sample: &mut Sample, window: CropWindow) {
    for ((y, x), m) in sample.mask.indexed_iter_mut() {
        if !window.contains(y, x) {
            *m = false;
        }
    }
    ndarray::Zip::from(&mut sample.depth)
        .and(&sample.mask)
        .for_each(|d, &m| {
            if !m {
                *d = 0.0;
            }
        });
}

fn apply_crop(sample: &mut Sample, crop: Crop, path: &Path) -> Result<()> {
    let window = crop
        .window(sample.height(), sample.width())
        .map_err(|source| DataError::Crop {
            path: path.to_path_buf(),
            source,
        })?;
    match crop {
        Crop::None => {}
        Crop::Garg | Crop::Eigen => keep_only(sample, window),
        Crop::Kb => {
            let (rows, cols) = (window.rows(), window.cols());
            sample.rgb = sample
                .rgb
                .slice(s![.., rows.clone(), cols.clone()])
                .to_owned();
            sample.depth = sample
                .depth
                .slice(s![rows.clone(), cols.clone()])
                .to_owned();
            sample.mask = sample.mask.slice(s![rows.clone(), cols.clone()]).to_owned();
            if let Some(l) = &mut sample.labels {
                *l = l.slice(s![rows, cols]).to_owned();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garg_and_eigen_crops_match_the_published_rectangles() {
        let eigen = Crop::Eigen.window(480, 640).unwrap();
        assert_eq!((eigen.rows(), eigen.cols()), (45..471, 41..601));
        let garg = Crop::Garg.window(375, 1242).unwrap();
        let (rows, cols) = (garg.rows(), garg.cols());
        assert_eq!((rows.start, rows.end), (153, 371));
        assert_eq!((cols.start, cols.end), (44, 1197));
    }

    #[test]
    fn a_crop_undefined_for_the_frame_size_is_a_typed_error_naming_the_file() {
        let mut sample = Sample {
            rgb: ndarray::Array3::zeros((3, 240, 320)),
            depth: Array2::ones((240, 320)),
            mask: Array2::from_elem((240, 320), true),
            labels: None,
            name: "small".to_string(),
        };
        let path = Path::new("/data/nyu/rgb_00001.jpg");
        for crop in [Crop::Eigen, Crop::Kb] {
            let err = apply_crop(&mut sample, crop, path).unwrap_err();
            assert!(matches!(err, DataError::Crop { .. }), "{err:?}");
            assert!(err.to_string().contains("rgb_00001.jpg"), "{err}");
        }
        assert_eq!(sample.mask.dim(), (240, 320));
        assert!(sample.mask.iter().all(|&m| m));
    }

    #[test]
    fn ade20k_other_becomes_ignore_and_classes_shift_down_by_one() {
        let mapped: Vec<u8> = [0u8, 1, 150, 254, 255]
            .into_iter()
            .map(reduce_zero_label)
            .collect();
        assert_eq!(mapped, [IGNORE_LABEL, 0, 149, 253, IGNORE_LABEL]);
    }

    #[test]
    fn a_label_file_with_a_class_beyond_the_model_or_of_another_size_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["rgb", "labels"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let rgb = ndarray::Array3::<f32>::zeros((3, 4, 6));
        crate::io::write_rgb(&root.join("rgb/a.png"), rgb.view()).unwrap();
        let mut labels = Array2::<u8>::from_elem((4, 6), 2);
        labels[[1, 3]] = IGNORE_LABEL;
        labels[[2, 5]] = 7;
        crate::io::write_labels_png(&root.join("labels/a.png"), labels.view()).unwrap();
        let open = |num_classes| {
            let options = ReaderOptions {
                num_classes,
                ..Default::default()
            };
            FileDataset::folder(root, 1.0, options).unwrap().get(0)
        };
        open(Some(8)).unwrap();
        open(None).unwrap();
        let err = open(Some(5)).unwrap_err();
        assert!(
            matches!(err, DataError::LabelOutOfRange { class: 7, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("labels/a.png") && text.contains("class 7"),
            "{text}"
        );
        let small = Array2::<u8>::zeros((4, 5));
        crate::io::write_labels_png(&root.join("labels/a.png"), small.view()).unwrap();
        let err = open(Some(8)).unwrap_err().to_string();
        assert!(err.contains("labels/a.png") && err.contains("5x4"), "{err}");
    }

    #[test]
    fn missing_listed_file_fails_or_is_skipped_and_counted() {
        let entry = FileEntry {
            rgb: PathBuf::from("/nonexistent/a.jpg"),
            depth: None,
            labels: None,
            focal: None,
        };
        let err = FileDataset::from_entries(vec![entry.clone()], 1.0, ReaderOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/a.jpg"), "{err}");
        let ds = FileDataset::from_entries(
            vec![entry],
            1.0,
            ReaderOptions {
                skip_bad: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ds.len(), 0);
        assert_eq!(ds.skipped().len(), 1);
    }
}
