//! `cargo xtask bench --distributed`: data-parallel training measured through the `glassbox`
//! binary (docs/distributed.md, "Scaling"). One process against N processes at the same threads
//! per process: time per update, the share of it spent in the gradient all-reduce, and the
//! same-arithmetic check (N x b against 1 x b accumulating N micro-batches) that tells a correct
//! all-reduce from a wrong one on any backend, Gloo here or NCCL on a GPU machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::{BuildEnv, GLASSBOX_RELEASE, run};

/// What one configuration of the measurement is.
struct Case {
    name: &'static str,
    nproc: usize,
    batch: usize,
    accumulate: usize,
}

/// One run's numbers from its `metrics.jsonl`, between the first logged step (warm-up, compiles
/// and the first batches excluded) and the last.
struct Timing {
    step_seconds: f64,
    allreduce_share: Option<f64>,
    losses: Vec<f64>,
}

/// Options of the distributed measurement (a subset of `cargo xtask bench`'s).
pub struct Options {
    pub nproc: usize,
    pub threads: u32,
    pub device: String,
    pub steps: usize,
    pub batch: usize,
}

pub fn bench(env: &BuildEnv, root: &Path, target: &Path, options: &Options) -> Result<()> {
    let Options {
        nproc,
        threads,
        steps,
        batch,
        ..
    } = *options;
    ensure!(
        nproc >= 2,
        "--nproc must be at least 2 to compare against one process"
    );
    ensure!(
        batch % nproc == 0,
        "--batch {batch} must divide among --nproc {nproc} processes"
    );
    ensure!(
        steps >= 20,
        "--steps must be at least 20 (the first 10 are warm-up)"
    );
    let mut cargo = env.cargo("build");
    cargo.args(GLASSBOX_RELEASE);
    run(&mut cargo)?;
    let binary = target.join("release").join("glassbox");
    let runs = target.join("bench").join("distributed-runs");
    if runs.is_dir() {
        std::fs::remove_dir_all(&runs)
            .with_context(|| format!("cannot clear {}", runs.display()))?;
    }
    let cases = [
        Case {
            name: "one",
            nproc: 1,
            batch,
            accumulate: 1,
        },
        Case {
            name: "weak",
            nproc,
            batch,
            accumulate: 1,
        },
        Case {
            name: "strong",
            nproc,
            batch: batch / nproc,
            accumulate: 1,
        },
        Case {
            name: "accumulated",
            nproc: 1,
            batch: batch / nproc,
            accumulate: nproc,
        },
    ];
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut timings = Vec::new();
    for case in &cases {
        eprintln!(
            "bench --distributed: {} ({} process(es) x batch {} x accumulate {}, {threads} \
             thread(s) each, {} steps on {})",
            case.name, case.nproc, case.batch, case.accumulate, steps, options.device
        );
        let mut command = Command::new(&binary);
        command
            .current_dir(root)
            .args(["train", "--preset", "default", "--quiet"])
            .args(["--name", case.name])
            .arg("--run-dir")
            .arg(&runs)
            .args(["--steps", &steps.to_string()])
            .args(["--batch-size", &case.batch.to_string()])
            .args(["--accumulate", &case.accumulate.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--device", &options.device])
            .args(["--nproc", &case.nproc.to_string()])
            .env_remove("RANK")
            .env_remove("WORLD_SIZE");
        let status = command
            .status()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        if !status.success() {
            bail!("the {} run failed ({status})", case.name);
        }
        timings.push(read_timing(&runs.join(case.name).join("metrics.jsonl"))?);
    }
    let (one, weak, strong, accumulated) = (&timings[0], &timings[1], &timings[2], &timings[3]);
    let gap = strong
        .losses
        .iter()
        .zip(&accumulated.losses)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1e-12))
        .fold(0.0, f64::max);
    let share = |t: &Timing| {
        t.allreduce_share
            .map_or("–".to_string(), |s| format!("{:.1} %", 100.0 * s))
    };
    let throughput = |t: &Timing, images: usize| images as f64 / t.step_seconds;
    let table = format!(
        "| run | processes x batch | s / update | images / s | all-reduce share |\n\
         |---|---|---|---|---|\n\
         | one process | 1 x {batch} | {:.3} | {:.1} | – |\n\
         | weak scaling | {nproc} x {batch} | {:.3} | {:.1} | {} |\n\
         | strong scaling | {nproc} x {} | {:.3} | {:.1} | {} |\n\n\
         Weak-scaling speed-up in images/s: {:.2}x; strong-scaling speed-up per update: {:.2}x.\n\
         Same arithmetic ({nproc} x {} against 1 x {} accumulating {nproc}): largest relative \
         loss gap over the logged steps {gap:.2e}.\n",
        one.step_seconds,
        throughput(one, batch),
        weak.step_seconds,
        throughput(weak, batch * nproc),
        share(weak),
        batch / nproc,
        strong.step_seconds,
        throughput(strong, batch),
        share(strong),
        throughput(weak, batch * nproc) / throughput(one, batch),
        one.step_seconds / strong.step_seconds,
        batch / nproc,
        batch / nproc,
    );
    println!("{table}");
    let suffix = if options.device == "cpu" {
        String::new()
    } else {
        format!("-{}", options.device.replace(':', ""))
    };
    let dir = target.join("bench");
    let md = dir.join(format!("distributed{suffix}.md"));
    let header = format!(
        "# Data-parallel scaling (`cargo xtask bench --distributed --nproc {nproc} --threads \
         {threads} --device {} --steps {steps} --batch {batch}`)\n\npreset default (dpt-tiny, \
         64x64 synthetic rooms); times between logged steps 10 and {steps}; load average \
         before: {}\n\n",
        options.device,
        load_before.split_whitespace().next().unwrap_or("?")
    );
    std::fs::write(&md, header + &table)
        .with_context(|| format!("cannot write {}", md.display()))?;
    let record = json!({
        "nproc": nproc, "threads": threads, "device": options.device, "steps": steps,
        "batch": batch,
        "runs": cases.iter().zip(&timings).map(|(c, t)| json!({
            "name": c.name, "nproc": c.nproc, "batch": c.batch, "accumulate": c.accumulate,
            "step_seconds": t.step_seconds, "allreduce_share": t.allreduce_share,
        })).collect::<Vec<_>>(),
        "same_arithmetic_loss_gap": gap,
    });
    let json_path = md.with_extension("json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&record)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    eprintln!("wrote {} and {}", md.display(), json_path.display());
    ensure!(
        gap <= 1e-5,
        "the {nproc}-process run does not reproduce one process accumulating {nproc} \
         micro-batches (loss gap {gap:.2e} > 1e-5): the all-reduce is wrong on this backend"
    );
    Ok(())
}

fn read_timing(path: &PathBuf) -> Result<Timing> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("{} is not JSON lines", path.display()))?;
    ensure!(
        lines.len() >= 2,
        "{} has fewer than two logged steps",
        path.display()
    );
    let (first, last) = (&lines[0], &lines[lines.len() - 1]);
    let get = |v: &Value, key: &str| v[key].as_f64();
    let steps = get(last, "step").unwrap_or(0.0) - get(first, "step").unwrap_or(0.0);
    let seconds = get(last, "time").unwrap_or(0.0) - get(first, "time").unwrap_or(0.0);
    ensure!(
        steps > 0.0 && seconds > 0.0,
        "{} has no timed steps",
        path.display()
    );
    let allreduce_share = match (get(first, "allreduce_s"), get(last, "allreduce_s")) {
        (Some(a), Some(b)) => Some((b - a) / seconds),
        _ => None,
    };
    Ok(Timing {
        step_seconds: seconds / steps,
        allreduce_share,
        losses: lines.iter().filter_map(|v| get(v, "loss")).collect(),
    })
}
