//! Scalar dot products: always built, and the oracle every SIMD kernel must
//! agree with.

use crate::quant::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use crate::quant::{decode_block256, decode_block32, ActFormat, GgmlType};
use bytemuck::pod_read_unaligned as read;
use half::{bf16, f16};

/// Dot product of one weight row of `ty` (`n` elements) with one activation
/// row encoded as `ty.act_format()`.
pub fn dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot_inline(ty, n, w, a)
}

/// [`tile`], always inlined: SIMD wrappers compile these same loops with
/// their instruction set enabled, so the compiler vectorizes the decoding
/// and integer sums while every float operation keeps the oracle's order.
#[inline(always)]
pub(super) fn tile_inline(ty: GgmlType, n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut super::TileOut) {
    for (o, wr) in out.iter_mut().zip(w) {
        for (y, ar) in o.iter_mut().zip(a) {
            *y = dot_inline(ty, n, wr, ar);
        }
    }
}

#[inline(always)]
fn dot_inline(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    match ty {
        GgmlType::F32 => w
            .chunks_exact(4)
            .zip(a.chunks_exact(4))
            .take(n)
            .map(|(x, y)| f32::from_le_bytes([x[0], x[1], x[2], x[3]]) * f32::from_le_bytes([y[0], y[1], y[2], y[3]]))
            .sum(),
        GgmlType::F16 => half_dot(w, a, n, |b| f16::from_le_bytes(b).to_f32()),
        GgmlType::BF16 => half_dot(w, a, n, |b| bf16::from_le_bytes(b).to_f32()),
        _ if ty.block_len() == 32 => dot_block32(ty, n, w, a),
        _ => dot_block256(ty, n, w, a),
    }
}

/// Every pair of `w` rows and `a` rows, one dot product each.
pub fn tile(ty: GgmlType, n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut super::TileOut) {
    tile_inline(ty, n, w, a, out)
}

#[inline(always)]
fn half_dot(w: &[u8], a: &[u8], n: usize, cvt: impl Fn([u8; 2]) -> f32) -> f32 {
    w.chunks_exact(2).zip(a.chunks_exact(2)).take(n).map(|(x, y)| cvt([x[0], x[1]]) * cvt([y[0], y[1]])).sum()
}

#[inline(always)]
fn dot_block32(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (bb, ab) = (ty.block_bytes(), if ty.act_format() == ActFormat::Q8_1 { 36 } else { 34 });
    let (mut acc, mut mins) = (0.0f32, 0.0f32);
    for (wb, abytes) in w.chunks_exact(bb).zip(a.chunks_exact(ab)).take(n / 32) {
        let Some(x) = decode_block32(ty, wb) else { return f32::NAN };
        let (da, sa, qa) = if ab == 36 {
            let y: BlockQ8_1 = read(abytes);
            (y.d.to_f32(), y.s.to_f32(), y.qs)
        } else {
            let y: BlockQ8_0 = read(abytes);
            (y.d.to_f32(), 0.0, y.qs)
        };
        let sumi: i32 = x.q.iter().zip(&qa).map(|(&p, &q)| p as i32 * q as i32).sum();
        acc += (x.d * da) * sumi as f32;
        mins += x.m * sa;
    }
    acc + mins
}

#[inline(always)]
fn dot_block256(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    let bb = ty.block_bytes();
    let mut acc = 0.0f32;
    for (wb, abytes) in w.chunks_exact(bb).zip(a.chunks_exact(292)).take(n / 256) {
        let Some(x) = decode_block256(ty, wb) else { return f32::NAN };
        let y: BlockQ8K = read(abytes);
        let (mut scaled, mut mins) = (0.0f32, 0.0f32);
        for g in 0..16 {
            let r = g * 16..g * 16 + 16;
            let isum: i32 = x.q[r.clone()].iter().zip(&y.qs[r]).map(|(&p, &q)| p as i32 * q as i32).sum();
            scaled += x.scale[g] * isum as f32;
            mins += x.min[g] * y.bsums[g] as f32;
        }
        acc += y.d * (scaled - mins);
    }
    acc
}

/// `sum(a[i] * b[i])` of f16 keys with f32 queries.
pub fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x.to_f32() * y).sum()
}

/// `out[i] += p * v[i]`.
pub fn axpy_f16(out: &mut [f32], p: f32, v: &[f16]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += p * x.to_f32();
    }
}
