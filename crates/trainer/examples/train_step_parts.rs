//! Part-by-part timings of one DPT train step, the Rust peer of tests-python/bench_dpt_train_parts.py
//! (docs/performance.md, "train step, part by part").
//!
//! Same setup as the `train_step` case of crates/trainer/benches/dpt.rs (random init, N(0, 1)
//! images, train mode, loss = mean(depth), Adam(lr 1e-4)), but each part of the step is timed on
//! its own: forward (train mode), loss, zero_grad, backward, optimizer step. `--part encoder` runs
//! the ViT encoder alone instead (loss = sum of the four hooks' means), to put a backward gap on the
//! encoder (fused qkv views) or on decoder + head. Every part's minimum and median over `--samples`
//! steps after `--warmup` steps; threads from `GLASSBOX_BENCH_THREADS` (default 1).
//!
//! `eval "$(cargo xtask env)" && cargo run --release -p glassbox-trainer --example train_step_parts -- --model dpt-base --batch 2`

use std::time::Instant;

use glassbox_dpt::{Dpt, DptConfig};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const PARTS: [&str; 6] = ["forward", "loss", "zero_grad", "backward", "step", "total"];

/// Command line (threads come from `GLASSBOX_BENCH_THREADS`, as in the criterion bench).
#[derive(clap::Parser)]
struct Args {
    /// dpt-tiny (256 x 256) or dpt-base (384 x 384).
    #[arg(long, default_value = "dpt-tiny", value_parser = ["dpt-tiny", "dpt-base"])]
    model: String,
    /// dpt (the whole model) or encoder (the ViT alone).
    #[arg(long, default_value = "dpt", value_parser = ["dpt", "encoder"])]
    part: String,
    #[arg(long, default_value_t = 8)]
    batch: i64,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// tch (libtorch's C++ Adam, as the criterion bench) or glassbox (the trainer's AdamW with the
    /// default preset's settings: clipping, weight decay, two groups).
    #[arg(long, default_value = "tch", value_parser = ["tch", "glassbox"])]
    optimizer: String,
    /// Square input side (default: the preset's, 256 for dpt-tiny, 384 for dpt-base).
    #[arg(long)]
    size: Option<i64>,
}

/// The two optimisers behind one interface.
enum Optimizer {
    Tch(nn::Optimizer),
    Glassbox(Box<glassbox_trainer::optim::AdamW>),
}

impl Optimizer {
    fn zero_grad(&mut self) {
        match self {
            Optimizer::Tch(o) => o.zero_grad(),
            Optimizer::Glassbox(o) => o.zero_grad(),
        }
    }

    fn step(&mut self) {
        match self {
            Optimizer::Tch(o) => o.step(),
            Optimizer::Glassbox(o) => {
                o.step(1.0).expect("finite gradients");
            }
        }
    }
}

fn main() {
    let Args {
        model,
        part,
        batch,
        warmup,
        samples,
        optimizer,
        size,
    } = clap::Parser::parse();
    let side = size.unwrap_or(if model == "dpt-tiny" { 256 } else { 384 });
    let threads: i32 = std::env::var("GLASSBOX_BENCH_THREADS")
        .map(|v| v.parse().expect("GLASSBOX_BENCH_THREADS"))
        .unwrap_or(1);
    tch::set_num_threads(threads);
    assert_eq!(
        tch::get_num_threads(),
        threads,
        "libtorch refused {threads} threads"
    );
    tch::manual_seed(0);

    let config = DptConfig::preset(&model).expect("known preset");
    let vs = nn::VarStore::new(Device::Cpu);
    let dpt = Dpt::new(&vs.root(), &config).expect("valid preset");
    let mut opt = if optimizer == "tch" {
        Optimizer::Tch(nn::Adam::default().build(&vs, 1e-4).expect("Adam"))
    } else {
        let settings = glassbox_trainer::TrainConfig::preset("default")
            .expect("preset")
            .optim;
        Optimizer::Glassbox(Box::new(glassbox_trainer::optim::AdamW::new(
            &vs, &settings, None,
        )))
    };
    let images = Tensor::randn([batch, 3, side, side], (Kind::Float, Device::Cpu));

    let mut times: Vec<[f64; 6]> = Vec::new();
    for i in 0..warmup + samples {
        let mut t = [0.0; 6];
        let ms = |start: Instant| start.elapsed().as_secs_f64() * 1e3;
        let all = Instant::now();
        let start = Instant::now();
        let out: Vec<Tensor> = if part == "dpt" {
            vec![dpt.disparity_t(&images, true).expect("valid input")]
        } else {
            dpt.encoder()
                .forward_t(&images, true)
                .expect("valid input")
                .hooks
        };
        t[0] = ms(start);
        let start = Instant::now();
        let loss = out
            .iter()
            .map(|o| o.mean(Kind::Float))
            .reduce(|a, b| a + b)
            .expect("one output at least");
        t[1] = ms(start);
        let start = Instant::now();
        opt.zero_grad();
        t[2] = ms(start);
        let start = Instant::now();
        loss.backward();
        t[3] = ms(start);
        let start = Instant::now();
        opt.step();
        t[4] = ms(start);
        t[5] = ms(all);
        if i >= warmup {
            times.push(t);
        }
    }
    let stat = |k: usize| -> (f64, f64) {
        let mut v: Vec<f64> = times.iter().map(|t| t[k]).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        (v[0], median)
    };
    let body: Vec<String> = PARTS
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let (min, median) = stat(k);
            format!("\"{name}\": {{\"min_ms\": {min:.1}, \"median_ms\": {median:.1}}}")
        })
        .collect();
    println!(
        "{{\"side\": \"ours\", \"model\": \"{model}\", \"part\": \"{part}\", \"batch\": {batch}, \"threads\": {}, \"samples\": {samples}, \"parts\": {{{}}}}}",
        tch::get_num_threads(),
        body.join(", ")
    );
}
