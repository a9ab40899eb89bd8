//! The tables and figures of an ablation folder: `results.csv` (one row per variant),
//! `runs.csv` (one row per run), `results.md` (per variant and per factor, mean ± std over seeds,
//! beside the uniform-attention reference) and `figures/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use glassbox_spectral::plot::{Bar, BarPanel};
use glassbox_spectral::{Indicator, SpectralRecord};

use super::AblateError;
use super::grid::{Grid, GridDataset, attention_name, join_hooks, readout_name};
use super::stats::{
    Factor, GroupStats, RunResult, Stat, aggregate_factor, aggregate_variants, final_record,
    mean_record,
};
use crate::fs::write_atomic;

/// The indicators of `docs/spectral.md` as table columns (robustness to sigma noise is SVDA only),
/// with the reference code's selectivity beside ours. In `results.md` every selectivity and the
/// attention distance are followed by their value for uniform attention.
const INDICATOR_COLUMNS: [(Indicator, &str); 10] = [
    (Indicator::SpectralEntropy, "entropy"),
    (Indicator::EffectiveRank, "eff. rank"),
    (Indicator::HoyerSparsity, "Hoyer"),
    (Indicator::SmallSigmaShare, "small σ"),
    (Indicator::AngularAlignment, "alignment"),
    (Indicator::Selectivity, "selectivity"),
    (Indicator::GiniSelectivity, "Gini sel. (paper)"),
    (Indicator::AttentionDistance, "attn. distance (patches)"),
    (Indicator::RobustnessInput, "robust (input)"),
    (Indicator::RobustnessSigma, "robust (σ)"),
];

/// Whether `results.md` follows an indicator's column with its uniform-attention value.
fn has_uniform_column(indicator: Indicator) -> bool {
    matches!(
        indicator,
        Indicator::Selectivity | Indicator::GiniSelectivity | Indicator::AttentionDistance
    )
}

/// Writes `results.csv`, `runs.csv`, `results.md` and `figures/` of an ablation folder from the
/// results of its finished runs (`planned` = how many runs the grid has).
pub fn write_tables(
    grid: &Grid,
    dir: &Path,
    results: &[RunResult],
    planned: usize,
) -> Result<(), AblateError> {
    write_atomic(&dir.join("results.csv"), results_csv(results).as_bytes())?;
    write_atomic(&dir.join("runs.csv"), runs_csv(results).as_bytes())?;
    let figures = write_figures(dir, results)?;
    let md = results_markdown(grid, results, planned, &figures);
    write_atomic(&dir.join("results.md"), md.as_bytes())?;
    Ok(())
}

fn fmt_opt(stat: Option<&Stat>, digits: usize) -> (String, String) {
    stat.map_or((String::new(), String::new()), |s| {
        (
            format!("{:.*}", digits, s.mean),
            format!("{:.*}", digits, s.std),
        )
    })
}

/// One row per variant: mean and std over seeds of every measure and indicator.
pub fn results_csv(results: &[RunResult]) -> String {
    let mut out = String::from(
        "attention,readout,hooks,seeds,abs_rel_mean,abs_rel_std,delta1_mean,delta1_std,\
         rmse_mean,rmse_std,train_seconds_mean,train_seconds_std,parameters",
    );
    for (i, _) in INDICATOR_COLUMNS {
        let _ = write!(out, ",{0}_mean,{0}_std", i.name());
    }
    out.push('\n');
    for (v, s) in aggregate_variants(results) {
        let _ = write!(
            out,
            "{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.2},{:.2},{:.0}",
            attention_name(v.attention),
            readout_name(v.readout),
            join_hooks(&v.hooks, " "),
            s.runs,
            s.abs_rel.mean,
            s.abs_rel.std,
            s.delta1.mean,
            s.delta1.std,
            s.rmse.mean,
            s.rmse.std,
            s.train_seconds.mean,
            s.train_seconds.std,
            s.parameters.mean
        );
        for (i, _) in INDICATOR_COLUMNS {
            let (m, d) = fmt_opt(s.indicator(i), 6);
            let _ = write!(out, ",{m},{d}");
        }
        out.push('\n');
    }
    out
}

/// One row per run, with its final spectral indicators.
pub fn runs_csv(results: &[RunResult]) -> String {
    let mut out = String::from(
        "run,attention,readout,hooks,seed,steps,abs_rel,delta1,rmse,train_seconds,parameters",
    );
    for (i, _) in INDICATOR_COLUMNS {
        let _ = write!(out, ",{}", i.name());
    }
    out.push('\n');
    for r in results {
        let _ = write!(
            out,
            "{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.2},{}",
            r.run,
            attention_name(r.variant.attention),
            readout_name(r.variant.readout),
            join_hooks(&r.variant.hooks, " "),
            r.seed,
            r.steps,
            r.abs_rel,
            r.delta1,
            r.rmse,
            r.train_seconds,
            r.parameters
        );
        for (i, _) in INDICATOR_COLUMNS {
            let v = r
                .indicators
                .and_then(|x| x.get(i))
                .map(|v| format!("{v:.6}"))
                .unwrap_or_default();
            let _ = write!(out, ",{v}");
        }
        out.push('\n');
    }
    out
}

fn pm(s: &Stat, digits: usize) -> String {
    format!("{:.*} ± {:.*}", digits, s.mean, digits, s.std)
}

fn results_markdown(
    grid: &Grid,
    results: &[RunResult],
    planned: usize,
    figures: &[PathBuf],
) -> String {
    let mut md = format!("# Ablation `{}`\n\n", grid.name);
    let data = match grid.dataset {
        GridDataset::Synthetic => "synthetic indoor scenes".to_string(),
        GridDataset::Sevenscenes => "7-Scenes".to_string(),
    };
    let _ = writeln!(
        md,
        "{} of {planned} runs finished. Budget: {} steps per run on {data}; seeds {}. \
         Metrics: final validation, median-scaled depth; mean ± std (sample, n - 1) over seeds. \
         Train time: wall time of the run, including its final validation and spectral probes.\n",
        results.len(),
        grid.steps,
        grid.seeds
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    md.push_str("## Variants\n\n| attention | readout | hooks | seeds | AbsRel | δ1 | RMSE | train time (s) | parameters |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (v, s) in aggregate_variants(results) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            attention_name(v.attention),
            readout_name(v.readout),
            join_hooks(&v.hooks, ","),
            s.runs,
            pm(&s.abs_rel, 4),
            pm(&s.delta1, 4),
            pm(&s.rmse, 4),
            pm(&s.train_seconds, 1),
            s.parameters.mean
        );
    }
    for factor in Factor::ALL {
        let levels = aggregate_factor(results, factor);
        if levels.len() < 2 {
            continue;
        }
        let _ = writeln!(
            md,
            "\n## By {} (other factors and seeds pooled)\n\n| {} | runs | AbsRel | δ1 | RMSE | train time (s) |\n|---|---:|---:|---:|---:|---:|",
            factor.name(),
            factor.name()
        );
        for (level, s) in levels {
            let _ = writeln!(
                md,
                "| {level} | {} | {} | {} | {} | {} |",
                s.runs,
                pm(&s.abs_rel, 4),
                pm(&s.delta1, 4),
                pm(&s.rmse, 4),
                pm(&s.train_seconds, 1)
            );
        }
    }
    quarter_table(&mut md, results);
    sigma_table(&mut md, results);
    md.push_str(
        "\n## Final spectral indicators of every run (mean over layers and heads)\n\n\
         `uniform` is what the column before it reads for perfectly uniform attention: 0 for our \
         selectivity, 1 - 1/N for the Gini form of the SVDA reference code, the mean distance \
         between two patches of the grid for the attention distance.\n\n| run |",
    );
    let mut columns = 0;
    for (i, title) in INDICATOR_COLUMNS {
        let _ = write!(md, " {title} |");
        columns += 1;
        if has_uniform_column(i) {
            md.push_str(" uniform |");
            columns += 1;
        }
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(columns));
    md.push('\n');
    let cell = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into());
    for r in results {
        let _ = write!(md, "| {} |", r.run);
        for (i, _) in INDICATOR_COLUMNS {
            let _ = write!(md, " {} |", cell(r.indicators.and_then(|x| x.get(i))));
            if has_uniform_column(i) {
                let _ = write!(
                    md,
                    " {} |",
                    cell(r.indicators.and_then(|x| x.uniform_value(i)))
                );
            }
        }
        md.push('\n');
    }
    if !figures.is_empty() {
        md.push_str("\n## Figures\n\n");
        for f in figures
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "png"))
        {
            let rel = format!(
                "figures/{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            );
            let _ = writeln!(md, "![{rel}]({rel})\n");
        }
    }
    md
}

/// The selectivity target of docs/results.md: per attention kind (readouts and seeds pooled), the
/// final selectivity of each quarter of the depth and its ratio to standard attention's.
fn quarter_table(md: &mut String, results: &[RunResult]) {
    let mut kinds: Vec<_> = Vec::new();
    for r in results {
        if !kinds.contains(&r.variant.attention) && r.selectivity_quarters().is_some() {
            kinds.push(r.variant.attention);
        }
    }
    if kinds.is_empty() {
        return;
    }
    let quarters = |kind| -> Option<[Stat; 4]> {
        let runs: Vec<[f64; 4]> = results
            .iter()
            .filter(|r| r.variant.attention == kind)
            .filter_map(RunResult::selectivity_quarters)
            .collect();
        let stat = |q: usize| Stat::of(&runs.iter().map(|r| r[q]).collect::<Vec<_>>());
        Some([stat(0)?, stat(1)?, stat(2)?, stat(3)?])
    };
    let standard = quarters(glassbox_attention::AttentionKind::Standard);
    md.push_str(
        "\n## Selectivity by depth quarter (final, every run of a kind pooled)\n\n\
         Ours, 1 - H(A_i)/ln N: uniform attention reads 0, one-hot 1. The quarters split the \
         layers into four equal blocks (layers 1-3, 4-6, 7-9, 10-12 of 12); `× standard` divides \
         by standard attention's mean.\n\n\
         | attention | runs | Q1 | Q2 | Q3 | Q4 | Q1 × standard | Q2 × standard | Q3 × standard | \
         Q4 × standard |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for kind in kinds {
        let Some(q) = quarters(kind) else { continue };
        let runs = results
            .iter()
            .filter(|r| r.variant.attention == kind && r.selectivity_quarters().is_some())
            .count();
        let _ = write!(md, "| {} | {runs} |", attention_name(kind));
        for s in &q {
            let _ = write!(md, " {} |", pm(s, 3));
        }
        for (i, s) in q.iter().enumerate() {
            match &standard {
                Some(base) if base[i].mean > 0.0 => {
                    let _ = write!(md, " {:.2} |", s.mean / base[i].mean);
                }
                _ => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
}

/// SVDA's learned spectrum at the end of training, per layer, mean over the runs of each kind
/// that has one: is the spectrum's shape learned, or only its gain?
fn sigma_table(md: &mut String, results: &[RunResult]) {
    let mut kinds: Vec<_> = Vec::new();
    for r in results {
        if !kinds.contains(&r.variant.attention) && !r.sigma.is_empty() {
            kinds.push(r.variant.attention);
        }
    }
    if kinds.is_empty() {
        return;
    }
    md.push_str(
        "\n## Learned sigma at the end (per layer; mean over heads, then over runs)\n\n\
         gain: mean |σ| (temperature included; the logit of a unit cosine is gain/sqrt(d)); \
         max/min: largest over smallest |σ| of a head; entropy (1 = flat) and Hoyer (0 = flat) \
         are indicators 1 and 3a.\n\n| attention | layer | gain | max/min | entropy | Hoyer |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for kind in kinds {
        let runs: Vec<&RunResult> = results
            .iter()
            .filter(|r| r.variant.attention == kind && !r.sigma.is_empty())
            .collect();
        let layers = runs.iter().map(|r| r.sigma.len()).min().unwrap_or(0);
        for l in 0..layers {
            let mean = |f: fn(&glassbox_spectral::SigmaSummary) -> f64| {
                runs.iter().map(|r| f(&r.sigma[l])).sum::<f64>() / runs.len() as f64
            };
            let ratios: Option<Vec<f64>> = runs.iter().map(|r| r.sigma[l].max_min_ratio).collect();
            let ratio = ratios.map_or("∞ (a σ is 0)".to_string(), |v| {
                format!("{:.3}", v.iter().sum::<f64>() / v.len() as f64)
            });
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {ratio} | {:.4} | {:.4} |",
                attention_name(kind),
                l + 1,
                mean(|s| s.gain),
                mean(|s| s.spectral_entropy),
                mean(|s| s.hoyer_sparsity)
            );
        }
    }
}

/// Bar charts per factor (levels with 2+ values) and indicator depth profiles per variant (one
/// figure per hook set, so a figure compares at most attention x readout lines).
fn write_figures(dir: &Path, results: &[RunResult]) -> Result<Vec<PathBuf>, AblateError> {
    let figures = dir.join("figures");
    let mut written = Vec::new();
    for factor in Factor::ALL {
        let levels = aggregate_factor(results, factor);
        if levels.len() < 2 {
            continue;
        }
        let panel = |title: &str, y: &str, f: fn(&GroupStats) -> Stat| BarPanel {
            title: format!("{title} by {}", factor.name()),
            y_desc: y.into(),
            bars: levels
                .iter()
                .map(|(level, s)| Bar {
                    label: level.clone(),
                    mean: f(s).mean,
                    std: f(s).std,
                })
                .collect(),
        };
        let panels = [
            panel("AbsRel", "AbsRel (lower is better)", |s| s.abs_rel),
            panel("δ1", "δ1 (higher is better)", |s| s.delta1),
            panel("RMSE", "RMSE", |s| s.rmse),
            panel("train time", "seconds per run", |s| s.train_seconds),
        ];
        written.extend(glassbox_spectral::plot::bar_panels(
            &panels,
            &figures.join(format!("factor-{}", factor.name())),
        )?);
    }
    let mut hook_sets: Vec<Vec<usize>> = Vec::new();
    for r in results {
        if !hook_sets.contains(&r.variant.hooks) {
            hook_sets.push(r.variant.hooks.clone());
        }
    }
    for hooks in hook_sets {
        let mut profiles: Vec<(String, SpectralRecord)> = Vec::new();
        for (variant, _) in aggregate_variants(results) {
            if variant.hooks != hooks {
                continue;
            }
            let records: Vec<SpectralRecord> = results
                .iter()
                .filter(|r| r.variant == variant)
                .filter_map(|r| final_record(&dir.join("runs").join(&r.run)))
                .collect();
            if let Some(mean) = mean_record(&records) {
                let label = format!(
                    "{} / {}",
                    attention_name(variant.attention),
                    readout_name(variant.readout)
                );
                profiles.push((label, mean));
            }
        }
        if profiles.is_empty() {
            continue;
        }
        let refs: Vec<(String, &SpectralRecord)> =
            profiles.iter().map(|(l, r)| (l.clone(), r)).collect();
        let stem = figures.join(format!("depth-profiles-h{}", join_hooks(&hooks, "-")));
        written.extend(glassbox_spectral::plot::depth_profiles(&refs, &stem)?);

        // The headline figure: one line per attention kind (readouts and seeds pooled), so
        // standard, svda and svda-paper stand side by side.
        let mut kinds = Vec::new();
        for r in results.iter().filter(|r| r.variant.hooks == hooks) {
            if !kinds.contains(&r.variant.attention) {
                kinds.push(r.variant.attention);
            }
        }
        let by_kind: Vec<(String, SpectralRecord)> = kinds
            .into_iter()
            .filter_map(|kind| {
                let records: Vec<SpectralRecord> = results
                    .iter()
                    .filter(|r| r.variant.hooks == hooks && r.variant.attention == kind)
                    .filter_map(|r| final_record(&dir.join("runs").join(&r.run)))
                    .collect();
                Some((attention_name(kind).to_string(), mean_record(&records)?))
            })
            .collect();
        if by_kind.len() > 1 {
            let refs: Vec<(String, &SpectralRecord)> =
                by_kind.iter().map(|(l, r)| (l.clone(), r)).collect();
            let stem = figures.join(format!(
                "depth-profiles-by-attention-h{}",
                join_hooks(&hooks, "-")
            ));
            written.extend(glassbox_spectral::plot::depth_profiles(&refs, &stem)?);
        }
    }
    Ok(written)
}
