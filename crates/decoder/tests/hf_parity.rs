//! Parity of the decoder neck and depth head with the pinned Hugging Face reference
//! (transformers 4.57.1, torch 2.13.0): tests-python/dpt_neck_reference.py builds a small random
//! `DPTForDepthEstimation`, and we load its neck/head weights by their unchanged names, feed the same
//! hooked tokens and compare every fusion level and the depth map.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use glassbox_decoder::checkpoint::{CheckpointError, is_known_unused_hf_tensor, load_safetensors};
use glassbox_decoder::{Decoder, DecoderConfig, DepthHead, Readout};
use tch::{Device, Kind, Tensor, nn::VarStore};

const MAX_RELATIVE_ERROR: f64 = 1e-4;
/// Token width D of the reference script's encoder.
const HIDDEN_SIZE: i64 = 64;

/// The reference script's DPTConfig, in our terms.
fn reference_config(readout: Readout) -> DecoderConfig {
    DecoderConfig {
        reassemble_channels: [16, 32, 64, 64],
        reassemble_factors: [4.0, 2.0, 1.0, 0.5],
        fusion_channels: 32,
        readout,
        fusion_batch_norm: false,
    }
}

fn readout_arg(readout: Readout) -> &'static str {
    match readout {
        Readout::Ignore => "ignore",
        Readout::Add => "add",
        Readout::Project => "project",
    }
}

/// Runs the reference script into a fresh temp dir (kept alive by the returned guard).
fn run_reference(readout: Readout, (h, w): (i64, i64)) -> tempfile::TempDir {
    let python = std::env::var("GLASSBOX_PYTHON").expect(
        "GLASSBOX_PYTHON is not set: `eval \"$(cargo xtask env)\"` (or point it at a Python with \
         torch 2.13.0 and transformers 4.57.1) to run the HF parity tests",
    );
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests-python/dpt_neck_reference.py");
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(&python)
        .arg(&script)
        .arg(dir.path())
        .args([
            "--readout",
            readout_arg(readout),
            "--grid",
            &h.to_string(),
            &w.to_string(),
        ])
        .args(["--batch", "2", "--seed", "7"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

fn hf_neck_and_head(name: &str) -> Option<String> {
    (!name.starts_with("dpt.") && !is_known_unused_hf_tensor(name)).then(|| name.to_string())
}

fn read_io(dir: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("io.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn max_relative_error(ours: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(ours.size(), reference.size());
    let scale = reference.abs().max().double_value(&[]);
    (ours - reference).abs().max().double_value(&[]) / scale
}

fn assert_matches_reference(readout: Readout, grid: (i64, i64)) {
    let dir = run_reference(readout, grid);
    let cfg = reference_config(readout);
    let mut vs = VarStore::new(Device::Cpu);
    let decoder = Decoder::new(&vs.root(), &cfg, HIDDEN_SIZE).unwrap();
    let head = DepthHead::new(&vs.root(), cfg.fusion_channels).unwrap();
    let report = load_safetensors(
        &mut vs,
        dir.path().join("model.safetensors"),
        hf_neck_and_head,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dead_branch = report
        .skipped
        .iter()
        .filter(|n| n.starts_with("neck.fusion_stage.layers.0.residual_layer1."));
    assert_eq!(
        dead_branch.count(),
        4,
        "HF's unused residual_layer1 of fusion layer 0 is skipped"
    );

    let io = read_io(dir.path());
    let hooks: Vec<Tensor> = (0..4)
        .map(|i| io[&format!("hidden_states.{i}")].shallow_clone())
        .collect();
    let (levels, depth) = tch::no_grad(|| {
        let levels = decoder.forward_levels(&hooks, grid, false).unwrap();
        let depth = head.forward(&levels[3], None).unwrap();
        (levels, depth)
    });

    let reference = &io["depth"];
    let mean = reference.mean(Kind::Double).double_value(&[]);
    let std = reference.std(true).double_value(&[]);
    let nonzero = reference
        .gt(0.0)
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[]);
    assert!(
        std >= 0.05 * mean,
        "reference depth is near-constant: mean {mean}, std {std}"
    );
    assert!(
        nonzero > 0.5,
        "only {nonzero} of the reference depth pixels are non-zero"
    );

    for (j, level) in levels.iter().enumerate() {
        let err = max_relative_error(level, &io[&format!("fused.{j}")]);
        assert!(
            err <= MAX_RELATIVE_ERROR,
            "{readout:?} {grid:?}: fusion level {j} relative error {err}"
        );
    }
    let err = max_relative_error(&depth, reference);
    eprintln!("{readout:?} {grid:?}: depth max relative error {err:.3e}");
    assert!(
        err <= MAX_RELATIVE_ERROR,
        "{readout:?} {grid:?}: depth relative error {err}"
    );
}

#[test]
fn project_readout_matches_hf_dpt_neck_and_depth_head() {
    assert_matches_reference(Readout::Project, (4, 4));
}

#[test]
fn ignore_readout_matches_hf_dpt_neck_and_depth_head() {
    assert_matches_reference(Readout::Ignore, (4, 4));
}

#[test]
fn add_readout_matches_hf_dpt_neck_and_depth_head() {
    assert_matches_reference(Readout::Add, (4, 4));
}

#[test]
fn odd_non_square_grid_matches_hf_skip_resizing() {
    assert_matches_reference(Readout::Add, (3, 5));
}

#[test]
fn project_checkpoint_into_ignore_decoder_lists_every_unexpected_projection() {
    let dir = run_reference(Readout::Project, (2, 2));
    let mut vs = VarStore::new(Device::Cpu);
    let _decoder =
        Decoder::new(&vs.root(), &reference_config(Readout::Ignore), HIDDEN_SIZE).unwrap();
    let _head = DepthHead::new(&vs.root(), 32).unwrap();
    let path: PathBuf = dir.path().join("model.safetensors");
    let err = load_safetensors(&mut vs, &path, hf_neck_and_head).unwrap_err();
    let CheckpointError::Mismatch { mismatch, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        mismatch.missing.is_empty() && mismatch.shape_mismatches.is_empty(),
        "{err}"
    );
    let unexpected: Vec<&str> = mismatch
        .unexpected
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    let expected: Vec<String> = (0..4)
        .flat_map(|i| {
            ["bias", "weight"].map(|p| format!("neck.reassemble_stage.readout_projects.{i}.0.{p}"))
        })
        .collect();
    assert_eq!(unexpected, expected);
    assert!(err.to_string().contains("model.safetensors"));
}
