//! The spectral probe on a tiny random DPT (`docs/spectral.md`): finite indicators for both
//! attention kinds, robustness in (0, 1], every parameter untouched bit for bit, deterministic records and
//! the run files the report reads.

use glassbox_attention::AttentionKind;
use glassbox_dpt::{Dpt, DptConfig};
use glassbox_spectral::{
    ATTENTION_DIR, AttentionKind as Kind2, Indicator, SIGMA_FILE, SPECTRAL_FILE, read_sigma_log,
    read_spectral_log,
};
use glassbox_trainer::probe::{Probe, ProbeOptions};
use tch::{Device, Kind, Tensor, nn};

const LAYERS: usize = 4;

fn tiny(kind: AttentionKind) -> (nn::VarStore, Dpt) {
    tch::manual_seed(11);
    let mut config = DptConfig::dpt_tiny().with_attention(kind);
    config.encoder.num_layers = LAYERS;
    config.encoder.hooks = vec![1, 2, 3, 4];
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Dpt::new(&vs.root(), &config).unwrap();
    (vs, model)
}

/// `images` random normalised images; `draws` noise draws per robustness variant (`docs/spectral.md`: 4,
/// fewer where a test checks bookkeeping, to keep the suite fast).
fn probe_batch(images: i64, draws: usize) -> Probe {
    tch::manual_seed(5);
    let images = Tensor::randn([images, 3, 48, 64], (Kind::Float, Device::Cpu));
    let options = ProbeOptions {
        draws,
        ..ProbeOptions::default()
    };
    Probe::new(images, options).unwrap()
}

/// Gives sigma spread-out values, so that the sigma indicators are not those of sigma = ones.
fn spread_sigma(model: &Dpt) {
    for block in model.encoder().blocks() {
        let sigma = block.attention().sigma().unwrap().unwrap();
        let values = Tensor::rand(sigma.size(), (Kind::Float, Device::Cpu)) * 2.0 + 0.1;
        block.attention().set_sigma(&values).unwrap();
    }
}

#[test]
fn probe_gives_finite_indicators_and_robustness_in_unit_interval_for_every_kind() {
    for kind in AttentionKind::ALL {
        let (_vs, model) = tiny(kind);
        if kind.has_sigma() {
            spread_sigma(&model);
        }
        let out = probe_batch(2, 4).run(&model, 7).unwrap();
        assert_eq!(out.record.step, 7);
        assert_eq!(out.record.layers.len(), LAYERS);
        for layer in &out.record.layers {
            assert_eq!(layer.heads.len(), 3, "ViT-Tiny has 3 heads");
            for head in &layer.heads {
                let i = head.indicators;
                for indicator in Indicator::ALL {
                    if let Some(v) = i.get(indicator) {
                        assert!(v.is_finite(), "{kind:?} {indicator:?} = {v}");
                    }
                }
                let input = i.robustness_input.expect("input robustness measured");
                assert!(input > 0.0 && input <= 1.0, "{kind:?} robustness {input}");
                assert!(input < 1.0, "the input noise moved the map");
                assert!(i.selectivity > 0.0 && i.selectivity <= 1.0);
                assert!(i.effective_rank >= 1.0);
                // 48 x 64 images: 1 readout token and 3 x 4 patches of 16 px, N = 13.
                let grid = glassbox_spectral::TokenGrid::new(1, 3, 4, 16.0).unwrap();
                assert!((i.gini_uniform.unwrap() - (1.0 - 1.0 / 13.0)).abs() < 1e-12);
                assert!(i.gini_selectivity.is_some());
                let distance = i
                    .attention_distance
                    .expect("the probe passes the token grid");
                let uniform = i.attention_distance_uniform.unwrap();
                assert!((uniform - grid.uniform_distance()).abs() < 1e-12);
                // No two patches of a 3 x 4 grid are more than sqrt(2^2 + 3^2) apart.
                assert!(
                    distance > 0.0 && distance <= 13f64.sqrt(),
                    "{kind:?} distance {distance}"
                );
                assert!((i.attention_distance_px.unwrap() - 16.0 * distance).abs() < 1e-9);
                match kind {
                    AttentionKind::Svda | AttentionKind::SvdaPaper => {
                        assert_eq!(head.kind, Kind2::Svda);
                        let s = i.robustness_sigma.expect("sigma robustness measured");
                        assert!(s > 0.0 && s < 1.0, "sigma robustness {s} in (0, 1)");
                        let entropy = i.spectral_entropy.unwrap();
                        assert!(entropy > 0.5 && entropy < 1.0, "entropy {entropy}");
                    }
                    AttentionKind::Standard => {
                        assert_eq!(head.kind, Kind2::Standard);
                        assert!(i.spectral_entropy.is_none() && i.robustness_sigma.is_none());
                    }
                }
            }
        }
        assert_eq!(out.sigma.is_some(), kind.has_sigma());
        assert!(out.timing.forward.as_nanos() > 0 && out.timing.spectral.as_nanos() > 0);
    }
}

#[test]
fn the_probe_leaves_every_parameter_bit_identical() {
    for kind in AttentionKind::ALL {
        let (vs, model) = tiny(kind);
        if kind.has_sigma() {
            spread_sigma(&model);
        }
        let before: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
        probe_batch(1, 2).run(&model, 0).unwrap();
        let after = vs.variables();
        assert_eq!(after.len(), before.len());
        for (name, value) in &before {
            assert!(
                after[name].equal(value),
                "{kind:?}: {name} changed by the probe"
            );
            assert!(after[name].requires_grad(), "{name} is still trainable");
        }
    }
}

#[test]
fn probing_twice_gives_the_same_record() {
    let (_vs, model) = tiny(AttentionKind::Svda);
    let probe = probe_batch(2, 1);
    let a = probe.run(&model, 1).unwrap().record;
    let b = probe.run(&model, 1).unwrap().record;
    assert_eq!(a, b);
}

#[test]
fn probe_output_extends_the_run_logs_and_writes_overlays() {
    let (_vs, model) = tiny(AttentionKind::Svda);
    let dir = tempfile::tempdir().unwrap();
    let probe = probe_batch(1, 1);
    for step in [0, 5] {
        let files = probe.run(&model, step).unwrap().write(dir.path()).unwrap();
        assert_eq!(files.spectral, dir.path().join(SPECTRAL_FILE));
        assert_eq!(files.sigma, Some(dir.path().join(SIGMA_FILE)));
    }
    let records = read_spectral_log(&dir.path().join(SPECTRAL_FILE)).unwrap();
    assert_eq!(records.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 5]);
    let sigma = read_sigma_log(&dir.path().join(SIGMA_FILE)).unwrap();
    assert_eq!(sigma.len(), 2);
    assert_eq!(sigma[1].layers.len(), LAYERS);
    assert_eq!(sigma[1].layers[0].len(), 3);
    assert_eq!(sigma[1].layers[0][0].len(), 64, "ViT-Tiny head width");
    let png = image::open(dir.path().join(ATTENTION_DIR).join("step_000005.png")).unwrap();
    // One row per query point: the input and one overlay per layer, 48 x 64 tiles enlarged 2x
    // (to at least 96 px), 10 px gaps, after a 150 px column of row titles and before the colour
    // bar (14 px, 62 + 50 px of labels); a 26 px title and a 34 px header above.
    let cols = LAYERS as u32 + 1;
    assert_eq!(png.width(), 150 + cols * (128 + 10) + 14 + 62 + 50);
    assert_eq!(png.height(), 26 + 34 + 3 * (96 + 10));
    // The title band holds text.
    let rgb = png.to_rgb8();
    let dark = (0..26)
        .flat_map(|y| (0..400).map(move |x| (x, y)))
        .filter(|&(x, y)| rgb.get_pixel(x, y).0[0] < 100)
        .count();
    assert!(dark > 50, "{dark} dark pixels in the title");
    // The over-training strip: the last layer by default, the query column and one column per
    // probe step, tiles as above.
    let strip = glassbox_trainer::probe::read_strip_log(dir.path());
    let logged: Vec<(u64, usize)> = strip.iter().map(|c| (c.step, c.layer)).collect();
    assert_eq!(logged, [(0, LAYERS), (5, LAYERS)]);
    let (width, _) =
        image::image_dimensions(dir.path().join(ATTENTION_DIR).join("over_training.png")).unwrap();
    assert_eq!(width, 150 + 3 * (128 + 10) + 14 + 62 + 50);
    // A chosen layer (1-based) must be one of the encoder's.
    let chosen = |layer: usize| {
        let images = Tensor::randn([1, 3, 48, 64], (Kind::Float, Device::Cpu));
        let options = ProbeOptions {
            draws: 0,
            strip_layer: Some(layer),
            ..ProbeOptions::default()
        };
        Probe::new(images, options).unwrap().run(&model, 7)
    };
    assert_eq!(chosen(2).unwrap().strip.layer, 2);
    for layer in [0, LAYERS + 1] {
        let err = chosen(layer).unwrap_err().to_string();
        assert!(err.contains("layers 1 to 4"), "{err}");
    }
}

#[test]
fn probe_rejects_images_that_are_not_a_batch_of_rgb() {
    let images = Tensor::zeros([3, 32, 32], (Kind::Float, Device::Cpu));
    let err = Probe::new(images, ProbeOptions::default()).unwrap_err();
    assert!(err.to_string().contains("[3, 32, 32]"), "{err}");
}

#[test]
fn training_probes_at_start_every_n_steps_and_at_the_end_and_resume_adds_no_duplicate() {
    let mut config = glassbox_trainer::TrainConfig::preset("test").unwrap();
    config.set_attention(AttentionKind::Svda);
    config.optim.steps = 5;
    config.schedule.spectral_every = 2;
    config.schedule.checkpoint_every = 2;
    let dir = tempfile::tempdir().unwrap();
    let options = |resume: bool, stop_after: Option<usize>| glassbox_trainer::TrainOptions {
        run_dir: dir.path().to_path_buf(),
        resume,
        quiet: true,
        stop_after,
        report: false,
        interrupt: None,
        launch: None,
    };
    glassbox_trainer::train(&config, &options(false, Some(3))).unwrap();
    glassbox_trainer::train(&config, &options(true, None)).unwrap();
    let steps = |file: &str| -> Vec<u64> {
        let path = dir.path().join(file);
        match file {
            SPECTRAL_FILE => read_spectral_log(&path)
                .unwrap()
                .iter()
                .map(|r| r.step)
                .collect(),
            _ => read_sigma_log(&path)
                .unwrap()
                .iter()
                .map(|r| r.step)
                .collect(),
        }
    };
    // Stopped at 3 (probed and checkpointed there), resumed from 3: no step twice, no second
    // step-0 probe.
    assert_eq!(steps(SPECTRAL_FILE), [0, 2, 3, 4, 5]);
    assert_eq!(steps(SIGMA_FILE), [0, 2, 3, 4, 5]);
    // The over-training strip's log is cut back and continued the same way.
    let strip = glassbox_trainer::probe::read_strip_log(dir.path());
    assert_eq!(
        strip.iter().map(|c| c.step).collect::<Vec<_>>(),
        [0, 2, 3, 4, 5]
    );
    assert!(
        dir.path()
            .join(ATTENTION_DIR)
            .join("step_000005.png")
            .is_file()
    );
}
