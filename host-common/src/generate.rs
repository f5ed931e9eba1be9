//! Token generation over any evaluator (one device or a ring), shared by the
//! CLI and the C ABI.

use anyhow::anyhow;
use prima_core::sampler::Sampler;
use prima_core::tokenizer::{StreamDecoder, Tokenizer};
use prima_core::{Session, Want};
use std::time::{Duration, Instant};

use crate::pool::Pool;

/// Something that turns tokens into logits: one device, or a ring.
pub trait Evaluate {
    fn eval(&mut self, tokens: &[u32], want: Want) -> anyhow::Result<Vec<f32>>;
    fn ring(&self) -> Option<&crate::ring::head::Ring<'_, '_>> {
        None
    }
}

/// One device: a session and the pool it runs on.
pub struct Local<'m, 'a> {
    pub session: Session<'m, 'a>,
    pub pool: &'m Pool,
}

impl Evaluate for Local<'_, '_> {
    fn eval(&mut self, tokens: &[u32], want: Want) -> anyhow::Result<Vec<f32>> {
        let (s, pool) = (&mut self.session, self.pool);
        pool.enter(|| s.eval(tokens, want, pool)).map_err(|e| anyhow!("{e}"))
    }
}

/// What a generation produced, and how long its parts took.
#[derive(Debug, Default)]
pub struct Generated {
    pub ids: Vec<u32>,
    pub text: String,
    pub prompt_time: Duration,
    pub generation_time: Duration,
}

/// Evaluates `prompt`, then samples up to `n_predict` tokens, calling
/// `on_piece(id, text)` for each; generation stops early at an
/// end-of-generation token (unless `ignore_eos`) or when `on_piece` returns false.
pub fn generate(
    eval: &mut dyn Evaluate,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    n_predict: usize,
    ignore_eos: bool,
    on_piece: &mut dyn FnMut(u32, &str) -> anyhow::Result<bool>,
) -> anyhow::Result<Generated> {
    prompt.iter().for_each(|&t| sampler.accept(t));
    let mut out = Generated::default();
    let t0 = Instant::now();
    let mut logits = eval.eval(prompt, Want::Last)?;
    out.prompt_time = t0.elapsed();
    let t1 = Instant::now();
    let mut stream = StreamDecoder::default();
    let mut bytes = Vec::new();
    for _ in 0..n_predict {
        let next = sampler.sample(&mut logits);
        if tok.is_eog(next) && !ignore_eos {
            break;
        }
        out.ids.push(next);
        sampler.accept(next);
        bytes.clear();
        tok.token_bytes(next, false, &mut bytes);
        let piece = stream.push(&bytes);
        out.text.push_str(&piece);
        if !on_piece(next, &piece)? || out.ids.len() == n_predict {
            break;
        }
        logits = eval.eval(&[next], Want::Last)?;
    }
    let rest = stream.finish();
    if !rest.is_empty() {
        on_piece(u32::MAX, &rest)?;
    }
    out.text.push_str(&rest);
    out.generation_time = t1.elapsed();
    Ok(out)
}
