//! The one page every run leaves: `runs/<name>/index.html` (`docs/training.md`). It shows the
//! run's `report.md` (summary, validation table, spectral table), every figure of the run folder
//! (training curves, contact sheet, the spectral indicators over steps and by depth, sigma
//! spectra, the last attention overlay and the attention of one layer over training) and the
//! resolved `config.toml`. Self-contained: images are
//! files beside it, linked by relative paths, and nothing is fetched from the network.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use glassbox_spectral::report::{RunLogs, escape, figure_html, run_section};
use glassbox_spectral::{ATTENTION_DIR, SPECTRAL_FILE, SpectralError, plot};

use crate::fs::{FileError, write_atomic};
use crate::probe::{OVER_TRAINING_PNG, STRIP_STEPS, read_strip_log};

/// Where a run page's own figures go, inside the run folder.
pub const FIGURES_DIR: &str = "figures";

/// What can stop the page: a figure that cannot be drawn or a file that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("run page figures: {0}")]
    Figure(#[from] SpectralError),
    #[error(transparent)]
    File(#[from] FileError),
}

/// The heading of report.md's per-layer spectral tables.
pub(crate) const SPECTRAL_TABLES: &str = "## Spectral indicators at step";

/// Writes `<dir>/index.html` (and its figures under `<dir>/figures/`) from what the run folder
/// holds; returns the page's path. Sections whose files are missing are left out.
pub fn write_run_page(dir: &Path) -> Result<PathBuf, PageError> {
    let mut body = String::new();
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap_or_default();
    // Scores and pictures first; the per-layer spectral tables open the spectral section.
    let (summary, spectral_tables) = match report.find(SPECTRAL_TABLES) {
        Some(at) => report.split_at(at),
        None => (report.as_str(), ""),
    };
    body.push_str(&markdown_html(summary));

    body.push_str("<h2>Training curves</h2>\n");
    if dir.join("loss_curve.png").is_file() {
        body.push_str(&figure_html("loss_curve"));
    }
    if dir.join("contact_sheet.png").is_file() {
        // The run's own config says what it predicts.
        let segmentation = crate::config::TrainConfig::from_run_file(&dir.join("config.toml"))
            .is_ok_and(|c| c.task() == crate::config::Task::Segmentation);
        let columns = if segmentation {
            "Columns: input | prediction | ground truth, coloured by class; the legend names \
             every class shown (black = ignored)."
        } else {
            "Columns: input | prediction (median-scaled) | ground truth | relative error \
             |pred − gt| / gt from 0 (blue) to 0.5 (red); depth colours span each row's \
             ground-truth range (near red, far blue), shown in metres by the bar beside the row."
        };
        let _ = write!(
            body,
            "<h2>Predictions on validation images</h2>\n<p>{columns}</p>\n\
             <a href=\"contact_sheet.png\"><img src=\"contact_sheet.png\" \
             alt=\"contact sheet\"></a>\n"
        );
    }
    if dir
        .join(format!("{}.png", crate::whitebox::DIAGNOSTICS_STEM))
        .is_file()
    {
        body.push_str(
            "<h2>DEPICT, read as a white box</h2>\n<p>Over training: how far each layer's \
             projection P is from orthonormal rows, how far apart the class embeddings are, and \
             the coding-rate ratio R(PZ)/R(Z) of each layer (definitions: \
             <code>docs/architecture.md</code>, DEPICT).</p>\n",
        );
        body.push_str(&figure_html(crate::whitebox::DIAGNOSTICS_STEM));
        if dir
            .join(format!("{}.png", crate::whitebox::GRAMS_STEM))
            .is_file()
        {
            body.push_str(
                "<p>The final Gram matrices: P Pᵀ per layer and the class cosines Q Qᵀ.</p>\n",
            );
            body.push_str(&figure_html(crate::whitebox::GRAMS_STEM));
        }
    }
    if dir
        .join(format!("{}.png", crate::report::SELECTION_STEM))
        .is_file()
    {
        body.push_str(
            "<h2>Sparse token updates</h2>\n<p>Which share of attention the kept tokens cover \
             over training, and how far the scorer's target agrees with a dense pass's \
             (definitions: <code>docs/sparse.md</code>).</p>\n",
        );
        body.push_str(&figure_html(crate::report::SELECTION_STEM));
    }
    body.push_str(&markdown_html(spectral_tables));
    body.push_str(&spectral_section(dir)?);
    body.push_str(&strip_section(dir));
    if let Ok(config) = std::fs::read_to_string(dir.join("config.toml")) {
        let _ = write!(
            body,
            "<h2>Configuration</h2>\n<p><code>config.toml</code>: <code>glassbox train --config \
             config.toml</code> reruns it.</p>\n<pre>{}</pre>\n",
            escape(&config)
        );
    }
    let title = dir
        .file_name()
        .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
    let page = html_page(&format!("glassbox run {title}"), &body);
    let index = dir.join("index.html");
    write_atomic(&index, page.as_bytes())?;
    Ok(index)
}

/// A whole HTML document around `body`, styled inline (no stylesheet to fetch): the run page and
/// the comparison page look alike.
pub fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 1em}}\
         img{{max-width:100%;border:1px solid #ddd}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}\
         pre{{background:#f6f6f6;padding:8px;overflow-x:auto}}.wide{{overflow-x:auto}}</style></head><body>\n{body}\
         </body></html>\n",
        escape(title)
    )
}

/// The spectral figures of the run, drawn into `figures/`: its depth profile, then the per-run
/// section of the spectral report (`glassbox_spectral::report::run_section`). Empty when the run
/// logged no probe.
fn spectral_section(dir: &Path) -> Result<String, PageError> {
    let Some(run) = spectral_logs(dir)? else {
        return Ok(String::new());
    };
    let figures = dir.join(FIGURES_DIR);
    let last = run.last();
    let mut html = format!(
        "<h2>Attention, read through the spectral indicators</h2>\n<p>{} probes, steps {} to {}. \
         Definitions: <code>docs/spectral.md</code>. Grey lines: the value for perfectly uniform \
         attention.</p>\n<h3>By depth, last probe (step {})</h3>\n",
        run.records.len(),
        run.records[0].step,
        last.step,
        last.step
    );
    plot::depth_profiles(
        &[(run.label.clone(), last)],
        &figures.join("depth_profiles"),
    )?;
    html.push_str(&figure_html(&format!("{FIGURES_DIR}/depth_profiles")));
    html.push_str(&run_section(&run, &figures, FIGURES_DIR)?.0);
    Ok(html)
}

/// The spectral logs of a run folder, or `None` when it probed nothing (no `spectral.jsonl`, or
/// one without records: `spectral_every = 0`), so that pages of runs without probes still show
/// everything else; a log that exists but cannot be read stays an error.
pub fn spectral_logs(dir: &Path) -> Result<Option<RunLogs>, SpectralError> {
    if !dir.join(SPECTRAL_FILE).is_file() {
        return Ok(None);
    }
    match RunLogs::read(dir) {
        Ok(run) => Ok(Some(run)),
        Err(SpectralError::NothingToPlot { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The over-training strip (`attention/over_training.png`), under the attention overlay of the
/// spectral section; nothing when this run logged no strip column (a figure left by an earlier
/// run in the same folder is not shown: a fresh run removes the log, not the picture).
fn strip_section(dir: &Path) -> String {
    let png = Path::new(ATTENTION_DIR).join(OVER_TRAINING_PNG);
    let mut columns = read_strip_log(dir);
    let Some(layer) = columns.last().map(|c| c.layer) else {
        return String::new();
    };
    // The strip draws the current layer's columns only (a resumed run may have changed layer).
    columns.retain(|c| c.layer == layer);
    let last = columns.last().expect("the last column is of its own layer");
    if !dir.join(&png).is_file() {
        return String::new();
    }
    format!(
        "<h3>Attention over training, layer {} (mean over heads)</h3>\n<p>The {} query patches \
         of the overlay above (white frame, first column), then one column per probe step ({} \
         probes, steps {} to {}; at most {STRIP_STEPS} shown, evenly spread; click for full \
         size).</p>\n<a href=\"{png}\"><img src=\"{png}\" alt=\"attention over training\"></a>\n",
        last.layer,
        last.queries.len(),
        columns.len(),
        columns[0].step,
        last.step,
        png = escape(&png.to_string_lossy())
    )
}

/// The markdown our reports write, as HTML: `#`/`##` headings, pipe tables (the row after the
/// header is the rule), `code` spans and paragraphs. Not a general markdown renderer.
pub fn markdown_html(markdown: &str) -> String {
    let mut html = String::new();
    let mut table: Vec<&str> = Vec::new();
    let mut paragraph: Vec<&str> = Vec::new();
    let flush_paragraph = |html: &mut String, paragraph: &mut Vec<&str>| {
        if !paragraph.is_empty() {
            let _ = writeln!(html, "<p>{}</p>", inline(&paragraph.join(" ")));
            paragraph.clear();
        }
    };
    let flush_table = |html: &mut String, table: &mut Vec<&str>| {
        if table.is_empty() {
            return;
        }
        html.push_str("<div class=\"wide\"><table>\n");
        for (i, row) in table.iter().enumerate() {
            if i == 1 && row.contains("---") {
                continue;
            }
            let tag = if i == 0 { "th" } else { "td" };
            let cells: Vec<&str> = row.trim().trim_matches('|').split('|').collect();
            html.push_str("<tr>");
            for cell in cells {
                let _ = write!(html, "<{tag}>{}</{tag}>", inline(cell.trim()));
            }
            html.push_str("</tr>\n");
        }
        html.push_str("</table></div>\n");
        table.clear();
    };
    for line in markdown.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('|') {
            flush_paragraph(&mut html, &mut paragraph);
            table.push(trimmed);
            continue;
        }
        flush_table(&mut html, &mut table);
        if let Some(title) = trimmed.strip_prefix("## ") {
            flush_paragraph(&mut html, &mut paragraph);
            let _ = writeln!(html, "<h2>{}</h2>", inline(title));
        } else if let Some(title) = trimmed.strip_prefix("# ") {
            flush_paragraph(&mut html, &mut paragraph);
            let _ = writeln!(html, "<h1>{}</h1>", inline(title));
        } else if trimmed.is_empty() {
            flush_paragraph(&mut html, &mut paragraph);
        } else {
            paragraph.push(trimmed);
        }
    }
    flush_table(&mut html, &mut table);
    flush_paragraph(&mut html, &mut paragraph);
    html
}

/// Escapes text and turns `code` spans into `<code>`.
fn inline(text: &str) -> String {
    escape(text)
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_markdown_becomes_headings_tables_and_paragraphs() {
        let md = "# Run x\n\nSome `code` & text\nthat wraps.\n\n## Validation\n\n| a | b |\n| --- | --- |\n| 1 | <2> |\n\nAfter.\n";
        let html = markdown_html(md);
        assert!(html.contains("<h1>Run x</h1>"), "{html}");
        assert!(
            html.contains("<p>Some <code>code</code> &amp; text that wraps.</p>"),
            "{html}"
        );
        assert!(html.contains("<h2>Validation</h2>"), "{html}");
        assert!(html.contains("<tr><th>a</th><th>b</th></tr>"), "{html}");
        assert!(
            html.contains("<tr><td>1</td><td>&lt;2&gt;</td></tr>"),
            "{html}"
        );
        assert!(!html.contains("---"), "{html}");
        assert!(html.contains("<p>After.</p>"), "{html}");
    }
}
