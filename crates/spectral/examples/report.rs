//! Renders the spectral report of run folders without libtorch (the same as `glassbox report`):
//!
//! ```text
//! cargo run -p glassbox-spectral --features plot --example report -- RUN_DIR... [--out DIR]
//! ```
//! `--out` defaults to `report/` inside the first run folder.

use std::path::PathBuf;

fn main() {
    let mut runs = Vec::new();
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--out" {
            out = args.next().map(PathBuf::from);
        } else {
            runs.push(PathBuf::from(arg));
        }
    }
    let Some(first) = runs.first() else {
        eprintln!("usage: report RUN_DIR... [--out DIR]");
        std::process::exit(2);
    };
    let out = out.unwrap_or_else(|| first.join("report"));
    match glassbox_spectral::report::render(&runs, &out) {
        Ok(report) => println!(
            "{} ({} figures)",
            report.index.display(),
            report.figures.len()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
