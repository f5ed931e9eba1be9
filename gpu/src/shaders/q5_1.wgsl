// 32 values in 24 bytes: d and m (f16), 32 high bits, 16 bytes of low
// nibbles; m goes through the activations' block sums, as for Q4_1.
const INT_DOT: bool = true;
const BLOCK_BYTES: u32 = 24u;
fn dequant32(row: u32, c: u32) {
    let b = row + c * BLOCK_BYTES;
    dscale = ld_f16(b);
    vmin = ld_f16(b + 2u);
    let qh = ld_u8(b + 4u) | (ld_u8(b + 5u) << 8u) | (ld_u8(b + 6u) << 16u) | (ld_u8(b + 7u) << 24u);
    for (var j = 0u; j < 16u; j++) {
        let q = ld_u8(b + 8u + j);
        let h0 = ((qh >> j) << 4u) & 16u;
        let h1 = (qh >> (j + 12u)) & 16u;
        vals[j] = f32((q & 15u) | h0);
        vals[j + 16u] = f32((q >> 4u) | h1);
    }
}
