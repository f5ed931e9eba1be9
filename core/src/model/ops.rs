//! Element-wise operations, written to round as the reference engine does.

use super::{RopeKind, Yarn};
pub use crate::kernels::activation::{exp_approx, silu, softmax};

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

/// [`gelu_gate`] of every f16 value, by its bits: the reference engine's
/// table, so a gate costs a rounding and a load instead of a `tanh`.
#[derive(Debug)]
pub struct GeluTable(alloc::vec::Vec<f32>);

impl GeluTable {
    pub fn new() -> Self {
        use half::f16;
        // Every entry by the formula: the range checks in `gate` come first.
        Self((0..=u16::MAX).map(|bits| f16::from_f32(gelu(f16::from_bits(bits).to_f32())).to_f32()).collect())
    }

    /// `gelu_gate(x)`, bit for bit.
    #[inline]
    pub fn gate(&self, x: f32) -> f32 {
        if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x
        } else {
            self.0[half::f16::from_f32(x).to_bits() as usize]
        }
    }
}

impl Default for GeluTable {
    fn default() -> Self {
        Self::new()
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
    fn gelu_table_is_gelu_gate_bit_for_bit() {
        let table = GeluTable::new();
        let mut x = -12.0f32;
        while x < 12.0 {
            for v in [x, x + 1e-4, -x * 1e-3] {
                assert_eq!(table.gate(v).to_bits(), gelu_gate(v).to_bits(), "at {v}");
            }
            x += 0.000_97;
        }
        for v in [-10.0, 10.0, 0.0, -0.0, 1e-8, -1e-8, 65504.0, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(table.gate(v).to_bits(), gelu_gate(v).to_bits(), "at {v}");
        }
        assert!(table.gate(f32::NAN).is_nan());
    }
}
