//! One RGB-D(-S) sample, the [`Dataset`] trait every source implements, contiguous sub-ranges of a
//! dataset ([`Subset`], [`split_last`]), and DPT's input normalisation `(x / 255 - 0.5) / 0.5`
//! (see `docs/data.md`).

use std::ops::Range;

use ndarray::{Array2, Array3, ArrayView3};

use crate::error::{DataError, Result};

/// Per-channel mean of DPT's input normalisation (applied to RGB in [0, 1]).
pub const NORM_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
/// Per-channel standard deviation of DPT's input normalisation.
pub const NORM_STD: [f32; 3] = [0.5, 0.5, 0.5];
/// Label value that losses and metrics ignore (255), defined once in glassbox-metrics.
pub use glassbox_metrics::IGNORE_LABEL;

/// One training or evaluation example; all maps share the height and width of `rgb`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// RGB, 3 x H x W, normalised with [`NORM_MEAN`] / [`NORM_STD`] (so 0 is mid-grey).
    pub rgb: Array3<f32>,
    /// Metric z-depth in metres, H x W; 0 where `mask` is false.
    pub depth: Array2<f32>,
    /// Which depth pixels carry ground truth (sensor range, LiDAR coverage, sky excluded).
    pub mask: Array2<bool>,
    /// Semantic class per pixel ([`IGNORE_LABEL`] = ignore), when the source has labels.
    pub labels: Option<Array2<u8>>,
    /// A name that identifies the sample in messages and outputs (usually the RGB file stem).
    pub name: String,
}

impl Sample {
    /// Builds a sample after checking that shapes agree and depth is finite and non-negative;
    /// the mask is taken as `depth > 0`, the convention of every 16-bit depth format we read.
    pub fn from_depth(
        name: impl Into<String>,
        rgb: Array3<f32>,
        depth: Array2<f32>,
        labels: Option<Array2<u8>>,
    ) -> Result<Self> {
        let name = name.into();
        validate_depth(&name, &depth)?;
        let mask = depth.mapv(|d| d > 0.0);
        let sample = Sample {
            rgb,
            depth,
            mask,
            labels,
            name,
        };
        sample.check_shapes()?;
        Ok(sample)
    }

    /// Height of every map in the sample.
    pub fn height(&self) -> usize {
        self.rgb.shape()[1]
    }

    /// Width of every map in the sample.
    pub fn width(&self) -> usize {
        self.rgb.shape()[2]
    }

    /// Share of pixels with valid depth, the number the real-data README quotes per dataset.
    pub fn valid_fraction(&self) -> f64 {
        let n = self.mask.len().max(1);
        self.mask.iter().filter(|&&m| m).count() as f64 / n as f64
    }

    /// Checks that RGB has three channels and that depth, mask and labels match its size.
    pub fn check_shapes(&self) -> Result<()> {
        let (c, h, w) = self.rgb.dim();
        if c != 3 {
            return Err(DataError::Config(format!(
                "sample {}: RGB has {c} channels, expected 3",
                self.name
            )));
        }
        let mismatch = |(fh, fw): (usize, usize)| DataError::SizeMismatch {
            path: self.name.clone().into(),
            expected_w: w,
            expected_h: h,
            found_w: fw,
            found_h: fh,
        };
        if self.depth.dim() != (h, w) {
            return Err(mismatch(self.depth.dim()));
        }
        if self.mask.dim() != (h, w) {
            return Err(mismatch(self.mask.dim()));
        }
        if let Some(labels) = &self.labels
            && labels.dim() != (h, w)
        {
            return Err(mismatch(labels.dim()));
        }
        Ok(())
    }
}

/// Rejects NaN, infinite and negative depth, naming the source and the first bad pixel.
pub fn validate_depth(source_name: &str, depth: &Array2<f32>) -> Result<()> {
    for ((row, col), &value) in depth.indexed_iter() {
        if !value.is_finite() || value < 0.0 {
            return Err(DataError::InvalidDepth {
                source_name: source_name.to_string(),
                row,
                col,
                value,
            });
        }
    }
    Ok(())
}

/// Normalises one 8-bit channel value of channel `c` the way DPT expects.
#[inline]
pub fn normalize_u8(value: u8, c: usize) -> f32 {
    (value as f32 / 255.0 - NORM_MEAN[c]) / NORM_STD[c]
}

/// Turns an H x W x 3 interleaved 8-bit RGB buffer into a normalised 3 x H x W array.
pub fn normalize_rgb8(pixels: &[u8], height: usize, width: usize) -> Array3<f32> {
    debug_assert_eq!(pixels.len(), height * width * 3);
    Array3::from_shape_fn((3, height, width), |(c, y, x)| {
        normalize_u8(pixels[(y * width + x) * 3 + c], c)
    })
}

/// Undoes the normalisation for display: returns RGB in [0, 1], clamped, same 3 x H x W layout.
pub fn denormalize(rgb: ArrayView3<f32>) -> Array3<f32> {
    let mut out = rgb.to_owned();
    for (c, mut plane) in out.outer_iter_mut().enumerate() {
        plane.mapv_inplace(|v| (v * NORM_STD[c] + NORM_MEAN[c]).clamp(0.0, 1.0));
    }
    out
}

/// An intensity in [0, 1] (clamped) as an 8-bit level, rounded to nearest: the one quantisation
/// every 8-bit picture of the crate (rendered RGB, colour maps, written images) goes through.
pub(crate) fn quantize_unit(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Converts a normalised 3 x H x W array back to interleaved 8-bit RGB, for writing images.
pub fn to_rgb8(rgb: ArrayView3<f32>) -> Vec<u8> {
    let (_, h, w) = rgb.dim();
    let mut out = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = rgb[[c, y, x]] * NORM_STD[c] + NORM_MEAN[c];
                out.push(quantize_unit(v));
            }
        }
    }
    out
}

/// A random-access collection of samples; readers and the synthetic renderer implement it, and the
/// loader consumes it from worker threads (hence `Send + Sync`). It stays object safe, so a trainer
/// can hold any source as `Arc<dyn Dataset>`.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Loads or renders sample `index`; the same index always gives the same sample.
    fn get(&self, index: usize) -> Result<Sample>;

    /// Whether the dataset holds no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<D: Dataset + ?Sized> Dataset for &D {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, index: usize) -> Result<Sample> {
        (**self).get(index)
    }
}

impl<D: Dataset + ?Sized> Dataset for std::sync::Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, index: usize) -> Result<Sample> {
        (**self).get(index)
    }
}

/// A contiguous block of another dataset's indices, itself a dataset (index 0 is `indices.start`).
/// Validation blocks are contiguous rather than drawn at random because neighbouring frames of a
/// video sequence (7-Scenes records at 30 fps) are near-duplicates that would leak across a split.
#[derive(Debug, Clone)]
pub struct Subset<D> {
    inner: D,
    indices: Range<usize>,
}

impl<D: Dataset> Subset<D> {
    /// Restricts `inner` to `indices`; a range reaching past the end of `inner` is an error.
    pub fn new(inner: D, indices: Range<usize>) -> Result<Self> {
        if indices.start > indices.end || indices.end > inner.len() {
            return Err(DataError::Config(format!(
                "subset {}..{} does not fit a dataset of {} samples",
                indices.start,
                indices.end,
                inner.len()
            )));
        }
        Ok(Subset { inner, indices })
    }

    /// The indices of `inner` this subset covers.
    pub fn indices(&self) -> Range<usize> {
        self.indices.clone()
    }

    /// The dataset the subset reads from.
    pub fn inner(&self) -> &D {
        &self.inner
    }
}

impl<D: Dataset> Dataset for Subset<D> {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        if index >= self.indices.len() {
            return Err(DataError::IndexOutOfRange {
                index,
                len: self.indices.len(),
            });
        }
        self.inner.get(self.indices.start + index)
    }
}

/// Splits `0..len` into the first `len - count` indices and the last `count` (clamped to `len`):
/// the trainer's validation block when no separate validation source is configured.
pub fn split_last(len: usize, count: usize) -> (Range<usize>, Range<usize>) {
    let cut = len - count.min(len);
    (0..cut, cut..len)
}

/// Mixes a base seed with two indices (SplitMix64 finaliser) so that per-sample and per-epoch
/// random streams are independent and reproducible without any shared state.
pub fn derive_seed(base: u64, a: u64, b: u64) -> u64 {
    let mut z = base
        .wrapping_add(a.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(b.wrapping_mul(0xD1B5_4A32_D192_ED03));
    for _ in 0..2 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::{Array2, Array3};

    #[test]
    fn normalisation_maps_0_and_255_to_minus_one_and_one() {
        assert_abs_diff_eq!(normalize_u8(0, 0), -1.0);
        assert_abs_diff_eq!(normalize_u8(255, 2), 1.0);
    }

    #[test]
    fn denormalize_inverts_normalize_to_8_bit_precision() {
        let pixels: Vec<u8> = (0..2 * 3 * 3).map(|i| (i * 14) as u8).collect();
        let rgb = normalize_rgb8(&pixels, 2, 3);
        assert_eq!(to_rgb8(rgb.view()), pixels);
        let shown = denormalize(rgb.view());
        assert_abs_diff_eq!(shown[[1, 0, 0]], pixels[1] as f32 / 255.0, epsilon = 1e-6);
    }

    #[test]
    fn nan_or_negative_depth_is_a_typed_error_naming_the_source() {
        let mut depth = Array2::<f32>::ones((2, 2));
        depth[[1, 0]] = f32::NAN;
        let err = Sample::from_depth("frame-7", Array3::zeros((3, 2, 2)), depth.clone(), None)
            .unwrap_err();
        assert!(matches!(
            err,
            DataError::InvalidDepth { row: 1, col: 0, .. }
        ));
        assert!(err.to_string().contains("frame-7"));
        depth[[1, 0]] = -0.5;
        assert!(validate_depth("x", &depth).is_err());
    }

    #[test]
    fn shape_mismatch_between_rgb_and_labels_is_an_error() {
        let err = Sample::from_depth(
            "s",
            Array3::zeros((3, 2, 2)),
            Array2::ones((2, 2)),
            Some(Array2::zeros((2, 3))),
        )
        .unwrap_err();
        assert!(matches!(err, DataError::SizeMismatch { found_w: 3, .. }));
    }

    #[test]
    fn split_last_makes_two_contiguous_blocks_and_subset_reads_through() {
        assert_eq!(split_last(600, 100), (0..500, 500..600));
        assert_eq!(split_last(3, 5), (0..0, 0..3));
        struct Numbers;
        impl Dataset for Numbers {
            fn len(&self) -> usize {
                10
            }
            fn get(&self, index: usize) -> Result<Sample> {
                Sample::from_depth(
                    index.to_string(),
                    Array3::zeros((3, 1, 1)),
                    Array2::ones((1, 1)),
                    None,
                )
            }
        }
        let tail = Subset::new(Numbers, 7..10).unwrap();
        assert_eq!(tail.len(), 3);
        assert_eq!(tail.get(0).unwrap().name, "7");
        assert!(tail.get(3).is_err());
        assert!(Subset::new(Numbers, 8..11).is_err());
    }

    #[test]
    fn derived_seeds_differ_per_index_and_repeat_per_call() {
        assert_eq!(derive_seed(1, 2, 3), derive_seed(1, 2, 3));
        assert_ne!(derive_seed(1, 2, 3), derive_seed(1, 3, 2));
        assert_ne!(derive_seed(1, 0, 0), derive_seed(2, 0, 0));
    }
}
