//! One matrix product at a time: for tests against core's scalar oracle,
//! and for the profiler's throughput probe.

use std::time::{Duration, Instant};

use prima_core::kernels::matmul::Matrix;
use prima_core::GgmlType;

use crate::device::{Gpu, GpuError};
use crate::kernels::Kernels;
use crate::layers::{execute, Acts, Builder, Dispatch, Io, Products, MAX_ROWS};

/// A matrix uploaded with the buffers to multiply it.
struct Single {
    kernels: Kernels,
    acts: Acts,
    staging: wgpu::Buffer,
    plan: Vec<Dispatch>,
    n_out: usize,
}

impl Single {
    fn new(gpu: &Gpu, m: &Matrix<'_>) -> Result<Self, GpuError> {
        let kernels = Kernels::new(gpu, [m.ty])?;
        let mut b = Builder { gpu, kernels: &kernels };
        let width = m.n_in.max(m.n_out);
        let acts = Acts::new(&mut b, [width, 32, 32, 32, 1])?;
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read back"),
            size: (MAX_ROWS * width * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut plan = Vec::new();
        Products { a: &acts, encoded: None }.push(&mut b, &mut plan, m, None, &acts.norm, &acts.x)?;
        Ok(Self { kernels, acts, staging, plan, n_out: m.n_out })
    }

    /// The product with `n_tok` rows `x`, each `x.len() / n_tok` wide.
    fn run(&self, gpu: &Gpu, x: &[f32], n_tok: usize) -> Result<Vec<f32>, GpuError> {
        gpu.queue.write_buffer(&self.acts.norm, 0, bytemuck::cast_slice(x));
        let mut out = vec![0.0; n_tok * self.n_out];
        let a = &self.acts;
        let io = Io { input: None, output: &a.x, staging: &self.staging, pass: &a.pass };
        execute(gpu, &self.kernels, &self.plan, io, (0, 0, n_tok), &mut out)?;
        Ok(out)
    }
}

/// `m` times each row of `x` (`n_tok × m.n_in`), on the GPU, with the
/// activations encoded as the CPU path encodes them for `m`'s type.
pub fn product(gpu: &Gpu, m: &Matrix<'_>, x: &[f32]) -> Result<Vec<f32>, GpuError> {
    let n_tok = x.len() / m.n_in;
    if n_tok == 0 || n_tok > MAX_ROWS || n_tok * m.n_in != x.len() {
        return Err(GpuError::Unsupported { what: format!("a product of {} values by {} columns", x.len(), m.n_in) });
    }
    Single::new(gpu, m)?.run(gpu, x, n_tok)
}

/// Throughput of one-token products with a 4096 × 4096 matrix of `ty`
/// (decode's shape), timed for about `budget`: (FLOP/s, weight bytes read
/// per second).
pub fn measure(gpu: &Gpu, ty: GgmlType, budget: Duration) -> Result<(f64, f64), GpuError> {
    const N: usize = 4096;
    // Zero blocks are valid blocks of every type (scales of 0).
    let data = vec![0u8; ty.row_bytes(N) * N];
    let m = Matrix { ty, n_in: N, n_out: N, data: &data };
    let single = Single::new(gpu, &m)?;
    let x = vec![0.5f32; N];
    single.run(gpu, &x, 1)?;
    let (start, mut runs) = (Instant::now(), 0u32);
    while runs < 2 || start.elapsed() < budget {
        single.run(gpu, &x, 1)?;
        runs += 1;
    }
    let per_run = start.elapsed().as_secs_f64() / runs as f64;
    Ok((2.0 * (N * N) as f64 / per_run, data.len() as f64 / per_run))
}
