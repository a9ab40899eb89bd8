//! Parity of the whole DPT with the pinned Hugging Face reference (transformers 4.57.1, torch
//! 2.13.0): tests-python/dpt_reference.py builds a small random `DPTForDepthEstimation` and
//! tests-python/dpt_seg_reference.py a `DPTForSemanticSegmentation` and run them; we build our
//! model from their `config.json`, import their safetensors through the rename table and compare
//! the depth maps, or the main and auxiliary logits.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use glassbox_decoder::checkpoint::LoadReport;
use glassbox_decoder::{AuxiliaryInput, SegmentationOutput};
use glassbox_dpt::{Dpt, DptConfig, DptOutput, HeadConfig};
use glassbox_encoder::{Backbone, BitConfig};
use tch::{Device, Kind, Tensor, nn};

const MAX_RELATIVE_ERROR: f64 = 1e-4;

/// Runs `tests-python/{script} OUT_DIR {args}` with the pinned Python peer; returns OUT_DIR.
fn run_reference(script: &str, args: &[&str]) -> tempfile::TempDir {
    let python = std::env::var("GLASSBOX_PYTHON").expect(
        "GLASSBOX_PYTHON is not set: run the tests through `cargo xtask test`, which installs the \
         pinned Python reference (torch 2.13.0, transformers 4.57.1) and sets it",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests-python")
        .join(script);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir.path())
        .args(args)
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

fn read_hf_config(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

fn read_io(dir: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("io.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// max |ours - expected| / max |expected|, after checking the shapes agree.
fn max_relative_error(ours: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(ours.size(), expected.size());
    let scale = f64::try_from(expected.abs().max()).unwrap();
    f64::try_from((ours - expected).abs().max()).unwrap() / scale
}

fn check_parity(readout: &str, input: i64) {
    let input_arg = input.to_string();
    let dir = run_reference(
        "dpt_reference.py",
        &["--readout", readout, "--input", &input_arg, "--seed", "3"],
    );
    let config = DptConfig::from_hf_config(&read_hf_config(dir.path())).unwrap();
    assert_eq!(config.head, HeadConfig::Depth {});
    assert_eq!(
        config.encoder.hooks,
        vec![2, 4, 5, 6],
        "0-based backbone_out_indices become 1-based hooks"
    );
    assert!(
        (config.encoder.layer_norm_eps - 1e-12).abs() < 1e-15,
        "HF's eps is read from the config"
    );

    let err = depth_error(dir.path(), &config);
    assert!(
        err <= MAX_RELATIVE_ERROR,
        "readout {readout}, input {input}: max relative error {err:e}"
    );
}

/// Builds `config`'s model, imports the HF depth checkpoint in `dir` (HF's unused final norm is
/// among the skipped tensors), checks that the reference depth is not trivial, and returns
/// the max relative error of our depth on the reference's pixel values.
fn depth_error(dir: &Path, config: &DptConfig) -> f64 {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = Dpt::new(&vs.root(), config).unwrap();
    let report = glassbox_dpt::import::load_hf_dpt(&mut vs, dir.join("model.safetensors")).unwrap();
    assert!(
        report
            .skipped
            .iter()
            .any(|n| n.starts_with("dpt.layernorm.")),
        "{:?}",
        report.skipped
    );

    let io = read_io(dir);
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
    max_relative_error(&ours, expected)
}

#[test]
fn matches_hf_dpt_hybrid_at_an_input_size_other_than_the_config() {
    // BiT stem (bottleneck blocks, GroupNorm, weight standardisation, SAME padding), 6 ViT blocks
    // with backbone_out_indices [0, 1, 3, 5] of which the hybrid reads 3 and 5; config size 64,
    // input 96, so both sides resize the position embeddings from 4 x 4 to 6 x 6.
    let dir = run_reference("dpt_hybrid_reference.py", &["--input", "96", "--seed", "5"]);
    let config = DptConfig::from_hf_config(&read_hf_config(dir.path())).unwrap();
    assert_eq!(
        config.encoder.backbone,
        Backbone::Hybrid(BitConfig {
            embedding_size: 16,
            hidden_sizes: vec![32, 64, 128],
            depths: vec![1, 2, 2],
            num_groups: 4,
        })
    );
    assert_eq!(config.encoder.hooks, vec![1, 2, 4, 6]);
    let err = depth_error(dir.path(), &config);
    eprintln!("DPT-Hybrid against HF at 96 x 96: max relative error {err:.2e}");
    assert!(
        err <= MAX_RELATIVE_ERROR,
        "hybrid, input 96: max relative error {err:e}"
    );
}

#[test]
fn an_hf_hybrid_with_a_backbone_we_do_not_build_is_refused_in_one_sentence() {
    let dir = run_reference("dpt_hybrid_reference.py", &["--input", "64"]);
    let config = read_hf_config(dir.path());
    for (field, value, expected) in [
        (
            "layer_type",
            "\"preactivation\"",
            "layer_type` is \"preactivation\"",
        ),
        ("global_padding", "null", "global_padding` is absent"),
        ("num_groups", "5", "backbone.num_groups 5 must divide"),
    ] {
        let mut bad = config.clone();
        bad["backbone_config"][field] = serde_json::from_str(value).unwrap();
        let msg = DptConfig::from_hf_config(&bad).unwrap_err().to_string();
        assert!(msg.contains(expected), "{field}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
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

/// Builds the model of `config`, imports the HF segmentation checkpoint in `dir` and runs it on
/// the reference's pixel values in evaluation mode.
fn segment(
    dir: &Path,
    config: &DptConfig,
    pixel_values: &Tensor,
) -> (SegmentationOutput, LoadReport) {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = Dpt::new(&vs.root(), config).unwrap();
    let report = glassbox_dpt::import::load_hf_dpt(&mut vs, dir.join("model.safetensors")).unwrap();
    match tch::no_grad(|| model.forward_t(pixel_values, false)).unwrap() {
        DptOutput::Segmentation(out) => (out, report),
        DptOutput::Disparity(_) => panic!("a segmentation config gave a depth model"),
    }
}

#[test]
fn segmentation_matches_hf_dpt_for_semantic_segmentation_logits_and_auxiliary() {
    // 5 classes, batch norm in the fusion residual units (non-trivial running statistics), the
    // auxiliary head, 96 x 96 input against the config's 64 (both sides resize the position grid).
    let dir = run_reference("dpt_seg_reference.py", &["--input", "96", "--seed", "3"]);
    let config = DptConfig::from_hf_config(&read_hf_config(dir.path())).unwrap();
    let HeadConfig::Segmentation(seg) = &config.head else {
        panic!(
            "architectures = [DPTForSemanticSegmentation] gave {:?}",
            config.head
        )
    };
    assert_eq!(
        (seg.num_classes, seg.auxiliary, seg.auxiliary_input),
        (5, true, AuxiliaryInput::Last),
        "{seg:?}"
    );
    assert!((seg.dropout - 0.1).abs() < 1e-12);
    assert!(config.decoder.fusion_batch_norm);

    let io = read_io(dir.path());
    let (ours, report) = segment(dir.path(), &config, &io["pixel_values"]);
    // Nothing is skipped but the documented known-unused tensors (the load itself fails on any
    // missing or unexpected one), and the batch norms' running statistics are loaded.
    for name in &report.skipped {
        assert!(
            name.starts_with("dpt.layernorm.")
                || name.ends_with(".num_batches_tracked")
                || name.starts_with("neck.fusion_stage.layers.0.residual_layer1."),
            "skipped {name}"
        );
    }
    for name in [
        "head.head.1.running_var",
        "auxiliary_head.head.1.running_mean",
        "neck.fusion_stage.layers.3.residual_layer2.batch_norm2.running_var",
    ] {
        assert!(report.loaded.iter().any(|n| n == name), "{name} not loaded");
    }

    let logits_err = max_relative_error(&ours.logits, &io["logits"]);
    let hf_auxiliary = &io["auxiliary_logits"];
    let ours_auxiliary = ours
        .auxiliary
        .expect("use_auxiliary_head builds the auxiliary head");
    let auxiliary_err = max_relative_error(&ours_auxiliary, hf_auxiliary);
    eprintln!(
        "segmentation parity: max relative error of logits {logits_err:.3e}, \
         of auxiliary logits {auxiliary_err:.3e}"
    );
    assert!(logits_err <= MAX_RELATIVE_ERROR, "logits: {logits_err:e}");
    assert!(
        auxiliary_err <= MAX_RELATIVE_ERROR,
        "auxiliary logits: {auxiliary_err:e}"
    );

    // The paper's wiring on the same weights: the main head is untouched, the auxiliary head reads
    // another fusion level, so it is the `auxiliary_input` flag that makes HF parity hold.
    let mut paper = config.clone();
    if let HeadConfig::Segmentation(seg) = &mut paper.head {
        seg.auxiliary_input = AuxiliaryInput::Penultimate;
    }
    let (penultimate, _) = segment(dir.path(), &paper, &io["pixel_values"]);
    assert!(penultimate.logits.equal(&ours.logits));
    let penultimate_err = max_relative_error(&penultimate.auxiliary.unwrap(), hf_auxiliary);
    eprintln!(
        "segmentation parity: with auxiliary_input = penultimate the auxiliary logits differ \
         from HF's by {penultimate_err:.3e} (relative)"
    );
    assert!(
        penultimate_err > 0.05,
        "the penultimate level gave HF's auxiliary logits: {penultimate_err:e}"
    );
}

#[test]
fn hf_segmentation_config_reads_its_head_fields_and_names_a_bad_one() {
    let base = serde_json::json!({
        "architectures": ["DPTForSemanticSegmentation"],
        "backbone_out_indices": [1, 3, 4, 5],
        "hidden_size": 64,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "patch_size": 16,
        "image_size": 64,
        "layer_norm_eps": 1e-12,
        "neck_hidden_sizes": [16, 32, 64, 64],
        "reassemble_factors": [4, 2, 1, 0.5],
        "readout_type": "project",
        "fusion_hidden_size": 32,
        "use_batch_norm_in_fusion_residual": true,
        "head_in_index": -1,
        "id2label": {"0": "a", "1": "b", "2": "c"},
        "semantic_classifier_dropout": 0.2,
        "use_auxiliary_head": false,
    });
    let with = |key: &str, value: Option<serde_json::Value>| {
        let mut json = base.clone();
        let map = json.as_object_mut().unwrap();
        match value {
            Some(v) => map.insert(key.to_string(), v),
            None => map.remove(key),
        };
        DptConfig::from_hf_config(&json)
    };
    let head = |config: DptConfig| match config.head {
        HeadConfig::Segmentation(seg) => seg,
        other => panic!("{other:?}"),
    };
    let seg = head(DptConfig::from_hf_config(&base).unwrap());
    assert_eq!(
        (seg.num_classes, seg.auxiliary, seg.auxiliary_input),
        (3, false, AuxiliaryInput::Last)
    );
    assert!((seg.dropout - 0.2).abs() < 1e-12);
    assert_eq!(
        head(with("num_labels", Some(7.into())).unwrap()).num_classes,
        7,
        "num_labels wins over id2label"
    );
    assert_eq!(
        with(
            "architectures",
            Some(serde_json::json!(["DPTForDepthEstimation"]))
        )
        .unwrap()
        .head,
        HeadConfig::Depth {}
    );
    for (key, value, named) in [
        ("id2label", None, "num_labels"),
        ("num_labels", Some("5".into()), "num_labels"),
        (
            "semantic_classifier_dropout",
            None,
            "semantic_classifier_dropout",
        ),
        ("use_auxiliary_head", Some(1.into()), "use_auxiliary_head"),
        ("head_in_index", Some(2.into()), "head_in_index"),
    ] {
        let err = with(key, value).unwrap_err().to_string();
        assert!(err.contains(&format!("`{named}`")), "{key}: {err}");
    }
}
