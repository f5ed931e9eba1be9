//! RAM figures and the machine's name; the OS shell supplies the figures.

use prima_core::profile::PageCacheClass;

pub use crate::os::Memory;

/// Memory by the installed OS shell's rules.
pub fn memory() -> anyhow::Result<Memory> {
    crate::os::current().memory()
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
