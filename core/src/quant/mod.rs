//! Tensor element types, their block layouts, dequantization, and the
//! quantization of activations that integer dot products consume.

pub mod blocks;
mod decode;
pub mod dequant;
pub mod q8;
mod quantize;
mod quantize_k;
pub mod scheme;
mod synthetic;

#[cfg(test)]
mod quantize_tests;
#[cfg(test)]
mod tests;

pub use decode::{decode_block256, decode_block32, decode_levels256, k_scales, Block256, Block32, KScales};
pub use quantize::{can_quantize, quantize_weights, QuantizeError};
pub use synthetic::{random_matrix, random_row};

/// Tensor element types as numbered by GGUF/ggml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
}

/// (type, ggml id, name, elements per block, bytes per block, computable by prima)
const TABLE: [(GgmlType, u32, &str, usize, usize, bool); 29] = {
    use GgmlType::*;
    [
        (F32, 0, "F32", 1, 4, true),
        (F16, 1, "F16", 1, 2, true),
        (Q4_0, 2, "Q4_0", 32, 18, true),
        (Q4_1, 3, "Q4_1", 32, 20, true),
        (Q5_0, 6, "Q5_0", 32, 22, true),
        (Q5_1, 7, "Q5_1", 32, 24, true),
        (Q8_0, 8, "Q8_0", 32, 34, true),
        (Q8_1, 9, "Q8_1", 32, 36, false),
        (Q2_K, 10, "Q2_K", 256, 84, true),
        (Q3_K, 11, "Q3_K", 256, 110, true),
        (Q4_K, 12, "Q4_K", 256, 144, true),
        (Q5_K, 13, "Q5_K", 256, 176, true),
        (Q6_K, 14, "Q6_K", 256, 210, true),
        (Q8_K, 15, "Q8_K", 256, 292, false),
        (IQ2_XXS, 16, "IQ2_XXS", 256, 66, false),
        (IQ2_XS, 17, "IQ2_XS", 256, 74, false),
        (IQ3_XXS, 18, "IQ3_XXS", 256, 98, false),
        (IQ1_S, 19, "IQ1_S", 256, 50, false),
        (IQ4_NL, 20, "IQ4_NL", 32, 18, true),
        (IQ3_S, 21, "IQ3_S", 256, 110, false),
        (IQ2_S, 22, "IQ2_S", 256, 82, false),
        (IQ4_XS, 23, "IQ4_XS", 256, 136, true),
        (I8, 24, "I8", 1, 1, false),
        (I16, 25, "I16", 1, 2, false),
        (I32, 26, "I32", 1, 4, false),
        (I64, 27, "I64", 1, 8, false),
        (F64, 28, "F64", 1, 8, false),
        (IQ1_M, 29, "IQ1_M", 256, 56, false),
        (BF16, 30, "BF16", 1, 2, true),
    ]
};

impl GgmlType {
    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize, bool) {
        // The table lists every variant exactly once (checked by a test).
        TABLE.iter().find(|r| r.0 == self).unwrap_or(&TABLE[0])
    }

    pub fn from_id(id: u32) -> Option<Self> {
        TABLE.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        TABLE.iter().find(|r| r.2.eq_ignore_ascii_case(name)).map(|r| r.0)
    }

    pub fn id(self) -> u32 {
        self.row().1
    }

    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block.
    pub fn block_len(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.row().4
    }

    /// Whether prima can compute with tensors of this type.
    pub fn is_supported(self) -> bool {
        self.row().5
    }

    /// Bytes in a row of `n` elements (`n` must be a multiple of the block length).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_len() * self.block_bytes()
    }

    /// The activation format this weight type's dot product consumes.
    pub fn act_format(self) -> ActFormat {
        use GgmlType::*;
        match self {
            F16 => ActFormat::F16,
            BF16 => ActFormat::Bf16,
            Q4_0 | Q5_0 | Q8_0 | IQ4_NL => ActFormat::Q8_0,
            Q4_1 | Q5_1 => ActFormat::Q8_1,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS => ActFormat::Q8K,
            _ => ActFormat::F32,
        }
    }
}

impl core::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// How activations are encoded before a dot product with a weight row, the
/// same choice ggml makes, so results stay faithful to the reference engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActFormat {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q8_1,
    Q8K,
}

impl ActFormat {
    /// Bytes needed to hold `n` activations (`n` a multiple of the block length).
    pub fn row_bytes(self, n: usize) -> usize {
        match self {
            ActFormat::F32 => n * 4,
            ActFormat::F16 | ActFormat::Bf16 => n * 2,
            ActFormat::Q8_0 => n / 32 * 34,
            ActFormat::Q8_1 => n / 32 * 36,
            ActFormat::Q8K => n / 256 * 292,
        }
    }
}
