//! The error type of this crate: every bad input is reported before libtorch sees it.

use tch::{Device, Kind};

/// Everything that can go wrong when a loss is configured or evaluated; each variant names the
/// tensor or setting at fault so a training run fails with a message, never a libtorch abort.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// A tensor does not have one of the accepted layouts.
    #[error("`{name}` must have shape {expected}, got {shape:?}")]
    BadRank {
        name: &'static str,
        expected: &'static str,
        shape: Vec<i64>,
    },
    /// Two tensors that must describe the same pixels have different shapes.
    #[error("`{name}` has shape {got:?} but `{reference}` has shape {expected:?}; they must match")]
    ShapeMismatch {
        name: &'static str,
        got: Vec<i64>,
        reference: &'static str,
        expected: Vec<i64>,
    },
    /// A tensor has an element type the loss cannot use.
    #[error("`{name}` has dtype {got:?}, expected {expected}")]
    DType {
        name: &'static str,
        got: Kind,
        expected: &'static str,
    },
    /// Tensors live on different devices.
    #[error("`{name}` is on {got:?} but `{reference}` is on {expected:?}")]
    Device {
        name: &'static str,
        got: Device,
        reference: &'static str,
        expected: Device,
    },
    /// A class label is neither a valid class index nor the ignore index.
    #[error(
        "`{name}` contains label {value}, expected 0..{classes} (logits have {classes} channels) \
         or the ignore index {ignore_index}"
    )]
    LabelOutOfRange {
        name: &'static str,
        value: i64,
        classes: i64,
        ignore_index: i64,
    },
    /// A configuration value is outside its meaningful range.
    #[error("invalid loss setting `{field}` = {value}: {expected}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    /// The configured loss is of the wrong family for the call (e.g. a depth loss used for labels).
    #[error("loss `{configured}` cannot be used as a {requested} loss")]
    WrongFamily {
        configured: &'static str,
        requested: &'static str,
    },
    /// libtorch reported an error that validation did not anticipate.
    #[error("libtorch error: {0}")]
    Torch(#[from] tch::TchError),
}
