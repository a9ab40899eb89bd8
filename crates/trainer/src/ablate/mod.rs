//! Ablation grids (`docs/training.md`): a TOML grid of (segmentation decoder x) attention kind x
//! readout x hooks x seeds, run one training run after another into
//! `<out>/<grid name>/runs/<run>/`, then summarised as `results.csv` (one row per variant, mean
//! and std over seeds), `runs.csv` (every run with its final spectral indicators), `results.md`
//! and figures (one bar chart per factor, indicator depth profiles per variant). Depth grids
//! report AbsRel, δ1 and RMSE; segmentation grids mIoU, pixel accuracy, the majority-class
//! baseline, decoder parameters and seconds per update.
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
pub use tables::{results_csv, results_markdown, runs_csv, write_tables};

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
                decoder: None,
                keep_ratio: None,
                backbone: None,
            },
            seed,
            steps: 10,
            abs_rel: Some(abs_rel),
            delta1: Some(1.0 - abs_rel),
            rmse: Some(2.0 * abs_rel),
            miou: None,
            pixel_accuracy: None,
            miou_baseline: None,
            train_seconds: 100.0 + seed as f64,
            parameters: 1000,
            decoder_parameters: Some(400),
            seconds_per_step: Some(0.5),
            encoder_gflops: None,
            corr: None,
            corr_dense: None,
            target_overlap: None,
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
        let (abs_rel, delta1, rmse) = (s.abs_rel.unwrap(), s.delta1.unwrap(), s.rmse.unwrap());
        assert!((abs_rel.mean - 0.25).abs() < 1e-12);
        assert!((abs_rel.std - 0.070_710_678).abs() < 1e-8);
        assert!((delta1.mean - 0.75).abs() < 1e-12);
        assert!((rmse.std - 0.141_421_356).abs() < 1e-8);
        assert!(s.miou.is_none(), "depth runs have no mIoU");
        assert!((s.train_seconds.mean - 100.5).abs() < 1e-12);
        assert!((s.indicator(Indicator::Selectivity).unwrap().mean - 0.025).abs() < 1e-12);
        assert!(s.indicator(Indicator::SpectralEntropy).is_none());
        let (_, add) = &variants[2];
        assert!((add.abs_rel.unwrap().mean - 0.5).abs() < 1e-12);
        assert!((add.abs_rel.unwrap().std - 0.141_421_356).abs() < 1e-8);

        // SVDA pools project and add: 0.1, 0.2, 0.4, 0.6 -> mean 0.325,
        // std sqrt((0.050625 + 0.015625 + 0.005625 + 0.075625) / 3) = 0.221736.
        let attention = aggregate_factor(&results, Factor::Attention);
        assert_eq!(attention[0].0, "standard");
        assert_eq!(attention[1].0, "svda");
        assert_eq!(attention[1].1.runs, 4);
        assert!((attention[1].1.abs_rel.unwrap().mean - 0.325).abs() < 1e-12);
        assert!((attention[1].1.abs_rel.unwrap().std - 0.221_735_578).abs() < 1e-8);
        let readout = aggregate_factor(&results, Factor::Readout);
        assert_eq!(
            readout
                .iter()
                .map(|(l, s)| (l.as_str(), s.runs))
                .collect::<Vec<_>>(),
            vec![("project", 4), ("add", 2)]
        );
        assert_eq!(aggregate_factor(&results, Factor::Hooks).len(), 1);
        assert_eq!(aggregate_factor(&results, Factor::Decoder).len(), 1);
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
                .starts_with("svda-ignore-s1,,,svda,ignore,3 6 9 12,1,10,0.350000")
        );
    }

    #[test]
    fn the_backbone_grid_trains_dpt_tiny_against_its_hybrid_under_the_same_vit() {
        let grid = Grid::load("backbone").unwrap();
        let runs = grid.plan().unwrap();
        assert_eq!(runs.len(), 4, "2 backbones x 2 seeds");
        assert_eq!(runs[0].name, "vit-standard-project-h3-6-9-12-s0");
        assert_eq!(runs[3].name, "hybrid-standard-project-h3-6-9-12-s1");
        assert_eq!(
            runs[2].variant.label(),
            "hybrid / standard / project / 3,6,9,12"
        );
        let (vit, hybrid) = (&runs[0].config.model, &runs[2].config.model);
        assert_eq!(vit.encoder.backbone, glassbox_encoder::Backbone::Vit);
        assert_eq!(*hybrid, glassbox_dpt::DptConfig::hybrid_tiny());
        assert_eq!(vit.decoder, hybrid.decoder);
        let bad = "name = \"x\"\nsteps = 1\nbackbone = [\"hybrid\", \"resnet\"]\n\
                   attention = [\"standard\"]\nreadout = [\"project\"]\nhooks = [[3, 6, 9, 12]]\n\
                   seeds = [0]\n";
        let msg = Grid::parse(bad, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("resnet") && msg.contains("g.toml"), "{msg}");
    }

    #[test]
    fn the_sparsity_grid_varies_the_keep_ratio_and_its_table_compares_with_dense() {
        let grid = Grid::load("sparsity").unwrap();
        let runs = grid.plan().unwrap();
        assert_eq!(runs.len(), 10, "5 keep ratios x 2 seeds");
        assert_eq!(runs[0].name, "rho1-standard-project-h3-6-9-12-s0");
        assert_eq!(runs[5].name, "rho0.3-standard-project-h3-6-9-12-s1");
        assert_eq!(
            runs[4].variant.label(),
            "rho 0.3 / standard / project / 3,6,9,12"
        );
        for (run, rho) in runs
            .iter()
            .zip([1.0, 1.0, 0.5, 0.5, 0.3, 0.3, 0.2, 0.2, 0.1, 0.1])
        {
            assert_eq!(run.config.model.encoder.keep_ratio, rho, "{}", run.name);
            assert_eq!(run.variant.keep_ratio, Some(rho));
            // At least 64 patch tokens, where sparsity means something.
            let [h, w] = run.config.data.image_size;
            assert!(h / 16 * (w / 16) >= 64, "{}", run.name);
        }
        let bad = "name = \"x\"\nsteps = 1\nkeep_ratio = [0.5, 0.5]\nattention = [\"standard\"]\n\
                   readout = [\"project\"]\nhooks = [[3, 6, 9, 12]]\nseeds = [0]\n";
        let msg = Grid::parse(bad, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("keep_ratio lists a value twice"), "{msg}");
        let out_of_range = bad.replace("[0.5, 0.5]", "[1.5]");
        let msg = Grid::parse(&out_of_range, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("got 1.5"), "{msg}");

        let with = |rho: f64, seed: u64, abs_rel: f64, gflops: f64, sps: f64| {
            let mut r = result(AttentionKind::Standard, Readout::Project, seed, abs_rel);
            r.variant.keep_ratio = Some(rho);
            r.run = r.variant.run_name(seed);
            r.encoder_gflops = Some(gflops);
            r.seconds_per_step = Some(sps);
            r.corr = (rho < 1.0).then_some(0.6);
            r
        };
        let results = vec![
            with(1.0, 0, 0.20, 2.0, 0.4),
            with(1.0, 1, 0.22, 2.0, 0.4),
            with(0.3, 0, 0.21, 1.0, 0.2),
            with(0.3, 1, 0.23, 1.0, 0.2),
        ];
        let md = results_markdown(&grid, &results, 10, &[]);
        let table = md
            .split("## Sparse token updates")
            .nth(1)
            .expect("a sparsity table");
        assert!(
            table.contains("| 1 | 2 | 0.2100 ± 0.0141 | 1.000 |"),
            "{table}"
        );
        assert!(
            table.contains("| 0.3 | 2 | 0.2200 ± 0.0141 | 1.048 |"),
            "{table}"
        );
        assert!(
            table.contains("| 1.000 | 2.000 | 0.200 ± 0.000 | 2.000 | 0.600 ± 0.000 | – | – |"),
            "{table}"
        );
        let csv = results_csv(&results);
        assert!(
            csv.lines().nth(2).unwrap().starts_with(",0.300,standard"),
            "{csv}"
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
            e.contains("no-such-grid") && e.contains("default, full, segmentation"),
            "{e}"
        );
    }

    #[test]
    fn the_segmentation_grid_plans_one_run_per_decoder_and_seed() {
        use glassbox_decoder::SegmentationDecoder::{DepictCa, DepictSa, Dpt};
        let grid = Grid::load("segmentation").unwrap();
        let runs = grid.plan().unwrap();
        assert_eq!(runs.len(), 6, "3 decoders x 2 seeds");
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dpt-standard-project-h3-6-9-12-s0",
                "dpt-standard-project-h3-6-9-12-s1",
                "depict-sa-standard-project-h3-6-9-12-s0",
                "depict-sa-standard-project-h3-6-9-12-s1",
                "depict-ca-standard-project-h3-6-9-12-s0",
                "depict-ca-standard-project-h3-6-9-12-s1",
            ]
        );
        assert_eq!(
            runs[2].variant.label(),
            "depict-sa / standard / project / 3,6,9,12"
        );
        for (run, want) in runs
            .iter()
            .zip([Dpt, Dpt, DepictSa, DepictSa, DepictCa, DepictCa])
        {
            assert_eq!(run.variant.decoder, Some(want), "{}", run.name);
            assert_eq!(run.config.task(), crate::config::Task::Segmentation);
            let glassbox_dpt::HeadConfig::Segmentation(head) = &run.config.model.head else {
                panic!("{}: a segmentation head", run.name);
            };
            assert_eq!(head.decoder, want, "{}", run.name);
            assert_eq!(head.num_classes, glassbox_data::classes::COUNT as i64);
            assert_eq!(run.config.optim.steps, grid.steps);
            assert_eq!(Some(run.config.data.image_size), grid.image_size);
            assert!(matches!(
                run.config.data.train,
                glassbox_data::SourceConfig::Synthetic { .. }
            ));
        }
        assert_eq!(grid.run_task().unwrap(), crate::config::Task::Segmentation);
    }

    #[test]
    fn a_decoder_axis_needs_segmentation_runs() {
        let grid = |extra: &str| {
            Grid::parse(
                &format!(
                    "name = \"g\"\nsteps = 4\nattention = [\"standard\"]\nreadout = [\"project\"]\n\
                     hooks = [[1, 2, 3, 4]]\nseeds = [0]\n{extra}"
                ),
                Path::new("grid.toml"),
            )
        };
        let e = grid("base = \"test\"\ndecoder = [\"dpt\", \"depict-sa\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("decoder lists dpt, depict-sa") && e.contains("depth runs"),
            "{e}"
        );
        let e = grid("decoder = [\"depict-ca\"]\n").unwrap_err().to_string();
        assert!(e.contains("decoder lists depict-ca"), "{e}");
        let e = grid("base = \"segmentation\"\ndecoder = [\"dpt\", \"dpt\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("decoder lists a value twice"), "{e}");
        let e = grid("base = \"segmentation\"\ndecoder = [\"depict\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("grid.toml") && e.contains("depict"), "{e}");
        let e = grid("base = \"segmentation\"\ndataset = \"sevenscenes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("7-Scenes"), "{e}");

        // DEPICT's 3 heads do not divide the `test` model's width 32: refused at planning, not
        // after the runs before it have trained.
        let e =
            grid("base = \"test\"\ntask = \"segmentation\"\ndecoder = [\"dpt\", \"depict-sa\"]\n")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("run depict-sa-standard-project-h1-2-3-4-s0") && e.contains("num_heads"),
            "{e}"
        );

        // `task` makes a small depth preset a segmentation one; without a decoder axis the runs
        // keep the preset's head and their old names.
        let small =
            grid("base = \"test\"\ntask = \"segmentation\"\ndecoder = [\"dpt\"]\n").unwrap();
        let runs = small.plan().unwrap();
        assert_eq!(runs[0].name, "dpt-standard-project-h1-2-3-4-s0");
        assert_eq!(runs[0].config.task(), crate::config::Task::Segmentation);
        assert_eq!(runs[0].config.model.encoder.hooks, [1, 2, 3, 4]);
        let text = toml::to_string_pretty(&small).unwrap();
        assert!(text.contains("task = \"segmentation\""), "{text}");
        assert_eq!(Grid::parse(&text, Path::new("again.toml")).unwrap(), small);
        let plain = grid("base = \"segmentation\"\n").unwrap();
        let runs = plain.plan().unwrap();
        assert_eq!(runs[0].name, "standard-project-h1-2-3-4-s0");
        assert_eq!(runs[0].variant.decoder, None);
        assert!(!toml::to_string_pretty(&plain).unwrap().contains("decoder"));
    }

    fn segmentation_result(
        decoder: glassbox_decoder::SegmentationDecoder,
        seed: u64,
        miou: f64,
        decoder_parameters: i64,
    ) -> RunResult {
        let variant = Variant {
            attention: AttentionKind::Standard,
            readout: Readout::Project,
            hooks: vec![3, 6, 9, 12],
            decoder: Some(decoder),
            keep_ratio: None,
            backbone: None,
        };
        RunResult {
            run: variant.run_name(seed),
            variant,
            seed,
            steps: 10,
            abs_rel: None,
            delta1: None,
            rmse: None,
            miou: Some(miou),
            pixel_accuracy: Some(miou + 0.3),
            miou_baseline: Some(0.05),
            train_seconds: 60.0,
            parameters: 5000 + decoder_parameters,
            decoder_parameters: Some(decoder_parameters),
            seconds_per_step: Some(0.1 * (1 + seed) as f64),
            encoder_gflops: None,
            corr: None,
            corr_dense: None,
            target_overlap: None,
            indicators: None,
            selectivity_by_layer: Vec::new(),
            sigma: Vec::new(),
        }
    }

    #[test]
    fn segmentation_tables_give_miou_per_decoder_and_the_decoder_parameter_share() {
        use glassbox_decoder::SegmentationDecoder::{DepictCa, DepictSa, Dpt};
        let results = vec![
            segmentation_result(Dpt, 0, 0.40, 2000),
            segmentation_result(Dpt, 1, 0.50, 2000),
            segmentation_result(DepictSa, 0, 0.30, 500),
            segmentation_result(DepictSa, 1, 0.36, 500),
            segmentation_result(DepictCa, 0, 0.20, 600),
            segmentation_result(DepictCa, 1, 0.20, 600),
        ];
        let grid = Grid::load("segmentation").unwrap();
        let md = results_markdown(&grid, &results, 6, &[]);
        assert!(md.contains("6 of 6 runs finished"), "{md}");
        assert!(md.contains("mIoU | pixel acc. | majority mIoU |"), "{md}");
        assert!(!md.contains("AbsRel"), "{md}");
        // dpt: 0.40 and 0.50 -> 0.4500 ± 0.0707; its own share is 100%, DEPICT-SA's 500 / 2000.
        assert!(
            md.contains(
                "| dpt | standard | project | 3,6,9,12 | 2 | 0.4500 ± 0.0707 | 0.7500 ± 0.0707 | \
                 0.0500 ± 0.0000 | 7000 | 2000 | 100.0% | 0.150 ± 0.071 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| depict-sa | standard | project | 3,6,9,12 | 2 | 0.3300 ± 0.0424 |"),
            "{md}"
        );
        assert!(md.contains("| 500 | 25.0% |"), "{md}");
        assert!(md.contains("| 600 | 30.0% |"), "{md}");
        assert!(md.contains("## By decoder"), "{md}");
        assert!(
            md.contains("| depict-ca | 2 | 0.2000 ± 0.0000 | 0.5000 ± 0.0000 | 600 |"),
            "{md}"
        );
        assert!(!md.contains("## By attention"), "one attention kind: {md}");

        let csv = results_csv(&results);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4);
        let header: Vec<&str> = lines[0].split(',').collect();
        let row: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(header.len(), row.len());
        let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!(col("decoder"), "depict-sa");
        assert_eq!(col("miou_mean"), "0.330000");
        assert_eq!(col("miou_std"), "0.042426");
        assert_eq!(col("decoder_parameters"), "500");
        assert_eq!(col("decoder_parameters_pct_dpt"), "25.00");
        assert_eq!(col("seconds_per_step_mean"), "0.150000");
        assert!(!header.contains(&"abs_rel_mean"));
        let runs = runs_csv(&results);
        assert!(
            runs.lines().nth(3).unwrap().starts_with(
                "depict-sa-standard-project-h3-6-9-12-s0,depict-sa,standard,project,3 6 9 12,0,\
                 10,0.300000,0.600000,0.050000,60.00,0.100000,5500,500"
            ),
            "{runs}"
        );

        let by_decoder = aggregate_factor(&results, Factor::Decoder);
        assert_eq!(
            by_decoder
                .iter()
                .map(|(l, s)| (l.as_str(), s.runs))
                .collect::<Vec<_>>(),
            [("dpt", 2), ("depict-sa", 2), ("depict-ca", 2)]
        );
        assert!(by_decoder[0].1.abs_rel.is_none());
    }

    /// A `result.json` written before the decoder axis and the segmentation scores (a run of the
    /// shipped `default` grid, its per-layer lists cut to two entries).
    const OLD_RESULT: &str = r#"{"run":"svda-ignore-h3-6-9-12-s0","variant":{"attention":"svda","readout":"ignore","hooks":[3,6,9,12]},"seed":0,"steps":300,"abs_rel":0.19341172001976586,"delta1":0.6423377990722656,"rmse":0.8176817673984602,"train_seconds":53.946588689,"parameters":8054309,"indicators":{"spectral_entropy":0.9896684784078781,"effective_rank":2.6456812294698024,"hoyer_sparsity":0.0495646855201686,"small_sigma_share":0.0,"angular_alignment":0.1498123652319991,"selectivity":0.26372673993249734,"robustness_input":0.9863144989337235,"robustness_sigma":0.9944649395017214,"attention_distance":2.0090564520012695,"attention_distance_px":32.14490323202031,"attention_distance_uniform":2.008014969380089,"paper_spectral_entropy":3.9753495446475777,"paper_effective_rank":53.38418416511026,"paper_sparsity":0.0,"paper_alignment":-0.01886207071146748,"gini_selectivity":0.8096201607597839,"gini_uniform":0.9411764705882354,"paper_robustness_input":0.00008823602041304995},"selectivity_by_layer":[0.527673702882378,0.23345611782095146],"sigma":[{"layer":1,"gain":101.8472787340482,"max_min_ratio":3.7522423059894923,"spectral_entropy":0.9893900821604321,"hoyer_sparsity":0.05174090179691127},{"layer":2,"gain":75.03778970241547,"max_min_ratio":3.577404574024273,"spectral_entropy":0.990392552574798,"hoyer_sparsity":0.04610200143117223}]}"#;

    #[test]
    fn a_result_json_from_before_the_decoder_axis_still_reads() {
        let old: RunResult = serde_json::from_str(OLD_RESULT).unwrap();
        assert_eq!(old.variant.decoder, None);
        assert_eq!(old.variant.label(), "svda / ignore / 3,6,9,12");
        assert_eq!(old.abs_rel, Some(0.19341172001976586));
        assert_eq!(old.delta1, Some(0.6423377990722656));
        assert_eq!(old.rmse, Some(0.8176817673984602));
        assert_eq!(
            (old.miou, old.pixel_accuracy, old.miou_baseline),
            (None, None, None)
        );
        assert_eq!((old.decoder_parameters, old.seconds_per_step), (None, None));
        assert_eq!(old.sigma.len(), 2);
        assert!(old.indicators.is_some());
        // Written again, it keeps the old shape: no new key appears for a value it lacks.
        let again = serde_json::to_string(&old).unwrap();
        for key in ["decoder", "miou", "pixel_accuracy", "seconds_per_step"] {
            assert!(!again.contains(key), "{key} in {again}");
        }
        assert_eq!(serde_json::from_str::<RunResult>(&again).unwrap(), old);
        // Old depth results still make the depth tables.
        let csv = results_csv(std::slice::from_ref(&old));
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with(",,svda,ignore,3 6 9 12,1,0.193412,")
        );
    }
}
