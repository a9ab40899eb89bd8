//! What a run tells while it trains: the JSONL logs of the run folder (`metrics.jsonl`,
//! `eval.jsonl`, the spectral logs) and the progress display.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::fs::{FileError, file_error, write_atomic};

/// Keeps the lines of a JSONL log whose `step` is at most `step` (used on resume, so the log
/// continues without the steps after the checkpoint). The rewrite is atomic.
pub fn truncate_log(path: &Path, step: usize) -> Result<(), FileError> {
    if !path.is_file() {
        return Ok(());
    }
    let file = File::open(path).map_err(file_error("read", path))?;
    let mut text = String::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(file_error("read", path))?;
        let keep = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
            .is_some_and(|s| s as usize <= step);
        if keep {
            text.push_str(&line);
            text.push('\n');
        }
    }
    write_atomic(path, text.as_bytes())
}

/// Appends one JSON line, in one write so that a kill leaves the line whole or absent.
pub fn append(path: &Path, value: &serde_json::Value) -> Result<(), FileError> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(file_error("open", path))?;
    file.write_all(format!("{value}\n").as_bytes())
        .map_err(file_error("append to", path))
}

/// Reads the (step, loss) pairs of a run's `metrics.jsonl`.
pub fn read_losses(path: &Path) -> Vec<(usize, f64)> {
    read_series(path, "loss")
}

/// Reads the (step, value) pairs of one numeric field of a JSONL log (`metrics.jsonl`,
/// `eval.jsonl`); lines without it are skipped, a missing file gives nothing.
pub fn read_series(path: &Path, key: &str) -> Vec<(usize, f64)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_u64()? as usize, v.get(key)?.as_f64()?)))
        .collect()
}

/// Progress display: an indicatif bar on a terminal, plain lines otherwise, nothing when quiet.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    start: usize,
    started: std::time::Instant,
}

impl Progress {
    /// A display for steps `start..total`.
    pub fn new(quiet: bool, start: usize, total: usize) -> Self {
        if quiet {
            return Self {
                bar: None,
                lines: false,
                start,
                started: std::time::Instant::now(),
            };
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .expect("a valid template"),
            );
            bar.set_position(start as u64);
            Self {
                bar: Some(bar),
                lines: false,
                start,
                started: std::time::Instant::now(),
            }
        } else {
            Self {
                bar: None,
                lines: true,
                start,
                started: std::time::Instant::now(),
            }
        }
    }

    /// Moves the bar to `step` (or prints a line with the estimated time left every 5% without a
    /// terminal).
    pub fn update(&self, step: usize, total: usize, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            bar.set_message(message.to_string());
        } else if self.lines && (step.is_multiple_of((total / 20).max(1)) || step == total) {
            let done = step.saturating_sub(self.start).max(1) as f64;
            let left =
                self.started.elapsed().as_secs_f64() / done * total.saturating_sub(step) as f64;
            eprintln!("step {step}/{total} {message}  ETA {}", clock(left));
        }
    }

    /// A message above the bar.
    pub fn log(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None if self.lines => eprintln!("{message}"),
            None => {}
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Seconds as `1h02m03s`, `2m03s` or `3s`.
fn clock(seconds: f64) -> String {
    let s = seconds.round().max(0.0) as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, min, sec) => format!("{h}h{min:02}m{sec:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clock_reads_hours_minutes_and_seconds() {
        assert_eq!(clock(3.4), "3s");
        assert_eq!(clock(123.0), "2m03s");
        assert_eq!(clock(3723.0), "1h02m03s");
    }

    #[test]
    fn truncation_keeps_the_steps_up_to_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        for step in 1..=5 {
            append(&path, &json!({"step": step, "loss": step as f64})).unwrap();
        }
        truncate_log(&path, 3).unwrap();
        let steps: Vec<usize> = read_losses(&path).into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, [1, 2, 3]);
    }
}
