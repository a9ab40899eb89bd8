//! Multi-head self-attention, standard and SVDA (`docs/attention.md`).
//!
//! With Q, K, V = X W_q + b_q, X W_k + b_k, X W_v + b_v split into H heads of width d:
//! - standard: A = softmax(Q K^T / sqrt(d));
//! - SVDA: Q^ = Q / max(||Q||_2, eps), K^ = K / max(||K||_2, eps) row-wise per head,
//!   A = softmax(Q^ diag(sigma) K^^T / sqrt(d)), sigma in R^{H x d} learnable (stored as sigma or
//!   log sigma, optionally times a per-head temperature; `SvdaOptions`);
//!
//! then out = proj(concat_h(A V)). The fused path folds sigma into the queries,
//! Q~ = Q^ * sigma, and makes one `scaled_dot_product_attention` call; the explicit path forms A
//! and returns it with the score operands for the spectral indicators. Both paths build their
//! score operands with the same function, so they use the same eps and agree to float rounding.

use std::borrow::Borrow;

use tch::{Kind, TchError, Tensor, nn};

use crate::config::{SigmaInit, SigmaParameterisation, SvdaOptions};
use crate::tokens::{check_token_indices, gather_rows, token_shape};
use crate::{AttentionConfig, AttentionError};

/// The eps of SVDA's row normalisation: a row is divided by max(||row||_2, eps), PyTorch's
/// `F.normalize` convention, so rows with norm >= eps are exactly unit length and a zero row
/// stays zero instead of becoming NaN.
pub const SVDA_EPS: f64 = 1e-6;

/// One multi-head self-attention layer with timm parameter names under its `nn::Path`:
/// `qkv.weight` (3D x D), `qkv.bias` (3D, when `qkv_bias`), `proj.weight` (D x D), `proj.bias`
/// (D) and, for SVDA, `sigma` or `log_sigma` (H x d) and optionally `log_temperature` (H).
#[derive(Debug)]
pub struct Attention {
    config: AttentionConfig,
    qkv_weight: Tensor,
    qkv_bias: Option<Tensor>,
    proj_weight: Tensor,
    proj_bias: Tensor,
    spectrum: Option<Spectrum>,
}

/// SVDA's learnable spectrum as stored: sigma (or its log) and the optional log temperature.
#[derive(Debug)]
struct Spectrum {
    options: SvdaOptions,
    /// `sigma` (linear) or `log_sigma` (log), H x d.
    sigma: Tensor,
    /// `log_temperature`, H.
    log_temperature: Option<Tensor>,
}

impl Spectrum {
    /// The sigma the scores use, H x d: exp(log_sigma) or sigma, times the temperature.
    fn effective(&self) -> Result<Tensor, AttentionError> {
        let sigma = match self.options.parameterisation {
            SigmaParameterisation::Linear => self.sigma.shallow_clone(),
            SigmaParameterisation::Log => self.sigma.f_exp()?,
        };
        Ok(match &self.log_temperature {
            Some(t) => sigma.f_mul(&t.f_exp()?.f_unsqueeze(-1)?)?,
            None => sigma,
        })
    }
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
    /// The effective sigma the query was scaled by (SVDA).
    sigma: Option<Tensor>,
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
    /// uniform weights and uniform(+-1/sqrt(D)) biases; SVDA's spectrum as `SvdaOptions` says).
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
        let spectrum = match config.svda_options() {
            None => None,
            Some(options) => {
                let shape = [config.num_heads, config.head_dim()];
                let log = options.parameterisation == SigmaParameterisation::Log;
                let sigma = match (options.sigma_init, log) {
                    (SigmaInit::Constant(g), false) => {
                        path.f_var("sigma", &shape, nn::Init::Const(g))?
                    }
                    (SigmaInit::Constant(g), true) => {
                        path.f_var("log_sigma", &shape, nn::Init::Const(g.ln()))?
                    }
                    (SigmaInit::Normal { mean, std }, false) => {
                        path.f_var("sigma", &shape, nn::Init::Randn { mean, stdev: std })?
                    }
                    (SigmaInit::Normal { mean, std }, true) => {
                        // ln of a normal draw; a draw at or below zero (more than 10 std
                        // below the mean for svda-paper's N(1, 0.1)) is clamped to mean / 100.
                        let draw =
                            path.f_var("log_sigma", &shape, nn::Init::Randn { mean, stdev: std })?;
                        tch::no_grad(|| -> Result<(), TchError> {
                            let logs = draw.f_clamp_min(mean / 100.0)?.f_log()?;
                            draw.shallow_clone().f_copy_(&logs)
                        })?;
                        draw
                    }
                };
                let log_temperature = match options.temperature {
                    Some(t) => Some(path.f_var(
                        "log_temperature",
                        &[config.num_heads],
                        nn::Init::Const(t.ln()),
                    )?),
                    None => None,
                };
                Some(Spectrum {
                    options,
                    sigma,
                    log_temperature,
                })
            }
        };
        Ok(Self {
            config: config.clone(),
            qkv_weight,
            qkv_bias,
            proj_weight,
            proj_bias,
            spectrum,
        })
    }

    /// The configuration this layer was built from.
    pub fn config(&self) -> &AttentionConfig {
        &self.config
    }

    /// SVDA's effective sigma (H x d, the diagonal of Sigma per head, temperature included), as
    /// the scores use it; `None` for standard attention. Differentiable: gradients reach the
    /// stored variables.
    pub fn sigma(&self) -> Result<Option<Tensor>, AttentionError> {
        self.spectrum.as_ref().map(Spectrum::effective).transpose()
    }

    /// The per-head temperature (H) when the layer has one.
    pub fn temperature(&self) -> Option<Tensor> {
        self.spectrum
            .as_ref()
            .and_then(|s| s.log_temperature.as_ref())
            .map(Tensor::exp)
    }

    /// SVDA's filled-in options; `None` for standard attention.
    pub fn svda_options(&self) -> Option<&SvdaOptions> {
        self.spectrum.as_ref().map(|s| &s.options)
    }

    /// Overwrites the stored spectrum in place (without recording gradients) so that the
    /// effective sigma equals `values` (H x d): the temperature, if any, is set to 1. For tests
    /// and experiments; analysis passes never call it, they pass a sigma to
    /// [`Self::forward_with_maps_and_sigma`] instead. Log-parameterised layers need `values` > 0.
    pub fn set_sigma(&self, values: &Tensor) -> Result<(), AttentionError> {
        let spectrum = self.spectrum.as_ref().ok_or(AttentionError::NoSigma)?;
        self.check_sigma_shape(values)?;
        let mut target = spectrum.sigma.shallow_clone();
        let values = values
            .f_to_device(target.device())?
            .f_to_kind(target.kind())?;
        let stored = match spectrum.options.parameterisation {
            SigmaParameterisation::Linear => values,
            SigmaParameterisation::Log => {
                let smallest = values.f_min()?.f_double_value(&[])?;
                if smallest.is_nan() || smallest <= 0.0 {
                    return Err(AttentionError::InvalidConfig(format!(
                        "a log-parameterised sigma must be positive; the values given reach {smallest}"
                    )));
                }
                values.f_log()?
            }
        };
        tch::no_grad(|| -> Result<(), TchError> {
            target.f_copy_(&stored)?;
            if let Some(t) = &spectrum.log_temperature {
                let _ = t.shallow_clone().f_zero_()?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// svda-paper's regulariser of this layer (a scalar tensor on the layer's device):
    /// lambda_o [mean((W_q^T W_q - I)^2) + mean((W_k^T W_k - I)^2)] + lambda_e mean_h H(p_h) with
    /// p_h = sigma_h^2 / sum sigma_h^2 (natural log). `None` when both weights are zero or the
    /// layer is standard attention (docs/attention.md, "svda-paper").
    pub fn penalty(&self) -> Result<Option<Tensor>, AttentionError> {
        let Some(spectrum) = &self.spectrum else {
            return Ok(None);
        };
        let (lo, le) = (
            spectrum.options.orthogonality_weight,
            spectrum.options.entropy_weight,
        );
        if lo == 0.0 && le == 0.0 {
            return Ok(None);
        }
        let dim = self.config.dim;
        let mut total = Tensor::f_zeros([], (self.qkv_weight.kind(), self.qkv_weight.device()))?;
        if lo > 0.0 {
            let eye = Tensor::f_eye(dim, (self.qkv_weight.kind(), self.qkv_weight.device()))?;
            for start in [0, dim] {
                let w = self.qkv_weight.f_narrow(0, start, dim)?;
                let gram = w.f_transpose(0, 1)?.f_matmul(&w)?;
                let term = gram.f_sub(&eye)?.f_square()?.f_mean(None::<Kind>)?;
                total = total.f_add(&term.f_mul_scalar(lo)?)?;
            }
        }
        if le > 0.0 {
            let energy = spectrum.effective()?.f_square()?;
            // A head whose sigma is all zero has no spectrum; the clamp gives it p = 0 (entropy 0)
            // instead of 0/0.
            let energy_sum = energy
                .f_sum_dim_intlist(-1, true, None::<Kind>)?
                .f_clamp_min(1e-30)?;
            let p = energy.f_div(&energy_sum)?;
            // p ln p with 0 ln 0 = 0: clamping inside the log keeps the gradient finite.
            let entropy = p
                .f_mul(&p.f_clamp_min(1e-30)?.f_log()?)?
                .f_sum_dim_intlist(-1, false, None::<Kind>)?
                .f_neg()?
                .f_mean(None::<Kind>)?;
            total = total.f_add(&entropy.f_mul_scalar(le)?)?;
        }
        Ok(Some(total))
    }

    fn check_sigma_shape(&self, sigma: &Tensor) -> Result<(), AttentionError> {
        let expected = [self.config.num_heads, self.config.head_dim()];
        if sigma.size() != expected {
            return Err(AttentionError::TokenShape {
                tensor: "sigma",
                expected: format!("{} x {}", expected[0], expected[1]),
                shape: sigma.size(),
            });
        }
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

    /// [`Self::forward_subset_t`] for query indices the caller guarantees are distinct and in
    /// range (an encoder's own top-k selection): they are not checked, so the call makes no host
    /// synchronisation and can sit inside a layer loop. An index outside 0..N is still a libtorch
    /// error, not undefined behaviour. With `mass`, it also returns the attention mass each of the
    /// N key tokens receives, summed over heads and the M queries (B x N, without gradient): the
    /// sparse encoder's saliency target (`docs/sparse.md`).
    pub fn forward_kept_t(
        &self,
        x: &Tensor,
        kept: &Tensor,
        train: bool,
        mass: bool,
    ) -> Result<(Tensor, Option<Tensor>), AttentionError> {
        let heads = self.project_checked(x, Some(kept), false)?;
        let ops = self.score_operands(heads.q, heads.k.shallow_clone(), None)?;
        let received = if mass {
            Some(tch::no_grad(|| -> Result<Tensor, AttentionError> {
                let scores = ops
                    .query
                    .f_transpose(1, 2)?
                    .f_matmul(&ops.key.f_permute([0, 2, 3, 1])?)?;
                Ok(scores
                    .f_mul_scalar(self.config.scale())?
                    .f_softmax(-1, None::<Kind>)?
                    .f_sum_dim_intlist([1i64, 2].as_slice(), false, None::<Kind>)?
                    .f_detach()?)
            })?)
        } else {
            None
        };
        Ok((self.fused_operands(ops, &heads.v, train)?, received))
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
        if self.spectrum.is_none() {
            return Err(AttentionError::NoSigma);
        }
        self.check_sigma_shape(sigma)?;
        let sigma = sigma
            .f_to_device(self.qkv_weight.device())?
            .f_to_kind(self.qkv_weight.kind())?;
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
        self.project_checked(x, queries, true)
    }

    /// [`Self::project`], validating the query indices only when `check_queries`.
    fn project_checked(
        &self,
        x: &Tensor,
        queries: Option<&Tensor>,
        check_queries: bool,
    ) -> Result<Heads, AttentionError> {
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
                let m = if check_queries {
                    check_token_indices("queries", idx, b, n, x.device())?
                } else {
                    idx.size()[1]
                };
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
        let sigma = match (sigma, &self.spectrum) {
            (Some(given), _) => given.shallow_clone(),
            (None, Some(spectrum)) => spectrum.effective()?,
            (None, None) => {
                return Ok(ScoreOperands {
                    query: q,
                    key: k,
                    unit_query: None,
                    sigma: None,
                });
            }
        };
        let unit_query = unit_rows(&q)?;
        // sigma (H x d) broadcasts over the batch and token dims of B x M x H x d.
        let query = unit_query.f_mul(&sigma)?;
        Ok(ScoreOperands {
            query,
            key: unit_rows(&k)?,
            unit_query: Some(unit_query),
            sigma: Some(sigma),
        })
    }

    /// One `scaled_dot_product_attention` call on the score operands.
    fn fused(&self, heads: Heads, train: bool) -> Result<Tensor, AttentionError> {
        let ops = self.score_operands(heads.q, heads.k, None)?;
        self.fused_operands(ops, &heads.v, train)
    }

    /// The `scaled_dot_product_attention` call of [`Self::fused`] on operands already formed.
    fn fused_operands(
        &self,
        ops: ScoreOperands,
        v: &Tensor,
        train: bool,
    ) -> Result<Tensor, AttentionError> {
        let dropout = if train { self.config.attn_drop } else { 0.0 };
        let out = Tensor::f_scaled_dot_product_attention(
            &ops.query.f_transpose(1, 2)?,
            &ops.key.f_transpose(1, 2)?,
            &v.f_transpose(1, 2)?,
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
            sigma: ops.sigma,
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
