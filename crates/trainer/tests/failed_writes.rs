//! Failed writes (`docs/reliability.md`): a full disk and a refused permission, made real by
//! pointing the file a write opens at `/dev/full` (every write: "No space left on device") or at
//! a read-only sysfs file (open for writing: "Permission denied", even for root). Checkpoint,
//! log and figure writes must fail with an error naming the file; the previous checkpoint stays
//! whole, and once the disk is "freed" `--resume` finishes the run with the weights of an
//! uninterrupted one.

#![cfg(target_os = "linux")]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use glassbox_trainer::TrainConfig;
use glassbox_trainer::checkpoint::{CheckpointPaths, load};
use glassbox_trainer::train::{TrainOptions, Trainer, train};

const FULL: &str = "/dev/full";
/// Read-only for everyone, root included (sysfs checks the mode itself).
const READ_ONLY: &str = "/sys/kernel/notes";

fn config(steps: usize) -> TrainConfig {
    let mut config = TrainConfig::preset("test").unwrap();
    config.optim.steps = steps;
    config.schedule.checkpoint_every = 2;
    config
}

fn options(dir: &Path, resume: bool, stop_after: Option<usize>, report: bool) -> TrainOptions {
    TrainOptions {
        resume,
        quiet: true,
        stop_after,
        report,
        ..TrainOptions::new(dir)
    }
}

fn checkpoint_step(config: &TrainConfig, dir: &Path) -> usize {
    let mut trainer = Trainer::new(config, tch::Device::Cpu).unwrap();
    let (state, _) = load(&CheckpointPaths::new(dir, "last"), &mut trainer.vs).unwrap();
    state.step
}

/// Runs `config` to step 2 (a checkpoint) in a fresh folder.
fn run_to_step_2(config: &TrainConfig, root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    train(config, &options(&dir, false, Some(2), false)).unwrap();
    assert_eq!(checkpoint_step(config, &dir), 2);
    dir
}

/// Resumes with `trap` (a path in the run folder) pointing at `target`: the run must fail naming
/// `named` with `message`, leave checkpoint 2 whole, and finish once the trap is gone.
fn resume_into(
    config: &TrainConfig,
    dir: &Path,
    trap: &str,
    target: &str,
    named: &str,
    message: &str,
) {
    let trap = dir.join(trap);
    let saved = std::fs::read(&trap).ok();
    if saved.is_some() {
        std::fs::remove_file(&trap).unwrap();
    }
    symlink(target, &trap).unwrap();
    let err = train(config, &options(dir, true, None, true))
        .expect_err("the write should fail")
        .to_string();
    eprintln!("{} -> {target}: {err}", trap.display());
    assert!(err.contains(named), "{err} does not name {named}");
    assert!(err.contains(message), "{err} does not say {message:?}");
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::remove_file(&trap).unwrap();
    if let Some(bytes) = saved {
        std::fs::write(&trap, bytes).unwrap();
    }
    // The previous checkpoint (or the one the failed run made before the failure) is whole.
    assert!(checkpoint_step(config, dir) >= 2);
    train(config, &options(dir, true, None, true)).unwrap();
    assert_eq!(checkpoint_step(config, dir), config.optim.steps);
}

#[test]
fn full_disks_and_refused_permissions_name_the_file_and_lose_no_checkpoint() {
    let config = config(4);
    let root = tempfile::tempdir().unwrap();
    let reference = root.path().join("reference");
    train(&config, &options(&reference, false, None, false)).unwrap();
    let weights = |dir: &Path| std::fs::read(dir.join("last.safetensors")).unwrap();

    let mut cases = vec![
        // The checkpoint's tensor file, written as last.safetensors.next through a temp file.
        (
            "last.safetensors.next.tmp",
            FULL,
            "last.safetensors.next.tmp",
            "No space left on device",
        ),
        // The checkpoint's record: the commit; the tensor files before it are not yet published.
        (
            "last.json.tmp",
            FULL,
            "last.json.tmp",
            "No space left on device",
        ),
        // A log appended every step.
        (
            "metrics.jsonl",
            FULL,
            "metrics.jsonl",
            "No space left on device",
        ),
        // A figure of the report at the end.
        (
            "loss_curve.png",
            FULL,
            "loss_curve.png",
            "No space left on device",
        ),
        // The validation log, appended at the end.
        ("eval.jsonl", FULL, "eval.jsonl", "No space left on device"),
    ];
    if Path::new(READ_ONLY).is_file() {
        cases.push((
            "last.optim.safetensors.next.tmp",
            READ_ONLY,
            "last.optim.safetensors.next.tmp",
            "Permission denied",
        ));
        cases.push((
            "contact_sheet.png",
            READ_ONLY,
            "contact_sheet.png",
            "Permission denied",
        ));
    } else {
        eprintln!("{READ_ONLY} is missing: the permission cases are skipped");
    }
    for (i, (trap, target, named, message)) in cases.into_iter().enumerate() {
        let dir = run_to_step_2(&config, root.path(), &format!("case{i}"));
        resume_into(&config, &dir, trap, target, named, message);
        assert!(
            weights(&dir) == weights(&reference),
            "case {trap}: resumed weights differ"
        );
    }
}
