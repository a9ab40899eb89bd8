//! The serde configuration of one attention layer (`docs/attention.md`), so that a run folder can
//! record exactly which attention a model used.

use serde::{Deserialize, Serialize};

use crate::AttentionError;

/// Which score function the layer uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    /// A = softmax(Q K^T / sqrt(d)), as in timm and HF ViT.
    #[default]
    Standard,
    /// A = softmax(Q^ diag(sigma) K^^T / sqrt(d)) with row-normalised Q^, K^ and a learnable sigma.
    Svda,
}

/// Shape and options of one multi-head self-attention layer; `dim` and `num_heads` are required,
/// everything else has the timm default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionConfig {
    /// Token width D.
    pub dim: i64,
    /// Number of heads H; must divide `dim`.
    pub num_heads: i64,
    /// Standard or SVDA scores.
    #[serde(default)]
    pub kind: AttentionKind,
    /// Whether the fused `qkv` projection has a bias (timm's `qkv_bias`, true for ViT/DPT).
    #[serde(default = "default_qkv_bias")]
    pub qkv_bias: bool,
    /// Dropout probability on the attention probabilities, applied only when training.
    #[serde(default)]
    pub attn_drop: f64,
    /// Dropout probability on the output projection, applied only when training.
    #[serde(default)]
    pub proj_drop: f64,
}

fn default_qkv_bias() -> bool {
    true
}

impl AttentionConfig {
    /// A layer of width `dim` with `num_heads` heads, qkv bias and no dropout.
    pub fn new(dim: i64, num_heads: i64, kind: AttentionKind) -> Self {
        Self {
            dim,
            num_heads,
            kind,
            qkv_bias: true,
            attn_drop: 0.0,
            proj_drop: 0.0,
        }
    }

    /// Per-head width d = D / H.
    pub fn head_dim(&self) -> i64 {
        self.dim / self.num_heads
    }

    /// The score scale 1 / sqrt(d), shared by both kinds.
    pub fn scale(&self) -> f64 {
        1.0 / (self.head_dim() as f64).sqrt()
    }

    /// Checks that the numbers describe a real layer, so that a bad config file fails at load time.
    pub fn validate(&self) -> Result<(), AttentionError> {
        if self.dim < 1 || self.num_heads < 1 {
            return Err(AttentionError::InvalidConfig(format!(
                "dim ({}) and num_heads ({}) must be at least 1",
                self.dim, self.num_heads
            )));
        }
        if self.dim % self.num_heads != 0 {
            return Err(AttentionError::InvalidConfig(format!(
                "dim {} is not divisible by num_heads {}",
                self.dim, self.num_heads
            )));
        }
        for (name, p) in [("attn_drop", self.attn_drop), ("proj_drop", self.proj_drop)] {
            if !(0.0..1.0).contains(&p) {
                return Err(AttentionError::InvalidConfig(format!(
                    "{name} must be a probability in [0, 1), got {p}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fills_timm_defaults_from_minimal_json() {
        let c: AttentionConfig = serde_json::from_str(r#"{"dim": 192, "num_heads": 3}"#).unwrap();
        assert_eq!(c, AttentionConfig::new(192, 3, AttentionKind::Standard));
        assert_eq!(c.head_dim(), 64);
        assert!((c.scale() - 0.125).abs() < 1e-12);
    }

    #[test]
    fn config_round_trips_through_json_with_lowercase_kind() {
        let c = AttentionConfig {
            attn_drop: 0.1,
            qkv_bias: false,
            ..AttentionConfig::new(768, 12, AttentionKind::Svda)
        };
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""kind":"svda""#), "{text}");
        let back: AttentionConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let r: Result<AttentionConfig, _> =
            serde_json::from_str(r#"{"dim": 8, "num_heads": 2, "heads": 2}"#);
        assert!(r.is_err());
    }

    #[test]
    fn validate_rejects_heads_that_do_not_divide_dim_and_bad_dropout() {
        let msg = AttentionConfig::new(10, 3, AttentionKind::Svda)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not divisible"), "{msg}");
        let msg = AttentionConfig::new(0, 1, AttentionKind::Standard)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("at least 1"), "{msg}");
        let c = AttentionConfig {
            proj_drop: 1.0,
            ..AttentionConfig::new(8, 2, AttentionKind::Standard)
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("proj_drop"), "{msg}");
        assert!(
            AttentionConfig::new(8, 2, AttentionKind::Svda)
                .validate()
                .is_ok()
        );
    }
}
