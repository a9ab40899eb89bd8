//! Sparse token updates (`docs/sparse.md`; the Sparse DETR idea moved into the ViT encoder): a
//! saliency scorer picks, per image, the top ceil(rho * N_p) patch tokens once on the patch
//! embeddings; only they (and the readout token) are queries and pass through attention
//! projection and MLP in every block, while all tokens stay keys and values. The others leave the
//! encoder exactly as they entered it, so the hooks still see a dense token map.
//!
//! The scorer learns from its own target only: the attention mass each patch token receives from
//! the kept queries, summed over heads, queries and blocks; its top-rho tokens are the positives of
//! a binary cross-entropy. Its input is detached, so the task loss never reaches it and its loss
//! never reaches the embeddings.

use std::borrow::Borrow;

use tch::{Kind, Reduction, Tensor, nn, nn::Module};

use crate::{Backbone, EncoderError, VitConfig};

/// Sparse DETR's `MaskPredictor`: LN -> Linear(D, D) -> GELU, the second half of the features
/// mean-pooled over the image's tokens (a global context), then Linear(D, D/2) -> GELU ->
/// Linear(D/2, D/4) -> GELU -> Linear(D/4, 1). Parameter names are the reference's
/// (`layer1.{0,1}`, `layer2.{0,2,4}`).
#[derive(Debug)]
pub struct SaliencyScorer {
    norm: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    fc3: nn::Linear,
    fc4: nn::Linear,
    half: i64,
}

impl SaliencyScorer {
    /// The scorer for tokens of width `dim` (at least 4, so D/4 >= 1), PyTorch's default
    /// `nn.Linear` initialisation as in the reference.
    pub fn new<'a>(path: impl Borrow<nn::Path<'a>>, dim: i64) -> Self {
        let path = path.borrow();
        let (l1, l2) = (path / "layer1", path / "layer2");
        let half = dim / 2;
        Self {
            norm: nn::layer_norm(&l1 / 0, vec![dim], Default::default()),
            fc1: nn::linear(&l1 / 1, dim, dim, Default::default()),
            fc2: nn::linear(&l2 / 0, dim, half, Default::default()),
            fc3: nn::linear(&l2 / 2, half, dim / 4, Default::default()),
            fc4: nn::linear(&l2 / 4, dim / 4, 1, Default::default()),
            half,
        }
    }

    /// One logit per token: B x N_p x D patch tokens -> B x N_p.
    pub fn forward(&self, patches: &Tensor) -> Tensor {
        let z = self.fc1.forward(&self.norm.forward(patches)).gelu("none");
        let [b, n, d]: [i64; 3] = z.size().try_into().expect("B x N x D tokens");
        let local = z.narrow(2, 0, self.half);
        let global = z
            .narrow(2, self.half, d - self.half)
            .mean_dim(1, true, None::<Kind>)
            .expand([b, n, d - self.half], false);
        let z = Tensor::cat(&[local, global], 2);
        let z = self.fc2.forward(&z).gelu("none");
        let z = self.fc3.forward(&z).gelu("none");
        self.fc4.forward(&z).squeeze_dim(2)
    }
}

/// Patch tokens kept per image: ceil(rho * N_p), at least 1 (a hair of slack so that, e.g.,
/// 0.3 * 10 is 3 and not 4 after float rounding).
pub fn kept_count(keep_ratio: f64, num_patches: i64) -> i64 {
    ((keep_ratio * num_patches as f64 - 1e-9).ceil() as i64).clamp(1, num_patches)
}

/// Checks a keep ratio: it must lie in (0, 1].
pub fn check_keep_ratio(keep_ratio: f64) -> Result<(), EncoderError> {
    if keep_ratio > 0.0 && keep_ratio <= 1.0 {
        Ok(())
    } else {
        Err(EncoderError::InvalidConfig(format!(
            "keep_ratio must be in (0, 1] (1 = dense), got {keep_ratio}"
        )))
    }
}

/// What a sparse pass chose and measured, for the scorer's loss, the `corr` log and pictures.
#[derive(Debug)]
pub struct Saliency {
    /// The scorer's logits, B x N_p (patch tokens in raster order).
    pub logits: Tensor,
    /// Indices of the updated tokens, B x (1 + k), ascending; 0 (the readout token) is first.
    pub kept: Tensor,
    /// Attention mass each patch token received from the kept queries, summed over heads,
    /// queries and blocks, B x N_p, no gradient; only computed in training passes.
    pub mass: Option<Tensor>,
}

impl Saliency {
    /// Patch tokens kept per image (k).
    pub fn kept_patches(&self) -> i64 {
        self.kept.size()[1] - 1
    }

    /// The scorer's target: 1 on the k patch tokens with the largest received mass, else 0.
    pub fn target(&self) -> Option<Tensor> {
        let mass = self.mass.as_ref()?;
        let (_, top) = mass.topk(self.kept_patches(), 1, true, false);
        Some(mass.zeros_like().scatter_value(1, &top, 1.0))
    }

    /// Binary cross-entropy with logits of the scorer against [`Self::target`], mean over
    /// tokens and images (weight 1, as Sparse DETR); `None` outside training passes.
    pub fn loss(&self) -> Option<Tensor> {
        let target = self.target()?;
        Some(self.logits.binary_cross_entropy_with_logits(
            &target,
            None::<Tensor>,
            None::<Tensor>,
            Reduction::Mean,
        ))
    }

    /// `corr`: the share of the received attention mass that falls on the kept patch tokens,
    /// mean over images (a scalar tensor); `None` outside training passes.
    pub fn corr(&self) -> Option<Tensor> {
        let mass = self.mass.as_ref()?;
        let kept = self.patch_mask();
        let on_kept = (mass * kept.to_kind(mass.kind())).sum_dim_intlist(1, false, None::<Kind>);
        let total = mass
            .sum_dim_intlist(1, false, None::<Kind>)
            .clamp_min(f64::MIN_POSITIVE);
        Some((on_kept / total).mean(Kind::Float))
    }

    /// B x N_p booleans: true where the patch token was kept.
    pub fn patch_mask(&self) -> Tensor {
        let b = self.logits.size()[0];
        let np = self.logits.size()[1];
        let patches = self.kept.narrow(1, 1, self.kept_patches()) - 1;
        Tensor::zeros([b, np], (Kind::Bool, self.logits.device())).scatter_value(1, &patches, 1)
    }
}

/// How well a selection covers attention, means over images: the numbers that justify learning
/// the scorer from the kept queries' attention rather than from a dense pass (`docs/sparse.md`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SelectionQuality {
    /// Share of the kept queries' attention mass on the kept patch tokens (the training log's
    /// `corr`).
    pub corr: f64,
    /// Share of a dense pass's attention mass (every query, same weights) on the kept patch
    /// tokens: what the selection covers of the attention the dense model would spend.
    pub corr_dense: f64,
    /// |top-k of the kept queries' mass ∩ top-k of the dense pass's mass| / k: how far the
    /// target the scorer learns from agrees with a dense teacher's.
    pub target_overlap: f64,
    /// k / N_p, what a random selection covers of a uniform mass and the chance level of the
    /// overlap.
    pub kept_share: f64,
}

impl SelectionQuality {
    /// Compares a sparse pass (with its mass) against a dense pass's received mass (B x N_p).
    pub fn measure(saliency: &Saliency, dense_mass: &Tensor) -> Self {
        let k = saliency.kept_patches();
        let np = saliency.logits.size()[1];
        let kept = saliency.patch_mask().to_kind(Kind::Float);
        let share = |mass: &Tensor| {
            let on = (mass * &kept).sum_dim_intlist(1, false, None::<Kind>);
            let all = mass
                .sum_dim_intlist(1, false, None::<Kind>)
                .clamp_min(f64::MIN_POSITIVE);
            (on / all).mean(Kind::Float).double_value(&[])
        };
        let overlap = match saliency.target() {
            Some(own) => {
                let (_, top) = dense_mass.topk(k, 1, true, false);
                let dense_target = dense_mass.zeros_like().scatter_value(1, &top, 1.0);
                (own * dense_target).sum(Kind::Float).double_value(&[])
                    / (k * dense_mass.size()[0]) as f64
            }
            None => f64::NAN,
        };
        Self {
            corr: saliency.mass.as_ref().map_or(f64::NAN, share),
            corr_dense: share(dense_mass),
            target_overlap: overlap,
            kept_share: k as f64 / np as f64,
        }
    }
}

/// Multiply-accumulate count of one image's encoder pass, split so that a table can show where
/// the work goes. Products of matrices only (patch convolution, linear layers, attention scores
/// and the weighted sum), the convention of fvcore; norms, GELU and softmax are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EncoderMacs {
    /// The patch-embedding convolution (for the hybrid, the ResNet stem and its projection).
    pub patch_embed: f64,
    /// The saliency scorer (zero when dense).
    pub scorer: f64,
    /// qkv and output projections, over all blocks.
    pub projections: f64,
    /// Q K^T and A V, over all blocks.
    pub attention: f64,
    /// The MLPs, over all blocks.
    pub mlp: f64,
}

impl EncoderMacs {
    /// The counts of `config` on an h x w patch grid at `keep_ratio` (1 = dense), for inference.
    pub fn count(config: &VitConfig, grid: (i64, i64), keep_ratio: f64) -> Self {
        let d = config.hidden_size as f64;
        let np = grid.0 * grid.1;
        let n = (1 + np) as f64;
        let sparse = keep_ratio < 1.0;
        let m = if sparse {
            (1 + kept_count(keep_ratio, np)) as f64
        } else {
            n
        };
        let layers = config.num_layers as f64;
        let p = config.patch_size as f64;
        let np = np as f64;
        Self {
            patch_embed: match &config.backbone {
                Backbone::Vit => np * d * config.num_channels as f64 * p * p,
                Backbone::Hybrid(bit) => {
                    let s = config.patch_size;
                    bit.macs((grid.0 * s, grid.1 * s)) + np * d * bit.hidden_sizes[2] as f64
                }
            },
            scorer: if sparse {
                np * (d * d + d * (d / 2.0).floor() + (d / 2.0).floor() * (d / 4.0).floor())
                    + np * (d / 4.0).floor()
            } else {
                0.0
            },
            projections: layers * (m * d * d + 2.0 * n * d * d + m * d * d),
            attention: layers * 2.0 * m * n * d,
            mlp: layers * 2.0 * m * d * config.intermediate_size as f64,
        }
    }

    /// All multiply-accumulates.
    pub fn total(&self) -> f64 {
        self.patch_embed + self.scorer + self.projections + self.attention + self.mlp
    }

    /// FLOPs as 2 x multiply-accumulates.
    pub fn flops(&self) -> f64 {
        2.0 * self.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_count_is_the_ceiling_without_float_artifacts() {
        assert_eq!(kept_count(0.3, 10), 3);
        assert_eq!(kept_count(0.3, 64), 20);
        assert_eq!(kept_count(0.3, 576), 173);
        assert_eq!(kept_count(0.5, 64), 32);
        assert_eq!(kept_count(0.01, 10), 1);
        assert_eq!(kept_count(1.0, 99), 99);
    }

    #[test]
    fn keep_ratio_outside_the_unit_interval_is_named() {
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            let msg = check_keep_ratio(bad).unwrap_err().to_string();
            assert!(
                msg.contains("keep_ratio") && msg.contains(&bad.to_string()),
                "{msg}"
            );
        }
        check_keep_ratio(1.0).unwrap();
        check_keep_ratio(0.1).unwrap();
    }

    #[test]
    fn dense_count_is_vit_base_published_cost() {
        // ViT-B/16 at 384 x 384: 55.5 GMACs (fvcore's "GFLOPs" in the timm tables).
        let macs = EncoderMacs::count(&VitConfig::vit_base(), (24, 24), 1.0);
        assert!((macs.total() / 1e9 - 55.5).abs() < 0.2, "{}", macs.total());
        // Per block: 12 N D^2 of linear layers and 2 N^2 D of attention, by hand.
        let (n, d) = (577.0, 768.0);
        assert_eq!(macs.projections + macs.mlp, 12.0 * 12.0 * n * d * d);
        assert_eq!(macs.attention, 12.0 * 2.0 * n * n * d);
        assert_eq!(macs.scorer, 0.0);
    }

    #[test]
    fn sparse_count_follows_the_design_ratio() {
        let c = VitConfig::vit_base();
        let dense = EncoderMacs::count(&c, (24, 24), 1.0);
        let sparse = EncoderMacs::count(&c, (24, 24), 0.3);
        // Linear layers: (2 N + 10 M) D^2 against 12 N D^2, M = 1 + 173.
        let (n, m) = (577.0, 174.0);
        let linear = (sparse.projections + sparse.mlp) / (dense.projections + dense.mlp);
        assert!((linear - (2.0 * n + 10.0 * m) / (12.0 * n)).abs() < 1e-12);
        assert!((sparse.attention / dense.attention - m / n).abs() < 1e-12);
        assert!(sparse.scorer > 0.0);
        let ratio = dense.total() / sparse.total();
        assert!(ratio > 2.2 && ratio < 2.5, "{ratio}");
    }
}
