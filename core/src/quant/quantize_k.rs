//! K-quant quantizers: each sub-block gets a float scale (and minimum) by a
//! weighted least-squares search, the scales are then quantized against
//! the super-block's `d` (and `dmin`), and the levels are recomputed with
//! the scales as stored. The packing mirrors `decode.rs` exactly.

use bytemuck::bytes_of;
use half::f16;

use super::blocks::*;
use super::quantize::{inverse, signed_abs_max};
use super::GgmlType;

/// Candidate scales tried around the min/max one.
const STEPS: i32 = 20;

fn round(x: f32) -> i32 {
    libm::roundf(x) as i32
}

/// Weights favouring large values, as the error that matters most.
fn weights(x: &[f32], out: &mut [f32]) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let base = libm::sqrtf(mean_sq);
    out.iter_mut().zip(x).for_each(|(w, v)| *w = base + v.abs());
}

/// Fits `x ≈ scale * q - min` with `q` in `0..=top` and `min ≥ 0`,
/// returning `(scale, min)`.
fn fit_with_min(x: &[f32], w: &[f32], top: i32) -> (f32, f32) {
    let (lo, hi) = x.iter().fold((0.0f32, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if hi <= lo {
        return (0.0, -lo);
    }
    let error = |scale: f32, min: f32| -> f32 {
        let inv = 1.0 / scale;
        x.iter()
            .zip(w)
            .map(|(&v, &wi)| {
                let q = round((v + min) * inv).clamp(0, top) as f32;
                let e = scale * q - min - v;
                wi * e * e
            })
            .sum()
    };
    let mut best = ((hi - lo) / top as f32, -lo);
    let mut best_err = error(best.0, best.1);
    for step in -STEPS / 2..=STEPS / 2 {
        let inv = (top as f32 + 0.1 * step as f32) / (hi - lo);
        // Least squares for scale and min given these levels.
        let (mut sw, mut sl, mut sll, mut sx, mut slx) = (0.0f32, 0.0, 0.0, 0.0, 0.0);
        for (&v, &wi) in x.iter().zip(w) {
            let l = round(inv * (v - lo)).clamp(0, top) as f32;
            (sw, sl, sll, sx, slx) = (sw + wi, sl + wi * l, sll + wi * l * l, sx + wi * v, slx + wi * l * v);
        }
        let det = sw * sll - sl * sl;
        if det <= 0.0 {
            continue;
        }
        let scale = (sw * slx - sx * sl) / det;
        let min = -((sll * sx - sl * slx) / det);
        let (scale, min) = if min < 0.0 { (slx / sll, 0.0) } else { (scale, min) };
        if !(scale > 0.0 && scale.is_finite()) {
            continue;
        }
        let err = error(scale, min);
        if err < best_err {
            (best, best_err) = ((scale, min), err);
        }
    }
    best
}

/// Fits `x ≈ scale * q` with `q` in `-half..half`, returning `scale`
/// (negative when the largest magnitude is positive, as ggml does).
fn fit_symmetric(x: &[f32], w: &[f32], half: i32) -> f32 {
    let max = signed_abs_max(x);
    if max == 0.0 {
        return 0.0;
    }
    let error = |scale: f32| -> f32 {
        x.iter()
            .zip(w)
            .map(|(&v, &wi)| {
                let q = round(v / scale).clamp(-half, half - 1) as f32;
                let e = scale * q - v;
                wi * e * e
            })
            .sum()
    };
    let mut best = max / -(half as f32);
    let mut best_err = error(best);
    for step in -STEPS / 2..=STEPS / 2 {
        let inv = -(half as f32 + 0.1 * step as f32) / max;
        let (mut slx, mut sll) = (0.0f32, 0.0f32);
        for (&v, &wi) in x.iter().zip(w) {
            let l = round(inv * v).clamp(-half, half - 1) as f32;
            (slx, sll) = (slx + wi * l * v, sll + wi * l * l);
        }
        if sll <= 0.0 {
            continue;
        }
        let scale = slx / sll;
        let err = error(scale);
        if scale != 0.0 && err < best_err {
            (best, best_err) = (scale, err);
        }
    }
    best
}

/// Quantizes unsigned sub-block scales (or minimums) to `0..=top` against a
/// shared multiplier, which is returned rounded to f16 as stored.
fn quantize_scales<const N: usize>(values: &[f32; N], top: i32) -> (f16, [i32; N]) {
    let max = values.iter().fold(0.0f32, |m, &v| m.max(v));
    let d = f16::from_f32(max / top as f32);
    let inv = inverse(d.to_f32());
    (d, core::array::from_fn(|i| round(values[i] * inv).clamp(0, top)))
}

/// The same for signed scales, to `-half..half`.
fn quantize_signed_scales(values: &[f32; 16], half: i32) -> (f16, [i32; 16]) {
    let max = signed_abs_max(values);
    let d = f16::from_f32(max / -(half as f32));
    let inv = inverse(d.to_f32());
    (d, core::array::from_fn(|i| round(values[i] * inv).clamp(-half, half - 1)))
}

/// Levels for `x` given its stored scale and minimum.
fn levels(x: &[f32], scale: f32, min: f32, lo: i32, hi: i32, q: &mut [i32]) {
    let inv = inverse(scale);
    q.iter_mut().zip(x).for_each(|(q, &v)| *q = round((v + min) * inv).clamp(lo, hi));
}

/// Quantizes a 256-element super-block of `ty` (a K-quant) into `out`.
pub(super) fn block(ty: GgmlType, x: &[f32; QK_K], out: &mut [u8]) {
    let mut w = [0.0f32; QK_K];
    weights(x, &mut w);
    let mut q = [0i32; QK_K];
    match ty {
        GgmlType::Q2_K => out.copy_from_slice(bytes_of(&q2_k(x, &w, &mut q))),
        GgmlType::Q3_K => out.copy_from_slice(bytes_of(&q3_k(x, &w, &mut q))),
        GgmlType::Q4_K => out.copy_from_slice(bytes_of(&q4_k(x, &w, &mut q))),
        GgmlType::Q5_K => out.copy_from_slice(bytes_of(&q5_k(x, &w, &mut q))),
        GgmlType::Q6_K => out.copy_from_slice(bytes_of(&q6_k(x, &w, &mut q))),
        _ => unreachable!("quantize_weights only sends K-quants here"),
    }
}

/// Scales and minimums of `N` sub-blocks, quantized to `top_scale`, and
/// the levels `0..=top` under them. Returns `(d, dmin, scales, mins)`.
fn with_mins<const N: usize>(
    x: &[f32; QK_K],
    w: &[f32; QK_K],
    top: i32,
    top_scale: i32,
    q: &mut [i32; QK_K],
) -> (f16, f16, [i32; N], [i32; N]) {
    let len = QK_K / N;
    let mut scales = [0.0f32; N];
    let mut mins = [0.0f32; N];
    for j in 0..N {
        (scales[j], mins[j]) = fit_with_min(&x[j * len..][..len], &w[j * len..][..len], top);
    }
    let (d, ls) = quantize_scales(&scales, top_scale);
    let (dmin, lm) = quantize_scales(&mins, top_scale);
    for j in 0..N {
        let (scale, min) = (d.to_f32() * ls[j] as f32, dmin.to_f32() * lm[j] as f32);
        levels(&x[j * len..][..len], scale, min, 0, top, &mut q[j * len..][..len]);
    }
    (d, dmin, ls, lm)
}

/// Signed scales of 16 sub-blocks quantized to `-scale_half..scale_half`,
/// and the levels `-half..half` under them. Returns `(d, scales)`.
fn symmetric16(x: &[f32; QK_K], w: &[f32; QK_K], half: i32, scale_half: i32, q: &mut [i32; QK_K]) -> (f16, [i32; 16]) {
    let scales: [f32; 16] = core::array::from_fn(|j| fit_symmetric(&x[j * 16..][..16], &w[j * 16..][..16], half));
    let (d, ls) = quantize_signed_scales(&scales, scale_half);
    for j in 0..16 {
        levels(&x[j * 16..][..16], d.to_f32() * ls[j] as f32, 0.0, -half, half - 1, &mut q[j * 16..][..16]);
    }
    (d, ls)
}

fn q2_k(x: &[f32; QK_K], w: &[f32; QK_K], q: &mut [i32; QK_K]) -> BlockQ2K {
    let (d, dmin, ls, lm) = with_mins::<16>(x, w, 3, 15, q);
    let mut b = BlockQ2K { scales: [0; 16], qs: [0; 64], d, dmin };
    for g in 0..16 {
        b.scales[g] = (ls[g] | (lm[g] << 4)) as u8;
    }
    pack_2bit(q, &mut b.qs);
    b
}

/// The low two bits of each level: byte `half*32 + l` holds levels
/// `half*128 + shift*32 + l` at bit `2*shift`.
fn pack_2bit(q: &[i32; QK_K], qs: &mut [u8; 64]) {
    for (i, &v) in q.iter().enumerate() {
        let (half, shift, l) = (i / 128, (i % 128) / 32, i % 32);
        qs[half * 32 + l] |= ((v & 3) as u8) << (2 * shift);
    }
}

fn q3_k(x: &[f32; QK_K], w: &[f32; QK_K], q: &mut [i32; QK_K]) -> BlockQ3K {
    let (d, ls) = symmetric16(x, w, 4, 32, q);
    let mut b = BlockQ3K { hmask: [0; 32], qs: [0; 64], scales: [0; 12], d };
    for (g, &s) in ls.iter().enumerate() {
        let s = (s + 32) as u8;
        let low = s & 0xF;
        if g < 8 {
            b.scales[g] |= low;
        } else {
            b.scales[g - 8] |= low << 4;
        }
        b.scales[8 + g % 4] |= (s >> 4) << (2 * (g / 4));
    }
    let unsigned: [i32; QK_K] = core::array::from_fn(|i| q[i] + 4);
    pack_2bit(&unsigned, &mut b.qs);
    for (i, &u) in unsigned.iter().enumerate() {
        let (half, shift, l) = (i / 128, (i % 128) / 32, i % 32);
        if u >= 4 {
            b.hmask[l] |= 1 << (half * 4 + shift);
        }
    }
    b
}

/// Q4_K/Q5_K's 12 bytes of 6-bit scales and minimums (see `scale_min_k4`).
fn pack_scales_k4(ls: &[i32; 8], lm: &[i32; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = (ls[j] as u8) | (((ls[j + 4] >> 4) as u8) << 6);
        s[j + 4] = (lm[j] as u8) | (((lm[j + 4] >> 4) as u8) << 6);
        s[j + 8] = ((ls[j + 4] & 0xF) as u8) | (((lm[j + 4] & 0xF) as u8) << 4);
    }
    s
}

/// Low nibbles of 256 levels: byte `chunk*32 + l` holds levels
/// `chunk*64 + l` and `chunk*64 + 32 + l`.
fn pack_nibbles(q: &[i32; QK_K]) -> [u8; 128] {
    core::array::from_fn(|i| {
        let (chunk, l) = (i / 32, i % 32);
        ((q[chunk * 64 + l] & 0xF) | ((q[chunk * 64 + 32 + l] & 0xF) << 4)) as u8
    })
}

fn q4_k(x: &[f32; QK_K], w: &[f32; QK_K], q: &mut [i32; QK_K]) -> BlockQ4K {
    let (d, dmin, ls, lm) = with_mins::<8>(x, w, 15, 63, q);
    BlockQ4K { d, dmin, scales: pack_scales_k4(&ls, &lm), qs: pack_nibbles(q) }
}

fn q5_k(x: &[f32; QK_K], w: &[f32; QK_K], q: &mut [i32; QK_K]) -> BlockQ5K {
    let (d, dmin, ls, lm) = with_mins::<8>(x, w, 31, 63, q);
    let mut qh = [0u8; 32];
    for (i, &v) in q.iter().enumerate() {
        let (chunk, second, l) = (i / 64, (i % 64) / 32, i % 32);
        if v >= 16 {
            qh[l] |= 1 << (2 * chunk + second);
        }
    }
    BlockQ5K { d, dmin, scales: pack_scales_k4(&ls, &lm), qh, qs: pack_nibbles(q) }
}

fn q6_k(x: &[f32; QK_K], w: &[f32; QK_K], q: &mut [i32; QK_K]) -> BlockQ6K {
    let (d, ls) = symmetric16(x, w, 32, 128, q);
    let mut b = BlockQ6K { ql: [0; 128], qh: [0; 64], scales: [0; 16], d };
    for (s, &l) in b.scales.iter_mut().zip(&ls) {
        *s = l as i8;
    }
    for half in 0..2 {
        let u = |i: usize| (q[half * 128 + i] + 32) as u8;
        for l in 0..32 {
            b.ql[half * 64 + l] = (u(l) & 0xF) | ((u(l + 64) & 0xF) << 4);
            b.ql[half * 64 + l + 32] = (u(l + 32) & 0xF) | ((u(l + 96) & 0xF) << 4);
            b.qh[half * 32 + l] =
                (u(l) >> 4) | ((u(l + 32) >> 4) << 2) | ((u(l + 64) >> 4) << 4) | ((u(l + 96) >> 4) << 6);
        }
    }
    b
}
