//! Stage-by-stage timings of our DPT neck and depth head, the Rust peer of
//! tests-python/bench_dpt_stages.py (docs/performance.md, "DPT end to end vs PyTorch").
//!
//! Builds the dpt-tiny decoder + depth head (or dpt-base with `--model dpt-base`), feeds four random
//! hooked token sequences B x (1 + h*w) x D and times, under `no_grad`, each stage on its own input:
//! reassemble i, neck conv i, fusion layer j, the head, and the whole decoder + head through the
//! crate API. The stages are re-expressed here with the same libtorch calls the decoder makes, on the
//! decoder's own variables (channels-last maps, in-place ReLU / residual adds, as the decoder does),
//! so that a gap between the sum of the stages and the whole can be put on our module code. The
//! head is also timed op by op (`head_op_*`, not in the sum; its ReLU rows time the out-of-place op). Minimum of `--samples` wall times after `--warmup` calls; threads from
//! `GLASSBOX_BENCH_THREADS` (default 1).
//!
//! `eval "$(cargo xtask env)" && cargo run --release -p glassbox-trainer --example decoder_stages`

use std::collections::HashMap;
use std::time::Instant;

use glassbox_decoder::{Decoder, DecoderConfig, DepthHead};
use tch::{Device, Kind, Tensor, nn};

/// Minor page faults of this process so far (field 10 of /proc/self/stat).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat is readable");
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    rest.split_whitespace()
        .nth(7)
        .expect("minflt")
        .parse()
        .expect("minflt")
}

/// Minimum wall time (ms) of `samples` calls after `warmup` calls; prints the minor page faults of
/// the fastest call to stderr when GLASSBOX_STAGES_FAULTS is set.
fn min_ms(warmup: usize, samples: usize, mut f: impl FnMut() -> Tensor) -> f64 {
    for _ in 0..warmup {
        let _ = f();
    }
    let (mut best, mut faults) = (f64::INFINITY, 0);
    for _ in 0..samples {
        let (start, flt) = (Instant::now(), minor_faults());
        let _ = f();
        let t = start.elapsed().as_secs_f64() * 1e3;
        if t < best {
            (best, faults) = (t, minor_faults() - flt);
        }
    }
    if std::env::var_os("GLASSBOX_STAGES_FAULTS").is_some() {
        eprintln!("{best:9.3} ms {faults:7} minor faults");
    }
    best
}

struct Weights(HashMap<String, Tensor>);

impl Weights {
    fn w(&self, name: &str) -> &Tensor {
        self.0
            .get(&format!("{name}.weight"))
            .unwrap_or_else(|| panic!("{name}.weight"))
    }
    fn b(&self, name: &str) -> Option<&Tensor> {
        self.0.get(&format!("{name}.bias"))
    }
    fn conv(&self, name: &str, x: &Tensor, stride: i64, padding: i64) -> Tensor {
        x.conv2d(self.w(name), self.b(name), [stride], [padding], [1], 1)
    }
    fn rcu(&self, name: &str, x: &Tensor) -> Tensor {
        let mut y = self.conv(&format!("{name}.convolution1"), &x.relu(), 1, 1);
        y = self.conv(&format!("{name}.convolution2"), &y.relu_(), 1, 1);
        y += x;
        y
    }
}

fn upsample2(x: &Tensor) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    x.upsample_bilinear2d([2 * h, 2 * w], true, None, None)
}

/// Command line (threads come from `GLASSBOX_BENCH_THREADS`, as in the criterion bench).
#[derive(clap::Parser)]
struct Args {
    /// dpt-tiny (256 x 256) or dpt-base (384 x 384).
    #[arg(long, default_value = "dpt-tiny", value_parser = ["dpt-tiny", "dpt-base"])]
    model: String,
    #[arg(long, default_value_t = 8)]
    batch: i64,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 7)]
    samples: usize,
}

fn main() {
    let Args {
        model,
        batch: b,
        warmup,
        samples,
    } = clap::Parser::parse();
    let (cfg, d, side) = if model == "dpt-tiny" {
        (DecoderConfig::tiny(), 192, 256)
    } else {
        (DecoderConfig::base(), 768, 384)
    };
    let threads: i32 = std::env::var("GLASSBOX_BENCH_THREADS")
        .map(|v| v.parse().expect("GLASSBOX_BENCH_THREADS"))
        .unwrap_or(1);
    tch::set_num_threads(threads);
    tch::manual_seed(0);

    let vs = nn::VarStore::new(Device::Cpu);
    let decoder = Decoder::new(&vs.root(), &cfg, d).expect("valid preset");
    let head = DepthHead::new(&vs.root(), cfg.fusion_channels).expect("valid preset");
    let wt = Weights(vs.variables());
    let g = side / 16;
    let hooks: Vec<Tensor> = (0..4)
        .map(|_| Tensor::randn([b, 1 + g * g, d], (Kind::Float, Device::Cpu)))
        .collect();

    let _guard = tch::no_grad_guard();
    let reassemble = |i: usize, tokens: &Tensor| -> Tensor {
        let p = format!("neck.reassemble_stage.readout_projects.{i}.0");
        let readout = tokens.narrow(1, 0, 1);
        let patches = tokens.narrow(1, 1, g * g);
        let cat = Tensor::cat(&[&patches, &readout.expand_as(&patches)], -1);
        let x = cat.linear(wt.w(&p), wt.b(&p)).gelu("none");
        // Channels-last view, as the decoder's Concatenate.
        let x = x.reshape([b, g, g, d]).permute([0, 3, 1, 2]);
        let l = format!("neck.reassemble_stage.layers.{i}");
        let x = wt.conv(&format!("{l}.projection"), &x, 1, 0);
        match cfg.reassemble_factors[i] {
            f if f > 1.0 => {
                let f = f as i64;
                let r = format!("{l}.resize");
                x.conv_transpose2d(wt.w(&r), wt.b(&r), [f], [0], [0], 1, [1])
            }
            f if f < 1.0 => wt.conv(&format!("{l}.resize"), &x, (1.0 / f) as i64, 1),
            _ => x,
        }
    };
    let fusion = |j: usize, x: &Tensor, skip: Option<&Tensor>| -> Tensor {
        let l = format!("neck.fusion_stage.layers.{j}");
        let out = match skip {
            Some(s) => {
                let mut sum = wt.rcu(&format!("{l}.residual_layer1"), s);
                sum += x;
                sum
            }
            None => x.shallow_clone(),
        };
        let out = wt.rcu(&format!("{l}.residual_layer2"), &out);
        wt.conv(&format!("{l}.projection"), &upsample2(&out), 1, 0)
    };
    let depth_head = |x: &Tensor| -> Tensor {
        let x = upsample2(&wt.conv("head.head.0", x, 1, 1));
        let x = wt.conv("head.head.2", &x, 1, 1).relu_();
        wt.conv("head.head.4", &x, 1, 0).relu_().squeeze_dim(1)
    };

    let maps: Vec<Tensor> = (0..4).map(|i| reassemble(i, &hooks[i])).collect();
    let feats: Vec<Tensor> = (0..4)
        .map(|i| wt.conv(&format!("neck.convs.{i}"), &maps[i], 1, 1))
        .collect();
    let mut fused: Vec<Tensor> = Vec::new();
    for j in 0..4 {
        let next = match fused.last() {
            None => fusion(0, &feats[3], None),
            Some(prev) => fusion(j, prev, Some(&feats[3 - j])),
        };
        fused.push(next);
    }

    let mut rows: Vec<(String, f64)> = Vec::new();
    for (i, tokens) in hooks.iter().enumerate() {
        rows.push((
            format!("reassemble{i}"),
            min_ms(warmup, samples, || reassemble(i, tokens)),
        ));
    }
    for (i, map) in maps.iter().enumerate() {
        rows.push((
            format!("neck_conv{i}"),
            min_ms(warmup, samples, || {
                wt.conv(&format!("neck.convs.{i}"), map, 1, 1)
            }),
        ));
    }
    for j in 0..4 {
        let t = if j == 0 {
            min_ms(warmup, samples, || fusion(0, &feats[3], None))
        } else {
            min_ms(warmup, samples, || {
                fusion(j, &fused[j - 1], Some(&feats[3 - j]))
            })
        };
        rows.push((format!("fusion{j}"), t));
    }
    rows.push((
        "head".into(),
        min_ms(warmup, samples, || depth_head(&fused[3])),
    ));
    let sum: f64 = rows.iter().map(|(_, t)| t).sum();
    // The head op by op (not part of the sum).
    let h0 = wt.conv("head.head.0", &fused[3], 1, 1);
    let h1 = upsample2(&h0);
    let h2 = wt.conv("head.head.2", &h1, 1, 1);
    let h3 = h2.relu();
    let h4 = wt.conv("head.head.4", &h3, 1, 0);
    let ops: [(&str, &dyn Fn() -> Tensor); 6] = [
        ("head_op_conv0", &|| wt.conv("head.head.0", &fused[3], 1, 1)),
        ("head_op_upsample", &|| upsample2(&h0)),
        ("head_op_conv2", &|| wt.conv("head.head.2", &h1, 1, 1)),
        ("head_op_relu", &|| h2.relu()),
        ("head_op_conv4", &|| wt.conv("head.head.4", &h3, 1, 0)),
        ("head_op_relu_last", &|| h4.relu()),
    ];
    let mut op_rows = Vec::new();
    for (name, op) in ops {
        op_rows.push((name.to_string(), min_ms(warmup, samples, op)));
    }
    rows.push(("stages_sum".into(), sum));
    rows.push((
        "crate_head".into(),
        min_ms(warmup, samples, || {
            head.forward(&fused[3], None).expect("valid features")
        }),
    ));
    rows.push((
        "crate_decoder_and_head".into(),
        min_ms(warmup, samples, || {
            let f = decoder.forward(&hooks, (g, g), false).expect("valid hooks");
            head.forward(&f, None).expect("valid features")
        }),
    ));
    rows.extend(op_rows);
    let body: Vec<String> = rows
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v:.3}"))
        .collect();
    println!(
        "{{\"model\": \"{model}\", \"batch\": {b}, \"threads\": {}, \"min_ms\": {{{}}}}}",
        tch::get_num_threads(),
        body.join(", ")
    );
}
