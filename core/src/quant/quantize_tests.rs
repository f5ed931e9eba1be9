//! The quantizers against the dequantization oracle.

use alloc::vec;
use alloc::vec::Vec;

use super::dequant::dequantize_row;
use super::*;
use crate::sampler::Rng;

/// Weight-like rows: roughly normal values with a few outliers.
fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let normal = (0..4).map(|_| rng.next_f64() as f32 - 0.5).sum::<f32>() * 0.05;
            if i % 97 == 0 {
                normal * 8.0
            } else {
                normal
            }
        })
        .collect()
}

fn round_trip(ty: GgmlType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = vec![0u8; ty.row_bytes(x.len())];
    quantize_weights(ty, x, &mut bytes).unwrap();
    let mut back = vec![0.0; x.len()];
    dequantize_row(ty, &bytes, &mut back).unwrap();
    (bytes, back)
}

/// Root-mean-square error relative to the values' own RMS.
fn relative_rms_error(x: &[f32], y: &[f32]) -> f32 {
    let err: f32 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
    let norm: f32 = x.iter().map(|a| a * a).sum();
    libm::sqrtf(err / norm)
}

#[test]
fn every_type_round_trips_within_its_precision() {
    use GgmlType::*;
    // Bounds at about 1.2x what these rows measure (the outliers make
    // the 32-element blocks that hold one coarse).
    let cases = [
        (F32, 0.0),
        (F16, 3e-4),
        (BF16, 2.5e-3),
        (Q8_0, 0.011),
        (Q6_K, 0.031),
        (Q5_1, 0.056),
        (Q5_0, 0.086),
        (Q5_K, 0.054),
        (Q4_1, 0.117),
        (Q4_0, 0.17),
        (Q4_K, 0.108),
        (Q3_K, 0.235),
        (Q2_K, 0.36),
    ];
    let x = weights(4096, 7);
    let mut report = Vec::new();
    for (ty, bound) in cases {
        let (_, back) = round_trip(ty, &x);
        let err = relative_rms_error(&x, &back);
        report.push(alloc::format!("{ty}: {err:.4}"));
        assert!(err <= bound, "{ty}: relative RMS error {err} over {bound}; all: {report:?}");
    }
}

#[test]
fn more_bits_mean_less_error() {
    use GgmlType::*;
    let x = weights(2048, 11);
    let err = |ty| relative_rms_error(&x, &round_trip(ty, &x).1);
    let k = [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K].map(err);
    assert!(k.windows(2).all(|w| w[1] < w[0]), "{k:?}");
    assert!(err(Q4_0) > err(Q5_0) && err(Q5_0) > err(Q8_0));
    assert!(err(Q4_1) > err(Q5_1));
}

#[test]
fn blocks_dequantized_and_quantized_again_come_back_unchanged() {
    use GgmlType::*;
    let x = weights(1024, 3);
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16] {
        let (bytes, back) = round_trip(ty, &x);
        let (again, _) = round_trip(ty, &back);
        assert_eq!(bytes, again, "{ty}");
    }
}

#[test]
fn zero_and_constant_rows_stay_exact() {
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::Q6_K] {
        assert!(round_trip(ty, &[0.0; 256]).1.iter().all(|&v| v == 0.0), "{ty}");
    }
    for ty in [GgmlType::Q4_1, GgmlType::Q5_1, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q2_K] {
        let back = round_trip(ty, &[-0.25; 256]).1;
        assert!(back.iter().all(|&v| (v + 0.25).abs() < 1e-3), "{ty}: {:?}", &back[..4]);
    }
}

#[test]
fn bad_shapes_and_types_are_named() {
    let mut out = vec![0u8; 18];
    assert_eq!(
        quantize_weights(GgmlType::IQ4_NL, &[0.0; 32], &mut out),
        Err(QuantizeError::Unsupported(GgmlType::IQ4_NL))
    );
    let err = quantize_weights(GgmlType::Q4_0, &[0.0; 31], &mut out).unwrap_err();
    assert_eq!(alloc::format!("{err}"), "31 elements do not fill 18 bytes of Q4_0 blocks");
    assert!(quantize_weights(GgmlType::Q4_K, &[0.0; 32], &mut out).is_err());
}
