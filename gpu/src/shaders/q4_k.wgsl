const INT_DOT: bool = false;
// 256 values in 144 bytes: d, dmin (f16), 12 bytes of 6-bit scales and
// mins for 8 sub-blocks, then 128 bytes of nibbles (low, then high, per 64).
const SUPER_BYTES: u32 = 144u;
fn dequant32(row: u32, c: u32) {
    let b = row + (c / 8u) * SUPER_BYTES;
    let j = c % 8u;
    let d = ld_f16(b);
    let dmin = ld_f16(b + 2u);
    let s = b + 4u;
    var sc: u32;
    var m: u32;
    if (j < 4u) {
        sc = ld_u8(s + j) & 63u;
        m = ld_u8(s + j + 4u) & 63u;
    } else {
        sc = (ld_u8(s + j + 4u) & 15u) | ((ld_u8(s + j - 4u) >> 6u) << 4u);
        m = (ld_u8(s + j + 4u) >> 4u) | ((ld_u8(s + j) >> 6u) << 4u);
    }
    let scale = d * f32(sc);
    let minv = dmin * f32(m);
    let qs = b + 16u + (j / 2u) * 32u;
    let shift = (j % 2u) * 4u;
    for (var i = 0u; i < 32u; i++) {
        vals[i] = scale * f32((ld_u8(qs + i) >> shift) & 15u) - minv;
    }
}
