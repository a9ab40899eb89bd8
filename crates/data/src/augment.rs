//! Resizing and training augmentation (see `docs/data.md`). [`resize_sample`] is the one resize
//! of the crate: the loader uses it when a sample is not augmented, [`Augment`] after its crop, and
//! evaluation (with [`fit_size`]) on full-resolution frames. RGB is resampled bilinearly; depth,
//! mask and labels with nearest neighbour, so no depth value is ever interpolated across an invalid
//! pixel or an edge and no label is ever invented.
//!
//! Augmentation is random crop (with the output's aspect ratio), resize, horizontal flip and colour
//! jitter, each switched on in an [`AugmentConfig`]. Its randomness comes from the caller's RNG in
//! a fixed draw order (see [`Augment::apply`]), so a sample seeded from its position in the
//! training sequence is augmented identically in a resumed run.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis, s};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::sample::{NORM_MEAN, NORM_STD, Sample};

/// Network input sides must be positive multiples of this: the ViT patch size. The model only
/// needs a whole grid of 16 x 16 patches, since DPT's fusion resamples each level to the size of
/// the next rather than assuming exact halving; the presets' 64 x 64 and 96 x 128 satisfy it.
pub const SIDE_MULTIPLE: usize = 16;

/// Bilinear resize of a C x H x W array (half-pixel centres, edge clamped, like
/// `align_corners=False`).
pub fn resize_bilinear(src: ArrayView3<f32>, (oh, ow): (usize, usize)) -> Array3<f32> {
    let (c, h, w) = src.dim();
    let coords = |n_out: usize, n_in: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|i| {
                let p = ((i as f32 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f32);
                let i0 = p.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, p - i0 as f32)
            })
            .collect()
    };
    let ys = coords(oh, h);
    let xs = coords(ow, w);
    let mut out = Array3::<f32>::zeros((c, oh, ow));
    for ch in 0..c {
        for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
            for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
                let top = src[[ch, y0, x0]] * (1.0 - fx) + src[[ch, y0, x1]] * fx;
                let bottom = src[[ch, y1, x0]] * (1.0 - fx) + src[[ch, y1, x1]] * fx;
                out[[ch, oy, ox]] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    out
}

/// Nearest-neighbour resize of an H x W map (pixel centres), for depth, masks and labels.
pub fn resize_nearest<T: Clone>(src: ArrayView2<T>, (oh, ow): (usize, usize)) -> Array2<T> {
    let (h, w) = src.dim();
    let pick = |i: usize, n_out: usize, n_in: usize| {
        (((i as f64 + 0.5) * n_in as f64 / n_out as f64) as usize).min(n_in - 1)
    };
    Array2::from_shape_fn((oh, ow), |(y, x)| {
        src[[pick(y, oh, h), pick(x, ow, w)]].clone()
    })
}

/// Cuts the window (`top`, `left`, `height`, `width`) out of every map and resizes it to `size`.
fn crop_resize(
    sample: &Sample,
    (top, left, ch, cw): (usize, usize, usize, usize),
    size: (usize, usize),
) -> Sample {
    let (rows, cols) = (top..top + ch, left..left + cw);
    Sample {
        rgb: resize_bilinear(sample.rgb.slice(s![.., rows.clone(), cols.clone()]), size),
        depth: resize_nearest(sample.depth.slice(s![rows.clone(), cols.clone()]), size),
        mask: resize_nearest(sample.mask.slice(s![rows.clone(), cols.clone()]), size),
        labels: sample
            .labels
            .as_ref()
            .map(|l| resize_nearest(l.slice(s![rows, cols]), size)),
        name: sample.name.clone(),
    }
}

/// Resizes every map of a non-empty sample to `size` = (height, width): bilinear RGB, nearest
/// depth, mask and labels. At the sample's own size it is a plain clone, so calling it on an
/// already sized sample costs no resampling.
pub fn resize_sample(sample: &Sample, size: (usize, usize)) -> Sample {
    if (sample.height(), sample.width()) == size {
        return sample.clone();
    }
    crop_resize(sample, (0, 0, sample.height(), sample.width()), size)
}

/// The size at which a `height` x `width` frame is evaluated: the aspect ratio kept, the short side
/// scaled to `short_side`, then both sides rounded to the nearest multiple of `multiple` (at least
/// one multiple; 0 counts as 1). Predictions go back to the frame's size with [`resize_bilinear`].
pub fn fit_size(height: usize, width: usize, short_side: usize, multiple: usize) -> (usize, usize) {
    let multiple = multiple.max(1);
    let scale = short_side as f64 / height.min(width).max(1) as f64;
    let side = |n: usize| ((n as f64 * scale / multiple as f64).round() as usize).max(1) * multiple;
    (side(height), side(width))
}

/// Mirrors every map left-right.
pub fn hflip(sample: &Sample) -> Sample {
    Sample {
        rgb: sample.rgb.slice(s![.., .., ..;-1]).to_owned(),
        depth: sample.depth.slice(s![.., ..;-1]).to_owned(),
        mask: sample.mask.slice(s![.., ..;-1]).to_owned(),
        labels: sample
            .labels
            .as_ref()
            .map(|l| l.slice(s![.., ..;-1]).to_owned()),
        name: sample.name.clone(),
    }
}

/// Random photometric changes to RGB only; each factor is drawn from [1 - a, 1 + a], with the
/// amplitudes `a` set in the training config (every field required, 0 = off).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColorJitter {
    /// Brightness amplitude.
    pub brightness: f32,
    /// Contrast amplitude (around the image's mean grey).
    pub contrast: f32,
    /// Saturation amplitude (around each pixel's grey).
    pub saturation: f32,
}

impl Default for ColorJitter {
    /// ±0.2 on brightness, contrast and saturation.
    fn default() -> Self {
        ColorJitter {
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
        }
    }
}

impl ColorJitter {
    /// Applies jitter to a normalised 3 x H x W image in place (clamped to the valid range). Draws
    /// the brightness, contrast and saturation factors in that order, each only when its amplitude
    /// is positive.
    pub fn apply(&self, rgb: &mut Array3<f32>, rng: &mut impl Rng) {
        let mut draw = |a: f32| {
            if a > 0.0 {
                rng.random_range(1.0 - a..=1.0 + a)
            } else {
                1.0
            }
        };
        let (b, c, sat) = (
            draw(self.brightness),
            draw(self.contrast),
            draw(self.saturation),
        );
        for (ch, mut plane) in rgb.axis_iter_mut(Axis(0)).enumerate() {
            plane.mapv_inplace(|v| v * NORM_STD[ch] + NORM_MEAN[ch]);
        }
        let mean = rgb.mean().unwrap_or(0.5);
        let (_, h, w) = rgb.dim();
        for y in 0..h {
            for x in 0..w {
                let px = [rgb[[0, y, x]], rgb[[1, y, x]], rgb[[2, y, x]]];
                let grey = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
                for (ch, &v) in px.iter().enumerate() {
                    let v = grey + (v - grey) * sat;
                    let v = mean + (v - mean) * c;
                    rgb[[ch, y, x]] = ((v * b).clamp(0.0, 1.0) - NORM_MEAN[ch]) / NORM_STD[ch];
                }
            }
        }
    }
}

/// Which augmentations training applies; part of the trainer's TOML config. Every field defaults
/// to off, so `AugmentConfig::default()` (= [`AugmentConfig::none`]) and an empty table agree.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Random crop: the range [lo, hi] (0 < lo <= hi <= 1) of the crop side relative to the
    /// largest crop of the output's aspect ratio that fits; `None` resizes the whole frame.
    #[serde(default)]
    pub crop_scale: Option<[f32; 2]>,
    /// Flip left-right with probability 1/2.
    #[serde(default)]
    pub hflip: bool,
    /// Colour jitter, if any.
    #[serde(default)]
    pub jitter: Option<ColorJitter>,
}

impl AugmentConfig {
    /// No augmentation: every sample is only resized to the training size.
    pub fn none() -> Self {
        AugmentConfig::default()
    }

    /// The usual depth-training augmentation: crop side 0.6-1, flip, jitter ±0.2.
    pub fn standard() -> Self {
        AugmentConfig {
            crop_scale: Some([0.6, 1.0]),
            hflip: true,
            jitter: Some(ColorJitter::default()),
        }
    }

    fn check(&self) -> Result<()> {
        if let Some([lo, hi]) = self.crop_scale
            && !(lo > 0.0 && lo <= hi && hi <= 1.0)
        {
            return Err(DataError::Config(format!(
                "augment crop_scale [{lo}, {hi}]: expected 0 < lo <= hi <= 1"
            )));
        }
        if let Some(j) = &self.jitter {
            for (name, a) in [
                ("brightness", j.brightness),
                ("contrast", j.contrast),
                ("saturation", j.saturation),
            ] {
                if !(0.0..=1.0).contains(&a) {
                    return Err(DataError::Config(format!(
                        "augment jitter {name} {a}: expected an amplitude in [0, 1]"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A checked [`AugmentConfig`] bound to an output size: what the loader applies to every training
/// sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Augment {
    config: AugmentConfig,
    size: (usize, usize),
}

impl Augment {
    /// Checks the config's ranges and that `size` = (height, width) has sides that are positive
    /// multiples of [`SIDE_MULTIPLE`]; anything else is a configuration error naming the value.
    pub fn new(config: &AugmentConfig, size: (usize, usize)) -> Result<Self> {
        check_size(size)?;
        config.check()?;
        Ok(Augment {
            config: config.clone(),
            size,
        })
    }

    /// Output (height, width).
    pub fn size(&self) -> (usize, usize) {
        self.size
    }

    /// The checked configuration.
    pub fn config(&self) -> &AugmentConfig {
        &self.config
    }

    /// Whether [`apply`](Self::apply) cuts a random window, i.e. needs the sample at full size;
    /// without a crop the resize is the same every epoch and the loader caches its result.
    pub fn crops(&self) -> bool {
        self.config.crop_scale.is_some()
    }

    /// Augments a non-empty `sample` to [`size`](Self::size). Draws from `rng` in this fixed order,
    /// each only when enabled: crop side factor (only when lo < hi), crop top row, crop left
    /// column; flip bit; jitter brightness, contrast, saturation (each only when positive).
    pub fn apply(&self, sample: &Sample, rng: &mut impl Rng) -> Sample {
        let mut out = match self.config.crop_scale {
            Some(scale) => {
                let window = self.crop_window(sample.height(), sample.width(), scale, rng);
                crop_resize(sample, window, self.size)
            }
            None => resize_sample(sample, self.size),
        };
        if self.config.hflip && rng.random_bool(0.5) {
            out = hflip(&out);
        }
        if let Some(jitter) = &self.config.jitter {
            jitter.apply(&mut out.rgb, rng);
        }
        out
    }

    /// A random window (top, left, height, width) of an `h` x `w` frame with the output's aspect.
    fn crop_window(
        &self,
        h: usize,
        w: usize,
        [lo, hi]: [f32; 2],
        rng: &mut impl Rng,
    ) -> (usize, usize, usize, usize) {
        let (oh, ow) = self.size;
        let aspect = ow as f32 / oh as f32;
        let (full_h, full_w) = if w as f32 / h as f32 > aspect {
            (h as f32, h as f32 * aspect)
        } else {
            (w as f32 / aspect, w as f32)
        };
        let k = if hi > lo {
            rng.random_range(lo..=hi)
        } else {
            hi
        };
        let ch = ((full_h * k).round() as usize).clamp(1, h);
        let cw = ((full_w * k).round() as usize).clamp(1, w);
        let top = rng.random_range(0..=h - ch);
        let left = rng.random_range(0..=w - cw);
        (top, left, ch, cw)
    }
}

/// Checks that (height, width) are positive multiples of [`SIDE_MULTIPLE`].
pub fn check_size((h, w): (usize, usize)) -> Result<()> {
    if h == 0 || w == 0 || !h.is_multiple_of(SIDE_MULTIPLE) || !w.is_multiple_of(SIDE_MULTIPLE) {
        return Err(DataError::Config(format!(
            "size {h}x{w} (height x width): both sides must be positive multiples of {SIDE_MULTIPLE}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, array};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn bilinear_resize_of_a_constant_is_constant_and_identity_at_same_size() {
        let a = Array3::from_elem((3, 5, 7), 0.25f32);
        let r = resize_bilinear(a.view(), (13, 3));
        assert!(r.iter().all(|&v| (v - 0.25).abs() < 1e-6));
        let b = Array3::from_shape_fn((1, 4, 4), |(_, y, x)| (y * 4 + x) as f32);
        assert_eq!(resize_bilinear(b.view(), (4, 4)), b);
    }

    #[test]
    fn nearest_resize_never_invents_values() {
        let d = array![[0.0f32, 2.0], [3.0, 0.0]];
        let r = resize_nearest(d.view(), (5, 7));
        assert!(r.iter().all(|v| [0.0, 2.0, 3.0].contains(v)));
    }

    #[test]
    fn sizes_not_multiple_of_16_and_bad_ranges_are_rejected() {
        let none = AugmentConfig::none();
        assert!(Augment::new(&none, (250, 256)).is_err());
        assert!(Augment::new(&none, (0, 256)).is_err());
        assert!(Augment::new(&none, (96, 128)).is_ok());
        assert!(Augment::new(&none, (48, 80)).is_ok());
        let reversed = AugmentConfig {
            crop_scale: Some([0.9, 0.5]),
            ..AugmentConfig::none()
        };
        let err = Augment::new(&reversed, (64, 64)).unwrap_err();
        assert!(err.to_string().contains("crop_scale [0.9, 0.5]"), "{err}");
        let wild = AugmentConfig {
            jitter: Some(ColorJitter {
                contrast: 3.0,
                ..ColorJitter::default()
            }),
            ..AugmentConfig::none()
        };
        assert!(Augment::new(&wild, (64, 64)).is_err());
    }

    #[test]
    fn fit_size_keeps_the_aspect_and_rounds_both_sides_to_the_multiple() {
        assert_eq!(fit_size(480, 640, 384, 16), (384, 512));
        assert_eq!(fit_size(375, 1242, 256, 16), (256, 848));
        assert_eq!(fit_size(640, 480, 384, 16), (512, 384));
        assert_eq!(fit_size(10, 10, 3, 16), (16, 16));
    }

    #[test]
    fn resize_sample_is_a_clone_at_the_same_size() {
        let sample = Sample::from_depth(
            "s",
            Array3::from_shape_fn((3, 4, 6), |(c, y, x)| (c + y + x) as f32 / 10.0),
            Array2::from_shape_fn((4, 6), |(y, x)| (y * 6 + x) as f32),
            None,
        )
        .unwrap();
        assert_eq!(resize_sample(&sample, (4, 6)), sample);
        let small = resize_sample(&sample, (2, 3));
        assert_eq!(small.depth, array![[7.0f32, 9.0, 11.0], [19.0, 21.0, 23.0]]);
    }

    #[test]
    fn without_crop_augment_only_resizes_flips_and_jitters() {
        let sample = Sample::from_depth(
            "s",
            Array3::zeros((3, 32, 48)),
            Array2::from_shape_fn((32, 48), |(_, x)| x as f32),
            None,
        )
        .unwrap();
        let flip = AugmentConfig {
            hflip: true,
            ..AugmentConfig::none()
        };
        let augment = Augment::new(&flip, (16, 16)).unwrap();
        assert!(!augment.crops());
        let resized = resize_sample(&sample, (16, 16));
        for seed in 0..8 {
            let out = augment.apply(&sample, &mut ChaCha8Rng::seed_from_u64(seed));
            assert!(out == resized || out == hflip(&resized));
        }
    }
}
