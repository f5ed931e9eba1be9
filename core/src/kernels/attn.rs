//! Attention's inner loops over f32 rows. Each is a vertical multiply-add
//! with no reduction and no fused multiply-add, so the compiler vectorizes it
//! at every SIMD width and the scalar and SIMD builds agree bit for bit.

/// `out[j] = sum_d q[d] * keys_t[d * stride + j]`: scores against keys stored
/// transposed (one row per dimension), so every step is a vertical
/// multiply-add across keys and no horizontal sum is needed.
#[inline(always)]
pub(super) fn dot_rows_t(q: &[f32], keys_t: &[f32], stride: usize, out: &mut [f32]) {
    // Blocks of keys whose partial scores stay in registers across all dimensions.
    const BLOCK: usize = 32;
    let n = out.len();
    let full = n / BLOCK * BLOCK;
    for j0 in (0..full).step_by(BLOCK) {
        let mut acc = [0.0f32; BLOCK];
        for (d, &qd) in q.iter().enumerate() {
            let k = &keys_t[d * stride + j0..d * stride + j0 + BLOCK];
            for (a, &kj) in acc.iter_mut().zip(k) {
                *a += qd * kj;
            }
        }
        out[j0..j0 + BLOCK].copy_from_slice(&acc);
    }
    let tail = &mut out[full..];
    tail.fill(0.0);
    for (d, &qd) in q.iter().enumerate() {
        for (o, &k) in tail.iter_mut().zip(&keys_t[d * stride + full..d * stride + n]) {
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
