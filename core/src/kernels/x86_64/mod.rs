//! AVX2 kernels. Each is reachable only through the tables here, which the
//! kernel table consults only after [`detect`] confirmed AVX2, FMA and F16C.

mod activation;
mod block32;
#[macro_use]
mod gemm;
mod gemm_k;
#[macro_use]
mod gemm_wide;
mod kquant;
mod panel;
mod quantize;
mod strided;

/// The least distance ahead of the current block that the tile kernels
/// prefetch weight rows: enough to cover DRAM latency at decode's rate.
const PREFETCH_BYTES: usize = 4096;

use super::{CpuCaps, TileFn, TileOut};
use crate::quant::GgmlType;
use core::arch::x86_64::*;
use half::f16;

pub(super) fn detect() -> CpuCaps {
    let l1 = __cpuid(1);
    let l7 = __cpuid_count(7, 0);
    let l7s1 = __cpuid_count(7, 1);
    let osxsave = l1.ecx & (1 << 27) != 0;
    // SAFETY: OSXSAVE is set, so XGETBV is available and XCR0 readable.
    let xcr0 = if osxsave { unsafe { _xgetbv(0) } } else { 0 };
    let ymm = xcr0 & 0b110 == 0b110;
    let zmm = xcr0 & 0xE6 == 0xE6;
    let bit = |reg: u32, b: u32| reg & (1 << b) != 0;
    CpuCaps {
        avx2: ymm && bit(l7.ebx, 5),
        fma: ymm && bit(l1.ecx, 12),
        f16c: ymm && bit(l1.ecx, 29),
        avx512: zmm && bit(l7.ebx, 16) && bit(l7.ebx, 30) && bit(l7.ebx, 31) && bit(l7.ecx, 11),
        avxvnni: ymm && bit(l7s1.eax, 4),
        neon: false,
        dotprod: false,
    }
}

/// Attention kernels (`dot_f16_f32`, `axpy_f16`). The kernel table uses
/// them only after detection confirmed AVX2+FMA+F16C.
#[allow(clippy::type_complexity)]
pub(super) const ATTN_AVX2: (fn(&[f16], &[f32]) -> f32, fn(&mut [f32], f32, &[f16])) = (
    // SAFETY: reachable only through a `Kernels` built with AVX2+FMA+F16C detected.
    |a, b| unsafe { dot_f16_f32(a, b) },
    // SAFETY: as above.
    |o, p, v| unsafe { axpy_f16(o, p, v) },
);

/// Row kernels for batched attention (`f16_to_f32`, `dot_rows`,
/// `weighted_sum`); the kernel table uses them only after detection
/// confirmed AVX2+FMA+F16C.
#[allow(clippy::type_complexity)]
pub(super) const ROWS_AVX2: (fn(&[f16], &mut [f32]), fn(&[f32], &[f32], &mut [f32]), fn(&[f32], &[f32], &mut [f32])) = (
    // SAFETY: reachable only through a `Kernels` built with AVX2+FMA+F16C detected.
    |s, d| unsafe { f16_to_f32(s, d) },
    // SAFETY: as above.
    |q, k, o| unsafe { dot_rows(q, k, o) },
    // SAFETY: as above.
    |p, v, o| unsafe { weighted_sum(p, v, o) },
);

/// [`dot_rows_multi`], which the kernel table uses only after detection
/// confirmed AVX2+FMA+F16C.
// SAFETY: reachable only through a `Kernels` built with AVX2+FMA+F16C detected.
pub(super) const DOT_ROWS_MULTI_AVX2: fn(&[f32], usize, &[f32], &mut [f32]) =
    |q, hd, k, o| unsafe { dot_rows_multi(q, hd, k, o) };

/// `round_to_f16`, used only after detection confirmed AVX2+FMA+F16C.
// SAFETY: reachable only through a `Kernels` built with AVX2+FMA+F16C detected.
pub(super) const ROUND_F16_AVX2: fn(&mut [f32]) = |x| unsafe { round_to_f16(x) };

#[target_feature(enable = "avx2,f16c")]
fn round_to_f16(x: &mut [f32]) {
    let n8 = x.len() / 8 * 8;
    for c in x[..n8].chunks_exact_mut(8) {
        let mut raw = [0f32; 8];
        raw.copy_from_slice(c);
        // SAFETY: `raw` is 32 readable and writable bytes; unaligned load and store.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(raw.as_ptr()));
            _mm256_storeu_ps(raw.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
        c.copy_from_slice(&raw);
    }
    x[n8..].iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32());
}

#[target_feature(enable = "avx2,f16c")]
fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    let n8 = src.len().min(dst.len()) / 8 * 8;
    for (s, d) in src[..n8].chunks_exact(8).zip(dst[..n8].chunks_exact_mut(8)) {
        let mut raw = [0f32; 8];
        // SAFETY: `raw` is 32 writable bytes; unaligned store.
        unsafe { _mm256_storeu_ps(raw.as_mut_ptr(), load_f16x8(s)) };
        d.copy_from_slice(&raw);
    }
    dst[n8..].iter_mut().zip(&src[n8..]).for_each(|(d, s)| *d = s.to_f32());
}

/// Each key's score as `dot_f16_f32` computes it: eight FMA lanes, then
/// `hsum`'s addition tree. Eight keys go at a time, and their eight
/// reductions share shuffles (the same tree, so the same sums).
#[target_feature(enable = "avx2,fma")]
fn dot_rows(q: &[f32], keys: &[f32], out: &mut [f32]) {
    let hd = q.len();
    let n8 = hd / 8 * 8;
    let lane_sums = |k: &[f32]| lane_sums(&k[..n8], &q[..n8]);
    let mut groups = out.chunks_exact_mut(8);
    let mut j = 0;
    for o in &mut groups {
        let v: [__m256; 8] = core::array::from_fn(|i| lane_sums(&keys[(j + i) * hd..(j + i + 1) * hd]));
        store_f32x8(o, hsum8(v));
        for (i, y) in o.iter_mut().enumerate() {
            let k = &keys[(j + i) * hd..(j + i + 1) * hd];
            *y += super::attn::dot_in_order(&k[n8..], &q[n8..]);
        }
        j += 8;
    }
    for (i, o) in groups.into_remainder().iter_mut().enumerate() {
        let k = &keys[(j + i) * hd..(j + i + 1) * hd];
        *o = hsum(lane_sums(k)) + super::attn::dot_in_order(&k[n8..], &q[n8..]);
    }
}

/// `out[i * n + j] = qs[i] · keys[j]` for up to four queries of `hd` (rows
/// of `qs`) against `n = out.len() / n_queries` keys, each score exactly as
/// [`dot_rows`] computes it: each key's chunks are loaded once for every
/// query, two keys at a time.
#[target_feature(enable = "avx2,fma")]
fn dot_rows_multi(qs: &[f32], hd: usize, keys: &[f32], out: &mut [f32]) {
    match qs.len() / hd.max(1) {
        1 => dot_rows(qs, keys, out),
        2 => dot_rows_by::<2>(qs, hd, keys, out),
        3 => dot_rows_by::<3>(qs, hd, keys, out),
        4 => dot_rows_by::<4>(qs, hd, keys, out),
        nq => {
            let n = out.len() / nq.max(1);
            for (q, o) in qs.chunks_exact(hd).zip(out.chunks_exact_mut(n)) {
                dot_rows(q, keys, o);
            }
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn dot_rows_by<const NQ: usize>(qs: &[f32], hd: usize, keys: &[f32], out: &mut [f32]) {
    let n = out.len() / NQ;
    let n8 = hd / 8 * 8;
    let q: [&[f32]; NQ] = core::array::from_fn(|i| &qs[i * hd..(i + 1) * hd]);
    let key = |j: usize| &keys[j * hd..(j + 1) * hd];
    let tail = |i: usize, j: usize| super::attn::dot_in_order(&key(j)[n8..], &q[i][n8..]);
    let mut j = 0;
    while j + 2 <= n {
        let (k0, k1) = (key(j), key(j + 1));
        // [query][key] lanes, as `lane_sums` runs them: one FMA chain per pair.
        let mut acc = [_mm256_setzero_ps(); 8];
        for c in (0..n8).step_by(8) {
            let (a, b) = (load_f32x8(&k0[c..]), load_f32x8(&k1[c..]));
            for i in 0..NQ {
                let y = load_f32x8(&q[i][c..]);
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
        for i in 0..NQ {
            out[i * n + j] = hsum(lane_sums(&key(j)[..n8], &q[i][..n8])) + tail(i, j);
        }
    }
}

/// Eight FMA lanes of `k · q` (both a multiple of 8 long), not yet reduced.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lane_sums(k: &[f32], q: &[f32]) -> __m256 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in k.chunks_exact(8).zip(q.chunks_exact(8)) {
        acc = _mm256_fmadd_ps(load_f32x8(x), load_f32x8(y), acc);
    }
    acc
}

/// `[hsum(v[0]), …, hsum(v[7])]`, each by exactly `hsum`'s addition tree:
/// `((x0 + x4) + (x2 + x6)) + ((x1 + x5) + (x3 + x7))`.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum8(v: [__m256; 8]) -> __m256 {
    // Halves added: [x0+x4, x1+x5, x2+x6, x3+x7] for two vectors per register.
    let halves = |a: __m256, b: __m256| {
        _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(a, b), _mm256_permute2f128_ps::<0x31>(a, b))
    };
    let (p01, p23, p45, p67) = (halves(v[0], v[1]), halves(v[2], v[3]), halves(v[4], v[5]), halves(v[6], v[7]));
    // (x0+x4)+(x2+x6) and (x1+x5)+(x3+x7), for four vectors per register.
    let pairs = |p: __m256, r: __m256| {
        _mm256_add_ps(_mm256_shuffle_ps::<0b01_00_01_00>(p, r), _mm256_shuffle_ps::<0b11_10_11_10>(p, r))
    };
    let (r0123, r4567) = (pairs(p01, p23), pairs(p45, p67));
    // The final sums, in lane order [0, 2, 4, 6, 1, 3, 5, 7].
    let s = _mm256_add_ps(
        _mm256_shuffle_ps::<0b10_00_10_00>(r0123, r4567),
        _mm256_shuffle_ps::<0b11_01_11_01>(r0123, r4567),
    );
    _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// `out = sum_j p[j] * values[j]` as `axpy_f16` accumulates it (one FMA per
/// element per position), with the accumulator in registers for the common
/// head sizes.
#[target_feature(enable = "avx2,fma")]
fn weighted_sum(p: &[f32], values: &[f32], out: &mut [f32]) {
    match out.len() {
        64 => weighted_sum_fixed::<8>(p, values, out),
        128 => weighted_sum_fixed::<16>(p, values, out),
        hd => {
            out.fill(0.0);
            for (&pj, v) in p.iter().zip(values.chunks_exact(hd)) {
                axpy_f32(out, pj, v);
            }
        }
    }
}

/// [`weighted_sum`] for heads of `V * 8` elements.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn weighted_sum_fixed<const V: usize>(p: &[f32], values: &[f32], out: &mut [f32]) {
    let mut acc = [_mm256_setzero_ps(); V];
    for (&pj, v) in p.iter().zip(values.chunks_exact(V * 8)) {
        let pv = _mm256_set1_ps(pj);
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(pv, load_f32x8(&v[8 * i..]), *a);
        }
    }
    for (i, a) in acc.iter().enumerate() {
        store_f32x8(&mut out[8 * i..], *a);
    }
}

/// [`weighted_sum_multi`], used only after detection confirmed AVX2+FMA+F16C.
// SAFETY: reachable only through a `Kernels` built with AVX2+FMA+F16C detected.
pub(super) const WEIGHTED_MULTI_AVX2: fn(&[f32], &[f32], usize, &mut [f32]) =
    |p, v, hd, o| unsafe { weighted_sum_multi(p, v, hd, o) };

/// [`weighted_sum`] for several queries (`ps`: `nq` rows of scores over the
/// same value rows, `outs`: `nq` rows of `hd`), each value chunk read once
/// for all of them. Every output is summed as `weighted_sum` sums it.
#[target_feature(enable = "avx2,fma")]
fn weighted_sum_multi(ps: &[f32], values: &[f32], hd: usize, outs: &mut [f32]) {
    let nq = outs.len() / hd.max(1);
    match nq {
        2 if hd.is_multiple_of(32) => weighted_multi_by::<2, 4>(ps, values, hd, outs),
        3 if hd.is_multiple_of(32) => weighted_multi_by::<3, 4>(ps, values, hd, outs),
        4 if hd.is_multiple_of(16) => weighted_multi_by::<4, 2>(ps, values, hd, outs),
        _ => {
            let m = ps.len() / nq.max(1);
            for (p, o) in ps.chunks_exact(m.max(1)).zip(outs.chunks_exact_mut(hd.max(1))) {
                weighted_sum(p, values, o);
            }
        }
    }
}

/// `NQ` queries by `C` vectors of 8 outputs, one pass per `8 * C` columns.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn weighted_multi_by<const NQ: usize, const C: usize>(ps: &[f32], values: &[f32], hd: usize, outs: &mut [f32]) {
    let m = ps.len() / NQ;
    for col in (0..hd).step_by(8 * C) {
        let mut acc = [[_mm256_setzero_ps(); C]; NQ];
        for (j, v) in values.chunks_exact(hd).take(m).enumerate() {
            let v: [__m256; C] = core::array::from_fn(|c| load_f32x8(&v[col + 8 * c..]));
            for (i, a) in acc.iter_mut().enumerate() {
                let pv = _mm256_set1_ps(ps[i * m + j]);
                for (a, &x) in a.iter_mut().zip(&v) {
                    *a = _mm256_fmadd_ps(pv, x, *a);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (c, a) in a.iter().enumerate() {
                store_f32x8(&mut outs[i * hd + col + 8 * c..], *a);
            }
        }
    }
}

/// `axpy_f32`, used only after detection confirmed AVX2+FMA+F16C.
// SAFETY: reachable only through a `Kernels` built with AVX2+FMA+F16C detected.
pub(super) const AXPY_F32_AVX2: fn(&mut [f32], f32, &[f32]) = |o, p, v| unsafe { axpy_f32(o, p, v) };

/// `out[i] += p * v[i]` as `axpy_f16` does it, for f32 values.
#[target_feature(enable = "avx2,fma")]
fn axpy_f32(out: &mut [f32], p: f32, v: &[f32]) {
    let n8 = out.len().min(v.len()) / 8 * 8;
    let pv = _mm256_set1_ps(p);
    for (o, x) in out[..n8].chunks_exact_mut(8).zip(v[..n8].chunks_exact(8)) {
        store_f32x8(o, _mm256_fmadd_ps(pv, load_f32x8(x), load_f32x8(o)));
    }
    out[n8..].iter_mut().zip(&v[n8..]).for_each(|(o, x)| *o += p * x);
}

#[inline]
#[target_feature(enable = "avx")]
fn store_f32x8(out: &mut [f32], v: __m256) {
    let mut raw = [0f32; 8];
    // SAFETY: `raw` is 32 writable bytes; unaligned store.
    unsafe { _mm256_storeu_ps(raw.as_mut_ptr(), v) };
    out[..8].copy_from_slice(&raw);
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn f16_at(bytes: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The first eight f16 values of `v` widened to f32 (a shorter `v` panics).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn load_f16x8(v: &[f16]) -> __m256 {
    let v = &v[..8];
    // SAFETY: `v` is 16 readable bytes (`f16` is a transparent u16); unaligned load.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(v.as_ptr().cast()) })
}

#[inline]
#[target_feature(enable = "avx")]
fn load_f32x8(v: &[f32]) -> __m256 {
    let mut raw = [0f32; 8];
    raw.copy_from_slice(&v[..8]);
    // SAFETY: `raw` is 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_ps(raw.as_ptr()) }
}

/// Strided f16 rows for decode attention ([`dot_f16_strided`],
/// [`weighted_sum_f16`]); the kernel table uses them only after detection
/// confirmed AVX2+FMA+F16C.
#[allow(clippy::type_complexity)]
pub(super) const STRIDED_AVX2: (fn(&[f32], &[f16], usize, &mut [f32]), fn(&[f32], &[f16], usize, &mut [f32])) = (
    // SAFETY: reachable only through a `Kernels` built with AVX2+FMA+F16C detected.
    |q, k, s, o| unsafe { dot_f16_strided(q, k, s, o) },
    // SAFETY: as above.
    |p, v, s, o| unsafe { weighted_sum_f16(p, v, s, o) },
);

/// `out[j] = dot_f16_f32(&keys[j * stride..][..q.len()], q)` for every `j`,
/// each with exactly its sums, eight keys per reduction tree (`hsum8`
/// adds as `hsum` does): decode's scores without a call per key.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f16_strided(q: &[f32], keys: &[f16], stride: usize, out: &mut [f32]) {
    let hd = q.len();
    let n8 = hd / 8 * 8;
    let key = |j: usize| &keys[j * stride..j * stride + hd];
    let sums = |k: &[f16]| {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in k[..n8].chunks_exact(8).zip(q[..n8].chunks_exact(8)) {
            acc = _mm256_fmadd_ps(load_f16x8(x), load_f32x8(y), acc);
        }
        acc
    };
    let mut groups = out.chunks_exact_mut(8);
    let mut j = 0;
    for o in &mut groups {
        let v: [__m256; 8] = core::array::from_fn(|i| sums(key(j + i)));
        store_f32x8(o, hsum8(v));
        for (i, y) in o.iter_mut().enumerate() {
            *y += super::scalar::dot_f16_f32(&key(j + i)[n8..], &q[n8..]);
        }
        j += 8;
    }
    for (i, o) in groups.into_remainder().iter_mut().enumerate() {
        let k = key(j + i);
        *o = hsum(sums(k)) + super::scalar::dot_f16_f32(&k[n8..], &q[n8..]);
    }
}

/// `out = Σ p[j] * values[j * stride..][..out.len()]`, exactly as `axpy_f16`
/// from zero in `j` order, with the sums kept in registers.
#[target_feature(enable = "avx2,fma,f16c")]
fn weighted_sum_f16(p: &[f32], values: &[f16], stride: usize, out: &mut [f32]) {
    match out.len() {
        64 => weighted_sum_f16_fixed::<8>(p, values, stride, out),
        128 => weighted_sum_f16_fixed::<16>(p, values, stride, out),
        hd => {
            out.fill(0.0);
            for (j, &pj) in p.iter().enumerate() {
                axpy_f16(out, pj, &values[j * stride..j * stride + hd]);
            }
        }
    }
}

/// [`weighted_sum_f16`] for heads of `V * 8` elements.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn weighted_sum_f16_fixed<const V: usize>(p: &[f32], values: &[f16], stride: usize, out: &mut [f32]) {
    let mut acc = [_mm256_setzero_ps(); V];
    for (j, &pj) in p.iter().enumerate() {
        let v = &values[j * stride..j * stride + V * 8];
        let pv = _mm256_set1_ps(pj);
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(pv, load_f16x8(&v[8 * i..]), *a);
        }
    }
    for (i, a) in acc.iter().enumerate() {
        store_f32x8(&mut out[8 * i..], *a);
    }
}

/// `sum(a[i] * b[i])` over f16 keys and f32 queries.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let n8 = a.len().min(b.len()) / 8 * 8;
    for (x, y) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        acc = _mm256_fmadd_ps(load_f16x8(x), load_f32x8(y), acc);
    }
    hsum(acc) + super::scalar::dot_f16_f32(&a[n8..], &b[n8..])
}

/// `out[i] += p * v[i]` over f16 values.
#[target_feature(enable = "avx2,fma,f16c")]
fn axpy_f16(out: &mut [f32], p: f32, v: &[f16]) {
    let n8 = out.len().min(v.len()) / 8 * 8;
    let pv = _mm256_set1_ps(p);
    for (o, x) in out[..n8].chunks_exact_mut(8).zip(v[..n8].chunks_exact(8)) {
        let r = _mm256_fmadd_ps(pv, load_f16x8(x), load_f32x8(o));
        let mut raw = [0f32; 8];
        // SAFETY: `raw` is 32 writable bytes; unaligned store.
        unsafe { _mm256_storeu_ps(raw.as_mut_ptr(), r) };
        o.copy_from_slice(&raw);
    }
    super::scalar::axpy_f16(&mut out[n8..], p, &v[n8..]);
}

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 packed nibble bytes to 32 bytes: low nibbles first, then high nibbles.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn nibbles(qs: &[u8]) -> __m256i {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&qs[..16]);
    // SAFETY: `raw` is 16 readable bytes; unaligned load.
    let lo = unsafe { _mm_loadu_si128(raw.as_ptr().cast()) };
    let both = _mm256_set_m128i(_mm_srli_epi16(lo, 4), lo);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load32(bytes: &[u8]) -> __m256i {
    let mut raw = [0u8; 32];
    raw.copy_from_slice(&bytes[..32]);
    // SAFETY: `raw` is 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_si256(raw.as_ptr().cast()) }
}

pub(super) use activation::ACTIVATION_AVX2;
pub(super) use block32::{tile_avx2, tile_avx512, tile_vnni};
pub(super) use gemm::{gemm_avx2, gemm_avx512, gemm_vnni};
pub(super) use gemm_wide::gemm_wide_avx512;
pub(super) use kquant::tile_kquant;
pub(super) use panel::panel_avx512;
pub(super) use quantize::quantize_row_avx2;
pub(super) use strided::STRIDED_MULTI_AVX2;

/// F16 and BF16 weights (with activations in the same format): eight
/// values widened to f32 per step, four independent FMA chains.
pub(super) fn tile_half(ty: GgmlType) -> Option<TileFn> {
    // SAFETY (both arms): the kernel table asks for these only after
    // detection confirmed AVX2+FMA+F16C on this CPU and OS.
    match ty {
        GgmlType::F16 => Some(|n, w, a, o| unsafe { tile_half_any::<false>(n, w, a, o) }),
        GgmlType::BF16 => Some(|n, w, a, o| unsafe { tile_half_any::<true>(n, w, a, o) }),
        _ => None,
    }
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
fn widen8<const BF16: bool>(b: &[u8]) -> __m256 {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&b[..16]);
    // SAFETY: `raw` is 16 readable bytes; unaligned load.
    let v = unsafe { _mm_loadu_si128(raw.as_ptr().cast()) };
    if BF16 {
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16))
    } else {
        _mm256_cvtph_ps(v)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn tile_half_any<const BF16: bool>(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut TileOut) {
    let n8 = n / 8 * 8;
    for (o, wr) in out.iter_mut().zip(w) {
        for (y, ar) in o.iter_mut().zip(a) {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, (wc, ac)) in wr[..2 * n8].chunks_exact(16).zip(ar[..2 * n8].chunks_exact(16)).enumerate() {
                acc[i % 4] = _mm256_fmadd_ps(widen8::<BF16>(wc), widen8::<BF16>(ac), acc[i % 4]);
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let ty = if BF16 { GgmlType::BF16 } else { GgmlType::F16 };
            *y = hsum(sum) + super::scalar::dot(ty, n - n8, &wr[2 * n8..], &ar[2 * n8..]);
        }
    }
}

/// The oracle's loops compiled with AVX2 enabled, for the types without a
/// hand-written kernel (F32). The compiler
/// vectorizes the decoding and integer sums; results equal the oracle's.
pub(super) fn tile_autovec(ty: GgmlType) -> Option<TileFn> {
    macro_rules! table {
        ($($t:ident),*) => {
            // SAFETY (every arm): the kernel table asks for these only after
            // detection confirmed AVX2+FMA+F16C on this CPU and OS.
            match ty {
                $(GgmlType::$t => Some(|n, w, a, o| unsafe { oracle_avx2(GgmlType::$t, n, w, a, o) }),)*
                _ => None,
            }
        };
    }
    table!(F32)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn oracle_avx2(ty: GgmlType, n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut TileOut) {
    super::scalar::tile_inline(ty, n, w, a, out)
}
