//! `prima bench`: llama-bench-style prompt (pp) and generation (tg)
//! throughput, so figures compare directly with llama.cpp's.

use clap::Args;
use prima_core::sampler::Rng;
use prima_core::{Session, Want};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

use super::loaded::model;
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
    /// Print one JSON object per test instead of a table.
    #[arg(long)]
    json: bool,
    /// Element type of the KV cache.
    #[arg(long = "kv-type", value_enum, default_value = "f16")]
    kv_type: super::KvTypeArg,
}

#[derive(Debug, Clone, Copy)]
enum Test {
    Prompt(usize),
    Gen(usize),
}

impl Test {
    fn name(self) -> String {
        match self {
            Test::Prompt(n) => format!("pp{n}"),
            Test::Gen(n) => format!("tg{n}"),
        }
    }
    fn tokens(self) -> usize {
        match self {
            Test::Prompt(n) | Test::Gen(n) => n,
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
    let file = MappedFile::open(&a.model)?;
    let g = file.gguf()?;
    let model = model(&g)?;
    file.load_ahead(crate::stream::model_ranges(&g, &model.parts, |_| true))?;
    let n_params: u64 = g.tensors().iter().map(|t| t.n_elements()).sum();
    let name = g.get_str("general.name").unwrap_or("?");
    let tests: Vec<Test> = a
        .n_prompt
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| Test::Prompt(n))
        .chain(a.n_gen.iter().filter(|&&n| n > 0).map(|&n| Test::Gen(n)))
        .collect();
    let n_ctx = tests.iter().map(|t| t.tokens()).max().unwrap_or(1);
    let size_mib = file.bytes().len() as f64 / (1024.0 * 1024.0);
    let params = n_params as f64 / 1e6;
    if !a.json {
        outln!("| model | size | params | kernels | threads | test | t/s |");
        outln!("| --- | ---: | ---: | --- | ---: | ---: | ---: |");
    }
    for &t in &threads {
        let pool = Pool::new(t)?;
        let mut session = Session::with_kv_type(&model, n_ctx, a.kv_type.into());
        let mut rng = Rng::new(0x5eed);
        let n_vocab = model.config.n_vocab as u64;
        for &test in &tests {
            let mut rates = Vec::with_capacity(a.reps);
            for rep in 0..=a.reps {
                session.clear();
                let tokens: Vec<u32> = (0..test.tokens()).map(|_| (rng.next_u64() % n_vocab) as u32).collect();
                let start = Instant::now();
                match test {
                    Test::Prompt(_) => {
                        pool.enter(|| session.eval(&tokens, Want::Last, &pool)).map_err(anyhow::Error::from)?;
                    }
                    Test::Gen(_) => {
                        for &tok in &tokens {
                            pool.enter(|| session.eval(&[tok], Want::Last, &pool)).map_err(anyhow::Error::from)?;
                        }
                    }
                }
                // Repetition 0 is the warm-up: it faults the weights in and sizes the buffers.
                if rep > 0 {
                    rates.push(test.tokens() as f64 / start.elapsed().as_secs_f64());
                }
            }
            let (mean, sd) = mean_sd(&rates);
            if a.json {
                outln!(
                    "{}",
                    json!({
                        "model": a.model.display().to_string(), "size_bytes": file.bytes().len(),
                        "params": n_params, "kernels": model.kernels.name(), "threads": t,
                        "test": test.name(), "n_tokens": test.tokens(), "repetitions": a.reps,
                        "tokens_per_s_mean": mean, "tokens_per_s_sd": sd, "samples_tokens_per_s": rates,
                    })
                );
            } else {
                outln!(
                    "| {} | {size_mib:.2} MiB | {params:.2} M | {} | {t} | {} | {mean:.2} ± {sd:.2} |",
                    name,
                    model.kernels.name(),
                    test.name()
                );
            }
        }
    }
    Ok(())
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}
