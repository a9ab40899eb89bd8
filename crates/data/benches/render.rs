//! Renderer throughput at 256x256 (samples per second), indoor and outdoor:
//! `cargo bench -p glassbox-data --bench render`. Each iteration renders one new sample index, so
//! scene generation and ray casting are both measured.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use glassbox_data::{Dataset, SceneKind, SyntheticConfig, SyntheticDataset};

fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render_256x256");
    group.throughput(Throughput::Elements(1));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));
    for kind in [SceneKind::Indoor, SceneKind::Outdoor] {
        let config = SyntheticConfig {
            kind,
            width: 256,
            height: 256,
            len: usize::MAX,
            seed: 0,
            lidar: None,
        };
        let dataset = SyntheticDataset::new(config).unwrap();
        let mut index = 0usize;
        group.bench_function(format!("{kind:?}").to_lowercase(), |b| {
            b.iter(|| {
                index += 1;
                black_box(dataset.get(index).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
