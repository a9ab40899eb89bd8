//! Bad command-line input (`docs/reliability.md`): each case runs the `glassbox` binary and must
//! exit non-zero with exactly one line on stderr, `error: ...`, naming the file or value at fault,
//! and no panic or backtrace, whether `RUST_BACKTRACE` is set (odd cases) or unset (even ones).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A run folder of the `test` preset after one step: config.toml and checkpoints.
fn trained_run(root: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_glassbox"))
        .args([
            "train",
            "--preset",
            "test",
            "--steps",
            "1",
            "--quiet",
            "--run-dir",
        ])
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    root.join("test")
}

fn copy_run(run: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(run).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    to.to_path_buf()
}

fn png(path: &Path, width: u32, height: u32) {
    image::RgbImage::new(width, height).save(path).unwrap();
}

/// A valid PNG whose header then claims `width` x `height` (the IHDR's CRC made right).
fn png_claiming(path: &Path, width: u32, height: u32) {
    png(path, 4, 4);
    let mut bytes = std::fs::read(path).unwrap();
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32fast::hash(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn every_bad_input_is_one_line_naming_the_file_or_value_and_never_a_panic() {
    let root = tempfile::tempdir().unwrap();
    let t = root.path();
    let p = |name: &str| t.join(name).display().to_string();
    let run = trained_run(&t.join("runs"));
    let checkpoint = run.join("last.safetensors").display().to_string();

    // Checkpoints: truncated, garbage of the right length, another architecture, a folder.
    let truncated = copy_run(&run, &t.join("truncated"));
    let weights = std::fs::read(truncated.join("last.safetensors")).unwrap();
    std::fs::write(
        truncated.join("last.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    let garbage = copy_run(&run, &t.join("garbage"));
    std::fs::write(
        garbage.join("last.safetensors"),
        vec![0x5au8; weights.len()],
    )
    .unwrap();
    let other = copy_run(&run, &t.join("other"));
    let config = std::fs::read_to_string(other.join("config.toml")).unwrap();
    let wider = config.replace("hidden_size = 32", "hidden_size = 48");
    assert_ne!(wider, config, "the test preset's hidden size moved");
    std::fs::write(other.join("config.toml"), wider).unwrap();
    std::fs::create_dir_all(t.join("hf-folder")).unwrap();
    std::fs::write(t.join("hf-folder/model.safetensors"), &weights).unwrap();

    // Images: not an image, 1 x 1, a header claiming 100000 x 100000, an ordinary one.
    std::fs::write(t.join("notimage.png"), b"this is text, not a PNG").unwrap();
    png(&t.join("one.png"), 1, 1);
    png_claiming(&t.join("huge.png"), 100_000, 100_000);
    png(&t.join("ok.png"), 64, 48);

    // Datasets: RGB and depth of different sizes; an empty folder.
    std::fs::create_dir_all(t.join("mismatch/rgb")).unwrap();
    std::fs::create_dir_all(t.join("mismatch/depth")).unwrap();
    for name in ["a", "b"] {
        png(&t.join(format!("mismatch/rgb/{name}.png")), 64, 48);
        image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_pixel(32, 32, image::Luma([1000]))
            .save(t.join(format!("mismatch/depth/{name}.png")))
            .unwrap();
    }
    std::fs::create_dir_all(t.join("empty")).unwrap();

    // Configs: a TOML syntax error and a misspelt key.
    std::fs::write(t.join("syntax.toml"), "name = \"x\"\nseed = = 3\n").unwrap();
    std::fs::write(t.join("typo.toml"), config.replace("steps =", "stpes =")).unwrap();

    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let runs = p("runs2");
    let train = |extra: &[&str]| {
        let mut v = args(&["train", "--preset", "test", "--quiet", "--run-dir", &runs]);
        v.extend(args(extra));
        v
    };
    let eval = |c: &str| {
        args(&[
            "eval",
            "--checkpoint",
            c,
            "--dataset",
            "synthetic",
            "--root",
            &p("empty"),
        ])
    };
    let predict = |extra: &[&str]| {
        let mut v = args(&["predict", "--checkpoint", &checkpoint, "--out", &p("out")]);
        v.extend(args(extra));
        v
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<String>, String)> = vec![
        ("missing checkpoint", eval(&p("nope.safetensors")), p("nope.safetensors")),
        ("truncated checkpoint", eval(&p("truncated/last.safetensors")), "corrupted or truncated".into()),
        ("garbage checkpoint", eval(&p("garbage/last.safetensors")), p("garbage/last.safetensors")),
        ("another architecture", eval(&p("other/last.safetensors")), "shape mismatches (".into()),
        ("HF folder without config.json", eval(&p("hf-folder")), p("hf-folder")),
        ("not an image", predict(&[&p("notimage.png")]), p("notimage.png")),
        ("1 x 1 image", predict(&[&p("one.png")]), "1 x 1 pixels".into()),
        ("100000 x 100000 header", predict(&[&p("huge.png")]), "claims 100000 x 100000".into()),
        ("RGB and depth of different sizes", train(&["--dataset", "folder", "--data-root", &p("mismatch")]), "mismatch".into()),
        ("empty dataset folder", train(&["--dataset", "folder", "--data-root", &p("empty")]), p("empty")),
        ("image size off the patch grid", train(&["--image-size", "60"]), "60x60".into()),
        ("image size not a size", train(&["--image-size", "abc"]), "abc".into()),
        ("zero steps", train(&["--steps", "0"]), "optim.steps".into()),
        ("zero batch size", train(&["--batch-size", "0"]), "batch_size".into()),
        ("NaN learning rate", train(&["--lr", "nan"]), "NaN".into()),
        ("negative learning rate", train(&["--lr", "-1"]), "= -1".into()),
        ("unknown preset", args(&["train", "--preset", "nope"]), "\"nope\"".into()),
        ("unknown dataset", train(&["--dataset", "bogus"]), "bogus".into()),
        ("unknown device", train(&["--device", "bogus"]), "\"bogus\"".into()),
        ("resume of a run that does not exist", train(&["--resume", "--name", "never"]), "never".into()),
        ("TOML syntax error", args(&["train", "--config", &p("syntax.toml"), "--quiet"]), p("syntax.toml")),
        ("misspelt key", args(&["train", "--config", &p("typo.toml"), "--quiet"]), "stpes".into()),
        ("attention layer out of range", predict(&["--attention-layer", "99", "--token", "0", &p("ok.png")]), "layer 99".into()),
        ("token index out of range", predict(&["--attention-layer", "1", "--token", "9999", &p("ok.png")]), "token 9999".into()),
        ("keep ratio above 1", train(&["--keep-ratio", "1.5"]), "1.5".into()),
        ("unknown backbone", train(&["--backbone", "resnet"]), "resnet".into()),
        ("strip layer 0", train(&["--strip-layer", "0"]), "schedule.strip_layer".into()),
        ("unknown grid", args(&["ablate", "--grid", "nope"]), "nope".into()),
        ("report of a missing run", args(&["report", &p("no-run")]), p("no-run")),
        ("eval root that does not exist", args(&["eval", "--checkpoint", &checkpoint, "--dataset", "nyu", "--root", &p("nothere")]), p("nothere")),
        ("unknown flag", args(&["train", "--bogus"]), "--bogus".into()),
        ("init file that does not exist", train(&["--init", &p("nope.safetensors")]), p("nope.safetensors")),
        ("init from a garbage file", train(&["--init", &p("notimage.png")]), p("notimage.png")),
        ("backbone weights that do not exist", train(&["--backbone-weights", &p("vit.safetensors")]), p("vit.safetensors")),
        ("unknown export format", args(&["export", "--checkpoint", &checkpoint, "--format", "onnx", "--out", &p("x")]), "onnx".into()),
        ("export of a missing checkpoint", args(&["export", "--checkpoint", &p("nope.safetensors"), "--format", "hf", "--out", &p("x")]), p("nope.safetensors")),
    ];
    let no_gpu = !tch::Cuda::is_available();
    let mut cases = cases;
    if no_gpu {
        cases.push((
            "cuda without a GPU",
            train(&["--device", "cuda"]),
            "\"cuda\" is not available".into(),
        ));
    }
    for (i, (name, args, expected)) in cases.iter().enumerate() {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_glassbox"));
        cmd.args(args);
        if i % 2 == 1 {
            cmd.env("RUST_BACKTRACE", "1");
        } else {
            cmd.env_remove("RUST_BACKTRACE");
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!out.status.success(), "{name}: exit 0\n{stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{name}: a panic\n{stderr}"
        );
        assert_eq!(lines.len(), 1, "{name}: not one line\n{stderr}");
        assert!(lines[0].starts_with("error: "), "{name}: {stderr}");
        assert!(
            lines[0].contains(expected.as_str()),
            "{name}: the error does not name {expected:?}\n{stderr}"
        );
    }
    eprintln!(
        "{} bad inputs, each one line naming the file or value",
        cases.len()
    );
    assert!(cases.len() >= 25);
}
