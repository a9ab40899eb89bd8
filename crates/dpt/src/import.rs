//! Foreign checkpoints into a [`crate::Dpt`]: HF `DPTForDepthEstimation` and
//! `DPTForSemanticSegmentation`, and timm ViT safetensors.
//! Both go through the encoder's one rename table (`glassbox_encoder::checkpoint`) and the
//! decoder's strict loader, which reports every missing, unexpected and wrong-shape tensor in one
//! error and changes nothing when anything fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use glassbox_decoder::checkpoint::{LoadReport, is_known_unused_hf_tensor, load_named_tensors};
use tch::{Tensor, nn};

use crate::DptError;

/// Loads an HF `DPTForDepthEstimation` or `DPTForSemanticSegmentation` safetensors checkpoint
/// into `vs`, which must hold a model of the same config (as [`crate::DptConfig::from_hf_config`]
/// translates it). The backbone goes through the encoder's rename table (query/key/value
/// concatenated into qkv); neck and head names (`head.head.*`, `auxiliary_head.head.*`, batch
/// norms with their running statistics) are already ours. Tensors no computation uses (HF's final
/// ViT norm, its first fusion layer's `residual_layer1`, batch norms' `num_batches_tracked`) are
/// skipped and listed in the report; anything else that does not fit fails with the full list.
pub fn load_hf_dpt(vs: &mut nn::VarStore, path: impl AsRef<Path>) -> Result<LoadReport, DptError> {
    let path = path.as_ref();
    let tensors = read_safetensors(path)?;
    let converted = glassbox_encoder::checkpoint::from_hf_dpt(&tensors, "dpt.").map_err(|e| {
        DptError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    })?;
    // Neck and head tensors (outside `dpt.`) load under their own names.
    let rest = tensors.into_iter().filter(|(n, _)| !n.starts_with("dpt."));
    load_converted(vs, path, converted, rest.collect())
}

/// Loads a timm ViT checkpoint (e.g. `vit_base_patch16_384`) into the encoder of the model in
/// `vs`; decoder and head keep their values. The classifier and final norm are skipped. Position
/// embeddings stored for another square grid (a checkpoint trained at 224 loaded into a model
/// configured for 384) are resized to the model's grid as the encoder resizes them at run time.
pub fn load_timm_backbone(
    vs: &mut nn::VarStore,
    path: impl AsRef<Path>,
) -> Result<LoadReport, DptError> {
    let path = path.as_ref();
    let mut converted = glassbox_encoder::checkpoint::from_timm(&read_safetensors(path)?);
    let wanted = vs
        .variables()
        .get("encoder.pos_embed")
        .map(|t| t.size()[1] - 1);
    if let (Some(stored), Some(wanted)) = (converted.tensors.get("pos_embed"), wanted)
        && stored.dim() == 3
        && stored.size()[1] - 1 != wanted
    {
        let (from, to) = (square_side(stored.size()[1] - 1), square_side(wanted));
        let (Some(from), Some(to)) = (from, to) else {
            return Err(DptError::Read {
                path: path.display().to_string(),
                message: format!(
                    "pos_embed {:?} holds {} patch positions, not a square grid; cannot resize it \
                     to the model's {wanted}",
                    stored.size(),
                    stored.size()[1] - 1
                ),
            });
        };
        let resized = glassbox_encoder::vit::resize_position_embeddings(stored, from, (to, to));
        converted.tensors.insert("pos_embed".into(), resized);
    }
    // Decoder and head variables keep their current values: they are fed back to themselves.
    let keep = vs
        .variables()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("encoder."))
        .map(|(n, t)| (n, t.detach().copy()));
    load_converted(vs, path, converted, keep.collect())
}

/// Loads the encoder tensors of a converted checkpoint (under `encoder.`) and `others` by name;
/// the tensors the conversion marked unused are skipped, unknown ones reported as unexpected.
fn load_converted(
    vs: &mut nn::VarStore,
    path: &Path,
    converted: glassbox_encoder::checkpoint::Converted,
    others: Vec<(String, Tensor)>,
) -> Result<LoadReport, DptError> {
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

/// The side of a square grid of `n` cells, if `n` is a square.
fn square_side(n: i64) -> Option<i64> {
    let side = (n as f64).sqrt().round() as i64;
    (side * side == n && n > 0).then_some(side)
}

fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>, DptError> {
    let tensors = Tensor::read_safetensors(path).map_err(|e| DptError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(tensors.into_iter().collect())
}
