//! Multi-head self-attention, standard and SVDA (`docs/attention.md`).
//!
//! With Q, K, V = X W_q + b_q, X W_k + b_k, X W_v + b_v split into H heads of width d:
//! - standard: A = softmax(Q K^T / sqrt(d));
//! - SVDA: Q^ = Q / max(||Q||_2, eps), K^ = K / max(||K||_2, eps) row-wise per head,
//!   A = softmax(Q^ diag(sigma) K^^T / sqrt(d)), sigma in R^{H x d} learnable, initialised to ones;
//!
//! then out = proj(concat_h(A V)). The fused path folds sigma into the queries,
//! Q~ = Q^ * sigma, and makes one `scaled_dot_product_attention` call; the explicit path forms A
//! and returns it with the score operands for the spectral indicators. Both paths build their
//! score operands with the same function, so they use the same eps and agree to float rounding.

use std::borrow::Borrow;

use tch::{Kind, Tensor, nn};

use crate::tokens::{check_token_indices, gather_rows, token_shape};
use crate::{AttentionConfig, AttentionError, AttentionKind};

/// The eps of SVDA's row normalisation: a row is divided by max(||row||_2, eps), PyTorch's
/// `F.normalize` convention, so rows with norm >= eps are exactly unit length and a zero row
/// stays zero instead of becoming NaN.
pub const SVDA_EPS: f64 = 1e-6;

/// One multi-head self-attention layer with timm parameter names under its `nn::Path`:
/// `qkv.weight` (3D x D), `qkv.bias` (3D, when `qkv_bias`), `proj.weight` (D x D), `proj.bias`
/// (D) and, for SVDA, `sigma` (H x d).
#[derive(Debug)]
pub struct Attention {
    config: AttentionConfig,
    qkv_weight: Tensor,
    qkv_bias: Option<Tensor>,
    proj_weight: Tensor,
    proj_bias: Tensor,
    sigma: Option<Tensor>,
}

/// What the explicit (analysis) path returns: the layer output and everything the spectral
/// indicators read (`docs/spectral.md`). M = N for a dense forward, M = the subset size otherwise.
#[derive(Debug)]
pub struct AttentionMaps {
    /// Layer output, B x M x D (identical to the fused path's output).
    pub output: Tensor,
    /// Attention probabilities A, B x H x M x N; each row sums to 1.
    pub probabilities: Tensor,
    /// Score queries, B x H x M x d: Q^ (unit rows, without sigma) for SVDA, raw Q for standard.
    pub queries: Tensor,
    /// Score keys, B x H x N x d: K^ (unit rows) for SVDA, raw K for standard.
    pub keys: Tensor,
    /// sigma (H x d) for SVDA, `None` for standard attention.
    pub sigma: Option<Tensor>,
}

/// Per-head projections of one forward call in token-major layout: q is B x M x H x d, k and v
/// are B x N x H x d. They become B x H x . x d only by a transpose (a view), so SVDA's score
/// operands keep the memory layout of standard attention's strided qkv views; libtorch's CPU
/// SDPA is measurably slower on head-major copies (docs/attention.md).
struct Heads {
    q: Tensor,
    k: Tensor,
    v: Tensor,
}

/// The two matrices whose product gives the scores, plus the SVDA unit queries for the maps.
struct ScoreOperands {
    /// Q~ = Q^ * sigma (SVDA) or Q (standard).
    query: Tensor,
    /// K^ (SVDA) or K (standard).
    key: Tensor,
    /// Q^ for SVDA, kept for the maps.
    unit_query: Option<Tensor>,
}

/// Rows of `t` divided by max(||row||_2, SVDA_EPS), computed as t * rsqrt(max(||row||^2, eps^2)):
/// multiplications only, whose backward is cheaper than that of `norm` + `div` (docs/attention.md).
fn unit_rows(t: &Tensor) -> Result<Tensor, AttentionError> {
    let inv_norm = t
        .f_square()?
        .f_sum_dim_intlist(-1, true, None::<Kind>)?
        .f_clamp_min(SVDA_EPS * SVDA_EPS)?
        .f_rsqrt()?;
    Ok(t.f_mul(&inv_norm)?)
}

impl Attention {
    /// Creates the layer's parameters under `path` (timm initialisation of `nn.Linear`: Kaiming
    /// uniform weights and uniform(+-1/sqrt(D)) biases; sigma = ones).
    pub fn new<'a>(
        path: impl Borrow<nn::Path<'a>>,
        config: &AttentionConfig,
    ) -> Result<Self, AttentionError> {
        config.validate()?;
        let path = path.borrow();
        let dim = config.dim;
        let bias_bound = 1.0 / (dim as f64).sqrt();
        let bias_init = nn::Init::Uniform {
            lo: -bias_bound,
            up: bias_bound,
        };
        let qkv = path / "qkv";
        let qkv_weight = qkv.f_var("weight", &[3 * dim, dim], nn::init::DEFAULT_KAIMING_UNIFORM)?;
        let qkv_bias = if config.qkv_bias {
            Some(qkv.f_var("bias", &[3 * dim], bias_init)?)
        } else {
            None
        };
        let proj = path / "proj";
        let proj_weight = proj.f_var("weight", &[dim, dim], nn::init::DEFAULT_KAIMING_UNIFORM)?;
        let proj_bias = proj.f_var("bias", &[dim], bias_init)?;
        let sigma = match config.kind {
            AttentionKind::Standard => None,
            AttentionKind::Svda => {
                Some(path.f_ones("sigma", &[config.num_heads, config.head_dim()])?)
            }
        };
        Ok(Self {
            config: config.clone(),
            qkv_weight,
            qkv_bias,
            proj_weight,
            proj_bias,
            sigma,
        })
    }

    /// The configuration this layer was built from.
    pub fn config(&self) -> &AttentionConfig {
        &self.config
    }

    /// SVDA's learnable sigma (H x d, the diagonal of Sigma per head); `None` for standard.
    pub fn sigma(&self) -> Option<&Tensor> {
        self.sigma.as_ref()
    }

    /// Overwrites sigma in place (without recording gradients), to set chosen values in tests and
    /// experiments. `values` must be H x d. Analysis passes never call it: they pass a sigma to
    /// [`Self::forward_with_maps_and_sigma`] instead.
    pub fn set_sigma(&self, values: &Tensor) -> Result<(), AttentionError> {
        let sigma = self.sigma.as_ref().ok_or(AttentionError::NoSigma)?;
        if values.size() != sigma.size() {
            return Err(AttentionError::TokenShape {
                tensor: "sigma",
                expected: format!("{} x {}", self.config.num_heads, self.config.head_dim()),
                shape: values.size(),
            });
        }
        let mut target = sigma.shallow_clone();
        let values = values
            .f_to_device(sigma.device())?
            .f_to_kind(sigma.kind())?;
        tch::no_grad(|| target.f_copy_(&values))?;
        Ok(())
    }

    /// Dense self-attention of `x` (B x N x D) through the fused kernel; returns B x N x D.
    /// Dropout is active only when `train`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor, AttentionError> {
        let heads = self.project(x, None)?;
        self.fused(heads, train)
    }

    /// Attention for the query tokens `queries` (B x M int64, distinct, in 0..N) against all N
    /// keys and values of `x`; returns only the M updated rows, B x M x D, in the order of
    /// `queries`. Row i equals row `queries[b, i]` of [`Self::forward_t`]; put the rows back with
    /// [`crate::scatter_tokens`] (the residual of a sparse block is added to the gathered rows).
    pub fn forward_subset_t(
        &self,
        x: &Tensor,
        queries: &Tensor,
        train: bool,
    ) -> Result<Tensor, AttentionError> {
        let heads = self.project(x, Some(queries))?;
        self.fused(heads, train)
    }

    /// Dense forward through the explicit path (no dropout): the output and the maps. Costs an
    /// N x N matrix per head; use [`Self::forward_t`] when the maps are not needed.
    pub fn forward_with_maps(&self, x: &Tensor) -> Result<AttentionMaps, AttentionError> {
        let heads = self.project(x, None)?;
        self.explicit(heads, None)
    }

    /// [`Self::forward_with_maps`] with `sigma` (H x d) in place of the layer's own, which is
    /// neither read nor written: the robustness indicator perturbs sigma this way, so an analysis
    /// pass can never leave the model's weights changed. An error for standard attention.
    pub fn forward_with_maps_and_sigma(
        &self,
        x: &Tensor,
        sigma: &Tensor,
    ) -> Result<AttentionMaps, AttentionError> {
        let own = self.sigma.as_ref().ok_or(AttentionError::NoSigma)?;
        if sigma.size() != own.size() {
            return Err(AttentionError::TokenShape {
                tensor: "sigma",
                expected: format!("{} x {}", self.config.num_heads, self.config.head_dim()),
                shape: sigma.size(),
            });
        }
        let sigma = sigma.f_to_device(own.device())?.f_to_kind(own.kind())?;
        let heads = self.project(x, None)?;
        self.explicit(heads, Some(&sigma))
    }

    /// [`Self::forward_subset_t`] through the explicit path (no dropout), with M x N maps.
    pub fn forward_subset_with_maps(
        &self,
        x: &Tensor,
        queries: &Tensor,
    ) -> Result<AttentionMaps, AttentionError> {
        let heads = self.project(x, Some(queries))?;
        self.explicit(heads, None)
    }

    /// Validates the inputs, then projects: one fused qkv GEMM for a dense call; for a subset,
    /// the query rows of the weight on the M selected tokens and the key/value rows on all N.
    fn project(&self, x: &Tensor, queries: Option<&Tensor>) -> Result<Heads, AttentionError> {
        let dim = self.config.dim;
        let (h, d) = (self.config.num_heads, self.config.head_dim());
        let (b, n, _) = token_shape("x", x, Some(dim))?;
        if x.kind() != self.qkv_weight.kind() {
            return Err(AttentionError::DtypeMismatch {
                tensor: "x",
                expected: self.qkv_weight.kind(),
                got: x.kind(),
            });
        }
        if x.device() != self.qkv_weight.device() {
            return Err(AttentionError::DeviceMismatch {
                tensor: "x",
                expected: self.qkv_weight.device(),
                got: x.device(),
            });
        }
        match queries {
            None => {
                // `unbind`, not three `select`s: its backward stacks the three gradients into
                // one buffer, where each `select` backward zero-fills a whole B x N x 3D buffer
                // and autograd then adds the three (docs/performance.md, "train step, part by part").
                let [q, k, v]: [Tensor; 3] = x
                    .f_linear(&self.qkv_weight, self.qkv_bias.as_ref())?
                    .f_reshape([b, n, 3, h, d])?
                    .f_unbind(2)?
                    .try_into()
                    .expect("unbind of a size-3 dim gives three tensors");
                Ok(Heads { q, k, v })
            }
            Some(idx) => {
                let m = check_token_indices("queries", idx, b, n, x.device())?;
                let narrow_bias = |start, len| -> Result<Option<Tensor>, AttentionError> {
                    Ok(match &self.qkv_bias {
                        Some(bias) => Some(bias.f_narrow(0, start, len)?),
                        None => None,
                    })
                };
                let q = gather_rows(x, idx)?
                    .f_linear(
                        &self.qkv_weight.f_narrow(0, 0, dim)?,
                        narrow_bias(0, dim)?.as_ref(),
                    )?
                    .f_reshape([b, m, h, d])?;
                let kv = x
                    .f_linear(
                        &self.qkv_weight.f_narrow(0, dim, 2 * dim)?,
                        narrow_bias(dim, 2 * dim)?.as_ref(),
                    )?
                    .f_reshape([b, n, 2, h, d])?;
                // `unbind` for the same reason as the dense path above.
                let [k, v]: [Tensor; 2] = kv
                    .f_unbind(2)?
                    .try_into()
                    .expect("unbind of a size-2 dim gives two tensors");
                Ok(Heads { q, k, v })
            }
        }
    }

    /// Score operands shared by both paths: (Q, K) for standard, (Q^ * sigma, K^) for SVDA,
    /// token-major in and out. `sigma` is the layer's own unless an analysis pass passes another.
    fn score_operands(
        &self,
        q: Tensor,
        k: Tensor,
        sigma: Option<&Tensor>,
    ) -> Result<ScoreOperands, AttentionError> {
        match sigma.or(self.sigma.as_ref()) {
            None => Ok(ScoreOperands {
                query: q,
                key: k,
                unit_query: None,
            }),
            Some(sigma) => {
                let unit_query = unit_rows(&q)?;
                // sigma (H x d) broadcasts over the batch and token dims of B x M x H x d.
                let query = unit_query.f_mul(sigma)?;
                Ok(ScoreOperands {
                    query,
                    key: unit_rows(&k)?,
                    unit_query: Some(unit_query),
                })
            }
        }
    }

    /// One `scaled_dot_product_attention` call on the score operands.
    fn fused(&self, heads: Heads, train: bool) -> Result<Tensor, AttentionError> {
        let ops = self.score_operands(heads.q, heads.k, None)?;
        let dropout = if train { self.config.attn_drop } else { 0.0 };
        let out = Tensor::f_scaled_dot_product_attention(
            &ops.query.f_transpose(1, 2)?,
            &ops.key.f_transpose(1, 2)?,
            &heads.v.f_transpose(1, 2)?,
            None::<Tensor>,
            dropout,
            false,
            self.config.scale(),
            false,
        )?;
        self.merge_and_project(&out, train)
    }

    /// softmax(query key^T * scale) formed explicitly, returned with the operands; `sigma`
    /// replaces the layer's own when given.
    fn explicit(
        &self,
        heads: Heads,
        sigma: Option<&Tensor>,
    ) -> Result<AttentionMaps, AttentionError> {
        let ops = self.score_operands(heads.q.shallow_clone(), heads.k.shallow_clone(), sigma)?;
        let head_major = |t: &Tensor| t.f_transpose(1, 2);
        let keys = head_major(&ops.key)?;
        let probabilities = head_major(&ops.query)?
            .f_matmul(&keys.f_transpose(-2, -1)?)?
            .f_mul_scalar(self.config.scale())?
            .f_softmax(-1, None::<Kind>)?;
        let output =
            self.merge_and_project(&probabilities.f_matmul(&head_major(&heads.v)?)?, false)?;
        Ok(AttentionMaps {
            output,
            probabilities,
            queries: head_major(&ops.unit_query.unwrap_or(heads.q))?,
            keys,
            sigma: sigma.or(self.sigma.as_ref()).map(Tensor::shallow_clone),
        })
    }

    /// B x H x M x d head outputs -> B x M x D, then the output projection and its dropout.
    fn merge_and_project(&self, heads_out: &Tensor, train: bool) -> Result<Tensor, AttentionError> {
        let s = heads_out.size();
        let (b, m) = (s[0], s[2]);
        let out = heads_out
            .f_transpose(1, 2)?
            .f_reshape([b, m, self.config.dim])?
            .f_linear(&self.proj_weight, Some(&self.proj_bias))?;
        if train && self.config.proj_drop > 0.0 {
            Ok(out.f_dropout(self.config.proj_drop, true)?)
        } else {
            Ok(out)
        }
    }
}
