use alloc::vec::Vec;
use core::ops::Range;

use alloc::boxed::Box;

use super::{KvCache, KvType, LayerBackend, Model, ModelError, SeqRows, SeqSpan, Workspace};
use crate::parallel::Parallel;

/// Which positions of an evaluated batch need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Only the last token (generation).
    Last,
    /// Every token (teacher forcing, perplexity).
    All,
    /// No logits at all (prompt batches before the last).
    None,
}

/// Told before and after each layer runs, so a host can stream weights
/// that do not stay resident: read the next layers ahead, drop the one just
/// run. Core only says when; the host owns the I/O.
pub trait LayerHook {
    fn before(&mut self, layer: usize);
    fn after(&mut self, layer: usize);
}

/// Runs `forward` over each held window whole, or, with a `hook`, one
/// layer at a time between the hook's calls.
fn by_window(
    windows: &[Range<usize>],
    mut hook: Option<&mut (dyn LayerHook + '_)>,
    mut forward: impl FnMut(Range<usize>) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    for layers in windows.iter().cloned() {
        let Some(hook) = hook.as_deref_mut() else {
            forward(layers)?;
            continue;
        };
        for l in layers {
            hook.before(l);
            forward(l..l + 1)?;
            hook.after(l);
        }
    }
    Ok(())
}

/// A single-sequence inference session on one device: an offload backend
/// (a GPU) runs the first layers, then the model's held layers run on the CPU.
pub struct Session<'m, 'a> {
    pub model: &'m Model<'a>,
    pub kv: KvCache,
    ws: Workspace,
    hidden: Vec<f32>,
    /// Largest number of tokens run through the layers at once.
    pub n_batch: usize,
    offload: Option<Box<dyn LayerBackend + 'm>>,
}

impl core::fmt::Debug for Session<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let offload = self.offload.as_ref().map(|b| (b.name(), b.layers()));
        f.debug_struct("Session")
            .field("kv", &self.kv)
            .field("n_batch", &self.n_batch)
            .field("offload", &offload)
            .finish()
    }
}

impl<'m, 'a> Session<'m, 'a> {
    pub fn new(model: &'m Model<'a>, n_ctx: usize) -> Self {
        Self::with_kv_type(model, n_ctx, KvType::F16)
    }

    /// A session whose KV cache holds `kv_type` elements.
    pub fn with_kv_type(model: &'m Model<'a>, n_ctx: usize, kv_type: KvType) -> Self {
        let c = &model.config;
        let kv = KvCache::with_type(model.parts.windows.clone(), n_ctx, c.kv_dim(), kv_type);
        Self { model, kv, ws: Workspace::default(), hidden: Vec::new(), n_batch: 512, offload: None }
    }

    /// Runs `backend`'s layers before the model's own: they must all come
    /// before the first layer the model holds.
    pub fn with_offload(mut self, backend: Box<dyn LayerBackend + 'm>) -> Result<Self, ModelError> {
        check_offload(self.model, &*backend)?;
        self.offload = Some(backend);
        Ok(self)
    }

    /// The offload backend's name and layers, when there is one.
    pub fn offload(&self) -> Option<(&str, Range<usize>)> {
        self.offload.as_ref().map(|b| (b.name(), b.layers()))
    }

    /// Tokens held in the cache.
    pub fn pos(&self) -> usize {
        self.kv.len
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Forgets positions from `pos` on.
    pub fn truncate(&mut self, pos: usize) {
        self.kv.truncate(pos);
        if let Some(b) = self.offload.as_mut() {
            b.truncate(0, pos);
        }
    }

    /// Appends `tokens` to the sequence and returns logits as `want` says
    /// (`n_vocab` floats per requested position).
    pub fn eval(&mut self, tokens: &[u32], want: Want, par: &dyn Parallel) -> Result<Vec<f32>, ModelError> {
        let mut logits = Vec::new();
        self.eval_inner(tokens, want, par, None, &mut logits)?;
        Ok(logits)
    }

    /// [`Self::eval`] into `logits` (replacing its contents), so a caller
    /// that keeps the buffer decodes without allocating.
    pub fn eval_into(
        &mut self,
        tokens: &[u32],
        want: Want,
        par: &dyn Parallel,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        self.eval_inner(tokens, want, par, None, logits)
    }

    /// [`Self::eval`], running one layer at a time between `hook`'s calls.
    pub fn eval_streamed(
        &mut self,
        tokens: &[u32],
        want: Want,
        par: &dyn Parallel,
        hook: &mut dyn LayerHook,
    ) -> Result<Vec<f32>, ModelError> {
        let mut logits = Vec::new();
        self.eval_inner(tokens, want, par, Some(hook), &mut logits)?;
        Ok(logits)
    }

    fn eval_inner(
        &mut self,
        tokens: &[u32],
        want: Want,
        par: &dyn Parallel,
        mut hook: Option<&mut dyn LayerHook>,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let c = &self.model.config;
        if self.kv.len + tokens.len() > self.kv.n_ctx {
            return Err(ModelError::ContextOverflow { needed: self.kv.len + tokens.len(), n_ctx: self.kv.n_ctx });
        }
        logits.clear();
        let n_batch = self.n_batch.max(1);
        let n_chunks = tokens.len().div_ceil(n_batch);
        for (i, batch) in tokens.chunks(n_batch).enumerate() {
            self.hidden.clear();
            self.hidden.resize(batch.len() * c.n_embd, 0.0);
            self.model.embed(batch, &mut self.hidden)?;
            let pos0 = self.kv.len;
            if let Some(b) = self.offload.as_mut() {
                b.forward(&[SeqSpan { slot: 0, pos0, n_tok: batch.len() }], &mut self.hidden)?;
            }
            let (kv, hidden, ws) = (&mut self.kv, &mut self.hidden, &mut self.ws);
            by_window(&self.model.parts.windows, hook.as_deref_mut(), |layers| {
                self.model.forward_layers_at(layers, pos0, kv, hidden, ws, par)
            })?;
            // With every layer offloaded, no forward pass moves the cache on.
            self.kv.len = self.kv.len.max(pos0 + batch.len());
            let rows = match want {
                Want::All => &self.hidden[..],
                Want::Last if i + 1 == n_chunks => &self.hidden[(batch.len() - 1) * c.n_embd..],
                _ => continue,
            };
            let start = logits.len();
            logits.resize(start + rows.len() / c.n_embd * c.n_vocab, 0.0);
            self.model.output(rows, &mut logits[start..], &mut self.ws, par)?;
        }
        Ok(())
    }
}

/// Several sequences, each with its own cache, evaluated together: one
/// forward pass carries every sequence's new tokens, so the weights are
/// read once for all of them (continuous batching's step). As in
/// [`Session`], an offload backend may run the layers before the model's own.
pub struct Batch<'m, 'a> {
    pub model: &'m Model<'a>,
    ws: Workspace,
    hidden: Vec<f32>,
    last: Vec<f32>,
    offload: Option<Box<dyn LayerBackend + 'm>>,
}

impl core::fmt::Debug for Batch<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let offload = self.offload.as_ref().map(|b| (b.name(), b.layers()));
        f.debug_struct("Batch").field("offload", &offload).finish()
    }
}

/// Checks that `backend`'s layers all come before the model's first held one.
fn check_offload(model: &Model<'_>, backend: &dyn LayerBackend) -> Result<(), ModelError> {
    let layers = backend.layers();
    let first_held = model.parts.windows.iter().find(|w| !w.is_empty()).map_or(usize::MAX, |w| w.start);
    if layers.end > first_held || layers.start > layers.end {
        return Err(ModelError::LayerRange { start: layers.start, end: layers.end, n_layer: model.config.n_layer });
    }
    Ok(())
}

impl<'m, 'a> Batch<'m, 'a> {
    pub fn new(model: &'m Model<'a>) -> Self {
        Self { model, ws: Workspace::default(), hidden: Vec::new(), last: Vec::new(), offload: None }
    }

    /// Runs `backend`'s layers (one cache per slot of its own) before the
    /// model's own; [`Self::eval_slots`] names each entry's slot.
    pub fn with_offload(mut self, backend: Box<dyn LayerBackend + 'm>) -> Result<Self, ModelError> {
        check_offload(self.model, &*backend)?;
        self.offload = Some(backend);
        Ok(self)
    }

    /// Forgets slot `slot`'s positions from `pos` on in the offload backend
    /// (the caller truncates the slot's own cache).
    pub fn truncate_offload(&mut self, slot: usize, pos: usize) {
        if let Some(b) = self.offload.as_mut() {
            b.truncate(slot, pos);
        }
    }

    /// A cache for one sequence of up to `n_ctx` positions.
    pub fn cache(&self, n_ctx: usize, kv_type: KvType) -> KvCache {
        let c = &self.model.config;
        KvCache::with_type(self.model.parts.windows.clone(), n_ctx, c.kv_dim(), kv_type)
    }

    /// Appends each entry's tokens to its cache, all in one forward pass,
    /// and returns the logits of each entry's last token (`n_vocab` floats
    /// per entry, in order). Every entry needs at least one token.
    pub fn eval(&mut self, steps: &mut [(&mut KvCache, &[u32])], par: &dyn Parallel) -> Result<Vec<f32>, ModelError> {
        self.eval_inner(steps, None, None, par, None)
    }

    /// [`Self::eval`], returning the logits of each entry's last `rows[i]`
    /// tokens (speculation's drafts are judged row by row), and running one
    /// layer at a time between `hook`'s calls when there is one.
    pub fn eval_rows(
        &mut self,
        steps: &mut [(&mut KvCache, &[u32])],
        rows: &[usize],
        par: &dyn Parallel,
        hook: Option<&mut dyn LayerHook>,
    ) -> Result<Vec<f32>, ModelError> {
        self.eval_inner(steps, None, Some(rows), par, hook)
    }

    /// [`Self::eval_rows`] where entry `i` is slot `slots[i]` of the
    /// offload backend (without one, the slots are not used).
    pub fn eval_slots(
        &mut self,
        steps: &mut [(&mut KvCache, &[u32])],
        slots: &[usize],
        rows: &[usize],
        par: &dyn Parallel,
        hook: Option<&mut dyn LayerHook>,
    ) -> Result<Vec<f32>, ModelError> {
        self.eval_inner(steps, Some(slots), Some(rows), par, hook)
    }

    fn eval_inner(
        &mut self,
        steps: &mut [(&mut KvCache, &[u32])],
        slots: Option<&[usize]>,
        wanted: Option<&[usize]>,
        par: &dyn Parallel,
        hook: Option<&mut dyn LayerHook>,
    ) -> Result<Vec<f32>, ModelError> {
        let c = &self.model.config;
        let n_embd = c.n_embd;
        let rows: usize = steps.iter().map(|(_, t)| t.len()).sum();
        let wanted_at = |i: usize| wanted.map_or(1, |w| w.get(i).copied().unwrap_or(1));
        if steps.iter().any(|(_, t)| t.is_empty()) {
            return Err(ModelError::BatchRows { rows, claimed: 0 });
        }
        if let Some((i, (_, t))) = steps.iter().enumerate().find(|(i, (_, t))| wanted_at(*i) > t.len()) {
            return Err(ModelError::RowsWanted { wanted: wanted_at(i), tokens: t.len() });
        }
        self.hidden.clear();
        self.hidden.resize(rows * n_embd, 0.0);
        let mut at = 0;
        for (_, tokens) in steps.iter() {
            self.model.embed(tokens, &mut self.hidden[at * n_embd..(at + tokens.len()) * n_embd])?;
            at += tokens.len();
        }
        if let Some(b) = self.offload.as_mut() {
            let slot = |i: usize| slots.map_or(i, |s| s.get(i).copied().unwrap_or(usize::MAX));
            let spans: Vec<SeqSpan> = (steps.iter().enumerate())
                .map(|(i, (kv, t))| SeqSpan { slot: slot(i), pos0: kv.len, n_tok: t.len() })
                .collect();
            b.forward(&spans, &mut self.hidden)?;
        }
        let mut seqs: Vec<SeqRows<'_>> =
            steps.iter_mut().map(|(kv, t)| SeqRows { pos0: kv.len, n_tok: t.len(), kv }).collect();
        let (hidden, ws) = (&mut self.hidden, &mut self.ws);
        by_window(&self.model.parts.windows, hook, |layers| {
            self.model.forward_seqs(layers, &mut seqs, hidden, ws, par)
        })?;
        // With every layer offloaded, no forward pass moves the caches on.
        for s in seqs.iter_mut() {
            s.kv.len = s.kv.len.max(s.pos0 + s.n_tok);
        }
        self.last.clear();
        let mut end = 0;
        for (i, s) in seqs.iter().enumerate() {
            end += s.n_tok;
            self.last.extend_from_slice(&self.hidden[(end - wanted_at(i)) * n_embd..end * n_embd]);
        }
        let mut logits = alloc::vec![0.0; self.last.len() / n_embd * c.n_vocab];
        self.model.output(&self.last, &mut logits, &mut self.ws, par)?;
        Ok(logits)
    }
}
