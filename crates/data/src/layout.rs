//! Writing samples to disk in the NYU-v2 sync and KITTI layouts, so the synthetic data can be read
//! by the same readers (and by other people's code) as the real datasets:
//!
//! - NYU: `rgb_XXXXX.jpg`, `sync_depth_XXXXX.png` (16-bit, millimetres), `label_XXXXX.png`;
//! - KITTI: `rgb/XXXXXXXXXX.png`, `depth/XXXXXXXXXX.png` (16-bit, value / 256 m),
//!   `label/XXXXXXXXXX.png`;
//!
//! in both, 0 = invalid depth and label PNGs store the 0-based class ids with 255 = ignore, plus
//! `train.txt` / `test.txt` split lists (`rgb depth focal labels`), `classes.txt` (`id name` per
//! line, ending with `255 ignore`), and `contact_sheet.png` (rows of RGB | colour-mapped depth |
//! colour-mapped labels).

use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;

use crate::colormap::{colorize_depth, colorize_labels, rgb_image, tile};
use crate::error::{DataError, Result};
use crate::io::{write_depth_png, write_labels_png, write_png, write_rgb};
use crate::readers::{KITTI_DEPTH_SCALE, NYU_DEPTH_SCALE, SplitEntry, format_split};
use crate::render::{SyntheticDataset, classes};
use crate::sample::{Dataset, IGNORE_LABEL, Sample};

/// On-disk layout of a written dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// NYU-v2 sync: flat folder, JPEG RGB, depth in millimetres.
    Nyu,
    /// KITTI: `rgb/`, `depth/`, `label/` folders, PNG RGB, depth value / 256 m.
    Kitti,
}

impl std::str::FromStr for Layout {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "nyu" => Ok(Layout::Nyu),
            "kitti" => Ok(Layout::Kitti),
            other => Err(DataError::Config(format!(
                "layout {other:?}, expected nyu or kitti"
            ))),
        }
    }
}

impl Layout {
    /// Relative paths of sample `index`: (rgb, depth, labels).
    pub fn paths(self, index: usize) -> (PathBuf, PathBuf, PathBuf) {
        match self {
            Layout::Nyu => (
                format!("rgb_{index:05}.jpg").into(),
                format!("sync_depth_{index:05}.png").into(),
                format!("label_{index:05}.png").into(),
            ),
            Layout::Kitti => (
                format!("rgb/{index:010}.png").into(),
                format!("depth/{index:010}.png").into(),
                format!("label/{index:010}.png").into(),
            ),
        }
    }

    /// Metres per depth PNG unit.
    pub fn depth_scale(self) -> f32 {
        match self {
            Layout::Nyu => NYU_DEPTH_SCALE,
            Layout::Kitti => KITTI_DEPTH_SCALE,
        }
    }
}

/// Writes one sample under `dir` and returns its split-list entry.
pub fn write_sample(
    dir: &Path,
    layout: Layout,
    index: usize,
    sample: &Sample,
    focal: Option<f32>,
) -> Result<SplitEntry> {
    let (rgb, depth, labels) = layout.paths(index);
    write_rgb(&dir.join(&rgb), sample.rgb.view())?;
    write_depth_png(
        &dir.join(&depth),
        sample.depth.view(),
        sample.mask.view(),
        layout.depth_scale(),
    )?;
    let labels = match &sample.labels {
        Some(l) => {
            write_labels_png(&dir.join(&labels), l.view())?;
            Some(labels)
        }
        None => None,
    };
    Ok(SplitEntry {
        rgb,
        depth: Some(depth),
        focal,
        labels,
    })
}

/// One contact-sheet row: RGB | depth (turbo on inverse depth, invalid black) | labels.
pub fn contact_row(sample: &Sample, depth_range: Option<(f32, f32)>) -> Vec<RgbImage> {
    let mut row = vec![
        rgb_image(sample.rgb.view()),
        colorize_depth(sample.depth.view(), Some(sample.mask.view()), depth_range),
    ];
    if let Some(labels) = &sample.labels {
        row.push(colorize_labels(labels.view()));
    }
    row
}

/// Options of [`write_synthetic`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteOptions {
    /// Layout to write.
    pub layout: Layout,
    /// Share of samples (the last ones, a contiguous block) listed in `test.txt`.
    pub test_fraction: f32,
    /// Rows in the contact sheet.
    pub sheet_rows: usize,
}

/// What [`write_synthetic`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSummary {
    /// Samples in `train.txt`.
    pub train: usize,
    /// Samples in `test.txt`.
    pub test: usize,
    /// Path of the contact sheet.
    pub contact_sheet: PathBuf,
}

/// Renders every sample of `dataset` in parallel and writes it under `dir` with split lists and a
/// contact sheet; `on_sample` is called once per written sample (progress bars).
pub fn write_synthetic(
    dataset: &SyntheticDataset,
    dir: &Path,
    options: WriteOptions,
    on_sample: &(dyn Fn() + Sync),
) -> Result<WriteSummary> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let n = dataset.len();
    let entries: Vec<SplitEntry> = (0..n)
        .into_par_iter()
        .map(|i| {
            let sample = dataset.get(i)?;
            let focal = dataset.scene(i).1.fx;
            let entry = write_sample(dir, options.layout, i, &sample, Some(focal));
            on_sample();
            entry
        })
        .collect::<Result<_>>()?;
    let n_test = ((n as f32 * options.test_fraction.clamp(0.0, 1.0)).round() as usize).min(n);
    let (train, test) = entries.split_at(n - n_test);
    write_text(&dir.join("train.txt"), &format_split(train))?;
    write_text(&dir.join("test.txt"), &format_split(test))?;
    let mut class_list: String = classes::NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{i} {name}\n"))
        .collect();
    class_list.push_str(&format!("{IGNORE_LABEL} ignore\n"));
    write_text(&dir.join("classes.txt"), &class_list)?;

    let rows: Vec<Vec<RgbImage>> = (0..options.sheet_rows.min(n))
        .into_par_iter()
        .map(|i| dataset.get(i).map(|s| contact_row(&s, None)))
        .collect::<Result<_>>()?;
    let contact_sheet = dir.join("contact_sheet.png");
    write_png(&contact_sheet, &tile(&rows, 4))?;
    Ok(WriteSummary {
        train: train.len(),
        test: test.len(),
        contact_sheet,
    })
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| DataError::io(path, e))
}
