//! One kernel at a time, for tests against core's scalar oracle.

use prima_core::kernels::matmul::Matrix;

use crate::device::{Gpu, GpuError};
use crate::kernels::Kernels;
use crate::layers::{execute, Acts, Builder, Io, Products, MAX_ROWS};

/// `m` times each row of `x` (`n_tok × m.n_in`), on the GPU, with the
/// activations encoded as the CPU path encodes them for `m`'s type.
pub fn product(gpu: &Gpu, m: &Matrix<'_>, x: &[f32]) -> Result<Vec<f32>, GpuError> {
    let n_tok = x.len() / m.n_in;
    assert!(n_tok <= MAX_ROWS && n_tok * m.n_in == x.len(), "at most {MAX_ROWS} whole rows");
    let kernels = Kernels::new(gpu, [m.ty])?;
    let mut b = Builder { gpu, kernels: &kernels, bytes: 0 };
    let width = m.n_in.max(m.n_out);
    let a = Acts::new(&mut b, [width, 32, 32, 32, 1])?;
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("read back"),
        size: (MAX_ROWS * width * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut plan = Vec::new();
    Products { a: &a, encoded: None }.push(&mut b, &mut plan, m, None, &a.norm, &a.x)?;
    let mut rows = x.to_vec();
    let io = Io { input: &a.norm, output: &a.x, staging: &staging, pass: &a.pass };
    // The output may be wider or narrower than the input.
    rows.resize(n_tok * m.n_out, 0.0);
    gpu.queue.write_buffer(&a.norm, 0, bytemuck::cast_slice(x));
    execute(gpu, &kernels, &plan, io, (0, 0, n_tok), &mut rows)?;
    Ok(rows)
}
