use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;
use half::f16;

/// Keys and values for the layers a device runs, in f16 as the reference
/// engine stores them. Layout per layer: `[position][kv_head * head_dim]`.
#[derive(Debug)]
pub struct KvCache {
    pub layers: Range<usize>,
    pub n_ctx: usize,
    pub kv_dim: usize,
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
    /// Number of positions filled.
    pub len: usize,
}

impl KvCache {
    pub fn new(layers: Range<usize>, n_ctx: usize, kv_dim: usize) -> Self {
        let n = layers.len();
        Self {
            layers,
            n_ctx,
            kv_dim,
            k: vec![vec![f16::ZERO; n_ctx * kv_dim]; n],
            v: vec![vec![f16::ZERO; n_ctx * kv_dim]; n],
            len: 0,
        }
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Forgets positions from `pos` on.
    pub fn truncate(&mut self, pos: usize) {
        self.len = self.len.min(pos);
    }

    pub(crate) fn layer_mut(&mut self, layer: usize) -> (&mut [f16], &mut [f16]) {
        let j = layer - self.layers.start;
        (&mut self.k[j], &mut self.v[j])
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.layers.len() * self.n_ctx * self.kv_dim * 2 * 2
    }
}
