//! Typed errors of the encoder: bad images, bad configs and checkpoint problems are reported with
//! the tensor or value at fault, before libtorch can panic on them.

use glassbox_attention::AttentionError;
use tch::TchError;

/// Everything that can go wrong when building, running or loading the ViT encoder.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// The configuration cannot describe a ViT (sizes, hooks, heads).
    #[error("invalid encoder config: {0}")]
    InvalidConfig(String),

    /// The input is not a B x 3 x H x W float image batch with H and W multiples of the patch size.
    #[error("input images must be {expected}, got dtype {kind:?} and shape {shape:?}")]
    InputShape {
        expected: String,
        kind: tch::Kind,
        shape: Vec<i64>,
    },

    /// An attention layer rejected its input or failed.
    #[error("encoder block {block}: {source}")]
    Attention {
        block: usize,
        #[source]
        source: AttentionError,
    },

    /// A checkpoint does not fit the model: lists every problem at once.
    #[error("{0}")]
    Checkpoint(String),

    /// A libtorch error that validation did not foresee.
    #[error("libtorch: {0}")]
    Torch(#[from] TchError),
}
