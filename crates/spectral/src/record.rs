//! Model-level bookkeeping: all heads of all layers computed in parallel, one [`SpectralRecord`]
//! per probe step written as one line of `spectral.jsonl` (`docs/spectral.md`, `docs/training.md`), and the
//! depth-wise profile (per-layer mean over heads) that the report plots.

use std::io::Write;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SpectralError};
use crate::head::{HeadIndicators, HeadInput, Indicator, Indicators, compute_head};
use crate::real::Real;

/// The heads of one layer and their mean, so a depth plot needs no recomputation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerIndicators {
    /// Layer number, 1-based in the trainer's logs (as hooks and `--attention-layer`).
    pub layer: usize,
    pub heads: Vec<HeadIndicators>,
    pub mean: Indicators,
}

impl LayerIndicators {
    /// Groups already computed heads of `layer` and takes their mean; a layer needs one head.
    pub fn from_heads(layer: usize, heads: Vec<HeadIndicators>) -> Result<Self> {
        let values: Vec<Indicators> = heads.iter().map(|h| h.indicators).collect();
        let mean = Indicators::mean(&values).ok_or_else(|| SpectralError::Empty {
            what: format!("heads of layer {layer}"),
            shape: vec![0],
        })?;
        Ok(Self { layer, heads, mean })
    }
}

/// Computes every head of one layer in parallel; errors name the layer and head. Lets a caller
/// that cannot hold all layers' maps at once (dpt-base: about 1.3 MB per f32 map) go layer by layer.
pub fn compute_layer<T: Real>(layer: usize, heads: &[HeadInput<'_, T>]) -> Result<LayerIndicators> {
    let computed = heads
        .par_iter()
        .enumerate()
        .map(|(head, input)| in_head(layer, head, compute_head(head, input)))
        .collect::<Result<Vec<_>>>()?;
    LayerIndicators::from_heads(layer, computed)
}

fn in_head<V>(layer: usize, head: usize, result: Result<V>) -> Result<V> {
    result.map_err(|source| SpectralError::InHead {
        layer,
        head,
        source: Box::new(source),
    })
}

/// The indicators of the whole model at one training step: one JSON line of `spectral.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectralRecord {
    pub step: u64,
    pub layers: Vec<LayerIndicators>,
}

impl SpectralRecord {
    /// Computes all heads of all layers (`layers[l][h]`) in one parallel sweep over every
    /// (layer, head) pair, which balances better than layer by layer when heads < cores.
    pub fn compute<T: Real>(step: u64, layers: &[Vec<HeadInput<'_, T>>]) -> Result<Self> {
        let jobs: Vec<(usize, usize, &HeadInput<'_, T>)> = layers
            .iter()
            .enumerate()
            .flat_map(|(l, heads)| {
                heads
                    .iter()
                    .enumerate()
                    .map(move |(h, input)| (l, h, input))
            })
            .collect();
        let mut computed = jobs
            .par_iter()
            .map(|&(l, h, input)| in_head(l, h, compute_head(h, input)))
            .collect::<Result<Vec<_>>>()?
            .into_iter();
        let layers = layers
            .iter()
            .enumerate()
            .map(|(l, heads)| {
                LayerIndicators::from_heads(l, computed.by_ref().take(heads.len()).collect())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { step, layers })
    }

    /// Assembles a record from layers computed one at a time with [`compute_layer`].
    pub fn from_layers(step: u64, layers: Vec<LayerIndicators>) -> Self {
        Self { step, layers }
    }

    /// The record as one JSON line without the trailing newline.
    pub fn to_json_line(&self) -> Result<String> {
        Ok(serde_json::to_string(self)?)
    }

    /// Appends the record and a newline to a JSONL sink (e.g. `runs/<name>/spectral.jsonl`).
    pub fn write_jsonl<W: Write>(&self, mut sink: W) -> Result<()> {
        let mut line = self.to_json_line()?;
        line.push('\n');
        sink.write_all(line.as_bytes())?;
        Ok(())
    }

    /// Reads back one line of `spectral.jsonl`, for reports.
    pub fn from_json_line(line: &str) -> Result<Self> {
        Ok(serde_json::from_str(line.trim_end())?)
    }

    /// The depth-wise profile: per layer, the mean over heads of each indicator.
    pub fn profile(&self) -> DepthProfile {
        DepthProfile {
            step: self.step,
            layers: self.layers.iter().map(|l| l.layer).collect(),
            means: self.layers.iter().map(|l| l.mean).collect(),
        }
    }
}

/// Per-layer head means at one step, ordered by depth: what the report plots against layer index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthProfile {
    pub step: u64,
    pub layers: Vec<usize>,
    pub means: Vec<Indicators>,
}

impl DepthProfile {
    /// One indicator along depth as (layer, value) points, skipping layers where it does not exist.
    pub fn series(&self, indicator: Indicator) -> Vec<(usize, f64)> {
        self.layers
            .iter()
            .zip(&self.means)
            .filter_map(|(&layer, m)| m.get(indicator).map(|v| (layer, v)))
            .collect()
    }
}
