//! Activations into Q8_0, Q8_1 and Q8_K blocks with AVX2: the scalar
//! encoder's arithmetic (`quant::q8`), eight values per instruction, byte
//! for byte.

use crate::quant::q8::quantize_row;
use crate::quant::ActFormat;
use core::arch::x86_64::*;
use half::f16;

/// [`quantize_row`] for `fmt`, byte for byte; Q8_0, Q8_1 and Q8_K vectorized.
pub(in crate::kernels) fn quantize_row_avx2(fmt: ActFormat, x: &[f32], out: &mut [u8]) {
    match fmt {
        // SAFETY (all three arms): reached only through the kernel table,
        // after detection confirmed AVX2 on this CPU and OS.
        ActFormat::Q8_0 => unsafe { q8_rows::<false>(x, out) },
        ActFormat::Q8_1 => unsafe { q8_rows::<true>(x, out) },
        ActFormat::Q8K => unsafe { q8k_rows(x, out) },
        _ => quantize_row(fmt, x, out),
    }
}

/// `x` (`8 · N` values) as `N` vectors.
#[inline]
#[target_feature(enable = "avx2")]
fn load<const N: usize>(x: &[f32]) -> [__m256; N] {
    let mut v = [_mm256_setzero_ps(); N];
    for (i, v) in v.iter_mut().enumerate() {
        let mut raw = [0f32; 8];
        raw.copy_from_slice(&x[8 * i..8 * i + 8]);
        // SAFETY: `raw` is 8 readable f32s; unaligned load.
        *v = unsafe { _mm256_loadu_ps(raw.as_ptr()) };
    }
    v
}

/// The largest magnitude in `v`, or `None` if a value is NaN or infinite
/// (the scalar encoder's own handling takes those blocks).
#[inline]
#[target_feature(enable = "avx2")]
fn finite_abs_max(v: &[__m256]) -> Option<f32> {
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let (mut m, mut nan) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    // Loops, not closures, over intrinsics: LLVM may keep a closure out of line.
    for v in v {
        m = _mm256_max_ps(m, _mm256_and_ps(*v, magnitude));
        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(*v, *v));
    }
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    (amax.is_finite() && _mm256_movemask_ps(nan) == 0).then_some(amax)
}

/// 32 values (`v`) times `scale`, rounded half to even: the levels as i32
/// vectors and as bytes in order. The levels lie in ±127 (the scale comes
/// from the largest magnitude), so the packs never saturate.
#[inline]
#[target_feature(enable = "avx2")]
fn levels32(v: &[__m256], scale: f32) -> ([__m256i; 4], [u8; 32]) {
    let mut q = [_mm256_setzero_si256(); 4];
    for i in 0..4 {
        let r = _mm256_mul_ps(v[i], _mm256_set1_ps(scale));
        q[i] = _mm256_cvtps_epi32(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(r));
    }
    // Two packs interleave the 128-bit halves; the permute restores order.
    let bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    let mut out = [0u8; 32];
    // SAFETY: `out` is 32 writable bytes; unaligned store.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), bytes) };
    (q, out)
}

/// The sum of the 16 levels in `a` and `b`.
#[inline]
#[target_feature(enable = "avx2")]
fn sum16(a: __m256i, b: __m256i) -> i32 {
    let s = _mm256_add_epi32(a, b);
    let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
}

#[target_feature(enable = "avx2")]
fn q8_rows<const SUM: bool>(x: &[f32], out: &mut [u8]) {
    let (head, block) = if SUM { (4, 36) } else { (2, 34) };
    for (o, xb) in out.chunks_exact_mut(block).zip(x.chunks_exact(32)) {
        let v = load::<4>(xb);
        let Some(amax) = finite_abs_max(&v) else {
            let fmt = if SUM { ActFormat::Q8_1 } else { ActFormat::Q8_0 };
            quantize_row(fmt, xb, o);
            continue;
        };
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let (q, qs) = levels32(&v, id);
        o[head..].copy_from_slice(&qs);
        o[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        if SUM {
            let sum = sum16(q[0], q[1]) + sum16(q[2], q[3]);
            o[2..4].copy_from_slice(&f16::from_f32(d * sum as f32).to_le_bytes());
        }
    }
}

/// Q8_K (the K-quants' activations): 256 values per block scaled by the
/// value of largest magnitude (sign kept, the first on ties), then the
/// block's 16 sums of 16 levels.
#[target_feature(enable = "avx2")]
fn q8k_rows(x: &[f32], out: &mut [u8]) {
    for (o, xb) in out.chunks_exact_mut(292).zip(x.chunks_exact(256)) {
        let v = load::<32>(xb);
        let Some(amax) = finite_abs_max(&v).filter(|&m| m != 0.0) else {
            // Zero, NaN or infinity: the scalar encoder's own handling.
            quantize_row(ActFormat::Q8K, xb, o);
            continue;
        };
        // The first value whose magnitude is the largest gives the sign.
        let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
        let mut max = amax;
        for (i, v) in v.iter().enumerate() {
            let hit =
                _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_and_ps(*v, magnitude), _mm256_set1_ps(amax)));
            if hit != 0 {
                max = xb[8 * i + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        o[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        for (g, chunk) in v.chunks_exact(4).enumerate() {
            let (q, qs) = levels32(chunk, iscale);
            o[4 + 32 * g..][..32].copy_from_slice(&qs);
            for half in 0..2 {
                let sum = sum16(q[2 * half], q[2 * half + 1]) as i16;
                o[260 + 4 * g + 2 * half..][..2].copy_from_slice(&sum.to_le_bytes());
            }
        }
    }
}
