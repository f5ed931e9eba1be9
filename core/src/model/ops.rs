//! Element-wise operations, written to round as the reference engine does.

use super::RopeKind;

/// `out = x / rms(x) * w`, accumulating the square sum in f64 like ggml.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / libm::sqrtf(mean + eps);
    for ((o, &v), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = (v * scale) * wi;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + libm::expf(-x))
}

/// In-place softmax with the sum in f64.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = libm::expf(*v - max);
        sum += *v as f64;
    }
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
}

impl Rope<'_> {
    /// Fills `cs` with (cos, sin) for each of the `dims / 2` pairs at `pos`.
    /// The angle is a running product, as ggml computes it.
    pub fn angles(&self, pos: usize, cs: &mut [(f32, f32)]) {
        let theta_scale = libm::powf(self.base, -2.0 / self.dims as f32);
        let mut theta = pos as f32;
        for (i, slot) in cs.iter_mut().take(self.dims / 2).enumerate() {
            let ff = self.freq_factors.map_or(1.0, |f| f[i]);
            let t = self.freq_scale * (theta / ff);
            *slot = (libm::cosf(t), libm::sinf(t));
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
