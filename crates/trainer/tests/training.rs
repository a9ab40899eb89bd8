//! The training loop as a specification: it learns, it resumes exactly, it refuses bad
//! checkpoints and stops on NaN without touching the last good one. Tiny configs (4 layers,
//! D 32, 64 x 64 images) so each test runs in seconds on the CPU.

use std::path::Path;

use glassbox_trainer::TrainConfig;
use glassbox_trainer::data;
use glassbox_trainer::tensor::TensorBatch;
use glassbox_trainer::train::logs::read_losses;
use glassbox_trainer::train::{TrainError, TrainOptions, Trainer, depth_loss, train};
use tch::Device;

fn options(dir: &Path, resume: bool, stop_after: Option<usize>) -> TrainOptions {
    TrainOptions {
        resume,
        quiet: true,
        stop_after,
        report: false,
        ..TrainOptions::new(dir)
    }
}

#[test]
fn a_few_optimisation_steps_lower_the_loss_on_synthetic_scenes() {
    let mut config = TrainConfig::preset("test").unwrap();
    config.loss.loss = glassbox_losses::LossConfig::Silog(Default::default());
    // Four epochs of the eight training scenes: a few steps on one batch can go either way.
    config.optim.steps = 16;
    let data = data::open(&config).unwrap();
    let mut trainer = Trainer::new(&config, Device::Cpu).unwrap();
    let mut batches = data.train.train_batches(0);
    let fixed = TensorBatch::new(
        &data.train.train_batches(0).next().unwrap().unwrap(),
        Device::Cpu,
    );
    let loss_now = |t: &Trainer| {
        let d = tch::no_grad(|| t.model.disparity_t(&fixed.rgb, false)).unwrap();
        depth_loss(&t.config, &d, &fixed).unwrap().double_value(&[])
    };
    let before = loss_now(&trainer);
    for _ in 0..config.optim.steps {
        trainer.train_step(&mut batches, "none").unwrap();
    }
    let after = loss_now(&trainer);
    assert!(
        after < 0.9 * before,
        "loss {before} before and {after} after {} steps",
        config.optim.steps
    );
}

#[test]
fn resuming_after_step_k_gives_the_losses_of_an_uninterrupted_run() {
    let mut config = TrainConfig::preset("test").unwrap();
    config.optim.accumulate = 2;
    let whole = tempfile::tempdir().unwrap();
    let split = tempfile::tempdir().unwrap();
    let uninterrupted = train(&config, &options(whole.path(), false, None)).unwrap();
    let first = train(&config, &options(split.path(), false, Some(3))).unwrap();
    assert_eq!(first.steps, 3);
    let second = train(&config, &options(split.path(), true, None)).unwrap();
    assert_eq!(second.steps, config.optim.steps);
    let resumed: Vec<(usize, f64)> = first.losses.iter().chain(&second.losses).copied().collect();
    assert_eq!(resumed.len(), uninterrupted.losses.len());
    for ((s1, a), (s2, b)) in uninterrupted.losses.iter().zip(&resumed) {
        assert_eq!(s1, s2);
        assert!(
            (a - b).abs() <= 1e-6,
            "step {s1}: {a} uninterrupted, {b} resumed"
        );
    }
    // The log continues seamlessly: one line per step.
    let logged = read_losses(&split.path().join("metrics.jsonl"));
    assert_eq!(logged.len(), config.optim.steps);
    // The run's wall time adds up over invocations: the first one's time is carried by the checkpoint.
    let carried = second.train_seconds - second.seconds;
    assert!(
        carried > 0.0 && carried <= first.train_seconds + 1e-9,
        "carried {carried} s, first invocation {} s",
        first.train_seconds
    );
}

#[test]
fn an_interrupt_stops_after_the_current_step_with_a_checkpoint_to_resume_from() {
    let mut config = TrainConfig::preset("test").unwrap();
    // Long enough that the interrupting thread is always scheduled before the end.
    config.optim.steps = 200;
    let dir = tempfile::tempdir().unwrap();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut interrupted = options(dir.path(), false, None);
    interrupted.interrupt = Some(flag.clone());
    // Raised from another thread once the first step is logged, as a Ctrl-C handler would.
    let log = dir.path().join("metrics.jsonl");
    let raiser = std::thread::spawn(move || {
        while read_losses(&log).is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let stopped = train(&config, &interrupted).unwrap();
    raiser.join().unwrap();
    assert!(stopped.interrupted && stopped.eval.is_none());
    assert!(
        stopped.steps >= 1 && stopped.steps < config.optim.steps,
        "{}",
        stopped.steps
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("last.json")).unwrap())
            .unwrap();
    assert_eq!(saved["step"].as_u64(), Some(stopped.steps as u64));
    let resumed = train(&config, &options(dir.path(), true, None)).unwrap();
    assert_eq!(resumed.steps, config.optim.steps);
    assert!(!resumed.interrupted && resumed.eval.is_some());
}

#[test]
fn a_truncated_or_corrupted_checkpoint_is_refused_and_left_as_it_was() {
    let config = TrainConfig::preset("test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    train(&config, &options(dir.path(), false, Some(2))).unwrap();
    let weights = dir.path().join("last.safetensors");
    let good = std::fs::read(&weights).unwrap();

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    for (what, bytes) in [
        ("corrupted", flipped),
        ("truncated", good[..good.len() / 3].to_vec()),
    ] {
        std::fs::write(&weights, &bytes).unwrap();
        let err = train(&config, &options(dir.path(), true, None)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("corrupted or truncated") && message.contains("last.safetensors"),
            "{what}: {message}"
        );
        assert_eq!(
            std::fs::read(&weights).unwrap(),
            bytes,
            "{what} file was rewritten"
        );
    }
    std::fs::write(&weights, &good).unwrap();
    let resumed = train(&config, &options(dir.path(), true, None)).unwrap();
    assert_eq!(resumed.steps, config.optim.steps);
}

#[test]
fn a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint() {
    let mut config = TrainConfig::preset("test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    train(&config, &options(dir.path(), false, Some(2))).unwrap();
    let files = ["last.safetensors", "last.optim.safetensors", "last.json"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.path().join(f)).unwrap())
        .collect();
    // An absurd learning rate drives the weights to inf, so a later loss is NaN.
    config.optim.lr_backbone = 1e38;
    config.optim.lr_decoder = 1e38;
    config.optim.clip_grad_norm = 0.0;
    config.schedule.checkpoint_every = 0;
    let err = train(&config, &options(dir.path(), true, None)).unwrap_err();
    match &err {
        TrainError::NonFinite { step, .. } => assert!(*step > 2, "{err}"),
        other => panic!("expected a non-finite stop, got {other}"),
    }
    assert!(err.to_string().contains("step "), "{err}");
    for (f, bytes) in files.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(dir.path().join(f)).unwrap(),
            bytes,
            "{f} changed"
        );
    }
}

#[test]
fn a_misspelled_key_in_a_config_file_is_an_error_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = TrainConfig::preset("test").unwrap().to_toml().unwrap();
    for (from, to) in [
        ("batch_size", "batchsize"),
        ("eval_every", "eval_evry"),
        ("hidden_size", "hiden_size"),
        ("fusion_channels", "fusion_chanels"),
        ("image_size", "img_size"),
    ] {
        let bad = text.replacen(from, to, 1);
        assert_ne!(bad, text, "{from} is in the config");
        let path = dir.path().join("run.toml");
        std::fs::write(&path, bad).unwrap();
        let err = TrainConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains(to) && err.contains("run.toml"),
            "{from} -> {to}: {err}"
        );
    }
}

/// Writes `count` rendered scenes at 64 x 64 in `layout` with gen-data's writer.
fn gen_data(dir: &Path, layout: glassbox_data::Layout, count: usize) {
    let dataset = glassbox_data::SyntheticDataset::new(glassbox_data::SyntheticConfig::indoor(
        64, 64, count, 11,
    ))
    .unwrap();
    let options = glassbox_data::layout::WriteOptions {
        layout,
        test_fraction: 0.25,
        sheet_rows: 1,
    };
    glassbox_data::layout::write_synthetic(&dataset, dir, options, &|| {}).unwrap();
}

fn steps_on(dir: &Path, dataset: glassbox_trainer::overrides::DatasetKind, split: Option<&str>) {
    let mut config = TrainConfig::preset("test").unwrap();
    config.optim.steps = 3;
    let flags = glassbox_trainer::Overrides {
        dataset: Some(dataset),
        data_root: Some(dir.to_path_buf()),
        split: split.map(|s| dir.join(s)),
        ..Default::default()
    };
    flags.apply(&mut config).unwrap();
    let run = tempfile::tempdir().unwrap();
    let summary = train(&config, &options(run.path(), false, None)).unwrap();
    assert_eq!(summary.steps, 3);
    assert!(summary.losses.iter().all(|(_, l)| l.is_finite()));
    let eval = summary.eval.expect("a final validation");
    let depth = eval.depth().expect("a depth run");
    assert!(
        depth.images >= 1 && depth.median.abs_rel.is_finite(),
        "{eval:?}"
    );
}

#[test]
fn a_few_steps_train_on_a_gen_data_nyu_folder_and_on_a_kitti_folder() {
    let nyu = tempfile::tempdir().unwrap();
    gen_data(nyu.path(), glassbox_data::Layout::Nyu, 12);
    steps_on(
        nyu.path(),
        glassbox_trainer::overrides::DatasetKind::Nyu,
        None,
    );
    steps_on(
        nyu.path(),
        glassbox_trainer::overrides::DatasetKind::Nyu,
        Some("train.txt"),
    );
    let kitti = tempfile::tempdir().unwrap();
    gen_data(kitti.path(), glassbox_data::Layout::Kitti, 12);
    steps_on(
        kitti.path(),
        glassbox_trainer::overrides::DatasetKind::Kitti,
        None,
    );
}

/// `take` (a copy of the value or of the gradient) of every variable of a trainer whose name
/// ends with one of `suffixes`, sorted by name.
fn variables_ending(
    trainer: &Trainer,
    suffixes: &[&str],
    take: fn(&tch::Tensor) -> tch::Tensor,
) -> Vec<(String, tch::Tensor)> {
    let mut vars: Vec<(String, tch::Tensor)> = trainer
        .vs
        .variables()
        .into_iter()
        .filter(|(name, _)| suffixes.iter().any(|s| name.ends_with(s)))
        .map(|(name, t)| (name, take(&t)))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn value(t: &tch::Tensor) -> tch::Tensor {
    t.detach().copy()
}

fn gradient(t: &tch::Tensor) -> tch::Tensor {
    t.grad().copy()
}

#[test]
fn svda_paper_penalties_join_the_gradient_but_not_the_logged_loss() {
    let mut config = TrainConfig::preset("test").unwrap();
    config.set_attention(glassbox_attention::AttentionKind::SvdaPaper);
    // Unclipped, so that the gradients after the step are the raw ones.
    config.optim.clip_grad_norm = 0.0;
    config.optim.accumulate = 1;
    let data = data::open(&config).unwrap();
    let gradients =
        |trainer: &Trainer| variables_ending(trainer, &["attn.qkv.weight", "attn.sigma"], gradient);
    let step = |config: &TrainConfig| {
        let mut trainer = Trainer::new(config, Device::Cpu).unwrap();
        let outcome = trainer
            .train_step(&mut data.train.train_batches(0), "none")
            .unwrap();
        (outcome.loss, gradients(&trainer))
    };
    let (loss, with_penalty) = step(&config);
    let mut without = config.clone();
    without.model.encoder.svda.orthogonality_weight = Some(0.0);
    without.model.encoder.svda.entropy_weight = Some(0.0);
    let (loss_without, plain) = step(&without);
    assert_eq!(loss, loss_without, "the logged loss is the task loss alone");
    // The difference of the two gradients is the penalty's own gradient at the same weights.
    let fresh = Trainer::new(&config, Device::Cpu).unwrap();
    fresh.model.encoder().penalty().unwrap().unwrap().backward();
    let penalty = gradients(&fresh);
    for (((name, a), (_, b)), (_, p)) in with_penalty.iter().zip(&plain).zip(&penalty) {
        let difference = a - b;
        let scale = p.abs().max().double_value(&[]);
        assert!(scale > 0.0, "{name}: the penalty has no gradient");
        // float32: the difference of two task-sized gradients carries their rounding (~1e-9).
        let error = (&difference - p).abs().max().double_value(&[]);
        assert!(
            error <= 0.01 * scale,
            "{name}: gradient difference off by {error} (penalty gradient up to {scale})"
        );
    }
}

#[test]
fn the_default_svda_spectrum_steps_at_its_own_learning_rate() {
    let mut config = TrainConfig::preset("test").unwrap();
    config.set_attention(glassbox_attention::AttentionKind::Svda);
    config.optim.clip_grad_norm = 0.0;
    let data = data::open(&config).unwrap();
    let mut trainer = Trainer::new(&config, Device::Cpu).unwrap();
    let before = variables_ending(&trainer, &["attn.log_temperature"], value);
    assert!(!before.is_empty(), "the default svda has a temperature");
    trainer
        .train_step(&mut data.train.train_batches(0), "none")
        .unwrap();
    let after = variables_ending(&trainer, &["attn.log_temperature"], value);
    // Adam's first step is lr * sign(g) (bias-corrected); the warm-up scales the rate.
    let o = &config.optim;
    let lr = glassbox_attention::DEFAULT_SVDA_LR
        * glassbox_trainer::optim::lr_factor(0, o.warmup_steps, o.steps, o.min_lr_ratio);
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        let change = (b - a).abs().max().double_value(&[]);
        assert!(
            (change - lr).abs() < 0.01 * lr,
            "{name}: moved by {change}, expected {lr}"
        );
    }
}

/// Asserts that every image and link of the HTML page at `path` is a file beside it; returns how
/// many there are.
fn assert_links_resolve(path: &Path) -> usize {
    let page = std::fs::read_to_string(path).unwrap();
    let dir = path.parent().unwrap();
    let mut links = 0;
    for attribute in ["src=\"", "href=\""] {
        for piece in page.split(attribute).skip(1) {
            let target = &piece[..piece.find('"').unwrap()];
            assert!(
                dir.join(target).is_file(),
                "{} links {target}, which does not exist",
                path.display()
            );
            links += 1;
        }
    }
    links
}

#[test]
fn every_run_leaves_one_page_whose_links_resolve_and_whose_figures_are_labelled() {
    let mut config = TrainConfig::preset("test").unwrap();
    config.set_attention(glassbox_attention::AttentionKind::Svda);
    config.optim.steps = 4;
    config.schedule.spectral_every = 2;
    config.schedule.eval_every = 2;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("svda");
    let options = |dir: &Path| TrainOptions {
        report: true,
        ..options(dir, false, None)
    };
    train(&config, &options(&dir)).unwrap();
    let page = std::fs::read_to_string(dir.join("index.html")).unwrap();
    // Curves, contact sheet, depth profiles, indicators over steps, sigma spectra (PNG + SVG
    // each for the plotted ones), the last attention overlay and the over-training strip.
    let links = assert_links_resolve(&dir.join("index.html"));
    assert!(links >= 11, "{links} links");
    for section in [
        "Validation",
        "Training curves",
        "Configuration",
        "sigma",
        "Attention over training",
        "attention/over_training.png",
    ] {
        assert!(page.contains(section), "the page lacks {section:?}");
    }
    let svg = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert!(svg("loss_curve.svg").contains("optimiser step"));
    assert!(svg("loss_curve.svg").contains("loss (log scale)"));
    let profiles = svg("figures/depth_profiles.svg");
    assert!(profiles.contains("layer") && profiles.contains("uniform attention"));

    // A second run, probed less often (steps 0 and 4), to compare with.
    let mut standard = config.clone();
    standard.set_attention(glassbox_attention::AttentionKind::Standard);
    standard.schedule.spectral_every = 4;
    let other = root.path().join("standard");
    train(&standard, &options(&other)).unwrap();

    // The strip: the last layer by default, one column per probe step after the query column.
    let layers = config.model.encoder.num_layers;
    let strip = glassbox_trainer::probe::read_strip_log(&dir);
    assert_eq!(strip.iter().map(|c| c.step).collect::<Vec<_>>(), [0, 2, 4]);
    assert!(
        strip
            .iter()
            .all(|c| c.layer == layers && c.queries.len() == 3)
    );
    let width = |run: &Path, file: &str| {
        image::image_dimensions(run.join("attention").join(file))
            .unwrap()
            .0
    };
    // TitledGrid: 150 px of row titles and 14 + 62 + 50 px of colour bar around the columns.
    let column = (width(&dir, "step_000004.png") - 276) / (layers as u32 + 1);
    assert_eq!(width(&dir, "over_training.png"), 276 + (1 + 3) * column);
    assert_eq!(width(&other, "over_training.png"), 276 + (1 + 2) * column);

    // The comparison page: tables side by side, curves overlaid, spectral figures of both.
    let out = root.path().join("comparison");
    let comparison = glassbox_trainer::comparison::compare(&[dir.clone(), other], &out).unwrap();
    assert_eq!(comparison.spectral_runs, 2);
    assert!(assert_links_resolve(&comparison.index) >= 8);
    let page = std::fs::read_to_string(&comparison.index).unwrap();
    for text in [
        "<th>svda</th><th>standard</th>",
        "AbsRel ↓",
        "svda/indicators_over_steps",
    ] {
        assert!(page.contains(text), "the comparison lacks {text:?}");
    }
    let curves = std::fs::read_to_string(out.join("training_curves.svg")).unwrap();
    for text in [
        "svda",
        "standard",
        "optimiser step",
        "loss (log scale)",
        "AbsRel",
    ] {
        assert!(curves.contains(text), "the overlaid curves lack {text:?}");
    }

    // A fresh run in the same folder, probed less often and stripping layer 1: none of the
    // older run's overlays stay beside its own.
    let mut again = config.clone();
    again.schedule.spectral_every = 4;
    again.schedule.strip_layer = Some(1);
    train(&again, &options(&dir)).unwrap();
    assert!(!dir.join("attention/step_000002.png").exists());
    assert!(dir.join("attention/step_000004.png").is_file());
    let strip = glassbox_trainer::probe::read_strip_log(&dir);
    assert_eq!(strip.iter().map(|c| c.step).collect::<Vec<_>>(), [0, 4]);
    assert!(strip.iter().all(|c| c.layer == 1));
    assert_links_resolve(&dir.join("index.html"));
}

#[test]
fn a_hybrid_run_trains_and_resumes_to_the_losses_of_an_uninterrupted_one() {
    // `--backbone hybrid` on the test preset: the small ResNet stem under its 4-block ViT.
    let mut config = TrainConfig::preset("test").unwrap();
    config.model = config
        .model
        .clone()
        .with_backbone(glassbox_dpt::BackboneKind::Hybrid);
    config.optim.steps = 4;
    let whole = tempfile::tempdir().unwrap();
    let split = tempfile::tempdir().unwrap();
    let uninterrupted = train(&config, &options(whole.path(), false, None)).unwrap();
    train(&config, &options(split.path(), false, Some(2))).unwrap();
    let second = train(&config, &options(split.path(), true, None)).unwrap();
    let last = |r: &glassbox_trainer::train::TrainSummary| r.losses.last().copied().unwrap();
    assert_eq!(last(&second).0, last(&uninterrupted).0);
    assert!((last(&second).1 - last(&uninterrupted).1).abs() <= 1e-6);
    assert!(uninterrupted.losses.iter().all(|(_, l)| l.is_finite()));
    // The saved config rebuilds the hybrid, as eval and predict do.
    let saved = TrainConfig::from_run_file(&whole.path().join("config.toml")).unwrap();
    assert_eq!(saved.model, config.model);
}
