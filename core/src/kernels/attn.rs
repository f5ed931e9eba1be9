//! Attention's inner loops over f32 rows. Each body is written with eight
//! independent lanes and no fused multiply-add, so the compiler vectorizes it
//! the same way at every SIMD width: the scalar and SIMD builds agree bit for bit.

const LANES: usize = 8;

/// `out[j] = q · keys[j]`, where `keys` holds `out.len()` rows of `q.len()`.
#[inline(always)]
pub(super) fn dot_rows(q: &[f32], keys: &[f32], out: &mut [f32]) {
    let hd = q.len();
    for (o, k) in out.iter_mut().zip(keys.chunks_exact(hd)) {
        let mut acc = [0.0f32; LANES];
        for (qc, kc) in q.chunks_exact(LANES).zip(k.chunks_exact(LANES)) {
            for l in 0..LANES {
                acc[l] += qc[l] * kc[l];
            }
        }
        let tail: f32 =
            q.chunks_exact(LANES).remainder().iter().zip(k.chunks_exact(LANES).remainder()).map(|(a, b)| a * b).sum();
        *o = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
    }
}

/// `out = sum_j p[j] * values[j]`, where `values` holds `p.len()` rows of `out.len()`.
#[inline(always)]
pub(super) fn weighted_sum(p: &[f32], values: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for (&pj, v) in p.iter().zip(values.chunks_exact(out.len())) {
        for (o, &x) in out.iter_mut().zip(v) {
            *o += pj * x;
        }
    }
}
