//! Dequantization of a row of any supported type to f32.

use super::{decode_block256, decode_block32, GgmlType};
use half::{bf16, f16};

/// Why a row could not be dequantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DequantError {
    Unsupported(GgmlType),
    /// `bytes` does not hold exactly `out.len()` elements of the type.
    LengthMismatch {
        ty: GgmlType,
        bytes: usize,
        elements: usize,
    },
}

impl core::fmt::Display for DequantError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DequantError::Unsupported(ty) => write!(f, "tensor type {ty} is not supported"),
            DequantError::LengthMismatch { ty, bytes, elements } => {
                write!(f, "{bytes} bytes do not hold {elements} elements of {ty}")
            }
        }
    }
}

impl core::error::Error for DequantError {}

/// Dequantizes `bytes` (a whole number of blocks) into `out`.
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    if !ty.is_supported() {
        return Err(DequantError::Unsupported(ty));
    }
    let (bl, bb) = (ty.block_len(), ty.block_bytes());
    if !out.len().is_multiple_of(bl) || bytes.len() != out.len() / bl * bb {
        return Err(DequantError::LengthMismatch { ty, bytes: bytes.len(), elements: out.len() });
    }
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ if bl == 32 => {
            for (o, c) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(bb)) {
                let b = decode_block32(ty, c).ok_or(DequantError::Unsupported(ty))?;
                for (y, &q) in o.iter_mut().zip(&b.q) {
                    *y = q as f32 * b.d + b.m;
                }
            }
        }
        _ => {
            for (o, c) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(bb)) {
                let b = decode_block256(ty, c).ok_or(DequantError::Unsupported(ty))?;
                for (j, y) in o.iter_mut().enumerate() {
                    *y = b.scale[j / 16] * b.q[j] as f32 - b.min[j / 16];
                }
            }
        }
    }
    Ok(())
}
