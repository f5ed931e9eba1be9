//! `prima worker`: a ring device's process. It answers link probes and
//! serves ring sessions from a head (`prima run --ring`).

use clap::Args;
use prima_core::profile::DeviceProfile;
use std::path::PathBuf;

use crate::pool::Pool;
use crate::profiler::{self, system, Options, DEFAULT_TYPES};
use crate::ring::weights::default_cache_dir;
use crate::ring::worker::{serve, WorkerConfig};

#[derive(Debug, Args)]
pub(super) struct WorkerArgs {
    /// Address to listen on, such as 0.0.0.0:9000 (port 0 picks a free one).
    #[arg(long = "listen")]
    listen: String,
    /// Compute threads (default: one per core).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Where layers received from heads are kept (default: $PRIMA_CACHE, else the user cache dir).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Device name in plans (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Seconds of silence from a ring neighbour before it counts as dead.
    #[arg(long = "peer-timeout", default_value_t = 10.0)]
    peer_timeout: f64,
    /// Memory this device may use, in MiB (default: what the OS says is
    /// available). Halda plans with it; layers that do not fit stream from disk.
    #[arg(long = "mem", value_name = "MIB")]
    mem: Option<u64>,
    #[command(flatten)]
    key: super::key::KeyArg,
    /// Start from this device's saved profile (`prima profile --json`)
    /// instead of measuring it again; memory figures are read afresh.
    #[arg(long = "profile", value_name = "JSON")]
    profile: Option<PathBuf>,
    /// Do not announce this worker on the LAN (mDNS) for `--ring auto`.
    #[arg(long = "no-announce")]
    no_announce: bool,
    /// Ask the head serving at this URL (`prima serve --ring`, such as
    /// http://10.0.0.2:8080) to take this worker into its ring.
    #[cfg(feature = "server")]
    #[arg(long = "join", value_name = "URL")]
    join: Option<String>,
    /// The serving head's `--api-key`, for `--join`.
    #[cfg(feature = "server")]
    #[arg(long = "join-api-key", value_name = "KEY", requires = "join")]
    join_api_key: Option<String>,
    /// Layers of this worker's windows to run on its GPU, the first ones
    /// (llama.cpp's -ngl; 99: all). With Halda's windows, the head's plan
    /// picks the count, at most this many.
    #[arg(long = "n-gpu-layers", default_value_t = 0)]
    n_gpu_layers: usize,
    /// Which GPU adapter, as `prima devices` numbers them.
    #[arg(long = "gpu-device")]
    gpu_device: Option<usize>,
}

pub(super) fn worker(a: WorkerArgs) -> anyhow::Result<()> {
    let threads = a.threads.unwrap_or_else(Pool::default_threads);
    if threads == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    if !(a.peer_timeout.is_finite() && a.peer_timeout > 0.0) {
        anyhow::bail!("--peer-timeout must be a positive number of seconds");
    }
    let key = a.key.load()?;
    if let Some(mib) = a.mem {
        system::limit_memory_mib(mib)?;
    }
    let cache_dir = a.cache.clone().unwrap_or_else(default_cache_dir);
    std::fs::create_dir_all(&cache_dir)
        .map_err(|e| anyhow::anyhow!("cannot create cache directory {}: {e}", cache_dir.display()))?;
    let profile = match &a.profile {
        Some(path) => saved_profile(path, a.name.as_deref(), threads)?,
        None => measure(&a, threads, &cache_dir)?,
    };
    eprintln!(
        "profiled {}: {} kernels, {} MiB available, disk {:.0} MB/s",
        profile.name,
        profile.kernels,
        profile.ram_available_bytes >> 20,
        profile.disk_seq_read_bytes_per_s / 1e6
    );
    let peer_timeout = std::time::Duration::from_secs_f64(a.peer_timeout);
    match &key {
        Some(k) => eprintln!("ring key {}: links are authenticated and encrypted", k.id()),
        None => eprintln!(
            "warning: no ring key: links are plaintext and anyone who reaches this port can use this worker (pair devices with `prima keygen` and --key)"
        ),
    }
    let announce_as = (!a.no_announce).then(|| profile.name.to_string());
    #[cfg(feature = "server")]
    let on_listening = a.join.clone().map(|url| join_when_listening(url, a.join_api_key.clone(), a.listen.clone()));
    #[cfg(not(feature = "server"))]
    let on_listening = None;
    let gpu = crate::gpu::GpuChoice { layers: a.n_gpu_layers, device: a.gpu_device };
    let cfg = WorkerConfig { threads, cache_dir, profile, peer_timeout, key, announce_as, gpu };
    serve(&a.listen, cfg, on_listening)
}

/// Asks the head serving at `url` to take this worker in, on another
/// thread, retrying while the head is not up (every 2 s, for a minute).
#[cfg(feature = "server")]
fn join_when_listening(url: String, api_key: Option<String>, listen: String) -> crate::ring::worker::OnListening {
    Box::new(move |local| {
        // A worker on all interfaces is where the head sees the request come
        // from; one on a given address says which.
        let host = (!local.ip().is_unspecified()).then(|| local.ip().to_string());
        let body = serde_json::json!({ "port": local.port(), "host": host });
        let endpoint = format!("{}/ring/join", url.trim_end_matches('/'));
        std::thread::spawn(move || {
            for attempt in 0..30 {
                let mut req = ureq::post(&endpoint).timeout(std::time::Duration::from_secs(10));
                if let Some(k) = &api_key {
                    req = req.set("Authorization", &format!("Bearer {k}"));
                }
                match req.set("Content-Type", "application/json").send_string(&body.to_string()) {
                    Ok(_) => return eprintln!("worker: asked {url} to take {listen} into its ring"),
                    Err(ureq::Error::Status(code, r)) => {
                        let why = r.into_string().unwrap_or_default();
                        return eprintln!("error: {url} refused to take this worker in (HTTP {code}): {why}");
                    }
                    Err(e) if attempt == 29 => return eprintln!("error: cannot reach {url} to join its ring: {e}"),
                    Err(_) => std::thread::sleep(std::time::Duration::from_secs(2)),
                }
            }
        });
    })
}

/// This device, measured once, quickly, and sent to every head that asks.
fn measure(a: &WorkerArgs, threads: usize, cache_dir: &std::path::Path) -> anyhow::Result<DeviceProfile> {
    let pool = Pool::new(threads)?;
    let opts = Options {
        name: a.name.clone().unwrap_or_else(system::host_name),
        types: DEFAULT_TYPES.to_vec(),
        kv_dim: 1024,
        dir: cache_dir.to_path_buf(),
        peer: None,
        peer_key: None,
        quick: true,
        // A worker profiles once, at start, for every head it will serve:
        // twice the head's time, so its seven types get 285 ms each.
        quick_cpu_budget: 2 * profiler::QUICK_CPU_BUDGET,
        // A worker with GPU layers tells heads its GPU, so Halda counts it.
        gpu: (a.n_gpu_layers > 0).then_some(crate::gpu::GpuProbe { device: a.gpu_device, mem_bytes: None }),
    };
    profiler::run(&opts, &pool, &mut |_| {})
}

/// A saved profile, with this run's name, threads and memory.
fn saved_profile(path: &PathBuf, name: Option<&str>, threads: usize) -> anyhow::Result<DeviceProfile> {
    let mut p = super::plan::read_profile(path)?;
    if let Some(n) = name {
        p.name.clear();
        for c in n.chars() {
            if p.name.push(c).is_err() {
                break;
            }
        }
    }
    p.threads = threads.min(u16::MAX as usize) as u16;
    let ram = system::memory()?;
    p.ram_total_bytes = ram.total;
    p.ram_available_bytes = ram.available;
    p.swap_free_bytes = ram.swap_free;
    Ok(p)
}
