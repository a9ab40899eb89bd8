//! Segmentation end to end on tiny models: it learns, every decoder trains and reports, the
//! ignore label is one constant that neither loss nor IoU counts, and `predict` writes class maps
//! with a legend.

use std::path::Path;

use glassbox_decoder::SegmentationDecoder;
use glassbox_metrics::{IGNORE_LABEL, SegmentationAccumulator};
use glassbox_trainer::config::{Task, TrainConfig};
use glassbox_trainer::data;
use glassbox_trainer::tensor::TensorBatch;
use glassbox_trainer::train::{TrainOptions, Trainer, task_loss, train};
use tch::{Device, Tensor};

/// The `test` preset as a segmentation run of the renderer's classes, with `decoder`.
fn config(decoder: SegmentationDecoder) -> TrainConfig {
    let mut config = TrainConfig::preset("test").unwrap();
    config.set_task(Task::Segmentation, None).unwrap();
    config.set_decoder(decoder).unwrap();
    // dpt-test's D = 32 does not split into DEPICT's default 3 heads.
    if let glassbox_dpt::HeadConfig::Segmentation(head) = &mut config.model.head {
        head.depict_heads = 2;
    }
    config.validate().unwrap();
    config
}

#[test]
fn a_few_segmentation_steps_lower_the_loss_for_every_decoder() {
    for decoder in SegmentationDecoder::ALL {
        let mut config = config(decoder);
        config.optim.steps = 16;
        let data = data::open(&config).unwrap();
        let mut trainer = Trainer::new(&config, Device::Cpu).unwrap();
        let mut batches = data.train.train_batches(0);
        let fixed = TensorBatch::new(
            &data.train.train_batches(0).next().unwrap().unwrap(),
            Device::Cpu,
        );
        assert!(fixed.labels.is_some(), "synthetic scenes carry labels");
        // Evaluation mode (no dropout, BN running statistics) for a fair before/after.
        let loss_now = |t: &Trainer| {
            let out = tch::no_grad(|| t.model.forward_t(&fixed.rgb, false)).unwrap();
            let glassbox_dpt::DptOutput::Segmentation(out) = out else {
                panic!("a segmentation model gives logits");
            };
            glassbox_trainer::train::segmentation_loss(&t.config, &out, &fixed)
                .unwrap()
                .double_value(&[])
        };
        let before = loss_now(&trainer);
        for _ in 0..config.optim.steps {
            trainer.train_step(&mut batches, "none").unwrap();
        }
        let after = loss_now(&trainer);
        assert!(
            after < 0.9 * before,
            "{}: loss {before} before and {after} after {} steps",
            decoder.name(),
            config.optim.steps
        );
        // The training loss is the same function as the evaluation one, in training mode.
        let (train_mode, saliency) = task_loss(&trainer.config, &trainer.model, &fixed).unwrap();
        assert!(train_mode.double_value(&[]).is_finite());
        assert!(
            saliency.is_none(),
            "a dense encoder keeps no token selection"
        );
    }
}

#[test]
fn a_segmentation_run_reports_miou_against_the_majority_baseline_with_its_pictures() {
    for decoder in [SegmentationDecoder::Dpt, SegmentationDecoder::DepictCa] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(decoder);
        config.schedule.eval_every = 3;
        let summary = train(
            &config,
            &TrainOptions {
                quiet: true,
                ..TrainOptions::new(dir.path())
            },
        )
        .unwrap();
        let eval = summary.eval.expect("a finished run is evaluated");
        let seg = eval.segmentation().expect("segmentation scores");
        assert!((0.0..=1.0).contains(&seg.metrics.miou));
        assert!(seg.baseline.pixel_accuracy > 0.0 && seg.baseline.miou < 0.5);
        assert_eq!(seg.metrics.iou.len(), glassbox_data::classes::COUNT);
        let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        for needle in ["mIoU", "majority class everywhere", "floor", "Best mIoU"] {
            assert!(report.contains(needle), "{needle} missing from:\n{report}");
        }
        for file in [
            "contact_sheet.png",
            "loss_curve.svg",
            "index.html",
            "best.safetensors",
        ] {
            assert!(dir.path().join(file).is_file(), "{file}");
        }
        let curves = std::fs::read_to_string(dir.path().join("loss_curve.svg")).unwrap();
        assert!(curves.contains("validation mIoU"), "mIoU panel");
        let sheet = image::open(dir.path().join("contact_sheet.png")).unwrap();
        assert!(sheet.width() >= 3 * 160 && sheet.height() >= 160);
        let depict = dir.path().join("depict.jsonl");
        if decoder == SegmentationDecoder::Dpt {
            assert!(!depict.exists());
        } else {
            let log = glassbox_trainer::whitebox::read_log(&depict);
            assert_eq!(
                log.iter().map(|r| r.step).collect::<Vec<_>>(),
                [0, 3, 6],
                "the untrained decoder, then one line per validation"
            );
            // DEPICT-CA: 3 MSSA layers, then 3 MSCA layers.
            assert_eq!(log[0].diagnostics.coding_rate_ratio.len(), 6);
            for figure in ["depict_diagnostics.png", "depict_grams.svg"] {
                assert!(dir.path().join(figure).is_file(), "{figure}");
            }
            assert!(report.contains("coding-rate ratio"), "{report}");
            let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
            assert!(
                page.contains("depict_grams.png"),
                "the page shows the Grams"
            );
        }
        // predict writes class ids and a coloured map with a legend.
        let image = dir.path().join("scene.png");
        let rgb = ndarray::Array3::<f32>::zeros((3, 70, 90));
        glassbox_data::io::write_rgb(&image, rgb.view()).unwrap();
        let loaded = glassbox_trainer::predict::load_checkpoint(
            &dir.path().join("last.safetensors"),
            Device::Cpu,
        )
        .unwrap();
        let written = glassbox_trainer::predict::predict_files(
            &loaded,
            &[image],
            &dir.path().join("out"),
            &Default::default(),
            Device::Cpu,
        )
        .unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["scene_labels.png", "scene_classes.png"]);
        let ids = glassbox_data::io::read_labels_png(&written[0]).unwrap();
        assert_eq!(ids.dim(), (70, 90), "class ids at the image's own size");
        assert!(
            ids.iter()
                .all(|&c| usize::from(c) < glassbox_data::classes::COUNT)
        );
        let legend = image::open(&written[1]).unwrap();
        assert!(legend.width() > 90, "the legend sits beside the map");
    }
}

#[test]
fn the_ignore_label_is_one_constant_that_neither_the_loss_nor_iou_counts() {
    assert_eq!(glassbox_data::IGNORE_LABEL, IGNORE_LABEL);
    let loss = glassbox_losses::SegmentationLoss::default();
    assert_eq!(loss.ignore_index, i64::from(IGNORE_LABEL));
    // Two classes, three pixels; the third is ignored and has absurd logits.
    let logits = Tensor::from_slice(&[2.0f32, -1.0, 1e4, -1.0, 2.0, -1e4]).view([1, 2, 1, 3]);
    let labels = Tensor::from_slice(&[0i64, 1, i64::from(IGNORE_LABEL)]).view([1, 1, 3]);
    let two = Tensor::from_slice(&[0i64, 1]).view([1, 1, 2]);
    let got = loss.compute(&logits, None, &labels, None).unwrap();
    let expected = loss
        .compute(&logits.narrow(3, 0, 2), None, &two, None)
        .unwrap();
    assert!(
        (got.double_value(&[]) - expected.double_value(&[])).abs() < 1e-6,
        "the ignored pixel changed the loss"
    );
    let mut acc = SegmentationAccumulator::new(2, Some(i64::from(IGNORE_LABEL)));
    acc.update(
        ndarray::array![[0u8, 1, 1]].view(),
        ndarray::array![[0u8, 1, IGNORE_LABEL]].view(),
    )
    .unwrap();
    assert_eq!(acc.total(), 2);
    assert_eq!(acc.pixel_accuracy().unwrap(), 1.0);
    // And the batch's ignored pixels are the data crate's constant.
    let config = config(SegmentationDecoder::Dpt);
    let data = data::open(&config).unwrap();
    let batch = data.val.eval_batches().next().unwrap().unwrap();
    let labels = batch.labels.unwrap();
    assert!(
        labels
            .iter()
            .all(|&c| c == i64::from(IGNORE_LABEL) || (0..14).contains(&c))
    );
}

#[test]
fn segmentation_configs_say_what_is_wrong_in_one_sentence() {
    let mut config = TrainConfig::preset("test").unwrap();
    let err = config
        .set_decoder(SegmentationDecoder::DepictSa)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.head.decoder"), "{err}");
    config.data.train = glassbox_data::SourceConfig::Folder {
        root: Path::new("/nowhere").into(),
        depth_scale: 1e-3,
    };
    let err = config
        .set_task(Task::Segmentation, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--num-classes"), "{err}");
    config.set_task(Task::Segmentation, Some(5)).unwrap();
    assert_eq!(config.num_classes(), Some(5));
    let mut heads = self::config(SegmentationDecoder::DepictSa);
    if let glassbox_dpt::HeadConfig::Segmentation(head) = &mut heads.model.head {
        head.depict_heads = 3;
    }
    let err = heads.validate().unwrap_err().to_string();
    assert!(err.contains("num_heads"), "{err}");
    let mut synthetic = self::config(SegmentationDecoder::Dpt);
    synthetic.set_num_classes(7).unwrap();
    let err = synthetic.validate().unwrap_err().to_string();
    assert!(err.contains("num_classes") && err.contains('7'), "{err}");
    let mut mixed = self::config(SegmentationDecoder::Dpt);
    mixed.loss.loss = glassbox_losses::LossConfig::default();
    let err = mixed.validate().unwrap_err().to_string();
    assert!(err.contains("cross_entropy"), "{err}");
}

/// Writes `count` tiny image/label pairs: RGB PNGs and 8-bit label PNGs whose ids come from
/// `label(i)` (a left/right split, so there is something to learn).
fn write_pairs(rgb_dir: &Path, label_dir: &Path, count: usize, label: impl Fn(usize) -> [u8; 2]) {
    std::fs::create_dir_all(rgb_dir).unwrap();
    std::fs::create_dir_all(label_dir).unwrap();
    for i in 0..count {
        let rgb = ndarray::Array3::<f32>::from_shape_fn((3, 40, 48), |(c, _, x)| {
            if x < 24 { 0.5 } else { -0.5 + 0.1 * c as f32 }
        });
        let [left, right] = label(i);
        let labels =
            ndarray::Array2::<u8>::from_shape_fn(
                (40, 48),
                |(_, x)| {
                    if x < 24 { left } else { right }
                },
            );
        let name = format!("img_{i:03}");
        let ext = if rgb_dir.ends_with("training") || rgb_dir.ends_with("validation") {
            "jpg"
        } else {
            "png"
        };
        glassbox_data::io::write_rgb(&rgb_dir.join(format!("{name}.{ext}")), rgb.view()).unwrap();
        glassbox_data::io::write_labels_png(&label_dir.join(format!("{name}.png")), labels.view())
            .unwrap();
    }
}

/// A 2-step segmentation run of the `test` model on `flags` (a dataset on disk).
fn steps_on(flags: glassbox_trainer::Overrides) -> Result<glassbox_trainer::TrainSummary, String> {
    let mut config = TrainConfig::preset("test").unwrap();
    let flags = glassbox_trainer::Overrides {
        task: Some(Task::Segmentation),
        steps: Some(2),
        image_size: Some([32, 48]),
        ..flags
    };
    flags.apply(&mut config).map_err(|e| e.to_string())?;
    let run = tempfile::tempdir().unwrap();
    train(
        &config,
        &TrainOptions {
            quiet: true,
            report: false,
            ..TrainOptions::new(run.path())
        },
    )
    .map_err(|e| e.to_string())
}

#[test]
fn segmentation_trains_on_an_ade20k_folder_and_on_a_folder_of_label_pairs() {
    let dir = tempfile::tempdir().unwrap();
    // ADEChallengeData2016: label 0 is "other" (ignored), 1..=150 the classes.
    let ade = dir.path().join("ADEChallengeData2016");
    for split in ["training", "validation"] {
        write_pairs(
            &ade.join("images").join(split),
            &ade.join("annotations").join(split),
            4,
            |i| [0, 1 + (i as u8 % 3) * 70],
        );
    }
    let summary = steps_on(glassbox_trainer::Overrides {
        dataset: Some(glassbox_trainer::overrides::DatasetKind::Ade20k),
        data_root: Some(ade.clone()),
        ..Default::default()
    })
    .unwrap();
    let seg = summary.eval.as_ref().unwrap().segmentation().unwrap();
    assert_eq!(seg.metrics.iou.len(), 150, "ADE20K has 150 classes");
    assert!(seg.metrics.iou[0].is_some() && seg.metrics.iou[140].is_some());

    // A folder of rgb/ + labels/ with stored ids needs its class count.
    let folder = dir.path().join("pairs");
    write_pairs(&folder.join("rgb"), &folder.join("labels"), 6, |i| {
        [i as u8 % 2, 2]
    });
    let folder_flags = || glassbox_trainer::Overrides {
        dataset: Some(glassbox_trainer::overrides::DatasetKind::Folder),
        data_root: Some(folder.clone()),
        ..Default::default()
    };
    let err = steps_on(folder_flags()).unwrap_err();
    assert!(err.contains("--num-classes"), "{err}");
    let summary = steps_on(glassbox_trainer::Overrides {
        num_classes: Some(3),
        ..folder_flags()
    })
    .unwrap();
    assert_eq!(
        summary
            .eval
            .unwrap()
            .segmentation()
            .unwrap()
            .metrics
            .iou
            .len(),
        3
    );
    // A class id beyond the class count is one sentence naming the file.
    let err = steps_on(glassbox_trainer::Overrides {
        num_classes: Some(2),
        ..folder_flags()
    })
    .unwrap_err();
    assert!(
        err.contains("labels/img_00") && err.contains("class 2") && err.contains("2 classes"),
        "{err}"
    );
}
