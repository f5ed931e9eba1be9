//! Quantization of f32 weights into the GGUF types (llama-quantize's job).
//! The 32-element types round as ggml's reference quantizers do, so a row
//! dequantized and quantized again gives back its blocks; the K-quants fit
//! each sub-block's scale and minimum by a least-squares search.

use bytemuck::bytes_of;
use half::{bf16, f16};

use super::blocks::*;
use super::q8::abs_max;
use super::quantize_k;
use super::GgmlType;

/// Why a row could not be quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantizeError {
    /// prima has no quantizer for this type.
    Unsupported(GgmlType),
    /// The row is not a whole number of the type's blocks, or `out` is the wrong size.
    Shape { ty: GgmlType, elements: usize, bytes: usize },
}

impl core::fmt::Display for QuantizeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            QuantizeError::Unsupported(ty) => write!(f, "cannot quantize to {ty}"),
            QuantizeError::Shape { ty, elements, bytes } => {
                write!(f, "{elements} elements do not fill {bytes} bytes of {ty} blocks")
            }
        }
    }
}

impl core::error::Error for QuantizeError {}

/// Whether [`quantize_weights`] can write `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K)
}

/// Quantizes the weights `x` as `ty` into `out` (`ty.row_bytes(x.len())` bytes).
pub fn quantize_weights(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantizeError> {
    if !can_quantize(ty) {
        return Err(QuantizeError::Unsupported(ty));
    }
    if !x.len().is_multiple_of(ty.block_len()) || out.len() != ty.row_bytes(x.len()) {
        return Err(QuantizeError::Shape { ty, elements: x.len(), bytes: out.len() });
    }
    let blocks = out.chunks_exact_mut(ty.block_bytes()).zip(x.chunks_exact(ty.block_len()));
    match ty {
        GgmlType::F32 => blocks.for_each(|(o, x)| o.copy_from_slice(&x[0].to_le_bytes())),
        GgmlType::F16 => blocks.for_each(|(o, x)| o.copy_from_slice(&f16::from_f32(x[0]).to_le_bytes())),
        GgmlType::BF16 => blocks.for_each(|(o, x)| o.copy_from_slice(&bf16::from_f32(x[0]).to_le_bytes())),
        GgmlType::Q4_0 => blocks.for_each(|(o, x)| o.copy_from_slice(bytes_of(&q4_0(x)))),
        GgmlType::Q4_1 => blocks.for_each(|(o, x)| o.copy_from_slice(bytes_of(&q4_1(x)))),
        GgmlType::Q5_0 => blocks.for_each(|(o, x)| o.copy_from_slice(bytes_of(&q5_0(x)))),
        GgmlType::Q5_1 => blocks.for_each(|(o, x)| o.copy_from_slice(bytes_of(&q5_1(x)))),
        GgmlType::Q8_0 => blocks.for_each(|(o, x)| o.copy_from_slice(bytes_of(&q8_0(x)))),
        _ => blocks.for_each(|(o, x)| quantize_k::block(ty, x.try_into().expect("256-element blocks"), o)),
    }
    Ok(())
}

/// The element of largest magnitude, with its sign (the first one on ties).
pub(super) fn signed_abs_max(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// `1 / d`, or 0 for a zero scale (whose levels are all zero).
pub(super) fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Levels of a symmetric block: `x / d` moved up by `offset` and truncated,
/// as ggml's reference does (it adds one half before the cast).
fn symmetric_levels(x: &[f32], half_range: f32, top: u8) -> (f32, [u8; 32]) {
    let d = signed_abs_max(x) / -half_range;
    let id = inverse(d);
    let mut q = [0u8; 32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((v * id + half_range + 0.5) as i8).clamp(0, top as i8) as u8;
    }
    (d, q)
}

/// Levels of a block with a minimum: `(x - min) / d`, rounded.
fn offset_levels(x: &[f32], top: u8) -> (f32, f32, [u8; 32]) {
    let (lo, hi) = min_max(x);
    let d = (hi - lo) / top as f32;
    let id = inverse(d);
    let mut q = [0u8; 32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (((v - lo) * id + 0.5) as i8).clamp(0, top as i8) as u8;
    }
    (d, lo, q)
}

fn nibbles(q: &[u8; 32]) -> [u8; 16] {
    core::array::from_fn(|j| (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4))
}

/// The fifth bits of 32 levels, bit `j` for level `j`.
fn fifth_bits(q: &[u8; 32]) -> [u8; 4] {
    let bits = q.iter().enumerate().fold(0u32, |acc, (j, &v)| acc | (((v as u32 >> 4) & 1) << j));
    bits.to_le_bytes()
}

fn q4_0(x: &[f32]) -> BlockQ4_0 {
    let (d, q) = symmetric_levels(x, 8.0, 15);
    BlockQ4_0 { d: f16::from_f32(d), qs: nibbles(&q) }
}

fn q4_1(x: &[f32]) -> BlockQ4_1 {
    let (d, m, q) = offset_levels(x, 15);
    BlockQ4_1 { d: f16::from_f32(d), m: f16::from_f32(m), qs: nibbles(&q) }
}

fn q5_0(x: &[f32]) -> BlockQ5_0 {
    let (d, q) = symmetric_levels(x, 16.0, 31);
    BlockQ5_0 { d: f16::from_f32(d), qh: fifth_bits(&q), qs: nibbles(&q) }
}

fn q5_1(x: &[f32]) -> BlockQ5_1 {
    let (d, m, q) = offset_levels(x, 31);
    BlockQ5_1 { d: f16::from_f32(d), m: f16::from_f32(m), qh: fifth_bits(&q), qs: nibbles(&q) }
}

fn q8_0(x: &[f32]) -> BlockQ8_0 {
    let amax = abs_max(x);
    let d = amax / 127.0;
    let id = inverse(d);
    // Weights round half away from zero (ggml's reference), unlike activations.
    BlockQ8_0 { d: f16::from_f32(d), qs: core::array::from_fn(|j| libm::roundf(x[j] * id) as i8) }
}
