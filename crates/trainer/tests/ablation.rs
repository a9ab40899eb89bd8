//! `glassbox ablate` end to end on a grid of two tiny runs: finished runs are skipped, a run whose
//! result is deleted is redone alone, an interruption leaves a consistent folder that the next
//! invocation completes, and a changed configuration is refused; a tiny segmentation grid with a
//! decoder axis reports mIoU, decoder parameters and time per update.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use glassbox_trainer::ablate::{AblateOptions, Grid, RESULT_FILE, run_grid};

const GRID: &str = r#"
name = "two-runs"
base = "test"
steps = 3
checkpoint_every = 1
attention = ["standard", "svda"]
readout = ["project"]
hooks = [[1, 2, 3, 4]]
seeds = [0]
"#;

fn options(out: &Path) -> AblateOptions {
    AblateOptions {
        out: out.to_path_buf(),
        quiet: true,
        ..AblateOptions::default()
    }
}

#[test]
fn a_grid_completes_then_skips_finished_runs_and_redoes_only_a_deleted_result() {
    let grid = Grid::parse(GRID, Path::new("two-runs.toml")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let first = run_grid(&grid, &options(out.path())).unwrap();
    assert_eq!(
        first.trained,
        ["standard-project-h1-2-3-4-s0", "svda-project-h1-2-3-4-s0"]
    );
    assert!(first.skipped.is_empty() && !first.interrupted);
    assert_eq!(first.results.len(), 2);
    for r in &first.results {
        assert_eq!(r.steps, 3);
        let (abs_rel, delta1) = (r.abs_rel.unwrap(), r.delta1.unwrap());
        assert!(abs_rel.is_finite() && abs_rel > 0.0, "{r:?}");
        assert!((0.0..=1.0).contains(&delta1), "{r:?}");
        assert!(r.miou.is_none() && r.variant.decoder.is_none(), "{r:?}");
        assert!(r.train_seconds > 0.0 && r.parameters > 0, "{r:?}");
        let indicators = r.indicators.expect("the final spectral probe");
        assert!(indicators.effective_rank >= 1.0, "{indicators:?}");
    }
    let svda = &first.results[1].indicators.unwrap();
    assert!(
        svda.spectral_entropy.is_some()
            && first.results[0]
                .indicators
                .unwrap()
                .spectral_entropy
                .is_none()
    );

    let dir = out.path().join("two-runs");
    for file in ["grid.toml", "results.csv", "runs.csv", "results.md"] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let md = std::fs::read_to_string(dir.join("results.md")).unwrap();
    assert!(md.contains("2 of 2 runs finished"), "{md}");
    assert!(md.contains("| standard | project | 1,2,3,4 | 1 |"), "{md}");
    assert!(md.contains("## By attention"), "{md}");
    for figure in [
        "factor-attention.png",
        "factor-attention.svg",
        "depth-profiles-h1-2-3-4.png",
    ] {
        assert!(
            dir.join("figures").join(figure).is_file(),
            "{figure} missing"
        );
    }
    assert!(
        !dir.join("figures/factor-readout.png").exists(),
        "one readout level: no bar chart"
    );
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");

    let again = run_grid(&grid, &options(out.path())).unwrap();
    assert!(again.trained.is_empty(), "{:?}", again.trained);
    assert_eq!(again.skipped.len(), 2);
    assert_eq!(again.results, first.results);

    let svda_dir = dir.join("runs/svda-project-h1-2-3-4-s0");
    std::fs::remove_file(svda_dir.join(RESULT_FILE)).unwrap();
    let third = run_grid(&grid, &options(out.path())).unwrap();
    assert_eq!(third.trained, ["svda-project-h1-2-3-4-s0"]);
    assert_eq!(third.skipped, ["standard-project-h1-2-3-4-s0"]);
    // Redone from its final checkpoint: the same weights give the same validation.
    let abs_rel = |s: &glassbox_trainer::ablate::AblationSummary| s.results[1].abs_rel.unwrap();
    assert!((abs_rel(&third) - abs_rel(&first)).abs() < 1e-9);

    std::fs::remove_dir_all(&svda_dir).unwrap();
    let fourth = run_grid(&grid, &options(out.path())).unwrap();
    assert_eq!(fourth.trained, ["svda-project-h1-2-3-4-s0"]);
    assert!(
        (abs_rel(&fourth) - abs_rel(&first)).abs() < 1e-6,
        "retrained from scratch with the same seed: {} vs {}",
        abs_rel(&fourth),
        abs_rel(&first)
    );
}

#[test]
fn an_interrupted_grid_leaves_a_consistent_folder_that_the_next_run_completes() {
    let grid = Grid::parse(GRID, Path::new("two-runs.toml")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(true));
    let interrupted = run_grid(
        &grid,
        &AblateOptions {
            interrupt: Some(stop),
            ..options(out.path())
        },
    )
    .unwrap();
    assert!(interrupted.interrupted);
    assert!(interrupted.results.is_empty());
    let md = std::fs::read_to_string(out.path().join("two-runs/results.md")).unwrap();
    assert!(md.contains("0 of 2 runs finished"), "{md}");

    let resumed = run_grid(&grid, &options(out.path())).unwrap();
    assert!(!resumed.interrupted);
    assert_eq!(resumed.trained.len(), 2);
}

#[test]
fn a_run_folder_of_another_configuration_is_refused_before_any_training() {
    let grid = Grid::parse(GRID, Path::new("two-runs.toml")).unwrap();
    let out = tempfile::tempdir().unwrap();
    run_grid(&grid, &options(out.path())).unwrap();
    let longer = Grid::parse(&GRID.replace("steps = 3", "steps = 4"), Path::new("g.toml")).unwrap();
    let err = run_grid(&longer, &options(out.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("standard-project-h1-2-3-4-s0")
            && err.contains("steps = 3")
            && err.contains("steps = 4"),
        "{err}"
    );
}

/// The `segmentation` preset (dpt-tiny: DEPICT's 3 heads need a width they divide, which the
/// `test` model's 32 is not) at 32 x 32 for two updates, DPT's head against DEPICT-SA.
const SEGMENTATION_GRID: &str = r#"
name = "decoders"
base = "segmentation"
steps = 2
image_size = [32, 32]
batch_size = 2
decoder = ["dpt", "depict-sa"]
attention = ["standard"]
readout = ["project"]
hooks = [[3, 6, 9, 12]]
seeds = [0]
"#;

#[test]
fn a_segmentation_grid_compares_decoders_by_miou_parameters_and_time() {
    let grid = Grid::parse(SEGMENTATION_GRID, Path::new("decoders.toml")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let summary = run_grid(&grid, &options(out.path())).unwrap();
    assert_eq!(
        summary.trained,
        [
            "dpt-standard-project-h3-6-9-12-s0",
            "depict-sa-standard-project-h3-6-9-12-s0"
        ]
    );
    for r in &summary.results {
        let miou = r.miou.expect("a segmentation score");
        assert!((0.0..=1.0).contains(&miou), "{r:?}");
        assert!(
            r.pixel_accuracy.is_some() && r.miou_baseline.is_some(),
            "{r:?}"
        );
        assert!(
            r.abs_rel.is_none() && r.delta1.is_none() && r.rmse.is_none(),
            "{r:?}"
        );
        let decoder = r.decoder_parameters.unwrap();
        assert!(decoder > 0 && decoder < r.parameters, "{r:?}");
        assert!(r.seconds_per_step.unwrap() > 0.0, "{r:?}");
    }
    assert_ne!(
        summary.results[0].decoder_parameters,
        summary.results[1].decoder_parameters
    );

    let dir = out.path().join("decoders");
    let md = std::fs::read_to_string(dir.join("results.md")).unwrap();
    assert!(md.contains("2 of 2 runs finished"), "{md}");
    assert!(
        md.contains("| dpt | standard | project | 3,6,9,12 | 1 |"),
        "{md}"
    );
    assert!(md.contains("| 100.0% |"), "{md}");
    assert!(md.contains("## By decoder"), "{md}");
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert!(csv.starts_with("decoder,attention,"), "{csv}");
    for figure in ["factor-decoder.png", "factor-decoder.svg"] {
        assert!(
            dir.join("figures").join(figure).is_file(),
            "{figure} missing"
        );
    }
    let grid_toml = std::fs::read_to_string(dir.join("grid.toml")).unwrap();
    assert!(grid_toml.contains("decoder = ["), "{grid_toml}");

    let again = run_grid(&grid, &options(out.path())).unwrap();
    assert_eq!(again.skipped.len(), 2);
    assert_eq!(again.results, summary.results);
}
