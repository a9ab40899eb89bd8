//! CPU cost of one attention layer at ViT-Tiny and ViT-Base size: standard vs SVDA, fused vs
//! explicit, forward (inference, no autograd) and forward+backward. Standard and SVDA run back to
//! back for each case so that machine noise hits both alike; the run ends with a table of the
//! SVDA / standard time ratios read from criterion's estimates.
//!
//! `eval "$(cargo xtask env)" && cargo bench -p glassbox-attention --bench attention`
//!
//! On a machine shared with other jobs wall time mostly measures the neighbours; set
//! `GLASSBOX_BENCH_CLOCK=cpu` to measure this process's CPU time instead (the sum of the
//! nanosecond run times of all its threads, from Linux's `/proc/self/task/*/schedstat`), and
//! `GLASSBOX_BENCH_THREADS=1` to keep libtorch's idle threads from spinning into that time.

use std::path::PathBuf;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, SamplingMode, Throughput};
use glassbox_attention::{Attention, AttentionConfig, AttentionKind};
use tch::{Device, Kind, Tensor, nn};

/// (name, batch, tokens, dim, heads): ViT-Tiny at 256 x 256 and ViT-Base at 384 x 384, both with
/// the readout token.
const CASES: [(&str, i64, i64, i64, i64); 2] =
    [("vit-tiny", 8, 257, 192, 3), ("vit-base", 2, 577, 768, 12)];
const KINDS: [(&str, AttentionKind); 2] = [
    ("standard", AttentionKind::Standard),
    ("svda", AttentionKind::Svda),
];
const PATHS: [&str; 2] = ["fused", "explicit"];
const MODES: [&str; 2] = ["fwd", "fwd+bwd"];

fn run(attn: &Attention, x: &Tensor, path: &str) -> Tensor {
    let out = match path {
        "fused" => attn.forward_t(x, true),
        _ => attn.forward_with_maps(x).map(|maps| maps.output),
    };
    out.expect("benchmark inputs are valid")
}

/// CPU time of the whole process (all threads) in nanoseconds, for benchmarks on a busy machine.
struct ProcessCpuTime;

fn process_cpu_ns() -> f64 {
    let tasks =
        std::fs::read_dir("/proc/self/task").expect("Linux /proc is needed for the cpu clock");
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<f64>().ok())
        .sum()
}

struct Milliseconds;

impl ValueFormatter for Milliseconds {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v *= 1e-6);
        "ms (cpu)"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        _t: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        self.scale_values(0.0, values)
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ProcessCpuTime {
    type Intermediate = f64;
    type Value = f64;
    fn start(&self) -> f64 {
        process_cpu_ns()
    }
    fn end(&self, start: f64) -> f64 {
        process_cpu_ns() - start
    }
    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }
    fn zero(&self) -> f64 {
        0.0
    }
    fn to_f64(&self, value: &f64) -> f64 {
        *value
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Milliseconds
    }
}

fn bench<M: Measurement + 'static>(c: &mut Criterion<M>, clock: &str) {
    for (case, batch, tokens, dim, heads) in CASES {
        tch::manual_seed(0);
        let layers: Vec<(&str, nn::VarStore, Attention)> = KINDS
            .iter()
            .map(|&(name, kind)| {
                let vs = nn::VarStore::new(Device::Cpu);
                let attn = Attention::new(vs.root(), &AttentionConfig::new(dim, heads, kind))
                    .expect("valid config");
                (name, vs, attn)
            })
            .collect();
        let x = Tensor::randn([batch, tokens, dim], (Kind::Float, Device::Cpu));
        let x_grad = x.copy().set_requires_grad(true);
        for mode in MODES {
            let mut group = c.benchmark_group(format!("{clock} {case} {mode}"));
            group
                .sample_size(10)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(3))
                .sampling_mode(SamplingMode::Flat);
            for path in PATHS {
                for (kind, _vs, attn) in &layers {
                    group.bench_function(format!("{path} {kind}"), |b| match mode {
                        "fwd" => b.iter(|| tch::no_grad(|| run(attn, &x, path))),
                        _ => b.iter(|| run(attn, &x_grad, path).sum(Kind::Float).backward()),
                    });
                }
            }
            group.finish();
        }
    }
}

/// Mean time in seconds of every benchmark of this file, by criterion's full id.
fn read_means(dir: &std::path::Path) -> std::collections::HashMap<String, f64> {
    let mut means = std::collections::HashMap::new();
    let groups = std::fs::read_dir(dir).into_iter().flatten().flatten();
    for bench in groups.flat_map(|g| std::fs::read_dir(g.path()).into_iter().flatten().flatten()) {
        let new = bench.path().join("new");
        let read = |f: &str| -> Option<serde_json::Value> {
            serde_json::from_str(&std::fs::read_to_string(new.join(f)).ok()?).ok()
        };
        if let (Some(meta), Some(est)) = (read("benchmark.json"), read("estimates.json"))
            && let (Some(id), Some(ns)) = (
                meta["full_id"].as_str(),
                est["mean"]["point_estimate"].as_f64(),
            )
        {
            means.insert(id.to_string(), ns * 1e-9);
        }
    }
    means
}

fn print_ratio_table(clock: &str) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("criterion"));
    let means = read_means(&dir);
    println!("\n{clock} time, mean of criterion's samples:");
    println!("| case | pass | path | standard (ms) | SVDA (ms) | SVDA / standard |");
    println!("|---|---|---|---:|---:|---:|");
    for (case, ..) in CASES {
        for mode in MODES {
            for path in PATHS {
                let get = |kind: &str| {
                    means
                        .get(&format!("{clock} {case} {mode}/{path} {kind}"))
                        .copied()
                };
                if let (Some(s), Some(v)) = (get("standard"), get("svda")) {
                    println!(
                        "| {case} | {mode} | {path} | {:.2} | {:.2} | {:.3} |",
                        s * 1e3,
                        v * 1e3,
                        v / s
                    );
                }
            }
        }
    }
}

fn main() {
    if let Some(threads) = std::env::var("GLASSBOX_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
    {
        tch::set_num_threads(threads);
    }
    let clock = std::env::var("GLASSBOX_BENCH_CLOCK").unwrap_or_else(|_| "wall".to_string());
    if clock == "cpu" {
        let mut criterion = Criterion::default()
            .with_measurement(ProcessCpuTime)
            .without_plots()
            .configure_from_args();
        bench(&mut criterion, "cpu");
        criterion.final_summary();
    } else {
        let mut criterion = Criterion::default().without_plots().configure_from_args();
        bench(&mut criterion, "wall");
        criterion.final_summary();
    }
    print_ratio_table(if clock == "cpu" { "cpu" } else { "wall" });
}
