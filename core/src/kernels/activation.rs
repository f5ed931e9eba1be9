//! The activations' scalar arithmetic, as the reference engine rounds it:
//! the oracle for the SIMD kernels, which repeat it lane for lane.

/// `e^x` within 4 ulp for `x <= 88`, branch-free so loops over it vectorize
/// (softmax spends most of its time here). Underflows to 0 below -87.
#[inline]
pub fn exp_approx(x: f32) -> f32 {
    // Selects and bit moves only (no `clamp`, no saturating `as i32`), so
    // loops over it vectorize; NaN stays NaN.
    let x = if x < EXP_MIN { EXP_MIN } else { x };
    let x = if x > EXP_MAX { EXP_MAX } else { x };
    // n = round(x / ln 2), by the add-and-subtract trick (ties to even):
    // between 2^23 and 2^24 floats are the integers, so the shifted value's
    // bits, less the shift's, are n itself.
    let shifted = x * LOG2E + SHIFT;
    let n = shifted - SHIFT;
    let n_int = shifted.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let [c6, c5, c4, c3, c2] = EXP_POLY;
    let p = c6;
    let p = p * r + c5;
    let p = p * r + c4;
    let p = p * r + c3;
    let p = p * r + c2;
    let p = (p * r) * r + r + 1.0;
    p * f32::from_bits((n_int.wrapping_add(127) as u32) << 23)
}

// `exp_approx`'s constants, shared with the SIMD kernels that repeat it.
pub(super) const EXP_MIN: f32 = -87.0;
pub(super) const EXP_MAX: f32 = 88.0;
pub(super) const LOG2E: f32 = core::f32::consts::LOG2_E;
pub(super) const LN2_HI: f32 = 0.693_145_75;
pub(super) const LN2_LO: f32 = 1.428_606_8e-6;
pub(super) const SHIFT: f32 = 12_582_912.0;
/// Taylor coefficients 1/6! down to 1/2!.
pub(super) const EXP_POLY: [f32; 5] = [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5];

/// `x * sigmoid(x)`; the reference engine also uses an approximate exp here.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_approx(-x))
}

/// In-place softmax with the sum in f64. The maximum and the sum run in
/// eight independent lanes, so they vectorize instead of waiting on one
/// chain (the maximum is the same in any order).
pub fn softmax(x: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(m, &v)| *m = if v > *m { v } else { *m });
    }
    let max = chunks.remainder().iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for v in x.iter_mut() {
        *v = exp_approx(*v - max);
    }
    let mut sums = [0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        sums.iter_mut().zip(c).for_each(|(s, &v)| *s += v as f64);
    }
    let sum: f64 = sums.iter().sum::<f64>() + chunks.remainder().iter().map(|&v| v as f64).sum::<f64>();
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_within_a_few_ulp_of_libm() {
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (exp_approx(x), libm::expf(x));
            assert!(((got - want) / want).abs() <= 4e-7, "exp({x}) = {got}, libm {want}");
            x += 0.0137;
        }
        assert!(exp_approx(-1000.0) < 1e-37);
        assert_eq!(exp_approx(0.0), 1.0);
    }
}
