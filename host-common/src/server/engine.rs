//! The generation engine behind the server: one thread owns the model and
//! `parallel` slots, each with its own KV cache. Every step it admits
//! waiting requests into free slots, then runs one forward pass that
//! carries every busy slot's next tokens (a decoding slot's one token, a
//! new slot's next prompt chunk), so the weights are read once per step for
//! all of them: continuous batching. A sequence's logits do not depend on
//! what it is batched with (tested bit for bit in core). On a ring the
//! slots' tokens travel round the ring together, one trip per step, and
//! with no request the engine keeps the ring's links alive.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prima_core::engine::{self, Engine, Output, Request, Speculation};
use prima_core::sampler::SamplerConfig;
use prima_core::tokenizer::Tokenizer;
use tokio::sync::mpsc;

use super::api::{Finish, Params, Usage};
use crate::forward::{run_inputs, Drafts};
pub use crate::forward::{DeviceView, Evaluate, LocalSlots};

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
    /// Draft tokens the target checked, and those that stood.
    pub drafted: AtomicU64,
    pub accepted: AtomicU64,
    pub cancelled: AtomicU64,
    /// Forward passes of the target model.
    pub passes: AtomicU64,
    /// The cluster view's devices on a ring (empty on one device).
    pub devices: std::sync::Mutex<Vec<DeviceView>>,
}

/// Prompt tokens a slot feeds one step at most, so a long prompt does not
/// stall the others' decoding for long.
pub const PREFILL_CHUNK: usize = 256;

/// How often the cluster view is refreshed while the engine runs.
const VIEW_EVERY: Duration = Duration::from_millis(250);

/// Speculative decoding in the server: how, and the draft model's slots
/// (one per target slot) when there is one.
pub struct Speculating<'d> {
    pub settings: Speculation,
    pub draft: Option<&'d mut dyn Evaluate>,
}

/// Runs the engine until `jobs` closes. `n_ctx` is each slot's context.
pub fn run(
    forward: &mut dyn Evaluate,
    speculating: Option<Speculating<'_>>,
    tok: &Tokenizer,
    n_ctx: usize,
    mut jobs: mpsc::Receiver<Job>,
    joins: std::sync::mpsc::Receiver<String>,
    stats: Arc<Stats>,
) {
    let mut engine = Engine::new(forward.slots(), n_ctx, PREFILL_CHUNK);
    let mut drafts = None;
    if let Some(s) = speculating {
        engine = engine.with_speculation(s.settings);
        drafts = s.draft.map(Drafts::new);
    }
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
            if let Some(d) = drafts.as_mut() {
                d.clear(i);
            }
            engine.admit(i, request(&mut job));
            *client = Some(job);
            stats.busy_slots.fetch_add(1, Ordering::Relaxed);
        }
        // A request with no prompt tokens has nothing to run: it ends now.
        engine.end_empty(&mut |slot, out| {
            refresh |= deliver(slot, out, &mut clients, &stats, forward, None);
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
        let t0 = Instant::now();
        let drafted = match drafts.as_mut() {
            Some(d) => d.propose(&mut engine),
            None => Ok(()),
        };
        let inputs = engine.inputs();
        if inputs.is_empty() {
            continue;
        }
        let logits = match drafted.and_then(|()| run_inputs(forward, &inputs)) {
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
        stats.passes.fetch_add(1, Ordering::Relaxed);
        let elapsed = t0.elapsed().as_micros() as u64;
        for input in &inputs {
            if input.decoding {
                stats.decode_micros.fetch_add(elapsed, Ordering::Relaxed);
            } else {
                stats.prompt_tokens.fetch_add(input.tokens.len() as u64, Ordering::Relaxed);
            }
        }
        engine.absorb(tok, &inputs, &logits, &mut |slot, out| {
            refresh |= deliver(slot, out, &mut clients, &stats, forward, drafts.as_mut());
        });
        let spec = engine.speculation_stats();
        stats.drafted.store(spec.drafted as u64, Ordering::Relaxed);
        stats.accepted.store(spec.accepted as u64, Ordering::Relaxed);
    }
}

/// Passes one of core's outputs to its client; true when the job ended.
fn deliver(
    slot: usize,
    out: Output,
    clients: &mut [Option<Job>],
    stats: &Stats,
    forward: &mut dyn Evaluate,
    drafts: Option<&mut Drafts<'_>>,
) -> bool {
    let Some(job) = clients[slot].as_ref() else { return false };
    match out {
        Output::Rewind(pos) => {
            forward.truncate(slot, pos);
            if let Some(d) = drafts {
                d.rewind(slot, pos);
            }
            false
        }
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
fn idle(forward: &mut dyn Evaluate) -> bool {
    match forward.idle() {
        Ok(more) => more,
        Err(e) => {
            eprintln!("error: {e:#}");
            false
        }
    }
}
