//! What a finished run contributes (its [`RunResult`]) and the statistics of the tables: mean and
//! sample standard deviation over seeds per variant, and pooled per factor level.

use std::path::Path;

use glassbox_spectral::{Indicator, Indicators, LayerIndicators, SigmaSummary, SpectralRecord};
use serde::{Deserialize, Serialize};

use super::grid::{Variant, attention_name, join_hooks, readout_name};

/// What one finished run contributes to the tables (`result.json` in its folder). A depth run
/// fills the depth scores, a segmentation run the segmentation scores; the optional fields read
/// as absent from `result.json` files written before they existed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub run: String,
    pub variant: Variant,
    pub seed: u64,
    pub steps: usize,
    /// Final validation of a depth run, median-scaled depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs_rel: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Final validation of a segmentation run: mean IoU over the classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miou: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_accuracy: Option<f64>,
    /// mIoU of a constant prediction of the most frequent class, the floor a model must beat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miou_baseline: Option<f64>,
    /// Wall time of the run over all its invocations (training, the final validation and the
    /// spectral probes).
    pub train_seconds: f64,
    pub parameters: i64,
    /// Trainable parameters outside the encoder (decoder and head, or DEPICT): what a decoder
    /// comparison costs in weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_parameters: Option<i64>,
    /// Wall time per optimiser update of the invocation that finished the run (validation,
    /// probes and checkpoints excluded); absent when that invocation made no update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_per_step: Option<f64>,
    /// Counted encoder GFLOPs of one image at the run's size and keep ratio, inference
    /// (`glassbox_encoder::EncoderMacs`; absent in results written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_gflops: Option<f64>,
    /// Sparse runs: the last logged `corr`, the share of the kept queries' attention mass on the
    /// kept patch tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corr: Option<f64>,
    /// Sparse runs, final validation: the share of a dense pass's attention mass on the kept
    /// tokens, and the overlap of the scorer's target with a dense pass's (`SelectionQuality`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corr_dense: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_overlap: Option<f64>,
    /// Final spectral indicators, mean over layers and heads (absent if the run had no probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicators: Option<Indicators>,
    /// Final selectivity per layer (mean over heads), first layer first: the depth profile the
    /// selectivity-by-quarter table pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectivity_by_layer: Vec<f64>,
    /// SVDA's final learned spectrum per layer (empty for standard attention).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sigma: Vec<SigmaSummary>,
}

impl RunResult {
    /// Mean selectivity of each quarter of the depth (layers 1-3, 4-6, ... of 12); `None` for
    /// fewer than 4 layers.
    pub fn selectivity_quarters(&self) -> Option<[f64; 4]> {
        let n = self.selectivity_by_layer.len();
        if n < 4 {
            return None;
        }
        let mut out = [0.0; 4];
        for (q, slot) in out.iter_mut().enumerate() {
            let (a, b) = (q * n / 4, (q + 1) * n / 4);
            *slot = self.selectivity_by_layer[a..b].iter().sum::<f64>() / (b - a) as f64;
        }
        Some(out)
    }
}

/// Mean and sample standard deviation (n - 1; 0 for a single value).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

impl Stat {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Some(Stat { mean, std })
    }
}

/// The measures of a group of runs (one variant over seeds, or one factor level). An optional
/// measure is over the runs that have it, `None` when none has (depth scores of segmentation
/// runs and the reverse).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub runs: usize,
    pub abs_rel: Option<Stat>,
    pub delta1: Option<Stat>,
    pub rmse: Option<Stat>,
    pub miou: Option<Stat>,
    pub pixel_accuracy: Option<Stat>,
    pub miou_baseline: Option<Stat>,
    pub train_seconds: Stat,
    pub seconds_per_step: Option<Stat>,
    pub encoder_gflops: Option<Stat>,
    pub corr: Option<Stat>,
    pub corr_dense: Option<Stat>,
    pub target_overlap: Option<Stat>,
    pub parameters: Stat,
    pub decoder_parameters: Option<Stat>,
    /// Per indicator, over the runs that have it.
    pub indicators: Vec<(Indicator, Stat)>,
}

impl GroupStats {
    /// Statistics of a non-empty set of results.
    pub fn of(results: &[&RunResult]) -> Option<GroupStats> {
        let stat =
            |f: fn(&RunResult) -> f64| Stat::of(&results.iter().map(|r| f(r)).collect::<Vec<_>>());
        let some = |f: fn(&RunResult) -> Option<f64>| {
            Stat::of(&results.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
        };
        let indicators = Indicator::ALL
            .into_iter()
            .filter_map(|i| {
                let values: Vec<f64> = results
                    .iter()
                    .filter_map(|r| r.indicators.and_then(|x| x.get(i)))
                    .collect();
                Some((i, Stat::of(&values)?))
            })
            .collect();
        Some(GroupStats {
            runs: results.len(),
            abs_rel: some(|r| r.abs_rel),
            delta1: some(|r| r.delta1),
            rmse: some(|r| r.rmse),
            miou: some(|r| r.miou),
            pixel_accuracy: some(|r| r.pixel_accuracy),
            miou_baseline: some(|r| r.miou_baseline),
            train_seconds: stat(|r| r.train_seconds)?,
            seconds_per_step: some(|r| r.seconds_per_step),
            encoder_gflops: some(|r| r.encoder_gflops),
            corr: some(|r| r.corr),
            corr_dense: some(|r| r.corr_dense),
            target_overlap: some(|r| r.target_overlap),
            parameters: stat(|r| r.parameters as f64)?,
            decoder_parameters: some(|r| r.decoder_parameters.map(|p| p as f64)),
            indicators,
        })
    }

    /// The statistic of one indicator, if any run of the group has it.
    pub fn indicator(&self, indicator: Indicator) -> Option<&Stat> {
        self.indicators
            .iter()
            .find(|(i, _)| *i == indicator)
            .map(|(_, s)| s)
    }
}

/// The factors a grid varies, for the per-factor tables and bar charts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Factor {
    /// The token maker, ViT or DPT-Hybrid's ResNet stem (one level, `–`, unless the grid varies it).
    Backbone,
    /// The keep ratio of sparse token updates (one level, `–`, unless the grid varies it).
    KeepRatio,
    /// The segmentation decoder (one level, `–`, in depth grids).
    Decoder,
    Attention,
    Readout,
    Hooks,
}

impl Factor {
    /// In the order of the per-factor tables and figures.
    pub const ALL: [Factor; 6] = [
        Factor::Backbone,
        Factor::KeepRatio,
        Factor::Decoder,
        Factor::Attention,
        Factor::Readout,
        Factor::Hooks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Factor::Backbone => "backbone",
            Factor::KeepRatio => "keep_ratio",
            Factor::Decoder => "decoder",
            Factor::Attention => "attention",
            Factor::Readout => "readout",
            Factor::Hooks => "hooks",
        }
    }

    /// The level of this factor in a variant, as printed.
    pub fn level(self, variant: &Variant) -> String {
        match self {
            Factor::Backbone => variant.backbone.map_or("–", |b| b.name()).into(),
            Factor::KeepRatio => variant
                .keep_ratio
                .map_or_else(|| "–".into(), |r| r.to_string()),
            Factor::Decoder => variant.decoder.map_or("–", |d| d.name()).into(),
            Factor::Attention => attention_name(variant.attention).into(),
            Factor::Readout => readout_name(variant.readout).into(),
            Factor::Hooks => join_hooks(&variant.hooks, ","),
        }
    }
}

/// Mean +- std over seeds of every variant, in grid order.
pub fn aggregate_variants(results: &[RunResult]) -> Vec<(Variant, GroupStats)> {
    let mut order: Vec<Variant> = Vec::new();
    for r in results {
        if !order.contains(&r.variant) {
            order.push(r.variant.clone());
        }
    }
    order
        .into_iter()
        .filter_map(|v| {
            let group: Vec<&RunResult> = results.iter().filter(|r| r.variant == v).collect();
            Some((v, GroupStats::of(&group)?))
        })
        .collect()
}

/// Mean +- std over all runs at each level of `factor` (the other factors and seeds pooled), in
/// grid order.
pub fn aggregate_factor(results: &[RunResult], factor: Factor) -> Vec<(String, GroupStats)> {
    let mut order: Vec<String> = Vec::new();
    for r in results {
        let level = factor.level(&r.variant);
        if !order.contains(&level) {
            order.push(level);
        }
    }
    order
        .into_iter()
        .filter_map(|level| {
            let group: Vec<&RunResult> = results
                .iter()
                .filter(|r| factor.level(&r.variant) == level)
                .collect();
            Some((level, GroupStats::of(&group)?))
        })
        .collect()
}

/// The last sigma spectra of a run's `sigma.jsonl`, summarised per layer (empty when there are
/// none: standard attention).
pub(super) fn final_sigma(run_dir: &Path) -> Vec<SigmaSummary> {
    glassbox_spectral::read_sigma_log(&run_dir.join(glassbox_spectral::SIGMA_FILE))
        .ok()
        .and_then(|log| log.into_iter().max_by_key(|s| s.step))
        .and_then(|s| s.summary().ok())
        .unwrap_or_default()
}

/// The last record of a run's `spectral.jsonl`, if it has one.
pub(super) fn final_record(run_dir: &Path) -> Option<SpectralRecord> {
    glassbox_spectral::read_spectral_log(&run_dir.join(glassbox_spectral::SPECTRAL_FILE))
        .ok()?
        .into_iter()
        .max_by_key(|r| r.step)
}

/// Mean over layers of the per-layer head means (= mean over all heads when layers have equal
/// head counts).
pub(super) fn mean_indicators(record: &SpectralRecord) -> Indicators {
    let means: Vec<Indicators> = record.layers.iter().map(|l| l.mean).collect();
    Indicators::mean(&means).unwrap_or_default()
}

/// Per layer, the mean over records (seeds) of the head means: one depth profile per variant.
pub(super) fn mean_record(records: &[SpectralRecord]) -> Option<SpectralRecord> {
    let first = records.first()?;
    let layers = first
        .layers
        .iter()
        .map(|layer| {
            let means: Vec<Indicators> = records
                .iter()
                .filter_map(|r| r.layers.iter().find(|l| l.layer == layer.layer))
                .map(|l| l.mean)
                .collect();
            LayerIndicators {
                layer: layer.layer,
                heads: Vec::new(),
                mean: Indicators::mean(&means).unwrap_or_default(),
            }
        })
        .collect();
    Some(SpectralRecord::from_layers(first.step, layers))
}
