//! AVX2 tile kernels for the 256-element super-block types (Q2_K … Q6_K,
//! IQ4_XS). Each weight super-block is unpacked once per tile and reused for
//! every activation row; the byte products run on `maddubs`/`madd`. Q4_K,
//! Q5_K and Q6_K (the common "K_M" mixes) unpack with hand-written AVX2; the
//! others go through the oracle's decoder, inlined here so it vectorizes.

use super::{f16_at, hsum, load32};
use crate::kernels::{TileFn, TileOut};
use crate::quant::{decode_block256, Block256, GgmlType};
use core::arch::x86_64::*;

/// Q8_K activation block: f32 scale, 256 levels, 16 sums of 16 levels.
const ACT_BYTES: usize = 292;

/// Signed byte products of 32 lanes, four at a time summed into 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn sum_products(x: __m256i, y: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// A super-block's 256 levels as eight 32-level vectors, with the scale and
/// minimum of every 16 levels.
struct Levels {
    q: [__m256i; 8],
    scale: [f32; 16],
    min: [f32; 16],
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
fn unpack(ty: GgmlType, b: &[u8]) -> Levels {
    let low4 = _mm256_set1_epi8(0x0F);
    let (mut scale, mut min) = ([0.0f32; 16], [0.0f32; 16]);
    let mut q = [_mm256_setzero_si256(); 8];
    match ty {
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let mut sc = [0u8; 12];
            sc.copy_from_slice(&b[4..16]);
            crate::quant::set_k4_scales(f16_at(b, 0), f16_at(b, 2), &sc, &mut scale, &mut min);
            let (qs_at, qh) = if ty == GgmlType::Q5_K { (48, Some(load32(&b[16..48]))) } else { (16, None) };
            for c in 0..4 {
                let v = load32(&b[qs_at + 32 * c..]);
                q[2 * c] = _mm256_and_si256(v, low4);
                q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                if let Some(qh) = qh {
                    // Bits 2c and 2c+1 of each qh byte add 16 to the low and high levels.
                    for (k, bit) in [(2 * c, 1u8 << (2 * c)), (2 * c + 1, 2u8 << (2 * c))] {
                        let set = _mm256_set1_epi8(bit as i8);
                        let on = _mm256_cmpeq_epi8(_mm256_and_si256(qh, set), set);
                        q[k] = _mm256_or_si256(q[k], _mm256_and_si256(on, _mm256_set1_epi8(16)));
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            let d = f16_at(b, 208);
            for (s, &v) in scale.iter_mut().zip(&b[192..208]) {
                *s = d * (v as i8) as f32;
            }
            let high2 = _mm256_set1_epi8(0x30);
            for h in 0..2 {
                let (a, c, hq) = (load32(&b[64 * h..]), load32(&b[64 * h + 32..]), load32(&b[128 + 32 * h..]));
                let parts = [
                    (_mm256_and_si256(a, low4), _mm256_slli_epi16(hq, 4)),
                    (_mm256_and_si256(c, low4), _mm256_slli_epi16(hq, 2)),
                    (_mm256_and_si256(_mm256_srli_epi16(a, 4), low4), hq),
                    (_mm256_and_si256(_mm256_srli_epi16(c, 4), low4), _mm256_srli_epi16(hq, 2)),
                ];
                for (k, (lo, hi)) in parts.into_iter().enumerate() {
                    let v = _mm256_or_si256(lo, _mm256_and_si256(hi, high2));
                    q[4 * h + k] = _mm256_sub_epi8(v, _mm256_set1_epi8(32));
                }
            }
        }
        _ => {
            // The table below routes only super-block types here, so decoding cannot fail.
            let blk = decode_block256(ty, b).unwrap_or(EMPTY);
            q = core::array::from_fn(|c| load32(bytemuck::cast_slice(&blk.q[32 * c..32 * c + 32])));
            (scale, min) = (blk.scale, blk.min);
        }
    }
    Levels { q, scale, min }
}

/// Per 32-level chunk, the scales of its two 16-level groups, one per 128-bit half.
#[inline]
#[target_feature(enable = "avx")]
fn chunk_scales(b: &Levels) -> [__m256; 8] {
    core::array::from_fn(|c| _mm256_setr_m128(_mm_set1_ps(b.scale[2 * c]), _mm_set1_ps(b.scale[2 * c + 1])))
}

/// `sum_g min[g] * bsums[g]` of one super-block pair.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn min_correction(b: &Levels, bsums: &[u8]) -> f32 {
    let mut s = [0i16; 16];
    for (v, c) in s.iter_mut().zip(bsums.chunks_exact(2)) {
        *v = i16::from_le_bytes([c[0], c[1]]);
    }
    let lo: [f32; 8] = core::array::from_fn(|i| s[i] as f32);
    let hi: [f32; 8] = core::array::from_fn(|i| s[8 + i] as f32);
    let (m_lo, m_hi): ([f32; 8], [f32; 8]) =
        (core::array::from_fn(|i| b.min[i]), core::array::from_fn(|i| b.min[8 + i]));
    // SAFETY: each array is 32 readable bytes; unaligned loads.
    unsafe {
        let p = _mm256_mul_ps(_mm256_loadu_ps(lo.as_ptr()), _mm256_loadu_ps(m_lo.as_ptr()));
        hsum(_mm256_fmadd_ps(_mm256_loadu_ps(hi.as_ptr()), _mm256_loadu_ps(m_hi.as_ptr()), p))
    }
}

/// `out[r][t] = dot(w[r], a[t])` for `r < R`, `t < T`.
#[target_feature(enable = "avx2,fma,f16c")]
fn tile<const R: usize, const T: usize>(ty: GgmlType, n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut TileOut) {
    let wb = ty.block_bytes();
    let nb = n / 256;
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut mins = [[0.0f32; T]; R];
    for sb in 0..nb {
        let blocks: [Levels; R] = core::array::from_fn(|r| unpack(ty, &w[r][sb * wb..(sb + 1) * wb]));
        let scales: [[__m256; 8]; R] = core::array::from_fn(|r| chunk_scales(&blocks[r]));
        for t in 0..T {
            let blk = &a[t][sb * ACT_BYTES..(sb + 1) * ACT_BYTES];
            let da = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
            let qa: [__m256i; 8] = core::array::from_fn(|c| load32(&blk[4 + 32 * c..]));
            for r in 0..R {
                let mut s = _mm256_setzero_ps();
                for c in 0..8 {
                    s = _mm256_fmadd_ps(sum_products(blocks[r].q[c], qa[c]), scales[r][c], s);
                }
                acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(da), s, acc[r][t]);
                mins[r][t] += da * min_correction(&blocks[r], &blk[260..292]);
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            out[r][t] = hsum(acc[r][t]) - mins[r][t];
        }
    }
}

const EMPTY: Block256 = Block256 { q: [0; 256], scale: [0.0; 16], min: [0.0; 16] };

#[target_feature(enable = "avx2,fma,f16c")]
fn tile_any(ty: GgmlType, n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut TileOut) {
    match (w.len(), a.len()) {
        (4, 4) => tile::<4, 4>(ty, n, w, a, out),
        (4, 1) => tile::<4, 1>(ty, n, w, a, out),
        (1, 4) => tile::<1, 4>(ty, n, w, a, out),
        (rows, toks) => {
            let mut one = [[0.0; 4]; 4];
            for r in 0..rows.min(4) {
                for t in 0..toks.min(4) {
                    tile::<1, 1>(ty, n, &w[r..], &a[t..], &mut one);
                    out[r][t] = one[0][0];
                }
            }
        }
    }
}

/// The AVX2 tile kernel for `ty`, if it is a 256-element super-block type.
pub(in crate::kernels) fn tile_kquant(ty: GgmlType) -> Option<TileFn> {
    macro_rules! table {
        ($($t:ident),*) => {
            // SAFETY (every arm): the kernel table asks for these only after
            // detection confirmed AVX2+FMA+F16C on this CPU and OS.
            match ty {
                $(GgmlType::$t => Some(|n, w, a, o| unsafe { tile_any(GgmlType::$t, n, w, a, o) }),)*
                _ => None,
            }
        };
    }
    table!(Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS)
}
