//! Ablation grids (`docs/training.md`): a TOML grid of attention kind x readout x hooks x seeds,
//! run one training run after another into `<out>/<grid name>/runs/<run>/`, then summarised as
//! `results.csv` (one row per variant, mean and std over seeds), `runs.csv` (every run with its
//! final spectral indicators), `results.md` and figures (one bar chart per factor, indicator depth
//! profiles per variant).
//!
//! Resumability: a run with a `result.json` and the same configuration is skipped; a run with a
//! checkpoint resumes from it; a run whose saved configuration differs is refused rather than
//! silently mixed into the table. Every file is written atomically, so an interruption (Ctrl-C
//! through [`AblateOptions::interrupt`], or a crash) leaves finished runs, checkpoints and tables
//! consistent.
//!
//! - [`grid`]: the grid schema (TOML) and its plan of runs;
//! - [`runner`]: running the plan, skipping and resuming runs;
//! - [`stats`]: per-run results and their mean and spread over seeds and factors;
//! - [`tables`]: the CSV and markdown tables and the figures.

mod grid;
mod runner;
mod stats;
mod tables;

use std::path::PathBuf;

pub use grid::{GRID_PRESETS, Grid, GridDataset, PlannedRun, Variant};
pub use runner::{AblateOptions, AblationSummary, RESULT_FILE, run_grid};
pub use stats::{Factor, GroupStats, RunResult, Stat, aggregate_factor, aggregate_variants};
pub use tables::{results_csv, runs_csv, write_tables};

use crate::checkpoint::CheckpointError;
use crate::config::ConfigError;
use crate::fs::FileError;
use crate::train::TrainError;

/// What can go wrong while running or summarising a grid.
#[derive(Debug, thiserror::Error)]
pub enum AblateError {
    #[error("cannot read grid {path}: {message}")]
    Grid { path: PathBuf, message: String },
    #[error("grid {grid}: {message}")]
    Invalid { grid: String, message: String },
    #[error(
        "{dir} was trained with a different configuration ({difference}); delete that folder to \
         retrain it, or give the grid another name"
    )]
    Changed { dir: PathBuf, difference: String },
    #[error(transparent)]
    File(#[from] FileError),
    #[error("run {run}: {source}")]
    Train {
        run: String,
        #[source]
        source: Box<TrainError>,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("figure: {0}")]
    Plot(#[from] glassbox_spectral::SpectralError),
}

#[cfg(test)]
mod tests {
    use super::grid::{attention_name, readout_name};
    use super::*;
    use glassbox_attention::AttentionKind;
    use glassbox_decoder::Readout;
    use glassbox_spectral::{Indicator, Indicators};
    use std::path::Path;

    fn result(attention: AttentionKind, readout: Readout, seed: u64, abs_rel: f64) -> RunResult {
        RunResult {
            run: format!(
                "{}-{}-s{seed}",
                attention_name(attention),
                readout_name(readout)
            ),
            variant: Variant {
                attention,
                readout,
                hooks: vec![3, 6, 9, 12],
            },
            seed,
            steps: 10,
            abs_rel,
            delta1: 1.0 - abs_rel,
            rmse: 2.0 * abs_rel,
            train_seconds: 100.0 + seed as f64,
            parameters: 1000,
            indicators: Some(Indicators {
                selectivity: abs_rel / 10.0,
                ..Indicators::default()
            }),
            selectivity_by_layer: (0..8).map(|l| abs_rel / (1.0 + l as f64)).collect(),
            sigma: Vec::new(),
        }
    }

    #[test]
    fn stat_is_the_mean_and_the_sample_standard_deviation() {
        let s = Stat::of(&[0.1, 0.2, 0.3]).unwrap();
        assert!((s.mean - 0.2).abs() < 1e-12);
        assert!((s.std - 0.1).abs() < 1e-12, "{}", s.std);
        assert_eq!(
            Stat::of(&[4.0]).unwrap(),
            Stat {
                mean: 4.0,
                std: 0.0
            }
        );
        assert_eq!(Stat::of(&[]), None);
    }

    #[test]
    fn variants_average_over_seeds_and_factors_pool_the_other_factors() {
        use AttentionKind::{Standard, Svda};
        use Readout::{Add, Project};
        let results = vec![
            result(Standard, Project, 0, 0.20),
            result(Standard, Project, 1, 0.30),
            result(Svda, Project, 0, 0.10),
            result(Svda, Project, 1, 0.20),
            result(Svda, Add, 0, 0.40),
            result(Svda, Add, 1, 0.60),
        ];
        let variants = aggregate_variants(&results);
        assert_eq!(variants.len(), 3);
        let (v, s) = &variants[0];
        assert_eq!(v.label(), "standard / project / 3,6,9,12");
        assert_eq!(s.runs, 2);
        // 0.20 and 0.30: mean 0.25, sample std sqrt(2 * 0.05^2 / 1) = 0.070711.
        assert!((s.abs_rel.mean - 0.25).abs() < 1e-12);
        assert!((s.abs_rel.std - 0.070_710_678).abs() < 1e-8);
        assert!((s.delta1.mean - 0.75).abs() < 1e-12);
        assert!((s.rmse.std - 0.141_421_356).abs() < 1e-8);
        assert!((s.train_seconds.mean - 100.5).abs() < 1e-12);
        assert!((s.indicator(Indicator::Selectivity).unwrap().mean - 0.025).abs() < 1e-12);
        assert!(s.indicator(Indicator::SpectralEntropy).is_none());
        let (_, add) = &variants[2];
        assert!((add.abs_rel.mean - 0.5).abs() < 1e-12);
        assert!((add.abs_rel.std - 0.141_421_356).abs() < 1e-8);

        // SVDA pools project and add: 0.1, 0.2, 0.4, 0.6 -> mean 0.325,
        // std sqrt((0.050625 + 0.015625 + 0.005625 + 0.075625) / 3) = 0.221736.
        let attention = aggregate_factor(&results, Factor::Attention);
        assert_eq!(attention[0].0, "standard");
        assert_eq!(attention[1].0, "svda");
        assert_eq!(attention[1].1.runs, 4);
        assert!((attention[1].1.abs_rel.mean - 0.325).abs() < 1e-12);
        assert!((attention[1].1.abs_rel.std - 0.221_735_578).abs() < 1e-8);
        let readout = aggregate_factor(&results, Factor::Readout);
        assert_eq!(
            readout
                .iter()
                .map(|(l, s)| (l.as_str(), s.runs))
                .collect::<Vec<_>>(),
            vec![("project", 4), ("add", 2)]
        );
        assert_eq!(aggregate_factor(&results, Factor::Hooks).len(), 1);
    }

    #[test]
    fn selectivity_quarters_average_each_quarter_of_the_depth() {
        let r = result(AttentionKind::Standard, Readout::Ignore, 0, 0.24);
        // 8 layers: 0.24 / (1 + l); quarters are layers {1,2}, {3,4}, {5,6}, {7,8}.
        let q = r.selectivity_quarters().unwrap();
        let expect = |a: f64, b: f64| 0.24 * (1.0 / a + 1.0 / b) / 2.0;
        for (got, want) in q.iter().zip([
            expect(1., 2.),
            expect(3., 4.),
            expect(5., 6.),
            expect(7., 8.),
        ]) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        let short = RunResult {
            selectivity_by_layer: vec![0.1, 0.2, 0.3],
            ..r
        };
        assert!(short.selectivity_quarters().is_none());
    }

    #[test]
    fn csv_tables_hold_one_row_per_variant_and_per_run() {
        use AttentionKind::Svda;
        let results = vec![
            result(Svda, Readout::Ignore, 0, 0.25),
            result(Svda, Readout::Ignore, 1, 0.35),
        ];
        let variants = results_csv(&results);
        let lines: Vec<&str> = variants.lines().collect();
        assert_eq!(lines.len(), 2);
        let header: Vec<&str> = lines[0].split(',').collect();
        let row: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(header.len(), row.len());
        let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!(col("hooks"), "3 6 9 12");
        assert_eq!(col("seeds"), "2");
        assert_eq!(col("abs_rel_mean"), "0.300000");
        assert_eq!(col("abs_rel_std"), "0.070711");
        assert_eq!(col("selectivity_mean"), "0.030000");
        assert_eq!(col("spectral_entropy_mean"), "");
        let runs = runs_csv(&results);
        assert_eq!(runs.lines().count(), 3);
        assert!(
            runs.lines()
                .nth(2)
                .unwrap()
                .starts_with("svda-ignore-s1,svda,ignore,3 6 9 12,1,10,0.350000")
        );
    }

    #[test]
    fn the_shipped_grids_parse_and_plan_every_combination() {
        let default = Grid::load("default").unwrap();
        let runs = default.plan().unwrap();
        assert_eq!(
            runs.len(),
            18,
            "standard|svda|svda-paper x 3 readouts x 2 seeds"
        );
        assert!(runs.iter().all(|r| r.config.optim.steps == default.steps));
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names[0], "standard-ignore-h3-6-9-12-s0");
        assert_eq!(names[11], "svda-project-h3-6-9-12-s1");
        assert_eq!(names[17], "svda-paper-project-h3-6-9-12-s1");
        assert_eq!(runs[11].config.model.encoder.attention, AttentionKind::Svda);
        assert_eq!(runs[11].config.model.decoder.readout, Readout::Project);
        assert_eq!(
            runs[17].config.model.encoder.attention,
            AttentionKind::SvdaPaper
        );
        let full = Grid::load("full").unwrap().plan().unwrap();
        assert_eq!(
            full.len(),
            3 * 3
                * 3
                * full
                    .iter()
                    .filter(|r| r.name.starts_with("standard-ignore-h3-6-9-12-"))
                    .count()
        );
    }

    #[test]
    fn bad_grids_are_refused_naming_the_problem() {
        let base =
            "name = \"g\"\nsteps = 4\nattention = [\"svda\"]\nreadout = [\"add\"]\nseeds = [0]\n";
        let err = |extra: &str| {
            Grid::parse(&format!("{base}{extra}"), Path::new("grid.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = err("hooks = [[3, 6, 9, 13]]\n");
        assert!(
            e.contains("hook 13") && e.contains("svda-add-h3-6-9-13-s0"),
            "{e}"
        );
        let e = err("hooks = []\n");
        assert!(e.contains("hooks lists no value"), "{e}");
        let e = err("hooks = [[3, 6, 9, 12], [3, 6, 9, 12]]\n");
        assert!(e.contains("hooks lists a value twice"), "{e}");
        let e = err("hooks = [[3, 6, 9, 12]]\nreadouts = [\"add\"]\n");
        assert!(e.contains("grid.toml") && e.contains("readouts"), "{e}");
        let e = Grid::load("no-such-grid").unwrap_err().to_string();
        assert!(
            e.contains("no-such-grid") && e.contains("default, full"),
            "{e}"
        );
    }
}
