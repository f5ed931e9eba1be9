//! Row-parallel products for Q4_K and Q6_K, the types of "Q4_K_M" files,
//! laid out as gemm.rs lays out the 32-element types: 8 weight rows across the
//! vector lanes, each super-block transposed once per call, and each
//! token's 4 activation bytes, broadcast, meeting 4 weights of all 8 rows
//! in one instruction. The rows' 6-bit scales and minimums are decoded
//! together in the lanes, and stay integers until the super-block's end.

use super::gemm::{broadcast4, bytes_at, load16, transpose4};
use super::PREFETCH_BYTES;
use crate::kernels::{GemmFn, GEMM_ROWS, GEMM_TOKENS};
use crate::quant::GgmlType;
use core::arch::x86_64::*;

/// Q4_K super-block: f16 d and dmin, 12 bytes of packed 6-bit scales and
/// minimums, then 128 bytes of nibbles.
pub(super) const BLOCK_BYTES: usize = 144;
/// Q6_K super-block: 128 bytes of low nibbles, 64 of 2-bit high parts, 16
/// i8 scales (one per 16 levels), f16 d.
pub(super) const Q6K_BYTES: usize = 210;
/// Q8_K activation block: f32 scale, 256 levels, 16 i16 sums of 16 levels.
pub(super) const ACT_BYTES: usize = 292;
pub(super) const ACT_SUMS_AT: usize = 260;

/// The 8 rows' super-block header at `at`: d and dmin in f32 lanes, and
/// per lane the row's eight 6-bit scales and eight minimums as bytes:
/// `[scales 0..4, scales 4..8, mins 0..4, mins 4..8]`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn header(w: &[&[u8]; GEMM_ROWS], at: usize) -> (__m256, __m256, [__m256i; 4]) {
    let [heads, q0, q1, q2] = transposed16(w, at);
    let d = _mm256_and_si256(heads, _mm256_set1_epi32(0xFFFF));
    let dmin = _mm256_srli_epi32(heads, 16);
    // 8 d's then 8 dmin's as f16, widened together.
    let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(d, dmin));
    let d = _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
    let dmin = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(packed));
    // Scales and minimums 0..4 are the low 6 bits of bytes 0..4 and 4..8;
    // 4..8 take their low 4 bits from bytes 8..12 and their top 2 from the
    // spare high bits of bytes 0..8.
    let (six, four, two) = (_mm256_set1_epi8(0x3F), _mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x03));
    let (top2_scales, top2_mins) = (_mm256_srli_epi32(q0, 6), _mm256_srli_epi32(q1, 6));
    let top2_scales = _mm256_slli_epi32(_mm256_and_si256(top2_scales, two), 4);
    let top2_mins = _mm256_slli_epi32(_mm256_and_si256(top2_mins, two), 4);
    let scales_hi = _mm256_or_si256(_mm256_and_si256(q2, four), top2_scales);
    let mins_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(q2, 4), four), top2_mins);
    (d, dmin, [_mm256_and_si256(q0, six), scales_hi, _mm256_and_si256(q1, six), mins_hi])
}

/// 8 rows' Q4_K super-block, unpacked: per 32-level sub-block, its 8
/// groups of 4 levels per row; the scales (sub-blocks 0..4, 4..8) as bytes
/// per lane; d and dmin; the minimums as [`min_pairs`] gives them.
struct Q4kBlock {
    groups: [[__m256i; 8]; 8],
    scales: [__m256i; 2],
    d: __m256,
    dmin: __m256,
    mins: [__m256i; 4],
}

/// Chunk `c` (32 bytes per row) of the super-block at `at`: the groups of
/// sub-block `2c` (low nibbles), then those of `2c + 1` (high nibbles).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn unpack_chunk(rows: &[&[u8]; GEMM_ROWS], at: usize, c: usize) -> [[__m256i; 8]; 2] {
    let (qs, low) = (at + 16 + 32 * c, _mm256_set1_epi8(0x0F));
    let mut halves = [[_mm256_setzero_si256(); 8]; 2];
    for (half, base) in [(0, qs), (4, qs + 16)] {
        let dwords = transposed16(rows, base);
        for g in 0..4 {
            halves[0][half + g] = _mm256_and_si256(dwords[g], low);
            halves[1][half + g] = _mm256_and_si256(_mm256_srli_epi16(dwords[g], 4), low);
        }
    }
    halves
}

/// The whole super-block at `at`, for prompts: met by several passes of tokens.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn unpack_q4k(rows: &[&[u8]; GEMM_ROWS], at: usize) -> Q4kBlock {
    let (d, dmin, [scales_lo, scales_hi, mins_lo, mins_hi]) = header(rows, at);
    let mut groups = [[_mm256_setzero_si256(); 8]; 8];
    for c in 0..4 {
        [groups[2 * c], groups[2 * c + 1]] = unpack_chunk(rows, at, c);
    }
    Q4kBlock { groups, scales: [scales_lo, scales_hi], d, dmin, mins: min_pairs(mins_lo, mins_hi) }
}

/// A token's super-block sum added into `acc`: `d · isum - dmin · mins`
/// nearly cancel, so the difference takes one rounding (a fused
/// multiply-subtract), then one more for the activation's scale.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q4k_scaled(act: &[u8], isum: __m256i, d: __m256, dmin: __m256, mins: &[__m256i; 4], acc: __m256) -> __m256 {
    let da = _mm256_set1_ps(f32::from_le_bytes(bytes_at::<4>(act, 0)));
    let m = _mm256_mul_ps(_mm256_cvtepi32_ps(level_sums(act, mins)), dmin);
    _mm256_fmadd_ps(_mm256_fmsub_ps(_mm256_cvtepi32_ps(isum), d, m), da, acc)
}

/// Each row prefetches the row 8 below it (the next call's) at the
/// `block_bytes` block at `at`, of `nb` per row.
#[inline]
#[target_feature(enable = "avx2")]
fn prefetch_next(rows: &[&[u8]; GEMM_ROWS], at: usize, block_bytes: usize, nb: usize) {
    let ahead = (GEMM_ROWS * nb * block_bytes).max(PREFETCH_BYTES);
    for row in rows {
        for line in (0..block_bytes).step_by(64) {
            // A hint only: it never faults, whatever the address.
            _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().wrapping_add(at + ahead + line).cast());
        }
    }
}

/// Byte `k` of each dword of `v` as a dword (`PAIR`: in both i16 halves).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn pick_byte<const PAIR: bool>(v: __m256i, k: usize) -> __m256i {
    let mask = |i: i32| {
        let b = 4 * i + k as i32;
        if PAIR {
            b | 0x80 << 8 | b << 16 | 0x80 << 24
        } else {
            b | 0x8080_8000_u32 as i32
        }
    };
    let lane = _mm_setr_epi32(mask(0), mask(1), mask(2), mask(3));
    _mm256_shuffle_epi8(v, _mm256_set_m128i(lane, lane))
}

/// The rows' minimums as i16 pairs `(0, 2), (1, 3), (4, 6), (5, 7)`, to
/// meet the activation's 32-level sums in that order ([`level_sums`]).
#[inline]
#[target_feature(enable = "avx2")]
fn min_pairs(mins_lo: __m256i, mins_hi: __m256i) -> [__m256i; 4] {
    let even = _mm256_set1_epi32(0x00FF_00FF);
    let (odd_lo, odd_hi) = (_mm256_srli_epi32(mins_lo, 8), _mm256_srli_epi32(mins_hi, 8));
    [
        _mm256_and_si256(mins_lo, even),
        _mm256_and_si256(odd_lo, even),
        _mm256_and_si256(mins_hi, even),
        _mm256_and_si256(odd_hi, even),
    ]
}

/// `sum_j mins[j] * (sum of the activation's levels in sub-block j)`, per
/// row lane. A sub-block's 32 levels sum to at most 32 · 128, an i16.
#[inline]
#[target_feature(enable = "avx2")]
fn level_sums(blk: &[u8], mins: &[__m256i; 4]) -> __m256i {
    let sums16 = _mm_hadd_epi16(load16(blk, ACT_SUMS_AT), load16(blk, ACT_SUMS_AT + 16));
    let order = _mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15);
    let pairs = _mm256_broadcastsi128_si256(_mm_shuffle_epi8(sums16, order));
    let a = _mm256_madd_epi16(mins[0], _mm256_shuffle_epi32::<0x00>(pairs));
    let b = _mm256_madd_epi16(mins[1], _mm256_shuffle_epi32::<0x55>(pairs));
    let c = _mm256_madd_epi16(mins[2], _mm256_shuffle_epi32::<0xAA>(pairs));
    let e = _mm256_madd_epi16(mins[3], _mm256_shuffle_epi32::<0xFF>(pairs));
    _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, e))
}

/// Byte `k` of each dword of `v`, sign-extended to a dword (`PAIR`: to
/// both i16 halves).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn pick_signed<const PAIR: bool>(v: __m256i, k: usize) -> __m256i {
    let mask = |i: i32| {
        let b = 4 * i + k as i32;
        if PAIR {
            0x80 | b << 8 | 0x80 << 16 | b << 24
        } else {
            0x0080_8080 | b << 24
        }
    };
    let lane = _mm_setr_epi32(mask(0), mask(1), mask(2), mask(3));
    let high = _mm256_shuffle_epi8(v, _mm256_set_m128i(lane, lane));
    if PAIR {
        _mm256_srai_epi16(high, 8)
    } else {
        _mm256_srai_epi32(high, 24)
    }
}

/// 16 bytes at `at` of each of the 8 rows, as 4 vectors: vector `g` holds
/// bytes `4g..4g + 4` of row `r` in lane `r`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn transposed16(w: &[&[u8]; GEMM_ROWS], at: usize) -> [__m256i; 4] {
    let mut rows = [_mm256_setzero_si256(); 4];
    for r in 0..4 {
        rows[r] = _mm256_set_m128i(load16(w[r + 4], at), load16(w[r], at));
    }
    transpose4(rows)
}

/// The 8 rows' Q6_K levels `128h + 32k + l0..+ 16` for each `k` (scale
/// group `8h + 2k + l0 / 16`), 4 groups of 4 per row. Level `128h + 32k +
/// l` (l < 32) takes a nibble of `ql[64h + 32(k % 2) + l]` (the high one
/// for k >= 2) and bits 2k, 2k + 1 of `qh[32h + l]`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn q6k_levels(rows: &[&[u8]; GEMM_ROWS], at: usize, h: usize, l0: usize) -> [[__m256i; 4]; 4] {
    let (low4, high2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    let ql_a = transposed16(rows, at + 64 * h + l0);
    let ql_b = transposed16(rows, at + 64 * h + 32 + l0);
    let qh = transposed16(rows, at + 128 + 32 * h + l0);
    let mut levels = [[_mm256_setzero_si256(); 4]; 4];
    for g in 0..4 {
        let (a, b, hi) = (ql_a[g], ql_b[g], qh[g]);
        let high = [_mm256_slli_epi16(hi, 4), _mm256_slli_epi16(hi, 2), hi, _mm256_srli_epi16(hi, 2)];
        let low = [a, b, _mm256_srli_epi16(a, 4), _mm256_srli_epi16(b, 4)];
        for k in 0..4 {
            levels[k][g] = _mm256_or_si256(_mm256_and_si256(low[k], low4), _mm256_and_si256(high[k], high2));
        }
    }
    levels
}

/// `sum_s scale[s] * (sum of the activation's 16 levels of group s)` per
/// row lane, from the rows' i8 scales (`scales[k]`: scales `4k..4k + 4`).
#[inline]
#[target_feature(enable = "avx2")]
fn q6k_level_sums(blk: &[u8], scales: &[__m256i; 4]) -> __m256i {
    // Sums in the order the scale pairs below take them: per 8 sums,
    // (0, 2), (1, 3), (4, 6), (5, 7).
    let order = _mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15);
    let sums = _mm256_set_m128i(load16(blk, ACT_SUMS_AT + 16), load16(blk, ACT_SUMS_AT));
    let sums = _mm256_shuffle_epi8(sums, _mm256_set_m128i(order, order));
    let mut total = _mm256_setzero_si256();
    for (k, &v) in scales.iter().enumerate() {
        // Scales 4k and 4k + 2 as i16 pairs, then 4k + 1 and 4k + 3.
        let even = _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8);
        let odd = _mm256_srai_epi16(v, 8);
        for (j, pairs) in [(2 * k, even), (2 * k + 1, odd)] {
            let sums_j = _mm256_permutevar8x32_epi32(sums, _mm256_set1_epi32(j as i32));
            total = _mm256_add_epi32(total, _mm256_madd_epi16(pairs, sums_j));
        }
    }
    total
}

/// A Q6_K scale group (16 levels, 4 groups of 4 per row, unsigned 0..64)
/// against a token's 16 levels `qa`, times each row's scale (byte `k` of
/// `scales`): two groups of pairs reach 2 · 2 · 63 · 128 = 32256, so each
/// two are widened by the scales' `madd`.
#[inline]
#[target_feature(enable = "avx2")]
fn group16_maddubs(groups: &[__m256i; 4], qa: &[u8], scales: __m256i, k: usize) -> __m256i {
    let mut pairs = [_mm256_setzero_si256(); 4];
    for g in 0..4 {
        pairs[g] = _mm256_maddubs_epi16(groups[g], broadcast4(qa, 4 * g));
    }
    let scale = pick_signed::<true>(scales, k);
    let low = _mm256_madd_epi16(_mm256_add_epi16(pairs[0], pairs[1]), scale);
    let high = _mm256_madd_epi16(_mm256_add_epi16(pairs[2], pairs[3]), scale);
    _mm256_add_epi32(low, high)
}

/// One sub-block (32 levels, 8 groups of 4 per row) against a token's 32
/// levels `qa`, times each row's scale (byte `k` of `scales`), by
/// `maddubs`: 8 groups of pairs add up to at most 8 · 2 · 15 · 128 =
/// 30720, an i16, and one `madd` by the scales widens them.
#[inline]
#[target_feature(enable = "avx2")]
fn sub_block_maddubs(groups: &[__m256i; 8], qa: &[u8], scales: __m256i, k: usize) -> __m256i {
    let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for g in (0..8).step_by(2) {
        even = _mm256_add_epi16(even, _mm256_maddubs_epi16(groups[g], broadcast4(qa, 4 * g)));
        odd = _mm256_add_epi16(odd, _mm256_maddubs_epi16(groups[g + 1], broadcast4(qa, 4 * g + 4)));
    }
    _mm256_madd_epi16(_mm256_add_epi16(even, odd), pick_byte::<true>(scales, k))
}

/// The same by `dpbusd` (`$dot`) in i32 lanes, then a multiply by the scales.
macro_rules! sub_block_dpbusd {
    ($name:ident, $features:literal, $dot:path) => {
        #[inline]
        #[target_feature(enable = $features)]
        fn $name(groups: &[__m256i; 8], qa: &[u8], scales: __m256i, k: usize) -> __m256i {
            let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for g in (0..8).step_by(2) {
                even = $dot(even, groups[g], broadcast4(qa, 4 * g));
                odd = $dot(odd, groups[g + 1], broadcast4(qa, 4 * g + 4));
            }
            _mm256_mullo_epi32(_mm256_add_epi32(even, odd), pick_byte::<false>(scales, k))
        }
    };
}

sub_block_dpbusd!(sub_block_avxvnni, "avx2,avxvnni", _mm256_dpbusd_avx_epi32);
sub_block_dpbusd!(sub_block_avx512, "avx2,avx512f,avx512vl,avx512vnni", _mm256_dpbusd_epi32);

/// [`group16_maddubs`] by `dpbusd` (`$dot`).
macro_rules! group16_dpbusd {
    ($name:ident, $features:literal, $dot:path) => {
        #[inline]
        #[target_feature(enable = $features)]
        fn $name(groups: &[__m256i; 4], qa: &[u8], scales: __m256i, k: usize) -> __m256i {
            let even = $dot(_mm256_setzero_si256(), groups[0], broadcast4(qa, 0));
            let odd = $dot(_mm256_setzero_si256(), groups[1], broadcast4(qa, 4));
            let (even, odd) = ($dot(even, groups[2], broadcast4(qa, 8)), $dot(odd, groups[3], broadcast4(qa, 12)));
            _mm256_mullo_epi32(_mm256_add_epi32(even, odd), pick_signed::<false>(scales, k))
        }
    };
}

group16_dpbusd!(group16_avxvnni, "avx2,avxvnni", _mm256_dpbusd_avx_epi32);
group16_dpbusd!(group16_avx512, "avx2,avx512f,avx512vl,avx512vnni", _mm256_dpbusd_epi32);

/// The stamped-out kernels, with `$sub` taking one Q4_K sub-block and
/// `$group16` one Q6_K scale group.
macro_rules! gemm_k_kernels {
    ($features:literal, $sub:path, $group16:path, max_tokens: $max:literal) => {
        use super::*;

        /// Q4_K, `T` tokens; `prefetch` as [`GemmFn`] says.
        #[target_feature(enable = $features)]
        fn gemm_q4k<const T: usize>(
            n: usize,
            w: &[&[u8]; GEMM_ROWS],
            a: &[&[u8]],
            out: &mut [[f32; GEMM_ROWS]],
            prefetch: bool,
        ) {
            let nb = n / 256;
            let rows: [&[u8]; GEMM_ROWS] = core::array::from_fn(|r| &w[r][..nb * BLOCK_BYTES]);
            let toks: [&[u8]; T] = core::array::from_fn(|t| &a[t][..nb * ACT_BYTES]);
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..nb {
                let at = b * BLOCK_BYTES;
                if prefetch {
                    prefetch_next(&rows, at, BLOCK_BYTES, nb);
                }
                let (d, dmin, [scales_lo, scales_hi, mins_lo, mins_hi]) = header(&rows, at);
                let mut isum = [_mm256_setzero_si256(); T];
                for c in 0..4 {
                    let [lo, hi] = unpack_chunk(&rows, at, c);
                    let scales = if c < 2 { scales_lo } else { scales_hi };
                    for t in 0..T {
                        let qa = &toks[t][b * ACT_BYTES + 4 + 64 * c..][..64];
                        let s0 = $sub(&lo, &qa[..32], scales, (2 * c) % 4);
                        let s1 = $sub(&hi, &qa[32..], scales, (2 * c + 1) % 4);
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(s0, s1));
                    }
                }
                let mins = min_pairs(mins_lo, mins_hi);
                for t in 0..T {
                    acc[t] = q4k_scaled(&toks[t][b * ACT_BYTES..(b + 1) * ACT_BYTES], isum[t], d, dmin, &mins, acc[t]);
                }
            }
            for t in 0..T {
                // SAFETY: `out[t]` is 8 writable f32s; unaligned store.
                unsafe { _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]) };
            }
        }

        /// `T` tokens against one unpacked super-block (`b`), into `acc`.
        #[inline]
        #[target_feature(enable = $features)]
        fn q4k_tokens<const T: usize>(blk: &Q4kBlock, toks: &[&[u8]], b: usize, acc: &mut [__m256]) {
            let mut isum = [_mm256_setzero_si256(); T];
            for (j, groups) in blk.groups.iter().enumerate() {
                for t in 0..T {
                    let qa = &toks[t][b * ACT_BYTES + 4 + 32 * j..][..32];
                    isum[t] = _mm256_add_epi32(isum[t], $sub(groups, qa, blk.scales[j / 4], j % 4));
                }
            }
            for t in 0..T {
                acc[t] = q4k_scaled(
                    &toks[t][b * ACT_BYTES..(b + 1) * ACT_BYTES],
                    isum[t],
                    blk.d,
                    blk.dmin,
                    &blk.mins,
                    acc[t],
                );
            }
        }

        /// Q4_K, more than two passes of tokens: each super-block unpacked
        /// once, then met by the tokens in passes of at most `$max` (with
        /// 16 registers this wins a sixth of a prompt's time; with 32, two
        /// passes re-unpacking in registers beat one unpacking to memory).
        #[target_feature(enable = $features)]
        fn gemm_q4k_unpacked(
            n: usize,
            w: &[&[u8]; GEMM_ROWS],
            a: &[&[u8]],
            out: &mut [[f32; GEMM_ROWS]; GEMM_TOKENS],
            prefetch: bool,
        ) {
            let nb = n / 256;
            let rows: [&[u8]; GEMM_ROWS] = core::array::from_fn(|r| &w[r][..nb * BLOCK_BYTES]);
            let mut acc = [_mm256_setzero_ps(); GEMM_TOKENS];
            for b in 0..nb {
                let at = b * BLOCK_BYTES;
                if prefetch {
                    prefetch_next(&rows, at, BLOCK_BYTES, nb);
                }
                let blk = unpack_q4k(&rows, at);
                let mut done = 0;
                while done < a.len() {
                    let take = (a.len() - done).min($max);
                    let (toks, acc) = (&a[done..done + take], &mut acc[done..done + take]);
                    match take {
                        1 => q4k_tokens::<1>(&blk, toks, b, acc),
                        2 => q4k_tokens::<2>(&blk, toks, b, acc),
                        3 => q4k_tokens::<3>(&blk, toks, b, acc),
                        4 => q4k_tokens::<4>(&blk, toks, b, acc),
                        5 => q4k_tokens::<5>(&blk, toks, b, acc),
                        6 => q4k_tokens::<6>(&blk, toks, b, acc),
                        7 => q4k_tokens::<7>(&blk, toks, b, acc),
                        _ => q4k_tokens::<8>(&blk, toks, b, acc),
                    }
                    done += take;
                }
            }
            for (o, acc) in out.iter_mut().zip(&acc).take(a.len()) {
                // SAFETY: `o` is 8 writable f32s; unaligned store.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *acc) };
            }
        }

        /// Q6_K, `T` tokens; `prefetch` as [`GemmFn`] says.
        #[target_feature(enable = $features)]
        fn gemm_q6k<const T: usize>(
            n: usize,
            w: &[&[u8]; GEMM_ROWS],
            a: &[&[u8]],
            out: &mut [[f32; GEMM_ROWS]],
            prefetch: bool,
        ) {
            let nb = n / 256;
            let rows: [&[u8]; GEMM_ROWS] = core::array::from_fn(|r| &w[r][..nb * Q6K_BYTES]);
            let toks: [&[u8]; T] = core::array::from_fn(|t| &a[t][..nb * ACT_BYTES]);
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..nb {
                let at = b * Q6K_BYTES;
                if prefetch {
                    prefetch_next(&rows, at, Q6K_BYTES, nb);
                }
                let scales = transposed16(&rows, at + 192);
                let d: [u16; GEMM_ROWS] =
                    core::array::from_fn(|r| u16::from_le_bytes(bytes_at::<2>(rows[r], at + 208)));
                // SAFETY: `d` is 16 readable bytes; unaligned load.
                let d = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(d.as_ptr().cast()) });
                let mut isum = [_mm256_setzero_si256(); T];
                for h in 0..2 {
                    for l0 in [0, 16] {
                        let levels = q6k_levels(&rows, at, h, l0);
                        for t in 0..T {
                            for k in 0..4 {
                                let group = 8 * h + 2 * k + l0 / 16;
                                let qa = &toks[t][b * ACT_BYTES + 4 + 128 * h + 32 * k + l0..][..16];
                                let s = $group16(&levels[k], qa, scales[group / 4], group % 4);
                                isum[t] = _mm256_add_epi32(isum[t], s);
                            }
                        }
                    }
                }
                for t in 0..T {
                    let blk = &toks[t][b * ACT_BYTES..(b + 1) * ACT_BYTES];
                    // Levels are stored plus 32: take 32 · scale · (the
                    // group's level sum) off, still in integers.
                    let offset = _mm256_slli_epi32(q6k_level_sums(blk, &scales), 5);
                    let sums = _mm256_cvtepi32_ps(_mm256_sub_epi32(isum[t], offset));
                    let da = _mm256_set1_ps(f32::from_le_bytes(bytes_at::<4>(blk, 0)));
                    acc[t] = _mm256_fmadd_ps(sums, _mm256_mul_ps(d, da), acc[t]);
                }
            }
            for t in 0..T {
                // SAFETY: `out[t]` is 8 writable f32s; unaligned store.
                unsafe { _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]) };
            }
        }

        /// One pass of `T` tokens through the type's kernel.
        #[inline]
        #[target_feature(enable = $features)]
        fn pass<const Q6K: bool, const T: usize>(
            n: usize,
            w: &[&[u8]; GEMM_ROWS],
            a: &[&[u8]],
            out: &mut [[f32; GEMM_ROWS]],
            prefetch: bool,
        ) {
            if Q6K {
                gemm_q6k::<T>(n, w, a, out, prefetch)
            } else {
                gemm_q4k::<T>(n, w, a, out, prefetch)
            }
        }

        /// Any number of tokens up to [`GEMM_TOKENS`], in passes of at most `$max`.
        #[target_feature(enable = $features)]
        pub(super) fn gemm_any<const Q6K: bool>(
            n: usize,
            w: &[&[u8]; GEMM_ROWS],
            a: &[&[u8]],
            out: &mut [[f32; GEMM_ROWS]; GEMM_TOKENS],
            prefetch: bool,
        ) {
            if !Q6K && a.len() > 2 * $max {
                return gemm_q4k_unpacked(n, w, a, out, prefetch);
            }
            token_passes!(a, out, prefetch, $max, pass::<Q6K>(n, w));
        }
    };
}

mod avx2 {
    gemm_k_kernels!("avx2,fma,f16c", sub_block_maddubs, group16_maddubs, max_tokens: 4);
}

mod vnni {
    gemm_k_kernels!("avx2,fma,f16c,avxvnni", sub_block_avxvnni, group16_avxvnni, max_tokens: 4);
}

/// 32 vector registers: 8 tokens' accumulators beside the weight groups.
mod avx512 {
    gemm_k_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", sub_block_avx512, group16_avx512, max_tokens: 8);
}

/// The Q4_K and Q6_K row-parallel products for the instruction set of module `$m`.
macro_rules! q4k_gemm {
    ($m:ident, $ty:expr) => {
        // SAFETY: the kernel table asks for module `$m`'s kernels only when
        // the CPU has its features.
        match $ty {
            GgmlType::Q4_K => Some((|n, w, a, o, p| unsafe { $m::gemm_any::<false>(n, w, a, o, p) }) as GemmFn),
            GgmlType::Q6_K => Some((|n, w, a, o, p| unsafe { $m::gemm_any::<true>(n, w, a, o, p) }) as GemmFn),
            _ => None,
        }
    };
}

pub(super) fn gemm_k_avx2(ty: GgmlType) -> Option<GemmFn> {
    q4k_gemm!(avx2, ty)
}

pub(super) fn gemm_k_vnni(ty: GgmlType) -> Option<GemmFn> {
    q4k_gemm!(vnni, ty)
}

pub(super) fn gemm_k_avx512(ty: GgmlType) -> Option<GemmFn> {
    q4k_gemm!(avx512, ty)
}
