//! Training and validation images as in-memory tensors, and the batch of every step.
//!
//! The presets' datasets are small (hundreds of images at 64 x 64 to 96 x 128), so each split is decoded or
//! rendered once (in parallel with rayon), resized to the training size and kept as tensors. The
//! batch of micro-step `k` is a pure function of `(seed, k)`: an epoch-wise shuffle from a
//! SplitMix64 stream and a per-sample flip bit. A resumed run therefore sees exactly the batches
//! the uninterrupted run would have seen, without saving any loader state.
//!
//! Targets: depth in metres with a validity mask; the disparity target `1 / depth` is formed where
//! the loss needs it (zero outside the mask).

use std::path::Path;

use glassbox_data::augment::{resize_bilinear, resize_nearest};
use glassbox_data::{
    Dataset, FileDataset, ReaderOptions, Sample, SyntheticConfig, SyntheticDataset,
};
use ndarray::{Array2, Array3};
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::config::{DataConfig, DataSource};

/// Anything that stops a split from loading.
#[derive(Debug, thiserror::Error)]
pub enum DataLoadError {
    #[error("cannot load {split} data: {source}")]
    Data {
        split: &'static str,
        #[source]
        source: glassbox_data::DataError,
    },
    #[error("{split} split is empty")]
    Empty { split: &'static str },
}

/// Which part of a data source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "validation",
        }
    }
}

/// A split held as tensors on the CPU: normalised RGB N x 3 x H x W, depth N x H x W (metres),
/// validity N x H x W (bool), and the sample names.
#[derive(Debug)]
pub struct TensorSet {
    pub rgb: Tensor,
    pub depth: Tensor,
    pub mask: Tensor,
    pub names: Vec<String>,
}

/// One micro-batch on the training device.
#[derive(Debug)]
pub struct Batch {
    pub rgb: Tensor,
    pub depth: Tensor,
    pub mask: Tensor,
}

impl TensorSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Stacks samples resized to `size` (bilinear RGB, nearest depth and mask).
    pub fn from_samples(samples: &[Sample], (h, w): (usize, usize)) -> Self {
        let n = samples.len();
        let resized: Vec<(Array3<f32>, Array2<f32>, Array2<bool>)> = samples
            .par_iter()
            .map(|s| {
                if s.height() == h && s.width() == w {
                    (s.rgb.clone(), s.depth.clone(), s.mask.clone())
                } else {
                    (
                        resize_bilinear(s.rgb.view(), (h, w)),
                        resize_nearest(s.depth.view(), (h, w)),
                        resize_nearest(s.mask.view(), (h, w)),
                    )
                }
            })
            .collect();
        let mut rgb = Vec::with_capacity(n * 3 * h * w);
        let mut depth = Vec::with_capacity(n * h * w);
        let mut mask = Vec::with_capacity(n * h * w);
        for (r, d, m) in &resized {
            rgb.extend(r.iter().copied());
            depth.extend(d.iter().copied());
            mask.extend(m.iter().map(|&v| u8::from(v)));
        }
        let (n, h, w) = (n as i64, h as i64, w as i64);
        Self {
            rgb: Tensor::from_slice(&rgb).view([n, 3, h, w]),
            depth: Tensor::from_slice(&depth).view([n, h, w]),
            mask: Tensor::from_slice(&mask)
                .view([n, h, w])
                .to_kind(Kind::Bool),
            names: samples.iter().map(|s| s.name.clone()).collect(),
        }
    }

    /// Images `indices` (with the given horizontal flips) on `device`.
    pub fn batch(&self, indices: &[usize], flips: &[bool], device: Device) -> Batch {
        let idx = Tensor::from_slice(&indices.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let mut rgb = self.rgb.index_select(0, &idx);
        let mut depth = self.depth.index_select(0, &idx);
        let mut mask = self.mask.index_select(0, &idx);
        if flips.iter().any(|&f| f) {
            let flip = Tensor::from_slice(&flips.iter().map(|&f| u8::from(f)).collect::<Vec<_>>())
                .to_kind(Kind::Bool);
            let f4 = flip.view([-1, 1, 1, 1]);
            let f3 = flip.view([-1, 1, 1]);
            rgb = rgb.flip([3]).where_self(&f4, &rgb);
            depth = depth.flip([2]).where_self(&f3, &depth);
            mask = mask.flip([2]).where_self(&f3, &mask);
        }
        Batch {
            rgb: rgb.to_device(device),
            depth: depth.to_device(device),
            mask: mask.to_device(device),
        }
    }

    /// The `i`-th chunk of at most `size` images, in order (for evaluation).
    pub fn chunk(&self, start: usize, size: usize, device: Device) -> Batch {
        let end = (start + size).min(self.len());
        let indices: Vec<usize> = (start..end).collect();
        self.batch(&indices, &vec![false; indices.len()], device)
    }
}

/// Loads (renders or decodes) one split of `config`.
pub fn load_split(
    config: &DataConfig,
    seed: u64,
    split: Split,
) -> Result<TensorSet, DataLoadError> {
    let [h, w] = config.image_size;
    let wrap = |source| DataLoadError::Data {
        split: split.name(),
        source,
    };
    let samples: Vec<Sample> = match &config.source {
        DataSource::Synthetic {
            outdoor,
            train_len,
            val_len,
        } => {
            let (len, seed) = match split {
                Split::Train => (*train_len, seed),
                // A different stream: no validation scene is also a training scene.
                Split::Val => (*val_len, seed ^ 0x005e_ed0f_4a11_d47e),
            };
            let cfg = if *outdoor {
                SyntheticConfig::outdoor(w, h, len, seed)
            } else {
                SyntheticConfig::indoor(w, h, len, seed)
            };
            let dataset = SyntheticDataset::new(cfg).map_err(wrap)?;
            read_all(&dataset).map_err(wrap)?
        }
        DataSource::SevenScenes { root, train, val } => {
            let range = match split {
                Split::Train => train[0]..train[1],
                Split::Val => val[0]..val[1],
            };
            let dataset =
                FileDataset::seven_scenes(root, range, ReaderOptions::default()).map_err(wrap)?;
            read_all(&dataset).map_err(wrap)?
        }
    };
    if samples.is_empty() {
        return Err(DataLoadError::Empty {
            split: split.name(),
        });
    }
    Ok(TensorSet::from_samples(&samples, (h, w)))
}

/// Every sample of a dataset, read in parallel; the first failure names its file.
pub fn read_all<D: Dataset + Sync>(dataset: &D) -> glassbox_data::Result<Vec<Sample>> {
    (0..dataset.len())
        .into_par_iter()
        .map(|i| dataset.get(i))
        .collect()
}

/// Opens an evaluation dataset by name: `nyu` (a sync folder), `kitti` (`rgb/` + `depth/`),
/// `sevenscenes` (frames 500-599 of a sequence folder) or a synthetic folder written by gen-data
/// in the NYU layout.
pub fn open_eval_dataset(kind: &str, root: &Path) -> Result<FileDataset, glassbox_data::DataError> {
    let options = ReaderOptions::default();
    match kind {
        "nyu" | "synthetic" => FileDataset::nyu_dir(root, options),
        "kitti" => FileDataset::kitti_dirs(&root.join("rgb"), &root.join("depth"), None, options),
        "sevenscenes" => FileDataset::seven_scenes(root, 500..600, options),
        other => Err(glassbox_data::DataError::Config(format!(
            "unknown dataset {other:?}; expected nyu, kitti, sevenscenes or synthetic"
        ))),
    }
}

/// SplitMix64: a tiny, well-mixed stream, so batch order needs no RNG state in checkpoints.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The order of the `n` training images in `epoch` (Fisher-Yates over SplitMix64).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = splitmix64(seed ^ splitmix64(epoch.wrapping_add(1)));
    for i in (1..n).rev() {
        state = splitmix64(state);
        let j = (state % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Image indices and flips of micro-batch `micro_step` (batch size `b` over `n` images).
pub fn batch_plan(
    n: usize,
    b: usize,
    seed: u64,
    micro_step: u64,
    hflip: bool,
) -> (Vec<usize>, Vec<bool>) {
    let mut indices = Vec::with_capacity(b);
    let mut flips = Vec::with_capacity(b);
    let mut cached: Option<(u64, Vec<usize>)> = None;
    for k in 0..b as u64 {
        let position = micro_step * b as u64 + k;
        let (epoch, offset) = (position / n as u64, (position % n as u64) as usize);
        if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            cached = Some((epoch, epoch_order(n, seed, epoch)));
        }
        let order = &cached.as_ref().expect("filled above").1;
        indices.push(order[offset]);
        flips.push(
            hflip && splitmix64(seed ^ position.wrapping_mul(0x2545_f491_4f6c_dd1d)) & 1 == 1,
        );
    }
    (indices, flips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_epoch_visits_each_image_once() {
        for epoch in 0..4 {
            let mut order = epoch_order(37, 5, epoch);
            order.sort_unstable();
            assert_eq!(order, (0..37).collect::<Vec<_>>());
        }
        assert_ne!(epoch_order(37, 5, 0), epoch_order(37, 5, 1));
    }

    #[test]
    fn the_batch_of_a_step_depends_only_on_seed_and_step() {
        let a = batch_plan(10, 4, 3, 7, true);
        let b = batch_plan(10, 4, 3, 7, true);
        assert_eq!(a, b);
        assert_ne!(a, batch_plan(10, 4, 4, 7, true));
        assert!(batch_plan(10, 4, 3, 7, false).1.iter().all(|f| !f));
    }
}
