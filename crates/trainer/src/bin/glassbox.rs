//! `glassbox`: train, evaluate and run DPT depth and segmentation models (`docs/training.md`). A
//! thin layer over glassbox-trainer: parse flags, call the library, print where things went.
//!
//! - `glassbox train [--preset default|sevenscenes|segmentation|test] [--config FILE]
//!   [--task depth|segmentation] [--decoder dpt|depict-sa|depict-ca] [overrides] [--resume]`
//! - `glassbox eval --checkpoint C --dataset nyu|kitti|sevenscenes|folder|synthetic|ade20k --root PATH`
//! - `glassbox predict --checkpoint C [--depth16] [--attention-layer L --token T] IMAGES...`
//! - `glassbox export --checkpoint C --format hf|safetensors --out PATH` (an HF folder, or one file
//!   with the config in its metadata)
//! - `glassbox report RUN_DIR... [--out DIR]` (a comparison page: metric tables side by side,
//!   training curves overlaid, spectral figures)
//! - `glassbox ablate [--grid default|full|segmentation|FILE] [--out DIR]` (a resumable ablation grid)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use glassbox_data::{ReaderOptions, SourceConfig};
use glassbox_distributed::Launch;
use glassbox_metrics::{Crop, DepthEvalConfig};
use glassbox_trainer::ablate::{self, AblateOptions, Grid};
use glassbox_trainer::config::{Task, TrainConfig};
use glassbox_trainer::eval;
use glassbox_trainer::launcher::{LaunchOutcome, LocalLaunch, launch_local};
use glassbox_trainer::overrides::{DatasetKind, Overrides};
use glassbox_trainer::predict::{self, PredictOptions};
use glassbox_trainer::train::{TrainOptions, resolve_device};
use glassbox_trainer::weights;

#[derive(Parser)]
#[command(
    name = "glassbox",
    about = "Train, evaluate and run glassbox DPT depth and segmentation models"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model; the run folder gets config.toml, logs, checkpoints and a report.
    Train(TrainArgs),
    /// Evaluate a checkpoint on a benchmark folder (every frame present, or a split or frame
    /// range) and write the metric table beside it.
    Eval(EvalArgs),
    /// Write colour-mapped depth, or class maps with a legend, (and optionally attention) PNGs
    /// for images.
    Predict {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output folder (default: RUN/predictions).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write 16-bit depth PNGs (relative depth, median 1000).
        #[arg(long)]
        depth16: bool,
        /// Encoder layer (1-based, as the hooks and the spectral figures number them) of the
        /// attention map.
        #[arg(long, requires = "token")]
        attention_layer: Option<usize>,
        /// Query token of the attention map (0 = readout, 1.. = patches row-major).
        #[arg(long, requires = "attention_layer")]
        token: Option<usize>,
        /// Sparse token updates at this keep ratio in (0, 1] (1 = dense; default: the one the
        /// checkpoint was trained with). Below 1 it writes `<stem>_kept.png`, the kept tokens.
        #[arg(long)]
        keep_ratio: Option<f64>,
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Write a checkpoint for use elsewhere. `--format hf` writes an HF folder (model.safetensors
    /// and config.json) that transformers' `DPTForDepthEstimation.from_pretrained` loads;
    /// `--format safetensors` writes one file with our names and the run config in its
    /// metadata, which `--init`, `eval` and `predict` read without the run folder.
    Export {
        /// A run checkpoint, a glassbox export or an HF folder.
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// The HF folder, or the .safetensors file, to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run an ablation grid (decoder x attention x readout x hooks x seeds) in sequence; finished runs are
    /// skipped, a partial run resumes, Ctrl-C stops with a checkpoint. Writes results.csv,
    /// runs.csv, results.md and figures/ in OUT/<grid name>.
    Ablate {
        /// A shipped grid (default: standard vs SVDA x 3 readouts x 2 seeds; full: 54 runs;
        /// segmentation: DPT head vs DEPICT-SA vs DEPICT-CA x 2 seeds) or a grid TOML file.
        #[arg(long, default_value = "default")]
        grid: String,
        /// Folder holding ablation folders.
        #[arg(long, default_value = "ablations")]
        out: PathBuf,
        /// auto, cpu, cuda or cuda:N (default: the grid's base preset's).
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        quiet: bool,
    },
    /// Compare run folders on one self-contained page, OUT/index.html: the metric tables side by
    /// side (a column per run: task, decoder, attention, steps, parameters and the last
    /// validation's scores), the training loss and headline validation metric overlaid (a curve
    /// per run), and the spectral indicator figures of the runs that logged probes.
    Report {
        /// Run folders that have validated at least once (they hold eval.jsonl), e.g.
        /// runs/default runs/default-svda.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Output folder (default: RUN/report for one run, else comparison beside the first
        /// run).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// What `glassbox export` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// An HF `DPTForDepthEstimation` / `DPTForSemanticSegmentation` folder.
    Hf,
    /// One safetensors file, our names, config in the metadata.
    Safetensors,
}

/// The flags of `glassbox train`.
#[derive(clap::Args)]
struct TrainArgs {
    /// Named preset: default (dpt-tiny depth, synthetic indoor), sevenscenes, segmentation
    /// (dpt-tiny classes of synthetic indoor scenes) or test.
    #[arg(long, default_value = "default")]
    preset: String,
    /// A TOML file with a whole configuration (replaces the preset).
    #[arg(long)]
    config: Option<PathBuf>,
    // Boxed: the flags are most of the parsed command line.
    #[command(flatten)]
    overrides: Box<Overrides>,
    /// Folder holding run folders.
    #[arg(long, default_value = "runs")]
    run_dir: PathBuf,
    /// No progress bar or log lines; only the final table.
    #[arg(long)]
    quiet: bool,
    /// Continue the run from RUN_DIR/NAME/last.safetensors with its saved config.
    #[arg(long)]
    resume: bool,
    /// Data-parallel processes to start on this machine (torchrun-style; each gets the
    /// preset's batch, so the effective batch is N times larger). Ranks started by another
    /// launcher read RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT instead.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    nproc: u16,
    /// Port of the rendezvous on 127.0.0.1 for --nproc (default: MASTER_PORT, else a free
    /// port).
    #[arg(long, requires = "nproc")]
    master_port: Option<u16>,
}

/// Where outputs about a model file go by default: beside a checkpoint, inside an HF folder.
fn beside(checkpoint: &Path) -> PathBuf {
    if checkpoint.is_dir() {
        checkpoint.to_path_buf()
    } else {
        checkpoint.parent().unwrap_or(Path::new(".")).to_path_buf()
    }
}

/// The flags of `glassbox eval`.
#[derive(clap::Args)]
struct EvalArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, value_enum)]
    dataset: DatasetKind,
    #[arg(long)]
    root: PathBuf,
    /// Split list (NYU, KITTI) to score instead of every image in the folder.
    #[arg(long)]
    split: Option<PathBuf>,
    /// 7-Scenes frame numbers FIRST..END (end excluded) instead of every frame found.
    #[arg(long, value_parser = parse_range)]
    frames: Option<[usize; 2]>,
    /// Metres per unit of a folder dataset's 16-bit depth PNGs.
    #[arg(long, default_value_t = 0.001)]
    depth_scale: f32,
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long)]
    quiet: bool,
}

fn parse_range(text: &str) -> Result<[usize; 2], String> {
    let bad = || format!("frame range {text:?}: expected FIRST..END, e.g. 0..600");
    let (a, b) = text.split_once("..").ok_or_else(bad)?;
    let (a, b) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a >= b {
        return Err(bad());
    }
    Ok([a, b])
}

/// A flag Ctrl-C sets, so training stops after the current update with a checkpoint; a second
/// Ctrl-C quits at once (checkpoints are written atomically, so even that loses no saved state).
fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let seen = flag.clone();
    ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step with a checkpoint (Ctrl-C again to quit now)");
    })
    .context("installing the Ctrl-C handler")?;
    Ok(flag)
}

/// `glassbox train --nproc N` without a launch in the environment: start the N ranks (this same
/// command line) and wait for them.
fn launch_ranks(nproc: usize, master_port: Option<u16>) -> Result<()> {
    let program = std::env::current_exe().context("finding the glassbox executable")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let options = LocalLaunch {
        nproc,
        master_port,
        grace: Duration::from_secs(60),
        interrupt: Some(interrupt_flag()?),
    };
    match launch_local(&program, &args, &options)? {
        LaunchOutcome::Finished => Ok(()),
        LaunchOutcome::Interrupted => std::process::exit(130),
    }
}

fn train(args: TrainArgs) -> Result<()> {
    let TrainArgs {
        preset,
        config,
        overrides,
        run_dir,
        quiet,
        resume,
        nproc,
        master_port,
    } = args;
    let nproc = usize::from(nproc);
    let launch = Launch::from_env()?;
    match &launch {
        None if nproc > 1 => return launch_ranks(nproc, master_port),
        Some(l) if nproc > 1 && l.world_size != nproc => bail!(
            "--nproc {nproc} disagrees with WORLD_SIZE={}; a launcher already started this rank",
            l.world_size
        ),
        _ => {}
    }
    let world = launch.as_ref().map_or(1, |l| l.world_size);
    let mut cfg = match &config {
        Some(path) => TrainConfig::from_file(path)?,
        None => TrainConfig::preset(&preset)?,
    };
    let name = overrides.name.clone().unwrap_or_else(|| cfg.name.clone());
    let dir = run_dir.join(&name);
    if resume {
        cfg = TrainConfig::from_run_file(&dir.join("config.toml"))
            .with_context(|| format!("--resume needs the run folder {}", dir.display()))?;
    }
    if resume && cfg.distributed.world_size != world {
        bail!(
            "run {} was trained by {} process(es) and this launch has {world}; resume it with \
             --nproc {} (each rank's share of the data depends on the world size)",
            dir.display(),
            cfg.distributed.world_size,
            cfg.distributed.world_size
        );
    }
    cfg.distributed.world_size = world;
    overrides.apply(&mut cfg)?;
    let options = TrainOptions {
        resume,
        quiet,
        interrupt: Some(interrupt_flag()?),
        launch,
        ..TrainOptions::new(dir)
    };
    let summary = glassbox_trainer::train(&cfg, &options)?;
    // Rank 0 speaks for a data-parallel run.
    let speaks = options.launch.as_ref().is_none_or(Launch::is_writer);
    if summary.interrupted && !speaks {
        std::process::exit(130);
    }
    if !speaks {
        return Ok(());
    }
    if summary.interrupted {
        println!(
            "interrupted at step {} of {}; continue with `glassbox train --name {} --resume`",
            summary.steps, cfg.optim.steps, cfg.name
        );
        std::process::exit(130);
    }
    if let Some(report) = &summary.eval {
        println!("\n{}", report.markdown());
    }
    if summary.skipped_samples > 0 {
        println!(
            "{} samples failed to load and were skipped",
            summary.skipped_samples
        );
    }
    println!(
        "{} steps in {:.1} s ({:.1} s of updates, {:.1} images/s); run folder {} (index.html: \
         the run's page with every figure; report.md, last.safetensors, best.safetensors)",
        summary.steps,
        summary.seconds,
        summary.update_seconds,
        summary.images_per_second,
        summary.run_dir.display()
    );
    Ok(())
}

fn evaluate(args: EvalArgs) -> Result<()> {
    let EvalArgs {
        checkpoint,
        dataset,
        root,
        split,
        frames,
        depth_scale,
        device,
        quiet,
    } = args;
    let device = resolve_device(&device)?;
    let loaded = predict::load_checkpoint(&checkpoint, device)?;
    let mut source = dataset.files(root, split, Some(depth_scale));
    if let SourceConfig::SevenScenes { frames: f, .. } = &mut source {
        *f = frames;
    }
    // Benchmark protocols for the benchmarks; rendered scenes, 7-Scenes and folders have any
    // size and no standard crop.
    let protocol = match dataset {
        DatasetKind::Nyu => DepthEvalConfig::nyu(),
        DatasetKind::Kitti => DepthEvalConfig::kitti(),
        _ => DepthEvalConfig::nyu().with_crop(Crop::None),
    };
    let kind = format!("{dataset:?}").to_lowercase();
    let [h, w] = loaded.config.data.image_size;
    let options = ReaderOptions {
        num_classes: loaded.config.num_classes(),
        ..ReaderOptions::default()
    };
    let files = source
        .open((h, w), options)
        .with_context(|| format!("opening {}", source.describe()))?;
    let table = if loaded.config.task() == Task::Segmentation {
        eval::evaluate_segmentation_dataset(
            &loaded.model,
            &files,
            h.min(w),
            device,
            &loaded.config.class_names(),
            quiet,
        )?
        .markdown()
    } else {
        eval::evaluate_dataset(
            &loaded.model,
            loaded.config.output_map().as_ref(),
            &files,
            h.min(w),
            device,
            protocol,
            quiet,
        )?
        .markdown()
    };
    let table = format!(
        "# Evaluation of {} on {}\n\n{table}",
        checkpoint.display(),
        source.describe(),
    );
    println!("{table}");
    let out = beside(&checkpoint).join(format!("eval_{kind}.md"));
    std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
    println!("written to {}", out.display());
    Ok(())
}

/// Bad input ends with one line naming the file or value (the error and its causes), never a
/// backtrace, whatever RUST_BACKTRACE says.
fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("{}", one_line(&e.to_string()));
            return std::process::ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain_once(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes as one line, each cause once: most of our errors already quote their
/// cause, and anyhow's chain would repeat it.
fn chain_once(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// A command-line error as one line: clap's message and its possible values, without the usage
/// block and the pointer to --help that follow it.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(cli: Cli) -> Result<()> {
    // libtorch owns the cores; OpenBLAS (the indicators' LAPACK) must not start a second pool.
    glassbox_spectral::single_threaded_blas();
    match cli.command {
        Cmd::Train(args) => train(args)?,
        Cmd::Eval(args) => evaluate(args)?,
        Cmd::Predict {
            checkpoint,
            out,
            depth16,
            attention_layer,
            token,
            keep_ratio,
            device,
            images,
        } => {
            let device = resolve_device(&device)?;
            let mut loaded = predict::load_checkpoint(&checkpoint, device)?;
            if let Some(rho) = keep_ratio {
                predict::set_keep_ratio(&mut loaded, rho)?;
            }
            let out = out.unwrap_or_else(|| beside(&checkpoint).join("predictions"));
            let options = PredictOptions {
                depth16,
                attention: attention_layer.zip(token),
            };
            for path in predict::predict_files(&loaded, &images, &out, &options, device)? {
                println!("{}", path.display());
            }
        }
        Cmd::Export {
            checkpoint,
            format,
            out,
        } => {
            let loaded = predict::load_checkpoint(&checkpoint, tch::Device::Cpu)?;
            match format {
                ExportFormat::Hf => {
                    for path in weights::export_hf(&loaded.vs, &loaded.config, &out)? {
                        println!("{}", path.display());
                    }
                }
                ExportFormat::Safetensors => {
                    weights::export_single(&loaded.vs, &loaded.config, &out)?;
                    println!("{}", out.display());
                }
            }
        }
        Cmd::Ablate {
            grid,
            out,
            device,
            threads,
            quiet,
        } => {
            let grid = Grid::load(&grid)?;
            let options = AblateOptions {
                out,
                device,
                threads,
                quiet,
                interrupt: Some(interrupt_flag()?),
            };
            let summary = ablate::run_grid(&grid, &options)?;
            let table = summary.dir.join("results.md");
            if summary.interrupted {
                println!(
                    "interrupted; {} of {} runs finished, partial table in {}. Run the same \
                     command again to resume.",
                    summary.results.len(),
                    summary.planned,
                    table.display()
                );
                std::process::exit(130);
            }
            println!(
                "table: {} (also results.csv, runs.csv, figures/)",
                table.display()
            );
        }
        Cmd::Report { runs, out } => {
            let out = out.unwrap_or_else(|| match runs.as_slice() {
                [one] => one.join("report"),
                [first, ..] => first.parent().unwrap_or(Path::new(".")).join("comparison"),
                [] => PathBuf::from("comparison"),
            });
            let page = glassbox_trainer::comparison::compare(&runs, &out)?;
            println!(
                "{} ({} figures; spectral figures of {} of {} runs)",
                page.index.display(),
                page.figures.len(),
                page.spectral_runs,
                runs.len()
            );
        }
    }
    Ok(())
}
