//! AVX2 tile kernels for the 32-element block types. One pass multiplies `R`
//! weight rows by `T` activation rows, so every unpacked weight block and
//! every loaded activation block is reused from registers `T` (or `R`) times,
//! and the `R * T` accumulator chains run independently.

use super::{f16_at, hsum, load32, nibbles, PREFETCH_BYTES};
use crate::kernels::shared::{layout, IQ4_NL, Q4_0, Q4_1, Q5_0, Q5_1};
use crate::kernels::{TileFn, TileOut};
use crate::quant::GgmlType;
use core::arch::x86_64::*;

/// Bit `j` of the 4-byte little-endian `qh` as `0x10` (set) or `0` in byte `j`.
#[inline]
#[target_feature(enable = "avx2")]
fn fifth_bits(qh: &[u8]) -> __m256i {
    let bits = i32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        ),
    );
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// One weight block as 32 levels plus its scale and minimum.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn unpack<const TY: u8>(wb: &[u8]) -> (__m256i, f32, f32) {
    match TY {
        Q4_0 => (_mm256_sub_epi8(nibbles(&wb[2..]), _mm256_set1_epi8(8)), f16_at(wb, 0), 0.0),
        Q4_1 => (nibbles(&wb[4..]), f16_at(wb, 0), f16_at(wb, 2)),
        Q5_0 => {
            let q = _mm256_or_si256(nibbles(&wb[6..]), fifth_bits(&wb[2..6]));
            (_mm256_sub_epi8(q, _mm256_set1_epi8(16)), f16_at(wb, 0), 0.0)
        }
        Q5_1 => (_mm256_or_si256(nibbles(&wb[8..]), fifth_bits(&wb[4..8])), f16_at(wb, 0), f16_at(wb, 2)),
        IQ4_NL => {
            let l = crate::quant::blocks::IQ4NL_LEVELS;
            let table = _mm256_setr_epi8(
                l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7], l[8], l[9], l[10], l[11], l[12], l[13], l[14], l[15],
                l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7], l[8], l[9], l[10], l[11], l[12], l[13], l[14], l[15],
            );
            (_mm256_shuffle_epi8(table, nibbles(&wb[2..])), f16_at(wb, 0), 0.0)
        }
        _ => (load32(&wb[2..]), f16_at(wb, 0), 0.0),
    }
}

/// Makes `x` non-negative and moves its sign onto `y`, so unsigned x signed
/// byte products (`maddubs`, `dpbusd`) compute signed x signed.
#[inline]
#[target_feature(enable = "avx2")]
fn sign_to_y(x: __m256i, y: __m256i, signed: bool) -> (__m256i, __m256i) {
    if signed {
        (_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
    } else {
        (x, y)
    }
}

/// The tile kernels, stamped out once per instruction set: `$features` are
/// the target features and `$sum4` sums each group of four byte products
/// into one i32 lane.
macro_rules! tile_kernels {
    ($features:literal, $sum4:expr, halve_tiles: $halve:literal) => {
        use super::*;

        /// Products of 32 byte pairs, summed into 8 f32 lanes.
        #[inline]
        #[target_feature(enable = $features)]
        fn sum_products(x: __m256i, y: __m256i, signed: bool) -> __m256 {
            let (ux, sy) = sign_to_y(x, y, signed);
            _mm256_cvtepi32_ps($sum4(ux, sy))
        }

        /// `out[r][t] = dot(w[r], a[t])` for `r < R`, `t < T`.
        #[target_feature(enable = $features)]
        fn tile<const TY: u8, const R: usize, const T: usize>(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut TileOut) {
            let (wb, ab, has_min) = layout(TY);
            let signed = !has_min;
            let qa_at = if signed { 2 } else { 4 };
            let nb = n / 32;
            // Plain loops, not `array::from_fn`, which does not inline here.
            let (mut wr, mut ar): ([&[u8]; R], [&[u8]; T]) = ([&[]; R], [&[]; T]);
            for r in 0..R {
                wr[r] = &w[r][..nb * wb];
            }
            for t in 0..T {
                ar[t] = &a[t][..nb * ab];
            }
            let (w, a) = (wr, ar);
            // Each row prefetches the row `R` below it, at the same block: the
            // next tile's rows arrive while this tile runs. (A fixed distance
            // landed inside this tile's own rows for rows over 1 KiB, and
            // 4096-wide Q4_0 rows streamed at half speed.)
            let ahead = (R * nb * wb).max(PREFETCH_BYTES);
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let mut mins = [[0.0f32; T]; R];
            for b in 0..nb {
                let mut wq = [_mm256_setzero_si256(); R];
                let mut dw = [_mm256_setzero_ps(); R];
                let mut mw = [0.0f32; R];
                for r in 0..R {
                    // A hint only: it never faults, whatever the address.
                    _mm_prefetch::<_MM_HINT_T0>(w[r].as_ptr().wrapping_add(b * wb + ahead).cast());
                    let (q, d, m) = unpack::<TY>(&w[r][b * wb..(b + 1) * wb]);
                    (wq[r], dw[r], mw[r]) = (q, _mm256_set1_ps(d), m);
                }
                for t in 0..T {
                    let blk = &a[t][b * ab..(b + 1) * ab];
                    let da = _mm256_set1_ps(f16_at(blk, 0));
                    let qa = load32(&blk[qa_at..]);
                    let sa = if signed { 0.0 } else { f16_at(blk, 2) };
                    for r in 0..R {
                        let p = sum_products(wq[r], qa, signed);
                        acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], da), p, acc[r][t]);
                        if !signed {
                            mins[r][t] += mw[r] * sa;
                        }
                    }
                }
            }
            for r in 0..R {
                for t in 0..T {
                    out[r][t] = hsum(acc[r][t]) + mins[r][t];
                }
            }
        }

        /// Any shape, by whole 4x4 / 4x1 / 1x4 tiles where possible and 1x1
        /// elsewhere. With 16 vector registers a 4x4 tile's 16 accumulators
        /// spill, so there it runs as two 2x4 tiles (each weight block is
        /// still unpacked once; the activations, hot in L1, load twice).
        #[target_feature(enable = $features)]
        pub(super) fn tile_any<const TY: u8>(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut TileOut) {
            if $halve && w.len() == 4 && a.len() == 4 {
                let mut half = [[0.0; 4]; 4];
                tile::<TY, 2, 4>(n, &w[..2], a, out);
                tile::<TY, 2, 4>(n, &w[2..], a, &mut half);
                out[2..].copy_from_slice(&half[..2]);
                return;
            }
            tile_by_shape!(tile [TY] [] n, w, a, out)
        }
    };
}

mod avx2 {
    tile_kernels!("avx2,fma,f16c", |x, y| _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1)), halve_tiles: true);
}

mod vnni {
    tile_kernels!("avx2,fma,f16c,avxvnni", |x, y| _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), x, y), halve_tiles: true);
}

/// 256-bit vectors still, but AVX-512VL's 32 registers hold a 4x4 tile's
/// accumulators without spilling.
mod avx512 {
    tile_kernels!(
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        |x, y| _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y),
        halve_tiles: false
    );
}

/// The AVX2 tile kernel for `ty`, if it is a 32-element block type.
pub(in crate::kernels) fn tile_avx2(ty: GgmlType) -> Option<TileFn> {
    block32_table!(avx2, ty)
}

/// The AVX-512 (VL, VNNI) tile kernel for `ty`, if it is a 32-element block type.
pub(in crate::kernels) fn tile_avx512(ty: GgmlType) -> Option<TileFn> {
    block32_table!(avx512, ty)
}

/// The AVX-VNNI tile kernel for `ty` (AVX2 plus `vpdpbusd`), if it is a 32-element block type.
pub(in crate::kernels) fn tile_vnni(ty: GgmlType) -> Option<TileFn> {
    block32_table!(vnni, ty)
}
