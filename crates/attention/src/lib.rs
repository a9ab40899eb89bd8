//! Standard and SVD-inspired (SVDA) multi-head self-attention for tch (`docs/attention.md`).
//!
//! Depend on this crate alone to drop SVDA into any tch model:
//! ``no_run,standalone_crate
//! use glassbox_attention::{Attention, AttentionConfig, AttentionKind};
//! use tch::{Device, Kind, Tensor, nn};
//!
//! # fn main() -> Result<(), glassbox_attention::AttentionError> {
//! let vs = nn::VarStore::new(Device::Cpu);
//! let attn = Attention::new(vs.root() / "attn", &AttentionConfig::new(192, 3, AttentionKind::Svda))?;
//! let x = Tensor::randn([8, 197, 192], (Kind::Float, Device::Cpu));
//! let y = attn.forward_t(&x, true)?; // fused path, B x N x D
//! let maps = attn.forward_with_maps(&x)?; // explicit path: A, Q^, K^, sigma
//! # Ok(()) }
//! ``
//!
//! * **Score functions.** Standard: A = softmax(Q K^T / sqrt(d)). SVDA: A = softmax(Q^ diag(sigma)
//!   K^^T / sqrt(d)), with Q^ and K^ the rows of Q and K divided by max(||row||_2, 1e-6)
//!   ([`SVDA_EPS`], PyTorch's `F.normalize` convention; a zero row stays zero), sigma (H x d)
//!   learnable per head. glassbox's `svda` stores log sigma and starts it at a gain
//!   (10 sqrt(d), [`DEFAULT_SVDA_LOGIT_SCALE`]) on a learnable per-head temperature so that the attention can select from the first step; `svda-paper`
//!   reproduces the SVDA reference code (sigma ~ N(1, 0.1) and two penalties, [`Attention::penalty`]).
//!   SVDA adds H * d parameters per layer (H more with the optional temperature).
//! * **Two paths.** [`Attention::forward_t`] (training and inference) folds sigma into the queries
//!   (Q~ = Q^ * sigma) and calls libtorch's `scaled_dot_product_attention` once.
//!   [`Attention::forward_with_maps`] (analysis, no dropout) forms A explicitly and returns
//!   [`AttentionMaps`]: A (B x H x N x N), Q^ and K^ (SVDA) or Q and K (standard), and sigma. Both
//!   paths share the code that builds the score operands, so they agree to float rounding.
//! * **Query subsets.** [`Attention::forward_subset_t`] takes a B x M int64 index tensor: the M
//!   selected tokens are the queries, all N tokens are keys and values, and the result is the M
//!   updated rows (B x M x D), not a full token tensor. A sparse block gathers its rows with
//!   [`gather_tokens`], adds the attention and MLP residuals to those rows only, and writes them
//!   back with [`scatter_tokens`], so the other tokens pass through bit-for-bit unchanged (see
//!   the [`tokens`] module). Only the query third of the qkv GEMM runs on the M rows.
//! * **Errors.** Wrong shapes, dtypes or devices, an empty subset, an out-of-range or duplicated
//!   index: a typed [`AttentionError`] naming the tensor, checked before any libtorch call.
//!
//! # Parameter names (timm) and the HF mapping
//!
//! Under the layer's `nn::Path` the variables are timm's `Attention` names:
//!
//! | glassbox / timm    | shape      | HF ViT / DPT (`...layer.{i}.attention.`)                  |
//! |--------------------|------------|-----------------------------------------------------------|
//! | `qkv.weight`       | 3D x D     | cat([`attention.query.weight`, `attention.key.weight`, `attention.value.weight`], dim 0) |
//! | `qkv.bias`         | 3D         | cat([`attention.query.bias`, `attention.key.bias`, `attention.value.bias`]) |
//! | `proj.weight`      | D x D      | `output.dense.weight`                                     |
//! | `proj.bias`        | D          | `output.dense.bias`                                       |
//! | `sigma` (svda-paper) or `log_sigma` (svda) | H x d | none (SVDA has no HF counterpart) |
//! | `log_temperature` (SVDA option) | H | none                                           |
//!
//! Rows 0..D of `qkv` are the queries, D..2D the keys, 2D..3D the values, and within each block
//! head h owns rows h*d..(h+1)*d, exactly as in timm and HF. The encoder's checkpoint import does
//! the concatenation in one place; this crate never sees HF names.

pub mod attention;
pub mod config;
pub mod error;
pub mod tokens;

pub use attention::{Attention, AttentionMaps, SVDA_EPS};
pub use config::{
    AttentionConfig, AttentionKind, DEFAULT_SVDA_LOGIT_SCALE, DEFAULT_SVDA_LR, SigmaInit,
    SigmaParameterisation, SpectrumRate, SvdaConfig, SvdaOptions,
};
pub use error::AttentionError;
pub use tokens::{check_token_indices, gather_rows, gather_tokens, scatter_rows, scatter_tokens};
