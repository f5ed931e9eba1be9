//! `prima profile`'s measurements, assembled into core's [`DeviceProfile`].

pub mod calibrate;
pub mod compute;
pub mod disk;
pub mod probe;
pub mod system;

use anyhow::anyhow;
use prima_core::profile::{DeviceProfile, LinkProfile, TypeThroughput, MAX_TYPES, PROFILE_VERSION};
use prima_core::GgmlType;
use std::path::PathBuf;
use std::time::Duration;

use crate::pool::Pool;

/// What to measure, and how long to spend.
#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    /// Tensor types to time (those of the model, or a common set).
    pub types: Vec<GgmlType>,
    /// KV width for the cache-write cost.
    pub kv_dim: usize,
    /// Directory for the disk scratch file (the model's, so the same disk).
    pub dir: PathBuf,
    pub peer: Option<String>,
    /// The ring key for the link to `peer`.
    pub peer_key: Option<crate::link::RingKey>,
    /// About 1.5 s (more with over 6 tensor types) instead of about 5 s.
    pub quick: bool,
    /// With `quick`: the CPU probes' time in all (at least 150 ms a type).
    pub quick_cpu_budget: Duration,
    /// Measure a GPU too.
    pub gpu: Option<crate::gpu::GpuProbe>,
}

/// The CPU probes' time in all with `--quick`.
pub const QUICK_CPU_BUDGET: Duration = Duration::from_secs(1);

/// Types timed when no model is given: the common GGUF mixes.
pub const DEFAULT_TYPES: [GgmlType; 7] =
    [GgmlType::F32, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K];

/// `s` cut to the `N` bytes a profile's names hold, at a character boundary.
pub fn bounded<const N: usize>(s: &str) -> heapless::String<N> {
    let cut = (0..=s.len().min(N)).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    heapless::String::try_from(&s[..cut]).unwrap_or_default()
}

/// Runs every measurement, calling `step(what)` before each.
pub fn run(opts: &Options, pool: &Pool, step: &mut dyn FnMut(&str)) -> anyhow::Result<DeviceProfile> {
    let kernels = crate::detect_kernels();
    let (per_type, mem_s, disk_s, disk_bytes, mem_bytes) = if opts.quick {
        // At least 150 ms a type: the VM this was tuned on slowed by 30-40%
        // for 100-300 ms at a time, so a model of few types gets its windows
        // spread over more time.
        let per_type = (opts.quick_cpu_budget / opts.types.len().max(1) as u32).max(Duration::from_millis(150));
        (per_type, Duration::from_millis(60), Duration::from_millis(300), 64 << 20, 32 << 20)
    } else {
        (Duration::from_millis(250), Duration::from_millis(300), Duration::from_millis(600), 256 << 20, 256 << 20)
    };
    let mut cpu = heapless::Vec::<TypeThroughput, MAX_TYPES>::new();
    for &ty in opts.types.iter().take(MAX_TYPES) {
        step(&format!("cpu {ty}"));
        let flops = compute::matvec_flops(&kernels, pool, ty, per_type) as f32;
        cpu.push(TypeThroughput { ggml_type: ty.id(), flops }).map_err(|_| anyhow!("too many tensor types"))?;
    }
    step("memory bandwidth");
    let mem = compute::memory_read_bandwidth(pool, mem_bytes, mem_s);
    step("kv cache writes");
    let kv_write_s = compute::kv_write_seconds(opts.kv_dim, per_type / 4);
    step("disk");
    let disk = disk::measure(&opts.dir, disk_bytes, disk_s)?;
    step("memory amounts");
    let ram = system::memory()?;
    let gpu = match &opts.gpu {
        Some(probe) => {
            step("gpu");
            let types = opts.types.iter().copied();
            // No GPU is fine: the profile says so and the CPU figures stand.
            crate::gpu::profile(probe, types, &ram, per_type).map_err(|e| eprintln!("gpu: {e:#}")).ok()
        }
        None => None,
    };
    let link = match &opts.peer {
        Some(peer) => {
            step("network");
            let (rtt, bw) = probe::measure(peer, mem_s, opts.peer_key.as_ref())?;
            Some(LinkProfile { rtt_s: rtt as f32, bytes_per_s: bw as f32 })
        }
        None => None,
    };
    Ok(DeviceProfile {
        version: PROFILE_VERSION,
        name: bounded(&opts.name),
        threads: pool.threads().min(u16::MAX as usize) as u16,
        kernels: bounded(kernels.name()),
        cpu,
        mem_read_bytes_per_s: mem as f32,
        kv_write_s: kv_write_s as f32,
        disk_seq_read_bytes_per_s: disk.seq_bytes_per_s as f32,
        disk_random_read_bytes_per_s: disk.random_bytes_per_s as f32,
        ram_total_bytes: ram.total,
        ram_available_bytes: ram.available,
        swap_free_bytes: ram.swap_free,
        page_cache: system::page_cache_class(),
        gpu,
        link,
    })
}
