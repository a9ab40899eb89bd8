//! System libraries the workspace links against that no registry crate can vendor for us.

use std::process::Command;

use anyhow::{Result, bail};

/// ndarray-linalg (glassbox-spectral) links the system OpenBLAS with LAPACKE: Debian's
/// `libopenblas-dev`. We install it when we can (root with apt-get) and otherwise say how.
pub fn ensure_openblas() -> Result<()> {
    let Ok(out) = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "libopenblas-dev"])
        .output()
    else {
        // Not a Debian-like system: we cannot check; the linker will name what is missing.
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout).contains("install ok installed") {
        return Ok(());
    }
    if !is_root() || Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "libopenblas-dev is missing (glassbox-spectral links OpenBLAS): run `sudo apt-get install -y libopenblas-dev` and try again"
        );
    }
    eprintln!("installing libopenblas-dev with apt-get");
    let update = Command::new("apt-get").args(["update", "-qq"]).status()?;
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "libopenblas-dev"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !update.success() || !install.success() {
        bail!("`apt-get install -y libopenblas-dev` failed: run it by hand and read its message");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
