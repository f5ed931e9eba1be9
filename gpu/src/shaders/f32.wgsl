const INT_DOT: bool = false;
const BLOCK_BYTES: u32 = 128u;
fn dequant32(row: u32, c: u32) {
    let w = (row + c * BLOCK_BYTES) / 4u;
    for (var i = 0u; i < 32u; i++) {
        vals[i] = bitcast<f32>(W[w + i]);
    }
}
