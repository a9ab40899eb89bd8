//! System packages the workspace needs that no registry crate can vendor for us.

use std::process::Command;

use anyhow::{Result, bail};

/// ndarray-linalg (glassbox-spectral) links the system OpenBLAS with LAPACKE: Debian's
/// `libopenblas-dev`.
pub fn ensure_openblas() -> Result<()> {
    ensure_debian_package("libopenblas-dev", "glassbox-spectral links OpenBLAS")
}

/// Installs the Debian package `package` when it is missing and we can (root with apt-get), and
/// otherwise says how; `why` tells the user what needs it.
pub fn ensure_debian_package(package: &str, why: &str) -> Result<()> {
    let Ok(out) = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
    else {
        // Not a Debian-like system: we cannot check; the tool that needs it will say so.
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout).contains("install ok installed") {
        return Ok(());
    }
    if !is_root() || Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "{package} is missing ({why}): run `sudo apt-get install -y {package}` and try again"
        );
    }
    eprintln!("installing {package} with apt-get ({why})");
    let update = Command::new("apt-get").args(["update", "-qq"]).status()?;
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !update.success() || !install.success() {
        bail!("`apt-get install -y {package}` failed: run it by hand and read its message");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
