//! [`DptConfig`]: encoder, decoder and head of a DPT in one serde struct, with the named presets of
//! `docs/architecture.md` and the translation of an HF `DPTConfig`. Every struct refuses unknown
//! keys, so a misspelled field in a TOML file is an error instead of a silent default.

use glassbox_attention::AttentionKind;
use glassbox_decoder::{AuxiliaryInput, DecoderConfig, Readout, SegmentationHeadConfig};
use glassbox_encoder::{Backbone, BitConfig, VitConfig};
use serde::{Deserialize, Serialize};

use crate::DptError;

/// Which prediction the model makes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "lowercase", deny_unknown_fields)]
pub enum HeadConfig {
    /// Non-negative inverse depth (disparity) at the input resolution. A struct variant, so that
    /// an unknown key beside `task = "depth"` is refused like everywhere else.
    Depth {},
    /// Per-pixel class logits, with an optional auxiliary head.
    Segmentation(SegmentationHeadConfig),
}

/// A whole DPT: backbone, decoder and head, serialised into every run folder. The token width
/// lives in `encoder.hidden_size` only; the decoder reads it from there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DptConfig {
    pub encoder: VitConfig,
    pub decoder: DecoderConfig,
    pub head: HeadConfig,
}

/// The names [`DptConfig::preset`] accepts; each also exists with an `-svda` suffix.
pub const PRESETS: &[&str] = &[
    "dpt-tiny",
    "dpt-base",
    "dpt-large",
    "dpt-hybrid",
    "hybrid-tiny",
    "dpt-test",
];

/// The two token makers, as `--backbone` and the ablation grid name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackboneKind {
    /// The plain ViT's patch embedding.
    Vit,
    /// DPT-Hybrid's ResNet stem.
    Hybrid,
}

impl BackboneKind {
    /// The name in configs, tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vit => "vit",
            Self::Hybrid => "hybrid",
        }
    }

    /// The kind of a configured backbone.
    pub fn of(backbone: &Backbone) -> Self {
        match backbone {
            Backbone::Vit => Self::Vit,
            Backbone::Hybrid(_) => Self::Hybrid,
        }
    }
}

impl std::str::FromStr for BackboneKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vit" => Ok(Self::Vit),
            "hybrid" => Ok(Self::Hybrid),
            _ => Err(format!("unknown backbone {s:?}; known: vit, hybrid")),
        }
    }
}

impl DptConfig {
    /// dpt-tiny: ViT-Tiny, C = [48, 96, 192, 384], F = 64, readout project, 256 x 256 (the CPU
    /// workhorse and the configuration of the PyTorch reference timings).
    pub fn dpt_tiny() -> Self {
        Self {
            encoder: VitConfig::vit_tiny(),
            decoder: DecoderConfig::tiny(),
            head: HeadConfig::Depth {},
        }
    }

    /// dpt-base: ViT-Base/16 at 384 x 384, C = [96, 192, 384, 768], F = 256 (about 112M parameters).
    pub fn dpt_base() -> Self {
        Self {
            encoder: VitConfig::vit_base(),
            decoder: DecoderConfig::base(),
            head: HeadConfig::Depth {},
        }
    }

    /// dpt-large: ViT-Large/16 with hooks {5, 12, 18, 24}, C = [256, 512, 1024, 1024], F = 256
    /// (about 343M parameters).
    pub fn dpt_large() -> Self {
        Self {
            encoder: VitConfig::vit_large(),
            decoder: DecoderConfig::large(),
            head: HeadConfig::Depth {},
        }
    }

    /// dpt-hybrid: BiT R50's first three stages, then ViT-Base/16 on their stride-16 map, hooks
    /// R0, R1, 9 and 12, C = [256, 512, 768, 768], F = 256: the DPT paper's DPT-Hybrid and the
    /// architecture of HF's `dpt-hybrid-midas` (about 123M parameters).
    pub fn dpt_hybrid() -> Self {
        Self::dpt_base().with_backbone(BackboneKind::Hybrid)
    }

    /// hybrid-tiny: dpt-tiny's ViT-Tiny on a small ResNet stem (widths 48, 96, 192; 1, 1 and 2
    /// blocks), for CPU runs and the backbone ablation against dpt-tiny.
    pub fn hybrid_tiny() -> Self {
        Self::dpt_tiny().with_backbone(BackboneKind::Hybrid)
    }

    /// The same model with another token maker. The hybrid gets BiT R50 under a ViT of width 768
    /// or more and the small stem below, and the first two reassemble widths become the ResNet's
    /// (those stages read its maps as they are); the ViT keeps the widths it has.
    pub fn with_backbone(mut self, kind: BackboneKind) -> Self {
        self.encoder.backbone = match kind {
            BackboneKind::Vit => Backbone::Vit,
            BackboneKind::Hybrid => {
                let bit = if self.encoder.hidden_size >= 768 {
                    let mut channels = self.decoder.reassemble_channels;
                    channels[2] = self.encoder.hidden_size;
                    channels[3] = self.encoder.hidden_size;
                    self.decoder.reassemble_channels = channels;
                    BitConfig::resnet50()
                } else {
                    BitConfig::tiny()
                };
                self.decoder.reassemble_channels[0] = bit.hidden_sizes[0];
                self.decoder.reassemble_channels[1] = bit.hidden_sizes[1];
                Backbone::Hybrid(bit)
            }
        };
        self
    }

    /// dpt-test: 4 blocks (one per hook), D 32, 2 heads, a small decoder at 64 x 64; every test
    /// that needs a whole model uses it, so the suite stays fast on a CPU.
    pub fn dpt_test() -> Self {
        let mut m = Self::dpt_tiny();
        m.encoder.hidden_size = 32;
        m.encoder.num_heads = 2;
        m.encoder.intermediate_size = 64;
        m.encoder.num_layers = 4;
        m.encoder.hooks = vec![1, 2, 3, 4];
        m.encoder.image_size = 64;
        m.decoder.reassemble_channels = [8, 16, 16, 32];
        m.decoder.fusion_channels = 16;
        m
    }

    /// A preset by name: one of [`PRESETS`], optionally with `-svda`.
    pub fn preset(name: &str) -> Result<Self, DptError> {
        let (base, kind) = if let Some(base) = name.strip_suffix("-svda-paper") {
            (base, AttentionKind::SvdaPaper)
        } else if let Some(base) = name.strip_suffix("-svda") {
            (base, AttentionKind::Svda)
        } else {
            (name, AttentionKind::Standard)
        };
        let config = match base {
            "dpt-tiny" => Self::dpt_tiny(),
            "dpt-base" => Self::dpt_base(),
            "dpt-large" => Self::dpt_large(),
            "dpt-hybrid" => Self::dpt_hybrid(),
            "hybrid-tiny" => Self::hybrid_tiny(),
            "dpt-test" => Self::dpt_test(),
            _ => {
                return Err(DptError::InvalidConfig(format!(
                    "unknown preset {name:?}; known: {} (each also with -svda or -svda-paper)",
                    PRESETS.join(", ")
                )));
            }
        };
        Ok(config.with_attention(kind))
    }

    /// The same model with standard, SVDA or svda-paper attention in every block. Changing the
    /// kind drops SVDA options set for the previous kind (each kind has its own defaults); set
    /// options after choosing the kind.
    pub fn with_attention(mut self, kind: AttentionKind) -> Self {
        self.encoder = self.encoder.with_attention(kind);
        self
    }

    /// Translates an HF `DPTConfig` (its `config.json`) for a plain-ViT DPT, including its
    /// `layer_norm_eps` (often 1e-12, not timm's 1e-6) and 0-based `backbone_out_indices`.
    ///
    /// The head follows `architectures`: with `DPTForSemanticSegmentation` it is a segmentation
    /// head with `num_labels` classes (or as many as `id2label` names, since HF writes only that),
    /// `semantic_classifier_dropout` and `use_auxiliary_head`, wired as HF 4.57.1 wires it: the
    /// auxiliary head reads the last fusion output ([`AuxiliaryInput::Last`], not the DPT paper's
    /// penultimate one), so that an imported HF model reproduces HF's logits exactly. Any other
    /// `architectures` (or none) gives the depth head.
    pub fn from_hf_config(json: &serde_json::Value) -> Result<Self, DptError> {
        let bad = |field: &str| {
            DptError::InvalidConfig(format!(
                "HF config: `{field}` is missing or has the wrong type"
            ))
        };
        let int = |field: &str| {
            json.get(field)
                .and_then(serde_json::Value::as_i64)
                .ok_or_else(|| bad(field))
        };
        let ints = |field: &str| -> Result<Vec<i64>, DptError> {
            json.get(field)
                .and_then(serde_json::Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .map(serde_json::Value::as_i64)
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| bad(field))
        };
        let backbone = if json.get("is_hybrid").and_then(serde_json::Value::as_bool) == Some(true) {
            Backbone::Hybrid(hf_bit_config(json)?)
        } else {
            Backbone::Vit
        };
        let hooks = ints("backbone_out_indices")?
            .into_iter()
            .map(|i| usize::try_from(i + 1).map_err(|_| bad("backbone_out_indices")))
            .collect::<Result<Vec<_>, _>>()?;
        let encoder = VitConfig {
            backbone,
            hidden_size: int("hidden_size")?,
            num_layers: usize::try_from(int("num_hidden_layers")?)
                .map_err(|_| bad("num_hidden_layers"))?,
            num_heads: int("num_attention_heads")?,
            intermediate_size: int("intermediate_size")?,
            patch_size: int("patch_size")?,
            image_size: int("image_size")?,
            num_channels: json
                .get("num_channels")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(3),
            layer_norm_eps: json
                .get("layer_norm_eps")
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| bad("layer_norm_eps"))?,
            attention: AttentionKind::Standard,
            svda: Default::default(),
            qkv_bias: json
                .get("qkv_bias")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(true),
            hooks,
            attention_dropout: 0.0,
            hidden_dropout: 0.0,
            keep_ratio: 1.0,
        };
        let channels = ints("neck_hidden_sizes")?;
        let factors: Vec<f64> = json
            .get("reassemble_factors")
            .and_then(serde_json::Value::as_array)
            .and_then(|a| a.iter().map(serde_json::Value::as_f64).collect())
            .ok_or_else(|| bad("reassemble_factors"))?;
        let readout = match json.get("readout_type").and_then(serde_json::Value::as_str) {
            Some("ignore") => Readout::Ignore,
            Some("add") => Readout::Add,
            Some("project") => Readout::Project,
            _ => return Err(bad("readout_type")),
        };
        let decoder = DecoderConfig {
            reassemble_channels: channels.try_into().map_err(|_| bad("neck_hidden_sizes"))?,
            reassemble_factors: factors.try_into().map_err(|_| bad("reassemble_factors"))?,
            fusion_channels: int("fusion_hidden_size")?,
            readout,
            fusion_batch_norm: json
                .get("use_batch_norm_in_fusion_residual")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        };
        let segmentation = json
            .get("architectures")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .any(|v| v.as_str() == Some("DPTForSemanticSegmentation"))
            });
        let head = if segmentation {
            let num_classes = match json.get("num_labels") {
                Some(n) => n.as_i64().ok_or_else(|| bad("num_labels"))?,
                None => json
                    .get("id2label")
                    .and_then(serde_json::Value::as_object)
                    .and_then(|m| i64::try_from(m.len()).ok())
                    .ok_or_else(|| bad("num_labels"))?,
            };
            // HF's main head reads `hidden_states[head_in_index]`; ours reads the last level.
            if let Some(index) = json.get("head_in_index")
                && !matches!(index.as_i64(), Some(-1 | 3))
            {
                return Err(DptError::InvalidConfig(format!(
                    "HF config: `head_in_index` {index} is not supported (only -1, the last level)"
                )));
            }
            HeadConfig::Segmentation(SegmentationHeadConfig {
                num_classes,
                dropout: json
                    .get("semantic_classifier_dropout")
                    .and_then(serde_json::Value::as_f64)
                    .ok_or_else(|| bad("semantic_classifier_dropout"))?,
                auxiliary: json
                    .get("use_auxiliary_head")
                    .and_then(serde_json::Value::as_bool)
                    .ok_or_else(|| bad("use_auxiliary_head"))?,
                auxiliary_input: AuxiliaryInput::Last,
                ..SegmentationHeadConfig::new(num_classes)
            })
        } else {
            HeadConfig::Depth {}
        };
        let config = Self {
            encoder,
            decoder,
            head,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the parts and that they fit together.
    pub fn validate(&self) -> Result<(), DptError> {
        self.encoder.validate()?;
        self.decoder.validate()?;
        if let HeadConfig::Segmentation(seg) = &self.head
            && let Some(depict) = seg.depict()
        {
            depict.validate(self.encoder.hidden_size)?;
        }
        if let Backbone::Hybrid(bit) = &self.encoder.backbone {
            let channels = &self.decoder.reassemble_channels;
            if channels[..2] != bit.hidden_sizes[..2] {
                return Err(DptError::InvalidConfig(format!(
                    "decoder.reassemble_channels {channels:?} must start with the hybrid \
                     backbone's stage widths {:?} (backbone.hidden_sizes): the first two stages \
                     read its maps as they are",
                    &bit.hidden_sizes[..2]
                )));
            }
        }
        if self.encoder.hooks.len() != glassbox_decoder::NUM_STAGES {
            return Err(DptError::InvalidConfig(format!(
                "the decoder reassembles {} hooks, the encoder has {:?}",
                glassbox_decoder::NUM_STAGES,
                self.encoder.hooks
            )));
        }
        Ok(())
    }
}

/// The ResNet of an HF hybrid `DPTConfig`: its `backbone_config` (a `BitConfig`), or HF's
/// default R50 when absent. Only the form HF builds for DPT-Hybrid is accepted (bottleneck
/// blocks, SAME padding, dynamic stem padding, width factor 1, stages 1-3 out), and the
/// projection's input (`backbone_featmap_shape[1]`) must be the last stage's width.
fn hf_bit_config(json: &serde_json::Value) -> Result<BitConfig, DptError> {
    let refuse = |what: String| {
        DptError::InvalidConfig(format!(
            "HF config: {what}; glassbox builds the hybrid backbone HF builds for DPT-Hybrid"
        ))
    };
    let Some(bit) = json.get("backbone_config").filter(|b| !b.is_null()) else {
        return Ok(BitConfig::resnet50());
    };
    let get = |field: &str| bit.get(field).filter(|v| !v.is_null());
    let ints = |field: &str, default: &[i64]| -> Result<Vec<i64>, DptError> {
        match get(field) {
            None => Ok(default.to_vec()),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(serde_json::Value::as_i64).collect())
                .ok_or_else(|| {
                    refuse(format!(
                        "`backbone_config.{field}` is not a list of integers"
                    ))
                }),
        }
    };
    let text = |field: &str| get(field).and_then(serde_json::Value::as_str);
    let int = |field: &str, default: i64| -> Result<i64, DptError> {
        get(field).map_or(Ok(default), |v| {
            v.as_i64()
                .ok_or_else(|| refuse(format!("`backbone_config.{field}` is not an integer")))
        })
    };
    if text("layer_type") != Some("bottleneck") {
        return Err(refuse(format!(
            "`backbone_config.layer_type` is {:?}, not \"bottleneck\"",
            text("layer_type").unwrap_or("preactivation")
        )));
    }
    if !text("global_padding").is_some_and(|p| p.eq_ignore_ascii_case("same")) {
        return Err(refuse(format!(
            "`backbone_config.global_padding` is {}, not \"same\"",
            text("global_padding").map_or_else(|| "absent".to_string(), |p| format!("{p:?}"))
        )));
    }
    if get("embedding_dynamic_padding").and_then(serde_json::Value::as_bool) != Some(true) {
        return Err(refuse(
            "`backbone_config.embedding_dynamic_padding` is not true".into(),
        ));
    }
    if int("width_factor", 1)? != 1 {
        return Err(refuse("`backbone_config.width_factor` is not 1".into()));
    }
    if text("hidden_act").is_some_and(|a| a != "relu") {
        return Err(refuse(format!(
            "`backbone_config.hidden_act` is {:?}, not \"relu\"",
            text("hidden_act").unwrap_or_default()
        )));
    }
    let depths = ints("depths", &[3, 4, 6, 3])?;
    let widths = ints("hidden_sizes", &[256, 512, 1024, 2048])?;
    if depths.len() != 3 || widths.len() < 3 {
        return Err(refuse(format!(
            "`backbone_config.depths` {depths:?} must have 3 stages (with as many hidden_sizes, \
             got {widths:?})"
        )));
    }
    let config = BitConfig {
        embedding_size: int("embedding_size", 64)?,
        hidden_sizes: widths[..3].to_vec(),
        depths: depths
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| refuse(format!("`backbone_config.depths` {depths:?} is negative")))?,
        num_groups: int("num_groups", 32)?,
    };
    if let Some(shape) = json
        .get("backbone_featmap_shape")
        .and_then(serde_json::Value::as_array)
        && shape.get(1).and_then(serde_json::Value::as_i64) != Some(config.hidden_sizes[2])
    {
        return Err(refuse(format!(
            "`backbone_featmap_shape` {shape:?} must have the last stage's width {} at index 1",
            config.hidden_sizes[2]
        )));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_validates_and_survives_a_toml_round_trip() {
        for name in PRESETS {
            for suffix in ["", "-svda"] {
                let config = DptConfig::preset(&format!("{name}{suffix}")).unwrap();
                config.validate().unwrap();
                let text = toml::to_string(&config).unwrap();
                assert_eq!(toml::from_str::<DptConfig>(&text).unwrap(), config);
            }
        }
    }

    #[test]
    fn a_misspelled_key_is_an_error_naming_it() {
        let text = toml::to_string(&DptConfig::dpt_test()).unwrap();
        for (from, to) in [
            ("fusion_channels", "fusion_channel"),
            ("num_heads", "num_head"),
            ("task = \"depth\"", "task = \"depth\"\nkind = 1"),
        ] {
            let bad = text.replacen(from, to, 1);
            assert_ne!(bad, text, "{from} occurs in the config");
            let err = toml::from_str::<DptConfig>(&bad).unwrap_err().to_string();
            let key = to.rsplit('\n').next().unwrap().split(' ').next().unwrap();
            assert!(err.contains(key), "{from} -> {to}: {err}");
        }
    }
}
