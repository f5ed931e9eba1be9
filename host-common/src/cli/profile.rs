//! `prima profile`: measure this device for the scheduler.

use anyhow::anyhow;
use clap::Args;
use prima_core::cost::ModelCost;
use prima_core::GgmlType;
use std::path::PathBuf;
use std::time::Instant;

use crate::mapped::MappedFile;
use crate::pool::Pool;
use crate::profiler::{self, system, Options, DEFAULT_TYPES};

#[derive(Debug, Args)]
pub(super) struct ProfileArgs {
    /// Time the tensor types of this model, and test the disk it lives on.
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Measure the link to a `prima worker` at HOST:PORT.
    #[arg(long)]
    peer: Option<String>,
    #[command(flatten)]
    key: super::key::KeyArg,
    /// Directory for the disk test's scratch file (default: the model's, else the current one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Device name in plans (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// About 1.5 s instead of about 5 s, with less precise figures.
    #[arg(long)]
    quick: bool,
    /// Print the profile as JSON (what `prima plan --device` reads).
    #[arg(long)]
    json: bool,
    /// Measure a GPU too (the best adapter, or --gpu-device's).
    #[arg(long)]
    gpu: bool,
    /// Which GPU adapter, as `prima devices` numbers them.
    #[arg(long = "gpu-device", requires = "gpu")]
    gpu_device: Option<usize>,
    /// Memory of a GPU that has its own, in MiB (wgpu cannot read it).
    #[arg(long = "gpu-mem", value_name = "MIB", requires = "gpu")]
    gpu_mem: Option<u64>,
}

pub(super) fn profile(a: ProfileArgs) -> anyhow::Result<()> {
    let threads = a.threads.unwrap_or_else(Pool::default_threads);
    if threads == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    let pool = Pool::new(threads)?;
    let (types, kv_dim) = match &a.model {
        Some(path) => {
            let file = MappedFile::open(path)?;
            let g = file.gguf()?;
            let cost = ModelCost::from_gguf(&g).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let mut types: Vec<GgmlType> = g.tensors().iter().map(|t| t.ty).collect();
            types.sort_by_key(|t| t.id());
            types.dedup();
            (types, (cost.kv_bytes_per_token_layer / 4) as usize)
        }
        None => (DEFAULT_TYPES.to_vec(), 1024),
    };
    let dir = a
        .dir
        .clone()
        .or_else(|| a.model.as_ref().and_then(|m| m.parent().map(|p| p.to_path_buf())))
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let opts = Options {
        name: a.name.clone().unwrap_or_else(system::host_name),
        types,
        kv_dim,
        dir,
        peer: a.peer.clone(),
        peer_key: a.key.load()?,
        quick: a.quick,
        quick_cpu_budget: profiler::QUICK_CPU_BUDGET,
        gpu: a.gpu.then_some(crate::gpu::GpuProbe { device: a.gpu_device, mem_bytes: a.gpu_mem.map(|m| m << 20) }),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let start = Instant::now();
    let p = profiler::run(&opts, &pool, &mut |what| {
        bar.set_message(format!("profiling: {what}"));
        bar.tick();
    })?;
    bar.finish_and_clear();
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    let g = |x: f32| x as f64 / 1e9;
    let os = crate::os::current().name();
    outln!("device:        {} ({os}, {} threads, {} kernels)", p.name, p.threads, p.kernels);
    for t in &p.cpu {
        let name = GgmlType::from_id(t.ggml_type).map_or("?", |t| t.name());
        outln!("cpu {name:<10} {:.1} GFLOP/s matrix-vector", g(t.flops));
    }
    outln!(
        "memory read:   {:.1} GB/s; kv write {:.2} us per token-layer",
        g(p.mem_read_bytes_per_s),
        p.kv_write_s * 1e6
    );
    outln!(
        "disk read:     {:.2} GB/s sequential, {:.3} GB/s random 4 KiB",
        g(p.disk_seq_read_bytes_per_s),
        g(p.disk_random_read_bytes_per_s)
    );
    outln!(
        "ram:           {:.2} GiB available of {:.2} GiB; swap free {:.2} GiB; page cache {:?}",
        p.ram_available_bytes as f64 / (1u64 << 30) as f64,
        p.ram_total_bytes as f64 / (1u64 << 30) as f64,
        p.swap_free_bytes as f64 / (1u64 << 30) as f64,
        p.page_cache
    );
    match &p.gpu {
        Some(gpu) => {
            outln!(
                "gpu:           {} ({}): {:.1} GB/s weights; {:.2} GiB for layers of {:.2} GiB{}",
                gpu.name,
                gpu.backend,
                g(gpu.mem_read_bytes_per_s),
                gpu.vram_free_bytes as f64 / (1u64 << 30) as f64,
                gpu.vram_total_bytes as f64 / (1u64 << 30) as f64,
                if gpu.unified { " (shares RAM)" } else { "" }
            );
            for t in &gpu.types {
                let name = GgmlType::from_id(t.ggml_type).map_or("?", |t| t.name());
                outln!("gpu {name:<10} {:.1} GFLOP/s matrix-vector", g(t.flops));
            }
        }
        None if a.gpu => outln!("gpu:           none usable (see above)"),
        None => outln!("gpu:           not measured (use --gpu)"),
    }
    match p.link {
        Some(l) => outln!("link:          rtt {:.3} ms, {:.1} MB/s", l.rtt_s * 1e3, l.bytes_per_s / 1e6),
        None => outln!("link:          not measured (use --peer HOST:PORT)"),
    }
    outln!("took {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}
