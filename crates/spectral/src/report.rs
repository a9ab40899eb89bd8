//! The spectral report of one or more runs (`docs/spectral.md`, `docs/training.md`): reads each run
//! folder's `spectral.jsonl`, `sigma.jsonl` and `attention/` overlays and writes all figures of
//! [`crate::plot`] plus one `index.html` that shows them with a per-layer table of the last probe.
//!
//! Output layout (`out/`): `depth_profiles.{svg,png}` (all runs side by side), and per run
//! `<label>/indicators_over_steps.{svg,png}`, `<label>/sigma_spectra.{svg,png}` (SVDA runs) and
//! `<label>/attention.png` (a copy of the run's last overlay), then `index.html`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Result, SpectralError};
use crate::plot;
use crate::record::SpectralRecord;
use crate::run::{
    ATTENTION_DIR, SIGMA_FILE, SPECTRAL_FILE, SigmaSpectra, layer_table, read_sigma_log,
    read_spectral_log,
};

/// What one run folder holds for the report.
#[derive(Debug, Clone)]
pub struct RunLogs {
    /// Name shown in figures and used as the run's output folder (the run folder's name).
    pub label: String,
    pub dir: PathBuf,
    /// The records of `spectral.jsonl`, sorted by step.
    pub records: Vec<SpectralRecord>,
    /// The spectra of `sigma.jsonl` (empty for standard attention), sorted by step.
    pub sigma: Vec<SigmaSpectra>,
    /// The overlay PNG of the last probe, if the run wrote any.
    pub overlays: Option<PathBuf>,
}

impl RunLogs {
    /// Reads a run folder; it must hold a `spectral.jsonl` with at least one record.
    pub fn read(dir: &Path) -> Result<Self> {
        let mut records = read_spectral_log(&dir.join(SPECTRAL_FILE))?;
        if records.is_empty() {
            return Err(SpectralError::NothingToPlot {
                what: dir.join(SPECTRAL_FILE).display().to_string(),
                expected: "at least one record (is spectral_every 0?)".into(),
            });
        }
        records.sort_by_key(|r| r.step);
        let sigma_path = dir.join(SIGMA_FILE);
        let mut sigma = if sigma_path.exists() {
            read_sigma_log(&sigma_path)?
        } else {
            Vec::new()
        };
        sigma.sort_by_key(|s| s.step);
        let overlays = last_png(&dir.join(ATTENTION_DIR));
        let label = dir
            .file_name()
            .map_or_else(|| "run".to_string(), |n| n.to_string_lossy().into_owned());
        Ok(Self {
            label,
            dir: dir.to_path_buf(),
            records,
            sigma,
            overlays,
        })
    }

    /// The last probe of the run.
    pub fn last(&self) -> &SpectralRecord {
        self.records
            .last()
            .expect("RunLogs::read keeps at least one record")
    }
}

/// The files of a rendered report.
#[derive(Debug, Clone)]
pub struct Report {
    pub index: PathBuf,
    pub figures: Vec<PathBuf>,
}

/// Writes every figure of the runs in `run_dirs` and an `index.html` showing them into `out`.
/// Runs with the same folder name get a numeric suffix so their outputs do not collide.
pub fn render(run_dirs: &[PathBuf], out: &Path) -> Result<Report> {
    if run_dirs.is_empty() {
        return Err(SpectralError::NothingToPlot {
            what: "the report".into(),
            expected: "at least one run folder".into(),
        });
    }
    let mut runs = run_dirs
        .iter()
        .map(|d| RunLogs::read(d))
        .collect::<Result<Vec<_>>>()?;
    unique_labels(&mut runs);
    std::fs::create_dir_all(out).map_err(|source| SpectralError::File {
        path: out.to_path_buf(),
        source,
    })?;

    let (html, figures) = sections(&runs, out)?;

    let index = out.join("index.html");
    let page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>glassbox spectral report</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}img{{border:1px solid #ddd}}</style>\
         </head><body>\n<h1>Spectral indicators (`docs/spectral.md`)</h1>\n\
         <p>Definitions and how to read them: <code>docs/spectral.md</code>.</p>\n{html}</body></html>\n"
    );
    std::fs::write(&index, page).map_err(|source| SpectralError::File {
        path: index.clone(),
        source,
    })?;
    Ok(Report { index, figures })
}

/// The body of the spectral report of `runs` (their labels already unique) with its figures drawn
/// into `out` and linked relative to it: the depth profiles of all runs side by side, then per run
/// its [`run_section`] and per-layer table. Shared by [`render`] and glassbox-trainer's comparison
/// page, which shows it under its own tables and curves, so the two never drift apart.
pub fn sections(runs: &[RunLogs], out: &Path) -> Result<(String, Vec<PathBuf>)> {
    let mut figures = Vec::new();
    let mut html = String::new();
    let profiles: Vec<(String, &SpectralRecord)> =
        runs.iter().map(|r| (r.label.clone(), r.last())).collect();
    figures.extend(plot::depth_profiles(
        &profiles,
        &out.join("depth_profiles"),
    )?);
    html.push_str("<h2>Depth profiles (last probe of each run)</h2>\n");
    html.push_str(&figure_html("depth_profiles"));

    for run in runs {
        let dir = out.join(&run.label);
        let label = escape(&run.label);
        let _ = writeln!(
            html,
            "<h2>{label}</h2>\n<p>{} probes, steps {} to {}; source <code>{}</code></p>",
            run.records.len(),
            run.records[0].step,
            run.last().step,
            escape(&run.dir.display().to_string())
        );
        let (section, drawn) = run_section(run, &dir, &run.label)?;
        html.push_str(&section);
        figures.extend(drawn);
        let _ = writeln!(
            html,
            "<h3>Per layer, last probe (step {})</h3>\n<pre>{}</pre>",
            run.last().step,
            escape(&layer_table(run.last()))
        );
    }

    Ok((html, figures))
}

/// The figures of one run, drawn into `dir`, as HTML whose links start with `href` (the path
/// of `dir` relative to the page): the indicators over training, the sigma spectra (SVDA runs)
/// and a copy of the last attention overlay. Shared by [`render`] and the page every training run
/// writes, so both show a run the same way.
pub fn run_section(run: &RunLogs, dir: &Path, href: &str) -> Result<(String, Vec<PathBuf>)> {
    let mut html = String::new();
    let mut figures = Vec::new();
    html.push_str("<h3>Indicators over training (mean over heads, one line per layer)</h3>\n");
    figures.extend(plot::indicators_over_steps(
        &run.label,
        &run.records,
        &dir.join("indicators_over_steps"),
    )?);
    html.push_str(&figure_html(&format!("{href}/indicators_over_steps")));
    if let Some(spectra) = run.sigma.last() {
        html.push_str("<h3>sigma spectra (sorted |sigma| per head, last probe)</h3>\n");
        figures.extend(plot::sigma_spectra(
            &run.label,
            spectra,
            &dir.join("sigma_spectra"),
        )?);
        html.push_str(&figure_html(&format!("{href}/sigma_spectra")));
    }
    if let Some(src) = &run.overlays {
        let dst = dir.join("attention.png");
        std::fs::copy(src, &dst).map_err(|source| SpectralError::File {
            path: src.clone(),
            source,
        })?;
        let _ = writeln!(
            html,
            "<h3>Attention of three query patches (white frame), mean over heads; input \
             on the left, then layers 1 to L ({}; click for full size)</h3>\n\
             <a href=\"{href}/attention.png\"><img src=\"{href}/attention.png\" \
             style=\"max-width:100%\"></a>",
            escape(&src.file_name().unwrap_or_default().to_string_lossy()),
            href = escape(href)
        );
        figures.push(dst);
    }
    Ok((html, figures))
}

/// A figure of [`crate::plot`] (`<stem>.png` shown inline, linking to `<stem>.svg`) as HTML,
/// `stem` relative to the page.
pub fn figure_html(stem: &str) -> String {
    let stem = escape(stem);
    format!(
        "<a href=\"{stem}.svg\"><img src=\"{stem}.png\" alt=\"{stem}\" style=\"max-width:100%\"></a>\n"
    )
}

/// The `step_NNNNNN.png` in `dir` whose name sorts last: the last probe's overlay (other
/// figures of the folder, such as the over-training strip, are not overlays of one step).
fn last_png(dir: &Path) -> Option<PathBuf> {
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("step_"))
        })
        .collect();
    pngs.sort();
    pngs.pop()
}

fn unique_labels(runs: &mut [RunLogs]) {
    let mut labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    unique_names(&mut labels);
    for (run, label) in runs.iter_mut().zip(labels) {
        run.label = label;
    }
}

/// Makes every name unique by giving a repeated one a numeric suffix (`seed0`, `seed0-2`, ...):
/// run folders of different parents may share a name, and the names become output folders and
/// table headers. Public so that the comparison page names runs as this report does.
pub fn unique_names(names: &mut [String]) {
    for i in 1..names.len() {
        let taken = |name: &str, names: &[String]| names[..i].iter().any(|n| n == name);
        if taken(&names[i], names) {
            let base = names[i].clone();
            let mut n = 2;
            while taken(&format!("{base}-{n}"), names) {
                n += 1;
            }
            names[i] = format!("{base}-{n}");
        }
    }
}

/// Text made safe for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
