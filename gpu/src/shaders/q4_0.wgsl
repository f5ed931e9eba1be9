const INT_DOT: bool = true;
const BLOCK_BYTES: u32 = 18u;
fn dequant32(row: u32, c: u32) {
    let b = row + c * BLOCK_BYTES;
    dscale = ld_f16(b);
    for (var i = 0u; i < 16u; i++) {
        let q = ld_u8(b + 2u + i);
        vals[i] = f32(q & 15u) - 8.0;
        vals[i + 16u] = f32(q >> 4u) - 8.0;
    }
}
