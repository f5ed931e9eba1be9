//! Products for prompts on AVX-512: 16 weight rows against every token
//! of a batch ([`PanelFn`]), for Q4_K, Q6_K and the 32-element types. A
//! few blocks are unpacked at a time (two 8-row unpackings, of
//! [`super::gemm_k`] or [`super::gemm_wide`], joined into 512-bit lanes)
//! and then met by all the tokens, 8 at a time, while they sit in L1. The
//! 8- and 16-row products instead unpack each block again for every 8
//! tokens and read the rows from memory once per 16 tokens.
//!
//! Each lane repeats the row products' arithmetic: exact integer sums per
//! block, then their float steps in the same order, so every row's result
//! is bit-identical to [`crate::kernels::GemmFn`]'s.

use super::gemm::{bytes_at, fifth_bits, load16, transpose4};
use super::gemm_k::{
    header, pick_byte, pick_signed, q6k_levels, transposed16, unpack_chunk, ACT_BYTES, ACT_SUMS_AT, BLOCK_BYTES,
    Q6K_BYTES,
};
use super::gemm_wide::token_block;
use super::gemm_wide::{join, join_ps};
use crate::kernels::shared::{layout, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
use crate::kernels::{PanelFn, GEMM_ROWS, PANEL_ROWS};
use crate::quant::GgmlType;
use core::arch::x86_64::*;

/// Super-blocks unpacked at a time: 5.1 KiB each for Q4_K (Q6_K's, 5.6
/// KiB, take half as many), so they stay in L1 or L2 while the passes of
/// tokens meet them. 4, 8 and 16 measured alike on 8B-shaped Q4_K prompts
/// (within the VM's noise).
const CHUNK_BLOCKS: usize = 8;

/// Tokens one pass carries: 8 accumulators and 8 integer sums beside a
/// sub-block's 8 weight groups, of 32 registers.
const PASS_TOKENS: usize = 8;

/// 16 rows' Q4_K super-block, unpacked: per sub-block its 8 groups (lane
/// `r` holds 4 of row `r`'s levels), the rows' scales as i16 pairs
/// (scale, 0) and minimums as pairs (minimum, minimum); d and dmin.
#[derive(Clone, Copy)]
struct Block16 {
    groups: [[__m512i; 8]; 8],
    scales: [__m512i; 8],
    mins: [__m512i; 8],
    d: __m512,
    dmin: __m512,
}

/// The 16 rows as the 8-row unpackings take them: rows 0..8, then 8..16.
fn split_rows<'a>(w: &[&'a [u8]; PANEL_ROWS]) -> [[&'a [u8]; GEMM_ROWS]; 2] {
    core::array::from_fn(|half| core::array::from_fn(|r| w[half * GEMM_ROWS + r]))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn unpack16(w: &[&[u8]; PANEL_ROWS], b: usize) -> Block16 {
    let (halves, at) = (split_rows(w), b * BLOCK_BYTES);
    let (lo, hi) = (header(&halves[0], at), header(&halves[1], at));
    let zero8 = [_mm512_setzero_si512(); 8];
    let mut blk =
        Block16 { groups: [zero8; 8], scales: zero8, mins: zero8, d: join_ps(lo.0, hi.0), dmin: join_ps(lo.1, hi.1) };
    // Bytes `[scales 0..4, scales 4..8, mins 0..4, mins 4..8]` per lane.
    for j in 0..8 {
        let (v, k) = (j / 4, j % 4);
        blk.scales[j] = join(pick_byte::<false>(lo.2[v], k), pick_byte::<false>(hi.2[v], k));
        blk.mins[j] = join(pick_byte::<true>(lo.2[2 + v], k), pick_byte::<true>(hi.2[2 + v], k));
    }
    for c in 0..4 {
        let (l, h) = (unpack_chunk(&halves[0], at, c), unpack_chunk(&halves[1], at, c));
        for (half, j) in [2 * c, 2 * c + 1].into_iter().enumerate() {
            for g in 0..8 {
                blk.groups[j][g] = join(l[half][g], h[half][g]);
            }
        }
    }
    blk
}

/// `acc + a · b` by i16 pairs into i32 lanes, as one `vpdpwssd`: LLVM
/// splits the intrinsic into a multiply and an add, one more instruction
/// on the two ports that 512-bit work shares (one instruction: +5–10% on
/// 8B-shaped prompts).
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    let mut acc = acc;
    // SAFETY: a register-only instruction of AVX512-VNNI, which this
    // function's target features (the callers') guarantee; no memory, no
    // stack, no flags.
    unsafe {
        core::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
    acc
}

/// `sum_j mins[j] * (the token's level sum over sub-block j)` per row
/// lane: the activation's sums of 16 levels pair up as dwords, 2j and
/// 2j + 1 in dword j, and meet the minimum of sub-block j in both halves.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn level_sums16(blk: &[u8; ACT_BYTES], mins: &[__m512i; 8]) -> __m512i {
    let mut sum = _mm512_setzero_si512();
    for (j, &m) in mins.iter().enumerate() {
        let pair = _mm512_set1_epi32(i32::from_le_bytes(bytes_at::<4>(blk, ACT_SUMS_AT + 4 * j)));
        sum = dpwssd(sum, m, pair);
    }
    sum
}

/// One token's sub-block (`$qa`, its 32 levels) against the 16 rows'
/// `$groups`, times the rows' `$scales`, added to `$isum`: exact integers.
/// A macro, so that every token's copy is inlined in the written-out loop.
macro_rules! sub_block {
    ($isum:expr, $groups:expr, $qa:expr, $scales:expr) => {{
        let (groups, qa): (&[__m512i; 8], &[u8; 32]) = ($groups, $qa);
        let (mut even, mut odd) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for g in (0..8).step_by(2) {
            let a0 = _mm512_set1_epi32(i32::from_le_bytes(bytes_at::<4>(qa, 4 * g)));
            let a1 = _mm512_set1_epi32(i32::from_le_bytes(bytes_at::<4>(qa, 4 * g + 4)));
            even = _mm512_dpbusd_epi32(even, groups[g], a0);
            odd = _mm512_dpbusd_epi32(odd, groups[g + 1], a1);
        }
        // Each half's 16 levels sum to at most 16 · 15 · 128 = 30720, so
        // its low i16 is the whole sum: `dpwssd` by (scale, 0) pairs scales
        // it and adds it in, one instruction where a 32-bit multiply is two.
        dpwssd(dpwssd($isum, even, $scales), odd, $scales)
    }};
}

/// `$body` for each token `$t` below `$n` (at most [`PASS_TOKENS`]),
/// written out: LLVM's unrolling of a plain loop is a guess, and when it
/// guesses no, the integer sums live in memory (-20%).
macro_rules! each_token {
    ($n:expr, $t:ident, $body:block) => {
        seq_tokens!($n, $t, $body, 0 1 2 3 4 5 6 7)
    };
}

macro_rules! seq_tokens {
    ($n:expr, $t:ident, $body:block, $($i:literal)*) => {
        $(if $i < $n {
            let $t = $i;
            $body
        })*
    };
}

/// `T` tokens' super-blocks (`toks[t]`) against one unpacked super-block,
/// added into `acc`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tokens16<const T: usize>(blk: &Block16, toks: &[&[u8; ACT_BYTES]; T], acc: &mut [__m512; T]) {
    let mut isum = [_mm512_setzero_si512(); T];
    for j in 0..8 {
        let (groups, scales) = (blk.groups[j], blk.scales[j]);
        each_token!(T, t, {
            let qa: &[u8; 32] = toks[t][4 + 32 * j..4 + 32 * (j + 1)].try_into().expect("32 levels");
            isum[t] = sub_block!(isum[t], &groups, qa, scales);
        });
    }
    for t in 0..T {
        // As `gemm_k::q4k_scaled`: one rounding for `d · isum - dmin · mins`,
        // one more for the activation's scale.
        let m = _mm512_mul_ps(_mm512_cvtepi32_ps(level_sums16(toks[t], &blk.mins)), blk.dmin);
        let da = _mm512_set1_ps(f32::from_le_bytes(bytes_at::<4>(toks[t], 0)));
        acc[t] = _mm512_fmadd_ps(_mm512_fmsub_ps(_mm512_cvtepi32_ps(isum[t]), blk.d, m), da, acc[t]);
    }
}

/// Stamps out a panel product `$panel` ([`PanelFn`]) over `$block`s:
/// blocks of `$len` weights, `$bytes` per row, unpacked by `$unpack` (from
/// the rows and a block index) and met by `$tokens` (the unpacked block,
/// each token's `$act` activation bytes of it, the accumulators), `$chunk`
/// blocks at a time. Its pass function `$pass` takes `out.len()` tokens
/// (`T`), whose activation rows start at `acts`, `act_row_bytes` apart,
/// through the unpacked `blocks`, found at `at` in each activation row
/// (`first`: the sums start at zero, otherwise from `out`).
macro_rules! panel_product {
    ($panel:ident, $pass:ident, $block:ty, $len:expr, $bytes:expr, $act:expr, $chunk:expr, $unpack:expr, $tokens:expr) => {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn $pass<const T: usize>(
            blocks: &[$block],
            acts: &[u8],
            act_row_bytes: usize,
            at: usize,
            out: &mut [[f32; PANEL_ROWS]],
            first: bool,
        ) {
            let mut acc = [_mm512_setzero_ps(); T];
            if !first {
                for t in 0..T {
                    // SAFETY: `out[t]` is 16 readable f32s; unaligned load.
                    acc[t] = unsafe { _mm512_loadu_ps(out[t].as_ptr()) };
                }
            }
            for (i, blk) in blocks.iter().enumerate() {
                let at = at + i * $act;
                let toks: [&[u8; $act]; T] = core::array::from_fn(|t| {
                    acts[t * act_row_bytes + at..][..$act].try_into().expect("one activation block")
                });
                $tokens(blk, &toks, &mut acc);
            }
            for t in 0..T {
                // SAFETY: `out[t]` is 16 writable f32s; unaligned store.
                unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]) };
            }
        }

        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn $panel(n: usize, w: &[&[u8]; PANEL_ROWS], acts: &[u8], act_row_bytes: usize, out: &mut [[f32; PANEL_ROWS]]) {
            let nb = n / $len;
            let rows: [&[u8]; PANEL_ROWS] = core::array::from_fn(|r| &w[r][..nb * $bytes]);
            if nb == 0 {
                out.fill([0.0; PANEL_ROWS]);
                return;
            }
            // Block 0 fills the array, so the first chunk starts at 1.
            let mut blocks = [$unpack(&rows, 0); $chunk];
            for b0 in (0..nb).step_by($chunk) {
                let chunk = (nb - b0).min($chunk);
                for (i, blk) in blocks.iter_mut().enumerate().take(chunk).skip(usize::from(b0 == 0)) {
                    *blk = $unpack(&rows, b0 + i);
                }
                let (blocks, at, first) = (&blocks[..chunk], b0 * $act, b0 == 0);
                for (p, o) in out.chunks_mut(PASS_TOKENS).enumerate() {
                    let acts = &acts[p * PASS_TOKENS * act_row_bytes..];
                    match o.len() {
                        1 => $pass::<1>(blocks, acts, act_row_bytes, at, o, first),
                        2 => $pass::<2>(blocks, acts, act_row_bytes, at, o, first),
                        3 => $pass::<3>(blocks, acts, act_row_bytes, at, o, first),
                        4 => $pass::<4>(blocks, acts, act_row_bytes, at, o, first),
                        5 => $pass::<5>(blocks, acts, act_row_bytes, at, o, first),
                        6 => $pass::<6>(blocks, acts, act_row_bytes, at, o, first),
                        7 => $pass::<7>(blocks, acts, act_row_bytes, at, o, first),
                        _ => $pass::<8>(blocks, acts, act_row_bytes, at, o, first),
                    }
                }
            }
        }
    };
}

panel_product!(panel_q4k, pass_q4k, Block16, 256, BLOCK_BYTES, ACT_BYTES, CHUNK_BLOCKS, unpack16, tokens16);

/// 16 rows' Q6_K super-block, unpacked: per scale group (16 levels) its 4
/// groups of 4 levels (0..64, stored plus 32) per lane, and the rows'
/// scales as i32 lanes; the scales again as i16 pairs `(2i, 2i + 1)`; d.
#[derive(Clone, Copy)]
struct Block6 {
    levels: [[__m512i; 4]; 16],
    scales: [__m512i; 16],
    scale_pairs: [__m512i; 8],
    d: __m512,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn unpack6(w: &[&[u8]; PANEL_ROWS], b: usize) -> Block6 {
    let (halves, at) = (split_rows(w), b * Q6K_BYTES);
    let d: [u16; PANEL_ROWS] = core::array::from_fn(|r| u16::from_le_bytes(bytes_at::<2>(w[r], at + 208)));
    // SAFETY: `d` is 32 readable bytes; unaligned load.
    let d = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(d.as_ptr().cast()) });
    let zero = _mm512_setzero_si512();
    let mut blk = Block6 { levels: [[zero; 4]; 16], scales: [zero; 16], scale_pairs: [zero; 8], d };
    for h in 0..2 {
        for l0 in [0, 16] {
            let (lo, hi) = (q6k_levels(&halves[0], at, h, l0), q6k_levels(&halves[1], at, h, l0));
            for k in 0..4 {
                let group = 8 * h + 2 * k + l0 / 16;
                for g in 0..4 {
                    blk.levels[group][g] = join(lo[k][g], hi[k][g]);
                }
            }
        }
    }
    let (lo, hi) = (transposed16(&halves[0], at + 192), transposed16(&halves[1], at + 192));
    for s in 0..16 {
        blk.scales[s] = join(pick_signed::<false>(lo[s / 4], s % 4), pick_signed::<false>(hi[s / 4], s % 4));
    }
    for i in 0..8 {
        let even = _mm512_and_si512(blk.scales[2 * i], _mm512_set1_epi32(0xFFFF));
        blk.scale_pairs[i] = _mm512_or_si512(even, _mm512_slli_epi32::<16>(blk.scales[2 * i + 1]));
    }
    blk
}

/// `T` tokens' super-blocks against one unpacked Q6_K super-block, added
/// into `acc`, as `gemm_k`'s `gemm_q6k` does it for 8 rows. A group's 4
/// levels by 4 activations reach 4 · 63 · 128 = 32256, but two of them
/// overflow an i16, so each group's sum is scaled by a 32-bit multiply.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tokens6<const T: usize>(blk: &Block6, toks: &[&[u8; ACT_BYTES]; T], acc: &mut [__m512; T]) {
    let mut isum = [_mm512_setzero_si512(); T];
    for s in 0..16 {
        let (levels, scale) = (blk.levels[s], blk.scales[s]);
        each_token!(T, t, {
            let qa: &[u8; 16] = toks[t][4 + 16 * s..4 + 16 * (s + 1)].try_into().expect("16 levels");
            let a = |g: usize| _mm512_set1_epi32(i32::from_le_bytes(bytes_at::<4>(qa, 4 * g)));
            let even = _mm512_dpbusd_epi32(_mm512_setzero_si512(), levels[0], a(0));
            let odd = _mm512_dpbusd_epi32(_mm512_setzero_si512(), levels[1], a(1));
            let (even, odd) = (_mm512_dpbusd_epi32(even, levels[2], a(2)), _mm512_dpbusd_epi32(odd, levels[3], a(3)));
            isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(_mm512_add_epi32(even, odd), scale));
        });
    }
    for t in 0..T {
        // Levels are stored plus 32: take 32 · Σ scale · (group's level sum) off.
        let mut offset = _mm512_setzero_si512();
        for (i, &pairs) in blk.scale_pairs.iter().enumerate() {
            let sums = _mm512_set1_epi32(i32::from_le_bytes(bytes_at::<4>(toks[t], ACT_SUMS_AT + 4 * i)));
            offset = dpwssd(offset, pairs, sums);
        }
        let sums = _mm512_cvtepi32_ps(_mm512_sub_epi32(isum[t], _mm512_slli_epi32::<5>(offset)));
        let da = _mm512_set1_ps(f32::from_le_bytes(bytes_at::<4>(toks[t], 0)));
        acc[t] = _mm512_fmadd_ps(sums, _mm512_mul_ps(blk.d, da), acc[t]);
    }
}

panel_product!(panel_q6k, pass_q6k, Block6, 256, Q6K_BYTES, ACT_BYTES, CHUNK_BLOCKS / 2, unpack6, tokens6);

/// Blocks of a 32-element type unpacked at a time: 704 bytes each.
const CHUNK_32: usize = 32;

/// 16 rows' block of a 32-element type, unpacked as `gemm_wide` unpacks
/// it: the groups, the rows' scales and minimums, and `128 · Σw`.
#[derive(Clone, Copy)]
struct Block32 {
    groups: [__m512i; 8],
    dw: __m512,
    mw: __m512,
    bias: __m512i,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn unpack32<const TY: u8>(w: &[&[u8]; PANEL_ROWS], b: usize) -> Block32 {
    let halves = split_rows(w);
    let (groups, dw, mw, bias) = unpack16!(TY, &halves[0], &halves[1], b);
    Block32 { groups, dw, mw, bias }
}

/// `T` tokens' blocks against one unpacked block, by `gemm_wide`'s own
/// per-token step, so the rows stay bit-identical to its (and the 8-row
/// product's).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tokens32<const TY: u8, const A: usize, const T: usize>(blk: &Block32, toks: &[&[u8; A]; T], acc: &mut [__m512; T]) {
    each_token!(T, t, {
        acc[t] = token_block::<TY>(&blk.groups, blk.bias, blk.dw, blk.mw, toks[t], acc[t]);
    });
}

/// The 32-element types' panels, one per type.
macro_rules! panel_32 {
    ($panel:ident, $pass:ident, $ty:ident) => {
        panel_product!(
            $panel,
            $pass,
            Block32,
            32,
            layout($ty).0,
            { layout($ty).1 },
            CHUNK_32,
            unpack32::<$ty>,
            tokens32::<$ty, { layout($ty).1 }, T>
        );
    };
}

panel_32!(panel_q4_0, pass_q4_0, Q4_0);
panel_32!(panel_q4_1, pass_q4_1, Q4_1);
panel_32!(panel_q5_0, pass_q5_0, Q5_0);
panel_32!(panel_q5_1, pass_q5_1, Q5_1);
panel_32!(panel_q8_0, pass_q8_0, Q8_0);

pub(in crate::kernels) fn panel_avx512(ty: GgmlType) -> Option<PanelFn> {
    match ty {
        // SAFETY: the kernel table asks for AVX-512 kernels only when the
        // CPU has AVX-512 F/BW/VL and VNNI.
        GgmlType::Q4_K => Some(|n, w, a, arb, o| unsafe { panel_q4k(n, w, a, arb, o) }),
        GgmlType::Q6_K => Some(|n, w, a, arb, o| unsafe { panel_q6k(n, w, a, arb, o) }),
        GgmlType::Q4_0 => Some(|n, w, a, arb, o| unsafe { panel_q4_0(n, w, a, arb, o) }),
        GgmlType::Q4_1 => Some(|n, w, a, arb, o| unsafe { panel_q4_1(n, w, a, arb, o) }),
        GgmlType::Q5_0 => Some(|n, w, a, arb, o| unsafe { panel_q5_0(n, w, a, arb, o) }),
        GgmlType::Q5_1 => Some(|n, w, a, arb, o| unsafe { panel_q5_1(n, w, a, arb, o) }),
        GgmlType::Q8_0 => Some(|n, w, a, arb, o| unsafe { panel_q8_0(n, w, a, arb, o) }),
        _ => None,
    }
}
