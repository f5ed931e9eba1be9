//! The generation engine behind the server: one thread owns the model and
//! `parallel` slots, each with its own KV cache. Every step it admits
//! waiting requests into free slots, then runs one forward pass that
//! carries every busy slot's next tokens (a decoding slot's one token, a
//! new slot's next prompt chunk), so the weights are read once per step for
//! all of them: continuous batching. A sequence's logits do not depend on
//! what it is batched with (tested bit for bit in core). On a ring the
//! engine holds one slot ([`OneSequence`]): requests take turns, and between
//! them the engine keeps the ring's links alive.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prima_core::engine::{self, Engine, Output, Request};
use prima_core::sampler::SamplerConfig;
use prima_core::tokenizer::Tokenizer;
use prima_core::{Batch, KvCache, KvType, Model, Want};
use tokio::sync::mpsc;

use super::api::{Finish, Params, Usage};
use crate::generate::Evaluate;
use crate::pool::Pool;
use crate::ring::head::DeviceReport;
use crate::stream::LayerStream;

/// What a request asks of the engine: prompt tokens and how to sample.
#[derive(Debug)]
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: Params,
    /// Events go here; a closed channel (the client left) frees the slot.
    pub events: mpsc::UnboundedSender<Event>,
}

/// What a job produces, in order: pieces of text, then one end.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Text(String),
    Done { finish: Finish, usage: Usage },
    Failed(String),
}

/// Counters the `/metrics` page shows.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub busy_slots: AtomicUsize,
    pub queued: AtomicUsize,
    /// Sum of per-token decode times, in microseconds (for mean TPOT).
    pub decode_micros: AtomicU64,
    pub cancelled: AtomicU64,
    /// The cluster view's devices on a ring (empty on one device).
    pub devices: std::sync::Mutex<Vec<DeviceView>>,
}

/// Prompt tokens a slot feeds one step at most, so a long prompt does not
/// stall the others' decoding for long.
pub const PREFILL_CHUNK: usize = 256;

/// What the engine steps: sequences in slots, each with its own KV cache.
pub trait Forward {
    /// Sequences held at once.
    fn slots(&self) -> usize;
    /// Empties `slot` for a new sequence.
    fn clear(&mut self, slot: usize);
    /// One forward pass: appends each step's tokens to its slot and returns
    /// the logits of each step's last token (`n_vocab` floats per step, in order).
    fn step(&mut self, steps: &[(usize, &[u32])]) -> anyhow::Result<Vec<f32>>;
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

    fn step(&mut self, steps: &[(usize, &[u32])]) -> anyhow::Result<Vec<f32>> {
        // `steps` is in slot order: pair each one's cache with its tokens.
        let mut listed = steps.iter().peekable();
        let mut pass: Vec<(&mut KvCache, &[u32])> = Vec::with_capacity(steps.len());
        for (i, kv) in self.caches.iter_mut().enumerate() {
            if let Some((_, tokens)) = listed.next_if(|(j, _)| *j == i) {
                pass.push((kv, tokens));
            }
        }
        let (batch, pool) = (&mut self.batch, self.pool);
        match self.stream.as_deref_mut() {
            None => pool.enter(|| batch.eval(&mut pass, pool)).map_err(anyhow::Error::from),
            Some(s) => pool
                .enter(|| batch.eval_streamed(&mut pass, pool, s))
                .map_err(anyhow::Error::from)
                .and_then(|l| s.take_error().map(|()| l)),
        }
    }
}

/// A ring (or any one-sequence evaluator): one slot, so requests take turns.
pub struct OneSequence<'m> {
    pub eval: Box<dyn Evaluate + 'm>,
}

impl Forward for OneSequence<'_> {
    fn slots(&self) -> usize {
        1
    }

    fn clear(&mut self, _slot: usize) {
        self.eval.reset();
    }

    fn step(&mut self, steps: &[(usize, &[u32])]) -> anyhow::Result<Vec<f32>> {
        match steps {
            [(0, tokens)] => self.eval.eval(tokens, Want::Last),
            _ => anyhow::bail!("one sequence at a time, not {} steps", steps.len()),
        }
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

/// How often the cluster view is refreshed while the engine runs.
const VIEW_EVERY: Duration = Duration::from_millis(250);

/// Runs the engine until `jobs` closes. `n_ctx` is each slot's context.
pub fn run(
    forward: &mut dyn Forward,
    n_vocab: usize,
    tok: &Tokenizer,
    n_ctx: usize,
    mut jobs: mpsc::Receiver<Job>,
    joins: std::sync::mpsc::Receiver<String>,
    stats: Arc<Stats>,
) {
    let mut engine = Engine::new(forward.slots(), n_ctx, PREFILL_CHUNK);
    // Each busy slot's job: where its events go.
    let mut clients: Vec<Option<Job>> = (0..forward.slots()).map(|_| None).collect();
    let mut keep_alive = true;
    let mut viewed = Instant::now();
    // Set when a request ends, so the view shows its last token (and at
    // once, so it shows the ring from the start).
    let mut refresh = true;
    loop {
        // Devices that asked to join are taken in when the ring is idle.
        while let Ok(addr) = joins.try_recv() {
            if let Err(e) = forward.join(addr) {
                eprintln!("ring: {e:#}");
            }
        }
        if std::mem::take(&mut refresh) || viewed.elapsed() >= VIEW_EVERY {
            viewed = Instant::now();
            if let Some(devices) = forward.devices() {
                *stats.devices.lock().unwrap_or_else(|e| e.into_inner()) = devices;
            }
        }
        // Admit waiting jobs into free slots; with nothing to run, keep the
        // links alive or sleep until a request comes.
        for (i, client) in clients.iter_mut().enumerate() {
            if !engine.is_free(i) {
                continue;
            }
            let mut job = match jobs.try_recv() {
                Ok(j) => j,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) if engine.busy() > 0 => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    keep_alive = keep_alive && idle(forward);
                    if keep_alive {
                        break;
                    }
                    match jobs.blocking_recv() {
                        Some(j) => j,
                        None => return,
                    }
                }
            };
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            forward.clear(i);
            engine.admit(i, request(&mut job));
            *client = Some(job);
            stats.busy_slots.fetch_add(1, Ordering::Relaxed);
        }
        // A request with no prompt tokens has nothing to run: it ends now.
        engine.end_empty(&mut |slot, out| {
            refresh |= deliver(slot, out, &mut clients, &stats, forward);
        });
        // Clients that left free their slots before the step.
        for (i, client) in clients.iter_mut().enumerate() {
            if client.as_ref().is_some_and(|j| j.events.is_closed()) {
                *client = None;
                engine.cancel(i);
                stats.busy_slots.fetch_sub(1, Ordering::Relaxed);
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
        let inputs = engine.inputs();
        if inputs.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        let steps: Vec<(usize, &[u32])> = inputs.iter().map(|i| (i.slot, i.tokens.as_slice())).collect();
        let logits = match forward.step(&steps) {
            Ok(l) => l,
            Err(e) => {
                // A failed pass leaves every cache in it unusable: end them all.
                for input in &inputs {
                    engine.cancel(input.slot);
                    if let Some(job) = clients[input.slot].take() {
                        let _ = job.events.send(Event::Failed(format!("{e:#}")));
                        stats.busy_slots.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                continue;
            }
        };
        let elapsed = t0.elapsed().as_micros() as u64;
        for input in &inputs {
            if input.decoding {
                stats.decode_micros.fetch_add(elapsed, Ordering::Relaxed);
            } else {
                stats.prompt_tokens.fetch_add(input.tokens.len() as u64, Ordering::Relaxed);
            }
        }
        engine.absorb(tok, &inputs, &logits, n_vocab, &mut |slot, out| {
            refresh |= deliver(slot, out, &mut clients, &stats, forward);
        });
    }
}

/// Passes one of core's outputs to its client; true when the job ended.
fn deliver(slot: usize, out: Output, clients: &mut [Option<Job>], stats: &Stats, forward: &mut dyn Forward) -> bool {
    let Some(job) = clients[slot].as_ref() else { return false };
    match out {
        Output::Token(_) => {
            stats.completion_tokens.fetch_add(1, Ordering::Relaxed);
            false
        }
        Output::Text(text) => {
            let _ = job.events.send(Event::Text(text));
            false
        }
        Output::Done { finish, prompt_tokens, completion_tokens } => {
            let finish = match finish {
                engine::Finish::Stop => Finish::Stop,
                engine::Finish::Length => Finish::Length,
            };
            let _ = job.events.send(Event::Done { finish, usage: Usage::new(prompt_tokens, completion_tokens) });
            clients[slot] = None;
            stats.busy_slots.fetch_sub(1, Ordering::Relaxed);
            // Emptied now: a ring may be re-planned before the next request.
            forward.clear(slot);
            true
        }
    }
}

/// What core's engine needs of a job (which keeps its channel; the
/// engine keeps the prompt).
fn request(job: &mut Job) -> Request {
    let p = &job.params;
    Request {
        prompt: std::mem::take(&mut job.prompt),
        sampler: SamplerConfig { temperature: p.temperature, top_p: p.top_p, seed: p.seed, ..SamplerConfig::default() },
        max_tokens: p.max_tokens,
        stop: p.stop.clone(),
        ignore_eos: p.ignore_eos,
    }
}

/// One idle round; false when there is nothing to keep alive or keeping it
/// alive failed (said once on stderr; the next request reports it too).
fn idle(forward: &mut dyn Forward) -> bool {
    match forward.idle() {
        Ok(more) => more,
        Err(e) => {
            eprintln!("error: {e:#}");
            false
        }
    }
}
