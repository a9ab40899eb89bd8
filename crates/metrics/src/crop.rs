//! Evaluation crops of the depth benchmarks (`docs/metrics.md`): Eigen (NYU), Garg (KITTI) and
//! the KB crop (KITTI benchmark, 352x1216), with the exact integer rounding of the BTS / AdaBins
//! evaluation scripts so that our numbers are comparable with published tables.
//!
//! - Eigen: rows `45..471`, cols `41..601`, defined only for 480x640 images; any other size is a
//!   [`MetricsError::CropSize`] error (the published window is a fixed pixel box, scaling it to
//!   another resolution would silently give a different benchmark).
//! - Garg: rows `int(0.40810811 H)..int(0.99189189 H)`, cols `int(0.03594771 W)..int(0.96405229 W)`
//!   (Python `int()` truncation of the `f64` product), defined for any size; for KITTI's 375x1242
//!   this is rows `153..371`, cols `44..1197`.
//! - KB: a 352x1216 window with `top = H - 352`, `left = (W - 1216) / 2` (integer division);
//!   images smaller than 352x1216 are a [`MetricsError::CropSize`] error.

use std::fmt;
use std::ops::Range;

use ndarray::{ArrayView, Axis, Dimension, Slice};
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// Height of the KB (KITTI benchmark) crop.
pub const KB_CROP_HEIGHT: usize = 352;
/// Width of the KB (KITTI benchmark) crop.
pub const KB_CROP_WIDTH: usize = 1216;

/// Image size the Eigen crop is defined for (NYU-Depth-v2), as (height, width).
pub const EIGEN_IMAGE_SIZE: (usize, usize) = (480, 640);
const EIGEN_ROWS: Range<usize> = 45..471;
const EIGEN_COLS: Range<usize> = 41..601;

const GARG_TOP: f64 = 0.408_108_11;
const GARG_BOTTOM: f64 = 0.991_891_89;
const GARG_LEFT: f64 = 0.035_947_71;
const GARG_RIGHT: f64 = 0.964_052_29;

/// Which region of the ground truth is evaluated; benchmarks fix this so that numbers compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Crop {
    /// The whole image.
    #[default]
    None,
    /// NYU Eigen crop (480x640 only).
    Eigen,
    /// KITTI Garg crop (fractions of the image size).
    Garg,
    /// KITTI benchmark crop: only the 352x1216 window a KB-cropped prediction covers.
    Kb,
}

impl fmt::Display for Crop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Crop::None => "no",
            Crop::Eigen => "Eigen",
            Crop::Garg => "Garg",
            Crop::Kb => "KB",
        })
    }
}

impl Crop {
    /// The window this crop keeps in a `height` x `width` image (the whole image for
    /// [`Crop::None`]); errors when the crop is not defined for that size.
    pub fn window(self, height: usize, width: usize) -> Result<CropWindow> {
        match self {
            Crop::None => Ok(CropWindow {
                top: 0,
                left: 0,
                height,
                width,
            }),
            Crop::Eigen => {
                if (height, width) != EIGEN_IMAGE_SIZE {
                    return Err(MetricsError::CropSize {
                        crop: self,
                        height,
                        width,
                        expected: "a 480x640 (NYU) image".to_string(),
                    });
                }
                Ok(CropWindow::from_ranges(EIGEN_ROWS, EIGEN_COLS))
            }
            Crop::Garg => {
                // Same as `int(0.40810811 * gt_height)` etc. in the BTS / AdaBins eval scripts.
                let at = |fraction: f64, size: usize| (fraction * size as f64) as usize;
                Ok(CropWindow::from_ranges(
                    at(GARG_TOP, height)..at(GARG_BOTTOM, height),
                    at(GARG_LEFT, width)..at(GARG_RIGHT, width),
                ))
            }
            Crop::Kb => kb_crop_window(height, width),
        }
    }
}

/// A rectangular window of an image, so a crop can be applied to any array (HxW depth, HxWxC
/// image, CxHxW tensor) by naming the axis that holds the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CropWindow {
    /// First row kept.
    pub top: usize,
    /// First column kept.
    pub left: usize,
    /// Number of rows kept.
    pub height: usize,
    /// Number of columns kept.
    pub width: usize,
}

impl CropWindow {
    fn from_ranges(rows: Range<usize>, cols: Range<usize>) -> Self {
        CropWindow {
            top: rows.start,
            left: cols.start,
            height: rows.end.saturating_sub(rows.start),
            width: cols.end.saturating_sub(cols.start),
        }
    }

    /// Rows kept, as a half-open range.
    pub fn rows(&self) -> Range<usize> {
        self.top..self.top + self.height
    }

    /// Columns kept, as a half-open range.
    pub fn cols(&self) -> Range<usize> {
        self.left..self.left + self.width
    }

    /// Whether pixel (`row`, `col`) of the full image lies inside the window.
    pub fn contains(&self, row: usize, col: usize) -> bool {
        self.rows().contains(&row) && self.cols().contains(&col)
    }

    /// A view of `array` restricted to the window, where `row_axis` holds image rows and the axis
    /// after it holds columns (`Axis(0)` for HxW and HxWxC, `Axis(1)` for CxHxW).
    pub fn slice<'a, A, D: Dimension>(
        &self,
        array: ArrayView<'a, A, D>,
        row_axis: Axis,
    ) -> Result<ArrayView<'a, A, D>> {
        let shape = array.shape();
        let col_axis = row_axis.index() + 1;
        let fits = col_axis < shape.len()
            && self.rows().end <= shape[row_axis.index()]
            && self.cols().end <= shape[col_axis];
        if !fits {
            return Err(MetricsError::CropOutOfBounds {
                top: self.top,
                bottom: self.rows().end,
                left: self.left,
                right: self.cols().end,
                shape: shape.to_vec(),
                row_axis: row_axis.index(),
            });
        }
        let mut view = array;
        view.slice_axis_inplace(row_axis, Slice::from(self.rows()));
        view.slice_axis_inplace(Axis(col_axis), Slice::from(self.cols()));
        Ok(view)
    }
}

/// The KB crop window of a `height` x `width` image: 352x1216 anchored at the bottom and centred
/// horizontally, as in the BTS / AdaBins KITTI loaders (`top = H - 352`, `left = (W - 1216) / 2`).
pub fn kb_crop_window(height: usize, width: usize) -> Result<CropWindow> {
    if height < KB_CROP_HEIGHT || width < KB_CROP_WIDTH {
        return Err(MetricsError::CropSize {
            crop: Crop::Kb,
            height,
            width,
            expected: format!("at least {KB_CROP_HEIGHT}x{KB_CROP_WIDTH}"),
        });
    }
    Ok(CropWindow {
        top: height - KB_CROP_HEIGHT,
        left: (width - KB_CROP_WIDTH) / 2,
        height: KB_CROP_HEIGHT,
        width: KB_CROP_WIDTH,
    })
}

/// KB-crops an image or array whose rows are on `row_axis` (columns on the next axis), so a
/// KITTI frame can be cut to 352x1216 before inference exactly as the benchmark does.
pub fn kb_crop<'a, A, D: Dimension>(
    array: ArrayView<'a, A, D>,
    row_axis: Axis,
) -> Result<ArrayView<'a, A, D>> {
    let shape = array.shape();
    let col_axis = row_axis.index() + 1;
    if col_axis >= shape.len() {
        return Err(MetricsError::CropOutOfBounds {
            top: 0,
            bottom: KB_CROP_HEIGHT,
            left: 0,
            right: KB_CROP_WIDTH,
            shape: shape.to_vec(),
            row_axis: row_axis.index(),
        });
    }
    let window = kb_crop_window(shape[row_axis.index()], shape[col_axis])?;
    window.slice(array, row_axis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};

    /// An array whose value encodes its own (row, col), so a crop's output names what it kept.
    fn coordinates(height: usize, width: usize) -> Array2<(usize, usize)> {
        Array2::from_shape_fn((height, width), |(r, c)| (r, c))
    }

    #[test]
    fn eigen_crop_keeps_rows_45_to_470_and_cols_41_to_600() {
        let window = Crop::Eigen.window(480, 640).unwrap();
        assert_eq!(window.rows(), 45..471);
        assert_eq!(window.cols(), 41..601);
        let image = coordinates(480, 640);
        let cropped = window.slice(image.view(), Axis(0)).unwrap();
        assert_eq!(cropped.dim(), (426, 560));
        assert_eq!(cropped[[0, 0]], (45, 41));
        assert_eq!(cropped[[425, 559]], (470, 600));
    }

    #[test]
    fn eigen_crop_of_a_non_nyu_size_is_a_typed_error() {
        let err = Crop::Eigen.window(240, 320).unwrap_err();
        assert!(matches!(
            err,
            MetricsError::CropSize {
                crop: Crop::Eigen,
                height: 240,
                width: 320,
                ..
            }
        ));
    }

    #[test]
    fn garg_crop_truncates_like_python_int() {
        // KITTI 375x1242: 0.40810811*375 = 153.04 -> 153, 0.99189189*375 = 371.96 -> 371,
        // 0.03594771*1242 = 44.65 -> 44, 0.96405229*1242 = 1197.35 -> 1197.
        let window = Crop::Garg.window(375, 1242).unwrap();
        assert_eq!(window.rows(), 153..371);
        assert_eq!(window.cols(), 44..1197);
        // KB-cropped 352x1216: 143.65 -> 143, 349.15 -> 349, 43.71 -> 43, 1172.29 -> 1172.
        let window = Crop::Garg.window(352, 1216).unwrap();
        assert_eq!(window.rows(), 143..349);
        assert_eq!(window.cols(), 43..1172);
    }

    #[test]
    fn kb_crop_is_bottom_anchored_and_horizontally_centred() {
        // 375x1242: top = 375 - 352 = 23, left = (1242 - 1216) / 2 = 13.
        let window = kb_crop_window(375, 1242).unwrap();
        assert_eq!(window.rows(), 23..375);
        assert_eq!(window.cols(), 13..1229);
        // 376x1241: top = 24, left = 25 / 2 = 12 (integer division).
        let window = kb_crop_window(376, 1241).unwrap();
        assert_eq!((window.top, window.left), (24, 12));
        assert_eq!(
            Crop::Kb.window(375, 1242).unwrap(),
            kb_crop_window(375, 1242).unwrap()
        );
    }

    #[test]
    fn kb_crop_cuts_hw_and_hwc_and_chw_arrays_alike() {
        let image = coordinates(375, 1242);
        let cropped = kb_crop(image.view(), Axis(0)).unwrap();
        assert_eq!(cropped.dim(), (352, 1216));
        assert_eq!(cropped[[0, 0]], (23, 13));
        assert_eq!(cropped[[351, 1215]], (374, 1228));

        let hwc = Array3::from_shape_fn((375, 1242, 3), |(r, c, ch)| r * 10_000 + c * 10 + ch);
        let cropped = kb_crop(hwc.view(), Axis(0)).unwrap();
        assert_eq!(cropped.dim(), (352, 1216, 3));
        assert_eq!(cropped[[0, 0, 2]], 23 * 10_000 + 13 * 10 + 2);

        let chw = Array3::from_shape_fn((3, 375, 1242), |(ch, r, c)| r * 10_000 + c * 10 + ch);
        let cropped = kb_crop(chw.view(), Axis(1)).unwrap();
        assert_eq!(cropped.dim(), (3, 352, 1216));
        assert_eq!(cropped[[1, 351, 0]], 374 * 10_000 + 13 * 10 + 1);
    }

    #[test]
    fn kb_crop_of_a_small_image_or_a_bad_axis_is_a_typed_error() {
        let small = Array2::<f32>::zeros((300, 1242));
        assert!(matches!(
            kb_crop(small.view(), Axis(0)),
            Err(MetricsError::CropSize { crop: Crop::Kb, .. })
        ));
        let image = Array2::<f32>::zeros((375, 1242));
        assert!(matches!(
            kb_crop(image.view(), Axis(1)),
            Err(MetricsError::CropOutOfBounds { row_axis: 1, .. })
        ));
    }

    #[test]
    fn a_window_larger_than_the_array_is_a_typed_error() {
        let window = Crop::Eigen.window(480, 640).unwrap();
        let image = Array2::<f32>::zeros((100, 100));
        assert!(matches!(
            window.slice(image.view(), Axis(0)),
            Err(MetricsError::CropOutOfBounds { .. })
        ));
    }
}
