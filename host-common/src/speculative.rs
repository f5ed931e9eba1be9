//! Speculative generation: a draft (a small model on this device, or a
//! lookup in the text so far) proposes several tokens, and the target
//! checks them all in one pass, which on a ring is one trip round it.
//! Core's [`judge`] decides what stands, so the output is what plain
//! decoding gives at temperature 0 and follows the same distribution
//! otherwise.

use prima_core::sampler::Sampler;
use prima_core::speculative::{judge, lookup, next_draft_len, Verdict};
use prima_core::tokenizer::{StreamDecoder, Tokenizer};
use prima_core::Want;
use std::time::Instant;

use crate::generate::{Evaluate, Generated};

/// Context tails prompt lookup matches: 2 to 4 tokens (one token
/// recurs too often to predict what follows).
const LOOKUP_NGRAM: (usize, usize) = (2, 4);

/// Where draft tokens come from.
pub enum Drafter<'d> {
    /// A small model sharing the target's vocabulary, with its own sampler
    /// (the target's settings without penalties, which need no history).
    Model { eval: &'d mut dyn Evaluate, sampler: Sampler },
    /// The tokens that followed the last earlier occurrence of the latest
    /// few tokens (no second model).
    Lookup,
}

/// How many tokens a pass may propose.
#[derive(Debug, Clone, Copy)]
pub struct DraftLimits {
    /// At most this many draft tokens per target pass.
    pub max: usize,
    /// Fewer drafts than this are not worth a pass: decode one token plainly.
    pub min: usize,
}

/// What speculation did, for the timings.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpeculationStats {
    /// Passes of the target model (each one forward pass, or one trip round a ring).
    pub target_passes: usize,
    pub drafted: usize,
    pub accepted: usize,
}

/// [`crate::generate::generate`] with drafts: the same arguments and
/// result, plus what speculation did.
#[allow(clippy::too_many_arguments)]
pub fn generate_speculative(
    target: &mut dyn Evaluate,
    drafter: &mut Drafter<'_>,
    limits: DraftLimits,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    n_predict: usize,
    ignore_eos: bool,
    on_piece: &mut dyn FnMut(u32, &str) -> anyhow::Result<bool>,
) -> anyhow::Result<(Generated, SpeculationStats)> {
    prompt.iter().for_each(|&t| sampler.accept(t));
    let mut out = Generated::default();
    let mut stats = SpeculationStats::default();
    let t0 = Instant::now();
    let mut logits = target.eval(prompt, Want::Last)?;
    stats.target_passes += 1;
    out.prompt_time = t0.elapsed();
    let t1 = Instant::now();
    // Every token so far, and how many of them each model has evaluated.
    let mut context = prompt.to_vec();
    let (mut target_done, mut draft_done) = (prompt.len(), 0);
    let mut emit = Emitter { tok, ignore_eos, n_predict, stream: StreamDecoder::default(), bytes: Vec::new() };
    let (mut p, mut scratch) = (Vec::new(), Vec::new());
    // The first token comes from the prompt's logits.
    sampler.distribution(&mut logits, &mut p);
    let first = sampler.draw(&p);
    if n_predict > 0 && emit.push(first, sampler, &mut context, &mut out, on_piece)? {
        let (mut drafts, mut qs) = (Vec::new(), Vec::new());
        let mut draft_len = limits.max;
        loop {
            propose(drafter, draft_len, &context, &mut draft_done, &mut drafts, &mut qs)?;
            let keep = n_predict - out.ids.len();
            drafts.truncate(keep.saturating_sub(1));
            if drafts.len() < limits.min.max(1) {
                drafts.clear();
            }
            // One pass: the tokens the target has not seen, then the drafts.
            let mut batch = context[target_done..].to_vec();
            let seen = batch.len();
            batch.extend_from_slice(&drafts);
            let all = target.eval(&batch, Want::All)?;
            stats.target_passes += 1;
            stats.drafted += drafts.len();
            let n_vocab = all.len() / batch.len();
            let mut rows = all.chunks_exact(n_vocab).skip(seen - 1);
            let mut accepted = 0;
            let mut go_on = true;
            for (i, &d) in drafts.iter().enumerate() {
                let mut row = rows.next().expect("a row per draft").to_vec();
                sampler.distribution(&mut row, &mut p);
                let verdict = match drafter {
                    Drafter::Model { .. } => judge(&p, &qs[i], d, sampler.rng(), &mut scratch),
                    Drafter::Lookup => judge(&p, &[(d, 1.0)], d, sampler.rng(), &mut scratch),
                };
                match verdict {
                    Verdict::Accepted => {
                        accepted += 1;
                        go_on = emit.push(d, sampler, &mut context, &mut out, on_piece)?;
                    }
                    Verdict::Replaced(t) => go_on = emit.push(t, sampler, &mut context, &mut out, on_piece)?,
                }
                if !go_on || verdict != Verdict::Accepted {
                    break;
                }
            }
            stats.accepted += accepted;
            draft_len = next_draft_len(draft_len, drafts.len(), accepted, limits.min, limits.max);
            // Every draft stood: the pass's last row gives one more token.
            if go_on && accepted == drafts.len() {
                let mut row = rows.next().expect("a row after the drafts").to_vec();
                sampler.distribution(&mut row, &mut p);
                let next = sampler.draw(&p);
                go_on = emit.push(next, sampler, &mut context, &mut out, on_piece)?;
            }
            // The target keeps what it saw up to the last accepted draft.
            target_done += seen + accepted;
            target.truncate(target_done);
            if let Drafter::Model { eval, .. } = drafter {
                draft_done = draft_done.min(target_done);
                eval.truncate(draft_done);
            }
            if !go_on {
                break;
            }
        }
    }
    out.text.push_str(&emit.finish(on_piece)?);
    out.generation_time = t1.elapsed();
    Ok((out, stats))
}

/// Fills `drafts` (and for a draft model, the distribution each was drawn
/// from, in `qs`) with up to `max` tokens following `context`.
fn propose(
    drafter: &mut Drafter<'_>,
    max: usize,
    context: &[u32],
    draft_done: &mut usize,
    drafts: &mut Vec<u32>,
    qs: &mut Vec<Vec<(u32, f64)>>,
) -> anyhow::Result<()> {
    drafts.clear();
    match drafter {
        Drafter::Lookup => lookup(context, LOOKUP_NGRAM.0, LOOKUP_NGRAM.1, max, drafts),
        Drafter::Model { eval, sampler } => {
            let mut logits = eval.eval(&context[*draft_done..], Want::Last)?;
            *draft_done = context.len();
            qs.resize_with(max, Vec::new);
            for (i, q) in qs.iter_mut().enumerate() {
                sampler.distribution(&mut logits, q);
                let d = sampler.draw(q);
                drafts.push(d);
                if i + 1 < max {
                    logits = eval.eval(&[d], Want::Last)?;
                    *draft_done += 1;
                }
            }
        }
    }
    Ok(())
}

/// Passes accepted tokens on: to the sampler's history, the context, the
/// result and the caller, as text pieces.
struct Emitter<'t> {
    tok: &'t Tokenizer,
    ignore_eos: bool,
    n_predict: usize,
    stream: StreamDecoder,
    bytes: Vec<u8>,
}

impl Emitter<'_> {
    /// Returns whether generation goes on after `token`.
    fn push(
        &mut self,
        token: u32,
        sampler: &mut Sampler,
        context: &mut Vec<u32>,
        out: &mut Generated,
        on_piece: &mut dyn FnMut(u32, &str) -> anyhow::Result<bool>,
    ) -> anyhow::Result<bool> {
        if self.tok.is_eog(token) && !self.ignore_eos {
            return Ok(false);
        }
        out.ids.push(token);
        sampler.accept(token);
        context.push(token);
        self.bytes.clear();
        self.tok.token_bytes(token, false, &mut self.bytes);
        let piece = self.stream.push(&self.bytes);
        out.text.push_str(&piece);
        Ok(on_piece(token, &piece)? && out.ids.len() < self.n_predict)
    }

    fn finish(&mut self, on_piece: &mut dyn FnMut(u32, &str) -> anyhow::Result<bool>) -> anyhow::Result<String> {
        let rest = self.stream.finish();
        if !rest.is_empty() {
            on_piece(u32::MAX, &rest)?;
        }
        Ok(rest)
    }
}
