//! Loading named tensors (safetensors checkpoints) into a tch `VarStore` by name, with one error that
//! lists every missing tensor, every unexpected tensor and every shape mismatch at once.
//!
//! Generic over any `VarStore`, so the trainer reuses it for its own checkpoints and for HF / timm
//! imports: the caller's `rename` maps each checkpoint name to a variable name (`Some`) or marks it
//! as known-unused (`None`), which is the single point where foreign names are converted (as timm's
//! `checkpoint_filter_fn`).

use std::fmt;
use std::path::{Path, PathBuf};

use tch::{TchError, Tensor, nn::VarStore};
use thiserror::Error;

/// Why a checkpoint could not be loaded into a `VarStore`.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The file could not be read or is not a valid safetensors file.
    #[error("cannot read safetensors checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: Box<TchError>,
    },
    /// The checkpoint's names or shapes do not match the variables.
    #[error("checkpoint {source_name} does not fit the model: {mismatch}")]
    Mismatch {
        source_name: String,
        mismatch: Mismatch,
    },
    /// Copying a tensor into its variable failed (for example an unsupported dtype).
    #[error(
        "checkpoint {source_name}: cannot copy tensor {name} into variable {variable}: {source}"
    )]
    Copy {
        source_name: String,
        name: String,
        variable: String,
        source: Box<TchError>,
    },
}

/// Everything that does not fit, collected over the whole checkpoint before failing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Model variables no checkpoint tensor was mapped to.
    pub missing: Vec<String>,
    /// Checkpoint tensors (name in the file -> renamed) that map to no model variable.
    pub unexpected: Vec<(String, String)>,
    /// (variable, expected shape, checkpoint shape).
    pub shape_mismatches: Vec<(String, Vec<i64>, Vec<i64>)>,
    /// Variables that more than one checkpoint tensor was mapped to: (variable, file names).
    pub duplicates: Vec<(String, Vec<String>)>,
}

impl Mismatch {
    fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.shape_mismatches.is_empty()
            && self.duplicates.is_empty()
    }
}

/// Names a mismatch message lists of each kind before it only counts the rest: one readable line
/// even when a whole model does not fit.
const LISTED: usize = 8;

/// `items` joined by ", ", the first [`LISTED`] of them, then how many more there are.
fn listed(items: impl ExactSizeIterator<Item = String>) -> String {
    let total = items.len();
    let mut text = items.take(LISTED).collect::<Vec<_>>().join(", ");
    if total > LISTED {
        text.push_str(&format!(" and {} more", total - LISTED));
    }
    text
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            let names = listed(self.missing.iter().cloned());
            parts.push(format!("missing ({}): {names}", self.missing.len()));
        }
        if !self.unexpected.is_empty() {
            let names = listed(self.unexpected.iter().map(|(file, renamed)| {
                if file == renamed {
                    file.clone()
                } else {
                    format!("{file} (as {renamed})")
                }
            }));
            parts.push(format!("unexpected ({}): {names}", self.unexpected.len()));
        }
        if !self.shape_mismatches.is_empty() {
            let shapes = listed(self.shape_mismatches.iter().map(|(name, expected, got)| {
                format!("{name} (model {expected:?} vs checkpoint {got:?})")
            }));
            parts.push(format!(
                "shape mismatches ({}): {shapes}",
                self.shape_mismatches.len()
            ));
        }
        if !self.duplicates.is_empty() {
            let names = listed(
                self.duplicates
                    .iter()
                    .map(|(name, sources)| format!("{name} <- {}", sources.join(" + "))),
            );
            parts.push(format!("duplicates ({}): {names}", self.duplicates.len()));
        }
        f.write_str(&parts.join("; "))
    }
}

/// What a successful load did, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Variables that received a value, sorted.
    pub loaded: Vec<String>,
    /// Checkpoint tensors `rename` marked as known-unused, sorted.
    pub skipped: Vec<String>,
}

/// Loads a safetensors file into `vs`: every variable must receive exactly one tensor of its shape,
/// every tensor must be mapped to a variable or skipped by `rename` (returning `None`). Values are
/// converted to the variable's dtype and device. Nothing is written unless everything fits.
pub fn load_safetensors(
    vs: &mut VarStore,
    path: impl AsRef<Path>,
    rename: impl Fn(&str) -> Option<String>,
) -> Result<LoadReport, CheckpointError> {
    let path = path.as_ref();
    let tensors = Tensor::read_safetensors(path).map_err(|source| CheckpointError::Read {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    load_named_tensors(vs, tensors, &path.display().to_string(), rename)
}

/// As [`load_safetensors`], for tensors already in memory; `source_name` names them in errors.
pub fn load_named_tensors(
    vs: &mut VarStore,
    tensors: Vec<(String, Tensor)>,
    source_name: &str,
    rename: impl Fn(&str) -> Option<String>,
) -> Result<LoadReport, CheckpointError> {
    let variables = vs.variables();
    let mut mismatch = Mismatch::default();
    let mut skipped = Vec::new();
    let mut assigned: std::collections::BTreeMap<String, Vec<(String, Tensor)>> =
        Default::default();
    for (name, tensor) in tensors {
        let Some(target) = rename(&name) else {
            skipped.push(name);
            continue;
        };
        match variables.get(&target) {
            None => mismatch.unexpected.push((name, target)),
            Some(var) if var.size() != tensor.size() => {
                mismatch
                    .shape_mismatches
                    .push((target, var.size(), tensor.size()))
            }
            Some(_) => assigned.entry(target).or_default().push((name, tensor)),
        }
    }
    let shape_mismatched: Vec<&String> = mismatch
        .shape_mismatches
        .iter()
        .map(|(n, _, _)| n)
        .collect();
    mismatch.missing = variables
        .keys()
        .filter(|k| !assigned.contains_key(*k) && !shape_mismatched.contains(k))
        .cloned()
        .collect();
    for (target, sources) in &assigned {
        if sources.len() > 1 {
            mismatch.duplicates.push((
                target.clone(),
                sources.iter().map(|(n, _)| n.clone()).collect(),
            ));
        }
    }
    mismatch.missing.sort();
    mismatch.unexpected.sort();
    mismatch.shape_mismatches.sort();
    if !mismatch.is_empty() {
        return Err(CheckpointError::Mismatch {
            source_name: source_name.to_string(),
            mismatch,
        });
    }
    tch::no_grad(|| {
        for (target, mut sources) in std::mem::take(&mut assigned) {
            let (name, tensor) = sources.pop().expect("one source per variable");
            let mut var = variables[&target].shallow_clone();
            tensor
                .f_to_kind(var.kind())
                .and_then(|t| t.f_to_device(var.device()))
                .and_then(|t| var.f_copy_(&t))
                .map_err(|source| CheckpointError::Copy {
                    source_name: source_name.to_string(),
                    name,
                    variable: target.clone(),
                    source: Box::new(source),
                })?;
        }
        Ok::<(), CheckpointError>(())
    })?;
    let mut loaded: Vec<String> = variables.into_keys().collect();
    loaded.sort();
    skipped.sort();
    Ok(LoadReport { loaded, skipped })
}

/// True for HF DPT neck/head tensors that exist in checkpoints but that no computation uses: HF's
/// deepest fusion layer's `residual_layer1` and batch norms' `num_batches_tracked` counters.
pub fn is_known_unused_hf_tensor(name: &str) -> bool {
    name.starts_with("neck.fusion_stage.layers.0.residual_layer1.")
        || name.ends_with(".num_batches_tracked")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, nn};

    fn store() -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let _ = nn::linear(vs.root() / "a", 3, 2, Default::default());
        let _ = vs.root().var("b", &[4], nn::Init::Const(0.0));
        vs
    }

    fn t(shape: &[i64], value: f64) -> Tensor {
        Tensor::full(shape, value, (Kind::Double, Device::Cpu))
    }

    #[test]
    fn loads_renamed_tensors_and_converts_dtype() {
        let mut vs = store();
        let tensors = vec![
            ("m.a.weight".to_string(), t(&[2, 3], 1.5)),
            ("m.a.bias".to_string(), t(&[2], -1.0)),
            ("m.b".to_string(), t(&[4], 2.0)),
            ("unused.x".to_string(), t(&[1], 0.0)),
        ];
        let report = load_named_tensors(&mut vs, tensors, "mem", |n| {
            n.strip_prefix("m.").map(str::to_string)
        })
        .unwrap();
        assert_eq!(report.loaded, ["a.bias", "a.weight", "b"]);
        assert_eq!(report.skipped, ["unused.x"]);
        let vars = vs.variables();
        assert_eq!(vars["a.weight"].kind(), Kind::Float);
        assert_eq!(vars["a.weight"].double_value(&[1, 2]), 1.5);
        assert_eq!(vars["b"].double_value(&[3]), 2.0);
    }

    #[test]
    fn reports_missing_unexpected_shape_and_duplicate_problems_together() {
        let mut vs = store();
        let before = vs.variables()["a.weight"].copy();
        let tensors = vec![
            ("a.weight".to_string(), t(&[3, 2], 1.0)),
            ("b".to_string(), t(&[4], 1.0)),
            ("b_again".to_string(), t(&[4], 1.0)),
            ("c".to_string(), t(&[1], 1.0)),
        ];
        let rename = |n: &str| {
            Some(if n == "b_again" {
                "b".to_string()
            } else {
                n.to_string()
            })
        };
        let err = load_named_tensors(&mut vs, tensors, "ckpt.safetensors", rename).unwrap_err();
        let CheckpointError::Mismatch { mismatch, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(mismatch.missing, ["a.bias"]);
        assert_eq!(mismatch.unexpected, [("c".to_string(), "c".to_string())]);
        assert_eq!(
            mismatch.shape_mismatches,
            [("a.weight".to_string(), vec![2, 3], vec![3, 2])]
        );
        assert_eq!(
            mismatch.duplicates,
            [(
                "b".to_string(),
                vec!["b".to_string(), "b_again".to_string()]
            )]
        );
        let msg = err.to_string();
        for needle in [
            "ckpt.safetensors",
            "missing (1): a.bias",
            "unexpected (1): c",
            "a.weight (model [2, 3] vs checkpoint [3, 2])",
        ] {
            assert!(msg.contains(needle), "{needle} not in {msg}");
        }
        assert!(
            vs.variables()["a.weight"].equal(&before),
            "nothing is written on error"
        );
    }

    #[test]
    fn round_trips_a_safetensors_file_and_names_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let src = store();
        tch::no_grad(|| {
            for (_, mut v) in src.variables() {
                let _ = v.fill_(0.25);
            }
        });
        let vars = src.variables();
        let named: Vec<(&str, &Tensor)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
        Tensor::write_safetensors(&named, &path).unwrap();
        let mut dst = store();
        let report = load_safetensors(&mut dst, &path, |n| Some(n.to_string())).unwrap();
        assert_eq!(report.loaded.len(), 3);
        assert_eq!(dst.variables()["a.bias"].double_value(&[0]), 0.25);

        let missing = dir.path().join("nope.safetensors");
        let err = load_safetensors(&mut dst, &missing, |n| Some(n.to_string())).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Read { .. })
                && err.to_string().contains("nope.safetensors")
        );
    }

    #[test]
    fn known_unused_hf_tensors_are_the_dead_fusion_branch_and_bn_counters() {
        assert!(is_known_unused_hf_tensor(
            "neck.fusion_stage.layers.0.residual_layer1.convolution1.weight"
        ));
        assert!(is_known_unused_hf_tensor("head.head.1.num_batches_tracked"));
        assert!(!is_known_unused_hf_tensor(
            "neck.fusion_stage.layers.1.residual_layer1.convolution1.weight"
        ));
        assert!(!is_known_unused_hf_tensor(
            "neck.fusion_stage.layers.0.residual_layer2.convolution1.weight"
        ));
    }
}
