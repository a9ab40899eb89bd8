//! What a training run leaves for the spectral report (`docs/spectral.md`, `docs/training.md`): the file
//! names inside `runs/<name>/`, the sigma spectra log ([`SigmaSpectra`], one JSON line per probe
//! in `sigma.jsonl`) and readers for both logs. Writers (the trainer's probe) and readers (the
//! report) share these names so the two cannot drift apart.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SpectralError};
use crate::head::Indicator;
use crate::record::SpectralRecord;

/// The indicator log of a run: one [`SpectralRecord`] per probe.
pub const SPECTRAL_FILE: &str = "spectral.jsonl";
/// The sigma log of an SVDA run: one [`SigmaSpectra`] per probe (absent for standard attention).
pub const SIGMA_FILE: &str = "sigma.jsonl";
/// The folder of attention-overlay PNGs, one per probe (`step_000050.png`).
pub const ATTENTION_DIR: &str = "attention";

/// SVDA's sigma of every layer and head at one step (`layers[l][h][k]`), kept beside the
/// indicators because the report plots the spectra themselves, not only their entropy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigmaSpectra {
    pub step: u64,
    pub layers: Vec<Vec<Vec<f64>>>,
}

impl SigmaSpectra {
    /// |sigma| of one head sorted from largest to smallest: the shape of its spectrum, with the
    /// sign and the (arbitrary) order of the d directions removed.
    pub fn sorted_magnitudes(&self, layer: usize, head: usize) -> Option<Vec<f64>> {
        let mut values: Vec<f64> = self
            .layers
            .get(layer)?
            .get(head)?
            .iter()
            .map(|s| s.abs())
            .collect();
        values.sort_by(|a, b| b.total_cmp(a));
        Some(values)
    }

    /// Per layer, the learned spectrum in four numbers, each the mean over heads: the gain (mean
    /// |sigma|), the largest/smallest |sigma| ratio, the spectral entropy and the Hoyer sparsity
    /// (indicators 1 and 3a). What "did sigma's shape move?" needs, without the d values.
    pub fn summary(&self) -> Result<Vec<SigmaSummary>> {
        self.layers
            .iter()
            .enumerate()
            .map(|(l, heads)| {
                let mut per_head = Vec::with_capacity(heads.len());
                for h in 0..heads.len() {
                    let sorted = self.sorted_magnitudes(l, h).unwrap_or_default();
                    let view = ndarray::ArrayView1::from(&sorted);
                    let (largest, smallest) = (
                        sorted.first().copied().unwrap_or(0.0),
                        sorted.last().copied().unwrap_or(0.0),
                    );
                    per_head.push([
                        sorted.iter().sum::<f64>() / sorted.len().max(1) as f64,
                        if smallest > 0.0 {
                            largest / smallest
                        } else {
                            f64::NAN
                        },
                        crate::sigma::spectral_entropy(view)?,
                        crate::sigma::hoyer_sparsity(view)?,
                    ]);
                }
                let n = per_head.len().max(1) as f64;
                let mean = |k: usize| per_head.iter().map(|v| v[k]).sum::<f64>() / n;
                let ratio = mean(1);
                Ok(SigmaSummary {
                    layer: l + 1,
                    gain: mean(0),
                    max_min_ratio: ratio.is_finite().then_some(ratio),
                    spectral_entropy: mean(2),
                    hoyer_sparsity: mean(3),
                })
            })
            .collect()
    }

    /// Appends the spectra as one line to a JSONL sink (`runs/<name>/sigma.jsonl`).
    pub fn write_jsonl<W: Write>(&self, mut sink: W) -> Result<()> {
        let mut line = serde_json::to_string(self)?;
        line.push('\n');
        sink.write_all(line.as_bytes())?;
        Ok(())
    }

    /// Reads back one line of `sigma.jsonl`.
    pub fn from_json_line(line: &str) -> Result<Self> {
        Ok(serde_json::from_str(line.trim_end())?)
    }
}

/// One layer's learned spectrum at a glance ([`SigmaSpectra::summary`]); `layer` is 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SigmaSummary {
    pub layer: usize,
    /// Mean |sigma| (temperature included): the head's overall logit scale times sqrt(d).
    pub gain: f64,
    /// Largest over smallest |sigma| of a head (1 for a flat spectrum), mean over heads; `None`
    /// when some head has a zero sigma entry (the ratio is unbounded).
    pub max_min_ratio: Option<f64>,
    pub spectral_entropy: f64,
    pub hoyer_sparsity: f64,
}

/// Plain-text (markdown) tables of a record's per-layer means, one row per layer, for the end of
/// a training log and the report page: ours (indicators 1-7), then the SVDA reference code's
/// forms. Every selectivity and the attention distance are followed by their value for uniform
/// attention (column `uniform`); `-` marks an indicator one layer lacks, and an indicator no layer
/// has (sigma's for standard attention) is named under its table instead of filling a column.
pub fn layer_table(record: &SpectralRecord) -> String {
    format!(
        "{}\nPaper forms (the SVDA reference code's definitions):\n\n{}",
        table_of(record, &Indicator::OURS),
        table_of(record, &Indicator::PAPER)
    )
}

fn table_of(record: &SpectralRecord, indicators: &[Indicator]) -> String {
    let has = |value: &dyn Fn(&crate::record::LayerIndicators) -> Option<f64>| {
        record.layers.iter().any(|l| value(l).is_some())
    };
    let (present, absent): (Vec<Indicator>, Vec<Indicator>) =
        indicators.iter().partition(|&&i| has(&|l| l.mean.get(i)));
    let absent: Vec<&str> = absent.iter().map(|i| i.name()).collect();
    let absent = match absent.is_empty() {
        true => String::new(),
        false => format!("\nNot measured for this model: {}.\n", absent.join(", ")),
    };
    if present.is_empty() {
        return absent;
    }
    let has_uniform = |i: Indicator| has(&|l| l.mean.uniform_value(i));
    let mut header = String::from("| layer |");
    let mut rule = String::from("|---|");
    for &indicator in &present {
        header.push_str(&format!(" {} |", indicator.name()));
        rule.push_str("---|");
        if has_uniform(indicator) {
            header.push_str(" uniform |");
            rule.push_str("---|");
        }
    }
    let mut out = format!("{header}\n{rule}\n");
    let cell = |v: Option<f64>| match v {
        Some(v) => format!(" {v:.3} |"),
        None => " - |".to_string(),
    };
    for layer in &record.layers {
        out.push_str(&format!("| {} |", layer.layer));
        for &indicator in &present {
            out.push_str(&cell(layer.mean.get(indicator)));
            if has_uniform(indicator) {
                out.push_str(&cell(layer.mean.uniform_value(indicator)));
            }
        }
        out.push('\n');
    }
    out.push_str(&absent);
    out
}

/// Appends one line (written by `write`) to `run_dir/file`, creating the folder and file, so a
/// resumed run keeps extending the same log.
pub fn append_line(
    run_dir: &Path,
    file: &str,
    write: impl FnOnce(&mut File) -> Result<()>,
) -> Result<PathBuf> {
    let path = run_dir.join(file);
    let io = |source| SpectralError::File {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(run_dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    write(&mut file)?;
    Ok(path)
}

/// Every record of a run's `spectral.jsonl`, in file order; a bad line is an error naming the file
/// and line number.
pub fn read_spectral_log(path: &Path) -> Result<Vec<SpectralRecord>> {
    read_lines(path, SpectralRecord::from_json_line)
}

/// Every line of a run's `sigma.jsonl`, in file order.
pub fn read_sigma_log(path: &Path) -> Result<Vec<SigmaSpectra>> {
    read_lines(path, SigmaSpectra::from_json_line)
}

fn read_lines<V>(path: &Path, parse: impl Fn(&str) -> Result<V>) -> Result<Vec<V>> {
    let file = File::open(path).map_err(|source| SpectralError::File {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| SpectralError::File {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse(&line).map_err(|source| SpectralError::Line {
            path: path.to_path_buf(),
            line: index + 1,
            source: Box::new(source),
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_magnitudes_drop_sign_and_order() {
        let spectra = SigmaSpectra {
            step: 3,
            layers: vec![vec![vec![0.5, -2.0, 1.0]]],
        };
        assert_eq!(spectra.sorted_magnitudes(0, 0), Some(vec![2.0, 1.0, 0.5]));
        assert_eq!(spectra.sorted_magnitudes(0, 1), None);
        assert_eq!(spectra.sorted_magnitudes(1, 0), None);
    }

    #[test]
    fn sigma_summary_reads_gain_ratio_and_flatness_per_layer() {
        let spectra = SigmaSpectra {
            step: 3,
            layers: vec![
                vec![vec![2.0, 2.0, 2.0, 2.0], vec![4.0, 4.0, 4.0, 4.0]],
                vec![vec![1.0, 2.0, 4.0, 8.0]],
            ],
        };
        let s = spectra.summary().unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].layer, s[0].gain, s[0].max_min_ratio),
            (1, 3.0, Some(1.0))
        );
        assert!((s[0].spectral_entropy - 1.0).abs() < 1e-12 && s[0].hoyer_sparsity < 1e-12);
        assert_eq!((s[1].gain, s[1].max_min_ratio), (3.75, Some(8.0)));
        assert!(s[1].spectral_entropy < 1.0 && s[1].hoyer_sparsity > 0.0);
        let switched_off = SigmaSpectra {
            step: 3,
            layers: vec![vec![vec![0.0, 2.0, 1.0]]],
        };
        assert_eq!(switched_off.summary().unwrap()[0].max_min_ratio, None);
    }

    #[test]
    fn layer_table_has_one_row_per_layer_and_names_the_indicators_no_layer_has() {
        let record: SpectralRecord = serde_json::from_str(
            r#"{"step":4,"layers":[{"layer":0,"heads":[{"head":0,"kind":"standard","effective_rank":3.5,"angular_alignment":0.25,"selectivity":0.5}],"mean":{"effective_rank":3.5,"angular_alignment":0.25,"selectivity":0.5}},{"layer":1,"heads":[{"head":0,"kind":"standard","effective_rank":2.5,"angular_alignment":0.125,"selectivity":0.75,"robustness_input":0.875}],"mean":{"effective_rank":2.5,"angular_alignment":0.125,"selectivity":0.75,"robustness_input":0.875}}]}"#,
        )
        .unwrap();
        let table = layer_table(&record);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| layer | effective_rank | angular_alignment | selectivity | uniform | robustness_input |"
        );
        // Ours, with selectivity's uniform value 0 beside it; a dash where one layer lacks a value.
        assert_eq!(lines[2], "| 0 | 3.500 | 0.250 | 0.500 | 0.000 | - |");
        assert_eq!(lines[3], "| 1 | 2.500 | 0.125 | 0.750 | 0.000 | 0.875 |");
        // Sigma's indicators and the distance (no grid) are named, not columns of dashes.
        assert_eq!(
            lines[5],
            "Not measured for this model: spectral_entropy, hoyer_sparsity, small_sigma_share, robustness_sigma, attention_distance."
        );
        // The paper forms: a record from before they existed has none of them.
        let paper = table.split("Paper forms").nth(1).unwrap();
        assert!(!paper.contains('|'), "{paper}");
        assert!(paper.contains("Not measured for this model: paper_spectral_entropy"));
    }

    #[test]
    fn appended_logs_read_back_in_order() {
        let dir =
            std::env::temp_dir().join(format!("glassbox-spectral-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for step in [0, 10] {
            let spectra = SigmaSpectra {
                step,
                layers: vec![vec![vec![1.0, 0.25]]],
            };
            append_line(&dir, SIGMA_FILE, |f| spectra.write_jsonl(f)).unwrap();
        }
        let back = read_sigma_log(&dir.join(SIGMA_FILE)).unwrap();
        assert_eq!(back.iter().map(|s| s.step).collect::<Vec<_>>(), vec![0, 10]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_broken_line_is_named_by_file_and_number() {
        let dir =
            std::env::temp_dir().join(format!("glassbox-spectral-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(SPECTRAL_FILE);
        std::fs::write(&path, "{\"step\":0,\"layers\":[]}\nnot json\n").unwrap();
        let err = read_spectral_log(&path).unwrap_err();
        assert!(matches!(err, SpectralError::Line { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("spectral.jsonl"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
