//! RAM figures and the machine's name; the OS shell supplies the figures.

use prima_core::profile::PageCacheClass;

pub use crate::os::Memory;

static MEMORY_LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Caps what [`memory`] reports as available at `mib` MiB for this process
/// (`--mem`): a device told to use less than it has, or a test that forces
/// small budgets. The first call wins.
pub fn limit_memory_mib(mib: u64) -> anyhow::Result<()> {
    let bytes = mib.checked_mul(1 << 20).filter(|_| mib > 0);
    let bytes = bytes.ok_or_else(|| anyhow::anyhow!("--mem {mib}: give between 1 and {} MiB", u64::MAX >> 20))?;
    let _ = MEMORY_LIMIT.set(bytes);
    Ok(())
}

/// Memory by the installed OS shell's rules, within any [`limit_memory`].
pub fn memory() -> anyhow::Result<Memory> {
    match (crate::os::current().memory(), MEMORY_LIMIT.get()) {
        (Ok(m), Some(&cap)) => Ok(Memory { available: m.available.min(cap), ..m }),
        (Err(_), Some(&cap)) => {
            Ok(Memory { total: cap, available: cap, swap_free: 0, cgroup_limit: None, unified: false })
        }
        (m, None) => m,
    }
}

/// How this OS treats mapped file pages under pressure.
pub fn page_cache_class() -> PageCacheClass {
    crate::os::current().page_cache()
}

/// This machine's name, for plans and logs.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "device".to_string())
}
