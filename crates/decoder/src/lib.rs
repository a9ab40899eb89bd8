//! glassbox-decoder: the decoder of the Dense Prediction Transformer (Ranftl et al., "Vision
//! Transformers for Dense Prediction", ICCV 2021; `docs/architecture.md`).
//!
//! Hooked encoder tokens -> Reassemble (Read / Concatenate / Resample) -> neck convs -> RefineNet
//! fusion ([`Decoder`]) -> a head ([`DepthHead`], or [`SegmentationHead`] with its
//! [`AuxiliaryHead`]). The trainer composes Encoder + Decoder + head; [`checkpoint`] loads weights by
//! name into any `VarStore`.
//!
//! [`Depict`] is the alternative segmentation decoder: DEPICT (Wen & Li, NeurIPS 2024), a white-box
//! decoder whose layers are gradient steps on a coding rate, each with one projection shared by
//! query, key, value and output. It reads the last block's patch tokens directly (no Reassemble or
//! fusion) and reports white-box diagnostics ([`DepictDiagnostics`]: orthogonality of the
//! projections and class embeddings, coding-rate ratios), so training can be watched, not only
//! scored. Variables live under the path given to [`Depict::new`]; `class_embed` must be excluded
//! from weight decay.
//!
//! # Variable names (equal to HF `DPTForDepthEstimation` / `DPTForSemanticSegmentation`)
//!
//! Build every part on the model root path; names then equal the HF checkpoint's (transformers
//! 4.57.1), so importing the decoder is a load with no renaming:
//!
//! | ours | HF module |
//! |------|-----------|
//! | `neck.reassemble_stage.readout_projects.{i}.0.{weight,bias}` (readout `project` only) | `Sequential(Linear 2D->D, GELU)` |
//! | `neck.reassemble_stage.layers.{i}.projection.{weight,bias}` | 1x1 conv D -> C_i |
//! | `neck.reassemble_stage.layers.{i}.resize.{weight,bias}` (absent for factor 1) | ConvTranspose / Conv k3 s2 p1 |
//! | `neck.convs.{i}.weight` | conv3x3 C_i -> F, no bias |
//! | `neck.fusion_stage.layers.{j}.projection.{weight,bias}` | 1x1 conv after the x2 upsample |
//! | `neck.fusion_stage.layers.{j}.residual_layer{1,2}.convolution{1,2}.{weight,bias}` | RCU convs (no bias with BN) |
//! | `neck.fusion_stage.layers.{j}.residual_layer{1,2}.batch_norm{1,2}.*` (fusion BN only) | RCU batch norms |
//! | `head.head.{0,2,4}.{weight,bias}` | depth head convs |
//! | `head.head.{0,4}.*`, `head.head.1.*` | segmentation head conv / BN |
//! | `auxiliary_head.head.{0,4}.*`, `auxiliary_head.head.1.*` | auxiliary head conv / BN |
//!
//! Stage i = 0 is the shallowest hook; fusion layer j = 0 takes the deepest feature (HF order).
//! Known-unused HF tensors ([`checkpoint::is_known_unused_hf_tensor`]): HF builds
//! `neck.fusion_stage.layers.0.residual_layer1.*` but never calls it (the deepest layer has no skip),
//! and BN `num_batches_tracked` counters; we create neither. Not supported: HF's hybrid (ResNet)
//! backbone stages and `add_projection` (`head.projection`, DINOv2/Depth-Anything style).
//!
//! # Numerics (mirroring HF `modeling_dpt.py`)
//!
//! GELU is the exact (erf) form; the fusion and head upsampling is bilinear x2 with align_corners =
//! true; a fusion skip whose spatial size differs from the running map (odd patch grids) is resized
//! bilinearly with align_corners = false to the running map's size. `tests/hf_parity.rs` checks the
//! neck outputs and the depth map against HF to 1e-4 relative error for all three readouts and an
//! odd, non-square grid.
//!
//! # Decisions where the design is silent
//!
//! - Odd grids make HF's fused maps larger than half the input; the heads take an optional image
//!   size and then resize their output bilinearly (align_corners = false) to exactly B x H x W.
//! - The auxiliary head reads the second-to-last fusion output (`docs/architecture.md` and the DPT paper's
//!   segmentation setup); HF 4.57.1 feeds it `hidden_states[-1]`, the same level as the main head,
//!   which `auxiliary_input = "last"` ([`AuxiliaryInput::Last`]) reproduces exactly.
//!   Its logits are resized (align_corners = false, as HF before its loss) to the main logits' size.

pub mod checkpoint;
mod config;
mod decoder;
mod depict;
mod error;
mod fusion;
mod heads;
mod reassemble;

pub use config::{DecoderConfig, NUM_STAGES, Readout};
pub use decoder::Decoder;
pub use depict::{
    CLASS_EMBED_STD, CODING_RATE_EPS, Depict, DepictConfig, DepictDiagnostics, DepictVariant,
    coding_rate, orthogonality,
};
pub use error::{DecoderError, Result};
pub use heads::{
    AuxiliaryHead, AuxiliaryInput, DepthHead, SegmentationDecoder, SegmentationHead,
    SegmentationHeadConfig, SegmentationOutput,
};
