//! Evaluation and prediction on the real NYU and KITTI samples (read from `GLASSBOX_REAL_DATA`,
//! else `<workspace>/../shared/data/real`): the benchmark protocols apply their crop and cap, all
//! images are scored at full resolution, and predict writes its pictures. An untrained tiny model
//! is enough: these tests check the plumbing, not the accuracy.

use glassbox_data::{Dataset, ReaderOptions, SourceConfig};
use glassbox_metrics::{Crop, DepthEvalConfig};
use glassbox_trainer::config::{TrainConfig, real_data_root};
use glassbox_trainer::eval::evaluate_dataset;
use glassbox_trainer::predict::{PredictOptions, load_checkpoint, predict_files};
use glassbox_trainer::train::{TrainOptions, Trainer};
use tch::Device;

fn untrained() -> Trainer {
    Trainer::new(&TrainConfig::preset("test").unwrap(), Device::Cpu).unwrap()
}

fn assert_finite(report: &glassbox_trainer::eval::DepthReport) {
    for m in [&report.median, &report.scale_shift, &report.baseline] {
        assert!(m.to_array().iter().all(|v| v.is_finite()), "{m:?}");
    }
}

/// Scores the three real samples of `folder` with an untrained model and checks the protocol.
fn score_real_samples(
    source: SourceConfig,
    size: (usize, usize),
    cfg: DepthEvalConfig,
    crop: Crop,
) {
    let data = source
        .open((64, 64), ReaderOptions::default())
        .unwrap_or_else(|e| panic!("samples expected at {}: {e}", source.describe()));
    assert_eq!(data.len(), 3);
    assert_eq!(data.get(0).unwrap().depth.dim(), size);
    let max_depth = cfg.max_depth;
    let report =
        evaluate_dataset(&untrained().model, None, &data, 64, Device::Cpu, cfg, true).unwrap();
    assert_eq!((report.images, report.skipped), (3, 0));
    assert_eq!(report.protocol.crop, crop);
    assert_eq!(report.protocol.max_depth, max_depth);
    assert_finite(&report);
}

#[test]
fn nyu_samples_are_scored_at_480x640_with_the_eigen_crop_and_10_m_cap() {
    let cfg = DepthEvalConfig::nyu();
    assert_eq!(cfg.max_depth, 10.0);
    let root = real_data_root().join("nyu-sync-samples");
    let source = SourceConfig::Nyu { root, split: None };
    score_real_samples(source, (480, 640), cfg, Crop::Eigen);
}

#[test]
fn kitti_samples_are_scored_at_full_resolution_with_the_garg_crop_and_80_m_cap() {
    let cfg = DepthEvalConfig::kitti();
    assert_eq!(cfg.max_depth, 80.0);
    let root = real_data_root().join("kitti-samples");
    let source = SourceConfig::Kitti {
        root,
        split: None,
        depth_root: None,
    };
    score_real_samples(source, (375, 1242), cfg, Crop::Garg);
}

#[test]
fn predict_rebuilds_the_model_from_the_run_folder_and_writes_depth_and_attention_pngs() {
    let config = TrainConfig::preset("test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = TrainOptions {
        quiet: true,
        stop_after: Some(1),
        report: false,
        ..TrainOptions::new(dir.path())
    };
    glassbox_trainer::train(&config, &options).unwrap();
    let loaded = load_checkpoint(&dir.path().join("last.safetensors"), Device::Cpu).unwrap();
    let image = std::fs::read_dir(real_data_root().join("nyu-sync-samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jpg"))
        .expect("an NYU sample image");
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
            attention: Some((5, 0)),
        },
        Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("layer 5"), "{err}");
}

#[test]
fn eval_scores_every_frame_of_a_7_scenes_folder_whatever_its_numbering() {
    let real = real_data_root().join("7scenes-redkitchen");
    let dir = tempfile::tempdir().unwrap();
    // Six real frames renumbered 1000, 1002, ..., 1010: no frame of the usual 500-599 block.
    for (k, frame) in (0..6).map(|i| i * 100).enumerate() {
        for ext in ["color.jpg", "depth.png"] {
            std::fs::copy(
                real.join(format!("frame-{frame:06}.{ext}")),
                dir.path().join(format!("frame-{:06}.{ext}", 1000 + 2 * k)),
            )
            .unwrap();
        }
    }
    let source = SourceConfig::SevenScenes {
        root: dir.path().to_path_buf(),
        frames: None,
    };
    let data = source.open((64, 64), ReaderOptions::default()).unwrap();
    assert_eq!(data.len(), 6);
    let cfg = DepthEvalConfig::nyu().with_crop(Crop::None);
    let report =
        evaluate_dataset(&untrained().model, None, &data, 64, Device::Cpu, cfg, true).unwrap();
    assert_eq!(report.images, 6);
    assert_finite(&report);
    let some = SourceConfig::SevenScenes {
        root: dir.path().to_path_buf(),
        frames: Some([1004, 1008]),
    };
    assert_eq!(
        some.open((64, 64), ReaderOptions::default()).unwrap().len(),
        2
    );
}
