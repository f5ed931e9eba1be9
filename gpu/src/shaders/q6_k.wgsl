const INT_DOT: bool = false;
// 256 values in 210 bytes: 128 bytes of low nibbles, 64 of high 2-bit
// pairs, 16 signed 8-bit scales, then d (f16).
const SUPER_BYTES: u32 = 210u;
fn dequant32(row: u32, c: u32) {
    let b = row + (c / 8u) * SUPER_BYTES;
    let j = c % 8u;
    let n = j / 4u;
    let k = j % 4u;
    let d = ld_f16(b + 208u);
    let ql = b + 64u * n + (k % 2u) * 32u;
    let qh = b + 128u + 32u * n;
    let lshift = (k / 2u) * 4u;
    let hshift = 2u * k;
    for (var l = 0u; l < 32u; l++) {
        let q = ((ld_u8(ql + l) >> lshift) & 15u) | (((ld_u8(qh + l) >> hshift) & 3u) << 4u);
        let sc = ld_i8(b + 192u + 8u * n + l / 16u + 2u * k);
        vals[l] = d * sc * (f32(q) - 32.0);
    }
}
