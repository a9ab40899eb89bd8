//! Cost of one spectral probe of dpt-base on CPU (`docs/spectral.md` requires under 2 s):
//! 12 layers x 12 heads, N = 577 tokens (24 x 24 patches + readout), d = 64, four input-noise
//! maps per head, and for SVDA four sigma-noise maps as well.
//! Run: `cargo bench -p glassbox-spectral --bench probe`.
//!
//! `svda` and `standard` report wall time. `svda_process_cpu` reports the CPU time the process
//! spends per probe summed over all threads: on a shared machine the wall time mostly measures the
//! other tenants, while the CPU time is what the probe costs, and an upper bound of its wall time
//! on an idle machine with at least one core.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{OwnedHead, random_head};
use criterion::{Criterion, criterion_group, criterion_main};
use glassbox_spectral::{AttentionKind, HeadInput, SpectralRecord};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::time::Duration;

const LAYERS: usize = 12;
const HEADS: usize = 12;
const TOKENS: usize = 577;
const HEAD_DIM: usize = 64;
const DRAWS: usize = 4;

/// One layer's worth of distinct heads, reused for every layer: 144 distinct heads with nine
/// 1.3 MB maps each would take 1.7 GB on a shared machine, and each map already exceeds the caches.
fn heads(kind: AttentionKind) -> Vec<OwnedHead> {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    (0..HEADS)
        .map(|h| {
            random_head(
                &mut rng,
                kind,
                TOKENS,
                HEAD_DIM,
                DRAWS,
                1.0 + h as f32 / 4.0,
            )
        })
        .collect()
}

/// User + system CPU time of this process over all its threads, from `/proc/self/stat` (Linux,
/// clock ticks of 10 ms, i.e. USER_HZ = 100; a probe takes about a hundred ticks).
fn process_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has the command in parentheses")
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields[i].parse::<u64>().expect("numeric tick count");
    Duration::from_millis(10 * (ticks(11) + ticks(12)))
}

fn probe(c: &mut Criterion) {
    let mut group = c.benchmark_group("probe_dpt_base_12x12_n577_d64");
    group.sample_size(10);
    for (name, kind) in [
        ("svda", AttentionKind::Svda),
        ("standard", AttentionKind::Standard),
    ] {
        let owned = heads(kind);
        let layers: Vec<Vec<HeadInput<'_, f32>>> = (0..LAYERS)
            .map(|_| owned.iter().map(OwnedHead::input).collect())
            .collect();
        group.bench_function(name, |b| {
            b.iter(|| SpectralRecord::compute(0, black_box(&layers)).expect("valid probe"))
        });
        if kind == AttentionKind::Svda {
            group.bench_function("svda_process_cpu", |b| {
                b.iter_custom(|iters| {
                    let start = process_cpu_time();
                    for _ in 0..iters {
                        SpectralRecord::compute(0, black_box(&layers)).expect("valid probe");
                    }
                    process_cpu_time() - start
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, probe);
criterion_main!(benches);
