//! Weights in and out (`docs/checkpoints.md`): HF folders written by the pinned Python peer are
//! imported and exported back losslessly; our exports load in transformers with no missing key
//! and predict like us; single-file exports rebuild their model alone; timm checkpoints made for
//! another grid load with resized position embeddings; models of another architecture are refused
//! with the whole mismatch list; `--init` with `--resume` resumes and says so.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use glassbox_trainer::TrainConfig;
use glassbox_trainer::predict::load_checkpoint;
use glassbox_trainer::train::{TrainOptions, Trainer};
use glassbox_trainer::weights::{self, ModelFile};
use tch::{Device, Kind, Tensor, nn};

/// The pinned Python peer (`cargo xtask test` sets it).
fn python() -> String {
    std::env::var("GLASSBOX_PYTHON").expect(
        "GLASSBOX_PYTHON is not set: run the tests through `cargo xtask test`, which installs the \
         pinned Python reference (torch 2.13.0, transformers 4.57.1) and sets it",
    )
}

/// Runs `tests-python/{script} {args}` with the peer and fails with its stderr.
fn peer(script: &str, args: &[&Path]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests-python")
        .join(script);
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

fn variables(vs: &nn::VarStore) -> BTreeMap<String, Tensor> {
    vs.variables().into_iter().collect()
}

/// A `test`-preset run of `steps` updates in `root/name`, so weights are trained, not initial.
fn trained_run(root: &Path, name: &str, steps: usize) -> TrainConfig {
    let mut config = TrainConfig::preset("test").unwrap();
    config.name = name.into();
    config.optim.steps = steps;
    let options = TrainOptions {
        quiet: true,
        ..TrainOptions::new(root.join(name))
    };
    glassbox_trainer::train(&config, &options).unwrap();
    config
}

/// HF tensors no forward pass reads; the export writes them with neutral values.
fn hf_unused(name: &str) -> bool {
    name.starts_with("dpt.layernorm.")
        || name.starts_with("neck.fusion_stage.layers.0.residual_layer1.")
        || name.ends_with("num_batches_tracked")
}

#[test]
fn hf_to_ours_to_hf_keeps_every_tensor_hf_computes_with_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    peer(
        "dpt_reference.py",
        &[&hf, Path::new("--input"), Path::new("64")],
    );
    let file = ModelFile::open(&hf).unwrap();
    assert_eq!(file.kind(), "HF folder");
    let loaded = load_checkpoint(&hf, Device::Cpu).unwrap();
    let out = dir.path().join("again");
    weights::export_hf(&loaded.vs, &loaded.config, &out).unwrap();

    let original = read(&hf.join("model.safetensors"));
    let exported = read(&out.join("model.safetensors"));
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        exported.keys().collect::<Vec<_>>(),
        "the export has exactly HF's names"
    );
    let mut compared = 0;
    for (name, t) in &original {
        let e = &exported[name];
        assert_eq!(t.size(), e.size(), "{name}");
        if !hf_unused(name) {
            assert!(t.equal(e), "{name} changed in the round trip");
            compared += 1;
        }
    }
    assert!(compared > 50, "only {compared} tensors compared");
    // The config round trip: the exported config.json rebuilds the same model.
    let again = ModelFile::open(&out).unwrap();
    assert_eq!(again.model_config(), file.model_config());
}

#[test]
fn a_trained_model_exported_as_hf_loads_cleanly_in_transformers_and_predicts_like_ours() {
    let dir = tempfile::tempdir().unwrap();
    let config = trained_run(dir.path(), "run", 6);
    let checkpoint = dir.path().join("run/last.safetensors");
    let ours = load_checkpoint(&checkpoint, Device::Cpu).unwrap();
    let hf = dir.path().join("hf");
    weights::export_hf(&ours.vs, &ours.config, &hf).unwrap();

    let side = config.model.encoder.image_size;
    let pixel_values = tch::no_grad(|| {
        tch::manual_seed(4);
        Tensor::randn([2, 3, side, side], (Kind::Float, Device::Cpu))
    });
    let input = dir.path().join("input.safetensors");
    Tensor::write_safetensors(&[("pixel_values", &pixel_values)], &input).unwrap();
    let output = dir.path().join("hf_out.safetensors");
    peer("hf_export_check.py", &[&hf, &input, &output]);

    let theirs = read(&output)["predicted_depth"].shallow_clone();
    let mine = tch::no_grad(|| ours.model.disparity_t(&pixel_values, false)).unwrap();
    assert_eq!(mine.size(), theirs.size());
    let scale = f64::try_from(mine.abs().max()).unwrap();
    assert!(scale > 0.0, "the trained model predicts all zeros");
    let error = f64::try_from((&mine - &theirs).abs().max()).unwrap() / scale;
    println!("exported HF model vs ours: max relative error {error:.2e}");
    assert!(error < 1e-4, "max relative error {error}");
}

#[test]
fn a_single_file_export_rebuilds_its_model_without_the_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = trained_run(dir.path(), "run", 2);
    let ours = load_checkpoint(&dir.path().join("run/last.safetensors"), Device::Cpu).unwrap();
    let alone = tempfile::tempdir().unwrap();
    let file = alone.path().join("model.safetensors");
    weights::export_single(&ours.vs, &ours.config, &file).unwrap();
    let meta = weights::read_metadata(&file).unwrap();
    assert!(meta.contains_key(weights::CONFIG_METADATA_KEY));

    let again = load_checkpoint(&file, Device::Cpu).unwrap();
    assert_eq!(again.config.model, config.model);
    assert_eq!(again.config.data.image_size, config.data.image_size);
    let (a, b) = (variables(&ours.vs), variables(&again.vs));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name}");
    }
}

#[test]
fn svda_sparse_and_depict_models_are_refused_as_hf_folders_in_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let mut svda = TrainConfig::preset("test").unwrap();
    svda.set_attention(glassbox_attention::AttentionKind::Svda);
    let mut sparse = TrainConfig::preset("test").unwrap();
    sparse.model.encoder.keep_ratio = 0.5;
    let mut depict = TrainConfig::preset("test").unwrap();
    depict
        .set_task(glassbox_trainer::config::Task::Segmentation, None)
        .unwrap();
    depict
        .set_decoder(glassbox_decoder::SegmentationDecoder::DepictSa)
        .unwrap();
    if let glassbox_dpt::HeadConfig::Segmentation(seg) = &mut depict.model.head {
        seg.depict_heads = 4; // a divisor of dpt-test's width 32
    }
    for (config, word) in [(svda, "svda"), (sparse, "sparse"), (depict, "depict-sa")] {
        let trainer = Trainer::new(&config, Device::Cpu).unwrap();
        let err = weights::export_hf(&trainer.vs, &config, &dir.path().join("hf"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(word), "{err}");
        assert!(err.contains("--format safetensors"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(!dir.path().join("hf/model.safetensors").exists());
    }
}

#[test]
fn a_timm_checkpoint_for_another_grid_loads_with_resized_position_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    // A timm ViT state dict (our encoder names are timm's) for a 4 x 4 grid, with timm's
    // classifier and final norm, which the loader skips.
    let small = TrainConfig::preset("test").unwrap();
    let source = Trainer::new(&small, Device::Cpu).unwrap();
    let mut timm: Vec<(String, Tensor)> = source
        .vs
        .variables()
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix("encoder.").map(|s| (s.to_string(), t)))
        .collect();
    let d = small.model.encoder.hidden_size;
    timm.push((
        "norm.weight".into(),
        Tensor::ones([d], (Kind::Float, Device::Cpu)),
    ));
    timm.push((
        "head.weight".into(),
        Tensor::zeros([10, d], (Kind::Float, Device::Cpu)),
    ));
    let path = dir.path().join("vit.safetensors");
    Tensor::write_safetensors(&timm, &path).unwrap();

    let mut large = small.clone();
    large.model.encoder.image_size = 96;
    large.seed = 1;
    large.backbone_weights = Some(path.clone());
    let mut trainer = Trainer::new(&large, Device::Cpu).unwrap();
    let decoder_before = variables(&trainer.vs)["neck.convs.0.weight"].copy();
    let lines = trainer.initialise().unwrap();
    assert!(
        lines[0].contains("skipped head.weight, norm.weight"),
        "{lines:?}"
    );

    let loaded = variables(&trainer.vs);
    let stored = variables(&source.vs)["encoder.pos_embed"].shallow_clone();
    assert_eq!(loaded["encoder.pos_embed"].size(), vec![1, 1 + 36, d]);
    let expected = glassbox_encoder::vit::resize_position_embeddings(&stored, 4, (6, 6));
    assert!(loaded["encoder.pos_embed"].allclose(&expected, 0.0, 0.0, false));
    assert!(
        loaded["encoder.blocks.0.attn.qkv.weight"]
            .equal(&variables(&source.vs)["encoder.blocks.0.attn.qkv.weight"])
    );
    assert!(
        loaded["neck.convs.0.weight"].equal(&decoder_before),
        "the decoder keeps its values"
    );
}

#[test]
fn a_checkpoint_of_another_architecture_is_refused_with_every_mismatch_and_nothing_loaded() {
    let dir = tempfile::tempdir().unwrap();
    trained_run(dir.path(), "run", 1);
    let file = ModelFile::open(&dir.path().join("run/last.safetensors")).unwrap();
    let mut other = TrainConfig::preset("test").unwrap();
    other.model.encoder.num_layers = 5;
    other.model.encoder.hooks = vec![2, 3, 4, 5];
    other.model.decoder.fusion_channels = 24;
    let mut trainer = Trainer::new(&other, Device::Cpu).unwrap();
    let before = variables(&trainer.vs)["neck.convs.0.weight"].copy();
    let err = file.load(&mut trainer.vs).unwrap_err().to_string();
    assert!(
        err.contains("encoder.blocks.4"),
        "missing block named: {err}"
    );
    assert!(
        err.contains("neck.convs.0.weight"),
        "wrong shape named: {err}"
    );
    assert!(err.contains("24"), "shapes given: {err}");
    assert!(variables(&trainer.vs)["neck.convs.0.weight"].equal(&before));
}

#[test]
fn init_starts_from_the_weights_and_resume_wins_over_it_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    trained_run(dir.path(), "source", 3);
    let source = dir.path().join("source/last.safetensors");
    let glassbox = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_glassbox"))
            .args(["train", "--preset", "test", "--name", "tuned", "--run-dir"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        text
    };
    let first = glassbox(&["--init", source.to_str().unwrap(), "--steps", "2"]);
    assert!(first.contains("initialised every weight from"), "{first}");
    let config = TrainConfig::from_run_file(&dir.path().join("tuned/config.toml")).unwrap();
    assert_eq!(config.init.as_deref(), Some(source.as_path()));

    // The init weights are the starting point: a trainer built from the run's config and
    // initialised holds the source checkpoint's weights exactly.
    let mut trainer = Trainer::new(&config, Device::Cpu).unwrap();
    trainer.initialise().unwrap();
    let expected = load_checkpoint(&source, Device::Cpu).unwrap();
    for (name, t) in variables(&expected.vs) {
        assert!(t.equal(&variables(&trainer.vs)[&name]), "{name}");
    }

    let resumed = glassbox(&["--resume", "--steps", "4"]);
    assert!(resumed.contains("resume wins"), "{resumed}");
    assert!(!resumed.contains("initialised every weight"), "{resumed}");
}
