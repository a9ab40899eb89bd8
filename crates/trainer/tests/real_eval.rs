//! Evaluation and prediction on the real NYU and KITTI samples (read from `GLASSBOX_REAL_DATA`,
//! else `<workspace>/../shared/data/real`): the benchmark protocols apply their crop and cap, all
//! images are scored at full resolution, and predict writes its pictures. An untrained tiny model
//! is enough: these tests check the plumbing, not the accuracy.

use glassbox_data::Dataset;
use glassbox_metrics::{Crop, DepthEvalConfig};
use glassbox_trainer::config::{TrainConfig, real_data_root};
use glassbox_trainer::data::open_eval_dataset;
use glassbox_trainer::eval::evaluate_files;
use glassbox_trainer::predict::{PredictOptions, load_checkpoint, predict_files};
use glassbox_trainer::train::{TrainOptions, Trainer};
use tch::Device;

fn untrained() -> Trainer {
    Trainer::new(&TrainConfig::preset("test").unwrap(), Device::Cpu).unwrap()
}

fn assert_finite(report: &glassbox_trainer::eval::EvalReport) {
    for m in [&report.median, &report.scale_shift, &report.baseline] {
        assert!(m.to_array().iter().all(|v| v.is_finite()), "{m:?}");
    }
}

/// Scores the three real samples of `folder` with an untrained model and checks the protocol.
fn score_real_samples(
    dataset: &str,
    folder: &str,
    size: (usize, usize),
    cfg: DepthEvalConfig,
    crop: Crop,
) {
    let root = real_data_root().join(folder);
    let data = open_eval_dataset(dataset, &root)
        .unwrap_or_else(|e| panic!("{dataset} samples expected at {}: {e}", root.display()));
    assert_eq!(data.len(), 3);
    assert_eq!(data.get(0).unwrap().depth.dim(), size);
    let max_depth = cfg.max_depth;
    let report = evaluate_files(&untrained().model, None, &data, 64, Device::Cpu, cfg).unwrap();
    assert_eq!((report.images, report.skipped), (3, 0));
    assert_eq!(report.protocol.crop, crop);
    assert_eq!(report.protocol.max_depth, max_depth);
    assert_finite(&report);
}

#[test]
fn nyu_samples_are_scored_at_480x640_with_the_eigen_crop_and_10_m_cap() {
    let cfg = DepthEvalConfig::nyu();
    assert_eq!(cfg.max_depth, 10.0);
    score_real_samples("nyu", "nyu-sync-samples", (480, 640), cfg, Crop::Eigen);
}

#[test]
fn kitti_samples_are_scored_at_full_resolution_with_the_garg_crop_and_80_m_cap() {
    let cfg = DepthEvalConfig::kitti();
    assert_eq!(cfg.max_depth, 80.0);
    score_real_samples("kitti", "kitti-samples", (375, 1242), cfg, Crop::Garg);
}

#[test]
fn predict_rebuilds_the_model_from_the_run_folder_and_writes_depth_and_attention_pngs() {
    let config = TrainConfig::preset("test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = TrainOptions {
        run_dir: dir.path().to_path_buf(),
        resume: false,
        quiet: true,
        stop_after: Some(1),
        report: false,
        interrupt: None,
    };
    glassbox_trainer::train(&config, &options).unwrap();
    let loaded = load_checkpoint(&dir.path().join("last.safetensors"), Device::Cpu).unwrap();
    let image = real_data_root().join("nyu-sync-samples/rgb_00000.jpg");
    let image = if image.is_file() {
        image
    } else {
        let nyu = open_eval_dataset("nyu", &real_data_root().join("nyu-sync-samples")).unwrap();
        nyu.entries()[0].rgb.clone()
    };
    let out = dir.path().join("pred");
    let written = predict_files(
        &loaded,
        &[image],
        &out,
        &PredictOptions {
            depth16: true,
            attention: Some((1, 5)),
        },
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(written.len(), 3, "{written:?}");
    for path in &written {
        let img = image::open(path).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (640, 480),
            "{}",
            path.display()
        );
    }
    let err = predict_files(
        &loaded,
        &[written[0].clone()],
        &out,
        &PredictOptions {
            depth16: false,
            attention: Some((7, 0)),
        },
        Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("layer 7"), "{err}");
}
