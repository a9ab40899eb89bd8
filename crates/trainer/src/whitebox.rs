//! DEPICT's white-box diagnostics over training (`docs/architecture.md`, DEPICT): one line before
//! the first update and one per validation in the run folder's `depict.jsonl` (orthogonality of every layer's projection P,
//! coherence of the class embeddings, the coding-rate ratio R(PZ)/R(Z) per layer), and their
//! figures, drawn by glassbox-spectral's figure engine: the diagnostics over steps and heatmaps of
//! the final Gram matrices.

use std::path::{Path, PathBuf};

use glassbox_decoder::DepictDiagnostics;
use glassbox_dpt::Dpt;
use glassbox_spectral::SpectralError;
use glassbox_spectral::plot::{
    Curve, CurvePanel, CurveStyle, HeatmapPanel, curve_panels, heatmap_panels,
};
use serde::{Deserialize, Serialize};

use crate::tensor::to_array;

/// The log file in a run folder.
pub const DEPICT_FILE: &str = "depict.jsonl";
/// The run folder's figure of the diagnostics over training (`.svg` and `.png`).
pub const DIAGNOSTICS_STEM: &str = "depict_diagnostics";
/// The run folder's heatmaps of the final Gram matrices (`.svg` and `.png`).
pub const GRAMS_STEM: &str = "depict_grams";

/// One `depict.jsonl` line: the diagnostics at an optimiser step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DepictRecord {
    pub step: usize,
    #[serde(flatten)]
    pub diagnostics: DepictDiagnostics,
}

/// Reads a run's `depict.jsonl` (missing file or unreadable lines: nothing for them).
pub fn read_log(path: &Path) -> Vec<DepictRecord> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The diagnostics over training as `<stem>.svg` / `.png`: three panels against the optimiser
/// step, the orthogonality of P per layer, the class-embedding coherence, and the coding-rate
/// ratio per layer.
pub fn diagnostics_figure(
    records: &[DepictRecord],
    stem: &Path,
) -> Result<Vec<PathBuf>, SpectralError> {
    let layers = records
        .iter()
        .map(|r| r.diagnostics.projection_orthogonality.len())
        .max()
        .unwrap_or(0);
    let per_layer = |value: fn(&DepictDiagnostics) -> &Vec<f64>| -> Vec<Curve> {
        (0..layers)
            .map(|l| Curve {
                label: format!("layer {}", l + 1),
                style: CurveStyle::Main(l),
                points: records
                    .iter()
                    .filter_map(|r| Some((r.step as f64, *value(&r.diagnostics).get(l)?)))
                    .collect(),
            })
            .collect()
    };
    let panel = |title: &str, y_desc: &str, curves| CurvePanel {
        title: title.into(),
        x_desc: "optimiser step".into(),
        y_desc: y_desc.into(),
        log_y: false,
        x_range: None,
        curves,
    };
    let panels = [
        panel(
            "orthogonality of P (0 = orthonormal rows)",
            "off-diagonal energy of P Pᵀ",
            per_layer(|d| &d.projection_orthogonality),
        ),
        panel(
            "class embeddings (0 = orthogonal)",
            "mean |cosine| off the diagonal of Q Qᵀ",
            vec![Curve {
                label: "class embeddings".into(),
                style: CurveStyle::Main(0),
                points: records
                    .iter()
                    .map(|r| (r.step as f64, r.diagnostics.class_orthogonality))
                    .collect(),
            }],
        ),
        panel(
            "coding-rate ratio per layer",
            "R(P Z) / R(Z)",
            per_layer(|d| &d.coding_rate_ratio),
        ),
    ];
    curve_panels(&panels, 3, stem)
}

/// Heatmaps of the model's final Gram matrices as `<stem>.svg` / `.png`: each layer's projection
/// Gram and the class embeddings' cosine matrix QQᵀ; `None` for a model without DEPICT.
pub fn gram_figure(model: &Dpt, stem: &Path) -> Result<Option<Vec<PathBuf>>, SpectralError> {
    let Some(depict) = model.depict() else {
        return Ok(None);
    };
    let panel = |title: String, gram: tch::Tensor, axis: &str, value: &str| {
        let values = to_array(&gram);
        let (rows, cols) = (values.shape()[0], values.shape()[1]);
        let values: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        let top = values.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
        HeatmapPanel {
            title,
            x_desc: axis.into(),
            y_desc: axis.into(),
            rows,
            cols,
            values,
            range: (-top, top),
            value_desc: value.into(),
        }
    };
    let mut panels = Vec::new();
    for l in 0..depict.layer_count() {
        let gram = depict.projection_gram(l).map_err(|e| SpectralError::Plot {
            path: stem.to_path_buf(),
            message: e.to_string(),
        })?;
        panels.push(panel(
            format!("layer {}: Gram of P", l + 1),
            gram,
            "row (or column) of P, 0-based",
            "inner product",
        ));
    }
    panels.push(panel(
        "class embeddings: cosines Q Qᵀ".into(),
        depict.class_gram(),
        "class id",
        "cosine",
    ));
    heatmap_panels(&panels, panels.len().min(4), stem).map(Some)
}

/// The last diagnostics as a markdown table, for `report.md`.
pub fn markdown(record: &DepictRecord) -> String {
    let d = &record.diagnostics;
    let mut out = String::from(
        "| layer | orthogonality of P (0 = orthonormal) | coding-rate ratio R(PZ)/R(Z) |\n\
         | ---: | ---: | ---: |\n",
    );
    for (l, (o, r)) in d
        .projection_orthogonality
        .iter()
        .zip(&d.coding_rate_ratio)
        .enumerate()
    {
        out.push_str(&format!("| {} | {o:.4} | {r:.4} |\n", l + 1));
    }
    out.push_str(&format!(
        "\nClass embeddings: mean |cosine| off the diagonal {:.4} (0 = orthogonal), at step {}.\n",
        d.class_orthogonality, record.step
    ));
    out
}
