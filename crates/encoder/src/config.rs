//! The serde configuration of the ViT encoder and its named presets (`docs/architecture.md`).

use glassbox_attention::{AttentionConfig, AttentionKind, SvdaConfig};
use serde::{Deserialize, Serialize};

use crate::EncoderError;
use crate::bit::{BitConfig, STAGE_STRIDES};

/// What turns the image into tokens (`docs/architecture.md`). Written as a table with a `kind`
/// (`[model.encoder.backbone]`, `kind = "hybrid"` and the ResNet's sizes); absent means the ViT.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Backbone {
    /// Non-overlapping p x p patches, linearly embedded: the plain ViT.
    #[default]
    Vit,
    /// DPT-Hybrid: a BiT ResNet stem whose stride-16 map becomes the tokens (1x1 "patches") and
    /// whose first two stages feed the decoder directly.
    Hybrid(BitConfig),
}

impl Backbone {
    fn is_vit(&self) -> bool {
        *self == Self::Vit
    }
}

/// Shape and options of a ViT backbone; the presets are the sizes DPT is published with, and
/// any field can be changed for ablations (hooks, attention kind, custom widths).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    /// Patch embedding (ViT) or ResNet stem (DPT-Hybrid).
    #[serde(default, skip_serializing_if = "Backbone::is_vit")]
    pub backbone: Backbone,
    /// Token width D.
    pub hidden_size: i64,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Attention heads per block; must divide `hidden_size`.
    pub num_heads: i64,
    /// Hidden width of the MLP (4 D in every preset).
    pub intermediate_size: i64,
    /// Side of the square patches p.
    pub patch_size: i64,
    /// Side of the square image the position embeddings are stored for; other input sizes get
    /// them resized bilinearly, so this fixes only the parameter shape (as in checkpoints).
    pub image_size: i64,
    /// Input channels (3 for RGB).
    #[serde(default = "default_channels")]
    pub num_channels: i64,
    /// LayerNorm eps; 1e-6 in timm, HF checkpoints often say 1e-12 (read it from their config).
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Standard, SVDA or svda-paper attention in every block.
    #[serde(default)]
    pub attention: AttentionKind,
    /// SVDA's options (gain, parameterisation, temperature, learning rate, penalties); unset
    /// fields take the attention kind's defaults (docs/attention.md).
    #[serde(default, skip_serializing_if = "is_default_svda")]
    pub svda: SvdaConfig,
    /// Whether the qkv projection has a bias (true for ViT/DPT checkpoints).
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    /// 1-based block indices whose outputs (before any final norm) the decoder reads.
    pub hooks: Vec<usize>,
    /// Dropout on attention probabilities (training only).
    #[serde(default)]
    pub attention_dropout: f64,
    /// Dropout after the embeddings, the attention projection and the MLP (training only).
    #[serde(default)]
    pub hidden_dropout: f64,
    /// Sparse token updates (`docs/sparse.md`): the share rho in (0, 1] of patch tokens each
    /// block updates, chosen per image by a saliency scorer. 1 is the dense ViT with no scorer.
    #[serde(default = "default_keep_ratio", skip_serializing_if = "is_dense")]
    pub keep_ratio: f64,
}

fn default_keep_ratio() -> f64 {
    1.0
}

fn is_dense(keep_ratio: &f64) -> bool {
    *keep_ratio == 1.0
}

fn is_default_svda(config: &SvdaConfig) -> bool {
    *config == SvdaConfig::default()
}

fn default_channels() -> i64 {
    3
}
fn default_eps() -> f64 {
    1e-6
}
fn default_true() -> bool {
    true
}

impl VitConfig {
    fn preset(
        hidden_size: i64,
        num_layers: usize,
        num_heads: i64,
        image_size: i64,
        hooks: Vec<usize>,
    ) -> Self {
        Self {
            backbone: Backbone::Vit,
            hidden_size,
            num_layers,
            num_heads,
            intermediate_size: 4 * hidden_size,
            patch_size: 16,
            image_size,
            num_channels: 3,
            layer_norm_eps: 1e-6,
            attention: AttentionKind::Standard,
            svda: SvdaConfig::default(),
            qkv_bias: true,
            hooks,
            attention_dropout: 0.0,
            hidden_dropout: 0.0,
            keep_ratio: 1.0,
        }
    }

    /// ViT-Tiny/16 (D 192, 12 blocks, 3 heads), position grid for 256 x 256: dpt-tiny's backbone.
    pub fn vit_tiny() -> Self {
        Self::preset(192, 12, 3, 256, vec![3, 6, 9, 12])
    }

    /// ViT-Small/16 (D 384, 12 blocks, 6 heads).
    pub fn vit_small() -> Self {
        Self::preset(384, 12, 6, 384, vec![3, 6, 9, 12])
    }

    /// ViT-Base/16 (D 768, 12 blocks, 12 heads): DPT-Base's backbone.
    pub fn vit_base() -> Self {
        Self::preset(768, 12, 12, 384, vec![3, 6, 9, 12])
    }

    /// ViT-Large/16 (D 1024, 24 blocks, 16 heads) with DPT-Large's hooks {5, 12, 18, 24}.
    pub fn vit_large() -> Self {
        Self::preset(1024, 24, 16, 384, vec![5, 12, 18, 24])
    }

    /// The same backbone with another attention kind (the one-switch SVDA ablation). Changing
    /// the kind drops SVDA options set for the previous kind, whose defaults differ (a resolved
    /// svda config would otherwise turn svda-paper into svda).
    pub fn with_attention(mut self, kind: AttentionKind) -> Self {
        if kind != self.attention {
            self.svda = SvdaConfig::default();
        }
        self.attention = kind;
        self
    }

    /// Side of the stored position-embedding grid, `image_size / patch_size`.
    pub fn grid_size(&self) -> i64 {
        self.image_size / self.patch_size
    }

    /// The attention layer configuration every block uses.
    pub fn attention_config(&self) -> AttentionConfig {
        AttentionConfig {
            attn_drop: self.attention_dropout,
            proj_drop: self.hidden_dropout,
            qkv_bias: self.qkv_bias,
            svda: self.svda.clone(),
            ..AttentionConfig::new(self.hidden_size, self.num_heads, self.attention)
        }
    }

    /// Checks the numbers before any tensor is made, so a bad config file fails at load time.
    pub fn validate(&self) -> Result<(), EncoderError> {
        let bad = |msg: String| Err(EncoderError::InvalidConfig(msg));
        if self.num_layers == 0
            || self.hidden_size < 1
            || self.intermediate_size < 1
            || self.num_channels < 1
        {
            return bad(format!(
                "num_layers ({}), hidden_size ({}), intermediate_size ({}) and num_channels ({}) must be positive",
                self.num_layers, self.hidden_size, self.intermediate_size, self.num_channels
            ));
        }
        if self.patch_size < 1
            || self.image_size < self.patch_size
            || self.image_size % self.patch_size != 0
        {
            return bad(format!(
                "image_size {} must be a positive multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        if let Backbone::Hybrid(bit) = &self.backbone {
            bit.validate()?;
            if self.patch_size != STAGE_STRIDES[2] {
                return bad(format!(
                    "patch_size {} must be {} with the hybrid backbone: the tokens are the \
                     pixels of its last stage, at stride {}",
                    self.patch_size, STAGE_STRIDES[2], STAGE_STRIDES[2]
                ));
            }
        }
        if self.hooks.is_empty() {
            return bad("hooks must name at least one block".into());
        }
        if let Some(h) = self.hooks.iter().find(|&&h| h == 0 || h > self.num_layers) {
            return bad(format!(
                "hook {h} is outside the blocks 1..={} (hooks are 1-based)",
                self.num_layers
            ));
        }
        if self.hooks.windows(2).any(|w| w[0] >= w[1]) {
            return bad(format!(
                "hooks {:?} must be strictly increasing",
                self.hooks
            ));
        }
        if !(0.0..1.0).contains(&self.hidden_dropout) {
            return bad(format!(
                "hidden_dropout must be in [0, 1), got {}",
                self.hidden_dropout
            ));
        }
        crate::sparse::check_keep_ratio(self.keep_ratio)?;
        if self.keep_ratio < 1.0 && self.hidden_size < 4 {
            return bad(format!(
                "keep_ratio {} needs hidden_size >= 4 for the saliency scorer's D/4 layer, got {}",
                self.keep_ratio, self.hidden_size
            ));
        }
        self.attention_config()
            .validate()
            .map_err(|e| EncoderError::InvalidConfig(e.to_string()))
    }

    /// Whether blocks update only the tokens a saliency scorer keeps (keep_ratio < 1).
    pub fn is_sparse(&self) -> bool {
        self.keep_ratio < 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_published_sizes_and_hooks() {
        let b = VitConfig::vit_base();
        assert_eq!(
            (
                b.hidden_size,
                b.num_layers,
                b.num_heads,
                b.intermediate_size
            ),
            (768, 12, 12, 3072)
        );
        assert_eq!(VitConfig::vit_large().hooks, vec![5, 12, 18, 24]);
        assert_eq!(VitConfig::vit_tiny().grid_size(), 16);
        for c in [
            VitConfig::vit_tiny(),
            VitConfig::vit_small(),
            b,
            VitConfig::vit_large(),
        ] {
            c.validate().unwrap();
        }
    }

    #[test]
    fn validate_names_the_bad_hook() {
        let c = VitConfig {
            hooks: vec![3, 13],
            ..VitConfig::vit_tiny()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("hook 13"), "{msg}");
        let c = VitConfig {
            hooks: vec![6, 3],
            ..VitConfig::vit_tiny()
        };
        assert!(c.validate().unwrap_err().to_string().contains("increasing"));
    }

    #[test]
    fn switching_the_attention_kind_drops_the_previous_kinds_svda_options() {
        let mut c = VitConfig::vit_tiny().with_attention(AttentionKind::Svda);
        c.svda.gain = Some(7.0);
        // Same kind: kept.
        let same = c.clone().with_attention(AttentionKind::Svda);
        assert_eq!(same.svda.gain, Some(7.0));
        // Another kind: svda-paper gets its own defaults, not svda's resolved options.
        let paper = c.with_attention(AttentionKind::SvdaPaper);
        assert_eq!(paper.svda, SvdaConfig::default());
        let options = paper.attention_config().svda_options().unwrap();
        assert_eq!(options.initial_gain(), 1.0);
        assert_eq!(options.orthogonality_weight, 1e-3);
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = VitConfig::vit_small().with_attention(AttentionKind::Svda);
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<VitConfig>(&text).unwrap(), c);
    }
}
