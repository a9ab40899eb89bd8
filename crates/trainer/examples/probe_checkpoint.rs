//! Probes a saved run after the fact: the spectral indicators (`docs/spectral.md`) of a freshly
//! initialised model of the run's configuration (step 0) and of a checkpoint (its recorded step),
//! on the run's first two validation images, written as a run folder for `glassbox report`:
//!
//! ``text
//! cargo run --release -p glassbox-trainer --example probe_checkpoint -- runs/NAME/last.safetensors OUT_DIR
//! ``
//! For runs trained before the probe was part of the training loop (`spectral_every`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use glassbox_dpt::Dpt;
use glassbox_trainer::data;
use glassbox_trainer::predict::load_checkpoint;
use glassbox_trainer::probe::{Probe, ProbeOptions};
use glassbox_trainer::tensor::TensorBatch;
use tch::{Device, nn};

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    let [checkpoint, out] = args.as_slice() else {
        bail!("usage: probe_checkpoint CHECKPOINT OUT_DIR");
    };
    let device = Device::Cpu;
    let loaded = load_checkpoint(checkpoint, device)?;
    let state = checkpoint.with_extension("json");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&state).with_context(|| format!("reading {}", state.display()))?,
    )?;
    let step = state["step"]
        .as_u64()
        .with_context(|| format!("no step in the record beside {}", checkpoint.display()))?;

    let run_data = data::open(&loaded.config)?;
    let first = run_data
        .val
        .eval_batches()
        .next()
        .context("the validation split is empty")??;
    let options = ProbeOptions {
        seed: loaded.config.seed,
        ..ProbeOptions::default()
    };
    let probe = Probe::new(TensorBatch::new(&first, device).first(2).rgb, options)?;

    tch::manual_seed(loaded.config.seed as i64);
    let vs = nn::VarStore::new(device);
    let init = Dpt::new(&vs.root(), &loaded.config.model)?;
    for (model, step) in [(&init, 0), (&loaded.model, step)] {
        let output = probe.run(model, step)?;
        let files = output.write(out)?;
        println!(
            "step {step}: {} ({:.2} s forward, {:.2} s indicators)",
            files.spectral.display(),
            output.timing.forward.as_secs_f64(),
            output.timing.spectral.as_secs_f64()
        );
        println!("{}", glassbox_spectral::layer_table(&output.record));
    }
    Ok(())
}
