//! Row-parallel products on NEON with dotprod (Q4_0, Q4_1, Q8_0), as on
//! x86-64 (`x86_64/gemm.rs`): each block of 8 rows is transposed once into
//! vectors of "4 consecutive weights of each of 4 rows", and the by-element
//! `sdot` multiplies one by a token's 4 activation bytes (a lane of the
//! loaded block), adding into 4 rows' integer sums at once. Every level
//! fits in an i8, so all products are signed x signed.

use crate::kernels::shared::{layout, Q4_0, Q4_1, Q8_0};
use crate::kernels::{GemmFn, GEMM_ROWS, GEMM_TOKENS};
use crate::quant::GgmlType;
use core::arch::aarch64::*;
use half::f16;

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// 16 bytes of `b` at `at` as one vector.
#[inline]
#[target_feature(enable = "neon")]
fn load16(b: &[u8], at: usize) -> uint8x16_t {
    let b = &b[at..at + 16];
    // SAFETY: `b` holds 16 readable bytes; NEON loads need no alignment.
    unsafe { vld1q_u8(b.as_ptr()) }
}

/// Dword `j` of each of 4 rows' 16 bytes, in lane `r`.
#[inline]
#[target_feature(enable = "neon")]
fn transpose4(rows: [uint8x16_t; 4]) -> [uint8x16_t; 4] {
    let r = rows.map(|v| vreinterpretq_u32_u8(v));
    let (t0, t1) = (vtrn1q_u32(r[0], r[1]), vtrn2q_u32(r[0], r[1]));
    let (t2, t3) = (vtrn1q_u32(r[2], r[3]), vtrn2q_u32(r[2], r[3]));
    let (a, b) = (vreinterpretq_u64_u32, vreinterpretq_u8_u64);
    [b(vtrn1q_u64(a(t0), a(t2))), b(vtrn1q_u64(a(t1), a(t3))), b(vtrn2q_u64(a(t0), a(t2))), b(vtrn2q_u64(a(t1), a(t3)))]
}

/// Block `b` of rows `w[4h..4h + 4]`: `groups[j]` holds, in lane `r`, row
/// `r`'s weights `4j..4j+4` as signed levels; then the rows' scales and
/// (Q4_1) minimums.
#[inline]
#[target_feature(enable = "neon")]
fn unpack4<const TY: u8>(w: &[&[u8]], b: usize) -> ([int8x16_t; 8], float32x4_t, float32x4_t) {
    let (wb, _, has_min) = layout(TY);
    let at = b * wb;
    let mut groups = [vdupq_n_s8(0); 8];
    let s = vreinterpretq_s8_u8;
    if TY == Q8_0 {
        for (half, base) in [(0, at + 2), (4, at + 18)] {
            let dwords = transpose4([0, 1, 2, 3].map(|r| load16(w[r], base)));
            for j in 0..4 {
                groups[half + j] = s(dwords[j]);
            }
        }
    } else {
        let qs = if has_min { at + 4 } else { at + 2 };
        let dwords = transpose4([0, 1, 2, 3].map(|r| load16(w[r], qs)));
        let offset = vdupq_n_s8(if TY == Q4_0 { 8 } else { 0 });
        for j in 0..4 {
            // A byte's low nibble is weight i, its high nibble weight i + 16.
            groups[j] = vsubq_s8(s(vandq_u8(dwords[j], vdupq_n_u8(0x0F))), offset);
            groups[j + 4] = vsubq_s8(s(vshrq_n_u8::<4>(dwords[j])), offset);
        }
    }
    let scales = [0, 1, 2, 3].map(|r| f16_at(w[r], at));
    let mins = [0, 1, 2, 3].map(|r| if has_min { f16_at(w[r], at + 2) } else { 0.0 });
    // SAFETY: both arrays are 4 readable f32s.
    let (d, m) = unsafe { (vld1q_f32(scales.as_ptr()), vld1q_f32(mins.as_ptr())) };
    (groups, d, m)
}

/// `acc + ` the 4 rows' dots of `groups[j]` with dword `LANE` of `qa`.
macro_rules! sdot_lane {
    ($acc:expr, $group:expr, $qa:expr, $lane:literal) => {{
        let mut acc: int32x4_t = $acc;
        // SAFETY: `sdot` only reads and writes the named vector registers;
        // this code is compiled (and called) only with dotprod available.
        unsafe {
            core::arch::asm!(
                concat!("sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[", $lane, "]"),
                acc = inout(vreg) acc, w = in(vreg) $group, a = in(vreg) $qa,
                options(pure, nomem, nostack),
            );
        }
        acc
    }};
}

/// One token's integer dots with 4 rows' block, two chains.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn block_sum(groups: &[int8x16_t; 8], qa: [int8x16_t; 2]) -> int32x4_t {
    let (mut even, mut odd) = (vdupq_n_s32(0), vdupq_n_s32(0));
    even = sdot_lane!(even, groups[0], qa[0], 0);
    odd = sdot_lane!(odd, groups[1], qa[0], 1);
    even = sdot_lane!(even, groups[2], qa[0], 2);
    odd = sdot_lane!(odd, groups[3], qa[0], 3);
    even = sdot_lane!(even, groups[4], qa[1], 0);
    odd = sdot_lane!(odd, groups[5], qa[1], 1);
    even = sdot_lane!(even, groups[6], qa[1], 2);
    odd = sdot_lane!(odd, groups[7], qa[1], 3);
    vaddq_s32(even, odd)
}

/// Tokens one pass carries: two halves of 8 weight groups and 2 accumulators a token.
const MAX_TOKENS: usize = 4;

#[target_feature(enable = "neon,dotprod")]
fn gemm<const TY: u8, const T: usize>(n: usize, w: &[&[u8]; GEMM_ROWS], a: &[&[u8]], out: &mut [[f32; GEMM_ROWS]]) {
    let (wb, ab, has_min) = layout(TY);
    let qa_at = if has_min { 4 } else { 2 };
    let nb = n / 32;
    let mut rows: [&[u8]; GEMM_ROWS] = [&[]; GEMM_ROWS];
    for r in 0..GEMM_ROWS {
        rows[r] = &w[r][..nb * wb];
    }
    let mut acc = [[vdupq_n_f32(0.0); 2]; T];
    for b in 0..nb {
        let halves = [unpack4::<TY>(&rows[..4], b), unpack4::<TY>(&rows[4..], b)];
        for t in 0..T {
            let blk = &a[t][b * ab..(b + 1) * ab];
            let s = vreinterpretq_s8_u8;
            let qa = [s(load16(blk, qa_at)), s(load16(blk, qa_at + 16))];
            let (da, sa) = (f16_at(blk, 0), if has_min { f16_at(blk, 2) } else { 0.0 });
            for (h, (groups, dw, mw)) in halves.iter().enumerate() {
                let sums = vcvtq_f32_s32(block_sum(groups, qa));
                acc[t][h] = vfmaq_f32(acc[t][h], sums, vmulq_n_f32(*dw, da));
                if has_min {
                    acc[t][h] = vfmaq_n_f32(acc[t][h], *mw, sa);
                }
            }
        }
    }
    for t in 0..T {
        // SAFETY: `out[t]` is 8 writable f32s.
        unsafe {
            vst1q_f32(out[t].as_mut_ptr(), acc[t][0]);
            vst1q_f32(out[t].as_mut_ptr().add(4), acc[t][1]);
        }
    }
}

/// Any number of tokens up to [`GEMM_TOKENS`], in passes of at most [`MAX_TOKENS`].
#[target_feature(enable = "neon,dotprod")]
fn gemm_any<const TY: u8>(n: usize, w: &[&[u8]; GEMM_ROWS], a: &[&[u8]], out: &mut [[f32; GEMM_ROWS]; GEMM_TOKENS]) {
    let mut done = 0;
    while done < a.len() {
        let take = (a.len() - done).min(MAX_TOKENS);
        let (a, o) = (&a[done..done + take], &mut out[done..done + take]);
        match take {
            1 => gemm::<TY, 1>(n, w, a, o),
            2 => gemm::<TY, 2>(n, w, a, o),
            3 => gemm::<TY, 3>(n, w, a, o),
            _ => gemm::<TY, 4>(n, w, a, o),
        }
        done += take;
    }
}

/// The NEON+dotprod row-parallel product for `ty`, if there is one. (No
/// prefetch: the aarch64 tiles do not prefetch either.)
pub(in crate::kernels) fn gemm_dotprod(ty: GgmlType) -> Option<GemmFn> {
    // SAFETY (every arm): the kernel table asks for these only when the
    // host reported dotprod.
    match ty {
        GgmlType::Q4_0 => Some(|n, w, a, o, _| unsafe { gemm_any::<Q4_0>(n, w, a, o) }),
        GgmlType::Q4_1 => Some(|n, w, a, o, _| unsafe { gemm_any::<Q4_1>(n, w, a, o) }),
        GgmlType::Q8_0 => Some(|n, w, a, o, _| unsafe { gemm_any::<Q8_0>(n, w, a, o) }),
        _ => None,
    }
}
