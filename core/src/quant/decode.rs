//! Decodes one block into integer levels plus float scales. Dequantization
//! and the scalar dot products share this, so the oracle has one definition
//! of each format.

use super::blocks::*;
use super::GgmlType;
use bytemuck::pod_read_unaligned as read;

/// A 32-element block: value `j` is `d * q[j] + m`.
#[derive(Debug, Clone, Copy)]
pub struct Block32 {
    pub q: [i8; 32],
    pub d: f32,
    pub m: f32,
}

/// A 256-element super-block: value `j` is `scale[j/16] * q[j] - min[j/16]`.
#[derive(Debug, Clone, Copy)]
pub struct Block256 {
    pub q: [i8; 256],
    pub scale: [f32; 16],
    pub min: [f32; 16],
}

/// Decodes a 32-element block of `ty` from exactly `ty.block_bytes()` bytes.
/// Returns `None` for types without 32-element blocks.
pub fn decode_block32(ty: GgmlType, bytes: &[u8]) -> Option<Block32> {
    let mut q = [0i8; 32];
    let (d, m) = match ty {
        GgmlType::Q4_0 => {
            let b: BlockQ4_0 = read(bytes);
            split_nibbles(&b.qs, &mut q, |v| v as i8 - 8);
            (b.d.to_f32(), 0.0)
        }
        GgmlType::Q4_1 => {
            let b: BlockQ4_1 = read(bytes);
            split_nibbles(&b.qs, &mut q, |v| v as i8);
            (b.d.to_f32(), b.m.to_f32())
        }
        GgmlType::Q5_0 => {
            let b: BlockQ5_0 = read(bytes);
            five_bit(&b.qs, u32::from_le_bytes(b.qh), &mut q, 16);
            (b.d.to_f32(), 0.0)
        }
        GgmlType::Q5_1 => {
            let b: BlockQ5_1 = read(bytes);
            five_bit(&b.qs, u32::from_le_bytes(b.qh), &mut q, 0);
            (b.d.to_f32(), b.m.to_f32())
        }
        GgmlType::Q8_0 => {
            let b: BlockQ8_0 = read(bytes);
            q = b.qs;
            (b.d.to_f32(), 0.0)
        }
        GgmlType::IQ4_NL => {
            let b: BlockIq4Nl = read(bytes);
            split_nibbles(&b.qs, &mut q, |v| IQ4NL_LEVELS[v as usize]);
            (b.d.to_f32(), 0.0)
        }
        _ => return None,
    };
    Some(Block32 { q, d, m })
}

fn split_nibbles(qs: &[u8; 16], q: &mut [i8; 32], level: impl Fn(u8) -> i8) {
    for j in 0..16 {
        q[j] = level(qs[j] & 0xF);
        q[j + 16] = level(qs[j] >> 4);
    }
}

fn five_bit(qs: &[u8; 16], qh: u32, q: &mut [i8; 32], offset: i8) {
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        q[j] = ((qs[j] & 0xF) as u32 | h0) as i8 - offset;
        q[j + 16] = ((qs[j] >> 4) as u32 | h1) as i8 - offset;
    }
}

/// A super-block's integer scales and minimums per 16 levels, and the two
/// float multipliers: level `j` is `d * scale[j/16] * q[j] - dmin * min[j/16]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KScales {
    pub scale: [i16; 16],
    pub min: [i16; 16],
    pub d: f32,
    pub dmin: f32,
}

/// The scales of a 256-element super-block of `ty`; `None` for other types.
#[inline(always)]
pub fn k_scales(ty: GgmlType, bytes: &[u8]) -> Option<KScales> {
    let mut k = KScales { scale: [0; 16], min: [0; 16], d: 0.0, dmin: 0.0 };
    match ty {
        GgmlType::Q2_K => {
            let b: BlockQ2K = read(bytes);
            (k.d, k.dmin) = (b.d.to_f32(), b.dmin.to_f32());
            for (g, &sc) in b.scales.iter().enumerate() {
                (k.scale[g], k.min[g]) = ((sc & 0xF) as i16, (sc >> 4) as i16);
            }
        }
        GgmlType::Q3_K => {
            let b: BlockQ3K = read(bytes);
            k.d = b.d.to_f32();
            let s = &b.scales;
            for g in 0..16 {
                let low = if g < 8 { s[g] & 0xF } else { s[g - 8] >> 4 };
                let high = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
                k.scale[g] = (low | (high << 4)) as i16 - 32;
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            // Both start with d, dmin and the same 12 scale bytes.
            let (d, dmin) = (read::<half::f16>(&bytes[0..2]), read::<half::f16>(&bytes[2..4]));
            (k.d, k.dmin) = (d.to_f32(), dmin.to_f32());
            let scales: [u8; 12] = read(&bytes[4..16]);
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, &scales);
                (k.scale[2 * j], k.scale[2 * j + 1]) = (sc as i16, sc as i16);
                (k.min[2 * j], k.min[2 * j + 1]) = (m as i16, m as i16);
            }
        }
        GgmlType::Q6_K => {
            let b: BlockQ6K = read(bytes);
            k.d = b.d.to_f32();
            for (s, &v) in k.scale.iter_mut().zip(&b.scales) {
                *s = v as i16;
            }
        }
        GgmlType::IQ4_XS => {
            let b: BlockIq4Xs = read(bytes);
            k.d = b.d.to_f32();
            for ib in 0..8 {
                let low = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
                let high = ((b.scales_h >> (2 * ib)) & 3) as u8;
                let sc = (low | (high << 4)) as i16 - 32;
                (k.scale[2 * ib], k.scale[2 * ib + 1]) = (sc, sc);
            }
        }
        _ => return None,
    }
    Some(k)
}

/// Decodes a 256-element super-block of `ty`. Returns `None` for other types.
/// Always inlined, so SIMD builds of the dot products vectorize it.
#[inline(always)]
pub fn decode_block256(ty: GgmlType, bytes: &[u8]) -> Option<Block256> {
    let k = k_scales(ty, bytes)?;
    let mut out = Block256 { q: [0; 256], scale: [0.0; 16], min: [0.0; 16] };
    for g in 0..16 {
        out.scale[g] = k.d * k.scale[g] as f32;
        out.min[g] = k.dmin * k.min[g] as f32;
    }
    decode_levels256(ty, bytes, &mut out.q);
    Some(out)
}

/// Only the levels of a 256-element super-block of `ty` (left untouched for
/// other types); [`k_scales`] has the scales.
#[inline(always)]
pub fn decode_levels256(ty: GgmlType, bytes: &[u8], q: &mut [i8; 256]) {
    match ty {
        GgmlType::Q2_K => q2k(&read(bytes), q),
        GgmlType::Q3_K => q3k(&read(bytes), q),
        GgmlType::Q4_K => q4k(&read(bytes), q),
        GgmlType::Q5_K => q5k(&read(bytes), q),
        GgmlType::Q6_K => q6k(&read(bytes), q),
        GgmlType::IQ4_XS => iq4xs(&read(bytes), q),
        _ => {}
    }
}

#[inline(always)]
fn q2k(b: &BlockQ2K, q: &mut [i8; 256]) {
    // Each 128-element half uses 32 bytes; 2-bit fields at shifts 0,2,4,6.
    for half in 0..2 {
        for shift_i in 0..4 {
            for l in 0..32 {
                let byte = b.qs[half * 32 + l];
                q[half * 128 + shift_i * 32 + l] = ((byte >> (2 * shift_i)) & 3) as i8;
            }
        }
    }
}

#[inline(always)]
fn q3k(b: &BlockQ3K, q: &mut [i8; 256]) {
    for half in 0..2 {
        for shift_i in 0..4 {
            let mask = 1u8 << (half * 4 + shift_i);
            for l in 0..32 {
                let low = ((b.qs[half * 32 + l] >> (2 * shift_i)) & 3) as i8;
                let high = if b.hmask[l] & mask != 0 { 0 } else { 4 };
                q[half * 128 + shift_i * 32 + l] = low - high;
            }
        }
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) in Q4_K/Q5_K.
#[inline(always)]
fn scale_min_k4(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

#[inline(always)]
fn q4k(b: &BlockQ4K, q: &mut [i8; 256]) {
    for chunk in 0..4 {
        for l in 0..32 {
            let byte = b.qs[chunk * 32 + l];
            q[chunk * 64 + l] = (byte & 0xF) as i8;
            q[chunk * 64 + 32 + l] = (byte >> 4) as i8;
        }
    }
}

#[inline(always)]
fn q5k(b: &BlockQ5K, q: &mut [i8; 256]) {
    for chunk in 0..4 {
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        for l in 0..32 {
            let byte = b.qs[chunk * 32 + l];
            let h = b.qh[l];
            q[chunk * 64 + l] = ((byte & 0xF) + if h & u1 != 0 { 16 } else { 0 }) as i8;
            q[chunk * 64 + 32 + l] = ((byte >> 4) + if h & u2 != 0 { 16 } else { 0 }) as i8;
        }
    }
}

#[inline(always)]
fn q6k(b: &BlockQ6K, q: &mut [i8; 256]) {
    for half in 0..2 {
        let (ql, qh) = (&b.ql[half * 64..], &b.qh[half * 32..]);
        let q = &mut q[half * 128..];
        for l in 0..32 {
            q[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            q[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            q[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            q[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
}

#[inline(always)]
fn iq4xs(b: &BlockIq4Xs, q: &mut [i8; 256]) {
    for ib in 0..8 {
        for j in 0..16 {
            let byte = b.qs[ib * 16 + j];
            q[ib * 32 + j] = IQ4NL_LEVELS[(byte & 0xF) as usize];
            q[ib * 32 + 16 + j] = IQ4NL_LEVELS[(byte >> 4) as usize];
        }
    }
}
