//! Parity of the whole DPT with the pinned Hugging Face reference (transformers 4.57.1, torch
//! 2.13.0): tests-python/dpt_reference.py builds a small random `DPTForDepthEstimation` and runs
//! it; we build our model from its `config.json`, import its safetensors through the rename table
//! and compare the depth maps.

use std::path::Path;
use std::process::Command;

use glassbox_dpt::{Dpt, DptConfig};
use tch::{Device, Kind, Tensor, nn};

const MAX_RELATIVE_ERROR: f64 = 1e-4;

fn run_reference(readout: &str, input: i64) -> tempfile::TempDir {
    let python = std::env::var("GLASSBOX_PYTHON").expect(
        "GLASSBOX_PYTHON is not set: run the tests through `cargo xtask test`, which installs the \
         pinned Python reference (torch 2.13.0, transformers 4.57.1) and sets it",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests-python/dpt_reference.py");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir.path())
        .args([
            "--readout",
            readout,
            "--input",
            &input.to_string(),
            "--seed",
            "3",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn check_parity(readout: &str, input: i64) {
    let dir = run_reference(readout, input);
    let hf_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    let config = DptConfig::from_hf_config(&hf_config).unwrap();
    assert_eq!(
        config.encoder.hooks,
        vec![2, 4, 5, 6],
        "0-based backbone_out_indices become 1-based hooks"
    );
    assert!(
        (config.encoder.layer_norm_eps - 1e-12).abs() < 1e-15,
        "HF's eps is read from the config"
    );

    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = Dpt::new(&vs.root(), &config).unwrap();
    let report =
        glassbox_dpt::import::load_hf_dpt(&mut vs, dir.path().join("model.safetensors")).unwrap();
    assert!(
        report
            .skipped
            .iter()
            .any(|n| n.starts_with("dpt.layernorm.")),
        "{:?}",
        report.skipped
    );

    let io: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join("io.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let expected = &io["predicted_depth"];
    let mean = f64::try_from(expected.mean(Kind::Double)).unwrap();
    let std = f64::try_from(expected.std(true)).unwrap();
    let positive =
        f64::try_from(expected.gt(0.0).to_kind(Kind::Double).mean(Kind::Double)).unwrap();
    assert!(
        std >= 0.05 * mean.abs() && mean > 0.0,
        "reference output is trivial: mean {mean}, std {std}"
    );
    assert!(
        positive > 0.5,
        "reference output is mostly zero: {positive} positive"
    );

    let ours = tch::no_grad(|| model.disparity_t(&io["pixel_values"], false)).unwrap();
    assert_eq!(ours.size(), expected.size());
    let scale = f64::try_from(expected.abs().max()).unwrap();
    let err = f64::try_from((&ours - expected).abs().max()).unwrap() / scale;
    assert!(
        err <= MAX_RELATIVE_ERROR,
        "readout {readout}, input {input}: max relative error {err:e}"
    );
}

#[test]
fn matches_hf_dpt_with_readout_project_at_an_input_size_other_than_the_config() {
    // The config's image_size is 64 (a 4 x 4 position grid); 96 x 96 makes both sides resize it to 6 x 6.
    check_parity("project", 96);
}

#[test]
fn matches_hf_dpt_with_readout_ignore() {
    check_parity("ignore", 64);
}

#[test]
fn matches_hf_dpt_with_readout_add_at_a_larger_input() {
    check_parity("add", 128);
}
