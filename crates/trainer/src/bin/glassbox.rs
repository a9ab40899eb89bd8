//! `glassbox`: train, evaluate and run DPT depth models (DESIGN.md section 11).
//!
//! - `glassbox train [--preset default|sevenscenes] [--config FILE] [overrides] [--resume]`
//! - `glassbox eval --checkpoint runs/NAME/best.safetensors --dataset nyu|kitti|sevenscenes|synthetic --root PATH`
//! - `glassbox predict --checkpoint C [--depth16] [--attention-layer L --token T] IMAGES...`
//! - `glassbox report RUN_DIR... [--out DIR]` (spectral figures and index.html)
//! - `glassbox ablate [--grid default|full|FILE] [--out DIR]` (a resumable ablation grid)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use glassbox_attention::AttentionKind;
use glassbox_losses::LossConfig;
use glassbox_metrics::DepthEvalConfig;
use glassbox_trainer::ablate::{self, AblateOptions, Grid};
use glassbox_trainer::config::TrainConfig;
use glassbox_trainer::predict::{self, PredictOptions};
use glassbox_trainer::train::{TrainOptions, resolve_device};
use glassbox_trainer::{data, eval};

#[derive(Parser)]
#[command(
    name = "glassbox",
    about = "Train, evaluate and run glassbox DPT depth models"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Attention {
    Standard,
    Svda,
}

#[derive(Clone, Copy, ValueEnum)]
enum LossKind {
    Midas,
    Silog,
}

#[derive(Clone, Copy, ValueEnum)]
enum EvalDataset {
    Nyu,
    Kitti,
    Sevenscenes,
    Synthetic,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model; the run folder gets config.toml, logs, checkpoints and a report.
    Train {
        /// Named preset: default (dpt-tiny, synthetic indoor) or sevenscenes.
        #[arg(long, default_value = "default")]
        preset: String,
        /// A TOML file with a whole configuration (replaces the preset).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum)]
        attention: Option<Attention>,
        /// Training loss: midas (SSI + gradient, disparity) or silog (depth = 1 / disparity).
        #[arg(long, value_enum)]
        loss: Option<LossKind>,
        #[arg(long)]
        steps: Option<usize>,
        #[arg(long)]
        batch_size: Option<usize>,
        /// Gradient accumulation: micro-batches per update.
        #[arg(long)]
        accumulate: Option<usize>,
        /// Decoder learning rate; the backbone's keeps its ratio to it.
        #[arg(long)]
        lr: Option<f64>,
        /// Learning rate of SVDA's sigma (default: the backbone's).
        #[arg(long)]
        lr_sigma: Option<f64>,
        /// Square image size, or HxW.
        #[arg(long)]
        image_size: Option<String>,
        /// 7-Scenes sequence folder (sevenscenes preset).
        #[arg(long)]
        data_root: Option<PathBuf>,
        /// Folder holding run folders.
        #[arg(long, default_value = "runs")]
        run_dir: PathBuf,
        /// Run name (the run folder is RUN_DIR/NAME).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        seed: Option<u64>,
        /// auto, cpu, cuda or cuda:N.
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        threads: Option<usize>,
        /// No progress bar or log lines; only the final table.
        #[arg(long)]
        quiet: bool,
        /// Continue the run from RUN_DIR/NAME/last.safetensors with its saved config.
        #[arg(long)]
        resume: bool,
    },
    /// Evaluate a checkpoint on a benchmark folder and write the metric table beside it.
    Eval {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, value_enum)]
        dataset: EvalDataset,
        #[arg(long)]
        root: PathBuf,
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Write colour-mapped depth (and optionally attention) PNGs for images.
    Predict {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output folder (default: RUN/predictions).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write 16-bit depth PNGs (relative depth, median 1000).
        #[arg(long)]
        depth16: bool,
        /// Encoder layer (0-based) of the attention map.
        #[arg(long, requires = "token")]
        attention_layer: Option<usize>,
        /// Query token of the attention map (0 = readout, 1.. = patches row-major).
        #[arg(long, requires = "attention_layer")]
        token: Option<usize>,
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Run an ablation grid (attention x readout x hooks x seeds) in sequence; finished runs are
    /// skipped, a partial run resumes, Ctrl-C stops with a checkpoint. Writes results.csv,
    /// runs.csv, results.md and figures/ in OUT/<grid name>.
    Ablate {
        /// A shipped grid (default: standard vs SVDA x 3 readouts x 2 seeds, about 30 min on 2
        /// cores; full: 54 runs) or a grid TOML file.
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
    /// Spectral report of run folders: indicator figures (SVG + PNG) and an index.html.
    Report {
        /// Run folders holding spectral.jsonl (e.g. runs/default runs/default-svda).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Output folder (default: RUN/spectral-report for one run, else spectral-report beside
        /// the first run).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn parse_size(text: &str) -> Result<[usize; 2]> {
    let parse = |s: &str| {
        s.trim()
            .parse::<usize>()
            .with_context(|| format!("bad image size {text:?}"))
    };
    Ok(match text.split_once(['x', 'X']) {
        Some((h, w)) => [parse(h)?, parse(w)?],
        None => {
            let s = parse(text)?;
            [s, s]
        }
    })
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

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Train {
            preset,
            config,
            attention,
            loss,
            steps,
            batch_size,
            accumulate,
            lr,
            lr_sigma,
            image_size,
            data_root,
            run_dir,
            name,
            seed,
            device,
            threads,
            quiet,
            resume,
        } => {
            let mut cfg = match &config {
                Some(path) => TrainConfig::from_file(path)?,
                None => TrainConfig::preset(&preset)?,
            };
            if let Some(name) = name {
                cfg.name = name;
            }
            let dir = run_dir.join(&cfg.name);
            if resume {
                cfg = TrainConfig::from_file(&dir.join("config.toml"))
                    .with_context(|| format!("--resume needs the run folder {}", dir.display()))?;
            }
            if let Some(a) = attention {
                cfg.set_attention(match a {
                    Attention::Standard => AttentionKind::Standard,
                    Attention::Svda => AttentionKind::Svda,
                });
            }
            if let Some(kind) = loss {
                cfg.loss.loss = match kind {
                    LossKind::Midas => LossConfig::Midas(Default::default()),
                    LossKind::Silog => LossConfig::Silog(Default::default()),
                };
            }
            if let Some(v) = steps {
                cfg.optim.steps = v;
            }
            if let Some(v) = batch_size {
                cfg.optim.batch_size = v;
            }
            if let Some(v) = accumulate {
                cfg.optim.accumulate = v;
            }
            if let Some(v) = lr {
                let ratio = cfg.optim.lr_backbone / cfg.optim.lr_decoder;
                cfg.optim.lr_decoder = v;
                cfg.optim.lr_backbone = v * ratio;
            }
            if lr_sigma.is_some() {
                cfg.optim.lr_sigma = lr_sigma;
            }
            if let Some(s) = image_size {
                cfg.data.image_size = parse_size(&s)?;
            }
            if let Some(root) = data_root {
                cfg.set_data_root(root).context("--data-root")?;
            }
            if let Some(v) = seed {
                cfg.seed = v;
            }
            if let Some(v) = device {
                cfg.device = v;
            }
            if let Some(v) = threads {
                cfg.threads = v;
            }
            cfg.validate()?;
            let options = TrainOptions {
                run_dir: dir.clone(),
                resume,
                quiet,
                stop_after: None,
                report: true,
                interrupt: Some(interrupt_flag()?),
            };
            let summary = glassbox_trainer::train(&cfg, &options)?;
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
            println!(
                "{} steps in {:.1} s; run folder {} (report.md, loss_curve.png, contact_sheet.png, \
                 last.safetensors, best.safetensors)",
                summary.steps,
                summary.seconds,
                summary.run_dir.display()
            );
        }
        Cmd::Eval {
            checkpoint,
            dataset,
            root,
            device,
        } => {
            let device = resolve_device(&device)?;
            let loaded = predict::load_checkpoint(&checkpoint, device)?;
            let (kind, protocol) = match dataset {
                EvalDataset::Nyu => ("nyu", DepthEvalConfig::nyu()),
                EvalDataset::Kitti => ("kitti", DepthEvalConfig::kitti()),
                EvalDataset::Sevenscenes => (
                    "sevenscenes",
                    DepthEvalConfig::nyu().with_crop(glassbox_metrics::Crop::None),
                ),
                EvalDataset::Synthetic => (
                    "synthetic",
                    DepthEvalConfig::nyu().with_crop(glassbox_metrics::Crop::None),
                ),
            };
            let files = data::open_eval_dataset(kind, &root)?;
            let short = loaded.config.data.image_size[0].min(loaded.config.data.image_size[1]);
            let report = eval::evaluate_files(
                &loaded.model,
                loaded.config.output_map().as_ref(),
                &files,
                short,
                device,
                protocol,
            )?;
            let table = format!(
                "# Evaluation of {} on {kind} ({})\n\n{}",
                checkpoint.display(),
                root.display(),
                report.markdown()
            );
            println!("{table}");
            let out = checkpoint
                .parent()
                .unwrap_or(Path::new("."))
                .join(format!("eval_{kind}.md"));
            std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
            println!("written to {}", out.display());
        }
        Cmd::Predict {
            checkpoint,
            out,
            depth16,
            attention_layer,
            token,
            device,
            images,
        } => {
            let device = resolve_device(&device)?;
            let loaded = predict::load_checkpoint(&checkpoint, device)?;
            let out = out.unwrap_or_else(|| {
                checkpoint
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("predictions")
            });
            let options = PredictOptions {
                depth16,
                attention: attention_layer.zip(token),
            };
            for path in predict::predict_files(&loaded, &images, &out, &options, device)? {
                println!("{}", path.display());
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
                [one] => one.join("spectral-report"),
                [first, ..] => first
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("spectral-report"),
                [] => PathBuf::from("spectral-report"),
            });
            let report = glassbox_spectral::report::render(&runs, &out)
                .with_context(|| format!("rendering the spectral report into {}", out.display()))?;
            println!(
                "{} ({} figures)",
                report.index.display(),
                report.figures.len()
            );
        }
    }
    Ok(())
}
