//! `glassbox-data gen-data`: writes a synthetic dataset in the NYU or KITTI layout with split
//! lists and a contact sheet (run by `cargo xtask gen-data`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use glassbox_data::layout::{Layout, WriteOptions, write_synthetic};
use glassbox_data::render::{LidarConfig, SceneKind, SyntheticConfig, SyntheticDataset};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(name = "glassbox-data", about = "Synthetic RGB-D data for glassbox")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render N synthetic samples and write them in the NYU or KITTI layout.
    GenData {
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Number of samples.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Scene family: indoor or outdoor.
        #[arg(long, default_value = "indoor")]
        kind: SceneKind,
        /// On-disk layout: nyu or kitti.
        #[arg(long, default_value = "nyu")]
        layout: Layout,
        /// Image size WxH, e.g. 320x256.
        #[arg(long, default_value = "320x256")]
        size: String,
        /// Dataset seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Share of samples (the last ones) listed in test.txt.
        #[arg(long, default_value_t = 0.2)]
        test_fraction: f32,
        /// Sparse LiDAR-like ground truth (64 beams), as in KITTI.
        #[arg(long)]
        lidar: bool,
        /// Rows in contact_sheet.png.
        #[arg(long, default_value_t = 6)]
        sheet_rows: usize,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

fn parse_size(size: &str) -> Result<(usize, usize)> {
    let (w, h) = size
        .split_once(['x', 'X'])
        .with_context(|| format!("size {size:?} is not WxH"))?;
    let w: usize = w
        .trim()
        .parse()
        .with_context(|| format!("width in {size:?} is not a number"))?;
    let h: usize = h
        .trim()
        .parse()
        .with_context(|| format!("height in {size:?} is not a number"))?;
    if w == 0 || h == 0 {
        bail!("size {size:?} has a zero side");
    }
    Ok((w, h))
}

/// Bad input ends with one line naming the value or file, never a backtrace.
fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let Command::GenData {
        out,
        count,
        kind,
        layout,
        size,
        seed,
        test_fraction,
        lidar,
        sheet_rows,
        quiet,
    } = cli.command;
    let (width, height) = parse_size(&size)?;
    let config = SyntheticConfig {
        kind,
        width,
        height,
        len: count,
        seed,
        lidar: lidar.then(LidarConfig::default),
    };
    let dataset = SyntheticDataset::new(config)?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(count as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} rendering [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    let start = Instant::now();
    let options = WriteOptions {
        layout,
        test_fraction,
        sheet_rows,
    };
    let summary = write_synthetic(&dataset, &out, options, &|| bar.inc(1))
        .with_context(|| format!("writing the dataset to {}", out.display()))?;
    bar.finish_and_clear();
    println!(
        "wrote {count} {kind:?} samples ({width}x{height}, {layout:?} layout) to {} in {:.1} s: {} train, {} test; contact sheet {}",
        out.display(),
        start.elapsed().as_secs_f64(),
        summary.train,
        summary.test,
        summary.contact_sheet.display()
    );
    Ok(())
}
