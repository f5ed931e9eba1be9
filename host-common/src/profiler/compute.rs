//! CPU and memory speeds, measured with prima's own kernels and threads.

use prima_core::kernels::matmul::{matmul, Acts, Matrix};
use prima_core::kernels::Kernels;
use prima_core::parallel::for_each_chunk_mut;
use prima_core::quant::random_matrix;
use prima_core::sampler::Rng;
use prima_core::GgmlType;
use std::time::{Duration, Instant};

use crate::pool::Pool;

/// Columns of the probe matrix, and how many distinct random rows it repeats.
const N_IN: usize = 4096;
const DISTINCT_ROWS: usize = 64;
/// The probe matrix's size: larger than the last-level caches, as a layer's
/// matrices are, so the figure is what a layer's matrix-vector product really
/// does (arithmetic and weight streaming together). A cache-sized probe
/// measured up to twice the speed layers run at.
const PROBE_BYTES: usize = 64 << 20;
/// Products the probe matrix is cut into, each the size of a 2B-8B model's
/// layer matrix (8 MiB here).
const PRODUCTS_PER_CALL: usize = 8;

/// Windows a probe's budget is cut into; the median window is the figure.
const WINDOWS: usize = 7;

/// Matrix-vector FLOP/s for `ty` (2 per weight), on `pool`'s threads, for
/// about `budget`: the median of several windows of calls, so a burst of
/// other work on the device shorter than half the budget (another process,
/// the kernel writing back files) does not set the figure the scheduler
/// plans a whole session with. On the shared build VM, slowdowns of 30-40%
/// came and went within a process, each lasting 100-300 ms.
pub fn matvec_flops(kernels: &Kernels, pool: &Pool, ty: GgmlType, budget: Duration) -> f64 {
    let mut probe = MatvecProbe::new(ty);
    pool.enter(|| {
        probe.call(kernels, pool); // warm-up
        let per_call = probe.flops_per_call();
        median_window_rate(budget, per_call, &mut || probe.call(kernels, pool))
    })
}

/// The matrix [`matvec_flops`] times. It is multiplied as a decode layer's
/// are, slice by slice, each product after its serial activation encoding,
/// so threads idle and wake between products as they do in layers. One
/// product over the whole matrix (and the fastest of several) overstated
/// layers by 10-15% with 2 threads.
pub struct MatvecProbe {
    ty: GgmlType,
    data: Vec<u8>,
    n_out: usize,
    x: Vec<f32>,
    acts: Acts,
    out: Vec<f32>,
    scratch: Vec<f32>,
}

impl MatvecProbe {
    pub fn new(ty: GgmlType) -> Self {
        let mut rng = Rng::new(ty.id() as u64);
        let (data, n_out) = random_matrix(ty, N_IN, PROBE_BYTES, DISTINCT_ROWS, &mut rng);
        let x = (0..N_IN).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let out = vec![0.0f32; n_out / PRODUCTS_PER_CALL];
        Self { ty, data, n_out, x, acts: Acts::default(), out, scratch: Vec::new() }
    }

    /// FLOPs of one [`MatvecProbe::call`].
    pub fn flops_per_call(&self) -> f64 {
        (2 * N_IN * self.n_out) as f64
    }

    /// Multiplies the whole matrix once, slice by slice.
    pub fn call(&mut self, kernels: &Kernels, pool: &Pool) {
        let ty = self.ty;
        let slice_bytes = self.out.len() * ty.row_bytes(N_IN);
        for d in self.data.chunks(slice_bytes) {
            let w = Matrix { ty, n_in: N_IN, n_out: d.len() / ty.row_bytes(N_IN), data: d };
            self.acts.encode(kernels, ty.act_format(), &self.x, N_IN, pool);
            matmul(kernels, &w, &self.acts, &mut self.out[..w.n_out], &mut self.scratch, pool);
        }
    }
}

/// `work` units per second: the median over [`WINDOWS`] windows of about
/// `budget / WINDOWS` each, every window at least one call of `per_call` units.
fn median_window_rate(budget: Duration, per_call: f64, call: &mut dyn FnMut()) -> f64 {
    let window = budget / WINDOWS as u32;
    let mut rates: Vec<f64> = (0..WINDOWS)
        .map(|_| {
            let start = Instant::now();
            let mut calls = 0u32;
            while start.elapsed() < window || calls == 0 {
                call();
                calls += 1;
            }
            per_call * calls as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[WINDOWS / 2]
}

/// Read bandwidth over a `bytes`-sized buffer (larger than the caches), all threads.
pub fn memory_read_bandwidth(pool: &Pool, bytes: usize, budget: Duration) -> f64 {
    let mut buf: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
    let chunk = buf.len().div_ceil(pool.threads() * 4).max(1);
    let mut sums = vec![0u64; buf.len().div_ceil(chunk)];
    let rate = pool.enter(|| {
        let mut pass = || {
            let data = &buf;
            for_each_chunk_mut(pool, &mut sums, 1, &|i, s| {
                let part = &data[i * chunk..((i + 1) * chunk).min(data.len())];
                s[0] = s[0].wrapping_add(part.iter().fold(0u64, |a, &v| a.wrapping_add(v)));
            });
        };
        median_window_rate(budget, bytes as f64, &mut pass)
    });
    // Keep the sums observable so the reads are not optimized away.
    buf[0] = sums.iter().fold(0, |a, &s| a ^ s);
    std::hint::black_box(&buf);
    rate
}

/// Seconds to store one token's keys and values (`kv_dim` each, as f16) in one layer.
pub fn kv_write_seconds(kv_dim: usize, budget: Duration) -> f64 {
    let positions = 4096;
    let mut cache = vec![half::f16::ZERO; positions * 2 * kv_dim];
    let row: Vec<f32> = (0..2 * kv_dim).map(|i| i as f32 * 1e-3).collect();
    let start = Instant::now();
    let mut writes = 0usize;
    while start.elapsed() < budget || writes == 0 {
        let at = (writes % positions) * 2 * kv_dim;
        for (d, s) in cache[at..at + 2 * kv_dim].iter_mut().zip(&row) {
            *d = half::f16::from_f32(*s);
        }
        writes += 1;
    }
    std::hint::black_box(&cache);
    start.elapsed().as_secs_f64() / writes as f64
}
