//! Quantization of f32 activations into the formats dot products consume.
//! The rounding follows ggml's x86 path so results stay faithful.

use super::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1, QK_K};
use super::ActFormat;
use bytemuck::bytes_of;
use half::{bf16, f16};

/// Round half to even, as `_mm256_round_ps` and ggml's `nearest_int` do.
/// Adding and removing 1.5 * 2^23 leaves the float unit's own rounding
/// (nearest, ties to even) to do the work: the same result as `rintf`, without a call.
fn round_even(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    if x.abs() < 4_194_304.0 {
        (x + SHIFT) - SHIFT
    } else {
        x // already integral (or NaN / infinite)
    }
}

pub(super) fn abs_max(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn q8_block(x: &[f32]) -> (f32, [i8; 32]) {
    let amax = abs_max(x);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; 32];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = round_even(v * id) as i8;
    }
    (d, qs)
}

/// Encodes `x` as `fmt` into `out`, which must be `fmt.row_bytes(x.len())` long.
pub fn quantize_row(fmt: ActFormat, x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(out.len(), fmt.row_bytes(x.len()));
    match fmt {
        ActFormat::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        ActFormat::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        ActFormat::Bf16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        ActFormat::Q8_0 => {
            for (o, xb) in out.chunks_exact_mut(34).zip(x.chunks_exact(32)) {
                let (d, qs) = q8_block(xb);
                o.copy_from_slice(bytes_of(&BlockQ8_0 { d: f16::from_f32(d), qs }));
            }
        }
        ActFormat::Q8_1 => {
            for (o, xb) in out.chunks_exact_mut(36).zip(x.chunks_exact(32)) {
                let (d, qs) = q8_block(xb);
                let sum: i32 = qs.iter().map(|&q| q as i32).sum();
                let b = BlockQ8_1 { d: f16::from_f32(d), s: f16::from_f32(d * sum as f32), qs };
                o.copy_from_slice(bytes_of(&b));
            }
        }
        ActFormat::Q8K => {
            for (o, xb) in out.chunks_exact_mut(292).zip(x.chunks_exact(QK_K)) {
                o.copy_from_slice(bytes_of(&q8k_block(xb)));
            }
        }
    }
}

fn q8k_block(x: &[f32]) -> BlockQ8K {
    let mut b = BlockQ8K { d: 0.0, qs: [0; 256], bsums: [0; 16] };
    // The value with the largest magnitude, sign kept (first wins on ties).
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return b;
    }
    let iscale = -127.0 / max;
    for (q, &v) in b.qs.iter_mut().zip(x) {
        *q = (round_even(iscale * v) as i32).min(127) as i8;
    }
    for (s, group) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
        *s = group.iter().map(|&q| q as i16).sum();
    }
    b.d = 1.0 / iscale;
    b
}
