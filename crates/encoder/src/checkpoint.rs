//! Turning foreign ViT checkpoints into the encoder's (timm) parameter names: the single
//! conversion point, in the manner of timm's `checkpoint_filter_fn`.
//!
//! | HF DPT (`dpt.` prefix)                                   | glassbox / timm              |
//! |----------------------------------------------------------|------------------------------|
//! | `embeddings.cls_token`                                   | `cls_token`                  |
//! | `embeddings.position_embeddings`                         | `pos_embed`                  |
//! | `embeddings.patch_embeddings.projection.{weight,bias}`   | `patch_embed.proj.*`         |
//! | `encoder.layer.{i}.layernorm_before.*`                   | `blocks.{i}.norm1.*`         |
//! | `encoder.layer.{i}.attention.attention.{query,key,value}.*` | `blocks.{i}.attn.qkv.*` (concatenated q, k, v) |
//! | `encoder.layer.{i}.attention.output.dense.*`             | `blocks.{i}.attn.proj.*`     |
//! | `encoder.layer.{i}.layernorm_after.*`                    | `blocks.{i}.norm2.*`         |
//! | `encoder.layer.{i}.intermediate.dense.*`                 | `blocks.{i}.mlp.fc1.*`       |
//! | `encoder.layer.{i}.output.dense.*`                       | `blocks.{i}.mlp.fc2.*`       |
//! | `layernorm.*` (final norm, unused by DPT's hooks)        | dropped, reported as unused  |
//! | `embeddings.projection.*` (hybrid)                       | `patch_embed.proj.*`         |
//! | `embeddings.backbone.bit.embedder.convolution.weight`    | `patch_embed.backbone.stem.conv.weight` |
//! | `embeddings.backbone.bit.embedder.norm.*`                | `patch_embed.backbone.stem.norm.*` |
//! | `embeddings.backbone.bit.encoder.stages.{s}.layers.{b}.*` | `patch_embed.backbone.stages.{s}.blocks.{b}.*` |
//!
//! timm checkpoints already use our names (hybrid ViTs' ResNet under `patch_embed.backbone.`
//! too); their final `norm.*`, `fc_norm.*` and classifier `head.*` are reported as unused.

use std::collections::BTreeMap;

use tch::Tensor;

use crate::EncoderError;

/// Tensors renamed to the encoder's names, and the names of the foreign tensors that were
/// recognised but have no place in the encoder (so a loader can tell them from mistakes).
#[derive(Debug, Default)]
pub struct Converted {
    pub tensors: BTreeMap<String, Tensor>,
    pub unused: Vec<String>,
    /// Foreign names this table does not know; a strict loader reports them.
    pub unknown: Vec<String>,
}

/// Converts the backbone part of an HF `DPTForDepthEstimation` / `DPTModel` state dict.
/// `prefix` is the part before `embeddings.` (`"dpt."` for DPTForDepthEstimation); tensors
/// outside the prefix are left out (the decoder's names need no conversion).
pub fn from_hf_dpt(
    tensors: &BTreeMap<String, Tensor>,
    prefix: &str,
) -> Result<Converted, EncoderError> {
    let mut out = Converted::default();
    let mut qkv: BTreeMap<(String, String), [Option<Tensor>; 3]> = BTreeMap::new();
    for (name, t) in tensors {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let direct = match rest {
            "embeddings.cls_token" => Some("cls_token".to_string()),
            "embeddings.position_embeddings" => Some("pos_embed".to_string()),
            _ => hybrid_name(rest).or_else(|| {
                rest.strip_prefix("embeddings.patch_embeddings.projection.")
                    .map(|p| format!("patch_embed.proj.{p}"))
            }),
        };
        if let Some(n) = direct {
            out.tensors.insert(n, t.shallow_clone());
            continue;
        }
        if rest.starts_with("layernorm.") || rest.starts_with("pooler.") {
            out.unused.push(name.clone());
            continue;
        }
        let Some(layer_rest) = rest.strip_prefix("encoder.layer.") else {
            out.unknown.push(name.clone());
            continue;
        };
        let Some((i, field)) = layer_rest.split_once('.') else {
            out.unknown.push(name.clone());
            continue;
        };
        let renamed = HF_BLOCK_NAMES.iter().find_map(|(from, to)| {
            field
                .strip_prefix(from)
                .map(|p| format!("blocks.{i}.{to}{p}"))
        });
        if let Some(n) = renamed {
            out.tensors.insert(n, t.shallow_clone());
            continue;
        }
        let part = ["query", "key", "value"]
            .iter()
            .position(|p| field.starts_with(&format!("attention.attention.{p}.")));
        match (part, field.rsplit_once('.')) {
            (Some(k), Some((_, param))) => {
                qkv.entry((i.to_string(), param.to_string())).or_default()[k] =
                    Some(t.shallow_clone());
            }
            _ => out.unknown.push(name.clone()),
        }
    }
    for ((i, param), parts) in qkv {
        match parts {
            [Some(q), Some(k), Some(v)] => {
                out.tensors.insert(
                    format!("blocks.{i}.attn.qkv.{param}"),
                    Tensor::cat(&[q, k, v], 0),
                );
            }
            _ => {
                return Err(EncoderError::Checkpoint(format!(
                    "layer {i}: the checkpoint lacks one of attention.attention.{{query,key,value}}.{param}"
                )));
            }
        }
    }
    Ok(out)
}

/// HF's names of a ViT block's parts (after `encoder.layer.{i}.`) and ours (after `blocks.{i}.`),
/// read one way by the import and the other by the export. Order matters on import:
/// `attention.output.dense.` must be tried before `output.dense.`.
pub const HF_BLOCK_NAMES: [(&str, &str); 5] = [
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
];

/// HF's name (with `prefix`, e.g. `"dpt."`) of one of the encoder's plain-ViT tensors: the
/// inverse of [`from_hf_dpt`]. `None` for the fused qkv (HF splits it into query, key and value)
/// and for tensors HF's plain ViT has no place for.
pub fn to_hf_dpt_name(ours: &str, prefix: &str) -> Option<String> {
    let hf = match ours {
        "cls_token" => "embeddings.cls_token".to_string(),
        "pos_embed" => "embeddings.position_embeddings".to_string(),
        _ => {
            if let Some(p) = ours.strip_prefix("patch_embed.proj.") {
                format!("embeddings.patch_embeddings.projection.{p}")
            } else {
                let (i, field) = ours.strip_prefix("blocks.")?.split_once('.')?;
                HF_BLOCK_NAMES.iter().find_map(|(theirs, mine)| {
                    field
                        .strip_prefix(mine)
                        .map(|p| format!("encoder.layer.{i}.{theirs}{p}"))
                })?
            }
        }
    };
    Some(format!("{prefix}{hf}"))
}

/// Our name of an HF DPT-Hybrid embedding tensor (the BiT stem and its projection), if it is one.
fn hybrid_name(rest: &str) -> Option<String> {
    if let Some(p) = rest.strip_prefix("embeddings.projection.") {
        return Some(format!("patch_embed.proj.{p}"));
    }
    let bit = rest.strip_prefix("embeddings.backbone.bit.")?;
    if bit == "embedder.convolution.weight" {
        return Some("patch_embed.backbone.stem.conv.weight".into());
    }
    if let Some(p) = bit.strip_prefix("embedder.norm.") {
        return Some(format!("patch_embed.backbone.stem.norm.{p}"));
    }
    let (stage, rest) = bit.strip_prefix("encoder.stages.")?.split_once('.')?;
    let (block, field) = rest.strip_prefix("layers.")?.split_once('.')?;
    Some(format!(
        "patch_embed.backbone.stages.{stage}.blocks.{block}.{field}"
    ))
}

/// Sorts a timm ViT state dict into the tensors the encoder uses and those it does not.
pub fn from_timm(tensors: &BTreeMap<String, Tensor>) -> Converted {
    let mut out = Converted::default();
    for (name, t) in tensors {
        let ours = name == "cls_token"
            || name == "pos_embed"
            || name.starts_with("patch_embed.proj.")
            || name.starts_with("patch_embed.backbone.")
            || name.starts_with("blocks.");
        if ours {
            out.tensors.insert(name.clone(), t.shallow_clone());
        } else if ["norm.", "fc_norm.", "head.", "head_drop."]
            .iter()
            .any(|p| name.starts_with(p))
        {
            out.unused.push(name.clone());
        } else {
            out.unknown.push(name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn t(values: &[f32]) -> Tensor {
        Tensor::from_slice(values)
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
    }

    #[test]
    fn to_hf_dpt_name_inverts_the_import_for_every_plain_vit_name() {
        for ours in [
            "cls_token",
            "pos_embed",
            "patch_embed.proj.weight",
            "blocks.3.norm1.bias",
            "blocks.3.norm2.weight",
            "blocks.0.attn.proj.weight",
            "blocks.11.mlp.fc1.bias",
            "blocks.11.mlp.fc2.weight",
        ] {
            let hf = to_hf_dpt_name(ours, "dpt.").unwrap();
            let mut m = BTreeMap::new();
            m.insert(hf.clone(), t(&[1.0]));
            let back = from_hf_dpt(&m, "dpt.").unwrap();
            assert_eq!(back.tensors.keys().collect::<Vec<_>>(), vec![ours], "{hf}");
        }
        assert_eq!(to_hf_dpt_name("blocks.0.attn.qkv.weight", "dpt."), None);
        assert_eq!(to_hf_dpt_name("scorer.mlp.0.weight", "dpt."), None);
    }

    #[test]
    fn hf_query_key_value_are_concatenated_in_that_order() {
        let mut m = BTreeMap::new();
        for (p, v) in [("query", 1.0), ("key", 2.0), ("value", 3.0)] {
            m.insert(
                format!("dpt.encoder.layer.0.attention.attention.{p}.bias"),
                t(&[v, v]),
            );
        }
        m.insert("dpt.encoder.layer.0.output.dense.weight".into(), t(&[7.0]));
        m.insert("dpt.layernorm.weight".into(), t(&[1.0]));
        m.insert("neck.convs.0.weight".into(), t(&[1.0]));
        let c = from_hf_dpt(&m, "dpt.").unwrap();
        let qkv = c
            .tensors
            .get("blocks.0.attn.qkv.bias")
            .expect("qkv bias converted");
        assert_eq!(
            Vec::<f32>::try_from(qkv).unwrap(),
            vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
        );
        assert!(c.tensors.contains_key("blocks.0.mlp.fc2.weight"));
        assert_eq!(c.unused, vec!["dpt.layernorm.weight".to_string()]);
        assert!(
            c.unknown.is_empty(),
            "decoder tensors are outside the prefix: {:?}",
            c.unknown
        );
    }

    #[test]
    fn hf_hybrid_stem_names_become_timm_resnet_names() {
        let mut m = BTreeMap::new();
        for n in [
            "dpt.embeddings.projection.bias",
            "dpt.embeddings.backbone.bit.embedder.convolution.weight",
            "dpt.embeddings.backbone.bit.embedder.norm.weight",
            "dpt.embeddings.backbone.bit.encoder.stages.2.layers.0.downsample.conv.weight",
            "dpt.embeddings.backbone.bit.encoder.stages.0.layers.1.norm3.bias",
        ] {
            m.insert(n.to_string(), t(&[0.0]));
        }
        let c = from_hf_dpt(&m, "dpt.").unwrap();
        let names: Vec<&str> = c.tensors.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "patch_embed.backbone.stages.0.blocks.1.norm3.bias",
                "patch_embed.backbone.stages.2.blocks.0.downsample.conv.weight",
                "patch_embed.backbone.stem.conv.weight",
                "patch_embed.backbone.stem.norm.weight",
                "patch_embed.proj.bias",
            ]
        );
        assert!(c.unknown.is_empty(), "{:?}", c.unknown);
    }

    #[test]
    fn a_missing_value_projection_is_an_error_naming_the_layer() {
        let mut m = BTreeMap::new();
        m.insert(
            "dpt.encoder.layer.3.attention.attention.query.weight".to_string(),
            t(&[1.0]),
        );
        m.insert(
            "dpt.encoder.layer.3.attention.attention.key.weight".to_string(),
            t(&[1.0]),
        );
        let msg = from_hf_dpt(&m, "dpt.").unwrap_err().to_string();
        assert!(msg.contains("layer 3"), "{msg}");
    }

    #[test]
    fn timm_classifier_and_final_norm_are_unused() {
        let mut m = BTreeMap::new();
        for n in [
            "cls_token",
            "pos_embed",
            "blocks.0.norm1.weight",
            "norm.weight",
            "head.weight",
            "dist_token",
        ] {
            m.insert(n.to_string(), t(&[0.0]));
        }
        let c = from_timm(&m);
        assert_eq!(c.tensors.len(), 3);
        assert_eq!(c.unused.len(), 2);
        assert_eq!(c.unknown, vec!["dist_token".to_string()]);
    }
}
