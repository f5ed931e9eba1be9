//! Halda's solve time for 8 devices and 80 layers (the bound: 1 ms).
//! Run with `cargo bench -p prima-core --bench halda`.

use criterion::{criterion_group, criterion_main, Criterion};
use prima_core::halda::{solve, DeviceCosts, Problem};
use prima_core::sampler::Rng;
use std::hint::black_box;

/// Eight mixed devices: fast and slow CPUs, roomy and tight memory, fast and
/// slow disks and links, as a home cluster has. Seeded, so every run solves
/// the same instances.
fn cluster(seed: u64) -> Problem {
    let mut rng = Rng::new(seed);
    let mut pick = |lo: f64, hi: f64| lo + (hi - lo) * rng.next_f64();
    let layer_bytes = 0.5e9; // a 70B Q4_K layer
    let devices = (0..8)
        .map(|_| DeviceCosts {
            layer_s: pick(2e-3, 20e-3),
            hop_s: pick(0.5e-3, 10e-3),
            budget_bytes: pick(1.0, 24.0) * layer_bytes,
            disk_bytes_per_s: pick(0.3e9, 3.0e9),
            overlaps_disk: pick(0.0, 1.0) > 0.2,
            gpu: None,
        })
        .collect();
    Problem { devices, n_layer: 80, layer_bytes, kv_layer_bytes: 4e6, head_s: 5e-3 }
}

fn bench_solve(c: &mut Criterion) {
    let problems: Vec<Problem> = (1..=8).map(cluster).collect();
    for p in &problems {
        assert!(solve(p).is_ok());
    }
    c.bench_function("halda/8 devices x 80 layers", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % problems.len();
            solve(black_box(&problems[i]))
        })
    });
}

criterion_group!(benches, bench_solve);
criterion_main!(benches);
