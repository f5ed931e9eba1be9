//! AVX2 tile kernels for the 256-element super-block types (Q2_K … Q6_K,
//! IQ4_XS). Each weight super-block is unpacked once per tile and reused for
//! every activation row; byte products and group scales are applied in
//! integers. Q4_K, Q5_K and Q6_K (the common "K_M" mixes) unpack with
//! hand-written AVX2; the others go through the oracle's decoder.

use super::{hsum, load32};
use crate::kernels::{TileFn, TileOut};
use crate::quant::{decode_levels256, k_scales, GgmlType, KScales};
use core::arch::x86_64::*;

/// Q8_K activation block: f32 scale, 256 levels, 16 sums of 16 levels.
const ACT_BYTES: usize = 292;

/// Writes a super-block's 256 levels into `q` as eight 32-level vectors and
/// returns its scales. (Out-parameter, not a return value: returning the
/// vectors by value cost a memory copy per block.)
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn unpack(ty: GgmlType, b: &[u8], q: &mut [__m256i; 8]) -> KScales {
    let low4 = _mm256_set1_epi8(0x0F);
    // The table below routes only super-block types here, so this cannot fail.
    let k = k_scales(ty, b).unwrap_or(KScales { scale: [0; 16], min: [0; 16], d: 0.0, dmin: 0.0 });
    match ty {
        GgmlType::Q4_K | GgmlType::Q5_K => {
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
            let mut levels = [0i8; 256];
            decode_levels256(ty, b, &mut levels);
            for (c, v) in q.iter_mut().enumerate() {
                *v = load32(bytemuck::cast_slice(&levels[32 * c..32 * c + 32]));
            }
        }
    }
    k
}

/// Per 32-level chunk, the integer scales of its two 16-level groups, one per 128-bit half.
#[inline]
#[target_feature(enable = "avx2")]
fn chunk_scales(k: &KScales) -> [__m256i; 8] {
    core::array::from_fn(|c| _mm256_setr_m128i(_mm_set1_epi16(k.scale[2 * c]), _mm_set1_epi16(k.scale[2 * c + 1])))
}

/// `sum_g min[g] * bsums[g]`, in integers.
#[inline]
fn min_correction(k: &KScales, bsums: &[u8]) -> i32 {
    k.min.iter().zip(bsums.chunks_exact(2)).map(|(&m, b)| m as i32 * i16::from_le_bytes([b[0], b[1]]) as i32).sum()
}

/// `out[r][t] = dot(w[r], a[t])` for `r < R`, `t < T`. Per super-block the
/// byte products are scaled and summed in integers (`maddubs`, then `madd`
/// by the group scales), so only one float multiply-add remains.
#[target_feature(enable = "avx2,fma,f16c")]
fn tile<const R: usize, const T: usize>(ty: GgmlType, n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut TileOut) {
    let wb = ty.block_bytes();
    let nb = n / 256;
    let has_min = matches!(ty, GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::Q5_K);
    // The next tile's rows, at the same super-block, are prefetched while
    // this one runs (see block32's `tile`).
    let ahead = (R * nb * wb).max(super::PREFETCH_BYTES);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut mins = [[0.0f32; T]; R];
    for sb in 0..nb {
        let mut levels = [[_mm256_setzero_si256(); 8]; R];
        let mut ks = [KScales { scale: [0; 16], min: [0; 16], d: 0.0, dmin: 0.0 }; R];
        let mut scales = [[_mm256_setzero_si256(); 8]; R];
        for r in 0..R {
            for line in (0..wb).step_by(64) {
                // A hint only: it never faults, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(w[r].as_ptr().wrapping_add(sb * wb + ahead + line).cast());
            }
            ks[r] = unpack(ty, &w[r][sb * wb..(sb + 1) * wb], &mut levels[r]);
            scales[r] = chunk_scales(&ks[r]);
        }
        for t in 0..T {
            let blk = &a[t][sb * ACT_BYTES..(sb + 1) * ACT_BYTES];
            let da = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
            let qa: [__m256i; 8] = core::array::from_fn(|c| load32(&blk[4 + 32 * c..]));
            for r in 0..R {
                let mut sums = _mm256_setzero_si256();
                for c in 0..8 {
                    let x = levels[r][c];
                    let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(qa[c], x));
                    sums = _mm256_add_epi32(sums, _mm256_madd_epi16(pairs, scales[r][c]));
                }
                let k = &ks[r];
                acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(k.d * da), _mm256_cvtepi32_ps(sums), acc[r][t]);
                if has_min {
                    mins[r][t] += k.dmin * da * min_correction(k, &blk[260..292]) as f32;
                }
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            out[r][t] = hsum(acc[r][t]) - mins[r][t];
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn tile_any(ty: GgmlType, n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut TileOut) {
    tile_by_shape!(tile [] [ty] n, w, a, out)
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
