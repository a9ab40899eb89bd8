//! `cargo xtask recipe`: the synthetic-pretraining-then-real-fine-tuning recipe of
//! `docs/results.md` ("Synthetic pretraining, real fine-tuning") as one command:
//! 1. `pretrain-synthetic`, reused when its run folder already holds the finished checkpoint
//!    (resumed when it holds a partial one);
//! 2. 7-Scenes fine-tuning from that checkpoint (`--init`) and, at the same budget, from scratch;
//! 3. `glassbox eval` of the three checkpoints on the 7-Scenes validation block (frames 500-599)
//!    and zero-shot on the NYU and KITTI samples;
//! 4. `RUN_DIR/recipe.md`: AbsRel (median-scaled) per checkpoint and benchmark, and the minutes
//!    each stage took.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::{BuildEnv, run_glassbox};

#[derive(clap::Args)]
pub struct RecipeArgs {
    /// Fine-tuning updates of both 7-Scenes runs (the same budget for both).
    #[arg(long, default_value_t = 600)]
    steps: usize,
    /// Backbone learning rate of the run that starts from the synthetic checkpoint (the decoder
    /// keeps the preset's).
    #[arg(long, default_value_t = 1.5e-4)]
    lr_backbone: f64,
    /// Folder holding the run folders.
    #[arg(long, default_value = "runs")]
    run_dir: PathBuf,
}

const PRETRAIN: &str = "pretrain-synthetic";
const INIT: &str = "recipe-init";
const SCRATCH: &str = "recipe-scratch";

/// Where a run folder stands: the step of its last checkpoint and the steps it was configured
/// for, or `None` without a checkpoint.
fn progress(dir: &Path) -> Option<(u64, u64)> {
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("last.json")).ok()?).ok()?;
    let step = record.get("step")?.as_u64()?;
    let config = std::fs::read_to_string(dir.join("config.toml")).ok()?;
    let steps = config
        .lines()
        .skip_while(|l| l.trim() != "[optim]")
        .find_map(|l| l.trim().strip_prefix("steps = "))?
        .parse()
        .ok()?;
    Some((step, steps))
}

/// Runs `glassbox train ARGS --name NAME` unless NAME's folder holds a finished checkpoint (then
/// it is reused) or resumes a partial one. Returns the minutes spent (0 when reused).
fn train(env: &BuildEnv, run_dir: &Path, name: &str, args: &[String]) -> Result<f64> {
    let dir = run_dir.join(name);
    let mut args: Vec<OsString> = args.iter().map(OsString::from).collect();
    args.extend([
        "--name".into(),
        name.into(),
        "--run-dir".into(),
        run_dir.into(),
    ]);
    match progress(&dir) {
        Some((step, steps)) if step >= steps => {
            println!("reusing {} (finished, step {step})", dir.display());
            return Ok(0.0);
        }
        Some((step, _)) => {
            println!("resuming {} at step {step}", dir.display());
            args.push("--resume".into());
        }
        None => println!("training {}", dir.display()),
    }
    let started = Instant::now();
    run_glassbox(env, "train", args)?;
    Ok(started.elapsed().as_secs_f64() / 60.0)
}

/// The median-scaled AbsRel of an `eval_<kind>.md` table.
fn abs_rel(table: &Path) -> Result<f64> {
    let text =
        std::fs::read_to_string(table).with_context(|| format!("reading {}", table.display()))?;
    text.lines()
        .find(|l| l.starts_with("| model, median-scaled |"))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{} has no median-scaled AbsRel row", table.display()))
}

pub fn recipe(env: &BuildEnv, args: &RecipeArgs) -> Result<()> {
    let real = env.real_data.clone().context(
        "the recipe needs the real samples: set GLASSBOX_REAL_DATA or keep ../shared/data/real",
    )?;
    let run_dir = &args.run_dir;
    let init = run_dir.join(PRETRAIN).join("last.safetensors");
    let steps = args.steps.to_string();
    let minutes = [
        train(
            env,
            run_dir,
            PRETRAIN,
            &["--preset".into(), PRETRAIN.into(), "--quiet".into()],
        )?,
        train(
            env,
            run_dir,
            INIT,
            &[
                "--preset".into(),
                "sevenscenes".into(),
                "--init".into(),
                init.display().to_string(),
                "--lr-backbone".into(),
                args.lr_backbone.to_string(),
                "--steps".into(),
                steps.clone(),
                "--quiet".into(),
            ],
        )?,
        train(
            env,
            run_dir,
            SCRATCH,
            &[
                "--preset".into(),
                "sevenscenes".into(),
                "--steps".into(),
                steps,
                "--quiet".into(),
            ],
        )?,
    ];
    let benchmarks: [(&str, &str, PathBuf, &[&str]); 3] = [
        (
            "7-Scenes frames 500-599",
            "sevenscenes",
            real.join("7scenes-redkitchen"),
            &["--frames", "500..600"],
        ),
        (
            "NYU samples (Eigen crop)",
            "nyu",
            real.join("nyu-sync-samples"),
            &[],
        ),
        (
            "KITTI samples (Garg crop)",
            "kitti",
            real.join("kitti-samples"),
            &[],
        ),
    ];
    let mut table = String::from(
        "# Synthetic pretraining, then 7-Scenes fine-tuning\n\nAbsRel, median-scaled (lower is \
         better). Written by `cargo xtask recipe`.\n\n| checkpoint | minutes |",
    );
    for (title, ..) in &benchmarks {
        table.push_str(&format!(" {title} |"));
    }
    table.push_str("\n| --- | ---: |");
    table.push_str(&" ---: |".repeat(benchmarks.len()));
    table.push('\n');
    let rows = [
        (PRETRAIN, "synthetic only (zero-shot)"),
        (INIT, "synthetic, then 7-Scenes"),
        (SCRATCH, "7-Scenes from scratch"),
    ];
    for ((name, label), minutes) in rows.iter().zip(minutes) {
        let checkpoint = run_dir.join(name).join("last.safetensors");
        table.push_str(&format!("| {label} (`{name}`) | {minutes:.1} |"));
        for (_, kind, root, extra) in &benchmarks {
            let mut eval: Vec<OsString> = vec![
                "--checkpoint".into(),
                checkpoint.clone().into(),
                "--dataset".into(),
                (*kind).into(),
                "--root".into(),
                root.into(),
                "--quiet".into(),
            ];
            eval.extend(extra.iter().map(OsString::from));
            run_glassbox(env, "eval", eval)?;
            let value = abs_rel(&run_dir.join(name).join(format!("eval_{kind}.md")))?;
            table.push_str(&format!(" {value:.4} |"));
        }
        table.push('\n');
    }
    table.push_str(
        "\nMinutes: wall time of this invocation's training (0 = reused from an earlier \
         invocation).\n",
    );
    let out = run_dir.join("recipe.md");
    std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
    println!("{table}\nwritten to {}", out.display());
    Ok(())
}
