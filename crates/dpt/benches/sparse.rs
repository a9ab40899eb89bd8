//! Sparse token updates against the dense model (docs/performance.md, "Sparse token updates"):
//! encoder inference and whole-DPT inference of dpt-base at 384 x 384 (576 patch tokens, batch 1),
//! and a dpt-tiny train step at 256 x 256 (batch 8), dense and at keep ratios rho.
//!
//! Criterion cases (ids `sparse/<case>/rho=<rho>`) time each alone. Because a shared VM drifts
//! by 5-10 % between separately timed cases, the ratios the docs quote come from the **paired**
//! measurement that follows: the dense and the sparse subject run alternately (A B, B A, ...)
//! over `PAIRED_ROUNDS` rounds after a warm-up call each, and the median of the per-round ratios
//! is reported next to the counted FLOPs ratio (`EncoderMacs`). It prints a markdown table and,
//! when `GLASSBOX_BENCH_SPARSE_OUT` names a file, writes the rows there as JSON.
//!
//! Both models share every weight but the scorer (same seed), so the work differs only by
//! sparsity. The sparse train step adds the scorer's BCE loss, with its saliency target measured
//! from the kept queries' attention (the training-time cost a user pays).
//!
//! Threads: `GLASSBOX_BENCH_THREADS` (default 2).
//! `eval "$(cargo xtask env)" && GLASSBOX_BENCH_THREADS=1 cargo bench -p glassbox-dpt --bench sparse -- --noplot`

mod common;

use std::time::{Duration, Instant};

use common::{median, threads};
use criterion::{Criterion, SamplingMode};
use glassbox_dpt::{Dpt, DptConfig};
use glassbox_encoder::EncoderMacs;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Alternating rounds per paired case.
const PAIRED_ROUNDS: usize = 10;

/// What is timed.
#[derive(Clone, Copy, PartialEq)]
enum Case {
    /// The ViT encoder alone, eval mode, no gradient.
    Encoder,
    /// Encoder + decoder + head, eval mode, no gradient.
    Model,
    /// Forward, loss (mean depth, plus the scorer's BCE when sparse), backward, Adam step.
    TrainStep,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Encoder => "encoder_inference",
            Case::Model => "model_inference",
            Case::TrainStep => "train_step",
        }
    }
}

/// (case, preset, image side, batch, keep ratios compared with dense).
/// The dpt-tiny model-inference row is the dense forward a dense teacher (or a periodic dense
/// pass) would add to each train step of the row below it (docs/sparse.md).
const CASES: [(Case, &str, i64, i64, &[f64]); 5] = [
    (Case::Encoder, "dpt-base", 384, 1, &[0.5, 0.3, 0.2, 0.1]),
    (Case::Model, "dpt-base", 384, 1, &[0.3]),
    (Case::Encoder, "dpt-tiny", 256, 8, &[0.3]),
    (Case::Model, "dpt-tiny", 256, 8, &[0.3]),
    (Case::TrainStep, "dpt-tiny", 256, 8, &[0.3]),
];

/// A random-init model (seed 0) of `preset` at `keep_ratio`, with Adam for train steps.
struct Subject {
    _vs: nn::VarStore,
    dpt: Dpt,
    opt: Option<nn::Optimizer>,
    case: Case,
}

impl Subject {
    fn new(case: Case, preset: &str, keep_ratio: f64) -> Self {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut config = DptConfig::preset(preset).expect("known preset");
        config.encoder.keep_ratio = keep_ratio;
        let dpt = Dpt::new(&vs.root(), &config).expect("valid preset");
        let opt =
            (case == Case::TrainStep).then(|| nn::Adam::default().build(&vs, 1e-4).expect("Adam"));
        Self {
            _vs: vs,
            dpt,
            opt,
            case,
        }
    }

    fn call(&mut self, images: &Tensor) {
        match self.case {
            Case::Encoder => {
                let _out = tch::no_grad(|| self.dpt.encoder().forward_t(images, false))
                    .expect("valid input");
            }
            Case::Model => {
                let _depth =
                    tch::no_grad(|| self.dpt.disparity_t(images, false)).expect("valid input");
            }
            Case::TrainStep => {
                let (out, saliency) = self
                    .dpt
                    .forward_with_saliency_t(images, true)
                    .expect("valid input");
                let glassbox_dpt::DptOutput::Disparity(depth) = out else {
                    panic!("a depth preset predicts disparity")
                };
                let mut loss = depth.mean(Kind::Float);
                if let Some(bce) = saliency.and_then(|s| s.loss()) {
                    loss += bce;
                }
                let opt = self.opt.as_mut().expect("train subjects have Adam");
                opt.zero_grad();
                loss.backward();
                opt.step();
            }
        }
    }
}

fn seconds(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn criterion_cases(c: &mut Criterion) {
    let mut group = c.benchmark_group("sparse");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat);
    for (case, preset, side, batch, ratios) in CASES {
        let images = Tensor::randn([batch, 3, side, side], (Kind::Float, Device::Cpu));
        for &rho in [1.0].iter().chain(ratios.iter().take(2)) {
            let mut subject = Subject::new(case, preset, rho);
            let id = format!("{preset}/{}/rho={rho}", case.name());
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        subject.call(&images);
                    }
                    t.elapsed()
                })
            });
        }
    }
    group.finish();
}

/// The paired dense-vs-sparse measurement, one row per (case, rho).
fn paired(threads: i32) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for (case, preset, side, batch, ratios) in CASES {
        let images = Tensor::randn([batch, 3, side, side], (Kind::Float, Device::Cpu));
        let mut dense = Subject::new(case, preset, 1.0);
        dense.call(&images);
        let config = DptConfig::preset(preset).expect("known preset").encoder;
        let grid = (side / config.patch_size, side / config.patch_size);
        let dense_macs = EncoderMacs::count(&config, grid, 1.0);
        for &rho in ratios {
            let mut sparse = Subject::new(case, preset, rho);
            sparse.call(&images);
            let (mut td, mut ts, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..PAIRED_ROUNDS {
                let (d, s) = if round % 2 == 0 {
                    let d = seconds(|| dense.call(&images));
                    (d, seconds(|| sparse.call(&images)))
                } else {
                    let s = seconds(|| sparse.call(&images));
                    (seconds(|| dense.call(&images)), s)
                };
                td.push(d * 1e3);
                ts.push(s * 1e3);
                ratios.push(d / s);
            }
            let macs = EncoderMacs::count(&config, grid, rho);
            let row = serde_json::json!({
                "case": case.name(), "preset": preset, "side": side, "batch": batch,
                "threads": threads, "keep_ratio": rho, "rounds": PAIRED_ROUNDS,
                "dense_median_ms": median(&mut td), "sparse_median_ms": median(&mut ts),
                "speedup": median(&mut ratios),
                "encoder_gmacs_dense": dense_macs.total() / 1e9,
                "encoder_gmacs_sparse": macs.total() / 1e9,
                "encoder_flops_ratio": dense_macs.total() / macs.total(),
            });
            eprintln!("{row}");
            rows.push(row);
        }
    }
    rows
}

fn main() {
    let n = threads();
    tch::set_num_threads(n);
    assert_eq!(tch::get_num_threads(), n, "libtorch refused {n} threads");
    let mut c = Criterion::default().configure_from_args();
    criterion_cases(&mut c);
    c.final_summary();
    // `cargo test --benches` runs each criterion case once and skips the paired measurement.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rows = paired(n);
    let mut table = String::from(
        "| case | model | threads | rho | dense ms | sparse ms | measured speed-up | \
         encoder GMACs dense / sparse | counted encoder ratio |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        table += &format!(
            "| {} | {} {}x{}, batch {} | {} | {} | {:.1} | {:.1} | {:.2}x | {:.1} / {:.1} | {:.2}x |\n",
            r["case"].as_str().unwrap_or_default(),
            r["preset"].as_str().unwrap_or_default(),
            r["side"],
            r["side"],
            r["batch"],
            r["threads"],
            r["keep_ratio"],
            r["dense_median_ms"].as_f64().unwrap_or(f64::NAN),
            r["sparse_median_ms"].as_f64().unwrap_or(f64::NAN),
            r["speedup"].as_f64().unwrap_or(f64::NAN),
            r["encoder_gmacs_dense"].as_f64().unwrap_or(f64::NAN),
            r["encoder_gmacs_sparse"].as_f64().unwrap_or(f64::NAN),
            r["encoder_flops_ratio"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!("\n{table}");
    if let Some(path) = std::env::var_os("GLASSBOX_BENCH_SPARSE_OUT") {
        let path = std::path::PathBuf::from(path);
        let text = serde_json::to_string_pretty(&rows).expect("JSON of numbers");
        for (file, body) in [(path.clone(), text), (path.with_extension("md"), table)] {
            std::fs::write(&file, body)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        }
    }
}
