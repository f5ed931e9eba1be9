const INT_DOT: bool = true;
const BLOCK_BYTES: u32 = 34u;
fn dequant32(row: u32, c: u32) {
    let b = row + c * BLOCK_BYTES;
    dscale = ld_f16(b);
    for (var i = 0u; i < 32u; i++) {
        vals[i] = ld_i8(b + 2u + i);
    }
}
