//! Compiles the C++ shim (shim/*.cpp) against the libtorch that tch links (`LIBTORCH`, as
//! torch-sys reads it). The NCCL half is compiled only where that libtorch has CUDA and nccl.h is
//! found; it then sets the `glassbox_nccl` cfg.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=shim");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=NCCL_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=GLASSBOX_NCCL");
    println!("cargo::rustc-check-cfg=cfg(glassbox_nccl)");

    let Some(libtorch) = env::var_os("LIBTORCH").map(PathBuf::from) else {
        panic!(
            "glassbox-distributed: LIBTORCH is not set; run through `cargo xtask` (or source \
             `cargo xtask env`) so that the shim compiles against tch's libtorch"
        );
    };
    let include = libtorch.join("include");
    let lib = libtorch.join("lib");
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());

    let mut build = base(&include, &abi);
    build
        .include("shim/gloo_decl")
        .define("USE_C10D_GLOO", None)
        .file("shim/group.cpp");

    let nccl = nccl_includes(&libtorch);
    if let Some(dirs) = &nccl {
        build.define("GLASSBOX_NCCL", None);
        let mut cuda = base(&include, &abi);
        cuda.includes(dirs)
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .define("GLASSBOX_NCCL", None)
            .file("shim/nccl.cpp");
        cuda.compile("glassbox_c10d_nccl");
        println!("cargo:rustc-cfg=glassbox_nccl");
    }
    build.compile("glassbox_c10d");

    println!("cargo:rustc-link-search=native={}", lib.display());
    if nccl.is_some() {
        println!("cargo:rustc-link-lib=torch_cuda");
    }
    println!("cargo:rustc-link-lib=torch_cpu");
    println!("cargo:rustc-link-lib=c10");
}

fn base(include: &Path, abi: &str) -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .include(include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", abi)
        .define("GLOG_USE_GLOG_EXPORT", None)
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false);
    build
}

/// nccl.h and a CUDA toolkit's headers, when libtorch has CUDA: from `NCCL_INCLUDE_DIR` and
/// `CUDA_HOME` (or /usr/local/cuda), and the pip `nvidia-*` packages beside a pip-installed torch.
/// `GLASSBOX_NCCL=0` leaves NCCL out.
fn nccl_includes(libtorch: &Path) -> Option<Vec<PathBuf>> {
    if env::var("GLASSBOX_NCCL").is_ok_and(|v| v == "0")
        || !libtorch.join("lib/libtorch_cuda.so").exists()
    {
        return None;
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = env::var_os("NCCL_INCLUDE_DIR") {
        candidates.push(dir.into());
    }
    if let Some(home) = env::var_os("CUDA_HOME") {
        candidates.push(PathBuf::from(home).join("include"));
    }
    candidates.push("/usr/local/cuda/include".into());
    candidates.push("/usr/include".into());
    if let Some(nvidia) = libtorch.parent().map(|p| p.join("nvidia"))
        && let Ok(entries) = std::fs::read_dir(&nvidia)
    {
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("include"))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        candidates.extend(dirs);
    }
    // The pip CUDA runtime package ships cuda_runtime.h without crt/host_config.h; a CUDA
    // toolkit has both.
    let has = |name: &str| candidates.iter().any(|d| d.join(name).exists());
    (has("nccl.h") && has("cuda_runtime.h") && has("crt/host_config.h")).then_some(candidates)
}
