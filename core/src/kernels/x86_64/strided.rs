//! Decode attention over a KV cache of f16 rows for several query heads of
//! one KV head at once, so each key and value is read from memory once for
//! the group. Every score and output equals the one-query kernel's bit for
//! bit (`dot_f16_strided`, `weighted_sum_f16`).

use super::{dot_f16_strided, hsum, hsum8, load_f16x8, load_f32x8, store_f32x8, weighted_sum_f16};
use core::arch::x86_64::*;
use half::f16;

/// Rows ahead to ask the memory for: the cache is read once per token, from
/// DRAM at depth, and the hardware prefetcher alone left these loops waiting.
const PREFETCH_ROWS: usize = 16;

/// The multi-query scores and weighted sums, used only after detection
/// confirmed AVX2+FMA+F16C.
#[allow(clippy::type_complexity)]
pub(in crate::kernels) const STRIDED_MULTI_AVX2: (
    fn(&[f32], usize, &[f16], usize, &mut [f32]),
    fn(&[&[f32]], &[f16], usize, &mut [f32]),
) = (
    // SAFETY: reachable only through a `Kernels` built with AVX2+FMA+F16C detected.
    |q, hd, k, s, o| unsafe { dot_f16_strided_multi(q, hd, k, s, o) },
    // SAFETY: as above.
    |p, v, s, o| unsafe { weighted_sum_f16_multi(p, v, s, o) },
);

/// `out[i * n + j]` = query `i` (of `qs.len() / hd`) · key `j` (of `n`).
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f16_strided_multi(qs: &[f32], hd: usize, keys: &[f16], stride: usize, out: &mut [f32]) {
    match qs.len() / hd.max(1) {
        2 => dot_by::<2>(qs, hd, keys, stride, out),
        3 => dot_by::<3>(qs, hd, keys, stride, out),
        4 => dot_by::<4>(qs, hd, keys, stride, out),
        nq => {
            let n = out.len() / nq.max(1);
            for (q, o) in qs.chunks_exact(hd.max(1)).zip(out.chunks_exact_mut(n.max(1))) {
                dot_f16_strided(q, keys, stride, o);
            }
        }
    }
}

/// Two keys by `NQ` queries per step: one FMA chain per pair, reduced eight
/// at a time as `dot_f16_strided` reduces each.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_by<const NQ: usize>(qs: &[f32], hd: usize, keys: &[f16], stride: usize, out: &mut [f32]) {
    let n = out.len() / NQ;
    let n8 = hd / 8 * 8;
    let q: [&[f32]; NQ] = core::array::from_fn(|i| &qs[i * hd..(i + 1) * hd]);
    let key = |j: usize| &keys[j * stride..j * stride + hd];
    let tail = |i: usize, j: usize| super::super::scalar::dot_f16_f32(&key(j)[n8..], &q[i][n8..]);
    let mut j = 0;
    while j + 2 <= n {
        // A hint only: it never faults, whatever the address.
        _mm_prefetch::<_MM_HINT_T0>(keys.as_ptr().wrapping_add((j + PREFETCH_ROWS) * stride).cast());
        _mm_prefetch::<_MM_HINT_T0>(keys.as_ptr().wrapping_add((j + PREFETCH_ROWS + 1) * stride).cast());
        let (k0, k1) = (key(j), key(j + 1));
        let mut acc = [_mm256_setzero_ps(); 8];
        for c in (0..n8).step_by(8) {
            let (a, b) = (load_f16x8(&k0[c..]), load_f16x8(&k1[c..]));
            for (i, qi) in q.iter().enumerate() {
                let y = load_f32x8(&qi[c..]);
                acc[2 * i] = _mm256_fmadd_ps(a, y, acc[2 * i]);
                acc[2 * i + 1] = _mm256_fmadd_ps(b, y, acc[2 * i + 1]);
            }
        }
        let mut sums = [0f32; 8];
        store_f32x8(&mut sums, hsum8(acc));
        for i in 0..NQ {
            out[i * n + j] = sums[2 * i] + tail(i, j);
            out[i * n + j + 1] = sums[2 * i + 1] + tail(i, j + 1);
        }
        j += 2;
    }
    if j < n {
        let k0 = key(j);
        for (i, qi) in q.iter().enumerate() {
            let mut acc = _mm256_setzero_ps();
            for c in (0..n8).step_by(8) {
                acc = _mm256_fmadd_ps(load_f16x8(&k0[c..]), load_f32x8(&qi[c..]), acc);
            }
            out[i * n + j] = hsum(acc) + tail(i, j);
        }
    }
}

/// `outs[i * cols..][..cols]` = Σ_j `ps[i][j]` × the first `cols` values of
/// row `j`, for each of `ps.len()` queries.
#[target_feature(enable = "avx2,fma,f16c")]
fn weighted_sum_f16_multi(ps: &[&[f32]], values: &[f16], stride: usize, outs: &mut [f32]) {
    let cols = outs.len() / ps.len().max(1);
    match ps.len() {
        2 if cols.is_multiple_of(32) => weighted_by::<2, 4>(ps, values, stride, outs),
        3 if cols.is_multiple_of(32) => weighted_by::<3, 4>(ps, values, stride, outs),
        4 if cols.is_multiple_of(16) => weighted_by::<4, 2>(ps, values, stride, outs),
        _ => {
            for (p, o) in ps.iter().zip(outs.chunks_exact_mut(cols.max(1))) {
                weighted_sum_f16(p, values, stride, o);
            }
        }
    }
}

/// `NQ` queries by `C` vectors of eight columns, one pass per `8 * C` columns.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn weighted_by<const NQ: usize, const C: usize>(ps: &[&[f32]], values: &[f16], stride: usize, outs: &mut [f32]) {
    let cols = outs.len() / NQ;
    let m = ps[0].len();
    let p: [&[f32]; NQ] = core::array::from_fn(|i| &ps[i][..m]);
    for col in (0..cols).step_by(8 * C) {
        let mut acc = [[_mm256_setzero_ps(); C]; NQ];
        for j in 0..m {
            // A hint only: it never faults, whatever the address.
            _mm_prefetch::<_MM_HINT_T0>(values.as_ptr().wrapping_add((j + PREFETCH_ROWS) * stride + col).cast());
            let row = &values[j * stride + col..][..8 * C];
            let v: [__m256; C] = core::array::from_fn(|c| load_f16x8(&row[8 * c..]));
            for (a, pi) in acc.iter_mut().zip(&p) {
                let pv = _mm256_set1_ps(pi[j]);
                for (a, &x) in a.iter_mut().zip(&v) {
                    *a = _mm256_fmadd_ps(pv, x, *a);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (c, a) in a.iter().enumerate() {
                store_f32x8(&mut outs[i * cols + col + 8 * c..], *a);
            }
        }
    }
}
