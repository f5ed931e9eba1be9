//! The seam between the forward pass and where a window of layers runs.
//! Core's CPU kernels are one backend ([`CpuLayers`]); a host adds others
//! (the `prima-gpu` crate runs a window on wgpu). A session or a ring
//! device hands a backend the hidden states and gets them back; the backend
//! owns its weights' copy and its KV cache.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use super::{KvCache, KvType, Model, ModelError, SeqRows, Workspace};
use crate::parallel::Parallel;

/// One sequence's share of a pass: `n_tok` consecutive rows of the hidden
/// states, at positions `pos0 ..` of slot `slot`'s cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqSpan {
    pub slot: usize,
    pub pos0: usize,
    pub n_tok: usize,
}

/// A window of layers run somewhere, with its own KV cache per slot.
pub trait LayerBackend: Send {
    /// What runs the layers, for messages ("cpu", an adapter's name).
    fn name(&self) -> &str;
    /// The layers it runs, in order.
    fn layers(&self) -> Range<usize>;
    /// Runs every layer on the hidden states `x`, whose rows `seqs` own in
    /// order, appending the rows' keys and values to each slot's cache.
    fn forward(&mut self, seqs: &[SeqSpan], x: &mut [f32]) -> Result<(), ModelError>;
    /// Forgets slot `slot`'s positions from `len` on.
    fn truncate(&mut self, slot: usize, len: usize);
}

/// A backend's own error, kept whole for the error's source chain.
#[derive(Clone)]
pub struct BackendFailure(pub Arc<dyn core::error::Error + Send + Sync>);

impl fmt::Debug for BackendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq for BackendFailure {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Layers run by core's CPU kernels, with a cache per slot.
pub struct CpuLayers<'m, 'a, 'p> {
    model: &'m Model<'a>,
    layers: Range<usize>,
    kv: Vec<KvCache>,
    ws: Workspace,
    par: &'p dyn Parallel,
}

impl fmt::Debug for CpuLayers<'_, '_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuLayers").field("layers", &self.layers).field("slots", &self.kv.len()).finish()
    }
}

impl<'m, 'a, 'p> CpuLayers<'m, 'a, 'p> {
    /// Layers `layers` of `model` (which must hold them) for `slots`
    /// sequences of up to `n_ctx` positions each.
    pub fn new(
        model: &'m Model<'a>,
        layers: Range<usize>,
        (slots, n_ctx, kv_type): (usize, usize, KvType),
        par: &'p dyn Parallel,
    ) -> Result<Self, ModelError> {
        if !model.parts.holds(&layers) {
            return Err(ModelError::LayerRange { start: layers.start, end: layers.end, n_layer: model.config.n_layer });
        }
        let kv_dim = model.config.kv_dim();
        let kv = (0..slots).map(|_| KvCache::with_type(alloc::vec![layers.clone()], n_ctx, kv_dim, kv_type)).collect();
        Ok(Self { model, layers, kv, ws: Workspace::default(), par })
    }
}

impl LayerBackend for CpuLayers<'_, '_, '_> {
    fn name(&self) -> &str {
        "cpu"
    }

    fn layers(&self) -> Range<usize> {
        self.layers.clone()
    }

    fn forward(&mut self, seqs: &[SeqSpan], x: &mut [f32]) -> Result<(), ModelError> {
        let mut caches: Vec<Option<&mut KvCache>> = self.kv.iter_mut().map(Some).collect();
        let mut rows = Vec::with_capacity(seqs.len());
        for s in seqs {
            let Some(kv) = caches.get_mut(s.slot).and_then(Option::take) else {
                return Err(ModelError::BadSlot { slot: s.slot, slots: self.kv.len() });
            };
            rows.push(SeqRows { kv, pos0: s.pos0, n_tok: s.n_tok });
        }
        self.model.forward_seqs(self.layers.clone(), &mut rows, x, &mut self.ws, self.par)
    }

    fn truncate(&mut self, slot: usize, len: usize) {
        if let Some(kv) = self.kv.get_mut(slot) {
            kv.truncate(len);
        }
    }
}
