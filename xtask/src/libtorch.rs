//! Finding or installing libtorch 2.13.0 (`docs/architecture.md`).
//!
//! tch 0.26 links against libtorch 2.13.0. The simplest portable source is the PyPI `torch==2.13.0`
//! wheel, which carries `lib/` and `include/`; we install it once into a venv in a cache folder
//! outside the repository, together with the Python reference peer (HF transformers) that the
//! parity tests and benchmarks compare against. A marker file makes later runs take milliseconds.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// The libtorch version tch 0.26 is written against.
pub const TORCH_VERSION: &str = "2.13.0";

/// Python packages of the reference environment, pinned so parity tests compare against one peer.
const PYTHON_REQUIREMENTS: &[&str] = &[
    "torch==2.13.0",
    "transformers==4.57.1",
    "safetensors",
    "numpy",
];

/// Where libtorch lives and which Python can run the reference scripts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Torch {
    /// The folder with `lib/` and `include/` that `LIBTORCH` must point at.
    pub libtorch: PathBuf,
    /// A Python interpreter that imports torch (and, for the venv we make, transformers).
    pub python: Option<PathBuf>,
    pub version: String,
}

impl Torch {
    pub fn lib_dir(&self) -> PathBuf {
        self.libtorch.join("lib")
    }
}

/// Resolves libtorch: the user's `LIBTORCH`, the user's Python torch (`LIBTORCH_USE_PYTORCH=1`),
/// or our cached venv, installing it on first use.
pub fn ensure(cache_dir: &Path) -> Result<Torch> {
    if let Some(dir) = std::env::var_os("LIBTORCH").filter(|v| !v.is_empty()) {
        return from_user_libtorch(PathBuf::from(dir), cache_dir);
    }
    if std::env::var("LIBTORCH_USE_PYTORCH").is_ok_and(|v| v == "1") {
        let python =
            std::env::var_os("PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
        let torch = probe_python(&python).with_context(|| {
            format!(
                "LIBTORCH_USE_PYTORCH=1 is set but `{}` cannot import torch: install torch=={TORCH_VERSION} for it or unset LIBTORCH_USE_PYTORCH",
                python.display()
            )
        })?;
        check_version(
            &torch.version,
            "the Python torch selected by LIBTORCH_USE_PYTORCH=1",
        )?;
        return Ok(torch);
    }
    ensure_venv(cache_dir)
}

fn from_user_libtorch(dir: PathBuf, cache_dir: &Path) -> Result<Torch> {
    if !dir.join("lib").is_dir() || !dir.join("include").is_dir() {
        bail!(
            "LIBTORCH={} has no lib/ and include/ folders: point it at an unpacked libtorch {TORCH_VERSION} (or a site-packages/torch folder), or unset it to let xtask install one",
            dir.display()
        );
    }
    let version = read_libtorch_version(&dir);
    if let Some(v) = &version {
        check_version(v, &format!("LIBTORCH={}", dir.display()))?;
    }
    // The Python peer is still needed by parity tests; reuse our venv if it exists, never force it.
    let python = read_marker(&venv_dir(cache_dir)).and_then(|t| t.python);
    Ok(Torch {
        libtorch: dir,
        python,
        version: version.unwrap_or_else(|| TORCH_VERSION.into()),
    })
}

/// libtorch zips carry `build-version`; a wheel's torch folder carries `version.py`.
fn read_libtorch_version(dir: &Path) -> Option<String> {
    if let Ok(s) = std::fs::read_to_string(dir.join("build-version")) {
        return Some(s.trim().to_string());
    }
    let py = std::fs::read_to_string(dir.join("version.py")).ok()?;
    py.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(['\'', '"']).to_string())
}

fn check_version(version: &str, what: &str) -> Result<()> {
    if version.split('+').next() != Some(TORCH_VERSION) {
        bail!(
            "{what} is torch {version}, but tch 0.26 needs exactly {TORCH_VERSION}: install torch=={TORCH_VERSION} there, or unset it to let xtask install its own"
        );
    }
    Ok(())
}

pub fn venv_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join(format!("venv-torch-{TORCH_VERSION}"))
}

fn marker_path(venv: &Path) -> PathBuf {
    venv.join("glassbox-ready.json")
}

fn read_marker(venv: &Path) -> Option<Torch> {
    let text = std::fs::read_to_string(marker_path(venv)).ok()?;
    let torch: Torch = serde_json::from_str(&text).ok()?;
    let complete = torch.lib_dir().join("libtorch_cpu.so").exists()
        && torch.python.as_ref().is_some_and(|p| p.exists());
    complete.then_some(torch)
}

fn ensure_venv(cache_dir: &Path) -> Result<Torch> {
    let venv = venv_dir(cache_dir);
    if let Some(torch) = read_marker(&venv) {
        return Ok(torch);
    }
    std::fs::create_dir_all(cache_dir).with_context(|| {
        format!(
            "cannot create the cache folder {} (set GLASSBOX_CACHE_DIR to a writable folder)",
            cache_dir.display()
        )
    })?;
    let python = venv.join("bin").join("python");
    if !python.exists() {
        create_venv(&venv)?;
    }
    pip_install(&python)?;
    let torch = probe_python(&python).context("the freshly installed torch cannot be imported")?;
    check_version(&torch.version, &format!("the venv {}", venv.display()))?;
    let marker = serde_json::to_string_pretty(&torch)?;
    std::fs::write(marker_path(&venv), marker)?;
    eprintln!(
        "libtorch {} ready in {}",
        torch.version,
        torch.libtorch.display()
    );
    Ok(torch)
}

fn create_venv(venv: &Path) -> Result<()> {
    let status = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if status.is_err() {
        bail!(
            "python3 was not found: install Python 3.10+ with pip and venv (Debian: `apt-get install python3 python3-venv python3-pip`), or set LIBTORCH to an unpacked libtorch {TORCH_VERSION}"
        );
    }
    eprintln!("creating the Python venv {}", venv.display());
    let out = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv)
        .output()?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(venv);
        bail!(
            "`python3 -m venv` failed ({}): install the venv module and pip (Debian: `apt-get install python3-venv python3-pip`)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs pip and shows what it is doing: a spinner on a terminal, plain lines in CI logs.
fn pip_install(python: &Path) -> Result<()> {
    let mut child = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
        ])
        .args(PYTHON_REQUIREMENTS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run pip with {}", python.display()))?;

    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!(
        "installing {} (about 5 GB, once)",
        PYTHON_REQUIREMENTS.join(" ")
    ));
    if !terminal {
        eprintln!(
            "installing {} into the venv (about 5 GB, once)",
            PYTHON_REQUIREMENTS.join(" ")
        );
    }

    let stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let line = line.trim().to_string();
        let interesting = ["Collecting", "Downloading", "Installing", "Successfully"]
            .iter()
            .any(|p| line.starts_with(p));
        if interesting {
            if terminal {
                bar.set_message(line);
            } else {
                eprintln!("  {line}");
            }
        }
    }
    let status = child.wait()?;
    bar.finish_and_clear();
    let err_lines = err_reader.join().unwrap_or_default();
    if !status.success() {
        let err = err_lines.join("\n");
        let unreachable = [
            "Failed to establish a new connection",
            "Temporary failure in name resolution",
            "Network is unreachable",
            "ConnectTimeout",
            "ProxyError",
            "Max retries exceeded",
        ]
        .iter()
        .any(|s| err.contains(s));
        if unreachable || (err.contains("from versions: none") && !index_reachable(python)) {
            bail!(
                "PyPI is unreachable, so torch=={TORCH_VERSION} cannot be installed: check the network or proxy (pip's PIP_INDEX_URL), or set LIBTORCH to an unpacked libtorch {TORCH_VERSION}"
            );
        }
        if err.contains("No matching distribution") || err.contains("Could not find a version") {
            bail!(
                "pip finds no torch=={TORCH_VERSION} for this Python/platform: use a 64-bit Python 3.10-3.14 on Linux x86_64 or aarch64, or set LIBTORCH to an unpacked libtorch {TORCH_VERSION}"
            );
        }
        let tail: Vec<_> = err_lines.iter().rev().take(15).rev().cloned().collect();
        bail!("pip install failed:\n{}", tail.join("\n"));
    }
    Ok(())
}

/// Whether pip can list anything at all from its index: when it cannot, "no matching
/// distribution" means the registry is unreachable, not that torch lacks a wheel for us.
fn index_reachable(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-m",
            "pip",
            "index",
            "versions",
            "pip",
            "--disable-pip-version-check",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Asks a Python interpreter where its torch lives and which version it is.
fn probe_python(python: &Path) -> Result<Torch> {
    let out = Command::new(python)
        .args([
            "-c",
            "import os, torch; print(torch.__version__); print(os.path.dirname(torch.__file__))",
        ])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut lines = text.lines();
    let version = lines
        .next()
        .context("no torch version printed")?
        .trim()
        .to_string();
    let dir = lines.next().context("no torch path printed")?.trim();
    // Keep the venv's own interpreter path (not the resolved symlink), so site-packages stay in view.
    let python = if python.is_absolute() {
        python.to_path_buf()
    } else {
        which(python).unwrap_or_else(|| python.to_path_buf())
    };
    Ok(Torch {
        libtorch: PathBuf::from(dir),
        python: Some(python),
        version,
    })
}

fn which(program: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
