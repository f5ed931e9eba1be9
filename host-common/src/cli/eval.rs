use anyhow::Context;
use clap::Args;
use prima_core::{KvType, Session, Want};
use serde_json::json;
use std::path::PathBuf;

use super::loaded::{model, tokenizer, Loaded};
use super::ring_args::{evaluator, RingArgs};
use super::ModelArgs;
use crate::generate::SessionShape;
use crate::ring::recover::Models;

#[derive(Debug, Args)]
pub(super) struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated token ids, fed verbatim (no BOS is added).
    #[arg(long, value_delimiter = ',', required = true)]
    ids: Vec<u32>,
    /// How many of the largest logits to print per position.
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ring: RingArgs,
}

/// Top-k `(id, logit)` descending (ties to the lower id) and the log-sum-exp.
pub(crate) fn summarize(row: &[f32], k: usize) -> (Vec<(u32, f32)>, f64) {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(row.len());
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_by(cmp);
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    (idx.into_iter().map(|i| (i, row[i as usize])).collect(), lse)
}

pub(super) fn logits(a: LogitsArgs) -> anyhow::Result<()> {
    let l = Loaded::open(&a.model)?;
    let g = l.gguf()?;
    let n_ctx = a.ids.len().max(1);
    let shape = SessionShape { n_ctx, n_batch: n_ctx, kv: KvType::F16, beside: 0, slots: 1 };
    let hs = a.ring.handshake((&l.file, &g, &a.model.model), &shape, a.model.gpu(), &l.pool)?;
    let models = Models::new();
    let n_vocab = prima_core::model::Config::from_gguf(&g).map_err(anyhow::Error::from)?.n_vocab;
    let mut session = evaluator(hs, &models, &l.file, &l.pool, &g, shape, a.model.gpu())?;
    let all = session.eval(&a.ids, Want::All)?;
    let mut positions = Vec::new();
    for (pos, row) in all.chunks_exact(n_vocab).enumerate() {
        let (top, lse) = summarize(row, a.top);
        if a.json {
            positions.push(json!({ "pos": pos, "top": top, "logsumexp": lse }));
        } else {
            let shown: Vec<String> = top.iter().map(|(i, v)| format!("{i}:{v:.4}")).collect();
            outln!("{pos:>4} lse {lse:.4} | {}", shown.join(" "));
        }
    }
    if a.json {
        outln!("{}", json!({ "ids": a.ids, "positions": positions }));
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Chunk size in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx: usize,
    #[arg(long)]
    json: bool,
}

/// Perplexity as llama-perplexity computes it: non-overlapping chunks of
/// `ctx` tokens, each from an empty cache, scoring only the second half.
pub(super) fn perplexity(a: PerplexityArgs) -> anyhow::Result<()> {
    a.model.cpu_only("perplexity")?;
    if a.ctx < 4 {
        anyhow::bail!("--ctx-size must be at least 4 for perplexity");
    }
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let l = Loaded::open(&a.model)?;
    let g = l.gguf()?;
    let model = model(&g)?;
    // Every chunk reads the whole model: read it in ahead, in large reads.
    l.file.load_ahead(crate::stream::model_ranges(&g, &model.parts, |_| true))?;
    let tok = tokenizer(&g)?;
    let tokens = tok.encode(&text, true, false);
    let n_chunks = tokens.len() / a.ctx;
    if n_chunks == 0 {
        anyhow::bail!("{} has {} tokens, fewer than one chunk of {}", a.file.display(), tokens.len(), a.ctx);
    }
    let n_vocab = model.config.n_vocab;
    let first = a.ctx / 2;
    let mut session = Session::new(&model, a.ctx);
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut running = Vec::new();
    for chunk in 0..n_chunks {
        let mut toks = tokens[chunk * a.ctx..(chunk + 1) * a.ctx].to_vec();
        if tok.add_bos {
            if let Some(bos) = tok.bos {
                toks[0] = bos;
            }
        }
        session.clear();
        l.pool.enter(|| session.eval(&toks[..first], Want::None, &l.pool)).map_err(anyhow::Error::from)?;
        let logits = l.pool.enter(|| session.eval(&toks[first..], Want::All, &l.pool)).map_err(anyhow::Error::from)?;
        for (j, row) in logits.chunks_exact(n_vocab).enumerate().take(a.ctx - first - 1) {
            let target = toks[first + j + 1] as usize;
            let (_, lse) = summarize(row, 0);
            let v = lse - row[target] as f64;
            nll += v;
            nll2 += v * v;
            count += 1;
        }
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        if !a.json {
            eprint!("[{}]{:.4} ", chunk + 1, ppl);
        }
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let stderr = if var > 0.0 && count > 1 { (var / (count - 1) as f64).sqrt() * ppl } else { 0.0 };
    if a.json {
        outln!(
            "{}",
            json!({ "ppl": ppl, "stderr": stderr, "n_chunks": n_chunks, "n_ctx": a.ctx, "scored_tokens": count,
                    "n_tokens": tokens.len(), "running_ppl": running })
        );
    } else {
        eprintln!();
        outln!("Final estimate: PPL = {ppl:.4} +/- {stderr:.5}");
    }
    Ok(())
}
