//! Tile-kernel throughput per weight type: the scalar oracle against every
//! SIMD level this CPU supports, for decode (one token) and prompt batches
//! (four tokens per tile), the row-parallel products for several tokens,
//! the K-quants' panel products for prompts, and a prompt's attention at
//! depth (scores, softmax, weighted sums of one KV head's three query
//! heads over 2048 keys). Run with `cargo bench -p prima-core`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prima_core::kernels::matmul::{matmul, Acts, Matrix};
use prima_core::kernels::{CpuCaps, Kernels, GEMM_ROWS, GEMM_TOKENS, GEMM_WIDE_ROWS, PANEL_ROWS, TILE};
use prima_core::parallel::Serial;
use prima_core::quant::q8::quantize_row;
use prima_core::quant::{random_matrix, random_row};
use prima_core::sampler::Rng;
use prima_core::GgmlType;
use std::hint::black_box;
use std::time::Duration;

const N: usize = 4096;

/// The scalar oracle, then every SIMD level this CPU supports, narrowest first.
fn variants() -> Vec<Kernels> {
    let narrow = |c: CpuCaps| Kernels::with_caps(c);
    let mut v = vec![
        Kernels::scalar(),
        narrow(CpuCaps { avx512: false, avxvnni: false, dotprod: false, ..CpuCaps::ALL }),
        narrow(CpuCaps { avx512: false, ..CpuCaps::ALL }),
        Kernels::detect(),
    ];
    v.dedup_by_key(|k| k.name());
    v
}

fn bench_tiles(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let mut group = c.benchmark_group("tile");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(20);
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_XS,
        GgmlType::F16,
        GgmlType::BF16,
    ];
    for ty in types {
        let rows: Vec<Vec<u8>> = (0..TILE).map(|_| random_row(ty, N, &mut rng)).collect();
        let x: Vec<f32> = (0..N).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let mut act = vec![0u8; ty.act_format().row_bytes(N)];
        quantize_row(ty.act_format(), &x, &mut act);
        let w: Vec<&[u8]> = rows.iter().map(|r| &r[..]).collect();
        for k in variants() {
            for toks in [1, TILE] {
                let a: Vec<&[u8]> = (0..toks).map(|_| &act[..]).collect();
                let tile = k.tile(ty);
                group.throughput(Throughput::Elements((TILE * toks * N) as u64));
                let id = BenchmarkId::new(format!("{ty}/{}", k.name()), format!("4x{toks}"));
                group.bench_function(id, |b| {
                    let mut out = [[0.0; TILE]; TILE];
                    b.iter(|| tile(N, black_box(&w), black_box(&a), &mut out))
                });
            }
        }
    }
    group.finish();
}

/// The row-parallel products (8 rows by 1, 4, 8 and 16 tokens) where a
/// type has one, beside the tiles above: elements are weights times tokens.
fn bench_gemm(c: &mut Criterion) {
    let mut rng = Rng::new(2);
    let mut group = c.benchmark_group("gemm");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(20);
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
        let rows: Vec<Vec<u8>> = (0..GEMM_ROWS).map(|_| random_row(ty, N, &mut rng)).collect();
        let x: Vec<f32> = (0..N).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let mut act = vec![0u8; ty.act_format().row_bytes(N)];
        quantize_row(ty.act_format(), &x, &mut act);
        let w: [&[u8]; GEMM_ROWS] = std::array::from_fn(|r| &rows[r][..]);
        for k in variants() {
            let Some(gemm) = k.gemm(ty) else { continue };
            for toks in [1, 4, 8, GEMM_TOKENS] {
                let a: Vec<&[u8]> = (0..toks).map(|_| &act[..]).collect();
                group.throughput(Throughput::Elements((GEMM_ROWS * toks * N) as u64));
                let id = BenchmarkId::new(format!("{ty}/{}", k.name()), format!("8x{toks}"));
                group.bench_function(id, |b| {
                    let mut out = [[0.0; GEMM_ROWS]; GEMM_TOKENS];
                    b.iter(|| gemm(N, black_box(&w), black_box(&a), &mut out, false))
                });
            }
            let Some(wide) = k.gemm_wide(ty) else { continue };
            let w16: [&[u8]; GEMM_WIDE_ROWS] = std::array::from_fn(|r| &rows[r % GEMM_ROWS][..]);
            for toks in [1, 4, 8, GEMM_TOKENS] {
                let a: Vec<&[u8]> = (0..toks).map(|_| &act[..]).collect();
                group.throughput(Throughput::Elements((GEMM_WIDE_ROWS * toks * N) as u64));
                let id = BenchmarkId::new(format!("{ty}/{}", k.name()), format!("16x{toks}"));
                group.bench_function(id, |b| {
                    let mut out = [[0.0; GEMM_WIDE_ROWS]; GEMM_TOKENS];
                    b.iter(|| wide(N, black_box(&w16), black_box(&a), &mut out, false))
                });
            }
        }
    }
    group.finish();
}

/// The K-quants' prompt products: the 8-row product at 16 tokens a call
/// (how prompts ran before panels), against the 16-row panels at a
/// prompt's 64 and 256 tokens a call. Elements are weights times tokens.
fn bench_panel(c: &mut Criterion) {
    let mut rng = Rng::new(3);
    let mut group = c.benchmark_group("panel");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2)).sample_size(10);
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        let rows: Vec<Vec<u8>> = (0..PANEL_ROWS).map(|_| random_row(ty, N, &mut rng)).collect();
        let arb = ty.act_format().row_bytes(N);
        let acts: Vec<u8> = (0..256)
            .flat_map(|_| {
                let x: Vec<f32> = (0..N).map(|_| rng.next_f64() as f32 - 0.5).collect();
                let mut act = vec![0u8; arb];
                quantize_row(ty.act_format(), &x, &mut act);
                act
            })
            .collect();
        for k in variants() {
            let Some(gemm) = k.gemm(ty) else { continue };
            let w8: [&[u8]; GEMM_ROWS] = std::array::from_fn(|r| &rows[r][..]);
            let a: Vec<&[u8]> = acts.chunks_exact(arb).take(GEMM_TOKENS).collect();
            group.throughput(Throughput::Elements((GEMM_ROWS * GEMM_TOKENS * N) as u64));
            let id = BenchmarkId::new(format!("{ty}/{}", k.name()), format!("8x{GEMM_TOKENS} gemm"));
            group.bench_function(id, |b| {
                let mut out = [[0.0; GEMM_ROWS]; GEMM_TOKENS];
                b.iter(|| gemm(N, black_box(&w8), black_box(&a), &mut out, false))
            });
            let Some(panel) = k.panel(ty) else { continue };
            let w16: [&[u8]; PANEL_ROWS] = std::array::from_fn(|r| &rows[r][..]);
            for toks in [64, 256] {
                group.throughput(Throughput::Elements((PANEL_ROWS * toks * N) as u64));
                let id = BenchmarkId::new(format!("{ty}/{}", k.name()), format!("16x{toks} panel"));
                group.bench_function(id, |b| {
                    let mut out = vec![[0.0; PANEL_ROWS]; toks];
                    b.iter(|| panel(N, black_box(&w16), black_box(&acts), arb, &mut out))
                });
            }
        }
    }
    group.finish();
}

/// Decode's matrix-vector product over a matrix far larger than the caches,
/// as a layer's weights stream from memory: what prefetching decides. Row
/// widths are those of 2B to 8B models' matrices.
fn bench_streaming(c: &mut Criterion) {
    let mut rng = Rng::new(2);
    let mut group = c.benchmark_group("matvec_streaming");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2)).sample_size(10);
    let k = Kernels::detect();
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K] {
        for n_in in [2048, 4096, 14336] {
            let (data, n_out) = random_matrix(ty, n_in, 64 << 20, 64, &mut rng);
            let w = Matrix { ty, n_in, n_out, data: &data };
            let x: Vec<f32> = (0..n_in).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let mut acts = Acts::default();
            acts.encode(&k, ty.act_format(), &x, n_in, &Serial);
            let mut out = vec![0.0; n_out];
            group.throughput(Throughput::Bytes(data.len() as u64));
            group.bench_function(BenchmarkId::new(format!("{ty}/{}", k.name()), n_in), |b| {
                b.iter(|| matmul(&k, black_box(&w), &acts, &mut out, &mut Vec::new(), &Serial))
            });
        }
    }
    group.finish();
}

/// One token's attention work for a group of three query heads over 2048
/// widened keys and values of 64: the products one query at a time and
/// together, and the softmax between them.
fn bench_attention(c: &mut Criterion) {
    const KEYS: usize = 2048;
    const HD: usize = 64;
    const NQ: usize = 3;
    let mut group = c.benchmark_group("attention");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(20);
    group.throughput(Throughput::Elements((NQ * KEYS) as u64));
    let mut rng = Rng::new(5);
    let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect() };
    let (qs, keys, values, scores) = (rand(NQ * HD), rand(KEYS * HD), rand(KEYS * HD), rand(NQ * KEYS));
    for k in variants() {
        let name = k.name();
        let mut out = vec![0.0f32; NQ * KEYS];
        group.bench_function(BenchmarkId::new("scores/one at a time", name), |b| {
            b.iter(|| {
                for (q, o) in qs.chunks_exact(HD).zip(out.chunks_exact_mut(KEYS)) {
                    k.dot_rows(q, &keys, o);
                }
            })
        });
        group.bench_function(BenchmarkId::new("scores/together", name), |b| {
            b.iter(|| k.dot_rows_multi(black_box(&qs), HD, &keys, &mut out))
        });
        group.bench_function(BenchmarkId::new("softmax", name), |b| {
            b.iter(|| {
                out.copy_from_slice(&scores);
                out.chunks_exact_mut(KEYS).for_each(|s| k.softmax(s));
            })
        });
        let mut o = vec![0.0f32; NQ * HD];
        group.bench_function(BenchmarkId::new("weighted/one at a time", name), |b| {
            b.iter(|| {
                for (p, o) in scores.chunks_exact(KEYS).zip(o.chunks_exact_mut(HD)) {
                    k.weighted_sum(p, &values, o);
                }
            })
        });
        group.bench_function(BenchmarkId::new("weighted/together", name), |b| {
            b.iter(|| k.weighted_sum_multi(black_box(&scores), &values, HD, &mut o))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_tiles, bench_gemm, bench_panel, bench_streaming, bench_attention);
criterion_main!(benches);
