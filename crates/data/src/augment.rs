//! Training augmentation (random crop + resize to a multiple-of-32 size, horizontal flip, colour
//! jitter) and the evaluation resize (keep the aspect ratio, pad to multiples of 32) with its
//! inverse mapping (DESIGN.md section 10). RGB is resampled bilinearly; depth, mask and labels with
//! nearest neighbour, so no depth value is ever interpolated across an invalid pixel or an edge.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis, s};
use rand::Rng;

use crate::error::{DataError, Result};
use crate::sample::{IGNORE_LABEL, NORM_MEAN, NORM_STD, Sample};

/// Side lengths of network inputs must be multiples of this (ViT patch 16 x two-fold fusion).
pub const SIDE_MULTIPLE: usize = 32;

/// Bilinear resize of a C x H x W array (half-pixel centres, edge clamped, like
/// `align_corners=False`).
pub fn resize_bilinear(src: ArrayView3<f32>, (oh, ow): (usize, usize)) -> Array3<f32> {
    let (c, h, w) = src.dim();
    let coords = |o: usize, n_out: usize, n_in: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..o)
            .map(|i| {
                let p = ((i as f32 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f32);
                let i0 = p.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, p - i0 as f32)
            })
            .collect()
    };
    let ys = coords(oh, oh, h);
    let xs = coords(ow, ow, w);
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
pub fn crop_resize(
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

/// Random photometric changes to RGB only; each factor is drawn from [1 - a, 1 + a].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorJitter {
    /// Brightness amplitude.
    pub brightness: f32,
    /// Contrast amplitude (around the image's mean grey).
    pub contrast: f32,
    /// Saturation amplitude (around each pixel's grey).
    pub saturation: f32,
}

impl Default for ColorJitter {
    fn default() -> Self {
        ColorJitter {
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
        }
    }
}

impl ColorJitter {
    /// Applies jitter to a normalised 3 x H x W image in place (clamped to the valid range).
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

/// The training augmentation: random crop with the output's aspect ratio, resized to `size`,
/// then an optional flip and colour jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct Augment {
    /// Output (height, width), multiples of [`SIDE_MULTIPLE`].
    pub size: (usize, usize),
    /// Range of the crop side relative to the largest crop of that aspect ratio that fits.
    pub scale: (f32, f32),
    /// Flip left-right with probability 1/2.
    pub hflip: bool,
    /// Colour jitter, if any.
    pub jitter: Option<ColorJitter>,
}

impl Augment {
    /// Default augmentation to `height` x `width`: crop scale 0.6-1, flip, default jitter. Sides
    /// that are not positive multiples of 32 are a configuration error.
    pub fn new(height: usize, width: usize) -> Result<Self> {
        check_multiple(height, width)?;
        Ok(Augment {
            size: (height, width),
            scale: (0.6, 1.0),
            hflip: true,
            jitter: Some(ColorJitter::default()),
        })
    }

    /// Augments `sample` with randomness from `rng` (seed it per sample for reproducibility).
    pub fn apply(&self, sample: &Sample, rng: &mut impl Rng) -> Result<Sample> {
        check_multiple(self.size.0, self.size.1)?;
        let (h, w) = (sample.height(), sample.width());
        let (oh, ow) = self.size;
        let aspect = ow as f32 / oh as f32;
        let (full_h, full_w) = if w as f32 / h as f32 > aspect {
            (h as f32, h as f32 * aspect)
        } else {
            (w as f32 / aspect, w as f32)
        };
        let (lo, hi) = (self.scale.0.clamp(0.05, 1.0), self.scale.1.clamp(0.05, 1.0));
        let k = if hi > lo {
            rng.random_range(lo..=hi)
        } else {
            hi
        };
        let ch = ((full_h * k).round() as usize).clamp(1, h);
        let cw = ((full_w * k).round() as usize).clamp(1, w);
        let top = rng.random_range(0..=h - ch);
        let left = rng.random_range(0..=w - cw);
        let mut out = crop_resize(sample, (top, left, ch, cw), self.size);
        if self.hflip && rng.random_bool(0.5) {
            out = hflip(&out);
        }
        if let Some(jitter) = &self.jitter {
            jitter.apply(&mut out.rgb, rng);
        }
        Ok(out)
    }
}

fn check_multiple(h: usize, w: usize) -> Result<()> {
    if h == 0 || w == 0 || !h.is_multiple_of(SIDE_MULTIPLE) || !w.is_multiple_of(SIDE_MULTIPLE) {
        return Err(DataError::Config(format!(
            "size {w}x{h}: both sides must be positive multiples of {SIDE_MULTIPLE}"
        )));
    }
    Ok(())
}

/// Evaluation resize: scale so the longer side is `long_side`, keep the aspect ratio, pad right and
/// bottom to multiples of 32 (RGB 0 = mid-grey, depth 0, mask false, labels ignore).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalResize {
    /// Target length of the longer side, before padding.
    pub long_side: usize,
}

/// What [`EvalResize`] did to one image, so a prediction can be mapped back to the original grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Letterbox {
    /// Original (height, width).
    pub original: (usize, usize),
    /// Size after scaling, before padding.
    pub resized: (usize, usize),
    /// Network input size after padding.
    pub padded: (usize, usize),
}

impl EvalResize {
    /// Geometry of the resize for an image of `height` x `width`.
    pub fn letterbox(&self, height: usize, width: usize) -> Letterbox {
        let s = self.long_side as f64 / height.max(width) as f64;
        let rh = ((height as f64 * s).round() as usize).max(1);
        let rw = ((width as f64 * s).round() as usize).max(1);
        let up = |n: usize| n.div_ceil(SIDE_MULTIPLE) * SIDE_MULTIPLE;
        Letterbox {
            original: (height, width),
            resized: (rh, rw),
            padded: (up(rh), up(rw)),
        }
    }

    /// Resizes and pads a sample; keep the original for the metrics and map predictions back with
    /// [`Letterbox::map_back`].
    pub fn apply(&self, sample: &Sample) -> (Sample, Letterbox) {
        let lb = self.letterbox(sample.height(), sample.width());
        let (rh, rw) = lb.resized;
        let resized = crop_resize(sample, (0, 0, sample.height(), sample.width()), lb.resized);
        let (ph, pw) = lb.padded;
        let mut out = Sample {
            rgb: Array3::zeros((3, ph, pw)),
            depth: Array2::zeros((ph, pw)),
            mask: Array2::from_elem((ph, pw), false),
            labels: sample
                .labels
                .as_ref()
                .map(|_| Array2::from_elem((ph, pw), IGNORE_LABEL)),
            name: sample.name.clone(),
        };
        out.rgb.slice_mut(s![.., ..rh, ..rw]).assign(&resized.rgb);
        out.depth.slice_mut(s![..rh, ..rw]).assign(&resized.depth);
        out.mask.slice_mut(s![..rh, ..rw]).assign(&resized.mask);
        if let (Some(dst), Some(src)) = (&mut out.labels, &resized.labels) {
            dst.slice_mut(s![..rh, ..rw]).assign(src);
        }
        (out, lb)
    }
}

impl Letterbox {
    fn check(&self, dim: (usize, usize)) -> Result<()> {
        if dim != self.padded {
            return Err(DataError::Config(format!(
                "prediction is {}x{}, expected the padded input size {}x{}",
                dim.1, dim.0, self.padded.1, self.padded.0
            )));
        }
        Ok(())
    }

    /// Maps a dense prediction (depth, disparity, a logit plane) on the padded grid back to the
    /// original size: drop the padding, then bilinear resize.
    pub fn map_back(&self, prediction: ArrayView2<f32>) -> Result<Array2<f32>> {
        self.check(prediction.dim())?;
        let (rh, rw) = self.resized;
        let valid = prediction.slice(s![..rh, ..rw]).insert_axis(Axis(0));
        Ok(resize_bilinear(valid, self.original).index_axis_move(Axis(0), 0))
    }

    /// Maps a label prediction back (drop padding, nearest neighbour).
    pub fn map_back_labels<T: Clone>(&self, prediction: ArrayView2<T>) -> Result<Array2<T>> {
        self.check(prediction.dim())?;
        let (rh, rw) = self.resized;
        Ok(resize_nearest(
            prediction.slice(s![..rh, ..rw]),
            self.original,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::{Array3, array};

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
    fn sizes_not_multiple_of_32_are_rejected() {
        assert!(Augment::new(250, 256).is_err());
        assert!(Augment::new(0, 256).is_err());
        assert!(Augment::new(224, 320).is_ok());
    }

    #[test]
    fn letterbox_pads_to_multiples_of_32_and_maps_back_to_the_original_size() {
        let lb = EvalResize { long_side: 384 }.letterbox(375, 1242);
        assert_eq!(lb.resized, (116, 384));
        assert_eq!(lb.padded, (128, 384));
        let pred = Array2::from_elem(lb.padded, 3.5f32);
        let back = lb.map_back(pred.view()).unwrap();
        assert_eq!(back.dim(), (375, 1242));
        assert_abs_diff_eq!(back[[100, 100]], 3.5);
        assert!(lb.map_back(Array2::zeros((10, 10)).view()).is_err());
    }
}
