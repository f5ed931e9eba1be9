use anyhow::anyhow;
use clap::Args;
use prima_core::sampler::{Sampler, SamplerConfig};
use prima_core::tokenizer::StreamDecoder;
use prima_core::{Session, Want};
use serde_json::json;
use std::io::Write;
use std::time::Instant;

use super::loaded::{model, tokenizer, Loaded};
use super::ModelArgs;

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text (special tokens such as <|im_start|> are parsed).
    #[arg(short = 'p', long = "prompt")]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 64)]
    n_predict: usize,
    /// Context size in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 2048)]
    ctx: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    temp: f32,
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.95)]
    top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    repeat_last_n: usize,
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(short = 's', long = "seed", default_value_t = 0x5eed)]
    seed: u64,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Element type of the KV cache.
    #[arg(long = "kv-type", value_enum, default_value = "f16")]
    kv_type: super::KvTypeArg,
}

pub(super) fn run(a: RunArgs) -> anyhow::Result<()> {
    if a.ctx == 0 {
        anyhow::bail!("--ctx-size must be at least 1");
    }
    if !(a.temp.is_finite() && a.top_p.is_finite() && a.min_p.is_finite() && a.repeat_penalty > 0.0) {
        anyhow::bail!("sampling parameters must be finite and --repeat-penalty positive");
    }
    let l = Loaded::open(&a.model)?;
    let g = l.gguf()?;
    let model = model(&g)?;
    let tok = tokenizer(&g)?;
    let prompt = tok.encode(&a.prompt, true, true);
    if prompt.is_empty() {
        anyhow::bail!("the prompt is empty after tokenization");
    }
    if prompt.len() + a.n_predict > a.ctx {
        anyhow::bail!(
            "context overflow: {} prompt tokens + {} to generate exceed the context of {} (raise -c)",
            prompt.len(),
            a.n_predict,
            a.ctx
        );
    }
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        penalty_last_n: a.repeat_last_n,
        presence_penalty: a.presence_penalty,
        seed: a.seed,
    });
    prompt.iter().for_each(|&t| sampler.accept(t));
    let mut session = Session::with_kv_type(&model, a.ctx, a.kv_type.into());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut stream = StreamDecoder::default();

    let t0 = Instant::now();
    let mut logits = l.pool.enter(|| session.eval(&prompt, Want::Last, &l.pool)).map_err(|e| anyhow!("{e}"))?;
    let prompt_s = t0.elapsed().as_secs_f64();
    let mut generated = Vec::new();
    let mut text = String::new();
    let t1 = Instant::now();
    let mut bytes = Vec::new();
    for _ in 0..a.n_predict {
        let next = sampler.sample(&mut logits);
        if tok.is_eog(next) && !a.ignore_eos {
            break;
        }
        generated.push(next);
        sampler.accept(next);
        bytes.clear();
        tok.token_bytes(next, false, &mut bytes);
        let piece = stream.push(&bytes);
        if !a.json {
            out.write_all(piece.as_bytes())?;
            out.flush()?;
        }
        text.push_str(&piece);
        if generated.len() == a.n_predict {
            break;
        }
        logits = l.pool.enter(|| session.eval(&[next], Want::Last, &l.pool)).map_err(|e| anyhow!("{e}"))?;
    }
    let rest = stream.finish();
    text.push_str(&rest);
    let gen_s = t1.elapsed().as_secs_f64();
    // The last sampled token is not evaluated, so decode steps = generated - 1.
    let decode_steps = generated.len().saturating_sub(1).max(1);
    let timings = json!({
        "prompt_tokens": prompt.len(),
        "prompt_ms": prompt_s * 1e3,
        "prompt_tokens_per_s": prompt.len() as f64 / prompt_s,
        "generated_tokens": generated.len(),
        "generation_ms": gen_s * 1e3,
        "ms_per_token": gen_s * 1e3 / decode_steps as f64,
        "generation_tokens_per_s": decode_steps as f64 / gen_s,
        "threads": l.pool.threads(),
        "kernels": model.kernels.name(),
    });
    if a.json {
        println!("{}", json!({ "prompt_ids": prompt, "generated_ids": generated, "text": text, "timings": timings }));
    } else {
        out.write_all(rest.as_bytes())?;
        writeln!(out)?;
        eprintln!(
            "prompt: {} tokens in {:.1} ms ({:.1} t/s) | generation: {} tokens, {:.2} ms/token ({:.1} t/s) | {} threads, {} kernels",
            prompt.len(),
            prompt_s * 1e3,
            prompt.len() as f64 / prompt_s,
            generated.len(),
            gen_s * 1e3 / decode_steps as f64,
            decode_steps as f64 / gen_s,
            l.pool.threads(),
            model.kernels.name()
        );
    }
    Ok(())
}
