//! The generation engine behind the server: one thread owns the model and
//! `parallel` slots, each with its own KV cache. Every step it admits
//! waiting requests into free slots, then runs one forward pass that
//! carries every busy slot's next tokens (a decoding slot's one token, a
//! new slot's next prompt chunk), so the weights are read once per step for
//! all of them: continuous batching. A sequence's logits do not depend on
//! what it is batched with (tested bit for bit in core).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use prima_core::sampler::{Sampler, SamplerConfig};
use prima_core::stop::StopMatcher;
use prima_core::tokenizer::{StreamDecoder, Tokenizer};
use prima_core::{Batch, KvCache, KvType, Model};
use tokio::sync::mpsc;

use super::api::{Finish, Params, Usage};
use crate::pool::Pool;
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
}

/// Prompt tokens a slot feeds one step at most, so a long prompt does not
/// stall the others' decoding for long.
pub const PREFILL_CHUNK: usize = 256;

struct Slot {
    kv: KvCache,
    job: Option<Running>,
}

struct Running {
    job: Job,
    sampler: Sampler,
    stop: StopMatcher,
    text: StreamDecoder,
    /// Prompt tokens evaluated so far.
    fed: usize,
    /// The token to evaluate next (after the prompt).
    next: Option<u32>,
    /// Whether this step's input is a generated token (not prompt).
    decoding: bool,
    generated: usize,
    max_tokens: usize,
}

/// Runs the engine until `jobs` closes. `n_ctx` is each slot's context;
/// layers that do not stay resident come through `stream`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &Model<'_>,
    tok: &Tokenizer,
    pool: &Pool,
    parallel: usize,
    n_ctx: usize,
    mut stream: Option<&mut LayerStream<'_>>,
    mut jobs: mpsc::Receiver<Job>,
    stats: Arc<Stats>,
) {
    let mut batch = Batch::new(model);
    let mut slots: Vec<Slot> = (0..parallel).map(|_| Slot { kv: batch.cache(n_ctx, KvType::F16), job: None }).collect();
    loop {
        // Admit waiting jobs into free slots; sleep when there is nothing to do.
        for slot in slots.iter_mut().filter(|s| s.job.is_none()) {
            let job = if stats.busy_slots.load(Ordering::Relaxed) == 0 {
                match jobs.blocking_recv() {
                    Some(j) => j,
                    None => return,
                }
            } else {
                match jobs.try_recv() {
                    Ok(j) => j,
                    Err(_) => break,
                }
            };
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            slot.kv.clear();
            slot.job = Some(start(job, n_ctx));
            stats.busy_slots.fetch_add(1, Ordering::Relaxed);
        }
        // Clients that left free their slots before the step.
        for slot in slots.iter_mut() {
            if slot.job.as_ref().is_some_and(|r| r.job.events.is_closed()) {
                slot.job = None;
                stats.busy_slots.fetch_sub(1, Ordering::Relaxed);
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
        let inputs: Vec<(usize, Vec<u32>)> =
            slots.iter_mut().enumerate().filter_map(|(i, s)| s.job.as_mut().map(|r| (i, r.input()))).collect();
        if inputs.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        // `inputs` is in slot order: pair each busy slot's cache with its tokens.
        let mut listed = inputs.iter().peekable();
        let mut steps: Vec<(&mut KvCache, &[u32])> = Vec::with_capacity(inputs.len());
        for (i, slot) in slots.iter_mut().enumerate() {
            if let Some((_, tokens)) = listed.next_if(|(j, _)| *j == i) {
                steps.push((&mut slot.kv, tokens.as_slice()));
            }
        }
        let result = match stream.as_deref_mut() {
            None => pool.enter(|| batch.eval(&mut steps, pool)).map_err(anyhow::Error::from),
            Some(s) => pool
                .enter(|| batch.eval_streamed(&mut steps, pool, s))
                .map_err(anyhow::Error::from)
                .and_then(|l| s.take_error().map(|()| l)),
        };
        drop(steps);
        let n_vocab = model.config.n_vocab;
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // A failed pass leaves every cache in it unusable: end them all.
                for (i, _) in &inputs {
                    if let Some(r) = slots[*i].job.take() {
                        let _ = r.job.events.send(Event::Failed(format!("{e:#}")));
                        stats.busy_slots.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                continue;
            }
        };
        let elapsed = t0.elapsed().as_micros() as u64;
        for ((i, input), row) in inputs.iter().zip(logits.chunks_exact(n_vocab)) {
            let slot = &mut slots[*i];
            let Some(r) = slot.job.as_mut() else { continue };
            if r.decoding {
                stats.decode_micros.fetch_add(elapsed, Ordering::Relaxed);
            } else {
                stats.prompt_tokens.fetch_add(input.len() as u64, Ordering::Relaxed);
                r.fed += input.len();
                if r.fed < r.job.prompt.len() {
                    continue; // more prompt to feed before sampling
                }
            }
            let mut row = row.to_vec();
            if sample(r, &mut row, tok, stats.as_ref()) {
                slot.job = None;
                stats.busy_slots.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Running {
    /// This slot's tokens for the next step.
    fn input(&mut self) -> Vec<u32> {
        match self.next {
            Some(t) => {
                self.decoding = true;
                vec![t]
            }
            None => {
                self.decoding = false;
                let end = (self.fed + PREFILL_CHUNK).min(self.job.prompt.len());
                self.job.prompt[self.fed..end].to_vec()
            }
        }
    }
}

fn start(job: Job, n_ctx: usize) -> Running {
    let p = &job.params;
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: p.temperature,
        top_p: p.top_p,
        seed: p.seed,
        ..SamplerConfig::default()
    });
    job.prompt.iter().for_each(|&t| sampler.accept(t));
    let room = n_ctx.saturating_sub(job.prompt.len());
    let max_tokens = p.max_tokens.unwrap_or(room).min(room);
    Running {
        stop: StopMatcher::new(p.stop.clone()),
        job,
        sampler,
        text: StreamDecoder::default(),
        fed: 0,
        next: None,
        decoding: false,
        generated: 0,
        max_tokens,
    }
}

/// Samples a slot's next token from its logits and sends what it shows.
/// Returns true when the slot's job is over.
fn sample(r: &mut Running, logits: &mut [f32], tok: &Tokenizer, stats: &Stats) -> bool {
    let id = r.sampler.sample(logits);
    let finish = if tok.is_eog(id) && !r.job.params.ignore_eos {
        Some(Finish::Stop)
    } else {
        r.generated += 1;
        stats.completion_tokens.fetch_add(1, Ordering::Relaxed);
        r.sampler.accept(id);
        let mut bytes = Vec::new();
        tok.token_bytes(id, false, &mut bytes);
        let shown = r.stop.push(&r.text.push(&bytes));
        if !shown.is_empty() {
            let _ = r.job.events.send(Event::Text(shown));
        }
        if r.stop.stopped() {
            Some(Finish::Stop)
        } else if r.generated >= r.max_tokens {
            Some(Finish::Length)
        } else {
            r.next = Some(id);
            None
        }
    };
    let Some(finish) = finish else { return false };
    if !r.stop.stopped() {
        let rest = r.text.finish();
        let tail = r.stop.push(&rest) + &r.stop.finish();
        if !tail.is_empty() {
            let _ = r.job.events.send(Event::Text(tail));
        }
    }
    let usage = Usage::new(r.job.prompt.len(), r.generated);
    let _ = r.job.events.send(Event::Done { finish, usage });
    true
}
