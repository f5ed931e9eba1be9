//! Token generation over any evaluator (one device or a ring), shared by the
//! CLI and the C ABI.

use prima_core::cost::{ModelCost, RunShape};
use prima_core::engine::{DraftSource, Engine, Output, Request, Speculation, SpeculationStats};
use prima_core::sampler::SamplerConfig;
use prima_core::tokenizer::Tokenizer;
use prima_core::{Gguf, KvType, Model, Session, Want};
use std::time::{Duration, Instant};

pub use crate::forward::Evaluate;
use crate::forward::{check_steps, run_inputs, Drafts, LocalSlots, Step};
use crate::mapped::MappedFile;
use crate::pool::Pool;
use crate::stream::{self, run_shape, LayerStream};

/// What a local session holds: `n_ctx` positions of `kv` elements, and
/// forward passes of up to `n_batch` tokens.
#[derive(Debug, Clone, Copy)]
pub struct SessionShape {
    pub n_ctx: usize,
    pub n_batch: usize,
    pub kv: KvType,
    /// Bytes this process holds besides this session (a draft model, or
    /// the target beside a draft): its memory plan leaves them alone.
    pub beside: u64,
    /// Sequences held at once, each with a cache of `n_ctx` positions.
    pub slots: usize,
}

/// One device: a session, the pool it runs on, and the stream of the
/// layers that do not fit its memory (if any).
pub struct Local<'m, 'a> {
    pub session: Session<'m, 'a>,
    pub pool: &'m Pool,
    pub stream: Option<LayerStream<'m>>,
    /// The peak memory this session should take (its memory model's sum),
    /// for comparison with what it took.
    pub predicted_peak_bytes: u64,
}

impl<'m, 'a> Local<'m, 'a> {
    /// A session of `shape`. When the model's layers and
    /// their KV cache do not fit the memory available (with the run's
    /// buffers and the output head), the layers that do not fit stream from
    /// `file`, read ahead while earlier ones run, and a line on stderr says so.
    pub fn new(
        model: &'m Model<'a>,
        file: &'m MappedFile,
        g: &Gguf<'_>,
        shape: SessionShape,
        pool: &'m Pool,
    ) -> anyhow::Result<Self> {
        let session = Session::with_kv_type(model, shape.n_ctx, shape.kv);
        let (cost, run, stream) = shape.plan(model, file, g, pool)?;
        let whole = cost.single_device_bytes(&run);
        let Some(stream) = stream else {
            return Ok(Self { session, pool, stream: None, predicted_peak_bytes: whole });
        };
        // Streamed layers are in memory at most STAGING_LAYERS at a time.
        let (streamed, staged) = stream.streamed_bytes();
        Ok(Self { session, pool, stream: Some(stream), predicted_peak_bytes: whole - streamed + staged })
    }
}

impl Local<'_, '_> {
    /// Runs `backend`'s layers (a GPU's) before the model's own.
    pub fn with_offload(mut self, backend: Box<dyn prima_core::LayerBackend>) -> anyhow::Result<Self> {
        self.session = self.session.with_offload(backend)?;
        Ok(self)
    }
}

impl SessionShape {
    /// What a run of this shape asks of a device of `threads` threads
    /// besides the weights: every slot's cache, and passes of `n_batch`.
    pub fn run_shape(&self, threads: usize) -> RunShape {
        run_shape(self.n_ctx * self.slots.max(1), self.n_batch, self.kv, threads)
    }

    /// The model's costs, this shape's run, and the stream of the layers
    /// that do not fit this device's memory beside the run and `beside`
    /// (`None` when all fit; a line on stderr says what streams).
    pub fn plan<'m>(
        &self,
        model: &Model<'_>,
        file: &'m MappedFile,
        g: &Gguf<'_>,
        pool: &Pool,
    ) -> anyhow::Result<(ModelCost, RunShape, Option<LayerStream<'m>>)> {
        let cost = ModelCost::from_gguf(g).map_err(anyhow::Error::from)?;
        let run = self.run_shape(pool.threads());
        let stream = stream::plan(file, g, &model.parts, &cost, &run, "this device", self.beside)?;
        Ok((cost, run, stream))
    }
}

/// One device holding `shape.slots` sequences: a session for one, batched
/// slots for more.
pub fn local<'m, 'a>(
    model: &'m Model<'a>,
    file: &'m MappedFile,
    g: &Gguf<'_>,
    shape: SessionShape,
    pool: &'m Pool,
) -> anyhow::Result<Box<dyn Evaluate + 'm>> {
    local_with(model, file, g, shape, pool, None)
}

/// [`local`], with `offload` (a GPU's layers, a cache per slot) running
/// before the model's own layers.
pub fn local_with<'m, 'a>(
    model: &'m Model<'a>,
    file: &'m MappedFile,
    g: &Gguf<'_>,
    shape: SessionShape,
    pool: &'m Pool,
    offload: Option<Box<dyn prima_core::LayerBackend>>,
) -> anyhow::Result<Box<dyn Evaluate + 'm>> {
    Ok(match (shape.slots, offload) {
        (0 | 1, None) => Box::new(Local::new(model, file, g, shape, pool)?),
        (0 | 1, Some(b)) => Box::new(Local::new(model, file, g, shape, pool)?.with_offload(b)?),
        (_, None) => Box::new(LocalSlots::planned(model, file, g, shape, pool)?),
        (_, Some(b)) => Box::new(LocalSlots::planned(model, file, g, shape, pool)?.with_offload(b)?),
    })
}

impl Local<'_, '_> {
    fn eval_want(&mut self, tokens: &[u32], want: Want) -> anyhow::Result<Vec<f32>> {
        let (s, pool) = (&mut self.session, self.pool);
        match &mut self.stream {
            None => pool.enter(|| s.eval(tokens, want, pool)).map_err(anyhow::Error::from),
            Some(stream) => {
                let logits = pool.enter(|| s.eval_streamed(tokens, want, pool, stream)).map_err(anyhow::Error::from)?;
                stream.take_error()?;
                Ok(logits)
            }
        }
    }
}

impl Evaluate for Local<'_, '_> {
    fn clear(&mut self, _slot: usize) {
        self.session.clear();
    }

    fn truncate(&mut self, _slot: usize, pos: usize) {
        self.session.truncate(pos);
    }

    fn step(&mut self, steps: &[Step<'_>]) -> anyhow::Result<Vec<f32>> {
        check_steps(steps, 1)?;
        let [Step { tokens, rows, .. }] = steps else { anyhow::bail!("one sequence holds no {} steps", steps.len()) };
        let want = match rows {
            0 => Want::None,
            1 => Want::Last,
            _ => Want::All,
        };
        let mut logits = self.eval_want(tokens, want)?;
        if *rows > 1 {
            let n_vocab = logits.len() / tokens.len().max(1);
            logits.drain(..(tokens.len() - rows) * n_vocab);
        }
        Ok(logits)
    }

    fn eval(&mut self, tokens: &[u32], want: Want) -> anyhow::Result<Vec<f32>> {
        self.eval_want(tokens, want)
    }

    fn disk_stall(&self) -> Option<Duration> {
        self.stream.as_ref().map(|s| s.disk)
    }

    fn predicted_peak(&self) -> Option<u64> {
        Some(self.predicted_peak_bytes)
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

/// Speculative decoding for [`generate_with`]: drafts from a small model
/// on this device with the target's vocabulary, or from prompt lookup
/// when there is no draft model.
pub struct Speculate<'d, 'm> {
    pub draft: Option<&'d mut (dyn Evaluate + 'm)>,
    /// At most this many draft tokens per target pass.
    pub max: usize,
    /// Fewer drafts than this are not checked.
    pub min: usize,
}

/// Evaluates `prompt`, then samples up to `n_predict` tokens, calling
/// `on_piece(id, text)` for each; generation stops early at an
/// end-of-generation token (unless `ignore_eos`) or when `on_piece` returns
/// false. Core's [`Engine`] holds the sequence, with one slot, and samples
/// as `sampler` says.
pub fn generate(
    eval: &mut dyn Evaluate,
    tok: &Tokenizer,
    sampler: SamplerConfig,
    prompt: &[u32],
    n_predict: usize,
    ignore_eos: bool,
    on_piece: &mut dyn FnMut(u32, &str) -> anyhow::Result<bool>,
) -> anyhow::Result<Generated> {
    let run = GenerateRun { tok, sampler, prompt, n_predict, ignore_eos };
    generate_with(eval, None, run, on_piece).map(|(g, _)| g)
}

/// What [`generate_with`] generates.
#[derive(Clone, Copy)]
pub struct GenerateRun<'r> {
    pub tok: &'r Tokenizer,
    pub sampler: SamplerConfig,
    pub prompt: &'r [u32],
    pub n_predict: usize,
    pub ignore_eos: bool,
}

/// [`generate`], speculating when `speculate` says so: the target then
/// checks each draft in one pass (one trip round a ring), and the output
/// is what plain decoding gives at temperature 0 and follows the same
/// distribution otherwise. Returns what speculation did, when it ran.
pub fn generate_with(
    eval: &mut dyn Evaluate,
    speculate: Option<Speculate<'_, '_>>,
    run: GenerateRun<'_>,
    on_piece: &mut dyn FnMut(u32, &str) -> anyhow::Result<bool>,
) -> anyhow::Result<(Generated, Option<SpeculationStats>)> {
    let GenerateRun { tok, sampler, prompt, n_predict, ignore_eos } = run;
    let mut out = Generated::default();
    let t0 = Instant::now();
    if n_predict == 0 {
        eval.eval(prompt, Want::Last)?;
        out.prompt_time = t0.elapsed();
        return Ok((out, None));
    }
    // The whole prompt in one pass, as one device or a ring expects.
    let mut engine = Engine::new(1, prompt.len() + n_predict, prompt.len().max(1));
    let mut drafts = None;
    if let Some(s) = speculate {
        let source = if s.draft.is_some() { DraftSource::Model } else { DraftSource::Lookup };
        engine = engine.with_speculation(Speculation { source, max: s.max, min: s.min });
        drafts = s.draft.map(|d| Drafts::new(d as &mut dyn Evaluate));
    }
    let request =
        Request { prompt: prompt.to_vec(), sampler, max_tokens: Some(n_predict), stop: Vec::new(), ignore_eos };
    engine.admit(0, request);
    let (mut go_on, mut t1) = (true, None);
    while go_on && engine.busy() > 0 {
        if let Some(d) = drafts.as_mut() {
            d.propose(&mut engine)?;
        }
        let inputs = engine.inputs();
        if inputs.is_empty() {
            break;
        }
        let logits = run_inputs(eval, &inputs)?;
        if t1.is_none() {
            out.prompt_time = t0.elapsed();
            t1 = Some(Instant::now());
        }
        // Each token's text goes out with it (empty while its UTF-8 is
        // incomplete); text after the last token, with id u32::MAX.
        let mut shown: Vec<(u32, String)> = Vec::new();
        engine.absorb(tok, &inputs, &logits, &mut |slot, o| match o {
            Output::Token(id) => {
                out.ids.push(id);
                shown.push((id, String::new()));
            }
            Output::Text(text) => match shown.last_mut() {
                Some((_, piece)) if piece.is_empty() => *piece = text,
                _ => shown.push((u32::MAX, text)),
            },
            Output::Rewind(pos) => {
                eval.truncate(slot, pos);
                if let Some(d) = drafts.as_mut() {
                    d.rewind(slot, pos);
                }
            }
            Output::Done { .. } => {}
        });
        for (id, piece) in shown {
            out.text.push_str(&piece);
            go_on &= on_piece(id, &piece)?;
        }
    }
    out.generation_time = t1.map_or(Duration::ZERO, |t| t.elapsed());
    Ok((out, engine.speculation().map(|_| engine.speculation_stats())))
}
