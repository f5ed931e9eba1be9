//! 16 weight rows at once in 512-bit lanes (AVX-512), for the 32-element
//! types: two 8-row blocks unpacked as in [`super::gemm`] and joined, so
//! one `dpbusd` adds 4 columns into 16 rows' sums, twice the 8-row
//! kernels' work per instruction. Each lane does the 8-row kernel's float
//! arithmetic in the same order and its integer sums are exact, so every
//! row's result is bit-identical to theirs: a matrix may mix the two.
//!
//! Signed weights (Q4_0, Q5_0, Q8_0) go in as `dpbusd`'s signed operand,
//! the activations biased by +128 as the unsigned one; `128 · Σw`, the
//! bias's part, comes off each row's block sum once per block.

use super::gemm::{bytes_at, fifth_bits, load16, prefetch_block, transpose4};
use super::PREFETCH_BYTES;
use crate::kernels::shared::{layout, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
use crate::kernels::{GemmWideFn, GEMM_ROWS, GEMM_TOKENS, GEMM_WIDE_ROWS};
use crate::quant::GgmlType;
use core::arch::x86_64::*;

/// Tokens one pass carries: 8 accumulators beside 8 weight groups.
const MAX_TOKENS: usize = 8;

#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn join_ps(lo: __m256, hi: __m256) -> __m512 {
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi)))
}

/// Block `$b` of the 16 rows (`$lo`, `$hi`): the groups (lane `r` holds
/// row `r`'s weights `4j..4j + 4`), the rows' scales and minimums, and
/// (signed types) `128 · Σw` per row. A macro, as `unpack8!` is: as a
/// function LLVM kept it out of line (17% of a prompt).
macro_rules! unpack16 {
    ($ty:ident, $lo:expr, $hi:expr, $b:expr) => {{
        let (g_lo, d_lo, m_lo) = unpack8!($ty, $lo, $b);
        let (g_hi, d_hi, m_hi) = unpack8!($ty, $hi, $b);
        let mut groups = [_mm512_setzero_si512(); 8];
        let mut wsum = _mm512_setzero_si512();
        let (_, _, has_min) = layout($ty);
        for j in 0..8 {
            groups[j] = join(g_lo[j], g_hi[j]);
            if !has_min {
                wsum = _mm512_dpbusd_epi32(wsum, _mm512_set1_epi8(1), groups[j]);
            }
        }
        (groups, join_ps(d_lo, d_hi), join_ps(m_lo, m_hi), _mm512_slli_epi32::<7>(wsum))
    }};
}

/// One token's block against the 16 rows' unpacked block, added into
/// `acc`: the 8-row kernels' `token_block`, lane for lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn token_block<const TY: u8>(
    groups: &[__m512i; 8],
    bias: __m512i,
    dw: __m512,
    mw: __m512,
    blk: &[u8],
    acc: __m512,
) -> __m512 {
    let (_, _, has_min) = layout(TY);
    let qa = &blk[if has_min { 4 } else { 2 }..];
    let flip = _mm512_set1_epi8(-128);
    let (mut even, mut odd) = (_mm512_setzero_si512(), _mm512_setzero_si512());
    for j in (0..8).step_by(2) {
        let a0 = _mm512_set1_epi32(i32::from_le_bytes(bytes_at::<4>(qa, 4 * j)));
        let a1 = _mm512_set1_epi32(i32::from_le_bytes(bytes_at::<4>(qa, 4 * j + 4)));
        if has_min {
            even = _mm512_dpbusd_epi32(even, groups[j], a0);
            odd = _mm512_dpbusd_epi32(odd, groups[j + 1], a1);
        } else {
            even = _mm512_dpbusd_epi32(even, _mm512_xor_si512(a0, flip), groups[j]);
            odd = _mm512_dpbusd_epi32(odd, _mm512_xor_si512(a1, flip), groups[j + 1]);
        }
    }
    let mut sums = _mm512_add_epi32(even, odd);
    if !has_min {
        sums = _mm512_sub_epi32(sums, bias);
    }
    let head = i32::from_le_bytes(bytes_at::<4>(blk, 0));
    let da_sa = _mm_cvtph_ps(_mm_cvtsi32_si128(head));
    let scale = _mm512_mul_ps(dw, _mm512_broadcastss_ps(da_sa));
    let acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc);
    if has_min {
        _mm512_fmadd_ps(mw, _mm512_broadcastss_ps(_mm_movehdup_ps(da_sa)), acc)
    } else {
        acc
    }
}

/// `T` tokens against the 16 rows; `prefetch` as [`GemmWideFn`] says.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn gemm<const TY: u8, const T: usize>(
    n: usize,
    w: &[&[u8]; GEMM_WIDE_ROWS],
    a: &[&[u8]],
    out: &mut [[f32; GEMM_WIDE_ROWS]],
    prefetch: bool,
) {
    let (wb, ab, _) = layout(TY);
    let nb = n / 32;
    let mut lo: [&[u8]; GEMM_ROWS] = [&[]; GEMM_ROWS];
    let mut hi: [&[u8]; GEMM_ROWS] = [&[]; GEMM_ROWS];
    for r in 0..GEMM_ROWS {
        lo[r] = &w[r][..nb * wb];
        hi[r] = &w[r + GEMM_ROWS][..nb * wb];
    }
    let mut toks: [&[u8]; T] = [&[]; T];
    for t in 0..T {
        toks[t] = &a[t][..nb * ab];
    }
    // Each row prefetches the row 16 below it: the next call's.
    let ahead = (GEMM_WIDE_ROWS * nb * wb).max(PREFETCH_BYTES);
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        if prefetch {
            prefetch_block(&lo, b, wb, ahead);
            prefetch_block(&hi, b, wb, ahead);
        }
        let (groups, dw, mw, bias) = unpack16!(TY, &lo, &hi, b);
        for t in 0..T {
            acc[t] = token_block::<TY>(&groups, bias, dw, mw, &toks[t][b * ab..(b + 1) * ab], acc[t]);
        }
    }
    for t in 0..T {
        // SAFETY: `out[t]` is 16 writable f32s; unaligned store.
        unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]) };
    }
}

/// Any number of tokens up to [`GEMM_TOKENS`], in passes of at most [`MAX_TOKENS`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn gemm_any<const TY: u8>(
    n: usize,
    w: &[&[u8]; GEMM_WIDE_ROWS],
    a: &[&[u8]],
    out: &mut [[f32; GEMM_WIDE_ROWS]; GEMM_TOKENS],
    prefetch: bool,
) {
    token_passes!(a, out, prefetch, MAX_TOKENS, gemm::<TY>(n, w));
}

/// The 16-row product for `ty`, if there is one.
pub(in crate::kernels) fn gemm_wide_avx512(ty: GgmlType) -> Option<GemmWideFn> {
    // SAFETY (every arm): the kernel table asks for these only when the CPU
    // has AVX-512 F/BW/VL/VNNI (and AVX2, FMA, F16C).
    match ty {
        GgmlType::Q4_0 => Some(|n, w, a, o, p| unsafe { gemm_any::<Q4_0>(n, w, a, o, p) }),
        GgmlType::Q4_1 => Some(|n, w, a, o, p| unsafe { gemm_any::<Q4_1>(n, w, a, o, p) }),
        GgmlType::Q5_0 => Some(|n, w, a, o, p| unsafe { gemm_any::<Q5_0>(n, w, a, o, p) }),
        GgmlType::Q5_1 => Some(|n, w, a, o, p| unsafe { gemm_any::<Q5_1>(n, w, a, o, p) }),
        GgmlType::Q8_0 => Some(|n, w, a, o, p| unsafe { gemm_any::<Q8_0>(n, w, a, o, p) }),
        _ => None,
    }
}
