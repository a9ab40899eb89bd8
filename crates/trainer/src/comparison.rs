//! The comparison page of several runs (`glassbox report RUN_A RUN_B …`, `docs/training.md`):
//! one `index.html` with the runs' metric tables side by side (a column per run), their training
//! curves overlaid (a curve per run on each panel) and the spectral report of the runs that logged
//! probes (`glassbox_spectral::report::sections`). Self-contained like a run's page: every figure
//! is drawn into the output folder and linked by a relative path.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use glassbox_dpt::HeadConfig;
use glassbox_spectral::SpectralError;
use glassbox_spectral::plot::{Curve, CurvePanel, CurveStyle, curve_panels};
use glassbox_spectral::report::{escape, figure_html, sections, unique_names};

use crate::config::TrainConfig;
use crate::fs::{FileError, file_error, write_atomic};
use crate::page::{html_page, spectral_logs};
use crate::report::{EvalSeries, LOSS_SMOOTHING, moving_average, points, run_range};
use crate::train::logs::read_losses;

/// The overlaid training curves, in the output folder.
pub const CURVES_STEM: &str = "training_curves";

/// What stops a comparison: a run folder that is not a finished (or validated) run, a figure
/// that cannot be drawn or a file that cannot be written. Each names its folder or file.
#[derive(Debug, thiserror::Error)]
pub enum ComparisonError {
    #[error("no run folder to compare")]
    NoRuns,
    #[error("run folder {} does not exist", .0.display())]
    NoRun(PathBuf),
    #[error(
        "run folder {} holds no validation in eval.jsonl (has the run validated yet?)",
        .0.display()
    )]
    NoEval(PathBuf),
    #[error(
        "the output folder {} is the run folder {}: its index.html is that run's own page",
        .out.display(),
        .run.display()
    )]
    OutIsRun { out: PathBuf, run: PathBuf },
    #[error("comparison figures: {0}")]
    Figure(#[from] SpectralError),
    #[error(transparent)]
    File(#[from] FileError),
}

/// What the comparison reads of one run folder: enough for its table column and its curves.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run's name in table headers and legends (its folder's name, made unique).
    pub label: String,
    pub dir: PathBuf,
    /// The run's `config.toml`, when it can be read.
    pub config: Option<TrainConfig>,
    /// The fields of the last `eval.jsonl` line.
    pub last_eval: serde_json::Map<String, serde_json::Value>,
    /// The parameter count `report.md` states, when the run wrote its report.
    pub parameters: Option<i64>,
    /// (step, loss) of `metrics.jsonl`.
    pub losses: Vec<(usize, f64)>,
    pub evals: EvalSeries,
}

impl RunSummary {
    /// Reads a run folder; it must exist and hold at least one validation line, since the
    /// comparison is about scores.
    pub fn read(dir: &Path) -> Result<Self, ComparisonError> {
        if !dir.is_dir() {
            return Err(ComparisonError::NoRun(dir.to_path_buf()));
        }
        let eval_path = dir.join("eval.jsonl");
        let last_eval = std::fs::read_to_string(&eval_path)
            .unwrap_or_default()
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| match v {
                serde_json::Value::Object(map) if map.contains_key("step") => Some(map),
                _ => None,
            })
            .next()
            .ok_or_else(|| ComparisonError::NoEval(dir.to_path_buf()))?;
        let label = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "run".into());
        let parameters = std::fs::read_to_string(dir.join("report.md"))
            .ok()
            .and_then(|text| stated_parameters(&text));
        Ok(Self {
            label,
            dir: dir.to_path_buf(),
            config: TrainConfig::from_run_file(&dir.join("config.toml")).ok(),
            last_eval,
            parameters,
            losses: read_losses(&dir.join("metrics.jsonl")),
            evals: EvalSeries::read(&eval_path),
        })
    }

    /// A number of the last validation line.
    fn metric(&self, key: &str) -> Option<f64> {
        self.last_eval.get(key)?.as_f64()
    }
}

/// The count in report.md's summary line ("…, seed 0, 8398652 parameters.").
fn stated_parameters(report: &str) -> Option<i64> {
    let words: Vec<&str> = report.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].starts_with("parameters"))
        .and_then(|w| w[0].trim_end_matches(',').parse().ok())
}

/// The files of a written comparison.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub index: PathBuf,
    pub figures: Vec<PathBuf>,
    /// Runs shown in the spectral section (those that logged probes).
    pub spectral_runs: usize,
}

/// Whether a larger value of a metric is better (`None`: a reference, not a score).
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

/// The metric rows of the table: `eval.jsonl` key, row title and which way is better. Depth
/// runs log the first four, segmentation runs the last three.
const METRICS: &[(&str, &str, Option<Better>)] = &[
    ("abs_rel", "AbsRel ↓ (median-scaled)", Some(Better::Lower)),
    ("delta1", "δ1 ↑ (median-scaled)", Some(Better::Higher)),
    (
        "abs_rel_scale_shift",
        "AbsRel ↓ (scale+shift)",
        Some(Better::Lower),
    ),
    ("abs_rel_baseline", "AbsRel of the constant baseline", None),
    ("miou", "mIoU ↑", Some(Better::Higher)),
    ("pixel_accuracy", "pixel accuracy ↑", Some(Better::Higher)),
    ("miou_baseline", "mIoU of the majority class", None),
];

/// Writes the comparison of the runs in `run_dirs` into `out` (`index.html`, the overlaid
/// curves `training_curves.{svg,png}` and the spectral figures) and returns what it wrote. Runs
/// without probes still get their table column and curves; the spectral section shows the others.
pub fn compare(run_dirs: &[PathBuf], out: &Path) -> Result<Comparison, ComparisonError> {
    if run_dirs.is_empty() {
        return Err(ComparisonError::NoRuns);
    }
    let mut runs = run_dirs
        .iter()
        .map(|d| RunSummary::read(d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    unique_names(&mut labels);
    for (run, label) in runs.iter_mut().zip(labels) {
        run.label = label;
    }
    std::fs::create_dir_all(out).map_err(file_error("create", out))?;
    if let Ok(target) = out.canonicalize()
        && let Some(run) = runs
            .iter()
            .find(|r| r.dir.canonicalize().is_ok_and(|d| d == target))
    {
        return Err(ComparisonError::OutIsRun {
            out: out.to_path_buf(),
            run: run.dir.clone(),
        });
    }

    let names: Vec<String> = runs.iter().map(|r| escape(&r.label)).collect();
    let mut body = format!("<h1>Comparison of {}</h1>\n<ul>\n", names.join(", "));
    for run in &runs {
        let _ = writeln!(
            body,
            "<li>{}: <code>{}</code></li>",
            escape(&run.label),
            escape(&run.dir.display().to_string())
        );
    }
    body.push_str("</ul>\n<h2>Metrics at each run's last validation</h2>\n");
    body.push_str(&metric_table(&runs));

    let stem = out.join(CURVES_STEM);
    let mut figures = curve_panels(&curve_figure(&runs), 3, &stem)?;
    let _ = write!(
        body,
        "<h2>Training curves</h2>\n<p>One colour per run, the same in every panel: the training \
         loss ({LOSS_SMOOTHING}-step moving average, log scale) and the headline validation \
         metric over optimiser steps. Each run's own page has the raw loss and the baselines.</p>\n{}",
        figure_html(CURVES_STEM)
    );

    let mut logs = Vec::new();
    let mut without = Vec::new();
    for run in &runs {
        match spectral_logs(&run.dir)? {
            Some(mut log) => {
                log.label = run.label.clone();
                logs.push(log);
            }
            None => without.push(escape(&run.label)),
        }
    }
    body.push_str(
        "<h2>Attention, read through the spectral indicators</h2>\n<p>Definitions and how to \
         read them: <code>docs/spectral.md</code>.</p>\n",
    );
    if !without.is_empty() {
        let _ = writeln!(
            body,
            "<p>No spectral probe logged by {} (<code>spectral_every = 0</code>).</p>",
            without.join(", ")
        );
    }
    if !logs.is_empty() {
        let (html, drawn) = sections(&logs, out)?;
        body.push_str(&html);
        figures.extend(drawn);
    }

    let index = out.join("index.html");
    let title = format!("glassbox comparison {}", labels_joined(&runs));
    write_atomic(&index, html_page(&title, &body).as_bytes())?;
    Ok(Comparison {
        index,
        figures,
        spectral_runs: logs.len(),
    })
}

fn labels_joined(runs: &[RunSummary]) -> String {
    runs.iter()
        .map(|r| r.label.as_str())
        .collect::<Vec<_>>()
        .join(" vs ")
}

/// The side-by-side table: a header per run, rows for what the runs are (task, decoder,
/// attention, steps, parameters, validation images) and for every metric some run logged; a
/// value a run lacks is "—", and the best score of a row is bold.
fn metric_table(runs: &[RunSummary]) -> String {
    let mut html = String::from("<table>\n<tr><th style=\"text-align:left\"></th>");
    for run in runs {
        let _ = write!(html, "<th>{}</th>", escape(&run.label));
    }
    html.push_str("</tr>\n");
    let row = |html: &mut String, title: &str, cells: Vec<String>| {
        let _ = write!(html, "<tr><th style=\"text-align:left\">{title}</th>");
        for cell in cells {
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>\n");
    };
    let text = |value: Option<String>| value.map_or_else(|| "—".to_string(), |v| escape(&v));
    let config_cell = |f: fn(&TrainConfig) -> String| -> Vec<String> {
        runs.iter()
            .map(|r| text(r.config.as_ref().map(f)))
            .collect()
    };
    row(&mut html, "task", config_cell(|c| c.task().name().into()));
    row(&mut html, "decoder", config_cell(decoder_name));
    row(
        &mut html,
        "attention",
        config_cell(|c| c.model.encoder.attention.name().into()),
    );
    let steps = runs
        .iter()
        .map(|r| {
            let at = r.last_eval.get("step").and_then(serde_json::Value::as_u64);
            let planned = r.config.as_ref().map(|c| c.optim.steps as u64);
            text(at.map(|s| match planned {
                Some(total) if total > s => format!("{s} of {total}"),
                _ => s.to_string(),
            }))
        })
        .collect();
    row(&mut html, "steps (at the last validation)", steps);
    let parameters = runs
        .iter()
        .map(|r| text(r.parameters.map(|p| p.to_string())))
        .collect();
    row(&mut html, "parameters", parameters);
    let images = runs
        .iter()
        .map(|r| text(r.metric("images").map(|n| format!("{n:.0}"))))
        .collect();
    row(&mut html, "validation images", images);
    for &(key, title, better) in METRICS {
        let values: Vec<Option<f64>> = runs
            .iter()
            .map(|r| r.metric(key).filter(|v| v.is_finite()))
            .collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        let best = match better {
            Some(Better::Lower) if present.len() > 1 => present.iter().copied().reduce(f64::min),
            Some(Better::Higher) if present.len() > 1 => present.iter().copied().reduce(f64::max),
            _ => None,
        };
        let cells = values
            .iter()
            .map(|v| match v {
                Some(v) if Some(*v) == best => format!("<b>{v:.4}</b>"),
                Some(v) => format!("{v:.4}"),
                None => "—".into(),
            })
            .collect();
        row(&mut html, &escape(title), cells);
    }
    html.push_str("</table>\n");
    html
}

/// The decoder of a run: DPT's for depth, the configured one for segmentation.
fn decoder_name(config: &TrainConfig) -> String {
    match &config.model.head {
        HeadConfig::Segmentation(seg) => seg.decoder.name().into(),
        HeadConfig::Depth {} => "dpt".into(),
    }
}

/// The panels of the overlaid curves: the smoothed training loss of every run, then the
/// validation AbsRel (if a depth run is among them) and mIoU (if a segmentation run is), each
/// with one curve per run in the run's own colour and a legend naming the runs.
fn curve_figure(runs: &[RunSummary]) -> Vec<CurvePanel> {
    let x_range = runs
        .iter()
        .filter_map(|r| run_range(&r.losses))
        .reduce(|(a0, a1), (b0, b1)| (a0.min(b0), a1.max(b1)));
    let per_run = |pick: &dyn Fn(&RunSummary) -> Vec<(f64, f64)>| -> Vec<Curve> {
        runs.iter()
            .enumerate()
            .map(|(i, r)| Curve {
                label: r.label.clone(),
                style: CurveStyle::Main(i),
                points: pick(r),
            })
            .filter(|c| !c.points.is_empty())
            .collect()
    };
    let panel = |title: &str, y_desc: &str, log_y, curves| CurvePanel {
        title: title.into(),
        x_desc: "optimiser step".into(),
        y_desc: y_desc.into(),
        log_y,
        x_range,
        curves,
    };
    let mut panels = vec![panel(
        &format!("training loss ({LOSS_SMOOTHING}-step moving average)"),
        "loss",
        true,
        per_run(&|r| moving_average(&r.losses)),
    )];
    let abs_rel = per_run(&|r| points(&r.evals.abs_rel));
    if !abs_rel.is_empty() {
        panels.push(panel(
            "validation AbsRel, median-scaled (lower is better)",
            "AbsRel",
            false,
            abs_rel,
        ));
    }
    let miou = per_run(&|r| points(&r.evals.miou));
    if !miou.is_empty() {
        panels.push(panel(
            "validation mIoU (higher is better)",
            "mIoU",
            false,
            miou,
        ));
    }
    panels
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run folder with a config, a loss log, validation lines and a report, as a run leaves
    /// them (segmentation when `miou` is given, else depth).
    fn run_folder(root: &Path, name: &str, miou: Option<f64>) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let preset = if miou.is_some() {
            "segmentation"
        } else {
            "test"
        };
        TrainConfig::preset(preset).unwrap().save(&dir).unwrap();
        let losses: String = (1..=30)
            .map(|s| format!("{{\"step\":{s},\"loss\":{}}}\n", 1.0 / s as f64))
            .collect();
        std::fs::write(dir.join("metrics.jsonl"), losses).unwrap();
        let eval = match miou {
            Some(m) => format!(
                "{{\"step\":15,\"miou\":0.1,\"images\":8}}\n{{\"step\":30,\"miou\":{m},\
                 \"pixel_accuracy\":0.7,\"miou_baseline\":0.05,\"images\":8}}\n"
            ),
            None => "{\"step\":30,\"abs_rel\":0.2,\"delta1\":0.7,\"abs_rel_scale_shift\":0.18,\
                     \"abs_rel_baseline\":0.3,\"images\":4}\n"
                .into(),
        };
        std::fs::write(dir.join("eval.jsonl"), eval).unwrap();
        std::fs::write(
            dir.join("report.md"),
            "# Run x\n\ndepth: 30 steps, standard attention, 64x64 images, seed 0, 12345 \
             parameters.\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn runs_of_both_tasks_share_one_table_with_dashes_for_what_a_run_lacks() {
        let root = tempfile::tempdir().unwrap();
        let depth = run_folder(root.path(), "depth-run", None);
        let seg = run_folder(root.path(), "seg-run", Some(0.4));
        let other = run_folder(&root.path().join("elsewhere"), "seg-run", Some(0.5));
        let out = root.path().join("comparison");
        let comparison = compare(&[depth, seg, other], &out).unwrap();
        assert_eq!(comparison.spectral_runs, 0, "no run probed");
        let page = std::fs::read_to_string(&comparison.index).unwrap();
        for header in [
            "<th>depth-run</th>",
            "<th>seg-run</th>",
            "<th>seg-run-2</th>",
        ] {
            assert!(page.contains(header), "the table lacks {header}");
        }
        assert!(
            page.contains("<td>0.2000</td><td>—</td><td>—</td>"),
            "{page}"
        );
        // The better mIoU of the two segmentation runs is bold.
        assert!(page.contains("<td>—</td><td>0.4000</td><td><b>0.5000</b></td>"));
        assert!(
            page.contains("<td>30</td><td>30 of 1000</td>"),
            "steps of 1000 planned"
        );
        assert!(page.contains("<td>12345</td>"));
        assert!(page.contains("No spectral probe logged by"));
        let svg = std::fs::read_to_string(out.join(format!("{CURVES_STEM}.svg"))).unwrap();
        for text in ["depth-run", "seg-run-2", "AbsRel", "mIoU", "optimiser step"] {
            assert!(svg.contains(text), "the curves lack {text:?}");
        }
    }

    #[test]
    fn a_missing_folder_or_eval_log_is_one_sentence_naming_the_folder() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("nope");
        let err = compare(std::slice::from_ref(&missing), &root.path().join("out"));
        let message = err.unwrap_err().to_string();
        assert!(
            message.contains("does not exist") && message.contains("nope"),
            "{message}"
        );
        let empty = root.path().join("unvalidated");
        std::fs::create_dir_all(&empty).unwrap();
        let message = compare(&[empty], &root.path().join("out"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("eval.jsonl") && message.contains("unvalidated"),
            "{message}"
        );
        let run = run_folder(root.path(), "a", None);
        let message = compare(std::slice::from_ref(&run), &run)
            .unwrap_err()
            .to_string();
        assert!(message.contains("own page"), "{message}");
        assert!(!run.join("index.html").exists());
    }

    #[test]
    fn the_parameter_count_is_read_from_the_report_summary() {
        assert_eq!(
            stated_parameters("depth: 4 steps, seed 0, 8398652 parameters.\n"),
            Some(8398652)
        );
        assert_eq!(stated_parameters("no count here"), None);
    }
}
