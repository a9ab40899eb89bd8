//! `cargo xtask screenshot`: pictures of our HTML pages as a browser draws them, so a change to a
//! run page or a comparison page can be looked at (and a docs figure refreshed) without a desktop.
//! It drives Debian's headless Chromium, installed on first use like the other system packages.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::system::ensure_debian_package;

/// The flags of `cargo xtask screenshot`.
#[derive(clap::Args)]
pub struct ScreenshotArgs {
    /// HTML pages (a run's index.html, a comparison's index.html), or run folders holding one.
    #[arg(required = true)]
    pages: Vec<PathBuf>,
    /// Window width in CSS pixels.
    #[arg(long, default_value_t = 1280)]
    width: u32,
    /// Window height in CSS pixels: what lies below it is cut off, so make it the page's length
    /// to see the whole page.
    #[arg(long, default_value_t = 2400)]
    height: u32,
    /// Where the PNG goes (default: beside each page, PAGE.png); only with one page.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Screenshots every page of `args`, printing where each picture went.
pub fn screenshot(args: &ScreenshotArgs) -> Result<()> {
    if args.out.is_some() && args.pages.len() > 1 {
        bail!(
            "--out names one picture, but {} pages were given",
            args.pages.len()
        );
    }
    ensure_debian_package(
        "chromium",
        "cargo xtask screenshot drives headless Chromium",
    )?;
    for page in &args.pages {
        let page = if page.is_dir() {
            page.join("index.html")
        } else {
            page.clone()
        };
        if !page.is_file() {
            bail!(
                "{} is not an HTML page (a run writes index.html when it ends)",
                page.display()
            );
        }
        let page = page
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", page.display()))?;
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| page.with_extension("png"));
        take(&page, &out, args.width, args.height)?;
        println!("{}", out.display());
    }
    Ok(())
}

fn take(page: &Path, out: &Path, width: u32, height: u32) -> Result<()> {
    let out = std::path::absolute(out)?;
    let profile = tempfile::tempdir()?;
    let result = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .context("cannot start chromium")?;
    if !result.status.success() || !out.is_file() {
        bail!(
            "chromium could not screenshot {}: {}",
            page.display(),
            String::from_utf8_lossy(&result.stderr)
                .lines()
                .last()
                .unwrap_or("no message")
        );
    }
    Ok(())
}
