//! The one error type of the crate: every bad input (shapes, configs, crops, labels, empty
//! accumulators) is reported as a [`MetricsError`] naming the value and what was expected.

use thiserror::Error;

use crate::align::Alignment;
use crate::crop::Crop;

/// Why an evaluation could not produce a number; an eval loop can match on the variant to decide
/// whether to skip an image (e.g. [`MetricsError::NoValidPixels`]) or abort.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MetricsError {
    /// Two arrays that must cover the same pixels have different shapes.
    #[error("{what} has shape {found:?}, expected the ground-truth shape {expected:?}")]
    ShapeMismatch {
        what: &'static str,
        expected: (usize, usize),
        found: (usize, usize),
    },

    /// No pixel survived the crop, the user mask and `min_depth < gt < max_depth`.
    #[error(
        "no valid pixel in a {height}x{width} image after the {crop} crop, the mask and \
         {min_depth} < gt < {max_depth}"
    )]
    NoValidPixels {
        height: usize,
        width: usize,
        crop: Crop,
        min_depth: f64,
        max_depth: f64,
    },

    /// The crop is not defined for an image of this size.
    #[error("the {crop} crop needs {expected}, got a {height}x{width} image")]
    CropSize {
        crop: Crop,
        height: usize,
        width: usize,
        expected: String,
    },

    /// A crop window or axis does not fit inside the array it is applied to.
    #[error(
        "crop window rows {top}..{bottom}, cols {left}..{right} does not fit an array of shape {shape:?} at row axis {row_axis}"
    )]
    CropOutOfBounds {
        top: usize,
        bottom: usize,
        left: usize,
        right: usize,
        shape: Vec<usize>,
        row_axis: usize,
    },

    /// A field of an evaluation config is out of its domain.
    #[error("config field `{field}` = {value} is invalid: expected {expected}")]
    InvalidConfig {
        field: &'static str,
        value: f64,
        expected: &'static str,
    },

    /// The alignment cannot be fitted (e.g. a constant or non-positive prediction).
    #[error("{alignment:?} alignment is degenerate: {reason}")]
    DegenerateAlignment {
        alignment: Alignment,
        reason: String,
    },

    /// A mean was asked of an accumulator that has seen nothing.
    #[error("the {what} accumulator is empty: push at least one image before asking for a mean")]
    EmptyAccumulator { what: &'static str },

    /// One image of a batch failed; `index` is its position in the batch.
    #[error("image {index} of the batch: {source}")]
    InImage {
        index: usize,
        source: Box<MetricsError>,
    },

    /// A class label is neither the ignore index nor in `0..num_classes`.
    #[error(
        "{what} label {value} at (row {row}, col {col}) is outside 0..{num_classes} and is not the ignore index"
    )]
    LabelOutOfRange {
        what: &'static str,
        value: i64,
        row: usize,
        col: usize,
        num_classes: usize,
    },

    /// Two segmentation accumulators with different class counts or ignore indices were merged.
    #[error(
        "cannot merge segmentation accumulators: ({num_classes} classes, ignore {ignore_index:?}) \
         vs ({other_num_classes} classes, ignore {other_ignore_index:?})"
    )]
    AccumulatorMismatch {
        num_classes: usize,
        ignore_index: Option<i64>,
        other_num_classes: usize,
        other_ignore_index: Option<i64>,
    },
}

/// Result alias of the crate.
pub type Result<T, E = MetricsError> = std::result::Result<T, E>;
