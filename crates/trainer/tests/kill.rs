//! Kill-at-random (`docs/reliability.md`): `glassbox train` runs as a child process and gets
//! SIGKILL at random moments, many of them inside checkpoint writes (a checkpoint every step).
//! After every kill the last checkpoint must load with its checksums holding, and the run resumed
//! to the end must have logged every step exactly once and hold weights bit-identical to an
//! uninterrupted run of the same seed. `GLASSBOX_KILL_TRIALS` sets the number of kills (default
//! 12; `cargo xtask soak` runs more), `GLASSBOX_KILL_SEED` the moments' seed (default: the clock,
//! printed so that a failure can be replayed).

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use glassbox_trainer::TrainConfig;
use glassbox_trainer::checkpoint::{CheckpointPaths, load};
use glassbox_trainer::train::Trainer;

const STEPS: usize = 40;

fn config() -> TrainConfig {
    let mut config = TrainConfig::preset("test").unwrap();
    config.name = "kill".into();
    config.optim.steps = STEPS;
    config.schedule.checkpoint_every = 1;
    config.schedule.eval_every = 10;
    config.threads = 1;
    config
}

/// `glassbox train` of `config_file` into `root/kill`, resuming when a checkpoint is there.
fn command(config_file: &Path, root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_glassbox"));
    cmd.arg("train")
        .arg("--config")
        .arg(config_file)
        .arg("--run-dir")
        .arg(root)
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if root.join("kill/last.json").is_file() {
        cmd.arg("--resume");
    }
    cmd
}

fn run_to_end(config_file: &Path, root: &Path) {
    let out = command(config_file, root).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The steps of metrics.jsonl with their losses' bits. A kill may cut the last line short (the
/// next `--resume` drops it); a broken line anywhere else fails.
fn logged_steps(dir: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut steps = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => steps.push((
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap().to_bits(),
            )),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => panic!("metrics.jsonl holds a broken line {line:?}: {e}"),
        }
    }
    steps
}

/// Loads checkpoint `last` of `dir` as `--resume` would (checksums checked); its step.
fn checkpoint_step(config: &TrainConfig, dir: &Path) -> Option<usize> {
    if !dir.join("last.json").is_file() {
        return None;
    }
    let mut trainer = Trainer::new(config, tch::Device::Cpu).unwrap();
    let paths = CheckpointPaths::new(dir, "last");
    let (state, _) = load(&paths, &mut trainer.vs)
        .unwrap_or_else(|e| panic!("the checkpoint after a kill does not load: {e}"));
    Some(state.step)
}

/// A small deterministic generator for the kill moments.
fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn killed_at_random_moments_the_run_resumes_to_the_weights_of_an_uninterrupted_one() {
    let config = config();
    let root = tempfile::tempdir().unwrap();
    let config_file = root.path().join("kill.toml");
    std::fs::write(&config_file, config.to_toml().unwrap()).unwrap();

    let reference_root = root.path().join("reference");
    let started = Instant::now();
    run_to_end(&config_file, &reference_root);
    let whole_run = started.elapsed();
    let reference = reference_root.join("kill");

    let trials: usize = env_or("GLASSBOX_KILL_TRIALS", 12);
    let seed: u64 = env_or(
        "GLASSBOX_KILL_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    eprintln!("kill moments: GLASSBOX_KILL_SEED={seed}, {trials} trials, whole run {whole_run:?}");
    let mut rng = seed;
    let interrupted_root: PathBuf = root.path().join("interrupted");
    let dir = interrupted_root.join("kill");
    let window = whole_run.as_millis().max(50) as u64;
    let (mut killed, mut finished_before_kill, mut steps_seen) = (0, 0, Vec::new());
    let mut inside_save = 0;
    for trial in 0..trials {
        let before = checkpoint_step(&config, &dir);
        let spawned = std::time::SystemTime::now();
        let mut child = command(&config_file, &interrupted_root).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(next(&mut rng) % window));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        } else {
            finished_before_kill += 1;
        }
        let status = child.wait().unwrap();
        // A temp or uncommitted file this child wrote and left: the kill landed inside a save.
        let in_save = std::fs::read_dir(&dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let fresh = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= spawned);
                fresh && (name.ends_with(".tmp") || name.ends_with(".next"))
            })
        });
        inside_save += usize::from(in_save);
        let after = checkpoint_step(&config, &dir);
        assert!(
            after >= before,
            "trial {trial}: the checkpoint went back from {before:?} to {after:?} ({status})"
        );
        if let Some(step) = after {
            let logged: Vec<u64> = logged_steps(&dir).into_iter().map(|(s, _)| s).collect();
            // Steps after the checkpoint may be logged; resume cuts them back.
            assert!(logged.windows(2).all(|w| w[1] == w[0] + 1), "{logged:?}");
            assert!(
                logged.first() == Some(&1) && logged.last() >= Some(&(step as u64)),
                "trial {trial}: checkpoint at step {step}, steps logged {logged:?}"
            );
        }
        steps_seen.push(after.unwrap_or(0));
        if after == Some(STEPS) {
            // Finished: start over so the remaining kills land in a run too.
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    eprintln!(
        "killed {killed} times ({inside_save} inside a checkpoint save, {finished_before_kill} \
         runs ended first); checkpoints at steps {steps_seen:?}"
    );
    assert!(
        killed >= trials / 2,
        "only {killed} of {trials} trials killed a running child"
    );

    run_to_end(&config_file, &interrupted_root);
    assert_eq!(logged_steps(&dir), logged_steps(&reference));
    let steps: Vec<u64> = logged_steps(&dir).into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, (1..=STEPS as u64).collect::<Vec<_>>());
    let weights = |d: &Path| std::fs::read(d.join("last.safetensors")).unwrap();
    assert!(
        weights(&dir) == weights(&reference),
        "the resumed weights differ from the uninterrupted run's"
    );
}
