//! A [`crate::Dpt`] out to the Python ecosystem: the HF `config.json` and state dict of the
//! `DPTForDepthEstimation` or `DPTForSemanticSegmentation` that computes the same function
//! (`docs/checkpoints.md`). It is the import's rename table read backwards: encoder names become
//! HF's (qkv split into query, key and value), decoder and head names are HF's already.
//!
//! HF's models also hold tensors no forward pass reads: the ViT's final `layernorm` and the first
//! fusion layer's `residual_layer1`, and batch norms' `num_batches_tracked`. The import skips
//! them; the export writes them with neutral values (norm weight 1, everything else 0), so that
//! `from_pretrained` reports no missing key. Models HF cannot express are refused in one sentence.

use glassbox_attention::AttentionKind;
use glassbox_decoder::{AuxiliaryInput, Readout, SegmentationDecoder};
use glassbox_encoder::Backbone;
use serde_json::{Value, json};
use tch::{Kind, Tensor, nn};

use crate::{DptConfig, DptError, HeadConfig};

/// The transformers release whose format the export writes and the tests load it with.
pub const HF_TRANSFORMERS_VERSION: &str = "4.57.1";

fn refuse(why: &str) -> DptError {
    DptError::Export(format!(
        "{why}, which HF's DPT cannot express; export it with --format safetensors (our names, \
         config embedded) instead"
    ))
}

/// Checks that HF's DPT computes the same function as a model of `config`, and says why not.
pub fn check_hf_exportable(config: &DptConfig) -> Result<(), DptError> {
    let encoder = &config.encoder;
    if encoder.attention != AttentionKind::Standard {
        return Err(refuse(&format!(
            "this model uses {} attention (L2-normalised queries and keys with a learned \
             spectrum)",
            encoder.attention.name()
        )));
    }
    if let Backbone::Hybrid(_) = encoder.backbone {
        return Err(refuse(
            "this model is a DPT-Hybrid; exporting its BiT stem as HF's backbone_config is not \
             built",
        ));
    }
    if encoder.keep_ratio < 1.0 {
        return Err(refuse(&format!(
            "this model updates only a fraction {} of its tokens (sparse token updates)",
            encoder.keep_ratio
        )));
    }
    if let HeadConfig::Segmentation(seg) = &config.head {
        if seg.decoder != SegmentationDecoder::Dpt {
            return Err(refuse(&format!(
                "this model segments with the {} decoder",
                seg.decoder.name()
            )));
        }
        if seg.auxiliary && seg.auxiliary_input != AuxiliaryInput::Last {
            return Err(refuse(
                "its auxiliary head reads the penultimate fusion level (HF's reads the last)",
            ));
        }
    }
    Ok(())
}

/// The HF `config.json` of a model of `config`; `labels` names the classes of a segmentation
/// model (HF keeps them in `id2label`; empty: `LABEL_i`).
pub fn hf_config(config: &DptConfig, labels: &[String]) -> Result<Value, DptError> {
    check_hf_exportable(config)?;
    let e = &config.encoder;
    let d = &config.decoder;
    let readout = match d.readout {
        Readout::Ignore => "ignore",
        Readout::Add => "add",
        Readout::Project => "project",
    };
    let hooks: Vec<i64> = e.hooks.iter().map(|&h| h as i64 - 1).collect();
    // HF builds its transposed convolutions with kernel = factor: whole factors must be ints.
    let factors: Vec<Value> = d
        .reassemble_factors
        .iter()
        .map(|&f| {
            if f.fract() == 0.0 {
                json!(f as i64)
            } else {
                json!(f)
            }
        })
        .collect();
    let mut json = json!({
        "model_type": "dpt",
        "transformers_version": HF_TRANSFORMERS_VERSION,
        "architectures": ["DPTForDepthEstimation"],
        "hidden_size": e.hidden_size,
        "num_hidden_layers": e.num_layers,
        "num_attention_heads": e.num_heads,
        "intermediate_size": e.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": e.hidden_dropout,
        "attention_probs_dropout_prob": e.attention_dropout,
        "initializer_range": 0.02,
        "layer_norm_eps": e.layer_norm_eps,
        "image_size": e.image_size,
        "patch_size": e.patch_size,
        "num_channels": e.num_channels,
        "qkv_bias": e.qkv_bias,
        "is_hybrid": false,
        "backbone_out_indices": hooks,
        "readout_type": readout,
        "reassemble_factors": factors,
        "neck_hidden_sizes": d.reassemble_channels,
        "fusion_hidden_size": d.fusion_channels,
        "head_in_index": -1,
        "use_batch_norm_in_fusion_residual": d.fusion_batch_norm,
        "add_projection": false,
    });
    if let HeadConfig::Segmentation(seg) = &config.head {
        let names: serde_json::Map<String, Value> = (0..seg.num_classes)
            .map(|i| {
                let name = labels
                    .get(i as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("LABEL_{i}"));
                (i.to_string(), Value::String(name))
            })
            .collect();
        let ids: serde_json::Map<String, Value> = names
            .iter()
            .map(|(i, n)| {
                let id: i64 = i.parse().unwrap_or_default();
                (n.as_str().unwrap_or_default().to_string(), json!(id))
            })
            .collect();
        json["architectures"] = json!(["DPTForSemanticSegmentation"]);
        json["id2label"] = Value::Object(names);
        json["label2id"] = Value::Object(ids);
        json["semantic_classifier_dropout"] = json!(seg.dropout);
        json["use_auxiliary_head"] = json!(seg.auxiliary);
    }
    Ok(json)
}

/// The HF state dict of the model in `vs` (built from `config`), names sorted, every tensor a
/// contiguous CPU copy: what HF's `from_pretrained` loads with no missing or unexpected key.
pub fn hf_state_dict(
    vs: &nn::VarStore,
    config: &DptConfig,
) -> Result<Vec<(String, Tensor)>, DptError> {
    check_hf_exportable(config)?;
    let mut out: Vec<(String, Tensor)> = Vec::new();
    let cpu = |t: &Tensor| t.detach().to_device(tch::Device::Cpu).contiguous();
    for (name, t) in vs.variables() {
        let Some(ours) = name.strip_prefix("encoder.") else {
            out.push((name, cpu(&t)));
            continue;
        };
        if let Some(block) = ours
            .strip_prefix("blocks.")
            .and_then(|r| r.split_once(".attn.qkv."))
        {
            let (i, param) = block;
            for (k, part) in ["query", "key", "value"].iter().enumerate() {
                let d = t.size()[0] / 3;
                out.push((
                    format!("dpt.encoder.layer.{i}.attention.attention.{part}.{param}"),
                    cpu(&t.narrow(0, d * k as i64, d)),
                ));
            }
            continue;
        }
        let hf = glassbox_encoder::checkpoint::to_hf_dpt_name(ours, "dpt.").ok_or_else(|| {
            refuse(&format!(
                "its encoder has the tensor {name}, which has no HF name"
            ))
        })?;
        out.push((hf, cpu(&t)));
    }
    let hidden = config.encoder.hidden_size;
    let float = (Kind::Float, tch::Device::Cpu);
    out.push(("dpt.layernorm.weight".into(), Tensor::ones([hidden], float)));
    out.push(("dpt.layernorm.bias".into(), Tensor::zeros([hidden], float)));
    // The first fusion layer's unused residual unit is shaped like the second layer's.
    let unused: Vec<(String, Tensor)> = out
        .iter()
        .filter_map(|(n, t)| {
            let field = n.strip_prefix("neck.fusion_stage.layers.1.residual_layer1.")?;
            let is_scale = field.ends_with("running_var")
                || (field.starts_with("batch_norm") && field.ends_with("weight"));
            let value = if is_scale { 1.0 } else { 0.0 };
            Some((
                format!("neck.fusion_stage.layers.0.residual_layer1.{field}"),
                Tensor::full(t.size(), value, float),
            ))
        })
        .collect();
    out.extend(unused);
    let counters: Vec<(String, Tensor)> = out
        .iter()
        .filter_map(|(n, _)| n.strip_suffix(".running_mean"))
        .map(|m| {
            (
                format!("{m}.num_batches_tracked"),
                Tensor::zeros([], (Kind::Int64, tch::Device::Cpu)),
            )
        })
        .collect();
    out.extend(counters);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
