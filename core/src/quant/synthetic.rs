//! Random weight rows for tests, benchmarks and profiling.

use alloc::vec::Vec;

use super::GgmlType;
use crate::sampler::Rng;

/// At least `bytes` of `ty` rows, `n` weights each: `distinct` random rows
/// repeated (making random data for a whole matrix larger than the caches
/// is slow). Returns the matrix and its row count, a multiple of `distinct`.
pub fn random_matrix(ty: GgmlType, n: usize, bytes: usize, distinct: usize, rng: &mut Rng) -> (Vec<u8>, usize) {
    let distinct = distinct.max(1);
    let rows: Vec<u8> = (0..distinct).flat_map(|_| random_row(ty, n, rng)).collect();
    let n_out = (bytes / ty.row_bytes(n).max(1)).div_ceil(distinct).max(1) * distinct;
    (rows.repeat(n_out / distinct), n_out)
}

/// A row of `n` random weights of `ty`: random levels with small finite
/// scales, for kernel tests, benchmarks and the profiler (speed does not
/// depend on the values, but NaN or denormal scales would slow some CPUs).
pub fn random_row(ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..ty.row_bytes(n)).map(|_| rng.next_u64() as u8).collect();
    let small = |rng: &mut Rng| half::f16::from_f32((rng.next_f64() as f32 - 0.5) * 0.1).to_le_bytes();
    match ty {
        GgmlType::F32 => {
            bytes.chunks_exact_mut(4).for_each(|c| c.copy_from_slice(&(rng.next_f64() as f32 - 0.5).to_le_bytes()))
        }
        GgmlType::F16 | GgmlType::BF16 => bytes.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&small(rng))),
        _ => {
            // Overwrite each f16 scale field with a small finite value.
            let scale_offsets: &[usize] = match ty {
                GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => &[0],
                GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
                GgmlType::Q2_K => &[80, 82],
                GgmlType::Q3_K => &[108],
                GgmlType::Q6_K => &[208],
                _ => &[],
            };
            for block in bytes.chunks_exact_mut(ty.block_bytes()) {
                for &o in scale_offsets {
                    block[o..o + 2].copy_from_slice(&small(rng));
                }
            }
        }
    }
    bytes
}
