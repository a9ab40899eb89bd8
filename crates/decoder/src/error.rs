//! Typed errors of the decoder: bad configurations and inputs that do not fit the configured decoder.

use thiserror::Error;

/// Everything the decoder and its heads can reject, named with the offending value and what was expected.
#[derive(Debug, Error)]
pub enum DecoderError {
    /// A configuration field holds a value the decoder cannot be built from.
    #[error("invalid decoder config: {field} = {value}; expected {expected}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        expected: &'static str,
    },

    /// The encoder handed over a different number of hooked token sequences than the decoder has stages.
    #[error("expected {expected} hooked token sequences (one per reassemble stage), got {got}")]
    HookCount { expected: usize, got: usize },

    /// A hooked tensor is not a B x (1 + h*w) x D token sequence.
    #[error(
        "hook {hook}: expected a token tensor B x (1 + h*w) x D of rank 3, got shape {shape:?}"
    )]
    HookRank { hook: usize, shape: Vec<i64> },

    /// A hooked tensor has a token width other than the configured hidden size D.
    #[error("hook {hook}: expected hidden size D = {expected}, got {got} (shape {shape:?})")]
    HiddenSize {
        hook: usize,
        expected: i64,
        got: i64,
        shape: Vec<i64>,
    },

    /// A hooked tensor does not hold one readout token plus one token per patch of the grid.
    #[error(
        "hook {hook}: a {h} x {w} patch grid needs 1 + {h}*{w} = {expected} tokens (readout first), got {got}"
    )]
    TokenCount {
        hook: usize,
        h: i64,
        w: i64,
        expected: i64,
        got: i64,
    },

    /// A hybrid stage's ResNet map is not B x C_i x (f h) x (f w) for its channels and stride.
    #[error(
        "stage {hook}: expected the ResNet feature map B x {channels} x {height} x {width}, got \
         shape {shape:?}"
    )]
    FeatureMap {
        hook: usize,
        channels: i64,
        height: i64,
        width: i64,
        shape: Vec<i64>,
    },

    /// The hooked tensors disagree on the batch size.
    #[error("hook {hook}: batch size {got} differs from hook 0's batch size {expected}")]
    BatchSize {
        hook: usize,
        expected: i64,
        got: i64,
    },

    /// The patch grid is empty.
    #[error("patch grid must be at least 1 x 1, got {h} x {w}")]
    EmptyGrid { h: i64, w: i64 },

    /// A head received features that are not B x F x H x W with the configured F.
    #[error("{head}: expected fused features B x {expected_channels} x H x W, got shape {shape:?}")]
    FeatureShape {
        head: &'static str,
        expected_channels: i64,
        shape: Vec<i64>,
    },

    /// A head that needs several fusion levels received too few.
    #[error("{head}: expected at least {expected} fusion levels, got {got}")]
    FusionLevels {
        head: &'static str,
        expected: usize,
        got: usize,
    },

    /// The requested output resolution is empty.
    #[error("{head}: output size must be at least 1 x 1, got {h} x {w}")]
    EmptyOutput { head: &'static str, h: i64, w: i64 },

    /// DEPICT received tokens that are not B x N x D patch tokens of its width, dtype and device.
    #[error(
        "DEPICT: expected patch tokens B x N x {hidden_size} with B, N >= 1 ({kind:?} on {device:?}, \
         readout token dropped), got shape {shape:?} ({got_kind:?} on {got_device:?})"
    )]
    DepictTokens {
        hidden_size: i64,
        kind: tch::Kind,
        device: tch::Device,
        shape: Vec<i64>,
        got_kind: tch::Kind,
        got_device: tch::Device,
    },

    /// DEPICT's patch grid does not hold one token per patch.
    #[error("DEPICT: a {h} x {w} patch grid needs {expected} tokens, got {got}")]
    DepictGrid {
        h: i64,
        w: i64,
        expected: i64,
        got: i64,
    },

    /// A DEPICT layer index past the last projection.
    #[error("DEPICT: layer {layer} does not exist; the decoder has {layers} projections")]
    DepictLayer { layer: usize, layers: usize },

    /// A white-box measure received a tensor or a parameter it is not defined for.
    #[error("{measure}: expected {expected}, got {got}")]
    MeasureInput {
        measure: &'static str,
        expected: &'static str,
        got: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, DecoderError>;
