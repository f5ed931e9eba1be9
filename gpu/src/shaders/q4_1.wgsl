const INT_DOT: bool = true;
const BLOCK_BYTES: u32 = 20u;
fn dequant32(row: u32, c: u32) {
    let b = row + c * BLOCK_BYTES;
    dscale = ld_f16(b);
    vmin = ld_f16(b + 2u);
    for (var i = 0u; i < 16u; i++) {
        let q = ld_u8(b + 4u + i);
        vals[i] = f32(q & 15u);
        vals[i + 16u] = f32(q >> 4u);
    }
}
