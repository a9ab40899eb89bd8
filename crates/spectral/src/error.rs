//! The one error type of this crate: every bad input is named (which tensor, which value, what was
//! expected) instead of turning into a NaN indicator.

use thiserror::Error;

/// Everything that can go wrong while computing indicators; the `what` fields name the tensor
/// (e.g. `attention`, `sigma`, `perturbed input map 2`) so that a log line points at the culprit.
#[derive(Debug, Error)]
pub enum SpectralError {
    /// A tensor with no elements: no indicator is defined on it.
    #[error("{what} is empty (shape {shape:?}); expected at least one element")]
    Empty { what: String, shape: Vec<usize> },

    /// A NaN or infinity in an input tensor.
    #[error(
        "{what} holds the non-finite value {value} at index {index:?}; expected finite numbers"
    )]
    NonFinite {
        what: String,
        index: Vec<usize>,
        value: f64,
    },

    /// A tensor whose shape does not fit the others (e.g. `k` with another width than `q`).
    #[error("{what} has shape {actual:?}; expected {expected}")]
    ShapeMismatch {
        what: String,
        actual: Vec<usize>,
        expected: String,
    },

    /// An attention row that is not a probability distribution over keys.
    #[error("{what}: row {row} sums to {sum}; expected 1 within {tolerance}")]
    RowSum {
        what: String,
        row: usize,
        sum: f64,
        tolerance: f64,
    },

    /// A negative attention weight: softmax rows are probabilities.
    #[error("{what} holds the negative weight {value} at ({row}, {col}); expected weights >= 0")]
    NegativeWeight {
        what: String,
        row: usize,
        col: usize,
        value: f64,
    },

    /// A dimension too small for the normalisation of an indicator (ln d or ln N would be 0).
    #[error("{what} has {actual} {unit}; expected at least {min}")]
    TooSmall {
        what: String,
        unit: &'static str,
        actual: usize,
        min: usize,
    },

    /// An all-zero sigma or score matrix: its normalised spectrum (0/0) is undefined.
    #[error("{what} is identically zero; its normalised spectrum is undefined")]
    AllZero { what: String },

    /// Inputs that contradict the attention kind (sigma for standard attention, none for SVDA).
    #[error("{what}: {expected}")]
    KindMismatch { what: String, expected: String },

    /// LAPACK (QR or SVD) reported a failure.
    #[error("linear algebra failed on {what}: {source}")]
    Linalg {
        what: String,
        #[source]
        source: ndarray_linalg::error::LinalgError,
    },

    /// An error inside one head of one layer, with its position in the model.
    #[error("layer {layer}, head {head}: {source}")]
    InHead {
        layer: usize,
        head: usize,
        #[source]
        source: Box<SpectralError>,
    },

    /// A record that could not be written or read as one JSON line.
    #[error("spectral record JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// Writing a JSONL line failed.
    #[error("writing spectral record: {0}")]
    Io(#[from] std::io::Error),

    /// A run file (log, figure, report page) that could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A line of a run log that is not a record.
    #[error("{}, line {line}: {source}", path.display())]
    Line {
        path: std::path::PathBuf,
        line: usize,
        #[source]
        source: Box<SpectralError>,
    },

    /// A figure that could not be drawn (plotters backend or font error).
    #[error("drawing {}: {message}", path.display())]
    Plot {
        path: std::path::PathBuf,
        message: String,
    },

    /// A report asked for with nothing to show (no run folder, or a run without records).
    #[error("{what}: {expected}")]
    NothingToPlot { what: String, expected: String },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, SpectralError>;
