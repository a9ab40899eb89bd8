//! Typed errors of the attention crate: every bad input is caught before it reaches libtorch, so
//! callers get a message naming the tensor and what was expected instead of a libtorch panic.

use tch::{Device, Kind, TchError};

/// Everything that can go wrong when building or running an attention layer.
#[derive(Debug, thiserror::Error)]
pub enum AttentionError {
    /// The configuration cannot describe a multi-head attention layer.
    #[error("invalid attention config: {0}")]
    InvalidConfig(String),

    /// A token tensor is not B x N x D (with B, N >= 1) or its D is not the layer's width.
    #[error("tensor `{tensor}` must have shape {expected}, got {shape:?}")]
    TokenShape {
        tensor: &'static str,
        expected: String,
        shape: Vec<i64>,
    },

    /// A tensor's dtype differs from the one the layer (or the other operand) uses.
    #[error("tensor `{tensor}` has dtype {got:?}, expected {expected:?}")]
    DtypeMismatch {
        tensor: &'static str,
        expected: Kind,
        got: Kind,
    },

    /// A tensor lives on another device than the layer's parameters (or the other operand).
    #[error("tensor `{tensor}` is on {got:?}, expected {expected:?}")]
    DeviceMismatch {
        tensor: &'static str,
        expected: Device,
        got: Device,
    },

    /// Token indices must be an int64 tensor B x M.
    #[error(
        "tensor `{tensor}` must be int64 token indices of shape {expected}, got dtype {kind:?} and shape {shape:?}"
    )]
    IndexShape {
        tensor: &'static str,
        expected: String,
        kind: Kind,
        shape: Vec<i64>,
    },

    /// A query subset with no token: there would be nothing to update.
    #[error(
        "tensor `{tensor}` selects no token (shape {shape:?}): a query subset needs M >= 1 indices per image"
    )]
    EmptyQuerySubset {
        tensor: &'static str,
        shape: Vec<i64>,
    },

    /// A token index outside 0..N.
    #[error(
        "tensor `{tensor}` holds index {index} at [{batch}, {position}], outside 0..{num_tokens}"
    )]
    IndexOutOfRange {
        tensor: &'static str,
        batch: i64,
        position: i64,
        index: i64,
        num_tokens: i64,
    },

    /// The same token selected twice for one image: scattering the rows back would be ambiguous.
    #[error(
        "tensor `{tensor}` selects token {index} more than once for image {batch}; indices must be unique per image"
    )]
    DuplicateIndex {
        tensor: &'static str,
        batch: i64,
        index: i64,
    },

    /// `set_sigma` on a standard layer, which has no sigma.
    #[error(
        "this attention layer is standard attention and has no sigma; build it with kind = \"svda\" or \"svda-paper\""
    )]
    NoSigma,

    /// A libtorch error that validation did not foresee; kept so that no tch call panics.
    #[error("libtorch: {0}")]
    Torch(#[from] TchError),
}
