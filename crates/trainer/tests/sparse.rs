//! Sparse token updates through the trainer (`docs/sparse.md`): a run at keep ratio < 1 trains
//! its scorer, logs `corr` and the scorer's loss every step, resumes to the losses and weights of
//! an uninterrupted run, and `predict` draws the kept tokens.

use std::path::Path;

use glassbox_trainer::TrainConfig;
use glassbox_trainer::overrides::Overrides;
use glassbox_trainer::predict::{PredictOptions, load_checkpoint, predict_files, set_keep_ratio};
use glassbox_trainer::train::logs::{read_losses, read_series};
use glassbox_trainer::train::{TrainOptions, train};
use tch::Device;

/// Quiet, report-less options (`TrainOptions::new` with resume and stop_after set).
fn options(dir: &Path, resume: bool, stop_after: Option<usize>) -> TrainOptions {
    let mut o = TrainOptions::new(dir);
    (o.resume, o.quiet, o.stop_after, o.report) = (resume, true, stop_after, false);
    o
}

fn sparse_config() -> TrainConfig {
    let mut config = TrainConfig::preset("test").unwrap();
    Overrides {
        keep_ratio: Some(0.3),
        ..Overrides::default()
    }
    .apply(&mut config)
    .unwrap();
    config
}

fn weights(path: &Path) -> Vec<(String, tch::Tensor)> {
    let mut named = tch::Tensor::read_safetensors(path).unwrap();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[test]
fn a_sparse_run_logs_corr_and_resumes_to_the_weights_of_an_uninterrupted_run() {
    let config = sparse_config();
    assert_eq!(config.model.encoder.keep_ratio, 0.3);
    let whole = tempfile::tempdir().unwrap();
    let split = tempfile::tempdir().unwrap();
    let uninterrupted = train(&config, &options(whole.path(), false, None)).unwrap();
    train(&config, &options(split.path(), false, Some(3))).unwrap();
    train(&config, &options(split.path(), true, None)).unwrap();

    let log = split.path().join("metrics.jsonl");
    let steps = config.optim.steps;
    assert_eq!(read_losses(&log).len(), steps, "one line per step");
    let corr = read_series(&log, "corr");
    let bce = read_series(&log, "saliency_loss");
    assert_eq!((corr.len(), bce.len()), (steps, steps));
    for (&(_, c), &(_, l)) in corr.iter().zip(&bce) {
        assert!(c > 0.0 && c <= 1.0, "corr {c}");
        assert!(l.is_finite() && l > 0.0, "saliency loss {l}");
    }
    assert_eq!(
        read_series(&whole.path().join("metrics.jsonl"), "corr"),
        corr,
        "the resumed run logs the corr of the uninterrupted one"
    );

    let a = weights(&whole.path().join("last.safetensors"));
    let b = weights(&split.path().join("last.safetensors"));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().any(|(n, _)| n.contains("mask_predictor")));
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resuming");
    }
    assert!(uninterrupted.losses.iter().all(|(_, l)| l.is_finite()));
}

#[test]
fn the_scorer_learns_during_a_run() {
    let config = sparse_config();
    let dir = tempfile::tempdir().unwrap();
    // Weights at step 1 and at the end: the scorer's layers moved.
    train(&config, &options(dir.path(), false, Some(1))).unwrap();
    let early = weights(&dir.path().join("last.safetensors"));
    let with_report = TrainOptions {
        report: true,
        ..options(dir.path(), true, None)
    };
    train(&config, &with_report).unwrap();
    let late = weights(&dir.path().join("last.safetensors"));
    // The report says what was kept, with the selection figure on the run page.
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        report.contains("## Sparse token updates")
            && report.contains("each block updates 5 of the 16 patch tokens"),
        "{report}"
    );
    assert!(dir.path().join("selection.png").is_file());
    let svg = std::fs::read_to_string(dir.path().join("selection.svg")).unwrap();
    assert!(svg.contains("optimiser step") && svg.contains("chance (keep ratio)"));
    let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(page.contains("selection.png"));
    let eval = read_series(&dir.path().join("eval.jsonl"), "target_overlap");
    assert_eq!(eval.len(), 1, "one validation, at the end");
    assert!((0.0..=1.0).contains(&eval[0].1));
    let scorer: Vec<_> = early
        .iter()
        .zip(&late)
        .filter(|((n, _), _)| n.contains("mask_predictor"))
        .collect();
    assert_eq!(scorer.len(), 10);
    for ((name, a), (_, b)) in scorer {
        assert!(!a.equal(b), "{name} did not move");
    }
}

#[test]
fn predict_draws_the_kept_tokens_and_a_dense_checkpoint_refuses_a_keep_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("scene.png");
    let picture = image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8])
    });
    glassbox_data::io::write_png(&image_path, &picture).unwrap();

    let sparse_dir = dir.path().join("sparse");
    train(&sparse_config(), &options(&sparse_dir, false, Some(1))).unwrap();
    let mut loaded = load_checkpoint(&sparse_dir.join("last.safetensors"), Device::Cpu).unwrap();
    set_keep_ratio(&mut loaded, 0.5).unwrap();
    let out = dir.path().join("pred");
    let written = predict_files(
        &loaded,
        std::slice::from_ref(&image_path),
        &out,
        &PredictOptions::default(),
        Device::Cpu,
    )
    .unwrap();
    let kept = out.join("scene_kept.png");
    assert!(written.contains(&kept), "{written:?}");
    let drawn = image::open(&kept).unwrap();
    assert!(drawn.width() >= 96 && drawn.height() > 64);
    // At keep ratio 1 the sparse checkpoint runs densely and draws no mask.
    set_keep_ratio(&mut loaded, 1.0).unwrap();
    let dense_out = dir.path().join("dense-pred");
    let written = predict_files(
        &loaded,
        &[image_path],
        &dense_out,
        &PredictOptions::default(),
        Device::Cpu,
    )
    .unwrap();
    assert!(!written.iter().any(|p| p.ends_with("scene_kept.png")));

    let dense_dir = dir.path().join("dense");
    train(
        &TrainConfig::preset("test").unwrap(),
        &options(&dense_dir, false, Some(1)),
    )
    .unwrap();
    let mut dense = load_checkpoint(&dense_dir.join("last.safetensors"), Device::Cpu).unwrap();
    let msg = set_keep_ratio(&mut dense, 0.3).unwrap_err().to_string();
    assert!(
        msg.contains("keep_ratio 0.3 needs a saliency scorer"),
        "{msg}"
    );
}

#[test]
fn a_keep_ratio_outside_the_unit_interval_is_a_config_error_naming_it() {
    for bad in [0.0, 1.25, -0.3] {
        let mut config = TrainConfig::preset("test").unwrap();
        let msg = Overrides {
            keep_ratio: Some(bad),
            ..Overrides::default()
        }
        .apply(&mut config)
        .unwrap_err()
        .to_string();
        assert!(msg.contains(&format!("got {bad}")), "{msg}");
    }
}
