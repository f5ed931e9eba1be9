//! Softmax and SwiGLU's gate eight lanes at a time, with exactly the scalar
//! arithmetic of `kernels::activation` (separate multiplies and adds, the
//! same sums in the same lanes), so results equal it bit for bit.

use super::super::activation::{exp_approx, EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2E, SHIFT};
use super::{load_f32x8, store_f32x8};
use core::arch::x86_64::*;

/// `softmax` and `x = silu(x) * up`, used only after detection confirmed AVX2.
#[allow(clippy::type_complexity)]
pub(in crate::kernels) const ACTIVATION_AVX2: (fn(&mut [f32]), fn(&mut [f32], &[f32])) = (
    // SAFETY: reachable only through a `Kernels` built with AVX2 detected.
    |x| unsafe { softmax(x) },
    // SAFETY: as above.
    |g, u| unsafe { swiglu(g, u) },
);

/// `exp_approx` of each lane.
#[inline]
#[target_feature(enable = "avx2")]
fn exp8(x: __m256) -> __m256 {
    let splat = _mm256_set1_ps;
    // `max(a, b)` is `a > b ? a : b`, so a NaN lane stays NaN, as in scalar.
    let x = _mm256_max_ps(splat(EXP_MIN), x);
    let x = _mm256_min_ps(splat(EXP_MAX), x);
    let shifted = _mm256_add_ps(_mm256_mul_ps(x, splat(LOG2E)), splat(SHIFT));
    let n = _mm256_sub_ps(shifted, splat(SHIFT));
    let n_int = _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(SHIFT.to_bits() as i32));
    let r = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, splat(LN2_HI))), _mm256_mul_ps(n, splat(LN2_LO)));
    let [c6, c5, c4, c3, c2] = EXP_POLY;
    let mut p = splat(c6);
    for c in [c5, c4, c3, c2] {
        p = _mm256_add_ps(_mm256_mul_ps(p, r), splat(c));
    }
    let p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, r), r), r), splat(1.0));
    let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(n_int, _mm256_set1_epi32(127)));
    _mm256_mul_ps(p, _mm256_castsi256_ps(scale))
}

#[target_feature(enable = "avx2")]
fn softmax(x: &mut [f32]) {
    let n8 = x.len() / 8 * 8;
    let (body, tail) = x.split_at_mut(n8);
    let mut lanes = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in body.chunks_exact(8) {
        lanes = _mm256_max_ps(load_f32x8(c), lanes);
    }
    let mut lane_max = [0f32; 8];
    store_f32x8(&mut lane_max, lanes);
    let max = tail.iter().chain(&lane_max).fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    for c in body.chunks_exact_mut(8) {
        let e = exp8(_mm256_sub_ps(load_f32x8(c), _mm256_set1_ps(max)));
        store_f32x8(c, e);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
    }
    tail.iter_mut().for_each(|v| *v = exp_approx(*v - max));
    let mut sums = [0f64; 8];
    let (s_lo, s_hi) = sums.split_at_mut(4);
    // SAFETY: each half is 4 writable f64s; unaligned stores.
    unsafe {
        _mm256_storeu_pd(s_lo.as_mut_ptr(), lo);
        _mm256_storeu_pd(s_hi.as_mut_ptr(), hi);
    }
    let sum: f64 = sums.iter().sum::<f64>() + tail.iter().map(|&v| v as f64).sum::<f64>();
    let inv = (1.0 / sum) as f32;
    for c in body.chunks_exact_mut(8) {
        store_f32x8(c, _mm256_mul_ps(load_f32x8(c), _mm256_set1_ps(inv)));
    }
    tail.iter_mut().for_each(|v| *v *= inv);
}

/// `gate[i] = silu(gate[i]) * up[i]`.
#[target_feature(enable = "avx2")]
fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let n8 = n / 8 * 8;
    let sign = _mm256_set1_ps(-0.0);
    for (g, u) in gate[..n8].chunks_exact_mut(8).zip(up[..n8].chunks_exact(8)) {
        let x = load_f32x8(g);
        let silu = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), exp8(_mm256_xor_ps(x, sign))));
        store_f32x8(g, _mm256_mul_ps(silu, load_f32x8(u)));
    }
    for (g, &u) in gate[n8..n].iter_mut().zip(&up[n8..n]) {
        *g = super::super::activation::silu(*g) * u;
    }
}
