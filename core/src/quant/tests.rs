//! Dequantization against blocks computed by hand.

use super::blocks::*;
use super::dequant::{dequantize_row, DequantError};
use super::*;
use bytemuck::bytes_of;
use half::f16;

fn deq(ty: GgmlType, bytes: &[u8]) -> alloc::vec::Vec<f32> {
    let mut out = alloc::vec![0.0; bytes.len() / ty.block_bytes() * ty.block_len()];
    dequantize_row(ty, bytes, &mut out).unwrap();
    out
}

fn h(v: f32) -> f16 {
    f16::from_f32(v)
}

#[test]
fn every_type_round_trips_its_id_and_name() {
    for row in TABLE.iter() {
        assert_eq!(GgmlType::from_id(row.1), Some(row.0));
        assert_eq!(GgmlType::from_name(row.2), Some(row.0));
        assert_eq!(row.0.block_bytes(), row.4);
    }
}

#[test]
fn q4_0_block() {
    // qs[0] = 0x1F: low nibble 15 -> (15-8)*0.5, high nibble 1 -> (1-8)*0.5.
    let mut qs = [0x88u8; 16];
    qs[0] = 0x1F;
    let y = deq(GgmlType::Q4_0, bytes_of(&BlockQ4_0 { d: h(0.5), qs }));
    assert_eq!((y[0], y[16], y[1]), (3.5, -3.5, 0.0));
}

#[test]
fn q4_1_block() {
    let mut qs = [0u8; 16];
    qs[3] = 0xA2;
    let y = deq(GgmlType::Q4_1, bytes_of(&BlockQ4_1 { d: h(0.25), m: h(-1.0), qs }));
    assert_eq!((y[3], y[19], y[0]), (2.0 * 0.25 - 1.0, 10.0 * 0.25 - 1.0, -1.0));
}

#[test]
fn q5_0_block() {
    // Element 0 gets its high bit from qh bit 0; element 16 from qh bit 16.
    let qh = (1u32 | (1 << 16)).to_le_bytes();
    let mut qs = [0u8; 16];
    qs[0] = 0x32;
    let y = deq(GgmlType::Q5_0, bytes_of(&BlockQ5_0 { d: h(2.0), qh, qs }));
    assert_eq!((y[0], y[16], y[1]), ((18.0 - 16.0) * 2.0, (19.0 - 16.0) * 2.0, -32.0));
}

#[test]
fn q5_1_block() {
    let qh = (1u32 << 31).to_le_bytes();
    let y = deq(GgmlType::Q5_1, bytes_of(&BlockQ5_1 { d: h(1.0), m: h(0.5), qh, qs: [0x11; 16] }));
    assert_eq!((y[0], y[31], y[15]), (1.5, 17.5, 1.5));
}

#[test]
fn q8_0_block() {
    let mut qs = [0i8; 32];
    qs[5] = -100;
    let y = deq(GgmlType::Q8_0, bytes_of(&BlockQ8_0 { d: h(0.125), qs }));
    assert_eq!(y[5], -12.5);
}

#[test]
fn iq4_nl_block() {
    let y = deq(GgmlType::IQ4_NL, bytes_of(&BlockIq4Nl { d: h(1.0), qs: [0xF0; 16] }));
    assert_eq!((y[0], y[16]), (-127.0, 113.0));
}

#[test]
fn q2_k_block() {
    // Group 0: scale nibble 3, min nibble 1; element 0 = 2-bit value 2.
    let mut b = BlockQ2K { scales: [0; 16], qs: [0; 64], d: h(0.5), dmin: h(0.25) };
    b.scales[0] = 0x13;
    b.qs[0] = 0b10;
    b.qs[1] = 0b1100; // element 32 (shift 2) of half 0 -> value 3, group 2.
    b.scales[2] = 0x02;
    let y = deq(GgmlType::Q2_K, bytes_of(&b));
    assert_eq!(y[0], 0.5 * 3.0 * 2.0 - 0.25);
    assert_eq!(y[33], 0.5 * 2.0 * 3.0);
}

#[test]
fn q3_k_block() {
    // Scale of group 0 = (low 4 bits from scales[0]) | (2 high bits from scales[8]) - 32.
    let mut b = BlockQ3K { hmask: [0xFF; 32], qs: [0; 64], scales: [0; 12], d: h(1.0) };
    b.scales[0] = 0x05;
    b.scales[8] = 0x02; // high bits 2 -> scale = 5 | 32 = 37 -> 5.
    b.qs[0] = 0b11;
    let y = deq(GgmlType::Q3_K, bytes_of(&b));
    assert_eq!(y[0], 5.0 * 3.0);
    b.hmask[0] = 0; // a cleared high bit subtracts 4.
    assert_eq!(deq(GgmlType::Q3_K, bytes_of(&b))[0], -5.0);
}

#[test]
fn q4_k_block() {
    let mut b = BlockQ4K { d: h(0.5), dmin: h(1.0), scales: [0; 12], qs: [0; 128] };
    b.scales[0] = 4; // sub-block 0 scale
    b.scales[4] = 3; // sub-block 0 min
    b.scales[1] = 2; // sub-block 1 scale
    b.qs[0] = 0x97;
    let y = deq(GgmlType::Q4_K, bytes_of(&b));
    assert_eq!(y[0], 0.5 * 4.0 * 7.0 - 3.0);
    assert_eq!(y[32], 0.5 * 2.0 * 9.0);
}

#[test]
fn q5_k_block() {
    let mut b = BlockQ5K { d: h(1.0), dmin: h(0.0), scales: [0; 12], qh: [0; 32], qs: [0; 128] };
    b.scales[0] = 1;
    b.qh[0] = 1;
    b.qs[0] = 0x02;
    assert_eq!(deq(GgmlType::Q5_K, bytes_of(&b))[0], 18.0);
}

#[test]
fn q6_k_block() {
    let mut b = BlockQ6K { ql: [0; 128], qh: [0; 64], scales: [0; 16], d: h(0.5) };
    b.scales[0] = -2;
    b.ql[0] = 0x05;
    b.qh[0] = 0b10; // high 2 bits of element 0 = 2 -> q = 5 | 32 = 37 - 32 = 5.
    assert_eq!(deq(GgmlType::Q6_K, bytes_of(&b))[0], 0.5 * -2.0 * 5.0);
}

#[test]
fn iq4_xs_block() {
    let mut b = BlockIq4Xs { d: h(1.0), scales_h: 0b10, scales_l: [0x01, 0, 0, 0], qs: [0; 128] };
    b.qs[0] = 0x0F;
    // ls = 1 | (2 << 4) = 33 -> dl = 1.
    assert_eq!(deq(GgmlType::IQ4_XS, bytes_of(&b))[0], 113.0);
}

#[test]
fn float_types() {
    assert_eq!(deq(GgmlType::F16, &h(1.5).to_le_bytes()), [1.5]);
    assert_eq!(deq(GgmlType::BF16, &half::bf16::from_f32(-2.0).to_le_bytes()), [-2.0]);
    assert_eq!(deq(GgmlType::F32, &0.25f32.to_le_bytes()), [0.25]);
}

#[test]
fn rejects_wrong_length_and_unsupported_types() {
    let mut out = [0.0; 32];
    assert!(matches!(dequantize_row(GgmlType::Q4_0, &[0; 17], &mut out), Err(DequantError::LengthMismatch { .. })));
    let mut out = [0.0; 256];
    assert_eq!(
        dequantize_row(GgmlType::IQ2_XXS, &[0; 66], &mut out),
        Err(DequantError::Unsupported(GgmlType::IQ2_XXS))
    );
}
