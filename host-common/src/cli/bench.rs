//! `prima bench`: llama-bench-style prompt (pp) and generation (tg)
//! throughput, so figures compare directly with llama.cpp's.

use clap::Args;
use prima_core::sampler::Rng;
use prima_core::{Session, Want};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

use crate::mapped::MappedFile;
use crate::pool::Pool;

#[derive(Debug, Args)]
pub(super) struct BenchArgs {
    /// Path to a GGUF model file.
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// Prompt lengths to time as one batch each (0 skips).
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_value = "512")]
    n_prompt: Vec<usize>,
    /// Generation lengths to time one token at a time (0 skips).
    #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_value = "128")]
    n_gen: Vec<usize>,
    /// Thread counts to try (default: one per core).
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Timed repetitions of each test, after one untimed warm-up.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    reps: usize,
    /// Prompt+generation tests as `PP,TG` (llama-bench's `-pg`): a prompt
    /// of PP tokens then TG generated, timed together.
    #[arg(long = "pg", value_name = "PP,TG", value_parser = parse_pg)]
    pg: Vec<(usize, usize)>,
    /// Parallel sequences (llama-batched-bench's `-npl`): each generation
    /// test also runs with this many sequences decoding together, one
    /// batched pass per step, reported as tokens/s over all of them.
    #[arg(long = "npl", value_delimiter = ',')]
    npl: Vec<usize>,
    /// Context depths: each test runs after this many tokens are already
    /// in the KV cache (untimed), as llama-bench's `-d`.
    #[arg(short = 'd', long = "n-depth", value_delimiter = ',', default_value = "0")]
    depth: Vec<usize>,
    /// Output format: a markdown table, a JSON array, JSON lines or CSV.
    #[arg(short = 'o', long = "output", value_enum, default_value = "md")]
    output: Output,
    /// Same as `-o jsonl`.
    #[arg(long)]
    json: bool,
    /// Element type of the KV cache.
    #[arg(long = "kv-type", value_enum, default_value = "f16")]
    kv_type: super::KvTypeArg,
    /// Layers to run on the GPU, the first ones (llama-bench's -ngl; 99: all).
    #[arg(long = "n-gpu-layers", default_value_t = 0)]
    n_gpu_layers: usize,
    /// Which GPU adapter, as `prima devices` numbers them.
    #[arg(long = "gpu-device")]
    gpu_device: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Md,
    Json,
    Jsonl,
    Csv,
}

fn parse_pg(s: &str) -> Result<(usize, usize), String> {
    let (pp, tg) = s.split_once(',').ok_or_else(|| format!("{s:?}: expected PP,TG"))?;
    let n = |v: &str| v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}"));
    Ok((n(pp)?, n(tg)?))
}

#[derive(Debug, Clone, Copy)]
enum Test {
    Prompt(usize),
    Gen(usize),
    PromptGen(usize, usize),
    /// `n` generated tokens in each of `b` sequences decoding together.
    GenParallel(usize, usize),
}

impl Test {
    fn name(self, depth: usize) -> String {
        let base = match self {
            Test::Prompt(n) => format!("pp{n}"),
            Test::Gen(n) => format!("tg{n}"),
            Test::PromptGen(p, g) => format!("pp{p}+tg{g}"),
            Test::GenParallel(n, b) => format!("tg{n} x{b}"),
        };
        if depth > 0 {
            format!("{base} @ d{depth}")
        } else {
            base
        }
    }
    fn tokens(self) -> usize {
        match self {
            Test::Prompt(n) | Test::Gen(n) => n,
            Test::PromptGen(p, g) => p + g,
            Test::GenParallel(n, b) => n * b,
        }
    }

    /// Positions each sequence's cache needs.
    fn positions(self) -> usize {
        match self {
            Test::GenParallel(n, _) => n,
            t => t.tokens(),
        }
    }
}

pub(super) fn bench(a: BenchArgs) -> anyhow::Result<()> {
    if a.reps == 0 {
        anyhow::bail!("--repetitions must be at least 1");
    }
    let threads = if a.threads.is_empty() { vec![Pool::default_threads()] } else { a.threads.clone() };
    if threads.contains(&0) {
        anyhow::bail!("--threads values must be at least 1");
    }
    let output = if a.json { Output::Jsonl } else { a.output };
    let file = MappedFile::open(&a.model)?;
    let g = file.gguf()?;
    if a.n_gpu_layers > 0 && (threads.len() > 1 || !a.npl.is_empty()) {
        anyhow::bail!("--n-gpu-layers takes one thread count and no --npl for now");
    }
    let n_ctx_gpu = a.depth.iter().max().unwrap_or(&0)
        + a.n_prompt.iter().chain(&a.n_gen).sum::<usize>()
        + a.pg.iter().map(|p| p.0 + p.1).max().unwrap_or(0);
    let gpu = crate::gpu::GpuChoice { layers: a.n_gpu_layers, device: a.gpu_device };
    let (model, mut offload) = crate::gpu::split(&g, gpu, (1, n_ctx_gpu.max(1)))?;
    file.load_ahead(crate::stream::model_ranges(&g, &model.parts, |_| true))?;
    let n_params: u64 = g.tensors().iter().map(|t| t.n_elements()).sum();
    let name = g.get_str("general.name").unwrap_or("?");
    let tests: Vec<Test> = a
        .n_prompt
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| Test::Prompt(n))
        .chain(a.n_gen.iter().filter(|&&n| n > 0).map(|&n| Test::Gen(n)))
        .chain(a.pg.iter().filter(|pg| pg.0 + pg.1 > 0).map(|&(p, g)| Test::PromptGen(p, g)))
        .chain(a.npl.iter().flat_map(|&b| a.n_gen.iter().filter(|&&n| n > 0).map(move |&n| Test::GenParallel(n, b))))
        .collect();
    if a.npl.contains(&0) || a.npl.iter().any(|&b| b > MAX_PARALLEL) {
        anyhow::bail!("--npl values must be from 1 to {MAX_PARALLEL}");
    }
    let n_ctx = a.depth.iter().max().unwrap_or(&0) + tests.iter().map(|t| t.positions()).max().unwrap_or(1);
    let size_mib = file.bytes().len() as f64 / (1024.0 * 1024.0);
    let params = n_params as f64 / 1e6;
    match output {
        Output::Md => {
            outln!("| model | size | params | kernels | threads | test | t/s |");
            outln!("| --- | ---: | ---: | --- | ---: | ---: | ---: |");
        }
        Output::Csv => outln!("model,size_bytes,params,kernels,threads,test,n_prompt,n_gen,n_depth,avg_ts,stddev_ts"),
        Output::Json => outln!("["),
        Output::Jsonl => {}
    }
    let mut first = true;
    for &t in &threads {
        let pool = Pool::new(t)?;
        let mut session = Session::with_kv_type(&model, n_ctx, a.kv_type.into());
        if let Some(b) = offload.take() {
            session = session.with_offload(b)?;
        }
        let mut rng = Rng::new(0x5eed);
        let n_vocab = model.config.n_vocab as u64;
        let mut logits = Vec::new();
        for &depth in &a.depth {
            for &test in &tests {
                let mut rates = Vec::with_capacity(a.reps);
                for rep in 0..=a.reps {
                    if let Test::GenParallel(n, b) = test {
                        let rate = parallel_rate(&model, &pool, &mut rng, (n, b, depth), n_ctx, a.kv_type.into())?;
                        if rep > 0 {
                            rates.push(rate);
                        }
                        continue;
                    }
                    session.clear();
                    let mut random =
                        |n: usize| -> Vec<u32> { (0..n).map(|_| (rng.next_u64() % n_vocab) as u32).collect() };
                    if depth > 0 {
                        let context = random(depth);
                        pool.enter(|| session.eval_into(&context, Want::None, &pool, &mut logits))?;
                    }
                    let (prompt, gen) = match test {
                        Test::Prompt(n) => (random(n), Vec::new()),
                        Test::Gen(n) => (Vec::new(), random(n)),
                        Test::PromptGen(p, g) => (random(p), random(g)),
                        Test::GenParallel(..) => unreachable!("timed by parallel_rate"),
                    };
                    let start = Instant::now();
                    if !prompt.is_empty() {
                        pool.enter(|| session.eval_into(&prompt, Want::Last, &pool, &mut logits))?;
                    }
                    for &tok in &gen {
                        pool.enter(|| session.eval_into(&[tok], Want::Last, &pool, &mut logits))?;
                    }
                    // Repetition 0 is the warm-up: it faults the weights in and sizes the buffers.
                    if rep > 0 {
                        rates.push(test.tokens() as f64 / start.elapsed().as_secs_f64());
                    }
                }
                let (mean, sd) = mean_sd(&rates);
                let (n_prompt, n_gen) = match test {
                    Test::Prompt(n) => (n, 0),
                    Test::Gen(n) => (0, n),
                    Test::PromptGen(p, g) => (p, g),
                    Test::GenParallel(n, _) => (0, n),
                };
                let kernels = match session.offload() {
                    Some((gpu, layers)) => format!("{} + {gpu} ({} layers)", model.kernels.name(), layers.len()),
                    None => model.kernels.name().to_owned(),
                };
                let row = json!({
                    "model": a.model.display().to_string(), "size_bytes": file.bytes().len(),
                    "params": n_params, "kernels": kernels, "threads": t,
                    "test": test.name(depth), "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": depth,
                    "n_tokens": test.tokens(), "repetitions": a.reps,
                    "tokens_per_s_mean": mean, "tokens_per_s_sd": sd, "samples_tokens_per_s": rates,
                });
                match output {
                    Output::Md => outln!(
                        "| {name} | {size_mib:.2} MiB | {params:.2} M | {kernels} | {t} | {} | {mean:.2} ± {sd:.2} |",
                        test.name(depth)
                    ),
                    Output::Csv => outln!(
                        "\"{name}\",{},{n_params},{kernels},{t},{},{n_prompt},{n_gen},{depth},{mean:.4},{sd:.4}",
                        file.bytes().len(),
                        test.name(depth)
                    ),
                    Output::Json => outln!("{}  {row}", if first { "" } else { "," }),
                    Output::Jsonl => outln!("{row}"),
                }
                first = false;
            }
        }
    }
    if output == Output::Json {
        outln!("]");
    }
    Ok(())
}

/// Most sequences `--npl` may ask for (each holds a KV cache).
const MAX_PARALLEL: usize = 256;

/// Tokens per second over `b` sequences (each after `depth` random tokens,
/// untimed) decoding `n` tokens each, one batched pass per step.
fn parallel_rate(
    model: &prima_core::Model<'_>,
    pool: &Pool,
    rng: &mut Rng,
    (n, b, depth): (usize, usize, usize),
    n_ctx: usize,
    kv: prima_core::KvType,
) -> anyhow::Result<f64> {
    let mut batch = prima_core::Batch::new(model);
    let mut caches: Vec<_> = (0..b).map(|_| batch.cache(n_ctx, kv)).collect();
    let n_vocab = model.config.n_vocab as u64;
    let mut random = |k: usize| -> Vec<u32> { (0..k).map(|_| (rng.next_u64() % n_vocab) as u32).collect() };
    if depth > 0 {
        for kv in caches.iter_mut() {
            let context = random(depth);
            pool.enter(|| batch.eval(&mut [(kv, &context[..])], pool))?;
        }
    }
    let tokens: Vec<Vec<u32>> = (0..n).map(|_| random(b)).collect();
    let start = Instant::now();
    for step in &tokens {
        let mut pass: Vec<(&mut prima_core::KvCache, &[u32])> =
            caches.iter_mut().zip(step).map(|(kv, t)| (kv, std::slice::from_ref(t))).collect();
        pool.enter(|| batch.eval(&mut pass, pool))?;
    }
    Ok((n * b) as f64 / start.elapsed().as_secs_f64())
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}
