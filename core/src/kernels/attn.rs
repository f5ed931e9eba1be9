//! Attention's inner loops over f32 rows, for the prompt path. Each keeps
//! the arithmetic order of the matching f16 decode kernel (`dot_f16_f32`,
//! `axpy_f16`) of the same instruction set, so prompt and decode agree exactly.

/// `out[j] = q · keys[j]`, where `keys` holds `out.len()` rows of `q.len()`,
/// summed in the same order as the scalar `dot_f16_f32`, so the prompt and
/// decode attention paths agree exactly.
#[inline(always)]
pub(super) fn dot_rows(q: &[f32], keys: &[f32], out: &mut [f32]) {
    for (o, k) in out.iter_mut().zip(keys.chunks_exact(q.len())) {
        *o = dot_in_order(k, q);
    }
}

/// `sum(k[i] * q[i])` summed in order, as the scalar kernels (and the SIMD
/// ones past their last whole vector) do.
#[inline(always)]
pub(super) fn dot_in_order(k: &[f32], q: &[f32]) -> f32 {
    k.iter().zip(q).map(|(a, b)| a * b).sum()
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
