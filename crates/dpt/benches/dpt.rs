//! End-to-end CPU cost of a whole DPT, the Rust side of `cargo xtask bench` (docs/performance.md,
//! "DPT end to end vs PyTorch"); tests-python/bench_dpt.py times the same cases in HF transformers.
//!
//! Cases (criterion ids `<model>/<mode>`):
//! - `dpt-tiny/inference`, `dpt-tiny/train_step`: 256 x 256, batch 8;
//! - `dpt-base/inference` (batch 1) and `dpt-base/train_step` (batch 2): 384 x 384;
//! - `dpt-tiny-svda/inference`, `dpt-base-svda/inference`: the same with SVDA attention;
//! - `dpt-tiny/encoder_inference`, `dpt-base/encoder_inference`: the ViT encoder alone (inference
//!   batch), so that a gap can be put on the encoder or on decoder + head.
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
//! `eval "$(cargo xtask env)" && cargo bench -p glassbox-dpt --bench dpt -- --noplot`

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use glassbox_dpt::{Dpt, DptConfig};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// (preset, image side, inference batch, train batch; None = no train-step case).
const MODELS: [(&str, i64, i64, Option<i64>); 4] = [
    ("dpt-tiny", 256, 8, Some(8)),
    ("dpt-base", 384, 1, Some(2)),
    ("dpt-tiny-svda", 256, 8, None),
    ("dpt-base-svda", 384, 1, None),
];

fn threads() -> i32 {
    std::env::var("GLASSBOX_BENCH_THREADS")
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("GLASSBOX_BENCH_THREADS={v:?} is not a thread count"))
        })
        .unwrap_or(2)
}

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
        tch::manual_seed(0);
        let config = DptConfig::preset(preset).expect("known preset");
        let vs = nn::VarStore::new(Device::Cpu);
        let dpt = Dpt::new(&vs.root(), &config).expect("valid preset");
        let mut group = c.benchmark_group(preset);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .sampling_mode(SamplingMode::Flat);

        let images = Tensor::randn([infer_batch, 3, side, side], (Kind::Float, Device::Cpu));
        group.bench_function("inference", |b| {
            b.iter_custom(|iters| {
                timed(clock, iters, || {
                    let _depth =
                        tch::no_grad(|| dpt.disparity_t(&images, false).expect("valid input"));
                })
            })
        });

        if !preset.ends_with("-svda") {
            group.bench_function("encoder_inference", |b| {
                b.iter_custom(|iters| {
                    timed(clock, iters, || {
                        let _out = tch::no_grad(|| {
                            dpt.encoder()
                                .forward_t(&images, false)
                                .expect("valid input")
                        });
                    })
                })
            });
        }

        if let Some(batch) = train_batch {
            let images = Tensor::randn([batch, 3, side, side], (Kind::Float, Device::Cpu));
            let mut opt = nn::Adam::default().build(&vs, 1e-4).expect("Adam");
            group.bench_function("train_step", |b| {
                b.iter_custom(|iters| {
                    timed(clock, iters, || {
                        let loss = dpt
                            .disparity_t(&images, true)
                            .expect("valid input")
                            .mean(Kind::Float);
                        opt.zero_grad();
                        loss.backward();
                        opt.step();
                    })
                })
            });
        }
        group.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
