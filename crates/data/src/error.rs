//! The one error type of the crate: every failure names the file (or sample) and what was expected,
//! so a bad frame in a 50 000-image dataset can be found and fixed (see `docs/data.md`).

use std::path::PathBuf;

/// Everything that can go wrong while reading, rendering, augmenting or batching data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file named by a split list or a directory scan does not exist or cannot be opened.
    #[error("cannot open {path}: {source}")]
    Io {
        /// The file that could not be read or written.
        path: PathBuf,
        /// The underlying operating-system error.
        source: std::io::Error,
    },
    /// The bytes of an image file could not be decoded (truncated, corrupt, unknown format).
    #[error("cannot decode image {path}: {message}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// What the decoder reported.
        message: String,
    },
    /// An image whose header claims no pixels, or more than [`crate::io::MAX_IMAGE_PIXELS`]:
    /// refused before any pixel is decoded, so a forged header cannot exhaust memory.
    #[error(
        "{path} claims {width} x {height} pixels; images must have at least one and at most {cap} \
         pixels"
    )]
    ImageSize {
        path: PathBuf,
        width: u32,
        height: u32,
        cap: u64,
    },
    /// An image decoded but has the wrong pixel format, e.g. 8-bit where 16-bit depth is expected.
    #[error("{path} is {found}, expected {expected}")]
    WrongFormat {
        /// The image file.
        path: PathBuf,
        /// The format the reader needs.
        expected: &'static str,
        /// The format the file holds.
        found: String,
    },
    /// Two images of one sample (RGB, depth, labels) disagree in size.
    #[error(
        "size mismatch in {path}: {found_w}x{found_h}, expected {expected_w}x{expected_h} (the size of the RGB image)"
    )]
    SizeMismatch {
        /// The file whose size disagrees with the RGB image.
        path: PathBuf,
        /// Width of the RGB image.
        expected_w: usize,
        /// Height of the RGB image.
        expected_h: usize,
        /// Width found in `path`.
        found_w: usize,
        /// Height found in `path`.
        found_h: usize,
    },
    /// A depth map holds NaN, infinite or negative values.
    #[error(
        "invalid depth in {source_name} at row {row}, col {col}: {value} (expected a finite value >= 0)"
    )]
    InvalidDepth {
        /// File or sample name the depth came from.
        source_name: String,
        /// Row of the first bad pixel.
        row: usize,
        /// Column of the first bad pixel.
        col: usize,
        /// The offending value.
        value: f32,
    },
    /// A split list line or directory listing could not be understood.
    #[error("{path}, line {line}: {message}")]
    Split {
        /// The split list.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// The reader's crop is not defined for this image's size (e.g. Eigen on a non-480x640 frame,
    /// KB on a frame smaller than 352x1216).
    #[error("cannot crop {path}: {source}")]
    Crop {
        /// The RGB image of the sample.
        path: PathBuf,
        /// What the crop needs, from `glassbox_metrics`.
        source: glassbox_metrics::MetricsError,
    },
    /// A configuration value is out of its domain (zero batch size, size not a multiple of 16, ...).
    #[error(
        "{path} holds class {class} at row {row}, col {col} (as read, after any dataset remapping), \
         but the model has {num_classes} classes (0..{num_classes}, {ignore} = ignore)",
        ignore = crate::IGNORE_LABEL
    )]
    LabelOutOfRange {
        path: PathBuf,
        class: u8,
        row: usize,
        col: usize,
        num_classes: usize,
    },

    #[error("invalid configuration: {0}")]
    Config(String),
    /// A source was opened but holds no sample; says which source and what was looked for, since
    /// an empty training set is almost always a wrong path or split name.
    #[error("{dataset}: no samples found (looked for {looked_for})")]
    EmptySource {
        /// The source, as `SourceConfig::describe` writes it.
        dataset: String,
        /// The files the source looks for.
        looked_for: String,
    },
    /// The loader's background producer failed outside any one sample (it panicked or stopped
    /// early), so a stream ends with this error instead of hanging or ending silently.
    #[error("data loader: {0}")]
    Loader(String),
    /// A sample index is past the end of the dataset.
    #[error("index {index} out of range for a dataset of {len} samples")]
    IndexOutOfRange {
        /// The requested index.
        index: usize,
        /// The dataset length.
        len: usize,
    },
    /// Samples of one batch have different sizes and cannot be stacked.
    #[error(
        "cannot stack {name} ({found_h}x{found_w}) into a batch of {expected_h}x{expected_w} samples; crop or resize first"
    )]
    BatchShape {
        /// Name of the sample that does not fit.
        name: String,
        /// Height of the batch.
        expected_h: usize,
        /// Width of the batch.
        expected_w: usize,
        /// Height of the sample.
        found_h: usize,
        /// Width of the sample.
        found_w: usize,
    },
}

impl DataError {
    /// Wraps an `std::io::Error` with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
