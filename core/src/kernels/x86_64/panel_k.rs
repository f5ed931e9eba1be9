//! Q4_K products for prompts on AVX-512: 16 weight rows against every
//! token of a batch ([`PanelFn`]). A few super-blocks are unpacked at a
//! time (two 8-row unpackings of [`super::gemm_k`], joined into 512-bit
//! lanes) and then met by all the tokens, 8 at a time, while they sit in
//! L1. The 8-row kernel instead unpacks each super-block again for every 8
//! tokens and reads the rows from memory once per 16 tokens.
//!
//! Each lane repeats the 8-row kernel's arithmetic: exact integer sums per
//! super-block, then its float steps in the same order, so every row's
//! result is bit-identical to [`crate::kernels::GemmFn`]'s.

use super::gemm::bytes_at;
use super::gemm_k::{header, pick_byte, unpack_chunk, ACT_BYTES, ACT_SUMS_AT, BLOCK_BYTES};
use super::gemm_wide::{join, join_ps};
use crate::kernels::{PanelFn, GEMM_ROWS, PANEL_ROWS};
use crate::quant::GgmlType;
use core::arch::x86_64::*;

/// Super-blocks unpacked at a time: 4.9 KiB each, so they stay in L1 or
/// L2 while the passes of tokens meet them. 4, 8 and 16 measured alike on
/// 8B-shaped prompts (within the VM's noise).
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

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn unpack16(w: &[&[u8]; PANEL_ROWS], at: usize) -> Block16 {
    let mut halves = [[&[][..]; GEMM_ROWS]; 2];
    for (r, row) in w.iter().enumerate() {
        halves[r / GEMM_ROWS][r % GEMM_ROWS] = row;
    }
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
/// on the two ports that 512-bit work shares (14% of this kernel's).
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
/// `$groups`, times the rows' `$scales`, added to `$isum`: exact integers. A macro,
/// so that every token's copy is inlined and the token loop unrolled.
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

/// One pass: `out.len()` tokens (`T`), whose activation rows start at
/// `acts`, `act_row_bytes` apart, through the unpacked super-blocks
/// `blocks`, found at `at` in each row. `first`: the accumulators start at
/// zero, otherwise from `out`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pass<const T: usize>(
    blocks: &[Block16],
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
        let at = at + i * ACT_BYTES;
        let toks: [&[u8; ACT_BYTES]; T] =
            core::array::from_fn(|t| acts[t * act_row_bytes + at..][..ACT_BYTES].try_into().expect("one Q8_K block"));
        tokens16::<T>(blk, &toks, &mut acc);
    }
    for t in 0..T {
        // SAFETY: `out[t]` is 16 writable f32s; unaligned store.
        unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]) };
    }
}

/// [`PanelFn`] for Q4_K.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn panel_q4k(n: usize, w: &[&[u8]; PANEL_ROWS], acts: &[u8], act_row_bytes: usize, out: &mut [[f32; PANEL_ROWS]]) {
    let nb = n / 256;
    let rows: [&[u8]; PANEL_ROWS] = core::array::from_fn(|r| &w[r][..nb * BLOCK_BYTES]);
    let zero = _mm512_setzero_si512();
    let (zero_ps, zero8) = (_mm512_setzero_ps(), [zero; 8]);
    let empty = Block16 { groups: [zero8; 8], scales: zero8, mins: zero8, d: zero_ps, dmin: zero_ps };
    let mut blocks = [empty; CHUNK_BLOCKS];
    if nb == 0 {
        out.fill([0.0; PANEL_ROWS]);
    }
    for b0 in (0..nb).step_by(CHUNK_BLOCKS) {
        let chunk = (nb - b0).min(CHUNK_BLOCKS);
        for (i, blk) in blocks.iter_mut().enumerate().take(chunk) {
            *blk = unpack16(&rows, (b0 + i) * BLOCK_BYTES);
        }
        let (blocks, at, first) = (&blocks[..chunk], b0 * ACT_BYTES, b0 == 0);
        for (p, o) in out.chunks_mut(PASS_TOKENS).enumerate() {
            let acts = &acts[p * PASS_TOKENS * act_row_bytes..];
            match o.len() {
                1 => pass::<1>(blocks, acts, act_row_bytes, at, o, first),
                2 => pass::<2>(blocks, acts, act_row_bytes, at, o, first),
                3 => pass::<3>(blocks, acts, act_row_bytes, at, o, first),
                4 => pass::<4>(blocks, acts, act_row_bytes, at, o, first),
                5 => pass::<5>(blocks, acts, act_row_bytes, at, o, first),
                6 => pass::<6>(blocks, acts, act_row_bytes, at, o, first),
                7 => pass::<7>(blocks, acts, act_row_bytes, at, o, first),
                _ => pass::<8>(blocks, acts, act_row_bytes, at, o, first),
            }
        }
    }
}

pub(in crate::kernels) fn panel_avx512(ty: GgmlType) -> Option<PanelFn> {
    match ty {
        // SAFETY: the kernel table asks for AVX-512 kernels only when the
        // CPU has AVX-512 F/BW/VL and VNNI.
        GgmlType::Q4_K => Some(|n, w, a, arb, o| unsafe { panel_q4k(n, w, a, arb, o) }),
        _ => None,
    }
}
