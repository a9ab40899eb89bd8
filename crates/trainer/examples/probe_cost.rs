//! Measures one spectral probe of dpt-base (random initialisation, one 384 x 384 image, N = 577)
//! on the CPU, split into the model's forward passes and the indicator computation (the indicators
//! should cost under 2 s, `docs/spectral.md`):
//!
//! ``text
//! cargo run --release -p glassbox-trainer --example probe_cost [standard|svda ...]
//! ``

use std::time::Instant;

use glassbox_attention::AttentionKind;
use glassbox_dpt::{Dpt, DptConfig};
use glassbox_trainer::probe::{Probe, ProbeOptions};
use tch::{Device, Kind, Tensor, nn};

fn main() -> anyhow::Result<()> {
    let kinds: Vec<String> = std::env::args().skip(1).collect();
    let kinds = if kinds.is_empty() {
        vec!["standard".to_string(), "svda".to_string()]
    } else {
        kinds
    };
    tch::manual_seed(0);
    let images = Tensor::randn([1, 3, 384, 384], (Kind::Float, Device::Cpu));
    let probe = Probe::new(images, ProbeOptions::default())?;
    println!(
        "threads: torch {}, rayon {}",
        tch::get_num_threads(),
        rayon::current_num_threads()
    );
    for name in kinds {
        let kind = match name.as_str() {
            "standard" => AttentionKind::Standard,
            "svda" => AttentionKind::Svda,
            other => anyhow::bail!("unknown attention {other:?}; expected standard or svda"),
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Dpt::new(&vs.root(), &DptConfig::dpt_base().with_attention(kind))?;
        // One warm-up probe (allocator, thread pools), then two measured ones.
        probe.run(&model, 0)?;
        for run in 1..=2 {
            let start = Instant::now();
            let out = probe.run(&model, run)?;
            let passes = if kind == AttentionKind::Svda { 9 } else { 5 };
            let cpu = out.timing.spectral_cpu.map_or_else(
                || "n/a".to_string(),
                |d| format!("{:.2} s", d.as_secs_f64()),
            );
            println!(
                "dpt-base {name}: spectral {:.2} s wall, {cpu} CPU | {passes} forward passes {:.2} s | total {:.2} s",
                out.timing.spectral.as_secs_f64(),
                out.timing.forward.as_secs_f64(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
