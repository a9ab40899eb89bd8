//! End-to-end CPU cost of a whole DPT, the Rust side of `cargo xtask bench` (docs/performance.md,
//! "DPT end to end vs PyTorch"); tests-python/bench_dpt.py times the same cases in HF transformers.
//!
//! Cases (criterion ids `<model>/<mode>`):
//! - `dpt-tiny/inference`, `dpt-tiny/train_step`: 256 x 256, batch 8;
//! - `dpt-base/inference` (batch 1) and `dpt-base/train_step` (batch 2): 384 x 384;
//! - `dpt-tiny-svda/inference`, `dpt-tiny-svda/train_step`, `dpt-base-svda/inference`: the same
//!   with SVDA attention (glassbox's default SVDA), for its overhead against our standard rows;
//! - `dpt-tiny/encoder_inference`, `dpt-base/encoder_inference`: the ViT encoder alone (inference
//!   batch), so that a gap can be put on the encoder or on decoder + head;
//! - `hybrid-tiny/*` (256 x 256, batch 8) and `dpt-hybrid/*` (384 x 384, batch 1 and 2): the same
//!   three cases for DPT-Hybrid (ResNet stem + ViT; `cargo xtask bench --hybrid` runs only these).
//!
//! inference = eval mode under `no_grad`, one forward; train_step = train mode, forward,
//! loss = mean(depth), zero_grad, backward, Adam(lr 1e-4) step, exactly what the Python side does.
//! Random init, random N(0, 1) images. Threads: `GLASSBOX_BENCH_THREADS` (default 2) for
//! `tch::set_num_threads`; xtask passes the same number to the Python side.
//!
//! Clock: `GLASSBOX_BENCH_CLOCK=wall` (default) or `cpu`. `cpu` reports the process's user + system
//! time per call (all threads, from /proc/self/stat, 10 ms ticks), which on a machine shared with
//! other jobs counts our work but not the time we wait for a core; the Python side has the same
//! switch (`time.process_time`).
//!
//! SVDA's overhead is also measured **paired** after the criterion cases: for dpt-tiny inference,
//! dpt-tiny train step and dpt-base inference, the standard and the SVDA model run alternately
//! (A B, B A, A B, ... over `PAIRED_ROUNDS` rounds after one warm-up call each), so slow drifts of
//! a shared VM, which move separately measured criterion cases by 5-10 %, fall on both alike. The
//! medians and the ratio go to stderr and, when `GLASSBOX_BENCH_PAIRED_OUT` names a file, into it
//! as JSON (`cargo xtask bench` reads it; docs/performance.md, "SVDA overhead").
//!
//! `eval "$(cargo xtask env)" && cargo bench -p glassbox-dpt --bench dpt -- --noplot`

mod common;

use std::time::{Duration, Instant};

use common::{median, threads};
use criterion::{Criterion, SamplingMode};
use glassbox_dpt::{Dpt, DptConfig};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// (preset, image side, inference batch, train batch; None = no train-step case).
const MODELS: [(&str, i64, i64, Option<i64>); 6] = [
    ("dpt-tiny", 256, 8, Some(8)),
    ("dpt-base", 384, 1, Some(2)),
    ("dpt-tiny-svda", 256, 8, Some(8)),
    ("dpt-base-svda", 384, 1, None),
    ("hybrid-tiny", 256, 8, Some(8)),
    ("dpt-hybrid", 384, 1, Some(2)),
];

/// Which clock the timings read.
#[derive(Clone, Copy, PartialEq)]
enum Clock {
    Wall,
    Cpu,
}

fn clock() -> Clock {
    match std::env::var("GLASSBOX_BENCH_CLOCK").as_deref() {
        Err(_) | Ok("wall") => Clock::Wall,
        Ok("cpu") => Clock::Cpu,
        Ok(other) => panic!("GLASSBOX_BENCH_CLOCK={other:?}: expected wall or cpu"),
    }
}

/// User + system CPU time of this process so far (utime and stime of /proc/self/stat).
fn process_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat is readable");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // The kernel's USER_HZ is 100 on every Linux ABI we build for.
    Duration::from_millis(ticks * 10)
}

/// Times `iters` calls of `f` on the chosen clock.
fn timed(clock: Clock, iters: u64, mut f: impl FnMut()) -> Duration {
    let (wall, cpu) = (Instant::now(), process_cpu_time());
    for _ in 0..iters {
        f();
    }
    match clock {
        Clock::Wall => wall.elapsed(),
        Clock::Cpu => process_cpu_time() - cpu,
    }
}

fn bench(c: &mut Criterion) {
    let clock = clock();
    let n = threads();
    tch::set_num_threads(n);
    assert_eq!(tch::get_num_threads(), n, "libtorch refused {n} threads");
    for (preset, side, infer_batch, train_batch) in MODELS {
        let mut subject = Subject::new(preset, train_batch.is_some());
        let mut group = c.benchmark_group(preset);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .sampling_mode(SamplingMode::Flat);

        let images = Tensor::randn([infer_batch, 3, side, side], (Kind::Float, Device::Cpu));
        group.bench_function("inference", |b| {
            b.iter_custom(|iters| timed(clock, iters, || subject.infer(&images)))
        });

        if !preset.ends_with("-svda") {
            group.bench_function("encoder_inference", |b| {
                b.iter_custom(|iters| {
                    timed(clock, iters, || {
                        let _out = tch::no_grad(|| {
                            subject
                                .dpt
                                .encoder()
                                .forward_t(&images, false)
                                .expect("valid input")
                        });
                    })
                })
            });
        }

        if let Some(batch) = train_batch {
            let images = Tensor::randn([batch, 3, side, side], (Kind::Float, Device::Cpu));
            group.bench_function("train_step", |b| {
                b.iter_custom(|iters| timed(clock, iters, || subject.train_step(&images)))
            });
        }
        group.finish();
    }
}

/// Alternating rounds per paired case.
const PAIRED_ROUNDS: usize = 12;

/// (case, preset of the standard model, preset of the SVDA model, image side, batch, train step?)
const PAIRED: [(&str, &str, &str, i64, i64, bool); 3] = [
    (
        "dpt-tiny/inference",
        "dpt-tiny",
        "dpt-tiny-svda",
        256,
        8,
        false,
    ),
    (
        "dpt-tiny/train_step",
        "dpt-tiny",
        "dpt-tiny-svda",
        256,
        8,
        true,
    ),
    (
        "dpt-base/inference",
        "dpt-base",
        "dpt-base-svda",
        384,
        1,
        false,
    ),
];

/// One random-init model of a preset (seed 0), called as inference or as a whole Adam train
/// step: what both the criterion cases and the paired measurement time.
struct Subject {
    _vs: nn::VarStore,
    dpt: Dpt,
    opt: Option<nn::Optimizer>,
}

impl Subject {
    /// `train`: with an Adam(1e-4) optimiser for [`Subject::train_step`].
    fn new(preset: &str, train: bool) -> Self {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let dpt = Dpt::new(
            &vs.root(),
            &DptConfig::preset(preset).expect("known preset"),
        )
        .expect("valid preset");
        let opt = train.then(|| nn::Adam::default().build(&vs, 1e-4).expect("Adam"));
        Self { _vs: vs, dpt, opt }
    }

    /// Eval mode under `no_grad`, one forward.
    fn infer(&self, images: &Tensor) {
        let _depth = tch::no_grad(|| self.dpt.disparity_t(images, false).expect("valid input"));
    }

    /// Train mode: forward, loss = mean(depth), zero_grad, backward, Adam step.
    fn train_step(&mut self, images: &Tensor) {
        let opt = self.opt.as_mut().expect("built with train = true");
        let loss = self
            .dpt
            .disparity_t(images, true)
            .expect("valid input")
            .mean(Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step();
    }

    fn call(&mut self, images: &Tensor) {
        if self.opt.is_some() {
            self.train_step(images);
        } else {
            self.infer(images);
        }
    }
}

/// The paired SVDA-vs-standard measurement; returns one JSON object per case.
fn paired(clock: Clock) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (case, standard, svda, side, batch, train) in PAIRED {
        let mut a = Subject::new(standard, train);
        let mut b = Subject::new(svda, train);
        let images = Tensor::randn([batch, 3, side, side], (Kind::Float, Device::Cpu));
        a.call(&images);
        b.call(&images);
        let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..PAIRED_ROUNDS {
            let time = |s: &mut Subject| timed(clock, 1, || s.call(&images)).as_secs_f64() * 1e3;
            let (x, y) = if round % 2 == 0 {
                let x = time(&mut a);
                (x, time(&mut b))
            } else {
                let y = time(&mut b);
                (time(&mut a), y)
            };
            ta.push(x);
            tb.push(y);
            ratios.push(y / x);
        }
        let (ma, mb, mr) = (median(&mut ta), median(&mut tb), median(&mut ratios));
        eprintln!(
            "paired {case}: standard {ma:.1} ms, svda {mb:.1} ms, ratio of medians {:.3}, \
             median of per-round ratios {mr:.3} ({PAIRED_ROUNDS} alternating rounds)",
            mb / ma
        );
        out.push(serde_json::json!({
            "case": case, "rounds": PAIRED_ROUNDS,
            "standard_median_ms": ma, "svda_median_ms": mb,
            "ratio_of_medians": mb / ma, "median_round_ratio": mr,
        }));
    }
    out
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    // Only `cargo bench` with GLASSBOX_BENCH_PAIRED_OUT set (as `cargo xtask bench` does) runs the
    // paired measurement; `cargo test --benches` and plain `cargo bench` skip it.
    if std::env::args().any(|a| a == "--bench")
        && std::env::var_os("GLASSBOX_BENCH_PAIRED_OUT").is_some()
    {
        let rows = paired(clock());
        if let Some(path) = std::env::var_os("GLASSBOX_BENCH_PAIRED_OUT") {
            let text = serde_json::to_string_pretty(&rows).expect("JSON of numbers");
            std::fs::write(&path, text).unwrap_or_else(|e| {
                panic!(
                    "cannot write {}: {e}",
                    std::path::Path::new(&path).display()
                )
            });
        }
    }
}
