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

/// A plain-text (markdown) table of a record's per-layer means, one row per layer, for the end
/// of a training log and the report page; `-` marks an indicator the layer does not have.
pub fn layer_table(record: &SpectralRecord) -> String {
    let mut out = String::from("| layer |");
    for indicator in Indicator::ALL {
        out.push_str(&format!(" {} |", indicator.name()));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(Indicator::ALL.len()));
    out.push('\n');
    for layer in &record.layers {
        out.push_str(&format!("| {} |", layer.layer));
        for indicator in Indicator::ALL {
            match layer.mean.get(indicator) {
                Some(v) => out.push_str(&format!(" {v:.3} |")),
                None => out.push_str(" - |"),
            }
        }
        out.push('\n');
    }
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
    fn layer_table_has_one_row_per_layer_and_dashes_for_missing_indicators() {
        let record: SpectralRecord = serde_json::from_str(
            r#"{"step":4,"layers":[{"layer":0,"heads":[{"head":0,"kind":"standard","effective_rank":3.5,"angular_alignment":0.25,"selectivity":0.5}],"mean":{"effective_rank":3.5,"angular_alignment":0.25,"selectivity":0.5}}]}"#,
        )
        .unwrap();
        let table = layer_table(&record);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[2],
            "| 0 | - | 3.500 | - | - | 0.250 | 0.500 | - | - |"
        );
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
