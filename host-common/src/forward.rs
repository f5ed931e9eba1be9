//! What core's [`Engine`] is stepped over: sequences in slots, each with
//! its own KV cache, on one device (batched) or a ring (one at a time),
//! and the draft model that proposes tokens for them to check.

use prima_core::engine::{Engine, Input};
use prima_core::{Batch, KvCache, KvType, Model, Want};

use crate::generate::Evaluate;
use crate::pool::Pool;
use crate::ring::head::DeviceReport;
use crate::stream::LayerStream;

/// One slot's share of a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct Step<'t> {
    pub slot: usize,
    pub tokens: &'t [u32],
    /// Logit rows wanted, for the last this many tokens.
    pub rows: usize,
}

/// Sequences in slots, each with its own KV cache.
pub trait Forward {
    /// Sequences held at once.
    fn slots(&self) -> usize;
    /// Empties `slot` for a new sequence.
    fn clear(&mut self, slot: usize);
    /// Forgets `slot`'s positions from `pos` on (rejected drafts).
    fn truncate(&mut self, slot: usize, pos: usize);
    /// One forward pass: appends each step's tokens to its slot and returns
    /// the logits of each step's last `rows` tokens (`n_vocab` floats a row,
    /// in order). Steps are in slot order.
    fn step(&mut self, steps: &[Step<'_>]) -> anyhow::Result<Vec<f32>>;
    /// With nothing to run: keeps links alive. False: nothing to keep alive,
    /// so the engine may sleep until a request comes.
    fn idle(&mut self) -> anyhow::Result<bool> {
        Ok(false)
    }
    /// A device at `addr` asks to join the ring.
    fn join(&mut self, addr: String) -> anyhow::Result<()> {
        anyhow::bail!("{addr} cannot join: this server runs on one device")
    }
    /// Each device's share of a token, for the page's cluster view; `None`
    /// for one device.
    fn devices(&self) -> Option<Vec<DeviceView>> {
        None
    }
}

/// One device's line in the cluster view.
#[derive(Debug, Clone, Default)]
pub struct DeviceView {
    pub name: String,
    /// Such as `0-9,20-29`.
    pub layers: String,
    /// Seconds per generated token.
    pub compute_s: f64,
    pub network_s: f64,
    pub disk_s: f64,
}

/// The forward pass for the engine's `inputs`.
pub fn run_inputs(forward: &mut dyn Forward, inputs: &[Input]) -> anyhow::Result<Vec<f32>> {
    let steps: Vec<Step<'_>> = inputs.iter().map(|i| Step { slot: i.slot, tokens: &i.tokens, rows: i.rows }).collect();
    forward.step(&steps)
}

/// One device: `parallel` caches batched through one model.
pub struct LocalSlots<'m, 'a, 's> {
    batch: Batch<'m, 'a>,
    caches: Vec<KvCache>,
    pool: &'m Pool,
    /// Layers that do not stay resident come through here.
    stream: Option<&'s mut LayerStream<'m>>,
}

impl<'m, 'a, 's> LocalSlots<'m, 'a, 's> {
    pub fn new(
        model: &'m Model<'a>,
        pool: &'m Pool,
        parallel: usize,
        n_ctx: usize,
        stream: Option<&'s mut LayerStream<'m>>,
    ) -> Self {
        let batch = Batch::new(model);
        let caches = (0..parallel).map(|_| batch.cache(n_ctx, KvType::F16)).collect();
        Self { batch, caches, pool, stream }
    }
}

impl Forward for LocalSlots<'_, '_, '_> {
    fn slots(&self) -> usize {
        self.caches.len()
    }

    fn clear(&mut self, slot: usize) {
        self.caches[slot].clear();
    }

    fn truncate(&mut self, slot: usize, pos: usize) {
        self.caches[slot].truncate(pos);
    }

    fn step(&mut self, steps: &[Step<'_>]) -> anyhow::Result<Vec<f32>> {
        // Pair each step with its slot's cache.
        let mut listed = steps.iter().peekable();
        let mut pass: Vec<(&mut KvCache, &[u32])> = Vec::with_capacity(steps.len());
        let mut rows = Vec::with_capacity(steps.len());
        for (i, kv) in self.caches.iter_mut().enumerate() {
            if let Some(s) = listed.next_if(|s| s.slot == i) {
                pass.push((kv, s.tokens));
                rows.push(s.rows);
            }
        }
        if let Some(s) = listed.next() {
            anyhow::bail!("step for slot {} is out of order or past the {} slots", s.slot, self.caches.len());
        }
        let (batch, pool) = (&mut self.batch, self.pool);
        match self.stream.as_deref_mut() {
            None => pool.enter(|| batch.eval_rows(&mut pass, &rows, pool, None)).map_err(anyhow::Error::from),
            Some(s) => pool
                .enter(|| batch.eval_rows(&mut pass, &rows, pool, Some(&mut *s)))
                .map_err(anyhow::Error::from)
                .and_then(|l| s.take_error().map(|()| l)),
        }
    }
}

/// A ring (or any one-sequence evaluator): one slot, so requests take turns.
pub struct OneSequence<'e, 'm> {
    pub eval: &'e mut (dyn Evaluate + 'm),
}

impl Forward for OneSequence<'_, '_> {
    fn slots(&self) -> usize {
        1
    }

    fn clear(&mut self, _slot: usize) {
        self.eval.reset();
    }

    fn truncate(&mut self, _slot: usize, pos: usize) {
        self.eval.truncate(pos);
    }

    fn step(&mut self, steps: &[Step<'_>]) -> anyhow::Result<Vec<f32>> {
        let [Step { slot: 0, tokens, rows }] = steps else {
            anyhow::bail!("one sequence at a time, not {} steps", steps.len())
        };
        if *rows <= 1 {
            return self.eval.eval(tokens, Want::Last);
        }
        let all = self.eval.eval(tokens, Want::All)?;
        let n_vocab = all.len() / tokens.len().max(1);
        Ok(all[(tokens.len() - rows.min(&tokens.len())) * n_vocab..].to_vec())
    }

    fn idle(&mut self) -> anyhow::Result<bool> {
        self.eval.idle()
    }

    fn join(&mut self, addr: String) -> anyhow::Result<()> {
        self.eval.join(addr)
    }

    fn devices(&self) -> Option<Vec<DeviceView>> {
        let ring = self.eval.ring()?;
        let view = |d: DeviceReport| {
            let t = d.per_decode_step.unwrap_or_default();
            let layers: Vec<String> = d.layers.iter().map(|r| format!("{}-{}", r.start, r.end - 1)).collect();
            DeviceView {
                name: d.name,
                layers: layers.join(","),
                compute_s: t.compute.as_secs_f64(),
                network_s: t.network.as_secs_f64(),
                disk_s: t.disk.as_secs_f64(),
            }
        };
        Some(ring.report().into_iter().map(view).collect())
    }
}

/// A draft model in slots matching the target's, and how many of each
/// slot's tokens it has evaluated.
pub struct Drafts<'f> {
    forward: &'f mut dyn Forward,
    done: Vec<usize>,
}

impl<'f> Drafts<'f> {
    pub fn new(forward: &'f mut dyn Forward) -> Self {
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
