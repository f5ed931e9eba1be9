//! Attention's inner loops over f32 rows. Each is a vertical multiply-add
//! with no reduction and no fused multiply-add, so the compiler vectorizes it
//! at every SIMD width and the scalar and SIMD builds agree bit for bit.

/// `out[j] = sum_d q[d] * keys_t[d * stride + j]`: scores against keys stored
/// transposed (one row per dimension), so every step is a vertical
/// multiply-add across keys and no horizontal sum is needed.
#[inline(always)]
pub(super) fn dot_rows_t(q: &[f32], keys_t: &[f32], stride: usize, out: &mut [f32]) {
    out.fill(0.0);
    let n = out.len();
    for (d, &qd) in q.iter().enumerate() {
        for (o, &k) in out.iter_mut().zip(&keys_t[d * stride..d * stride + n]) {
            *o += qd * k;
        }
    }
}

/// `out = sum_j p[j] * values[j]`, where `values` holds `p.len()` rows of `out.len()`.
#[inline(always)]
pub(super) fn weighted_sum(p: &[f32], values: &[f32], out: &mut [f32]) {
    // Common head sizes get a fixed-size accumulator the compiler keeps in registers.
    match out.len() {
        64 => weighted_sum_fixed::<64>(p, values, out),
        128 => weighted_sum_fixed::<128>(p, values, out),
        _ => weighted_sum_any(p, values, out),
    }
}

#[inline(always)]
fn weighted_sum_fixed<const N: usize>(p: &[f32], values: &[f32], out: &mut [f32]) {
    let mut acc = [0.0f32; N];
    for (&pj, v) in p.iter().zip(values.chunks_exact(N)) {
        for (o, &x) in acc.iter_mut().zip(v) {
            *o += pj * x;
        }
    }
    out.copy_from_slice(&acc);
}

#[inline(always)]
fn weighted_sum_any(p: &[f32], values: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for (&pj, v) in p.iter().zip(values.chunks_exact(out.len())) {
        for (o, &x) in out.iter_mut().zip(v) {
            *o += pj * x;
        }
    }
}
