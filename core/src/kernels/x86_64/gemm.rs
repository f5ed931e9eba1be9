//! Products of 8 weight rows by several tokens with the rows across the
//! vector lanes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): each block of the 8 rows is transposed
//! once into 8 vectors of "4 consecutive weights of each row", so one
//! `dpbusd` (or `maddubs`) per 4 columns, with that token's 4 activation
//! bytes broadcast, adds into all 8 rows' sums at once. A block's integer
//! sums stay integers until its scales apply, and nothing needs a
//! horizontal sum. The transpose is paid once per block for every token of
//! the call.

use super::PREFETCH_BYTES;
use crate::kernels::shared::{layout, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
use crate::kernels::{GemmFn, GEMM_ROWS, GEMM_TOKENS};
use crate::quant::GgmlType;
use core::arch::x86_64::*;

/// `N` bytes of `bytes` at `at`.
#[inline]
pub(super) fn bytes_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut raw = [0u8; N];
    raw.copy_from_slice(&bytes[at..at + N]);
    raw
}

/// 16 bytes at `at`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load16(bytes: &[u8], at: usize) -> __m128i {
    let raw = bytes_at::<16>(bytes, at);
    // SAFETY: `raw` is 16 readable bytes; unaligned load.
    unsafe { _mm_loadu_si128(raw.as_ptr().cast()) }
}

/// 4 activation bytes at `at`, in every dword lane.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn broadcast4(qa: &[u8], at: usize) -> __m256i {
    _mm256_set1_epi32(i32::from_le_bytes(bytes_at::<4>(qa, at)))
}

/// Dword `j` of each of `rows` (rows 0..3 in the low half, 4..7 in the
/// high half, as `rows[r]` holds row `r` and row `r + 4` there).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn transpose4(rows: [__m256i; 4]) -> [__m256i; 4] {
    let (lo01, hi01) = (_mm256_unpacklo_epi32(rows[0], rows[1]), _mm256_unpackhi_epi32(rows[0], rows[1]));
    let (lo23, hi23) = (_mm256_unpacklo_epi32(rows[2], rows[3]), _mm256_unpackhi_epi32(rows[2], rows[3]));
    [
        _mm256_unpacklo_epi64(lo01, lo23),
        _mm256_unpackhi_epi64(lo01, lo23),
        _mm256_unpacklo_epi64(hi01, hi23),
        _mm256_unpackhi_epi64(hi01, hi23),
    ]
}

/// Block `$b` of 8 rows (`$w`) of type `$ty`: `groups[j]` holds, in lane
/// `r`, row `r`'s weights `4j..4j+4` (unsigned levels for Q4_1, signed for
/// the others); then the rows' scales and (Q4_1) minimums. A macro, so it
/// is always inlined into the kernel (as a function LLVM kept it out of
/// line, a call and a 300-byte return per block).
macro_rules! unpack8 {
    ($ty:ident, $w:expr, $b:expr) => {{
        let (w, b): (&[&[u8]; GEMM_ROWS], usize) = ($w, $b);
        let (wb, _, has_min) = layout($ty);
        let at = b * wb;
        let mut groups = [_mm256_setzero_si256(); 8];
        if $ty == Q8_0 {
            // Two transposes of 4 x 4 dwords per half: weights 0..16, then 16..32.
            for (half, base) in [(0, at + 2), (4, at + 18)] {
                let mut rows = [_mm256_setzero_si256(); 4];
                for r in 0..4 {
                    rows[r] = _mm256_set_m128i(load16(w[r + 4], base), load16(w[r], base));
                }
                groups[half..half + 4].copy_from_slice(&transpose4(rows));
            }
        } else {
            let five = $ty == Q5_0 || $ty == Q5_1;
            let qs = if has_min { at + 4 } else { at + 2 } + if five { 4 } else { 0 };
            let mut rows = [_mm256_setzero_si256(); 4];
            for r in 0..4 {
                rows[r] = _mm256_set_m128i(load16(w[r + 4], qs), load16(w[r], qs));
            }
            let dwords = transpose4(rows);
            let low = _mm256_set1_epi8(0x0F);
            for j in 0..4 {
                // A byte's low nibble is weight i, its high nibble weight i + 16.
                groups[j] = _mm256_and_si256(dwords[j], low);
                groups[j + 4] = _mm256_and_si256(_mm256_srli_epi16(dwords[j], 4), low);
            }
            if five {
                fifth_bits(&mut groups, w, qs - 4);
            }
            if $ty == Q4_0 || $ty == Q5_0 {
                let offset = _mm256_set1_epi8(if $ty == Q4_0 { 8 } else { 16 });
                for g in &mut groups {
                    *g = _mm256_sub_epi8(*g, offset);
                }
            }
        }
        // A row's scale (and minimum) are its block's first bytes.
        let mut heads = [0i32; 8];
        for r in 0..8 {
            let h = bytes_at::<4>(w[r], at);
            heads[r] = if has_min { i32::from_le_bytes(h) } else { i32::from(u16::from_le_bytes([h[0], h[1]])) };
        }
        // SAFETY: `heads` is 32 readable bytes; unaligned load.
        let heads = unsafe { _mm256_loadu_si256(heads.as_ptr().cast()) };
        // Scales in the low 16 bits of each dword, minimums in the high:
        // packed as 8 scales and then 8 minimums.
        let scales = _mm256_and_si256(heads, _mm256_set1_epi32(0xFFFF));
        let mins = _mm256_srli_epi32(heads, 16);
        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(scales, mins));
        let d = _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
        let m = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(packed));
        (groups, d, m)
    }};
}

/// Each row prefetches the row 8 below it (`ahead` bytes on) where its
/// block `b` (of `wb` bytes) starts a new cache line.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn prefetch_block(rows: &[&[u8]; GEMM_ROWS], b: usize, wb: usize, ahead: usize) {
    if (b * wb) % 64 < wb {
        for row in rows {
            // A hint only: it never faults, whatever the address.
            _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().wrapping_add(b * wb + ahead).cast());
        }
    }
}

/// Runs `$pass::<$pre.., T>($lead.., a, out, first)` over the tokens `$a`
/// in passes of at most `$max` (`T` a pass's size, up to 8); only the
/// first pass prefetches, later ones find the next rows fetched.
macro_rules! token_passes {
    ($a:expr, $out:expr, $prefetch:expr, $max:expr, $pass:ident::<$($pre:ident),*>($($lead:expr),*)) => {{
        let mut done = 0;
        while done < $a.len() {
            let take = ($a.len() - done).min($max);
            let (a, o, first) = (&$a[done..done + take], &mut $out[done..done + take], $prefetch && done == 0);
            match take {
                1 => $pass::<$($pre,)* 1>($($lead,)* a, o, first),
                2 => $pass::<$($pre,)* 2>($($lead,)* a, o, first),
                3 => $pass::<$($pre,)* 3>($($lead,)* a, o, first),
                4 => $pass::<$($pre,)* 4>($($lead,)* a, o, first),
                5 => $pass::<$($pre,)* 5>($($lead,)* a, o, first),
                6 => $pass::<$($pre,)* 6>($($lead,)* a, o, first),
                7 => $pass::<$($pre,)* 7>($($lead,)* a, o, first),
                _ => $pass::<$($pre,)* 8>($($lead,)* a, o, first),
            }
            done += take;
        }
    }};
}

/// Q5_0/Q5_1: adds 16 to each level whose bit is set in its row's 32-bit
/// `qh` at `at`: group `g` holds weights `4g..4g + 4`, so bits `4g..4g + 4`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn fifth_bits(groups: &mut [__m256i; 8], w: &[&[u8]; GEMM_ROWS], at: usize) {
    let qh: [i32; GEMM_ROWS] = core::array::from_fn(|r| i32::from_le_bytes(bytes_at::<4>(w[r], at)));
    // SAFETY: `qh` is 32 readable bytes; unaligned load.
    let qh = unsafe { _mm256_loadu_si256(qh.as_ptr().cast()) };
    for (g, group) in groups.iter_mut().enumerate() {
        // Byte g / 2 of each row's qh into all four bytes of its lane, then
        // the bit of each byte's weight.
        let byte = (g / 2) as i8;
        let spread = _mm_setr_epi8(
            byte,
            byte,
            byte,
            byte,
            byte + 4,
            byte + 4,
            byte + 4,
            byte + 4,
            byte + 8,
            byte + 8,
            byte + 8,
            byte + 8,
            byte + 12,
            byte + 12,
            byte + 12,
            byte + 12,
        );
        let shift = 4 * (g % 2) as i32;
        let bits = _mm256_set1_epi32(0x0804_0201 << shift);
        let spread = _mm256_shuffle_epi8(qh, _mm256_set_m128i(spread, spread));
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
        *group = _mm256_or_si256(*group, _mm256_and_si256(set, _mm256_set1_epi8(16)));
    }
}

/// Signed weights as what `dpbusd`/`maddubs` take: their magnitudes
/// (unsigned), with their signs moved onto the activations per token.
#[inline]
#[target_feature(enable = "avx2")]
fn magnitudes(groups: &mut [__m256i; 8]) -> [__m256i; 8] {
    let signs = *groups;
    for g in groups.iter_mut() {
        *g = _mm256_sign_epi8(*g, *g);
    }
    signs
}

/// The stamped-out kernels: `$dot(acc, u, s)` adds each 4 products of
/// unsigned bytes `u` and signed bytes `s` into the i32 lanes of `acc`
/// (for `maddubs`, the i16 lanes: `$widen` makes them i32 at the end);
/// `$dot_wide` does it in i32 lanes whatever the products (Q8_0's).
macro_rules! gemm_kernels {
    ($features:literal, $dot:expr, $widen:expr, $dot_wide:expr, max_tokens: $max:literal) => {
        use super::*;

        /// Tokens one pass carries: what the registers hold.
        const MAX_TOKENS: usize = $max;

        /// One token's integer dot with the 8 rows' block (in 8 i32
        /// lanes): two chains, so consecutive groups do not wait on each other.
        #[inline]
        #[target_feature(enable = $features)]
        fn block_sum<const SIGNED: bool, const WIDE: bool>(
            groups: &[__m256i; 8],
            signs: &[__m256i; 8],
            qa: &[u8],
        ) -> __m256i {
            let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for j in (0..8).step_by(2) {
                let (mut a0, mut a1) = (broadcast4(qa, 4 * j), broadcast4(qa, 4 * j + 4));
                if SIGNED {
                    (a0, a1) = (_mm256_sign_epi8(a0, signs[j]), _mm256_sign_epi8(a1, signs[j + 1]));
                }
                if WIDE {
                    even = $dot_wide(even, groups[j], a0);
                    odd = $dot_wide(odd, groups[j + 1], a1);
                } else {
                    even = $dot(even, groups[j], a0);
                    odd = $dot(odd, groups[j + 1], a1);
                }
            }
            if WIDE {
                _mm256_add_epi32(even, odd)
            } else {
                $widen(even, odd)
            }
        }

        /// `T` tokens; `prefetch` (only on the first pass over these rows:
        /// later ones find the next rows fetched) as [`GemmFn`] says.
        #[target_feature(enable = $features)]
        fn gemm<const TY: u8, const T: usize>(
            n: usize,
            w: &[&[u8]; GEMM_ROWS],
            a: &[&[u8]],
            out: &mut [[f32; GEMM_ROWS]],
            prefetch: bool,
        ) {
            let (wb, ab, has_min) = layout(TY);
            let nb = n / 32;
            let mut rows: [&[u8]; GEMM_ROWS] = [&[]; GEMM_ROWS];
            for r in 0..GEMM_ROWS {
                rows[r] = &w[r][..nb * wb];
            }
            let mut toks: [&[u8]; T] = [&[]; T];
            for t in 0..T {
                toks[t] = &a[t][..nb * ab];
            }
            // As the tiles do: each row prefetches the row 8 below it (the
            // next call's), at the same block.
            let ahead = (GEMM_ROWS * nb * wb).max(PREFETCH_BYTES);
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..nb {
                if prefetch {
                    prefetch_block(&rows, b, wb, ahead);
                }
                let (mut groups, dw, mw) = unpack8!(TY, &rows, b);
                let signs = if has_min { groups } else { magnitudes(&mut groups) };
                for t in 0..T {
                    acc[t] = token_block::<TY>(&groups, &signs, dw, mw, &toks[t][b * ab..(b + 1) * ab], acc[t]);
                }
            }
            for t in 0..T {
                // SAFETY: `out[t]` is 8 writable f32s; unaligned store.
                unsafe { _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]) };
            }
        }

        /// One token's block `blk` against the 8 rows' unpacked block, added into `acc`.
        #[inline]
        #[target_feature(enable = $features)]
        fn token_block<const TY: u8>(
            groups: &[__m256i; 8],
            signs: &[__m256i; 8],
            dw: __m256,
            mw: __m256,
            blk: &[u8],
            acc: __m256,
        ) -> __m256 {
            let (_, _, has_min) = layout(TY);
            let qa = &blk[if has_min { 4 } else { 2 }..];
            let sums = match (has_min, TY == Q8_0) {
                (true, _) => block_sum::<false, false>(groups, signs, qa),
                (false, false) => block_sum::<true, false>(groups, signs, qa),
                (false, true) => block_sum::<true, true>(groups, signs, qa),
            };
            // The block's scale and (Q8_1) scaled sum, converted together.
            let head = i32::from_le_bytes(bytes_at::<4>(blk, 0));
            let da_sa = _mm_cvtph_ps(_mm_cvtsi32_si128(head));
            let scale = _mm256_mul_ps(dw, _mm256_broadcastss_ps(da_sa));
            let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc);
            if has_min {
                _mm256_fmadd_ps(mw, _mm256_broadcastss_ps(_mm_movehdup_ps(da_sa)), acc)
            } else {
                acc
            }
        }

        /// More than two passes of tokens: each block of the 8 rows is
        /// unpacked once and met by every token, instead of once per pass
        /// (with 16 registers, passes of 4 tokens: a sixth of Q4_K's
        /// prompt time; with 32, two passes in registers win).
        #[target_feature(enable = $features)]
        fn gemm_unpacked<const TY: u8>(
            n: usize,
            w: &[&[u8]; GEMM_ROWS],
            a: &[&[u8]],
            out: &mut [[f32; GEMM_ROWS]; GEMM_TOKENS],
            prefetch: bool,
        ) {
            let (wb, ab, has_min) = layout(TY);
            let nb = n / 32;
            let mut rows: [&[u8]; GEMM_ROWS] = [&[]; GEMM_ROWS];
            for r in 0..GEMM_ROWS {
                rows[r] = &w[r][..nb * wb];
            }
            let ahead = (GEMM_ROWS * nb * wb).max(PREFETCH_BYTES);
            let mut acc = [_mm256_setzero_ps(); GEMM_TOKENS];
            for b in 0..nb {
                if prefetch {
                    prefetch_block(&rows, b, wb, ahead);
                }
                let (mut groups, dw, mw) = unpack8!(TY, &rows, b);
                let signs = if has_min { groups } else { magnitudes(&mut groups) };
                for (t, acc) in acc.iter_mut().enumerate().take(a.len()) {
                    *acc = token_block::<TY>(&groups, &signs, dw, mw, &a[t][b * ab..(b + 1) * ab], *acc);
                }
            }
            for (o, acc) in out.iter_mut().zip(&acc).take(a.len()) {
                // SAFETY: `o` is 8 writable f32s; unaligned store.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *acc) };
            }
        }

        /// Any number of tokens up to [`GEMM_TOKENS`], in passes of at most `MAX_TOKENS`.
        #[target_feature(enable = $features)]
        pub(super) fn gemm_any<const TY: u8>(
            n: usize,
            w: &[&[u8]; GEMM_ROWS],
            a: &[&[u8]],
            out: &mut [[f32; GEMM_ROWS]; GEMM_TOKENS],
            prefetch: bool,
        ) {
            if a.len() > 2 * MAX_TOKENS {
                return gemm_unpacked::<TY>(n, w, a, out, prefetch);
            }
            token_passes!(a, out, prefetch, MAX_TOKENS, gemm::<TY>(n, w));
        }
    };
}

/// AVX2: pairs of byte products summed to i16 by `maddubs`. For 4- and
/// 5-bit weights a chain's 4 groups are added as i16 (at most 4 · 2 · 31 ·
/// 128 = 31744, Q5_1's unsigned levels) and widened to i32 once; Q8_0's pairs reach 2 · 128 · 127, so
/// each of its groups is widened (`madd`) and added as i32.
mod avx2 {
    gemm_kernels!(
        "avx2,fma,f16c",
        |acc, u, s| _mm256_add_epi16(acc, _mm256_maddubs_epi16(u, s)),
        |even, odd| {
            let ones = _mm256_set1_epi16(1);
            _mm256_add_epi32(_mm256_madd_epi16(even, ones), _mm256_madd_epi16(odd, ones))
        },
        |acc, u, s| _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))),
        max_tokens: 4
    );
}

mod vnni {
    gemm_kernels!(
        "avx2,fma,f16c,avxvnni",
        _mm256_dpbusd_avx_epi32,
        _mm256_add_epi32,
        _mm256_dpbusd_avx_epi32,
        max_tokens: 4
    );
}

/// 32 vector registers: 8 tokens' accumulators beside the 8 weight groups.
mod avx512 {
    gemm_kernels!(
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        _mm256_dpbusd_epi32,
        _mm256_add_epi32,
        _mm256_dpbusd_epi32,
        max_tokens: 8
    );
}

/// The row-parallel product for `ty` on this instruction set, if there is one.
macro_rules! gemm_table {
    ($m:ident, $ty:expr) => {
        // SAFETY (every arm): the kernel table asks for module `$m`'s
        // kernels only when the CPU has its features.
        match $ty {
            GgmlType::Q4_0 => Some((|n, w, a, o, p| unsafe { $m::gemm_any::<Q4_0>(n, w, a, o, p) }) as GemmFn),
            GgmlType::Q4_1 => Some((|n, w, a, o, p| unsafe { $m::gemm_any::<Q4_1>(n, w, a, o, p) }) as GemmFn),
            GgmlType::Q5_0 => Some((|n, w, a, o, p| unsafe { $m::gemm_any::<Q5_0>(n, w, a, o, p) }) as GemmFn),
            GgmlType::Q5_1 => Some((|n, w, a, o, p| unsafe { $m::gemm_any::<Q5_1>(n, w, a, o, p) }) as GemmFn),
            GgmlType::Q8_0 => Some((|n, w, a, o, p| unsafe { $m::gemm_any::<Q8_0>(n, w, a, o, p) }) as GemmFn),
            _ => None,
        }
    };
}

pub(in crate::kernels) fn gemm_avx2(ty: GgmlType) -> Option<GemmFn> {
    gemm_table!(avx2, ty).or_else(|| super::gemm_k::gemm_k_avx2(ty))
}

pub(in crate::kernels) fn gemm_vnni(ty: GgmlType) -> Option<GemmFn> {
    gemm_table!(vnni, ty).or_else(|| super::gemm_k::gemm_k_vnni(ty))
}

pub(in crate::kernels) fn gemm_avx512(ty: GgmlType) -> Option<GemmFn> {
    gemm_table!(avx512, ty).or_else(|| super::gemm_k::gemm_k_avx512(ty))
}
