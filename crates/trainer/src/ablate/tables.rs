//! The tables and figures of an ablation folder: `results.csv` (one row per variant),
//! `runs.csv` (one row per run), `results.md` (per variant and per factor, mean ± std over seeds,
//! beside the uniform-attention reference) and `figures/`. Depth grids report AbsRel, δ1 and RMSE;
//! segmentation grids mIoU, pixel accuracy, the majority-class baseline, the decoder's parameters
//! and the time per update.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use glassbox_spectral::plot::{Bar, BarPanel};
use glassbox_spectral::{Indicator, SpectralRecord};

use glassbox_decoder::SegmentationDecoder;

use super::AblateError;
use super::grid::{Grid, GridDataset, Variant, attention_name, join_hooks, readout_name};
use super::stats::{
    Factor, GroupStats, RunResult, Stat, aggregate_factor, aggregate_variants, final_record,
    mean_record,
};
use crate::config::Task;
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
    // The grid knows its task even before any run has finished.
    let task = grid.run_task().unwrap_or_else(|_| results_task(results));
    write_atomic(
        &dir.join("results.csv"),
        results_csv_for(task, results).as_bytes(),
    )?;
    write_atomic(
        &dir.join("runs.csv"),
        runs_csv_for(task, results).as_bytes(),
    )?;
    let figures = write_figures(dir, results, task)?;
    let md = markdown_for(task, grid, results, planned, &figures);
    write_atomic(&dir.join("results.md"), md.as_bytes())?;
    Ok(())
}

/// Segmentation when any run has segmentation scores, else depth.
fn results_task(results: &[RunResult]) -> Task {
    if results.iter().any(|r| r.miou.is_some()) {
        Task::Segmentation
    } else {
        Task::Depth
    }
}

/// A table cell of an optional number: `digits` decimals, or empty.
fn cell_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or(String::new(), |v| format!("{v:.*}", digits))
}

/// `depict-sa`, or `–` for a variant without a decoder axis.
fn decoder_name(variant: &Variant) -> &'static str {
    variant.decoder.map_or("–", |d| d.name())
}

/// Mean decoder parameters of the DPT-head variant a variant compares with: the one with the
/// same attention, readout and hooks, else the first DPT-head variant of the grid; `None` when the
/// grid has no DPT-head variant.
fn dpt_decoder_parameters(variants: &[(Variant, GroupStats)], variant: &Variant) -> Option<f64> {
    let is_dpt = |v: &Variant| v.decoder == Some(SegmentationDecoder::Dpt);
    let twin = Variant {
        decoder: Some(SegmentationDecoder::Dpt),
        ..variant.clone()
    };
    variants
        .iter()
        .find(|(v, _)| *v == twin)
        .or_else(|| variants.iter().find(|(v, _)| is_dpt(v)))
        .and_then(|(_, s)| s.decoder_parameters)
        .map(|s| s.mean)
}

/// A variant's decoder parameters as a percentage of the DPT head's.
fn decoder_share(
    variants: &[(Variant, GroupStats)],
    variant: &Variant,
    s: &GroupStats,
) -> Option<f64> {
    let dpt = dpt_decoder_parameters(variants, variant)?;
    let own = s.decoder_parameters?.mean;
    (dpt > 0.0).then(|| 100.0 * own / dpt)
}

fn fmt_opt(stat: Option<&Stat>, digits: usize) -> (String, String) {
    stat.map_or((String::new(), String::new()), |s| {
        (
            format!("{:.*}", digits, s.mean),
            format!("{:.*}", digits, s.std),
        )
    })
}

/// One row per variant: mean and std over seeds of every measure and indicator (the depth or the
/// segmentation columns, after the runs' task).
pub fn results_csv(results: &[RunResult]) -> String {
    results_csv_for(results_task(results), results)
}

fn results_csv_for(task: Task, results: &[RunResult]) -> String {
    if task == Task::Segmentation {
        return segmentation_results_csv(results);
    }
    let mut out = String::from(
        "backbone,keep_ratio,attention,readout,hooks,seeds,abs_rel_mean,abs_rel_std,delta1_mean,\
         delta1_std,rmse_mean,rmse_std,train_seconds_mean,train_seconds_std,\
         seconds_per_step_mean,seconds_per_step_std,encoder_gflops,corr_mean,parameters",
    );
    for (i, _) in INDICATOR_COLUMNS {
        let _ = write!(out, ",{0}_mean,{0}_std", i.name());
    }
    out.push('\n');
    for (v, s) in aggregate_variants(results) {
        let (abs_rel, abs_rel_std) = fmt_opt(s.abs_rel.as_ref(), 6);
        let (delta1, delta1_std) = fmt_opt(s.delta1.as_ref(), 6);
        let (rmse, rmse_std) = fmt_opt(s.rmse.as_ref(), 6);
        let (sps, sps_std) = fmt_opt(s.seconds_per_step.as_ref(), 6);
        let _ = write!(
            out,
            "{},{},{},{},{},{},{abs_rel},{abs_rel_std},{delta1},{delta1_std},{rmse},{rmse_std},{:.2},\
             {:.2},{sps},{sps_std},{},{},{:.0}",
            v.backbone.map_or("", |b| b.name()),
            cell_opt(v.keep_ratio, 3),
            attention_name(v.attention),
            readout_name(v.readout),
            join_hooks(&v.hooks, " "),
            s.runs,
            s.train_seconds.mean,
            s.train_seconds.std,
            cell_opt(s.encoder_gflops.map(|g| g.mean), 3),
            cell_opt(s.corr.map(|c| c.mean), 6),
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

/// One row per run, with its final spectral indicators (the depth or the segmentation columns,
/// after the runs' task).
pub fn runs_csv(results: &[RunResult]) -> String {
    runs_csv_for(results_task(results), results)
}

fn runs_csv_for(task: Task, results: &[RunResult]) -> String {
    if task == Task::Segmentation {
        return segmentation_runs_csv(results);
    }
    let mut out = String::from(
        "run,backbone,keep_ratio,attention,readout,hooks,seed,steps,abs_rel,delta1,rmse,train_seconds,\
         seconds_per_step,encoder_gflops,corr,parameters",
    );
    for (i, _) in INDICATOR_COLUMNS {
        let _ = write!(out, ",{}", i.name());
    }
    out.push('\n');
    for r in results {
        let _ = write!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{:.2},{},{},{},{}",
            r.run,
            r.variant.backbone.map_or("", |b| b.name()),
            cell_opt(r.variant.keep_ratio, 3),
            attention_name(r.variant.attention),
            readout_name(r.variant.readout),
            join_hooks(&r.variant.hooks, " "),
            r.seed,
            r.steps,
            cell_opt(r.abs_rel, 6),
            cell_opt(r.delta1, 6),
            cell_opt(r.rmse, 6),
            r.train_seconds,
            cell_opt(r.seconds_per_step, 6),
            cell_opt(r.encoder_gflops, 3),
            cell_opt(r.corr, 6),
            r.parameters
        );
        indicator_cells(&mut out, r);
        out.push('\n');
    }
    out
}

/// `,value` per indicator column of a run (empty when it lacks the indicator).
fn indicator_cells(out: &mut String, r: &RunResult) {
    for (i, _) in INDICATOR_COLUMNS {
        let _ = write!(out, ",{}", cell_opt(r.indicators.and_then(|x| x.get(i)), 6));
    }
}

/// `results.csv` of a segmentation grid: mIoU, pixel accuracy and the majority baseline, the
/// costs (parameters, decoder parameters and their share of the DPT head's, time per update),
/// then the indicators.
fn segmentation_results_csv(results: &[RunResult]) -> String {
    let mut out = String::from(
        "decoder,attention,readout,hooks,seeds,miou_mean,miou_std,pixel_accuracy_mean,\
         pixel_accuracy_std,miou_baseline_mean,miou_baseline_std,train_seconds_mean,\
         train_seconds_std,seconds_per_step_mean,seconds_per_step_std,parameters,\
         decoder_parameters,decoder_parameters_pct_dpt",
    );
    for (i, _) in INDICATOR_COLUMNS {
        let _ = write!(out, ",{0}_mean,{0}_std", i.name());
    }
    out.push('\n');
    let variants = aggregate_variants(results);
    for (v, s) in &variants {
        let (miou, miou_std) = fmt_opt(s.miou.as_ref(), 6);
        let (acc, acc_std) = fmt_opt(s.pixel_accuracy.as_ref(), 6);
        let (base, base_std) = fmt_opt(s.miou_baseline.as_ref(), 6);
        let (sps, sps_std) = fmt_opt(s.seconds_per_step.as_ref(), 6);
        let _ = write!(
            out,
            "{},{},{},{},{},{miou},{miou_std},{acc},{acc_std},{base},{base_std},{:.2},{:.2},\
             {sps},{sps_std},{:.0},{},{}",
            v.decoder.map_or("", |d| d.name()),
            attention_name(v.attention),
            readout_name(v.readout),
            join_hooks(&v.hooks, " "),
            s.runs,
            s.train_seconds.mean,
            s.train_seconds.std,
            s.parameters.mean,
            cell_opt(s.decoder_parameters.map(|p| p.mean), 0),
            cell_opt(decoder_share(&variants, v, s), 2),
        );
        for (i, _) in INDICATOR_COLUMNS {
            let (m, d) = fmt_opt(s.indicator(i), 6);
            let _ = write!(out, ",{m},{d}");
        }
        out.push('\n');
    }
    out
}

/// `runs.csv` of a segmentation grid: one row per run with its scores, costs and indicators.
fn segmentation_runs_csv(results: &[RunResult]) -> String {
    let mut out = String::from(
        "run,decoder,attention,readout,hooks,seed,steps,miou,pixel_accuracy,miou_baseline,\
         train_seconds,seconds_per_step,parameters,decoder_parameters",
    );
    for (i, _) in INDICATOR_COLUMNS {
        let _ = write!(out, ",{}", i.name());
    }
    out.push('\n');
    for r in results {
        let _ = write!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{:.2},{},{},{}",
            r.run,
            r.variant.decoder.map_or("", |d| d.name()),
            attention_name(r.variant.attention),
            readout_name(r.variant.readout),
            join_hooks(&r.variant.hooks, " "),
            r.seed,
            r.steps,
            cell_opt(r.miou, 6),
            cell_opt(r.pixel_accuracy, 6),
            cell_opt(r.miou_baseline, 6),
            r.train_seconds,
            cell_opt(r.seconds_per_step, 6),
            r.parameters,
            r.decoder_parameters
                .map_or(String::new(), |p| p.to_string()),
        );
        indicator_cells(&mut out, r);
        out.push('\n');
    }
    out
}

fn pm(s: &Stat, digits: usize) -> String {
    format!("{:.*} ± {:.*}", digits, s.mean, digits, s.std)
}

/// `mean ± std`, or `–` for a measure no run of the group has.
fn pm_opt(s: Option<&Stat>, digits: usize) -> String {
    s.map_or_else(|| "–".into(), |s| pm(s, digits))
}

/// `results.md` of an ablation folder from the results of its finished runs (`planned` = how
/// many runs the grid has, `figures` = the files [`write_tables`] drew, linked at the end): per
/// variant and per factor, mean ± std over seeds of the grid's task's scores and costs, then the
/// spectral tables.
pub fn results_markdown(
    grid: &Grid,
    results: &[RunResult],
    planned: usize,
    figures: &[PathBuf],
) -> String {
    let task = grid.run_task().unwrap_or_else(|_| results_task(results));
    markdown_for(task, grid, results, planned, figures)
}

fn markdown_for(
    task: Task,
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
    if task == Task::Segmentation {
        segmentation_tables(&mut md, grid, results, planned, &data);
    } else {
        depth_tables(&mut md, grid, results, planned, &data);
    }
    spectral_tables(&mut md, results, figures);
    md
}

/// The summary sentence, the variant table and the per-factor tables of a depth grid.
fn depth_tables(md: &mut String, grid: &Grid, results: &[RunResult], planned: usize, data: &str) {
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
    let variants = aggregate_variants(results);
    // The backbone and keep ratio lead the row when the grid varies them.
    let leading: Vec<Factor> = [Factor::Backbone, Factor::KeepRatio]
        .into_iter()
        .filter(|&f| variants.iter().any(|(v, _)| f.level(v) != "–"))
        .collect();
    md.push_str("## Variants\n\n|");
    for f in &leading {
        let _ = write!(md, " {} |", f.name());
    }
    md.push_str(" attention | readout | hooks | seeds | AbsRel | δ1 | RMSE | train time (s) | parameters |\n|");
    md.push_str(&"---|".repeat(leading.len()));
    md.push_str("---|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (v, s) in variants {
        md.push('|');
        for f in &leading {
            let _ = write!(md, " {} |", f.level(&v));
        }
        let _ = writeln!(
            md,
            " {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            attention_name(v.attention),
            readout_name(v.readout),
            join_hooks(&v.hooks, ","),
            s.runs,
            pm_opt(s.abs_rel.as_ref(), 4),
            pm_opt(s.delta1.as_ref(), 4),
            pm_opt(s.rmse.as_ref(), 4),
            pm(&s.train_seconds, 1),
            s.parameters.mean
        );
    }
    sparsity_table(md, results);
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
                pm_opt(s.abs_rel.as_ref(), 4),
                pm_opt(s.delta1.as_ref(), 4),
                pm_opt(s.rmse.as_ref(), 4),
                pm(&s.train_seconds, 1)
            );
        }
    }
}

/// The keep-ratio table of a grid that varies it (`docs/sparse.md`): accuracy, counted encoder
/// FLOPs and measured time per update, each beside the dense variant's (rho = 1, same other
/// factors), and `corr`.
fn sparsity_table(md: &mut String, results: &[RunResult]) {
    let levels = aggregate_factor(results, Factor::KeepRatio);
    if levels.len() < 2 {
        return;
    }
    let dense = levels.iter().find(|(l, _)| l == "1").map(|(_, s)| s);
    let ratio = |a: Option<&Stat>, b: Option<&Stat>| match (a, b) {
        (Some(a), Some(b)) if b.mean > 0.0 => format!("{:.3}", a.mean / b.mean),
        _ => "–".into(),
    };
    md.push_str(
        "\n## Sparse token updates (other factors and seeds pooled)\n\nEncoder GFLOPs: counted \
         for one image at the grid's size, inference (2 x multiply-accumulates of the matrix \
         products, docs/sparse.md). s / step: measured wall time per training update (scorer \
         and its loss included). corr: share of the kept queries' attention mass on the kept \
         patch tokens at the last logged step; dense corr: share of a dense pass's attention \
         mass (same weights, every query) on the kept tokens, and target overlap: the share of \
         the scorer's top-k target that a dense pass's top-k shares, both on the first \
         validation images at the final validation (chance level: the keep ratio). Ratios \
         divide by the dense (keep ratio 1) row.\n\n| keep ratio | runs | AbsRel | AbsRel / \
         dense | δ1 | encoder GFLOPs | dense / sparse FLOPs | s / step | dense / sparse time | \
         corr | dense corr | target overlap |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\
         ---:|---:|---:|\n",
    );
    for (level, s) in &levels {
        let flops = s.encoder_gflops.as_ref();
        let dense_flops = dense.and_then(|d| d.encoder_gflops.as_ref());
        let dense_time = dense.and_then(|d| d.seconds_per_step.as_ref());
        let _ = writeln!(
            md,
            "| {level} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.runs,
            pm_opt(s.abs_rel.as_ref(), 4),
            ratio(s.abs_rel.as_ref(), dense.and_then(|d| d.abs_rel.as_ref())),
            pm_opt(s.delta1.as_ref(), 4),
            flops.map_or_else(|| "–".into(), |f| format!("{:.3}", f.mean)),
            ratio(dense_flops, flops),
            pm_opt(s.seconds_per_step.as_ref(), 3),
            ratio(dense_time, s.seconds_per_step.as_ref()),
            pm_opt(s.corr.as_ref(), 3),
            pm_opt(s.corr_dense.as_ref(), 3),
            pm_opt(s.target_overlap.as_ref(), 3),
        );
    }
}

/// The summary sentence, the variant table and the per-factor tables of a segmentation grid:
/// scores beside the majority-class floor, and what each decoder costs in weights and time.
fn segmentation_tables(
    md: &mut String,
    grid: &Grid,
    results: &[RunResult],
    planned: usize,
    data: &str,
) {
    let _ = writeln!(
        md,
        "{} of {planned} runs finished. Budget: {} steps per run on {data}; seeds {}. \
         Metrics: final validation segmentation over the classes of the data; mIoU is the mean \
         IoU over the classes present in the ground truth or the prediction, majority mIoU that \
         of predicting the most frequent class everywhere; mean ± std (sample, n - 1) over \
         seeds. Decoder parameters: trainable parameters outside the encoder; `% DPT` divides \
         by the DPT head's (same attention, readout and hooks). Seconds per step: wall time of \
         the training updates over their number, in the invocation that finished the run \
         (validation, probes and checkpoints excluded). Train time: wall time of the run, \
         including its final validation and spectral probes.\n",
        results.len(),
        grid.steps,
        grid.seeds
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let variants = aggregate_variants(results);
    let share = variants
        .iter()
        .any(|(v, _)| v.decoder == Some(SegmentationDecoder::Dpt));
    md.push_str(
        "## Variants\n\n| decoder | attention | readout | hooks | seeds | mIoU | pixel acc. | \
         majority mIoU | parameters | decoder parameters |",
    );
    md.push_str(if share { " % DPT |" } else { "" });
    md.push_str(" s / step | train time (s) |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|");
    md.push_str(if share { "---:|" } else { "" });
    md.push_str("---:|---:|\n");
    for (v, s) in &variants {
        let _ = write!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |",
            decoder_name(v),
            attention_name(v.attention),
            readout_name(v.readout),
            join_hooks(&v.hooks, ","),
            s.runs,
            pm_opt(s.miou.as_ref(), 4),
            pm_opt(s.pixel_accuracy.as_ref(), 4),
            pm_opt(s.miou_baseline.as_ref(), 4),
            s.parameters.mean,
            s.decoder_parameters
                .map_or_else(|| "–".into(), |p| format!("{:.0}", p.mean)),
        );
        if share {
            let pct = decoder_share(&variants, v, s);
            let _ = write!(
                md,
                " {} |",
                pct.map_or_else(|| "–".into(), |p| format!("{p:.1}%"))
            );
        }
        let _ = writeln!(
            md,
            " {} | {} |",
            pm_opt(s.seconds_per_step.as_ref(), 3),
            pm(&s.train_seconds, 1)
        );
    }
    for factor in Factor::ALL {
        let levels = aggregate_factor(results, factor);
        if levels.len() < 2 {
            continue;
        }
        let _ = writeln!(
            md,
            "\n## By {0} (other factors and seeds pooled)\n\n| {0} | runs | mIoU | pixel acc. | \
             decoder parameters | s / step | train time (s) |\n|---|---:|---:|---:|---:|---:|---:|",
            factor.name()
        );
        for (level, s) in levels {
            let _ = writeln!(
                md,
                "| {level} | {} | {} | {} | {} | {} | {} |",
                s.runs,
                pm_opt(s.miou.as_ref(), 4),
                pm_opt(s.pixel_accuracy.as_ref(), 4),
                s.decoder_parameters
                    .map_or_else(|| "–".into(), |p| format!("{:.0}", p.mean)),
                pm_opt(s.seconds_per_step.as_ref(), 3),
                pm(&s.train_seconds, 1)
            );
        }
    }
}

/// The spectral tables every grid shares (selectivity by depth quarter, SVDA's learned sigma,
/// the final indicators of every run) and the figure links.
fn spectral_tables(md: &mut String, results: &[RunResult], figures: &[PathBuf]) {
    quarter_table(md, results);
    sigma_table(md, results);
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

/// Bar charts per factor (levels with 2+ values; AbsRel, δ1, RMSE and train time for depth, mIoU
/// and seconds per step for segmentation) and indicator depth profiles per variant (one figure per
/// hook set, so a figure compares at most decoder x attention x readout lines).
fn write_figures(
    dir: &Path,
    results: &[RunResult],
    task: Task,
) -> Result<Vec<PathBuf>, AblateError> {
    let figures = dir.join("figures");
    let mut written = Vec::new();
    for factor in Factor::ALL {
        let levels = aggregate_factor(results, factor);
        if levels.len() < 2 {
            continue;
        }
        // A panel only when every level has the measure.
        let panel = |title: &str, y: &str, f: fn(&GroupStats) -> Option<Stat>| {
            let bars = levels
                .iter()
                .map(|(level, s)| {
                    f(s).map(|stat| Bar {
                        label: level.clone(),
                        mean: stat.mean,
                        std: stat.std,
                    })
                })
                .collect::<Option<Vec<Bar>>>()?;
            Some(BarPanel {
                title: format!("{title} by {}", factor.name()),
                y_desc: y.into(),
                bars,
            })
        };
        let panels: Vec<BarPanel> = match task {
            Task::Depth => [
                panel("AbsRel", "AbsRel (lower is better)", |s| s.abs_rel),
                panel("δ1", "δ1 (higher is better)", |s| s.delta1),
                panel("RMSE", "RMSE", |s| s.rmse),
                panel("train time", "seconds per run", |s| Some(s.train_seconds)),
            ]
            .into_iter()
            .flatten()
            .collect(),
            Task::Segmentation => [
                panel("mIoU", "mIoU (higher is better)", |s| s.miou),
                panel("time per step", "seconds per update", |s| {
                    s.seconds_per_step
                }),
            ]
            .into_iter()
            .flatten()
            .collect(),
        };
        if panels.is_empty() {
            continue;
        }
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
                let decoder = variant
                    .decoder
                    .map(|d| format!("{} / ", d.name()))
                    .unwrap_or_default();
                let label = format!(
                    "{decoder}{} / {}",
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
