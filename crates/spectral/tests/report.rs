//! The spectral report (`plot` feature) rendered from two synthetic run folders, one standard and
//! one SVDA, written by code here: every figure exists as valid PNG and SVG and the page shows
//! them. Run with `cargo test -p glassbox-spectral --features plot`.
#![cfg(feature = "plot")]

use std::path::{Path, PathBuf};

use glassbox_spectral::report::{RunLogs, render};
use glassbox_spectral::{
    ATTENTION_DIR, AttentionKind, HeadIndicators, Indicators, LayerIndicators, SIGMA_FILE,
    SPECTRAL_FILE, SigmaSpectra, SpectralRecord, append_line,
};

const LAYERS: usize = 3;
const HEADS: usize = 2;

/// Indicators that drift smoothly with step, layer and head, like a training run's.
fn record(kind: AttentionKind, step: u64) -> SpectralRecord {
    let t = step as f64 / 100.0;
    let layers = (0..LAYERS)
        .map(|l| {
            let heads = (0..HEADS)
                .map(|h| {
                    let x = 0.1 * l as f64 + 0.05 * h as f64;
                    let svda = kind == AttentionKind::Svda;
                    HeadIndicators {
                        head: h,
                        kind,
                        indicators: Indicators {
                            spectral_entropy: svda.then_some(1.0 - 0.2 * t * (1.0 + x)),
                            effective_rank: 20.0 - 5.0 * t - 3.0 * x,
                            hoyer_sparsity: svda.then_some(0.1 * t + x),
                            small_sigma_share: svda.then_some(0.05 * t),
                            angular_alignment: 0.1 + 0.2 * t * x,
                            selectivity: 0.05 + 0.3 * t * (1.0 - x),
                            robustness_input: Some(0.99 - 0.01 * t - x / 10.0),
                            robustness_sigma: svda.then_some(0.995 - 0.01 * t),
                            gini_selectivity: Some(0.9 - 0.2 * t),
                            gini_uniform: Some(1.0 - 1.0 / 17.0),
                            ..Indicators::default()
                        },
                    }
                })
                .collect();
            LayerIndicators::from_heads(l, heads).unwrap()
        })
        .collect();
    SpectralRecord::from_layers(step, layers)
}

fn write_run(root: &Path, name: &str, kind: AttentionKind) -> PathBuf {
    let dir = root.join(name);
    for step in [0, 50, 100] {
        append_line(&dir, SPECTRAL_FILE, |f| record(kind, step).write_jsonl(f)).unwrap();
        if kind == AttentionKind::Svda {
            let spectra = SigmaSpectra {
                step,
                layers: (0..LAYERS)
                    .map(|l| {
                        (0..HEADS)
                            .map(|h| {
                                (0..8)
                                    .map(|k| 1.0 / (1.0 + (k * (l + h + 1)) as f64))
                                    .collect()
                            })
                            .collect()
                    })
                    .collect(),
            };
            append_line(&dir, SIGMA_FILE, |f| spectra.write_jsonl(f)).unwrap();
        }
        let overlay = image::RgbImage::from_pixel(8, 4, image::Rgb([step as u8, 10, 200]));
        std::fs::create_dir_all(dir.join(ATTENTION_DIR)).unwrap();
        overlay
            .save(dir.join(ATTENTION_DIR).join(format!("step_{step:06}.png")))
            .unwrap();
    }
    dir
}

fn assert_png(path: &Path) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(img.width() > 0 && img.height() > 0);
}

fn assert_svg(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains("<svg") && text.trim_end().ends_with("</svg>"),
        "{}",
        path.display()
    );
}

#[test]
fn report_of_a_standard_and_an_svda_run_writes_every_figure_and_the_page() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = vec![
        write_run(tmp.path(), "standard", AttentionKind::Standard),
        write_run(tmp.path(), "svda", AttentionKind::Svda),
    ];
    let out = tmp.path().join("report");
    let report = render(&runs, &out).unwrap();

    let expected = [
        "depth_profiles.svg",
        "depth_profiles.png",
        "standard/indicators_over_steps.svg",
        "standard/indicators_over_steps.png",
        "standard/attention.png",
        "svda/indicators_over_steps.svg",
        "svda/indicators_over_steps.png",
        "svda/sigma_spectra.svg",
        "svda/sigma_spectra.png",
        "svda/attention.png",
    ];
    for name in expected {
        let path = out.join(name);
        assert!(report.figures.contains(&path), "{name} is listed");
        match path.extension().unwrap().to_str().unwrap() {
            "png" => assert_png(&path),
            _ => assert_svg(&path),
        }
    }
    assert!(
        !out.join("standard/sigma_spectra.svg").exists(),
        "standard attention has no sigma"
    );
    assert_eq!(report.figures.len(), expected.len());

    // The last overlay (step 100) is the one shown.
    let shown = image::open(out.join("svda/attention.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(shown.get_pixel(0, 0).0, [100, 10, 200]);

    let page = std::fs::read_to_string(&report.index).unwrap();
    for name in expected.iter().filter(|n| n.ends_with(".png")) {
        assert!(
            page.contains(&format!("src=\"{name}\"")),
            "page shows {name}"
        );
    }
    assert!(page.contains("| 2 | 0.")); // the per-layer table of the last probe
}

#[test]
fn figures_carry_the_indicator_names_as_text() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = vec![write_run(tmp.path(), "svda", AttentionKind::Svda)];
    let out = tmp.path().join("report");
    render(&runs, &out).unwrap();
    let svg = std::fs::read_to_string(out.join("depth_profiles.svg")).unwrap();
    for name in [
        "spectral_entropy",
        "effective_rank",
        "selectivity",
        "robustness_sigma",
    ] {
        assert!(svg.contains(name), "depth profile names {name}");
    }
}

#[test]
fn runs_with_the_same_folder_name_get_separate_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_run(&tmp.path().join("a"), "run", AttentionKind::Standard);
    let b = write_run(&tmp.path().join("b"), "run", AttentionKind::Svda);
    let out = tmp.path().join("report");
    render(&[a, b], &out).unwrap();
    assert!(out.join("run/indicators_over_steps.png").exists());
    assert!(out.join("run-2/sigma_spectra.png").exists());
}

#[test]
fn a_run_without_records_is_an_error_naming_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("empty");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(SPECTRAL_FILE), "").unwrap();
    let err = RunLogs::read(&dir).unwrap_err();
    assert!(err.to_string().contains("spectral.jsonl"), "{err}");
    let missing = render(&[tmp.path().join("nowhere")], &tmp.path().join("out")).unwrap_err();
    assert!(missing.to_string().contains("nowhere"), "{missing}");
}
