//! NEON tile kernels for the 32-element block types: `R` weight rows times
//! `T` activation rows per pass, as on x86-64. Every level here fits in an
//! i8 (unsigned types top out at 31), so all products are signed x signed.

use crate::kernels::shared::{layout, IQ4_NL, Q4_0, Q4_1, Q5_0, Q5_1};
use crate::kernels::{TileFn, TileOut};
use crate::quant::GgmlType;
use core::arch::aarch64::*;
use half::f16;

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// 16 bytes from `b` as one vector.
#[inline]
#[target_feature(enable = "neon")]
fn load16(b: &[u8]) -> uint8x16_t {
    let b = &b[..16];
    // SAFETY: `b` holds 16 readable bytes; NEON loads need no alignment.
    unsafe { vld1q_u8(b.as_ptr()) }
}

/// 16 packed nibble bytes as 32 levels: low nibbles, then high nibbles.
#[inline]
#[target_feature(enable = "neon")]
fn nibbles(qs: &[u8]) -> [uint8x16_t; 2] {
    let v = load16(qs);
    [vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v)]
}

/// Bit `j` of the 4-byte little-endian `qh` as `0x10` (set) or `0` in byte `j`.
#[inline]
#[target_feature(enable = "neon")]
fn fifth_bits(qh: &[u8]) -> [uint8x16_t; 2] {
    let select = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    let spread = |lo: u8, hi: u8| {
        let bytes = vcombine_u8(vdup_n_u8(lo), vdup_n_u8(hi));
        vandq_u8(vtstq_u8(bytes, select), vdupq_n_u8(0x10))
    };
    [spread(qh[0], qh[1]), spread(qh[2], qh[3])]
}

/// One weight block as 32 signed levels plus its scale and minimum.
#[inline]
#[target_feature(enable = "neon")]
fn unpack<const TY: u8>(wb: &[u8]) -> ([int8x16_t; 2], f32, f32) {
    let s = vreinterpretq_s8_u8;
    match TY {
        Q4_0 => {
            let [lo, hi] = nibbles(&wb[2..]);
            let eight = vdupq_n_s8(8);
            ([vsubq_s8(s(lo), eight), vsubq_s8(s(hi), eight)], f16_at(wb, 0), 0.0)
        }
        Q4_1 => {
            let [lo, hi] = nibbles(&wb[4..]);
            ([s(lo), s(hi)], f16_at(wb, 0), f16_at(wb, 2))
        }
        Q5_0 => {
            let ([lo, hi], [hlo, hhi]) = (nibbles(&wb[6..]), fifth_bits(&wb[2..6]));
            let sixteen = vdupq_n_s8(16);
            let q = [vsubq_s8(s(vorrq_u8(lo, hlo)), sixteen), vsubq_s8(s(vorrq_u8(hi, hhi)), sixteen)];
            (q, f16_at(wb, 0), 0.0)
        }
        Q5_1 => {
            let ([lo, hi], [hlo, hhi]) = (nibbles(&wb[8..]), fifth_bits(&wb[4..8]));
            ([s(vorrq_u8(lo, hlo)), s(vorrq_u8(hi, hhi))], f16_at(wb, 0), f16_at(wb, 2))
        }
        IQ4_NL => {
            let table = vreinterpretq_s8_u8(load16(bytemuck::cast_slice(&crate::quant::blocks::IQ4NL_LEVELS)));
            let [lo, hi] = nibbles(&wb[2..]);
            ([vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi)], f16_at(wb, 0), 0.0)
        }
        _ => ([s(load16(&wb[2..])), s(load16(&wb[18..]))], f16_at(wb, 0), 0.0),
    }
}

/// The tile kernels, stamped out once per instruction set: `$features` are
/// the target features and `$dot` sums the 32 products of two level pairs
/// into four i32 lanes.
macro_rules! tile_kernels {
    ($features:literal, $dot:expr) => {
        use super::*;

        /// `out[r][t] = dot(w[r], a[t])` for `r < R`, `t < T`.
        #[target_feature(enable = $features)]
        fn tile<const TY: u8, const R: usize, const T: usize>(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut TileOut) {
            let (wb, ab, has_min) = layout(TY);
            let qa_at = if has_min { 4 } else { 2 };
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
            let mut acc = [[vdupq_n_f32(0.0); T]; R];
            let mut mins = [[0.0f32; T]; R];
            for b in 0..nb {
                let mut wq = [[vdupq_n_s8(0); 2]; R];
                let (mut dw, mut mw) = ([0.0f32; R], [0.0f32; R]);
                for r in 0..R {
                    (wq[r], dw[r], mw[r]) = unpack::<TY>(&w[r][b * wb..(b + 1) * wb]);
                }
                for t in 0..T {
                    let blk = &a[t][b * ab..(b + 1) * ab];
                    let da = f16_at(blk, 0);
                    let qa =
                        [vreinterpretq_s8_u8(load16(&blk[qa_at..])), vreinterpretq_s8_u8(load16(&blk[qa_at + 16..]))];
                    let sa = if has_min { f16_at(blk, 2) } else { 0.0 };
                    for r in 0..R {
                        let sums: int32x4_t = $dot(wq[r], qa);
                        acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(sums), dw[r] * da);
                        mins[r][t] += mw[r] * sa;
                    }
                }
            }
            for r in 0..R {
                for t in 0..T {
                    out[r][t] = vaddvq_f32(acc[r][t]) + mins[r][t];
                }
            }
        }

        /// Any shape, by whole 4x4 / 4x1 / 1x4 tiles where possible and 1x1 elsewhere.
        #[target_feature(enable = $features)]
        pub(super) fn tile_any<const TY: u8>(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut TileOut) {
            tile_by_shape!(tile [TY] [] n, w, a, out)
        }
    };
}

mod neon {
    /// Widening multiplies, pairwise-added into i32 lanes.
    #[inline]
    #[target_feature(enable = "neon")]
    fn dot(x: [int8x16_t; 2], y: [int8x16_t; 2]) -> int32x4_t {
        let mut s = vdupq_n_s32(0);
        for i in 0..2 {
            s = vpadalq_s16(s, vmull_s8(vget_low_s8(x[i]), vget_low_s8(y[i])));
            s = vpadalq_s16(s, vmull_high_s8(x[i], y[i]));
        }
        s
    }
    tile_kernels!("neon", dot);
}

mod dotprod {
    /// `sdot`: four byte products summed into each i32 lane in one
    /// instruction (written as assembly: its intrinsic is not stable yet).
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    fn dot(x: [int8x16_t; 2], y: [int8x16_t; 2]) -> int32x4_t {
        let mut acc = vdupq_n_s32(0);
        for i in 0..2 {
            // SAFETY: `sdot` only reads and writes the named vector registers;
            // this function is compiled (and called) only with dotprod available.
            unsafe {
                core::arch::asm!(
                    "sdot {acc:v}.4s, {x:v}.16b, {y:v}.16b",
                    acc = inout(vreg) acc, x = in(vreg) x[i], y = in(vreg) y[i],
                    options(pure, nomem, nostack),
                );
            }
        }
        acc
    }
    tile_kernels!("neon,dotprod", dot);
}

/// The NEON tile kernel for `ty`, if it is a 32-element block type.
pub(in crate::kernels) fn tile_neon(ty: GgmlType) -> Option<TileFn> {
    block32_table!(neon, ty)
}

/// The NEON+dotprod tile kernel for `ty`, if it is a 32-element block type.
pub(in crate::kernels) fn tile_dotprod(ty: GgmlType) -> Option<TileFn> {
    block32_table!(dotprod, ty)
}
