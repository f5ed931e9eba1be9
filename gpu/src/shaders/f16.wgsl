const INT_DOT: bool = false;
const BLOCK_BYTES: u32 = 64u;
fn dequant32(row: u32, c: u32) {
    let w = (row + c * BLOCK_BYTES) / 4u;
    for (var i = 0u; i < 16u; i++) {
        let p = unpack2x16float(W[w + i]);
        vals[2u * i] = p.x;
        vals[2u * i + 1u] = p.y;
    }
}
