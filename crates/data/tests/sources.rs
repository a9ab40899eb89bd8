//! Every source kind opens from a folder written by the test (or by gen-data) through
//! `SourceConfig`, and its TOML form rejects misspelled keys.

use std::path::Path;

use glassbox_data::io::{write_depth_png, write_labels_png, write_rgb};
use glassbox_data::layout::{Layout, WriteOptions, write_synthetic};
use glassbox_data::readers::ReaderOptions;
use glassbox_data::{
    DataError, Dataset, IGNORE_LABEL, SceneKind, Source, SourceConfig, SyntheticConfig,
    SyntheticDataset,
};
use ndarray::{Array2, Array3};

const SIZE: (usize, usize) = (8, 12);

fn rgb() -> Array3<f32> {
    Array3::from_shape_fn((3, SIZE.0, SIZE.1), |(c, y, x)| {
        (c + y + x) as f32 / 30.0 - 0.5
    })
}

/// Writes an RGB image and, when given, a depth PNG (constant `metres`, millimetres) and a label
/// PNG (constant `label`).
fn write_frame(rgb_path: &Path, depth: Option<(&Path, f32)>, labels: Option<(&Path, u8)>) {
    write_rgb(rgb_path, rgb().view()).unwrap();
    if let Some((path, metres)) = depth {
        let depth = Array2::from_elem(SIZE, metres);
        let mask = Array2::from_elem(SIZE, true);
        write_depth_png(path, depth.view(), mask.view(), 1e-3).unwrap();
    }
    if let Some((path, label)) = labels {
        write_labels_png(path, Array2::from_elem(SIZE, label).view()).unwrap();
    }
}

fn open(source: &SourceConfig) -> Source {
    source.open((16, 16), ReaderOptions::default()).unwrap()
}

fn names(dataset: &impl Dataset) -> Vec<String> {
    (0..dataset.len())
        .map(|i| dataset.get(i).unwrap().name)
        .collect()
}

#[test]
fn seven_scenes_reads_whatever_frames_the_folder_holds_and_filters_by_number() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for n in (1000..1008).filter(|&n| n != 1004) {
        let depth = d.join(format!("frame-{n:06}.depth.png"));
        write_frame(
            &d.join(format!("frame-{n:06}.color.jpg")),
            Some((&depth, 1.5)),
            None,
        );
    }
    // A colour frame without its depth is not a sample.
    write_frame(&d.join("frame-001008.color.jpg"), None, None);
    let all = SourceConfig::SevenScenes {
        root: d.to_path_buf(),
        frames: None,
    };
    let names_all = names(&open(&all));
    assert_eq!(names_all.len(), 7);
    assert_eq!(names_all[0], "frame-001000.color");
    assert_eq!(names_all[4], "frame-001005.color");
    let some = SourceConfig::SevenScenes {
        root: d.to_path_buf(),
        frames: Some([1002, 1006]),
    };
    assert_eq!(
        names(&open(&some)),
        [
            "frame-001002.color",
            "frame-001003.color",
            "frame-001005.color"
        ]
    );
    assert_eq!(
        some.describe(),
        format!("7-Scenes {} (frames 1002-1005)", d.display())
    );
    let backwards = SourceConfig::SevenScenes {
        root: d.to_path_buf(),
        frames: Some([1006, 1002]),
    };
    assert!(backwards.open((16, 16), ReaderOptions::default()).is_err());
    let sample = open(&some).get(0).unwrap();
    assert!((sample.depth[[3, 3]] - 1.5).abs() < 1e-6);
}

#[test]
fn nyu_reads_scene_subfolders_and_split_lists() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (scene, id) in [
        ("kitchen_0001", "00002"),
        ("bathroom_0003", "00001"),
        ("kitchen_0001", "00001"),
    ] {
        let sub = d.join(scene);
        write_frame(
            &sub.join(format!("rgb_{id}.jpg")),
            Some((&sub.join(format!("sync_depth_{id}.png")), 2.0)),
            None,
        );
    }
    write_frame(
        &d.join("rgb_00009.jpg"),
        Some((&d.join("sync_depth_00009.png"), 2.0)),
        Some((&d.join("label_00009.png"), 4)),
    );
    let scan = open(&SourceConfig::Nyu {
        root: d.to_path_buf(),
        split: None,
    });
    let Source::Files(files) = &scan else {
        panic!("a file source")
    };
    let found: Vec<_> = files
        .entries()
        .iter()
        .map(|e| e.rgb.strip_prefix(d).unwrap().display().to_string())
        .collect();
    assert_eq!(
        found,
        [
            "bathroom_0003/rgb_00001.jpg",
            "kitchen_0001/rgb_00001.jpg",
            "kitchen_0001/rgb_00002.jpg",
            "rgb_00009.jpg"
        ]
    );
    assert_eq!(scan.get(3).unwrap().labels.unwrap()[[0, 0]], 4);

    std::fs::write(
        d.join("test.txt"),
        "/kitchen_0001/rgb_00002.jpg /kitchen_0001/sync_depth_00002.png 518.8579\n",
    )
    .unwrap();
    let split = open(&SourceConfig::Nyu {
        root: d.to_path_buf(),
        split: Some("test.txt".into()),
    });
    assert_eq!(names(&split), ["rgb_00002"]);
    let missing = SourceConfig::Nyu {
        root: d.to_path_buf(),
        split: Some("nonexistent_split.txt".into()),
    };
    let err = missing
        .open((16, 16), ReaderOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("nonexistent_split.txt"), "{err}");
}

#[test]
fn kitti_reads_the_gen_data_layout_with_and_without_a_split_list() {
    let dir = tempfile::tempdir().unwrap();
    let ds = SyntheticDataset::new(SyntheticConfig::outdoor(32, 16, 5, 2)).unwrap();
    let options = WriteOptions {
        layout: Layout::Kitti,
        test_fraction: 0.4,
        sheet_rows: 1,
    };
    write_synthetic(&ds, dir.path(), options, &|| {}).unwrap();
    let scan = open(&SourceConfig::Kitti {
        root: dir.path().to_path_buf(),
        split: None,
        depth_root: None,
    });
    assert_eq!(scan.len(), 5);
    let original = ds.get(4).unwrap();
    let read = scan.get(4).unwrap();
    assert_eq!(read.labels, original.labels);
    assert_eq!(read.mask, original.mask);
    let test = open(&SourceConfig::Kitti {
        root: dir.path().to_path_buf(),
        split: Some("test.txt".into()),
        depth_root: Some(dir.path().to_path_buf()),
    });
    assert_eq!(names(&test), ["0000000003", "0000000004"]);
}

#[test]
fn ade20k_other_is_ignored_and_class_1_becomes_0() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (name, label) in [
        ("ADE_train_00000001", 0u8),
        ("ADE_train_00000002", 1),
        ("ADE_train_00000003", 150),
    ] {
        write_frame(
            &root.join(format!("images/training/{name}.jpg")),
            None,
            Some((
                &root.join(format!("annotations/training/{name}.png")),
                label,
            )),
        );
    }
    let source = SourceConfig::Ade20k {
        root: root.to_path_buf(),
        split: "training".into(),
    };
    let ade = open(&source);
    let first_label = |i: usize| ade.get(i).unwrap().labels.unwrap()[[2, 2]];
    assert_eq!(
        [first_label(0), first_label(1), first_label(2)],
        [IGNORE_LABEL, 0, 149]
    );
    assert!(ade.get(0).unwrap().mask.iter().all(|&m| !m));
    let wrong = SourceConfig::Ade20k {
        root: root.to_path_buf(),
        split: "train".into(),
    };
    assert!(wrong.open((16, 16), ReaderOptions::default()).is_err());
    let empty = SourceConfig::Ade20k {
        root: root.to_path_buf(),
        split: "validation".into(),
    };
    // A missing images/validation folder is an I/O error naming it.
    let err = empty.open((16, 16), ReaderOptions::default()).unwrap_err();
    assert!(err.to_string().contains("validation"), "{err}");
}

#[test]
fn folder_source_pairs_rgb_with_depth_and_or_labels_by_stem() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_frame(
        &root.join("rgb/a.png"),
        Some((&root.join("depth/a.png"), 3.0)),
        None,
    );
    write_frame(
        &root.join("rgb/b.jpg"),
        None,
        Some((&root.join("labels/b.png"), 2)),
    );
    write_frame(&root.join("rgb/c.png"), None, None);
    let folder = open(&SourceConfig::Folder {
        root: root.to_path_buf(),
        depth_scale: 1e-3,
    });
    assert_eq!(names(&folder), ["a", "b"]);
    let a = folder.get(0).unwrap();
    assert!((a.depth[[0, 0]] - 3.0).abs() < 1e-6 && a.labels.is_none());
    let b = folder.get(1).unwrap();
    assert_eq!(b.labels.unwrap()[[0, 0]], 2);
    assert!(b.mask.iter().all(|&m| !m));
    let empty_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(empty_dir.path().join("rgb")).unwrap();
    let err = SourceConfig::Folder {
        root: empty_dir.path().to_path_buf(),
        depth_scale: 1e-3,
    }
    .open((16, 16), ReaderOptions::default())
    .unwrap_err();
    assert!(matches!(err, DataError::EmptySource { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&empty_dir.path().display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("rgb/STEM"), "{err}");
}

#[test]
fn synthetic_source_renders_at_the_callers_size_unless_given_one() {
    let at_image_size = SourceConfig::Synthetic {
        scene: SceneKind::Indoor,
        len: 2,
        seed: 1,
        size: None,
        lidar: false,
    };
    let s = open(&at_image_size).get(1).unwrap();
    assert_eq!((s.height(), s.width()), (16, 16));
    let mut sized = at_image_size.clone();
    if let SourceConfig::Synthetic { size, .. } = &mut sized {
        *size = Some([24, 40]);
    }
    let s = open(&sized).get(0).unwrap();
    assert_eq!((s.height(), s.width()), (24, 40));
    assert_eq!(sized.root(), None);
    assert!(sized.set_root("x".into()).is_err());
}

#[test]
fn source_configs_read_from_toml_and_a_misspelled_key_names_itself() {
    let text = r#"
        train = { kind = "sevenscenes", root = "data/redkitchen", frames = [0, 500] }
        ade = { kind = "ade20k", root = "ADEChallengeData2016", split = "validation" }
        folder = { kind = "folder", root = "mine", depth_scale = 0.001 }

        [val]
        kind = "synthetic"
        scene = "outdoor"
        len = 64
        seed = 3
        size = [64, 96]
        lidar = true
    "#;
    #[derive(serde::Deserialize)]
    struct Sources {
        train: SourceConfig,
        val: SourceConfig,
        ade: SourceConfig,
        folder: SourceConfig,
    }
    let sources: Sources = toml::from_str(text).unwrap();
    assert_eq!(
        sources.train,
        SourceConfig::SevenScenes {
            root: "data/redkitchen".into(),
            frames: Some([0, 500]),
        }
    );
    assert!(matches!(
        sources.val,
        SourceConfig::Synthetic {
            lidar: true,
            len: 64,
            ..
        }
    ));
    assert!(matches!(sources.ade, SourceConfig::Ade20k { .. }));
    assert!(matches!(sources.folder, SourceConfig::Folder { .. }));
    let mut train = sources.train;
    train.set_root("elsewhere".into()).unwrap();
    assert_eq!(train.root(), Some(Path::new("elsewhere")));

    let err = toml::from_str::<SourceConfig>("kind = \"nyu\"\nroot = \"x\"\nspilt = \"test.txt\"")
        .unwrap_err();
    assert!(err.to_string().contains("spilt"), "{err}");
    let err = toml::from_str::<SourceConfig>("kind = \"nyuv2\"\nroot = \"x\"").unwrap_err();
    assert!(err.to_string().contains("nyuv2"), "{err}");
}
