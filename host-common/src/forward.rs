//! What core's [`Engine`] is stepped over: sequences in slots, each with
//! its own KV cache, turned into logits by one device or a ring, both
//! batched; and the draft model that proposes tokens for them to check.

use prima_core::engine::{Engine, Input};
use prima_core::{Batch, Gguf, KvCache, KvType, Model, Want};
use std::time::Duration;

use crate::generate::SessionShape;
use crate::mapped::MappedFile;
use crate::pool::Pool;
use crate::ring::head::{DeviceReport, Ring};
use crate::stream::LayerStream;

/// One slot's share of a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct Step<'t> {
    pub slot: usize,
    pub tokens: &'t [u32],
    /// Logit rows wanted, for the last this many tokens (0: none).
    pub rows: usize,
}

/// Sequences in slots, each with its own KV cache, turned into logits: one
/// device, or a ring (whose batched sequences travel round it together).
pub trait Evaluate {
    /// Sequences held at once.
    fn slots(&self) -> usize {
        1
    }
    /// Empties `slot` for a new sequence.
    fn clear(&mut self, slot: usize);
    /// Forgets `slot`'s positions from `pos` on (rejected drafts); its next
    /// tokens continue at `pos`.
    fn truncate(&mut self, slot: usize, pos: usize);
    /// One forward pass: appends each step's tokens to its slot and returns
    /// the logits of each step's last `rows` tokens (`n_vocab` floats a row,
    /// in order). Steps are in slot order, each slot at most once.
    fn step(&mut self, steps: &[Step<'_>]) -> anyhow::Result<Vec<f32>>;
    /// Slot 0 alone: appends `tokens` and returns logits as `want` says.
    fn eval(&mut self, tokens: &[u32], want: Want) -> anyhow::Result<Vec<f32>> {
        let rows = match want {
            Want::Last => tokens.len().min(1),
            Want::All => tokens.len(),
            Want::None => 0,
        };
        self.step(&[Step { slot: 0, tokens, rows }])
    }
    /// Empties slot 0, for a new sequence from position 0.
    fn reset(&mut self) {
        self.clear(0);
    }
    /// With nothing to run: keeps links alive and notices lost devices.
    /// False: nothing to keep alive, so a server may sleep until a request.
    fn idle(&mut self) -> anyhow::Result<bool> {
        Ok(false)
    }
    /// A device at `addr` asks to join (a ring that re-plans takes it in
    /// between requests).
    fn join(&mut self, addr: String) -> anyhow::Result<()> {
        anyhow::bail!("{addr} cannot join: this is not a ring that re-plans")
    }
    fn ring(&self) -> Option<&Ring<'_, '_>> {
        None
    }
    /// Each device's share of a step, for the page's cluster view; `None`
    /// for one device.
    fn devices(&self) -> Option<Vec<DeviceView>> {
        Some(self.ring()?.report().into_iter().map(DeviceView::from).collect())
    }
    /// Time spent waiting for streamed layers, when layers stream.
    fn disk_stall(&self) -> Option<Duration> {
        None
    }
    /// The peak memory this evaluator's memory model predicts for itself.
    fn predicted_peak(&self) -> Option<u64> {
        None
    }
}

/// One device's line in the cluster view.
#[derive(Debug, Clone, Default)]
pub struct DeviceView {
    pub name: String,
    /// Such as `0-9,20-29`.
    pub layers: String,
    /// Seconds per decode step (one token for every sequence decoding).
    pub compute_s: f64,
    pub network_s: f64,
    pub disk_s: f64,
}

impl From<DeviceReport> for DeviceView {
    fn from(d: DeviceReport) -> Self {
        let t = d.per_decode_step.unwrap_or_default();
        let layers: Vec<String> = d.layers.iter().map(|r| format!("{}-{}", r.start, r.end - 1)).collect();
        Self {
            name: d.name,
            layers: layers.join(","),
            compute_s: t.compute.as_secs_f64(),
            network_s: t.network.as_secs_f64(),
            disk_s: t.disk.as_secs_f64(),
        }
    }
}

/// The forward pass for the engine's `inputs`.
pub fn run_inputs(forward: &mut dyn Evaluate, inputs: &[Input]) -> anyhow::Result<Vec<f32>> {
    let steps: Vec<Step<'_>> = inputs.iter().map(|i| Step { slot: i.slot, tokens: &i.tokens, rows: i.rows }).collect();
    forward.step(&steps)
}

/// Checks that `steps` name slots below `slots` in increasing order, and
/// want no more rows than they have tokens.
pub fn check_steps(steps: &[Step<'_>], slots: usize) -> anyhow::Result<()> {
    for (i, s) in steps.iter().enumerate() {
        if s.slot >= slots || i > 0 && steps[i - 1].slot >= s.slot {
            anyhow::bail!("step for slot {} is out of order or past the {slots} slots", s.slot);
        }
        if s.rows > s.tokens.len() {
            anyhow::bail!("slot {} wants {} logit rows of {} tokens", s.slot, s.rows, s.tokens.len());
        }
    }
    Ok(())
}

/// One device: `parallel` caches batched through one model.
pub struct LocalSlots<'m, 'a> {
    batch: Batch<'m, 'a>,
    caches: Vec<KvCache>,
    pool: &'m Pool,
    /// Layers that do not stay resident come through here.
    stream: Option<LayerStream<'m>>,
}

impl<'m, 'a> LocalSlots<'m, 'a> {
    /// `parallel` caches of `n_ctx` positions of `kv` elements; layers that
    /// do not stay resident come through `stream`.
    pub fn new(
        model: &'m Model<'a>,
        pool: &'m Pool,
        (parallel, n_ctx, kv): (usize, usize, KvType),
        stream: Option<LayerStream<'m>>,
    ) -> Self {
        let batch = Batch::new(model);
        let caches = (0..parallel).map(|_| batch.cache(n_ctx, kv)).collect();
        Self { batch, caches, pool, stream }
    }

    /// `shape.slots` caches of `shape.n_ctx` positions; when the layers and
    /// every cache do not fit the memory available, the layers that do not
    /// fit stream from `file` (a line on stderr says so).
    pub fn planned(
        model: &'m Model<'a>,
        file: &'m MappedFile,
        g: &Gguf<'_>,
        shape: SessionShape,
        pool: &'m Pool,
    ) -> anyhow::Result<Self> {
        let (_, _, stream) = shape.plan(model, file, g, pool)?;
        Ok(Self::new(model, pool, (shape.slots, shape.n_ctx, shape.kv), stream))
    }

    /// Runs `backend`'s layers (a GPU's, with a cache per slot) before the model's own.
    pub fn with_offload(mut self, backend: Box<dyn prima_core::LayerBackend>) -> anyhow::Result<Self> {
        self.batch = self.batch.with_offload(backend)?;
        Ok(self)
    }
}

impl Evaluate for LocalSlots<'_, '_> {
    fn slots(&self) -> usize {
        self.caches.len()
    }

    fn clear(&mut self, slot: usize) {
        self.truncate(slot, 0);
    }

    fn truncate(&mut self, slot: usize, pos: usize) {
        self.caches[slot].truncate(pos);
        self.batch.truncate_offload(slot, pos);
    }

    fn step(&mut self, steps: &[Step<'_>]) -> anyhow::Result<Vec<f32>> {
        check_steps(steps, self.caches.len())?;
        // Pair each step with its slot's cache.
        let mut listed = steps.iter().peekable();
        let mut pass: Vec<(&mut KvCache, &[u32])> = Vec::with_capacity(steps.len());
        let (mut rows, mut slots) = (Vec::with_capacity(steps.len()), Vec::with_capacity(steps.len()));
        for (i, kv) in self.caches.iter_mut().enumerate() {
            if let Some(s) = listed.next_if(|s| s.slot == i) {
                pass.push((kv, s.tokens));
                rows.push(s.rows);
                slots.push(i);
            }
        }
        let (batch, pool) = (&mut self.batch, self.pool);
        match self.stream.as_mut() {
            None => pool.enter(|| batch.eval_slots(&mut pass, &slots, &rows, pool, None)).map_err(anyhow::Error::from),
            Some(s) => pool
                .enter(|| batch.eval_slots(&mut pass, &slots, &rows, pool, Some(&mut *s)))
                .map_err(anyhow::Error::from)
                .and_then(|l| s.take_error().map(|()| l)),
        }
    }

    fn disk_stall(&self) -> Option<Duration> {
        self.stream.as_ref().map(|s| s.disk)
    }
}

/// A draft model in slots matching the target's, and how many of each
/// slot's tokens it has evaluated.
pub struct Drafts<'f> {
    forward: &'f mut dyn Evaluate,
    done: Vec<usize>,
}

impl<'f> Drafts<'f> {
    pub fn new(forward: &'f mut dyn Evaluate) -> Self {
        let done = vec![0; forward.slots()];
        Self { forward, done }
    }

    /// Empties `slot` for a new sequence.
    pub fn clear(&mut self, slot: usize) {
        self.forward.clear(slot);
        self.done[slot] = 0;
    }

    /// The target kept `slot`'s first `pos` positions: so does the draft.
    pub fn rewind(&mut self, slot: usize, pos: usize) {
        if self.done[slot] > pos {
            self.done[slot] = pos;
            self.forward.truncate(slot, pos);
        }
    }

    /// Runs the draft model for every slot that wants a draft, all slots in
    /// each pass, one draft token per pass, and hands the logits to `engine`.
    pub fn propose(&mut self, engine: &mut Engine) -> anyhow::Result<()> {
        let mut feed: Vec<(usize, Vec<u32>)> = engine
            .draft_wanted()
            .into_iter()
            .map(|slot| (slot, engine.context(slot)[self.done[slot]..].to_vec()))
            .filter(|(_, tokens)| !tokens.is_empty())
            .collect();
        while !feed.is_empty() {
            let steps: Vec<Step<'_>> = feed.iter().map(|(slot, t)| Step { slot: *slot, tokens: t, rows: 1 }).collect();
            let mut logits = self.forward.step(&steps)?;
            let n_vocab = logits.len() / feed.len();
            let mut more = Vec::new();
            for ((slot, tokens), row) in feed.iter().zip(logits.chunks_exact_mut(n_vocab)) {
                self.done[*slot] += tokens.len();
                if let Some(t) = engine.draft(*slot, row) {
                    more.push((*slot, vec![t]));
                }
            }
            feed = more;
        }
        Ok(())
    }
}
