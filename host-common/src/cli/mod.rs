//! The `prima` command line (llama.cpp-style flags).

/// `println!` that returns an error instead of panicking when stdout is
/// closed (`prima tokenize … | head`); `main` then exits quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

mod bench;
pub(crate) mod draft_args;
mod eval;
mod inspect;
mod key;
mod loaded;
mod plan;
mod profile;
mod proxy;
mod quantize;
pub(crate) mod ring_args;
mod run;
mod synth;
mod worker;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "prima", version, about = "Run GGUF language models on everyday devices")]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a continuation of a prompt, streamed to stdout.
    Run(run::RunArgs),
    /// Print the token ids and pieces of a text.
    Tokenize(inspect::TokenizeArgs),
    /// Teacher-forced logits at every position of a token sequence.
    Logits(eval::LogitsArgs),
    /// Perplexity of a text file, computed as llama-perplexity does.
    Perplexity(eval::PerplexityArgs),
    /// Describe a model file: architecture, sizes, tensor types.
    Info(inspect::InfoArgs),
    /// Prompt and generation throughput, as llama-bench reports it.
    Bench(bench::BenchArgs),
    /// Halda's schedule for a model on profiled devices: windows, rounds, dropped devices.
    Plan(plan::PlanArgs),
    /// Measure this device (CPU per tensor type, memory, disk, RAM, link) for the scheduler.
    Profile(profile::ProfileArgs),
    /// Run as a ring device for `prima run --ring`; also answers `prima profile --peer`.
    Worker(worker::WorkerArgs),
    /// Make a ring key, which authenticates and encrypts the links between devices.
    Keygen(key::KeygenArgs),
    /// Convert a model's weights to another type (llama-quantize's job): Q4_K_M, Q8_0, ...
    Quantize(quantize::QuantizeArgs),
    /// Write a Llama-shaped model of any size with random weights (for benchmarks).
    Synth(synth::SynthArgs),
    /// Forward TCP with added latency, to emulate a slow link in benchmarks.
    DelayProxy(proxy::ProxyArgs),
    /// List the GPU adapters `--gpu-device` can pick (llama.cpp's --list-devices).
    Devices,
    /// An OpenAI-compatible HTTP server (chat and text completions, streaming).
    #[cfg(feature = "server")]
    Serve(crate::server::ServeArgs),
}

/// Flags shared by every command that loads a model.
#[derive(Debug, Args)]
struct ModelArgs {
    /// Path to a GGUF model file.
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// Worker threads (default: one per core).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Layers to run on the GPU, the first ones (llama.cpp's -ngl; 99: all);
    /// on a ring, the first of the head's windows, and with Halda's windows
    /// at most this many: Halda picks the count.
    #[arg(long = "n-gpu-layers", default_value_t = 0)]
    n_gpu_layers: usize,
    /// Which GPU adapter, as `prima devices` numbers them (default: the best).
    #[arg(long = "gpu-device")]
    gpu_device: Option<usize>,
}

impl ModelArgs {
    fn gpu(&self) -> crate::gpu::GpuChoice {
        crate::gpu::GpuChoice { layers: self.n_gpu_layers, device: self.gpu_device }
    }

    /// Refuses -ngl where `command` cannot use a GPU yet.
    fn cpu_only(&self, command: &str) -> anyhow::Result<()> {
        if self.n_gpu_layers > 0 {
            anyhow::bail!("--n-gpu-layers is not supported by `prima {command}` yet (it is by run, logits, bench, serve and worker)");
        }
        Ok(())
    }
}

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum KvTypeArg {
    /// Half the memory; matches the reference engine.
    F16,
    /// Exact keys and values at twice the memory.
    F32,
}

impl From<KvTypeArg> for prima_core::KvType {
    fn from(a: KvTypeArg) -> Self {
        match a {
            KvTypeArg::F16 => prima_core::KvType::F16,
            KvTypeArg::F32 => prima_core::KvType::F32,
        }
    }
}

fn devices() -> anyhow::Result<()> {
    for line in crate::gpu::adapter_lines() {
        outln!("{line}");
    }
    Ok(())
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    // llama.cpp spells some flags with two letters after one dash, which
    // no short flag can be: `-md` (draft model), `-pg` (llama-bench) and
    // `-ngl` (GPU layers).
    let args: Vec<std::ffi::OsString> = std::env::args_os()
        .map(|a| match a.to_str() {
            Some("-md") => "--model-draft".into(),
            Some("-pg") => "--pg".into(),
            Some("-ngl") => "--n-gpu-layers".into(),
            _ => a,
        })
        .collect();
    // llama.cpp lists adapters with `--list-devices` or `--device list`, on any command.
    let listing = args.windows(2).any(|w| w[0] == "--device" && w[1] == "list");
    if listing || args.iter().any(|a| a == "--list-devices") {
        return i32::from(devices().is_err());
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let result = match cli.cmd {
        Command::Run(a) => run::run(a),
        Command::Tokenize(a) => inspect::tokenize(a),
        Command::Logits(a) => eval::logits(a),
        Command::Perplexity(a) => eval::perplexity(a),
        Command::Info(a) => inspect::info(a),
        Command::Bench(a) => bench::bench(a),
        Command::Plan(a) => plan::plan(a),
        Command::Profile(a) => profile::profile(a),
        Command::Worker(a) => worker::worker(a),
        Command::Keygen(a) => key::keygen(a),
        Command::Quantize(a) => quantize::quantize(a),
        Command::Synth(a) => synth::synth(a),
        Command::DelayProxy(a) => proxy::proxy(a),
        Command::Devices => devices(),
        #[cfg(feature = "server")]
        Command::Serve(a) => crate::server::serve(a),
    };
    match result {
        Ok(()) => 0,
        // The reader of our output left (`| head`): nothing more to say.
        Err(e) if broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
