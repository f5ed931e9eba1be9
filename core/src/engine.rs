//! The generation engine every front end steps: the CLI, the C ABI, the
//! server and a ring's head. It holds sequences in slots (their prompts,
//! samplers, stop strings and text decoders) and says which tokens each
//! needs evaluated next; the host runs the forward pass (one device,
//! batched, or a ring) and hands the logits back. Sans-IO: no clock, no
//! threads, no model here.

use alloc::string::String;
use alloc::vec::Vec;

use crate::sampler::{Sampler, SamplerConfig};
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
    /// The sequence is over and its slot free.
    Done { finish: Finish, prompt_tokens: usize, completion_tokens: usize },
}

/// One slot's share of the next forward pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub slot: usize,
    pub tokens: Vec<u32>,
    /// A generated token (decode), not a piece of prompt.
    pub decoding: bool,
}

#[derive(Debug)]
struct Sequence {
    request: Request,
    sampler: Sampler,
    stop: StopMatcher,
    text: StreamDecoder,
    /// Prompt tokens evaluated so far.
    fed: usize,
    /// The generated token to evaluate next.
    next: Option<u32>,
    generated: usize,
    max_tokens: usize,
}

/// Sequences in slots, stepped together.
#[derive(Debug)]
pub struct Engine {
    slots: Vec<Option<Sequence>>,
    n_ctx: usize,
    prefill_chunk: usize,
}

impl Engine {
    /// `n_slots` sequences of up to `n_ctx` tokens each; prompts are fed at
    /// most `prefill_chunk` tokens a step, so a long one does not stall the
    /// others' decoding for long.
    pub fn new(n_slots: usize, n_ctx: usize, prefill_chunk: usize) -> Self {
        Self { slots: (0..n_slots).map(|_| None).collect(), n_ctx, prefill_chunk: prefill_chunk.max(1) }
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
        self.slots[slot] = Some(Sequence {
            stop: StopMatcher::new(request.stop.clone()),
            request,
            sampler,
            text: StreamDecoder::default(),
            fed: 0,
            next: None,
            generated: 0,
            max_tokens,
        });
    }

    /// Ends the sequence in `slot` without output (its client left).
    pub fn cancel(&mut self, slot: usize) {
        self.slots[slot] = None;
    }

    /// The next forward pass: every busy slot's next prompt chunk or
    /// generated token, in slot order.
    pub fn inputs(&self) -> Vec<Input> {
        let mut inputs = Vec::new();
        for (slot, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            let (tokens, decoding) = match s.next {
                Some(t) => (alloc::vec![t], true),
                None => {
                    let end = (s.fed + self.prefill_chunk).min(s.request.prompt.len());
                    (s.request.prompt[s.fed..end].to_vec(), false)
                }
            };
            if !tokens.is_empty() {
                inputs.push(Input { slot, tokens, decoding });
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

    /// Takes the pass's logits (`n_vocab` floats for each input's last
    /// token, in the order of `inputs`), samples where a slot's prompt is
    /// done, and passes each slot's outputs to `emit`. Slots that finish
    /// are free afterwards.
    pub fn absorb(
        &mut self,
        tok: &Tokenizer,
        inputs: &[Input],
        logits: &[f32],
        n_vocab: usize,
        emit: &mut dyn FnMut(usize, Output),
    ) {
        for (input, row) in inputs.iter().zip(logits.chunks_exact(n_vocab)) {
            let Some(s) = self.slots[input.slot].as_mut() else { continue };
            if !input.decoding {
                s.fed += input.tokens.len();
                if s.fed < s.request.prompt.len() {
                    continue; // more prompt to feed before sampling
                }
            }
            let mut row = row.to_vec();
            if s.sample(&mut row, tok, &mut |o| emit(input.slot, o)) {
                self.slots[input.slot] = None;
            }
        }
    }
}

impl Sequence {
    /// Samples the next token and emits what it shows; true when the
    /// sequence is over.
    fn sample(&mut self, logits: &mut [f32], tok: &Tokenizer, emit: &mut dyn FnMut(Output)) -> bool {
        let id = self.sampler.sample(logits);
        let finish = if tok.is_eog(id) && !self.request.ignore_eos {
            Finish::Stop
        } else {
            self.generated += 1;
            self.sampler.accept(id);
            emit(Output::Token(id));
            let mut bytes = Vec::new();
            tok.token_bytes(id, false, &mut bytes);
            let shown = self.stop.push(&self.text.push(&bytes));
            if !shown.is_empty() {
                emit(Output::Text(shown));
            }
            if self.stop.stopped() {
                Finish::Stop
            } else if self.generated >= self.max_tokens {
                Finish::Length
            } else {
                self.next = Some(id);
                return false;
            }
        };
        if !self.stop.stopped() {
            let rest = self.text.finish();
            let tail = self.stop.push(&rest) + &self.stop.finish();
            if !tail.is_empty() {
                emit(Output::Text(tail));
            }
        }
        emit(Output::Done { finish, prompt_tokens: self.request.prompt.len(), completion_tokens: self.generated });
        true
    }
}
