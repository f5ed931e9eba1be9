//! The generation engine every front end steps: the CLI, the C ABI, the
//! server and a ring's head. It holds sequences in slots (their prompts,
//! samplers, stop strings and text decoders) and says which tokens each
//! needs evaluated next; the host runs the forward pass (one device,
//! batched, or a ring) and hands the logits back. Sequences may speculate:
//! a decoding step then carries draft tokens (from prompt lookup, or from
//! a draft model the host runs) that the target checks in the same pass.
//! Sans-IO: no clock, no threads, no model here.

use alloc::string::String;
use alloc::vec::Vec;

use crate::sampler::{Sampler, SamplerConfig};
use crate::speculative::{judge, lookup, next_draft_len, Verdict};
use crate::stop::StopMatcher;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// What a sequence asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub sampler: SamplerConfig,
    /// At most this many tokens (and never past the context).
    pub max_tokens: Option<usize>,
    /// Generation ends where any of these appears in the text, which is cut before it.
    pub stop: Vec<String>,
    /// Generate past end-of-generation tokens.
    pub ignore_eos: bool,
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token or a stop string.
    Stop,
    /// Its token budget or the context ran out.
    Length,
}

/// What a step produced for one slot, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A token was generated (end-of-generation tokens are not).
    Token(u32),
    /// Text to show: what the stop strings let through so far.
    Text(String),
    /// Draft tokens were rejected: the slot's cache (and a draft model's)
    /// keeps its first this many positions and forgets the rest.
    Rewind(usize),
    /// The sequence is over and its slot free.
    Done { finish: Finish, prompt_tokens: usize, completion_tokens: usize },
}

/// Where draft tokens come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftSource {
    /// A draft model the host runs: it asks [`Engine::draft_wanted`] and
    /// passes the draft's logits to [`Engine::draft`].
    Model,
    /// Prompt lookup: the tokens that followed the last earlier occurrence
    /// of the latest few (no second model).
    Lookup,
}

/// Speculative decoding's settings, for every slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speculation {
    pub source: DraftSource,
    /// At most this many draft tokens per target pass.
    pub max: usize,
    /// Fewer drafts than this are not worth checking: the slot decodes one
    /// token plainly.
    pub min: usize,
}

/// What speculation did, summed over every slot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpeculationStats {
    /// Target passes that carried a decoding step (one forward pass, or one
    /// trip round a ring).
    pub target_passes: usize,
    pub drafted: usize,
    pub accepted: usize,
}

/// Context tails prompt lookup matches: 2 to 4 tokens (one token recurs
/// too often to predict what follows).
const LOOKUP_NGRAM: (usize, usize) = (2, 4);

/// One slot's share of the next forward pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub slot: usize,
    pub tokens: Vec<u32>,
    /// A generated token (decode), not a piece of prompt.
    pub decoding: bool,
    /// Logit rows wanted, for the last this many of `tokens`: one, or one
    /// more than the draft tokens (each draft is judged by the row before it).
    pub rows: usize,
}

/// A sequence's current draft.
#[derive(Debug)]
struct Draft {
    tokens: Vec<u32>,
    /// The distribution each draft model token was drawn from.
    qs: Vec<Vec<(u32, f64)>>,
    /// How many tokens to draft next (adapts to how many stand).
    len: usize,
    /// Samples the draft model: the target's settings without penalties,
    /// which need no history.
    sampler: Sampler,
}

#[derive(Debug)]
struct Sequence {
    request: Request,
    sampler: Sampler,
    stop: StopMatcher,
    text: StreamDecoder,
    /// The prompt, then every generated token.
    context: Vec<u32>,
    /// Positions the host's cache holds (prompt tokens fed, then generated
    /// tokens evaluated).
    fed: usize,
    /// The generated token to evaluate next.
    next: Option<u32>,
    generated: usize,
    max_tokens: usize,
    draft: Draft,
    /// Distribution buffers, reused.
    p: Vec<(u32, f64)>,
    scratch: Vec<(u32, f64)>,
}

/// Sequences in slots, stepped together.
#[derive(Debug)]
pub struct Engine {
    slots: Vec<Option<Sequence>>,
    n_ctx: usize,
    prefill_chunk: usize,
    speculation: Option<Speculation>,
    stats: SpeculationStats,
}

impl Engine {
    /// `n_slots` sequences of up to `n_ctx` tokens each; prompts are fed at
    /// most `prefill_chunk` tokens a step, so a long one does not stall the
    /// others' decoding for long.
    pub fn new(n_slots: usize, n_ctx: usize, prefill_chunk: usize) -> Self {
        Self {
            slots: (0..n_slots).map(|_| None).collect(),
            n_ctx,
            prefill_chunk: prefill_chunk.max(1),
            speculation: None,
            stats: SpeculationStats::default(),
        }
    }

    /// Every sequence admitted from now on speculates as `s` says.
    pub fn with_speculation(mut self, s: Speculation) -> Self {
        self.speculation = Some(Speculation { max: s.max.max(1), min: s.min.max(1), ..s });
        self
    }

    pub fn speculation(&self) -> Option<Speculation> {
        self.speculation
    }

    /// What speculation did so far.
    pub fn speculation_stats(&self) -> SpeculationStats {
        self.stats
    }

    pub fn n_slots(&self) -> usize {
        self.slots.len()
    }

    pub fn busy(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub fn is_free(&self, slot: usize) -> bool {
        self.slots.get(slot).is_some_and(|s| s.is_none())
    }

    /// Starts `request` in `slot` (which must be free; the host clears its
    /// cache). An empty prompt gets no tokens and ends at once.
    pub fn admit(&mut self, slot: usize, request: Request) {
        let mut sampler = Sampler::new(request.sampler);
        request.prompt.iter().for_each(|&t| sampler.accept(t));
        let room = self.n_ctx.saturating_sub(request.prompt.len());
        let max_tokens = request.max_tokens.unwrap_or(room).min(room);
        let draft_sampler = Sampler::new(SamplerConfig {
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            seed: request.sampler.seed ^ 0xd4af7,
            ..request.sampler
        });
        self.slots[slot] = Some(Sequence {
            stop: StopMatcher::new(request.stop.clone()),
            context: request.prompt.clone(),
            request,
            sampler,
            text: StreamDecoder::default(),
            fed: 0,
            next: None,
            generated: 0,
            max_tokens,
            draft: Draft {
                tokens: Vec::new(),
                qs: Vec::new(),
                len: self.speculation.map_or(0, |s| s.max),
                sampler: draft_sampler,
            },
            p: Vec::new(),
            scratch: Vec::new(),
        });
    }

    /// Ends the sequence in `slot` without output (its client left).
    pub fn cancel(&mut self, slot: usize) {
        self.slots[slot] = None;
    }

    /// Every token of the sequence in `slot` so far: its prompt, then what
    /// it generated (the last of which the host has not evaluated yet).
    pub fn context(&self, slot: usize) -> &[u32] {
        self.slots.get(slot).and_then(|s| s.as_ref()).map_or(&[], |s| &s.context)
    }

    /// With a draft model: the decoding slots that want a draft. The host
    /// runs the draft model over each slot's [`Self::context`] and passes
    /// each row of logits to [`Self::draft`] until it says the draft is whole.
    pub fn draft_wanted(&self) -> Vec<usize> {
        let Some(spec) = self.speculation.filter(|s| s.source == DraftSource::Model) else {
            return Vec::new();
        };
        let wanted = |(slot, s): (usize, &Option<Sequence>)| {
            let s = s.as_ref().filter(|s| s.next.is_some() && s.draft.tokens.is_empty())?;
            (s.draft_room(spec) > 0).then_some(slot)
        };
        self.slots.iter().enumerate().filter_map(wanted).collect()
    }

    /// Draws a draft token for `slot` from the draft model's `logits` (for
    /// the position after its context and the drafts so far). Returns the
    /// token when the slot wants another after it, so the host evaluates
    /// it next; `None` when its draft is complete.
    pub fn draft(&mut self, slot: usize, logits: &mut [f32]) -> Option<u32> {
        let spec = self.speculation?;
        let s = self.slots.get_mut(slot)?.as_mut()?;
        let room = s.draft_room(spec);
        let d = &mut s.draft;
        if d.tokens.len() >= room {
            return None;
        }
        let mut q = Vec::new();
        d.sampler.distribution(logits, &mut q);
        let token = d.sampler.draw(&q);
        d.tokens.push(token);
        d.qs.push(q);
        (d.tokens.len() < room).then_some(token)
    }

    /// The next forward pass: every busy slot's next prompt chunk or
    /// generated token (with its draft, when it speculates), in slot order.
    pub fn inputs(&mut self) -> Vec<Input> {
        let mut inputs = Vec::new();
        let (spec, chunk) = (self.speculation, self.prefill_chunk);
        for (slot, s) in self.slots.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            let input = match s.next {
                Some(t) => {
                    if let Some(spec) = spec {
                        s.complete_draft(spec);
                    }
                    let mut tokens = alloc::vec![t];
                    tokens.extend_from_slice(&s.draft.tokens);
                    Input { slot, rows: tokens.len(), tokens, decoding: true }
                }
                None => {
                    let end = (s.fed + chunk).min(s.request.prompt.len());
                    Input { slot, tokens: s.request.prompt[s.fed..end].to_vec(), decoding: false, rows: 1 }
                }
            };
            if !input.tokens.is_empty() {
                inputs.push(input);
            }
        }
        inputs
    }

    /// Slots whose prompt is empty: nothing to evaluate, so they end now.
    pub fn end_empty(&mut self, emit: &mut dyn FnMut(usize, Output)) {
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if s.as_ref().is_some_and(|s| s.request.prompt.is_empty()) {
                *s = None;
                emit(slot, Output::Done { finish: Finish::Length, prompt_tokens: 0, completion_tokens: 0 });
            }
        }
    }

    /// Takes the pass's logits (a row of the vocabulary's size for each of
    /// each input's `rows`, in the order of `inputs`), samples where a
    /// slot's prompt is done, judges drafts, and passes each slot's outputs
    /// to `emit`. Slots that finish are free afterwards.
    pub fn absorb(&mut self, tok: &Tokenizer, inputs: &[Input], logits: &[f32], emit: &mut dyn FnMut(usize, Output)) {
        let n_vocab = logits.len() / inputs.iter().map(|i| i.rows).sum::<usize>().max(1);
        let mut rows = logits.chunks_exact(n_vocab.max(1));
        if inputs.iter().any(|i| i.decoding) {
            self.stats.target_passes += 1;
        }
        for input in inputs {
            let mine: Vec<&[f32]> = rows.by_ref().take(input.rows).collect();
            let Some(s) = self.slots[input.slot].as_mut() else { continue };
            s.fed += input.tokens.len();
            if !input.decoding && s.fed < s.request.prompt.len() {
                continue; // more prompt to feed before sampling
            }
            let drafted = if input.decoding { input.tokens.len() - 1 } else { 0 };
            let (outcome, accepted) = s.judge(&mine, self.speculation, tok, &mut |o| emit(input.slot, o));
            if input.decoding {
                self.stats.drafted += drafted;
                self.stats.accepted += accepted;
            }
            match outcome {
                Some(_) => self.slots[input.slot] = None,
                None if accepted < drafted => {
                    // The cache holds the pending token and the drafts that stood.
                    s.fed -= drafted - accepted;
                    emit(input.slot, Output::Rewind(s.fed));
                }
                None => {}
            }
        }
    }
}

impl Sequence {
    /// How many draft tokens the next pass may carry: the adaptive length,
    /// within the token budget (the pass's last row gives one more token).
    fn draft_room(&self, spec: Speculation) -> usize {
        let left = self.max_tokens.saturating_sub(self.generated);
        let room = self.draft.len.min(left.saturating_sub(1));
        if room < spec.min {
            0
        } else {
            room
        }
    }

    /// Fills a lookup draft, and drops a draft too short to be worth a pass.
    fn complete_draft(&mut self, spec: Speculation) {
        let room = self.draft_room(spec);
        if spec.source == DraftSource::Lookup && room > 0 {
            lookup(&self.context, LOOKUP_NGRAM.0, LOOKUP_NGRAM.1, room, &mut self.draft.tokens);
        }
        self.draft.tokens.truncate(room);
        if self.draft.tokens.len() < spec.min {
            self.draft.tokens.clear();
        }
        self.draft.qs.truncate(self.draft.tokens.len());
    }

    /// Samples from the pass's rows for this sequence: each draft token is
    /// judged by the row before it, and the row after the last one that
    /// stands gives one more token. Returns how the sequence finished (if
    /// it did) and how many drafts stood.
    fn judge(
        &mut self,
        rows: &[&[f32]],
        spec: Option<Speculation>,
        tok: &Tokenizer,
        emit: &mut dyn FnMut(Output),
    ) -> (Option<Finish>, usize) {
        let drafts = core::mem::take(&mut self.draft.tokens);
        let qs = core::mem::take(&mut self.draft.qs);
        let mut accepted = 0;
        let mut outcome = None;
        for (i, row) in rows.iter().enumerate() {
            let mut row = row.to_vec();
            let mut p = core::mem::take(&mut self.p);
            self.sampler.distribution(&mut row, &mut p);
            let token = match drafts.get(i) {
                None => self.sampler.draw(&p),
                Some(&d) => {
                    // A lookup draft was proposed with certainty.
                    let certain = [(d, 1.0)];
                    let q = qs.get(i).map_or(&certain[..], |q| q.as_slice());
                    match judge(&p, q, d, self.sampler.rng(), &mut self.scratch) {
                        Verdict::Accepted => {
                            accepted += 1;
                            d
                        }
                        Verdict::Replaced(t) => t,
                    }
                }
            };
            self.p = p;
            outcome = self.push(token, tok, emit);
            if outcome.is_some() || accepted <= i {
                break; // finished, or a draft was replaced
            }
        }
        if let Some(spec) = spec {
            self.draft.len = next_draft_len(self.draft.len, drafts.len(), accepted, spec.min, spec.max);
        }
        if let Some(finish) = outcome {
            self.finish(finish, emit);
        }
        // Keep the buffers for the next draft.
        self.draft.tokens = drafts;
        self.draft.tokens.clear();
        (outcome, accepted)
    }

    /// Takes a generated token: emits it and its text. Returns how the
    /// sequence finished, if this token ends it.
    fn push(&mut self, id: u32, tok: &Tokenizer, emit: &mut dyn FnMut(Output)) -> Option<Finish> {
        if tok.is_eog(id) && !self.request.ignore_eos {
            return Some(Finish::Stop);
        }
        self.generated += 1;
        self.sampler.accept(id);
        self.context.push(id);
        emit(Output::Token(id));
        let mut bytes = Vec::new();
        tok.token_bytes(id, false, &mut bytes);
        let shown = self.stop.push(&self.text.push(&bytes));
        if !shown.is_empty() {
            emit(Output::Text(shown));
        }
        if self.stop.stopped() {
            Some(Finish::Stop)
        } else if self.generated >= self.max_tokens {
            Some(Finish::Length)
        } else {
            self.next = Some(id);
            None
        }
    }

    /// Emits the text held back and the end.
    fn finish(&mut self, finish: Finish, emit: &mut dyn FnMut(Output)) {
        if !self.stop.stopped() {
            let rest = self.text.finish();
            let tail = self.stop.push(&rest) + &self.stop.finish();
            if !tail.is_empty() {
                emit(Output::Text(tail));
            }
        }
        emit(Output::Done { finish, prompt_tokens: self.request.prompt.len(), completion_tokens: self.generated });
    }
}
