//! `cargo xtask`: the project's automation, written in Rust so that CI and people run the same
//! commands. It prepares libtorch and the system libraries, then runs cargo and our binaries with
//! the right environment. It never links libtorch itself.

mod bench;
mod libtorch;
mod recipe;
mod scaling;
mod screenshot;
mod system;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "glassbox automation: setup, test, data, train / eval / predict, reports, ablations, benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install or locate libtorch 2.13.0 and the system libraries (run by every other command).
    Setup,
    /// Print the environment (`export ...` lines) that xtask gives cargo, for `eval` in a shell.
    Env,
    /// Run the workspace tests: `cargo xtask test [CARGO TEST ARGS]`, e.g. `-p glassbox-losses`.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Render synthetic scenes to disk in the NYU or KITTI layout, with a contact sheet PNG.
    GenData {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Train a DPT (default: dpt-tiny on synthetic indoor scenes, CPU, a few minutes), e.g.
    /// `cargo xtask train --preset sevenscenes --attention svda`; see `glassbox train --help`.
    Train {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Evaluate a checkpoint: `--checkpoint C --dataset nyu|kitti|sevenscenes|synthetic --root PATH`.
    Eval {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run an ablation grid, resumable: `cargo xtask ablate` runs the reduced default grid
    /// (standard, svda and svda-paper x 3 readouts x 2 seeds, about 17 min on 2 cores);
    /// `--grid full|segmentation|FILE` any other.
    Ablate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Colour-mapped depth (and attention) PNGs: `--checkpoint C [--attention-layer L --token T] IMAGES...`.
    Predict {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Write a checkpoint for elsewhere: `--checkpoint C --format hf|safetensors --out PATH`.
    Export {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Synthetic pretraining (reused when finished), then 7-Scenes fine-tuning from it and from
    /// scratch, scored on 7-Scenes and zero-shot on the NYU and KITTI samples; writes
    /// runs/recipe.md (about 35 min on 2 cores).
    Recipe(recipe::RecipeArgs),
    /// Comparison page of run folders (tables, curves, spectral figures): `cargo xtask report
    /// RUN_DIR... [--out DIR]`.
    Report {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Time whole-DPT inference and train steps, ours vs HF transformers (PyTorch eager), same
    /// threads; writes target/bench/dpt.{md,json}.
    Bench(bench::BenchArgs),
    /// The reliability drills at soak size (`docs/reliability.md`): the mutational fuzz of every
    /// format we read with CASES cases per format, the kill-at-random drill with KILLS kills and
    /// the failed-write drill; each prints its counts.
    Soak {
        #[arg(long, default_value_t = 100)]
        kills: usize,
        #[arg(long, default_value_t = 20_000)]
        cases: usize,
    },
    /// Picture HTML pages as headless Chromium draws them: `cargo xtask screenshot
    /// runs/default` writes runs/default/index.png (installs Debian's chromium on first use).
    Screenshot(screenshot::ScreenshotArgs),
}

fn main() {
    // One clear sentence, not a backtrace: these errors are about the machine, not our code.
    if let Err(e) = run_cli(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run_cli(cli: Cli) -> Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    let env = BuildEnv::prepare(&root)?;
    match cli.command {
        Cmd::Bench(args) => bench::bench(&env, &root, &args)?,
        Cmd::Screenshot(args) => screenshot::screenshot(&args)?,
        Cmd::Soak { kills, cases } => {
            for (package, tests) in [
                ("glassbox-data", &["fuzz"][..]),
                ("glassbox-trainer", &["fuzz", "kill", "failed_writes"][..]),
            ] {
                let mut cmd = env.cargo("test");
                cmd.args(["-p", package]);
                for test in tests {
                    cmd.args(["--test", test]);
                }
                cmd.args(["--", "--nocapture"])
                    .env("GLASSBOX_KILL_TRIALS", kills.to_string())
                    .env("GLASSBOX_FUZZ_CASES", cases.to_string());
                run(&mut cmd)?;
            }
        }
        Cmd::Setup => {
            let t = &env.torch;
            println!("libtorch {} at {}", t.version, t.libtorch.display());
            if let Some(p) = &t.python {
                println!("python reference peer: {}", p.display());
            }
        }
        Cmd::Env => {
            for (k, v) in env.vars() {
                println!("export {}=\"{}\"", k, v.to_string_lossy());
            }
        }
        Cmd::Test { args } => {
            let mut cmd = env.cargo("test");
            if !args.iter().any(|a| {
                a == "-p" || a == "--package" || a.to_string_lossy().starts_with("--package=")
            }) {
                cmd.arg("--workspace");
            }
            run(cmd.args(args))?;
        }
        Cmd::Train { args } => run_glassbox(&env, "train", args)?,
        Cmd::Eval { args } => run_glassbox(&env, "eval", args)?,
        Cmd::Predict { args } => run_glassbox(&env, "predict", args)?,
        Cmd::Report { args } => run_glassbox(&env, "report", args)?,
        Cmd::Export { args } => run_glassbox(&env, "export", args)?,
        Cmd::Recipe(args) => recipe::recipe(&env, &args)?,
        Cmd::Ablate { args } => run_glassbox(&env, "ablate", args)?,
        Cmd::GenData { args } => {
            let mut cmd = env.cargo("run");
            cmd.args([
                "--release",
                "--quiet",
                "-p",
                "glassbox-data",
                "--features",
                "cli",
                "--bin",
                "glassbox-data",
                "--",
                "gen-data",
            ]);
            run(cmd.args(args))?;
        }
    }
    Ok(())
}

/// Runs `glassbox <subcommand> ARGS` (glassbox-trainer's binary) in release mode. Ctrl-C reaches
/// the binary too (same process group); xtask ignores it and waits, so the binary can finish its
/// checkpoint and print where to resume.
/// Cargo's arguments that select the `glassbox` binary, built optimised.
const GLASSBOX_RELEASE: [&str; 6] = [
    "--release",
    "--quiet",
    "-p",
    "glassbox-trainer",
    "--bin",
    "glassbox",
];

fn run_glassbox(env: &BuildEnv, subcommand: &str, args: Vec<OsString>) -> Result<()> {
    // The recipe runs several binaries in turn: the handler is installed once.
    match ctrlc::set_handler(|| {}) {
        Ok(()) | Err(ctrlc::Error::MultipleHandlers) => {}
        Err(e) => return Err(e).context("installing the Ctrl-C handler"),
    }
    let mut cmd = env.cargo("run");
    cmd.args(GLASSBOX_RELEASE).args(["--", subcommand]);
    cmd.args(args);
    let status = cmd.status().context("cannot start cargo")?;
    match status.code() {
        Some(0) => Ok(()),
        // Interrupted by Ctrl-C: the binary already said where things stand.
        Some(130) => std::process::exit(130),
        _ => bail!("glassbox {subcommand} failed ({status})"),
    }
}

/// The environment every cargo invocation of ours gets.
struct BuildEnv {
    torch: libtorch::Torch,
    real_data: Option<PathBuf>,
}

impl BuildEnv {
    fn prepare(root: &Path) -> Result<Self> {
        system::ensure_openblas()?;
        let torch = libtorch::ensure(&cache_dir()?)?;
        let real_data = std::env::var_os("GLASSBOX_REAL_DATA")
            .map(PathBuf::from)
            .or_else(|| Some(root.join("../shared/data/real")).filter(|p| p.is_dir()))
            .map(|p| p.canonicalize().unwrap_or(p));
        Ok(Self { torch, real_data })
    }

    fn vars(&self) -> Vec<(&'static str, OsString)> {
        // The rpath lets our binaries and tests find libtorch without LD_LIBRARY_PATH; torch's
        // own libraries find the CUDA wheels through their RUNPATH.
        let rpath = format!("-C link-arg=-Wl,-rpath,{}", self.torch.lib_dir().display());
        let with_rpath = |var: &str| match std::env::var(var) {
            Ok(user) if user.contains(&rpath) => user,
            Ok(user) if !user.trim().is_empty() => format!("{user} {rpath}"),
            _ => rpath.clone(),
        };
        let mut vars = vec![
            ("LIBTORCH", self.torch.libtorch.clone().into_os_string()),
            ("LIBTORCH_CXX11_ABI", "1".into()),
            ("RUSTFLAGS", with_rpath("RUSTFLAGS").into()),
            // Doctests are linked by rustdoc, which reads its own flags.
            ("RUSTDOCFLAGS", with_rpath("RUSTDOCFLAGS").into()),
        ];
        if let Some(p) = &self.torch.python {
            vars.push(("GLASSBOX_PYTHON", p.clone().into_os_string()));
        }
        if let Some(p) = &self.real_data {
            vars.push(("GLASSBOX_REAL_DATA", p.clone().into_os_string()));
        }
        vars
    }

    fn cargo(&self, subcommand: &str) -> Command {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.arg(subcommand);
        // LIBTORCH_USE_PYTORCH would make torch-sys ignore LIBTORCH; we resolved it already.
        cmd.env_remove("LIBTORCH_USE_PYTORCH");
        for (k, v) in self.vars() {
            cmd.env(k, v);
        }
        cmd
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!(
            "{:?} failed ({status})",
            cmd.get_args().next().unwrap_or_default()
        );
    }
    Ok(())
}

/// Outside the repository, so a fresh clone reuses the 5 GB install and `git clean` never drops it.
fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("GLASSBOX_CACHE_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("glassbox"));
    }
    let home = std::env::var_os("HOME").context("neither GLASSBOX_CACHE_DIR, XDG_CACHE_HOME nor HOME is set: set GLASSBOX_CACHE_DIR to a folder for the libtorch venv")?;
    Ok(PathBuf::from(home).join(".cache").join("glassbox"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
