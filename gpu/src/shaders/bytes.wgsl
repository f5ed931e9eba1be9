// Weights stay in their GGUF layout, read as bytes out of 32-bit words:
// blocks of 18 or 34 bytes do not fall on word boundaries.
@group(0) @binding(0) var<storage, read> W: array<u32>;

fn ld_u8(off: u32) -> u32 {
    return (W[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu;
}

fn ld_i8(off: u32) -> f32 {
    return f32((i32(ld_u8(off)) << 24u) >> 24u);
}

fn ld_f16(off: u32) -> f32 {
    return unpack2x16float(ld_u8(off) | (ld_u8(off + 1u) << 8u)).x;
}

// The 32 dequantized values of one 32-element chunk of a row.
var<private> vals: array<f32, 32>;
// What the chunk adds to every value (Q4_1's m), applied through the
// activations' block sum as the CPU's Q8_1 product does; 0 for other types.
var<private> vmin: f32;
// For 32-value block types: `vals` holds the block's integers and `dscale`
// its scale, so a product sums integers exactly, as the CPU does.
var<private> dscale: f32;
