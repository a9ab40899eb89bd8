//! The training loop as a specification: it learns, it resumes exactly, it refuses bad
//! checkpoints and stops on NaN without touching the last good one. Tiny configs (4 layers,
//! D 32, 64 x 64 images) so each test runs in seconds on the CPU.

use std::path::Path;

use glassbox_trainer::TrainConfig;
use glassbox_trainer::data::{self, Split};
use glassbox_trainer::train::{TrainError, TrainOptions, Trainer, depth_loss, train};
use tch::Device;

fn options(dir: &Path, resume: bool, stop_after: Option<usize>) -> TrainOptions {
    TrainOptions {
        run_dir: dir.to_path_buf(),
        resume,
        quiet: true,
        stop_after,
        report: false,
        interrupt: None,
    }
}

#[test]
fn a_few_optimisation_steps_lower_the_loss_on_synthetic_scenes() {
    let mut config = TrainConfig::preset("test").unwrap();
    config.loss.loss = glassbox_losses::LossConfig::Silog(Default::default());
    let set = data::load_split(&config.data, config.seed, Split::Train).unwrap();
    let mut trainer = Trainer::new(&config, Device::Cpu).unwrap();
    let fixed = set.batch(&[0, 1, 2, 3], &[false; 4], Device::Cpu);
    let loss_now = |t: &Trainer| {
        let d = tch::no_grad(|| t.model.depth_t(&fixed.rgb, false)).unwrap();
        depth_loss(&t.config, &d, &fixed).unwrap().double_value(&[])
    };
    let before = loss_now(&trainer);
    for _ in 0..config.optim.steps {
        trainer.train_step(&set, "none").unwrap();
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
    let logged = glassbox_trainer::train::read_losses(&split.path().join("metrics.jsonl"));
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
        while glassbox_trainer::train::read_losses(&log).is_empty() {
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
