//! The Dense Prediction Transformer (Ranftl et al. 2021; DESIGN.md section 4): ViT encoder ->
//! Reassemble + RefineNet decoder -> depth or segmentation head, built from one serde config.
//!
//! Variable names: the encoder under `encoder.` with timm names, the decoder and heads with HF's
//! (`neck.*`, `head.head.*`, `auxiliary_head.*`). Importing an HF `DPTForDepthEstimation`
//! checkpoint is therefore the encoder's rename table plus nothing ([`Dpt::load_hf_dpt`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use glassbox_attention::{AttentionKind, AttentionMaps};
use glassbox_decoder::checkpoint::{
    CheckpointError, LoadReport, is_known_unused_hf_tensor, load_named_tensors,
};
use glassbox_decoder::{
    Decoder, DecoderConfig, DepthHead, Readout, SegmentationHead, SegmentationHeadConfig,
    SegmentationOutput,
};
use glassbox_encoder::{Encoder, VitConfig};
use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

/// Everything that can go wrong when building, running or loading a DPT.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid DPT config: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Encoder(#[from] glassbox_encoder::EncoderError),
    #[error(transparent)]
    Decoder(#[from] glassbox_decoder::DecoderError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("this model has a {have} head, but {wanted} output was asked for")]
    WrongHead {
        have: &'static str,
        wanted: &'static str,
    },
}

/// Which prediction the model makes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "lowercase")]
pub enum HeadConfig {
    /// Non-negative inverse depth (disparity) at the input resolution.
    Depth,
    /// Per-pixel class logits, with an optional auxiliary head.
    Segmentation(SegmentationHeadConfig),
}

/// A whole DPT: backbone, decoder and head, serialised into every run folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DptConfig {
    pub encoder: VitConfig,
    pub decoder: DecoderConfig,
    pub head: HeadConfig,
}

/// The names [`DptConfig::preset`] accepts; each also exists with an `-svda` suffix.
pub const PRESETS: &[&str] = &["dpt-tiny", "dpt-base", "dpt-large"];

impl DptConfig {
    /// dpt-tiny: ViT-Tiny, C = [48, 96, 192, 384], F = 64, readout project, 256 x 256 (the CPU
    /// workhorse and the configuration of the PyTorch reference timings).
    pub fn dpt_tiny() -> Self {
        Self {
            encoder: VitConfig::vit_tiny(),
            decoder: DecoderConfig::tiny(),
            head: HeadConfig::Depth,
        }
    }

    /// dpt-base: ViT-Base/16 at 384 x 384, C = [96, 192, 384, 768], F = 256 (about 112M parameters).
    pub fn dpt_base() -> Self {
        Self {
            encoder: VitConfig::vit_base(),
            decoder: DecoderConfig::base(),
            head: HeadConfig::Depth,
        }
    }

    /// dpt-large: ViT-Large/16 with hooks {5, 12, 18, 24}, C = [256, 512, 1024, 1024], F = 256
    /// (about 343M parameters).
    pub fn dpt_large() -> Self {
        Self {
            encoder: VitConfig::vit_large(),
            decoder: DecoderConfig::large(),
            head: HeadConfig::Depth,
        }
    }

    /// A preset by name: `dpt-tiny`, `dpt-base`, `dpt-large`, each optionally with `-svda`.
    pub fn preset(name: &str) -> Result<Self, ModelError> {
        let (base, kind) = match name.strip_suffix("-svda") {
            Some(base) => (base, AttentionKind::Svda),
            None => (name, AttentionKind::Standard),
        };
        let config = match base {
            "dpt-tiny" => Self::dpt_tiny(),
            "dpt-base" => Self::dpt_base(),
            "dpt-large" => Self::dpt_large(),
            _ => {
                return Err(ModelError::InvalidConfig(format!(
                    "unknown preset {name:?}; known: {} (each also with -svda)",
                    PRESETS.join(", ")
                )));
            }
        };
        Ok(config.with_attention(kind))
    }

    /// The same model with standard or SVDA attention in every block.
    pub fn with_attention(mut self, kind: AttentionKind) -> Self {
        self.encoder.attention = kind;
        self
    }

    /// Translates an HF `DPTConfig` (its `config.json`) for a plain-ViT DPT, including its
    /// `layer_norm_eps` (often 1e-12, not timm's 1e-6) and 0-based `backbone_out_indices`.
    pub fn from_hf_config(json: &serde_json::Value) -> Result<Self, ModelError> {
        let bad = |field: &str| {
            ModelError::InvalidConfig(format!(
                "HF config: `{field}` is missing or has the wrong type"
            ))
        };
        let int = |field: &str| {
            json.get(field)
                .and_then(serde_json::Value::as_i64)
                .ok_or_else(|| bad(field))
        };
        let ints = |field: &str| -> Result<Vec<i64>, ModelError> {
            json.get(field)
                .and_then(serde_json::Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .map(serde_json::Value::as_i64)
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| bad(field))
        };
        if json.get("is_hybrid").and_then(serde_json::Value::as_bool) == Some(true) {
            return Err(ModelError::InvalidConfig(
                "HF config: hybrid (ResNet + ViT) DPT is not supported".into(),
            ));
        }
        let hooks = ints("backbone_out_indices")?
            .into_iter()
            .map(|i| usize::try_from(i + 1).map_err(|_| bad("backbone_out_indices")))
            .collect::<Result<Vec<_>, _>>()?;
        let encoder = VitConfig {
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
            qkv_bias: json
                .get("qkv_bias")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(true),
            hooks,
            attention_dropout: 0.0,
            hidden_dropout: 0.0,
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
            hidden_size: encoder.hidden_size,
            reassemble_channels: channels.try_into().map_err(|_| bad("neck_hidden_sizes"))?,
            reassemble_factors: factors.try_into().map_err(|_| bad("reassemble_factors"))?,
            fusion_channels: int("fusion_hidden_size")?,
            readout,
            fusion_batch_norm: json
                .get("use_batch_norm_in_fusion_residual")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        };
        let config = Self {
            encoder,
            decoder,
            head: HeadConfig::Depth,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the parts and that they fit together.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.encoder.validate()?;
        self.decoder.validate()?;
        if self.encoder.hooks.len() != glassbox_decoder::NUM_STAGES {
            return Err(ModelError::InvalidConfig(format!(
                "the decoder reassembles {} hooks, the encoder has {:?}",
                glassbox_decoder::NUM_STAGES,
                self.encoder.hooks
            )));
        }
        if self.encoder.hidden_size != self.decoder.hidden_size {
            return Err(ModelError::InvalidConfig(format!(
                "encoder width {} differs from the decoder's hidden_size {}",
                self.encoder.hidden_size, self.decoder.hidden_size
            )));
        }
        Ok(())
    }
}

// One head per model, built once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Head {
    Depth(DepthHead),
    Segmentation(SegmentationHead),
}

/// What a forward pass predicts.
#[derive(Debug)]
pub enum DptOutput {
    /// Non-negative inverse depth, B x H x W.
    Depth(Tensor),
    /// Class logits B x K x H x W (and the auxiliary head's, when configured).
    Segmentation(SegmentationOutput),
}

/// A DPT model; its variables live in the `VarStore` whose root was passed to [`Dpt::new`].
#[derive(Debug)]
pub struct Dpt {
    config: DptConfig,
    encoder: Encoder,
    decoder: Decoder,
    head: Head,
}

impl Dpt {
    /// Creates every parameter under `root` (the VarStore's root, so names match checkpoints).
    pub fn new(root: &nn::Path, config: &DptConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let encoder = Encoder::new(root / "encoder", &config.encoder)?;
        let decoder = Decoder::new(root, &config.decoder)?;
        let f = config.decoder.fusion_channels;
        let head = match &config.head {
            HeadConfig::Depth => Head::Depth(DepthHead::new(root, f)?),
            HeadConfig::Segmentation(seg) => {
                Head::Segmentation(SegmentationHead::new(root, f, seg)?)
            }
        };
        Ok(Self {
            config: config.clone(),
            encoder,
            decoder,
            head,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &DptConfig {
        &self.config
    }

    /// The ViT encoder, e.g. to read SVDA's sigma per block.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    fn decode(
        &self,
        hooks: &[Tensor],
        grid: (i64, i64),
        size: (i64, i64),
        train: bool,
    ) -> Result<DptOutput, ModelError> {
        Ok(match &self.head {
            Head::Depth(head) => {
                let features = self.decoder.forward(hooks, grid, train)?;
                DptOutput::Depth(head.forward(&features, Some(size))?)
            }
            Head::Segmentation(head) => {
                let levels = self.decoder.forward_levels(hooks, grid, train)?;
                DptOutput::Segmentation(head.forward(&levels, Some(size), train)?)
            }
        })
    }

    /// The training and inference pass on normalised images B x 3 x H x W (H, W multiples of 16;
    /// need not be square). Predictions come back at H x W.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<DptOutput, ModelError> {
        let out = self.encoder.forward_t(images, train)?;
        let size = image_size(images);
        self.decode(&out.hooks, out.grid, size, train)
    }

    /// Inverse depth B x H x W; an error for a segmentation model.
    pub fn depth_t(&self, images: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        match self.forward_t(images, train)? {
            DptOutput::Depth(d) => Ok(d),
            DptOutput::Segmentation(_) => Err(ModelError::WrongHead {
                have: "segmentation",
                wanted: "depth",
            }),
        }
    }

    /// The analysis pass (evaluation mode): the prediction plus every encoder block's attention
    /// maps, for the spectral indicators and attention pictures.
    pub fn forward_with_maps(
        &self,
        images: &Tensor,
    ) -> Result<(DptOutput, Vec<AttentionMaps>), ModelError> {
        let out = self.encoder.forward_with_maps(images)?;
        let prediction = self.decode(&out.hooks, out.grid, image_size(images), false)?;
        Ok((prediction, out.maps))
    }

    /// Loads an HF `DPTForDepthEstimation` safetensors checkpoint into `vs` (which must hold this
    /// model). The backbone goes through the encoder's rename table (query/key/value concatenated
    /// into qkv); neck and head names are already ours. Tensors no computation uses (HF's final
    /// ViT norm, its first fusion layer's `residual_layer1`) are skipped and listed in the report;
    /// anything else that does not fit fails with the full list.
    pub fn load_hf_dpt(
        vs: &mut nn::VarStore,
        path: impl AsRef<Path>,
    ) -> Result<LoadReport, ModelError> {
        let path = path.as_ref();
        let tensors = read_safetensors(path)?;
        let converted = glassbox_encoder::checkpoint::from_hf_dpt(&tensors, "dpt.")?;
        // Neck and head tensors (outside `dpt.`) load under their own names.
        let rest = tensors.into_iter().filter(|(n, _)| !n.starts_with("dpt."));
        load_converted(vs, path, converted, rest.collect())
    }

    /// Loads a timm ViT checkpoint (e.g. `vit_base_patch16_384`) into the encoder of the model in
    /// `vs`; decoder and head keep their values. The classifier and final norm are skipped.
    pub fn load_timm_backbone(
        vs: &mut nn::VarStore,
        path: impl AsRef<Path>,
    ) -> Result<LoadReport, ModelError> {
        let path = path.as_ref();
        let converted = glassbox_encoder::checkpoint::from_timm(&read_safetensors(path)?);
        // Decoder and head variables keep their current values: they are fed back to themselves.
        let keep = vs
            .variables()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("encoder."))
            .map(|(n, t)| (n, t.detach().copy()));
        load_converted(vs, path, converted, keep.collect())
    }
}

/// Loads the encoder tensors of a converted checkpoint (under `encoder.`) and `others` by name;
/// the tensors the conversion marked unused are skipped, unknown ones reported as unexpected.
fn load_converted(
    vs: &mut nn::VarStore,
    path: &Path,
    converted: glassbox_encoder::checkpoint::Converted,
    others: Vec<(String, Tensor)>,
) -> Result<LoadReport, ModelError> {
    let skip: BTreeSet<String> = converted.unused.iter().cloned().collect();
    let placeholder = || Tensor::zeros([0], (tch::Kind::Float, tch::Device::Cpu));
    let mut named: Vec<(String, Tensor)> = converted
        .tensors
        .into_iter()
        .map(|(n, t)| (format!("encoder.{n}"), t))
        .collect();
    named.extend(others);
    // Skipped and unknown names go through the loader so that its report lists them.
    named.extend(
        converted
            .unused
            .iter()
            .chain(&converted.unknown)
            .map(|n| (n.clone(), placeholder())),
    );
    let report = load_named_tensors(vs, named, &path.display().to_string(), |n| {
        (!skip.contains(n) && !is_known_unused_hf_tensor(n)).then(|| n.to_string())
    })?;
    Ok(report)
}

fn image_size(images: &Tensor) -> (i64, i64) {
    let s = images.size();
    (s[2], s[3])
}

fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>, ModelError> {
    let tensors = Tensor::read_safetensors(path).map_err(|e| ModelError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(tensors.into_iter().collect())
}

/// Number of scalar parameters in a store, as papers count them.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.variables().values().map(|t| t.numel() as i64).sum()
}
