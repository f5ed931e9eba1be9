//! Element-wise operations, written to round as the reference engine does.

use super::{RopeKind, Yarn};

/// `out = x / rms(x) * w`, accumulating the square sum in f64 like ggml.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let scale = rms_scale(x, eps);
    for ((o, &v), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = (v * scale) * wi;
    }
}

/// 1 / RMS of `x` (with `eps`), summed in f64 as the reference engine does.
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / libm::sqrtf(mean + eps)
}

/// [`rms_norm`] of `x` into itself.
pub fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let scale = rms_scale(x, eps);
    for (v, &wi) in x.iter_mut().zip(w) {
        *v = (*v * scale) * wi;
    }
}

/// GELU in its tanh form, `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`.
pub fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + libm::tanhf(SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)))
}

/// GELU of a gate value as the reference engine computes it: looked up by
/// the value rounded to f16 in a table of f16 results, and exact (0 or x)
/// outside (-10, 10).
pub fn gelu_gate(x: f32) -> f32 {
    use half::f16;
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        f16::from_f32(gelu(f16::from_f32(x).to_f32())).to_f32()
    }
}

/// `x * sigmoid(x)`; the reference engine also uses an approximate exp here.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_approx(-x))
}

/// `e^x` within 4 ulp for `x <= 88`, branch-free so loops over it vectorize
/// (softmax spends most of its time here). Underflows to 0 below -87.
#[inline]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Selects and bit moves only (no `clamp`, no saturating `as i32`), so
    // loops over it vectorize; NaN stays NaN.
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    // n = round(x / ln 2), by the add-and-subtract trick (ties to even):
    // between 2^23 and 2^24 floats are the integers, so the shifted value's
    // bits, less the shift's, are n itself.
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x * LOG2E + SHIFT;
    let n = shifted - SHIFT;
    let n_int = shifted.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = (p * r) * r + r + 1.0;
    p * f32::from_bits((n_int.wrapping_add(127) as u32) << 23)
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

/// Rotation angles' cosines and sines for one position.
#[derive(Debug, Clone, Copy)]
pub struct Rope<'a> {
    pub kind: RopeKind,
    pub dims: usize,
    pub base: f32,
    pub freq_scale: f32,
    pub freq_factors: Option<&'a [f32]>,
    pub yarn: Option<Yarn>,
    /// cos and sin are multiplied by this.
    pub mscale: f32,
}

/// 1 for pairs below YaRN's first correction dim, 0 above the second.
fn yarn_ramp([low, high]: [f32; 2], pair: usize) -> f32 {
    let y = (pair as f32 - low) / (high - low).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

impl Rope<'_> {
    /// Fills `cs` with (cos, sin) for each of the `dims / 2` pairs at `pos`.
    /// The angle is a running product, as ggml computes it.
    pub fn angles(&self, pos: usize, cs: &mut [(f32, f32)]) {
        let theta_scale = libm::powf(self.base, -2.0 / self.dims as f32);
        let mut theta = pos as f32;
        for (i, slot) in cs.iter_mut().take(self.dims / 2).enumerate() {
            let ff = self.freq_factors.map_or(1.0, |f| f[i]);
            let extrapolated = theta / ff;
            let interpolated = self.freq_scale * extrapolated;
            let t = match self.yarn {
                Some(y) => {
                    let mix = yarn_ramp(y.corr_dims, i) * y.ext_factor;
                    interpolated * (1.0 - mix) + extrapolated * mix
                }
                None => interpolated,
            };
            *slot = (libm::cosf(t) * self.mscale, libm::sinf(t) * self.mscale);
            theta *= theta_scale;
        }
    }

    /// Rotates one head vector in place.
    pub fn apply(&self, x: &mut [f32], cs: &[(f32, f32)]) {
        let half = self.dims / 2;
        for (i, &(c, s)) in cs.iter().take(half).enumerate() {
            let (a, b) = match self.kind {
                RopeKind::Norm => (2 * i, 2 * i + 1),
                RopeKind::Neox => (i, i + half),
            };
            let (x0, x1) = (x[a], x[b]);
            x[a] = x0 * c - x1 * s;
            x[b] = x0 * s + x1 * c;
        }
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
