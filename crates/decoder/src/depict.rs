//! DEPICT, the white-box segmentation decoder (Wen & Li, "Rethinking Decoders for Transformer-based
//! Semantic Segmentation: A Compression Perspective", NeurIPS 2024; reference implementation
//! QishuaiWen/DEPICT `model/dec_blocks.py`, `model/decoder.py`; `docs/architecture.md`, DEPICT).
//!
//! Every layer is one step of gradient descent on a coding rate, so its single projection P_l and
//! step s_l can be read off after training: [`Depict::diagnostics`] measures how orthogonal the P_l
//! and the class embeddings became and how much of the tokens' coding rate each P_l keeps.
//!
//! ```text
//! Z~      = LN_l(Z),  W = Z~ P_l^T split into h heads W_k            (P_l: (h d_h) x D)
//! MSSA:     Z <- Z + s_l merge_k(softmax(W_k W_k^T / sqrt(d_h)) W_k) P_l
//! MSCA:     Q <- Q + s_l merge_k(softmax((Q P_k^T)(Z~ P_k^T)^T / sqrt(d_h)) (Z~ P_k^T)) P_l
//! SA:       [Z; Q] <- MSSA_L(...MSSA_1([Z; Q])),  [Z; Q] <- LN([Z; Q])
//! CA:       Z <- LN(MSSA_L(...MSSA_1(Z))),  Q <- LN_Q(MSCA_L(...MSCA_1(Q; Z)))
//! masks:    M = LN_K((Z / |Z|)(Q / |Q|)^T)    B x N x K -> B x K x h x w -> bilinear to H x W
//! ```
//!
//! Variables under the path given to [`Depict::new`] (the model puts them under `depict.`):
//!
//! | name | shape | what |
//! |------|-------|------|
//! | `class_embed` | K x D | class embeddings Q; exclude from weight decay |
//! | `layers.{l}.proj` | (h d_h) x D | P_l of the l-th MSSA layer |
//! | `layers.{l}.step` | 1 | s_l |
//! | `layers.{l}.norm.{weight,bias}` | D | the layer's pre-LN |
//! | `cross_layers.{l}.{proj,step,norm.*}` | as above | the MSCA layers (CA only) |
//! | `norm.{weight,bias}` | D | final LN of [Z; Q] (SA) or of Z (CA) |
//! | `class_norm.{weight,bias}` | D | final LN of Q (CA only) |
//! | `mask_norm.{weight,bias}` | K | LN over the class axis of the masks |
//!
//! # Decisions where the reference differs from the design text or is silent
//!
//! - In SA the class tokens are part of the stack that each layer's pre-LN normalises (the
//!   reference's `PreNorm` normalises `cat(Z, Q)`); in MSCA only Z is normalised, Q is not.
//! - CA: the reference builds `n_layers` MSSA layers but always 3 MSCA layers with d_h = 50; here
//!   both stacks have `num_layers` layers and the same head width.
//! - The reference draws the class embeddings with timm's `trunc_normal_(std=0.02)`, whose bounds
//!   are ±2 in absolute value (100 std); we truncate at ±2 std as the design says.
//! - Unit-normalising Z and Q for the masks divides by max(|x|, 1e-12) (as `F.normalize`), where
//!   the reference divides by |x|: identical for every non-zero token, finite for a zero one.
//! - The reference's attention dropout is 0 in its config; there is none here.
//! - The reference fixes d_h = 100 (and 50 for MSCA) at every ViT width; `head_dim` unset gives
//!   d_h = D / h, so P_l is square. Everything else follows the reference as written: P_l ~
//!   D^-1/2 N(0, 1), s_l ~ N(0, 1) applied as a plain factor, LayerNorm eps 1e-5 with weight 1 and
//!   bias 0, class embeddings K x D (the reference's 1 x K x D without the broadcast axis).
//! - The reference decodes the encoder's output after its final LayerNorm (Segmenter's ViT); which
//!   tokens to pass is the caller's choice (the model passes the last hooked block's patch tokens).
//! - Coding rates use ε² = 0.5 ([`CODING_RATE_EPS`]); the reference code has no coding-rate measure.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn, nn::Module};

use crate::error::{DecoderError, Result};

/// Standard deviation of the class embeddings' truncated normal (truncated at ±2 std).
pub const CLASS_EMBED_STD: f64 = 0.02;

/// Distortion ε of the coding rates in [`DepictDiagnostics`]: ε² = 0.5.
pub const CODING_RATE_EPS: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// P(|X| < 2) for X ~ N(0, 1), i.e. erf(√2): the uniform range of the inverse-CDF sampler.
const TWO_SIGMA_MASS: f64 = 0.954_499_736_103_641_6;

/// Which DEPICT decoder: the class tokens join the image tokens' self-attention, or read the
/// image tokens through cross-attention after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DepictVariant {
    /// MSSA over [Z; Q] jointly, then one LayerNorm (the reference default).
    #[default]
    Sa,
    /// MSSA over Z, a LayerNorm, then MSCA with the classes as queries, then a LayerNorm on Q.
    Ca,
}

fn default_layers() -> usize {
    3
}

fn default_heads() -> i64 {
    3
}

/// Shape of a DEPICT decoder; the token width D comes from the encoder, so it is not stored here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepictConfig {
    /// SA or CA.
    pub variant: DepictVariant,
    /// Number of classes K.
    pub num_classes: i64,
    /// Layers per attention stack (CA has this many MSSA and this many MSCA layers).
    #[serde(default = "default_layers")]
    pub num_layers: usize,
    /// Attention heads h.
    #[serde(default = "default_heads")]
    pub num_heads: i64,
    /// Per-head width d_h; unset means D / h, so that P_l is square and the decoder needs no
    /// projection of its own around the encoder width.
    #[serde(default)]
    pub head_dim: Option<i64>,
}

impl DepictConfig {
    /// The reference's depth and head count (3 layers, 3 heads) with d_h = D / 3.
    pub fn new(variant: DepictVariant, num_classes: i64) -> Self {
        Self {
            variant,
            num_classes,
            num_layers: default_layers(),
            num_heads: default_heads(),
            head_dim: None,
        }
    }

    /// Checks that a decoder of this shape can be built on tokens of width `hidden_size`.
    pub fn validate(&self, hidden_size: i64) -> Result<()> {
        self.head_dim_for(hidden_size).map(|_| ())
    }

    /// The per-head width d_h at token width D, after validating the config.
    pub fn head_dim_for(&self, hidden_size: i64) -> Result<i64> {
        let invalid = |field, value: String, expected| DecoderError::InvalidConfig {
            field,
            value,
            expected,
        };
        if hidden_size < 1 {
            return Err(invalid(
                "hidden_size",
                hidden_size.to_string(),
                "a positive token width D",
            ));
        }
        if self.num_classes < 1 {
            return Err(invalid(
                "num_classes",
                self.num_classes.to_string(),
                "a positive class count",
            ));
        }
        if self.num_layers == 0 {
            return Err(invalid("num_layers", "0".into(), "at least one layer"));
        }
        if self.num_heads < 1 {
            return Err(invalid(
                "num_heads",
                self.num_heads.to_string(),
                "a positive head count",
            ));
        }
        match self.head_dim {
            Some(d) if d < 1 => Err(invalid(
                "head_dim",
                d.to_string(),
                "a positive per-head width, or unset for D / num_heads",
            )),
            Some(d) => Ok(d),
            None if hidden_size % self.num_heads != 0 => Err(invalid(
                "num_heads",
                format!(
                    "{} (hidden size {hidden_size}, head_dim unset)",
                    self.num_heads
                ),
                "a divisor of the hidden size D, or a head_dim set explicitly",
            )),
            None => Ok(hidden_size / self.num_heads),
        }
    }
}

/// White-box measures of one batch, written to the run's logs over training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepictDiagnostics {
    /// Per projection ([`Depict::layer_count`] order): [`orthogonality`] of its smaller Gram
    /// matrix, 0 exactly when P_l's rows (h d_h <= D) or columns (h d_h > D) are orthogonal.
    pub projection_orthogonality: Vec<f64>,
    /// Mean |cosine| between distinct class embeddings; 0 when they are mutually orthogonal.
    pub class_orthogonality: f64,
    /// Per projection: R(Z~ P_l^T) / R(Z~) of the layer's normalised image tokens ([`coding_rate`],
    /// each in its own dimension): how much of the tokens' coding rate the layer's subspaces keep.
    pub coding_rate_ratio: Vec<f64>,
}

/// Normalised off-diagonal energy ||G - diag(G)||_F^2 / ||G||_F^2 of a square Gram matrix, in
/// [0, 1): 0 exactly when the vectors behind G are mutually orthogonal (whatever their lengths),
/// and scale-free, so layers of different widths compare; a zero G counts as 0.
pub fn orthogonality(gram: &Tensor) -> Result<f64> {
    let shape = gram.size();
    if shape.len() != 2 || shape[0] != shape[1] || shape[0] < 1 {
        return Err(DecoderError::MeasureInput {
            measure: "orthogonality",
            expected: "a square n x n Gram matrix with n >= 1",
            got: format!("shape {shape:?}"),
        });
    }
    let g = gram.to_device(Device::Cpu).to_kind(Kind::Double);
    let total = g.square().sum(Kind::Double).double_value(&[]);
    if total == 0.0 {
        return Ok(0.0);
    }
    let off = &g - g.diagonal(0, 0, 1).diag_embed(0, 0, 1);
    Ok(off.square().sum(Kind::Double).double_value(&[]) / total)
}

/// Coding rate R(Z) = ½ logdet(I_d + d / (N ε²) Zᵀ Z) of N tokens in d dimensions (CRATE, DEPICT):
/// the rate (in nats) needed to code the tokens up to distortion ε. `z` is N x d, or B x N x d, whose B
/// rates are averaged. Computed in f64 on the CPU, through the smaller of Zᵀ Z and Z Zᵀ (equal
/// log-determinants).
pub fn coding_rate(z: &Tensor, eps: f64) -> Result<f64> {
    let shape = z.size();
    if !matches!(shape.len(), 2 | 3) || shape.iter().any(|&s| s < 1) {
        return Err(DecoderError::MeasureInput {
            measure: "coding rate",
            expected: "tokens N x d or B x N x d with B, N, d >= 1",
            got: format!("shape {shape:?}"),
        });
    }
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(DecoderError::MeasureInput {
            measure: "coding rate",
            expected: "a positive, finite distortion eps",
            got: eps.to_string(),
        });
    }
    let z = z.to_device(Device::Cpu).to_kind(Kind::Double);
    let z = if shape.len() == 2 { z.unsqueeze(0) } else { z };
    let (n, d) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let alpha = d as f64 / (n as f64 * eps * eps);
    let gram = if n >= d {
        z.transpose(1, 2).matmul(&z)
    } else {
        z.matmul(&z.transpose(1, 2))
    };
    let eye = Tensor::eye(n.min(d), (Kind::Double, Device::Cpu));
    let (_, logdet) = Tensor::linalg_slogdet(&(eye + gram * alpha));
    Ok(0.5 * logdet.mean(Kind::Double).double_value(&[]))
}

/// Gram matrix of P's rows (P Pᵀ) or of its columns (Pᵀ P), whichever is smaller, in f64 on the
/// CPU: the one that can be diagonal, i.e. whose off-diagonal energy measures how far P is from
/// having orthogonal rows (h d_h <= D) or orthogonal columns (h d_h > D).
fn smaller_gram(p: &Tensor) -> Tensor {
    let p = p.detach().to_device(Device::Cpu).to_kind(Kind::Double);
    let (rows, cols) = (p.size()[0], p.size()[1]);
    if rows <= cols {
        p.matmul(&p.tr())
    } else {
        p.tr().matmul(&p)
    }
}

fn unit_rows(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2.0, [-1i64], true).clamp_min(1e-12)
}

/// Draws N(0, std²) truncated at ±2 std by inverse-CDF sampling, as torch's `trunc_normal_`.
fn trunc_normal(shape: &[i64], std: f64, device: Device) -> Tensor {
    let u = Tensor::empty(shape, (Kind::Float, device)).uniform_(-TWO_SIGMA_MASS, TWO_SIGMA_MASS);
    (u.erfinv() * (std * std::f64::consts::SQRT_2)).clamp(-2.0 * std, 2.0 * std)
}

/// One DEPICT layer: a projection P shared by query, key, value and (transposed) output, a step
/// and the pre-LN of the tokens it attends to.
#[derive(Debug)]
struct Layer {
    proj: Tensor,
    step: Tensor,
    norm: nn::LayerNorm,
    heads: i64,
    head_dim: i64,
}

impl Layer {
    fn new(vs: &nn::Path, hidden_size: i64, heads: i64, head_dim: i64) -> Self {
        let inner = heads * head_dim;
        Self {
            proj: vs.randn(
                "proj",
                &[inner, hidden_size],
                0.0,
                (hidden_size as f64).powf(-0.5),
            ),
            step: vs.randn_standard("step", &[1]),
            norm: nn::layer_norm(vs / "norm", vec![hidden_size], Default::default()),
            heads,
            head_dim,
        }
    }

    /// x Pᵀ split into heads: B x n x D -> B x h x n x d_h.
    fn split(&self, x: &Tensor) -> Tensor {
        let (b, n) = (x.size()[0], x.size()[1]);
        x.matmul(&self.proj.tr())
            .reshape([b, n, self.heads, self.head_dim])
            .transpose(1, 2)
    }

    /// Concatenates the heads and maps them back to D with P: B x h x n x d_h -> B x n x D.
    fn merge(&self, heads: &Tensor) -> Tensor {
        let (b, n) = (heads.size()[0], heads.size()[2]);
        heads
            .transpose(1, 2)
            .reshape([b, n, self.heads * self.head_dim])
            .matmul(&self.proj)
    }

    /// softmax(query keyᵀ / sqrt(d_h)) key per head: keys are their own values in DEPICT.
    fn attend(&self, query: &Tensor, key: &Tensor) -> Tensor {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        Tensor::scaled_dot_product_attention(
            query,
            key,
            key,
            None::<Tensor>,
            0.0,
            false,
            scale,
            false,
        )
    }

    /// R(Z~ Pᵀ) / R(Z~), each in its own dimension (h d_h and D).
    fn rate_ratio(&self, z_tilde: &Tensor) -> Result<f64> {
        let projected = z_tilde.matmul(&self.proj.tr());
        Ok(coding_rate(&projected, CODING_RATE_EPS)? / coding_rate(z_tilde, CODING_RATE_EPS)?)
    }

    /// MSSA on tokens `x` whose pre-LN `x_tilde` the caller has computed.
    fn mssa(&self, x: &Tensor, x_tilde: &Tensor) -> Tensor {
        let w = self.split(x_tilde);
        x + &self.step * self.merge(&self.attend(&w, &w))
    }

    /// MSCA of classes `q` on image tokens whose pre-LN `z_tilde` the caller has computed.
    fn msca(&self, q: &Tensor, z_tilde: &Tensor) -> Tensor {
        let w = self.attend(&self.split(q), &self.split(z_tilde));
        q + &self.step * self.merge(&w)
    }
}

/// The DEPICT decoder: encoder patch tokens and learnable class embeddings to class logits.
#[derive(Debug)]
pub struct Depict {
    config: DepictConfig,
    hidden_size: i64,
    class_embed: Tensor,
    layers: Vec<Layer>,
    cross_layers: Vec<Layer>,
    norm: nn::LayerNorm,
    class_norm: Option<nn::LayerNorm>,
    mask_norm: nn::LayerNorm,
}

impl Depict {
    /// Builds every variable under `vs` (see the module docs for the names) for tokens of width
    /// `hidden_size`; an invalid config is refused before anything is created.
    pub fn new(vs: &nn::Path, hidden_size: i64, cfg: &DepictConfig) -> Result<Self> {
        let head_dim = cfg.head_dim_for(hidden_size)?;
        let (d, k, heads) = (hidden_size, cfg.num_classes, cfg.num_heads);
        let class_embed = vs.var_copy(
            "class_embed",
            &trunc_normal(&[k, d], CLASS_EMBED_STD, vs.device()),
        );
        let stack = |name: &str| -> Vec<Layer> {
            (0..cfg.num_layers)
                .map(|l| Layer::new(&(vs / name / l), d, heads, head_dim))
                .collect()
        };
        let layers = stack("layers");
        let (cross_layers, class_norm) = match cfg.variant {
            DepictVariant::Sa => (Vec::new(), None),
            DepictVariant::Ca => (
                stack("cross_layers"),
                Some(nn::layer_norm(
                    vs / "class_norm",
                    vec![d],
                    Default::default(),
                )),
            ),
        };
        Ok(Self {
            config: cfg.clone(),
            hidden_size,
            class_embed,
            layers,
            cross_layers,
            norm: nn::layer_norm(vs / "norm", vec![d], Default::default()),
            class_norm,
            mask_norm: nn::layer_norm(vs / "mask_norm", vec![k], Default::default()),
        })
    }

    /// Scalar parameters of a decoder of this shape, in closed form, so the trainer can report
    /// them without building one: per layer (h d_h) D + 1 + 2D, plus K D + 2K, plus 2D per final
    /// LayerNorm (one in SA, two in CA).
    pub fn parameter_count(hidden_size: i64, cfg: &DepictConfig) -> Result<i64> {
        let head_dim = cfg.head_dim_for(hidden_size)?;
        let (d, k) = (hidden_size, cfg.num_classes);
        let per_layer = cfg.num_heads * head_dim * d + 1 + 2 * d;
        let (stacks, final_norms) = match cfg.variant {
            DepictVariant::Sa => (1, 1),
            DepictVariant::Ca => (2, 2),
        };
        Ok(stacks * cfg.num_layers as i64 * per_layer + final_norms * 2 * d + k * d + 2 * k)
    }

    /// The configuration the decoder was built from.
    pub fn config(&self) -> &DepictConfig {
        &self.config
    }

    /// Number of projections P_l: `num_layers` in SA, MSSA then MSCA layers (2 `num_layers`) in
    /// CA. The per-layer diagnostics and [`Depict::projection_gram`] use this order.
    pub fn layer_count(&self) -> usize {
        self.layers.len() + self.cross_layers.len()
    }

    fn projections(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter().chain(&self.cross_layers)
    }

    fn check_tokens(&self, tokens: &Tensor) -> Result<(i64, i64)> {
        let shape = tokens.size();
        let (kind, device) = (self.class_embed.kind(), self.class_embed.device());
        if shape.len() != 3
            || shape[0] < 1
            || shape[1] < 1
            || shape[2] != self.hidden_size
            || tokens.kind() != kind
            || tokens.device() != device
        {
            return Err(DecoderError::DepictTokens {
                hidden_size: self.hidden_size,
                kind,
                device,
                shape,
                got_kind: tokens.kind(),
                got_device: tokens.device(),
            });
        }
        Ok((shape[0], shape[1]))
    }

    /// Runs the attention stacks on checked tokens and returns the final (Z, Q); `observe` sees
    /// every layer with the normalised image tokens Z~ it attends to, in [`Depict::layer_count`]
    /// order, so the forward pass and the diagnostics cannot disagree.
    fn decode(
        &self,
        tokens: &Tensor,
        mut observe: impl FnMut(&Layer, &Tensor),
    ) -> (Tensor, Tensor) {
        let (b, n) = (tokens.size()[0], tokens.size()[1]);
        let k = self.config.num_classes;
        let q = self
            .class_embed
            .unsqueeze(0)
            .expand([b, k, self.hidden_size], false);
        match &self.class_norm {
            None => {
                let mut x = Tensor::cat(&[tokens, &q], 1);
                for layer in &self.layers {
                    let x_tilde = layer.norm.forward(&x);
                    observe(layer, &x_tilde.narrow(1, 0, n));
                    x = layer.mssa(&x, &x_tilde);
                }
                let x = self.norm.forward(&x);
                (x.narrow(1, 0, n), x.narrow(1, n, k))
            }
            Some(class_norm) => {
                let mut z = tokens.shallow_clone();
                for layer in &self.layers {
                    let z_tilde = layer.norm.forward(&z);
                    observe(layer, &z_tilde);
                    z = layer.mssa(&z, &z_tilde);
                }
                let z = self.norm.forward(&z);
                let mut q = q;
                for layer in &self.cross_layers {
                    let z_tilde = layer.norm.forward(&z);
                    observe(layer, &z_tilde);
                    q = layer.msca(&q, &z_tilde);
                }
                (z, class_norm.forward(&q))
            }
        }
    }

    /// Patch tokens B x N x D (readout dropped) on a grid h x w = N to class logits B x K x H x W
    /// (contiguous NCHW) for cross-entropy, resized bilinearly (align_corners = false) from the grid.
    pub fn forward(
        &self,
        tokens: &Tensor,
        grid: (i64, i64),
        image_size: (i64, i64),
    ) -> Result<Tensor> {
        let (b, n) = self.check_tokens(tokens)?;
        let (h, w) = grid;
        if h < 1 || w < 1 {
            return Err(DecoderError::EmptyGrid { h, w });
        }
        if h.checked_mul(w) != Some(n) {
            return Err(DecoderError::DepictGrid {
                h,
                w,
                expected: h.saturating_mul(w),
                got: n,
            });
        }
        let (out_h, out_w) = image_size;
        if out_h < 1 || out_w < 1 {
            return Err(DecoderError::EmptyOutput {
                head: "DEPICT",
                h: out_h,
                w: out_w,
            });
        }
        let (z, q) = self.decode(tokens, |_, _| {});
        let cosines = unit_rows(&z).matmul(&unit_rows(&q).transpose(1, 2));
        let masks = self.mask_norm.forward(&cosines).transpose(1, 2).reshape([
            b,
            self.config.num_classes,
            h,
            w,
        ]);
        Ok(masks
            .upsample_bilinear2d([out_h, out_w], false, None, None)
            .contiguous())
    }

    /// The white-box measures on one batch of patch tokens B x N x D. The coding-rate ratio of a
    /// layer uses the image tokens alone (in SA, the first N rows of the normalised [Z; Q] stack;
    /// in CA's MSCA layers, the fixed Z after each layer's pre-LN), averaged over the batch.
    pub fn diagnostics(&self, tokens: &Tensor) -> Result<DepictDiagnostics> {
        self.check_tokens(tokens)?;
        tch::no_grad(|| {
            let mut ratios = Vec::with_capacity(self.layer_count());
            let _ = self.decode(tokens, |layer, z_tilde| {
                ratios.push(layer.rate_ratio(z_tilde))
            });
            let projection_orthogonality = self
                .projections()
                .map(|layer| orthogonality(&smaller_gram(&layer.proj)))
                .collect::<Result<Vec<_>>>()?;
            Ok(DepictDiagnostics {
                projection_orthogonality,
                class_orthogonality: self.class_orthogonality(),
                coding_rate_ratio: ratios.into_iter().collect::<Result<Vec<_>>>()?,
            })
        })
    }

    /// The Gram matrix whose off-diagonal energy is `projection_orthogonality[layer]` (P Pᵀ, or
    /// Pᵀ P when h d_h > D), as a CPU f32 tensor for heatmaps.
    pub fn projection_gram(&self, layer: usize) -> Result<Tensor> {
        let p = self
            .projections()
            .nth(layer)
            .ok_or(DecoderError::DepictLayer {
                layer,
                layers: self.layer_count(),
            })?;
        Ok(smaller_gram(&p.proj).to_kind(Kind::Float))
    }

    fn class_cosines(&self) -> Tensor {
        let q = unit_rows(
            &self
                .class_embed
                .detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Double),
        );
        q.matmul(&q.tr())
    }

    fn class_orthogonality(&self) -> f64 {
        let k = self.config.num_classes;
        if k < 2 {
            return 0.0;
        }
        let c = self.class_cosines().abs();
        let off = &c - c.diagonal(0, 0, 1).diag_embed(0, 0, 1);
        off.sum(Kind::Double).double_value(&[]) / (k * (k - 1)) as f64
    }

    /// Cosines K x K between the class embeddings (Q Qᵀ of the row-normalised Q), as a CPU f32
    /// tensor for heatmaps.
    pub fn class_gram(&self) -> Tensor {
        self.class_cosines().to_kind(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;

    const OPTS: (Kind, Device) = (Kind::Float, Device::Cpu);

    fn config(variant: DepictVariant) -> DepictConfig {
        DepictConfig::new(variant, 4)
    }

    fn build(variant: DepictVariant, d: i64) -> (VarStore, Depict) {
        let vs = VarStore::new(Device::Cpu);
        let depict = Depict::new(&(vs.root() / "depict"), d, &config(variant)).unwrap();
        (vs, depict)
    }

    fn set(var: &Tensor, value: &Tensor) {
        tch::no_grad(|| {
            var.shallow_clone().copy_(value);
        });
    }

    /// rows x cols with orthonormal rows (rows <= cols), from a QR.
    fn orthonormal_rows(rows: i64, cols: i64) -> Tensor {
        let (q, _) = Tensor::linalg_qr(&Tensor::randn([cols, rows], OPTS), "reduced");
        q.tr().contiguous()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn forward_gives_full_resolution_logits_on_a_non_square_grid() {
        for variant in [DepictVariant::Sa, DepictVariant::Ca] {
            let (_vs, depict) = build(variant, 24);
            let tokens = Tensor::randn([2, 15, 24], OPTS);
            let logits = depict.forward(&tokens, (3, 5), (48, 80)).unwrap();
            assert_eq!(logits.size(), [2, 4, 48, 80], "{variant:?}");
            assert!(logits.is_contiguous());
            assert!(bool::try_from(logits.isfinite().all()).unwrap());
        }
    }

    #[test]
    fn logits_at_grid_resolution_are_the_class_normalised_cosines() {
        for variant in [DepictVariant::Sa, DepictVariant::Ca] {
            let (_vs, depict) = build(variant, 24);
            set(
                depict.mask_norm.ws.as_ref().unwrap(),
                &Tensor::randn([4], OPTS),
            );
            set(
                depict.mask_norm.bs.as_ref().unwrap(),
                &Tensor::randn([4], OPTS),
            );
            let tokens = Tensor::randn([2, 6, 24], OPTS);
            let logits = depict.forward(&tokens, (2, 3), (2, 3)).unwrap();
            // Cosines of every patch with every class, then LN over the K classes (eps 1e-5).
            let (z, q) = depict.decode(&tokens, |_, _| {});
            let (z, q) = (unit_rows(&z), unit_rows(&q));
            let cosines = z.matmul(&q.transpose(1, 2));
            let mean = cosines.mean_dim(2, true, Kind::Float);
            let var = cosines.var_correction(2, 0, true);
            let normed = (cosines - mean) / (var + 1e-5).sqrt();
            let expected = normed * depict.mask_norm.ws.as_ref().unwrap()
                + depict.mask_norm.bs.as_ref().unwrap();
            // Row-major grid: token 3 is row 1, column 0.
            let expected = expected.permute([0, 2, 1]).reshape([2, 4, 2, 3]);
            assert!(max_abs_diff(&logits, &expected) < 1e-4, "{variant:?}");
        }
    }

    #[test]
    fn variables_are_named_as_documented() {
        let (vs, _) = build(DepictVariant::Ca, 24);
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        let mut expected = vec![
            "depict.class_embed".to_string(),
            "depict.class_norm.bias".into(),
            "depict.class_norm.weight".into(),
            "depict.mask_norm.bias".into(),
            "depict.mask_norm.weight".into(),
            "depict.norm.bias".into(),
            "depict.norm.weight".into(),
        ];
        for stack in ["layers", "cross_layers"] {
            for l in 0..3 {
                for leaf in ["proj", "step", "norm.weight", "norm.bias"] {
                    expected.push(format!("depict.{stack}.{l}.{leaf}"));
                }
            }
        }
        expected.sort();
        assert_eq!(names, expected);
        let vars = vs.variables();
        assert_eq!(vars["depict.layers.2.proj"].size(), [24, 24]);
        assert_eq!(vars["depict.cross_layers.0.step"].size(), [1]);
        assert_eq!(vars["depict.class_embed"].size(), [4, 24]);
        assert_eq!(vars["depict.mask_norm.weight"].size(), [4]);
    }

    #[test]
    fn class_embeddings_are_a_truncated_normal_of_std_0_02() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = DepictConfig::new(DepictVariant::Sa, 100);
        let depict = Depict::new(&vs.root(), 384, &cfg).unwrap();
        let q = &depict.class_embed;
        assert!(q.abs().max().double_value(&[]) <= 2.0 * CLASS_EMBED_STD);
        // The std of N(0, 1) truncated at ±2 is 0.8796.
        let std = q.std(true).double_value(&[]) / CLASS_EMBED_STD;
        assert!((std - 0.8796).abs() < 0.02, "{std}");
    }

    #[test]
    fn gradients_reach_every_parameter() {
        for variant in [DepictVariant::Sa, DepictVariant::Ca] {
            tch::manual_seed(0);
            let (vs, depict) = build(variant, 24);
            let tokens = Tensor::randn([2, 15, 24], OPTS);
            let logits = depict.forward(&tokens, (3, 5), (12, 20)).unwrap();
            (&logits * Tensor::randn_like(&logits))
                .sum(Kind::Float)
                .backward();
            for (name, var) in vs.variables() {
                let grad = var.grad();
                assert!(grad.defined(), "{variant:?}: no gradient for {name}");
                assert!(
                    grad.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                    "{variant:?}: zero gradient for {name}"
                );
            }
        }
    }

    #[test]
    fn a_zero_step_layer_is_the_identity() {
        let vs = VarStore::new(Device::Cpu);
        let layer = Layer::new(&vs.root(), 24, 3, 8);
        set(&layer.proj, &orthonormal_rows(24, 24));
        set(&layer.step, &Tensor::zeros([1], OPTS));
        let z = Tensor::randn([2, 7, 24], OPTS);
        let z_tilde = layer.norm.forward(&z);
        assert!(max_abs_diff(&layer.mssa(&z, &z_tilde), &z) <= 1e-6);
        let q = Tensor::randn([2, 4, 24], OPTS);
        assert!(max_abs_diff(&layer.msca(&q, &z_tilde), &q) <= 1e-6);
    }

    #[test]
    fn mssa_and_msca_follow_the_formulas_head_by_head() {
        let vs = VarStore::new(Device::Cpu);
        let (heads, head_dim) = (3, 5);
        let layer = Layer::new(&vs.root(), 12, heads, head_dim);
        let (z, q) = (
            Tensor::randn([2, 7, 12], OPTS),
            Tensor::randn([2, 4, 12], OPTS),
        );
        let z_tilde = layer.norm.forward(&z);
        let (p, s) = (&layer.proj, &layer.step);
        let explicit = |query: &Tensor, key: &Tensor| {
            let heads: Vec<Tensor> = (0..heads)
                .map(|k| {
                    let pk = p.narrow(0, k * head_dim, head_dim);
                    let (qk, wk) = (query.matmul(&pk.tr()), key.matmul(&pk.tr()));
                    let scores = qk.matmul(&wk.transpose(1, 2)) / (head_dim as f64).sqrt();
                    scores.softmax(-1, Kind::Float).matmul(&wk)
                })
                .collect();
            s * Tensor::cat(&heads, 2).matmul(p)
        };
        let mssa = &z + explicit(&z_tilde, &z_tilde);
        assert!(max_abs_diff(&layer.mssa(&z, &z_tilde), &mssa) < 1e-5);
        let msca = &q + explicit(&q, &z_tilde);
        assert!(max_abs_diff(&layer.msca(&q, &z_tilde), &msca) < 1e-5);
    }

    #[test]
    fn orthogonality_is_zero_exactly_for_orthogonal_rows() {
        let p = orthonormal_rows(12, 20);
        assert!(orthogonality(&p.matmul(&p.tr())).unwrap() <= 1e-6);
        let p = Tensor::randn([12, 20], OPTS);
        assert!(orthogonality(&p.matmul(&p.tr())).unwrap() > 1e-3);
        assert_eq!(orthogonality(&Tensor::zeros([3, 3], OPTS)).unwrap(), 0.0);
        assert!(matches!(
            orthogonality(&Tensor::zeros([3, 4], OPTS)),
            Err(DecoderError::MeasureInput { .. })
        ));
    }

    #[test]
    fn diagnostics_see_orthonormal_projections_and_classes() {
        let (_vs, depict) = build(DepictVariant::Ca, 24);
        let tokens = Tensor::randn([2, 15, 24], OPTS);
        let before = depict.diagnostics(&tokens).unwrap();
        assert_eq!(before.projection_orthogonality.len(), 6);
        assert_eq!(before.coding_rate_ratio.len(), 6);
        // Random square P: off-diagonal energy (D - 1) / D against about D on the diagonal.
        assert!(
            before
                .projection_orthogonality
                .iter()
                .all(|&o| (0.3..0.7).contains(&o)),
            "{before:?}"
        );
        assert!(before.class_orthogonality > 1e-3);
        assert!(
            before
                .coding_rate_ratio
                .iter()
                .all(|r| r.is_finite() && *r > 0.0)
        );

        for layer in depict.projections() {
            set(&layer.proj, &orthonormal_rows(24, 24));
        }
        set(&depict.class_embed, &orthonormal_rows(4, 24));
        let after = depict.diagnostics(&tokens).unwrap();
        assert!(after.projection_orthogonality.iter().all(|&o| o <= 1e-6));
        assert!(after.class_orthogonality <= 1e-6);
        // An orthogonal P is a rotation of the D-dim tokens: their coding rate is unchanged.
        assert!(
            after
                .coding_rate_ratio
                .iter()
                .all(|r| (r - 1.0).abs() < 1e-4)
        );
        let gram = depict.class_gram();
        assert_eq!((gram.size(), gram.kind()), (vec![4, 4], Kind::Float));
        assert!(max_abs_diff(&gram, &Tensor::eye(4, OPTS)) < 1e-6);
        assert_eq!(depict.projection_gram(5).unwrap().size(), [24, 24]);
        assert!(matches!(
            depict.projection_gram(6),
            Err(DecoderError::DepictLayer {
                layer: 6,
                layers: 6
            })
        ));
    }

    #[test]
    fn projection_gram_is_the_smaller_gram() {
        let vs = VarStore::new(Device::Cpu);
        let wide = DepictConfig {
            head_dim: Some(20),
            ..DepictConfig::new(DepictVariant::Sa, 3)
        };
        let depict = Depict::new(&vs.root(), 24, &wide).unwrap();
        // h d_h = 60 > D = 24: the columns of P can be orthonormal, its rows cannot.
        assert_eq!(depict.projection_gram(0).unwrap().size(), [24, 24]);
        set(&depict.layers[0].proj, &orthonormal_rows(24, 60).tr());
        assert!(
            depict
                .diagnostics(&Tensor::randn([1, 4, 24], OPTS))
                .unwrap()
                .projection_orthogonality[0]
                <= 1e-6
        );
    }

    #[test]
    fn coding_rate_matches_hand_computed_logdets() {
        let eps = CODING_RATE_EPS; // eps^2 = 1/2
        let z = |rows: &[f64], n: i64, d: i64| Tensor::from_slice(rows).reshape([n, d]);
        // Z = diag(1, 2), N = d = 2: alpha = d / (N eps^2) = 2, I + 2 Z^T Z = diag(3, 9),
        // R = ln(27) / 2.
        let r = coding_rate(&z(&[1.0, 0.0, 0.0, 2.0], 2, 2), eps).unwrap();
        assert!((r - 27f64.ln() / 2.0).abs() < 1e-9);
        // Z = [[1, 1], [0, 1]]: Z^T Z = [[1, 1], [1, 2]], I + 2 Z^T Z = [[3, 2], [2, 5]], det 11.
        let r = coding_rate(&z(&[1.0, 1.0, 0.0, 1.0], 2, 2), eps).unwrap();
        assert!((r - 11f64.ln() / 2.0).abs() < 1e-9);
        // One token (1, 2, 2) in d = 3 (the N < d branch): alpha = 3 / (1 * 1/2) = 6, and
        // det(I_3 + 6 z^T z) = 1 + 6 |z|^2 = 55.
        let r = coding_rate(&z(&[1.0, 2.0, 2.0], 1, 3), eps).unwrap();
        assert!((r - 55f64.ln() / 2.0).abs() < 1e-9);
        // A batch averages its images' rates.
        let batch = Tensor::stack(
            &[
                z(&[1.0, 0.0, 0.0, 2.0], 2, 2),
                z(&[1.0, 1.0, 0.0, 1.0], 2, 2),
            ],
            0,
        );
        let r = coding_rate(&batch, eps).unwrap();
        assert!((r - (27f64.ln() + 11f64.ln()) / 4.0).abs() < 1e-9);
        assert!(matches!(
            coding_rate(&Tensor::zeros([3], OPTS), eps),
            Err(DecoderError::MeasureInput { .. })
        ));
        assert!(coding_rate(&z(&[1.0], 1, 1), 0.0).is_err());
    }

    #[test]
    fn config_rejects_bad_values_naming_the_field() {
        let field = |cfg: DepictConfig, d: i64| match cfg.validate(d) {
            Err(DecoderError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        let ok = config(DepictVariant::Sa);
        assert!(ok.validate(24).is_ok());
        let cfg = |f: fn(&mut DepictConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c
        };
        assert_eq!(field(cfg(|c| c.num_classes = 0), 24), "num_classes");
        assert_eq!(field(cfg(|c| c.num_layers = 0), 24), "num_layers");
        assert_eq!(field(cfg(|c| c.num_heads = 0), 24), "num_heads");
        assert_eq!(field(cfg(|c| c.num_heads = 5), 24), "num_heads");
        assert_eq!(field(cfg(|c| c.head_dim = Some(0)), 24), "head_dim");
        assert_eq!(field(ok.clone(), 0), "hidden_size");
        let explicit = cfg(|c| {
            c.num_heads = 5;
            c.head_dim = Some(7);
        });
        assert_eq!(explicit.head_dim_for(24).unwrap(), 7);
        let vs = VarStore::new(Device::Cpu);
        assert!(Depict::new(&vs.root(), 24, &cfg(|c| c.num_classes = -1)).is_err());
        assert!(vs.variables().is_empty());
    }

    #[test]
    fn config_round_trips_through_json_and_refuses_unknown_keys() {
        let cfg = DepictConfig {
            head_dim: Some(16),
            ..DepictConfig::new(DepictVariant::Ca, 150)
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""variant":"ca""#), "{json}");
        assert_eq!(serde_json::from_str::<DepictConfig>(&json).unwrap(), cfg);
        let defaults: DepictConfig =
            serde_json::from_str(r#"{"variant": "sa", "num_classes": 5}"#).unwrap();
        assert_eq!(defaults, DepictConfig::new(DepictVariant::Sa, 5));
        let typo = r#"{"variant": "sa", "num_classes": 5, "num_layer": 2}"#;
        assert!(serde_json::from_str::<DepictConfig>(typo).is_err());
        let unknown = r#"{"variant": "SA", "num_classes": 5}"#;
        assert!(serde_json::from_str::<DepictConfig>(unknown).is_err());
    }

    #[test]
    fn parameter_count_matches_the_var_store() {
        let wide = DepictConfig {
            num_layers: 2,
            num_heads: 5,
            head_dim: Some(7),
            ..DepictConfig::new(DepictVariant::Ca, 6)
        };
        for cfg in [config(DepictVariant::Sa), config(DepictVariant::Ca), wide] {
            let vs = VarStore::new(Device::Cpu);
            Depict::new(&vs.root(), 24, &cfg).unwrap();
            let actual: i64 = vs.variables().values().map(|v| v.numel() as i64).sum();
            assert_eq!(
                Depict::parameter_count(24, &cfg).unwrap(),
                actual,
                "{cfg:?}"
            );
        }
        // SA at D 24, K 4: 3 (576 + 1 + 48) + 48 + 96 + 8.
        assert_eq!(
            Depict::parameter_count(24, &config(DepictVariant::Sa)).unwrap(),
            2027
        );
    }

    #[test]
    fn forward_rejects_bad_tokens_grids_and_sizes() {
        let (_vs, depict) = build(DepictVariant::Sa, 24);
        let tokens = Tensor::randn([1, 6, 24], OPTS);
        assert!(matches!(
            depict.forward(&Tensor::randn([1, 6, 16], OPTS), (2, 3), (8, 8)),
            Err(DecoderError::DepictTokens {
                hidden_size: 24,
                ..
            })
        ));
        assert!(matches!(
            depict.forward(&Tensor::randn([6, 24], OPTS), (2, 3), (8, 8)),
            Err(DecoderError::DepictTokens { .. })
        ));
        assert!(matches!(
            depict.forward(&tokens.to_kind(Kind::Double), (2, 3), (8, 8)),
            Err(DecoderError::DepictTokens { .. })
        ));
        assert!(matches!(
            depict.forward(&tokens, (2, 2), (8, 8)),
            Err(DecoderError::DepictGrid {
                expected: 4,
                got: 6,
                ..
            })
        ));
        assert!(matches!(
            depict.forward(&tokens, (0, 6), (8, 8)),
            Err(DecoderError::EmptyGrid { .. })
        ));
        assert!(matches!(
            depict.forward(&tokens, (2, 3), (0, 8)),
            Err(DecoderError::EmptyOutput { .. })
        ));
        assert!(
            depict
                .diagnostics(&Tensor::randn([1, 0, 24], OPTS))
                .is_err()
        );
    }
}
