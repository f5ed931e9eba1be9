use clap::Args;
use prima_core::sampler::SamplerConfig;
use serde_json::json;
use std::io::Write;

use super::draft_args::{draft_bytes, load_draft, DraftArgs};
use super::loaded::{tokenizer, Loaded};
use super::ring_args::{evaluator, RingArgs};
use super::ModelArgs;
use crate::generate::{generate_with, GenerateRun, Local, SessionShape, Speculate};
use crate::ring::head::Ring;
use crate::ring::recover::Models;

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
    #[command(flatten)]
    ring: RingArgs,
    /// Print each ring device's compute, network and disk time.
    #[arg(short = 'v', long)]
    verbose: bool,
    #[command(flatten)]
    draft: DraftArgs,
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
    let speculation = a.draft.settings()?;
    let config = SamplerConfig {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        penalty_last_n: a.repeat_last_n,
        presence_penalty: a.presence_penalty,
        seed: a.seed,
    };
    // The KV cache holds what this run needs, not the whole -c: on a device
    // short of memory every position of it is memory the layers lack.
    let n_ctx = prompt.len() + a.n_predict;
    // The draft model is opened first: the target's memory plan leaves
    // the draft its weights and cache.
    let draft_file = a.draft.open()?;
    let draft_g = draft_file.as_ref().map(|f| f.gguf()).transpose()?;
    let draft_ctx = n_ctx + a.draft.draft_max;
    let beside = match (&draft_file, &draft_g) {
        (Some(f), Some(dg)) => draft_bytes(f, dg, 1, draft_ctx)?,
        _ => 0,
    };
    let shape = SessionShape { n_ctx, n_batch: prompt.len(), kv: a.kv_type.into(), beside, slots: 1 };
    let hs = a.ring.handshake((&l.file, &g, &a.model.model), &shape, a.model.gpu(), &l.pool)?;
    let models = Models::new();
    let mut session = evaluator(hs, &models, &l.file, &l.pool, &g, shape, a.model.gpu())?;
    let kernels = crate::detect_kernels();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let json = a.json;
    let mut on_piece = |_, piece: &str| {
        if !json {
            out.write_all(piece.as_bytes())?;
            out.flush()?;
        }
        Ok(true)
    };
    let target_vocab = prima_core::model::Config::from_gguf(&g)?.n_vocab;
    let draft_model = draft_g.as_ref().map(|dg| load_draft(dg, target_vocab)).transpose()?;
    let mut draft = None;
    if let (Some(file), Some(dg), Some(dm)) = (&draft_file, &draft_g, &draft_model) {
        // The draft's own plan leaves the target what it planned to take.
        let beside = session.predicted_peak().unwrap_or(0);
        let shape = SessionShape { n_ctx: draft_ctx, beside, ..shape };
        draft = Some(Local::new(dm, file, dg, shape, &l.pool)?);
    }
    let speculate = speculation.map(|s| Speculate {
        draft: draft.as_mut().map(|d| d as &mut dyn crate::generate::Evaluate),
        max: s.max,
        min: s.min,
    });
    let run =
        GenerateRun { tok: &tok, sampler: config, prompt: &prompt, n_predict: a.n_predict, ignore_eos: a.ignore_eos };
    let (got, speculation) = generate_with(session.as_mut(), speculate, run, &mut on_piece)?;
    let (generated, text) = (&got.ids, &got.text);
    let (prompt_s, gen_s) = (got.prompt_time.as_secs_f64(), got.generation_time.as_secs_f64());
    // The last sampled token is not evaluated, so decode steps = generated - 1.
    let decode_steps = generated.len().saturating_sub(1).max(1);
    let ring = session.ring().map(|r| ring_report(r, a.verbose && !a.json));
    let timings = json!({
        "prompt_tokens": prompt.len(),
        "prompt_ms": prompt_s * 1e3,
        "prompt_tokens_per_s": prompt.len() as f64 / prompt_s,
        "generated_tokens": generated.len(),
        "generation_ms": gen_s * 1e3,
        "ms_per_token": gen_s * 1e3 / decode_steps as f64,
        "generation_tokens_per_s": decode_steps as f64 / gen_s,
        "disk_stall_ms": session.disk_stall().map(|d| d.as_secs_f64() * 1e3),
        "disk_read_mb": crate::os::current().io_read_bytes().map(|b| b as f64 / 1e6),
        "peak_rss_mb": crate::os::current().peak_rss().map(|b| b as f64 / 1e6),
        "predicted_peak_mb": session.predicted_peak().map(|b| b as f64 / 1e6),
        "threads": l.pool.threads(),
        "kernels": kernels.name(),
        "speculative": speculation.map(|s| json!({
            "target_passes": s.target_passes,
            "drafted": s.drafted,
            "accepted": s.accepted,
            "acceptance_rate": s.accepted as f64 / s.drafted.max(1) as f64,
            // The first token comes from the prompt's pass, which is not counted.
            "tokens_per_target_pass": generated.len() as f64 / s.target_passes.max(1) as f64,
        })),
    });
    if a.json {
        outln!(
            "{}",
            json!({ "prompt_ids": prompt, "generated_ids": generated, "text": text, "timings": timings, "ring": ring })
        );
    } else {
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
            kernels.name()
        );
    }
    Ok(())
}

/// Each ring device's layers and where its time went, as JSON (and on
/// stderr when `print`): in all, per decode step, and as Halda predicted.
fn ring_report(ring: &Ring<'_, '_>, print: bool) -> serde_json::Value {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let devices: Vec<_> = ring
        .report()
        .into_iter()
        .map(|d| {
            let layers: Vec<String> = d.layers.iter().map(|w| format!("{}..{}", w.start, w.end)).collect();
            if print {
                eprintln!(
                    "{:<40} layers {:<24} compute {:>9.1} ms | network wait {:>9.1} ms | disk {:>8.1} ms",
                    d.name,
                    layers.join(","),
                    ms(d.times.compute),
                    ms(d.times.network),
                    ms(d.times.disk)
                );
                if let (Some(m), Some(p)) = (d.per_decode_step, d.predicted) {
                    eprintln!(
                        "{:<40} per token: compute {:.1} ms (Halda {:.1}) | network wait {:.1} | disk {:.1} (Halda {:.1})",
                        "",
                        ms(m.compute),
                        p.compute_s * 1e3,
                        ms(m.network),
                        ms(m.disk),
                        p.disk_s * 1e3
                    );
                }
            }
            let step = d.per_decode_step.map(|t| {
                json!({"compute_ms": ms(t.compute), "network_ms": ms(t.network), "disk_ms": ms(t.disk)})
            });
            let predicted = d.predicted.map(|t| {
                json!({"compute_ms": t.compute_s * 1e3, "hop_ms": t.network_s * 1e3, "disk_ms": t.disk_s * 1e3})
            });
            json!({"name": d.name, "layers": layers, "resident_layers": d.resident_layers, "layers_held": d.held_layers,
                   "compute_ms": ms(d.times.compute),
                   "network_ms": ms(d.times.network), "disk_ms": ms(d.times.disk),
                   "per_token": step, "predicted_per_token": predicted})
        })
        .collect();
    json!({ "k": ring.plan.k, "predicted_ms_per_token": ring.predicted_tpot().map(|s| s * 1e3), "devices": devices })
}
