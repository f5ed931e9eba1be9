//! RAM, swap and memory limits, by the OS's own rules.

use prima_core::profile::PageCacheClass;

/// Memory as the OS reports it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    /// What can be used without swapping: the kernel's estimate, capped by
    /// any cgroup limit this process runs under.
    pub available: u64,
    pub swap_free: u64,
    /// The cgroup limit, when one applies.
    pub cgroup_limit: Option<u64>,
}

/// Reads `/proc/meminfo` and the process's cgroup (v2 or v1) on Linux and Android.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn memory() -> anyhow::Result<Memory> {
    use anyhow::Context;
    let info = std::fs::read_to_string("/proc/meminfo").context("cannot read /proc/meminfo")?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))?;
        let kib: u64 = line[name.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    };
    let total = field("MemTotal").context("/proc/meminfo has no MemTotal")?;
    // MemAvailable exists since Linux 3.14; older kernels get free + cached.
    let available = field("MemAvailable").or_else(|| Some(field("MemFree")? + field("Cached")?)).unwrap_or(0);
    let cgroup = cgroup_headroom(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    Ok(Memory {
        total,
        available: cgroup.map_or(available, |(limit, used)| available.min(limit.saturating_sub(used))),
        swap_free: field("SwapFree").unwrap_or(0),
        cgroup_limit: cgroup.map(|c| c.0),
    })
}

/// The OS's own figures elsewhere (macOS counts reclaimable and compressed
/// pages as available; Windows reports its available physical memory).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn memory() -> anyhow::Result<Memory> {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    anyhow::ensure!(sys.total_memory() > 0, "the OS reported no memory (sysinfo)");
    Ok(Memory {
        total: sys.total_memory(),
        available: sys.available_memory(),
        swap_free: sys.free_swap(),
        cgroup_limit: None,
    })
}

/// `(limit, usage)` of the memory cgroup named in `/proc/self/cgroup`'s
/// text, v2 first, then v1; `None` when unlimited or absent.
pub fn cgroup_headroom(self_cgroup: &str) -> Option<(u64, u64)> {
    let read = |p: String| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (limit, usage) = if controllers.is_empty() {
            let base = format!("/sys/fs/cgroup{path}");
            (read(format!("{base}/memory.max")), read(format!("{base}/memory.current")))
        } else if controllers.split(',').any(|c| c == "memory") {
            let base = format!("/sys/fs/cgroup/memory{path}");
            let root = "/sys/fs/cgroup/memory".to_string();
            let limit =
                read(format!("{base}/memory.limit_in_bytes")).or_else(|| read(format!("{root}/memory.limit_in_bytes")));
            let usage =
                read(format!("{base}/memory.usage_in_bytes")).or_else(|| read(format!("{root}/memory.usage_in_bytes")));
            (limit, usage)
        } else {
            continue;
        };
        // "max" (v2) or a huge page-rounded number (v1) means no limit.
        let limit: u64 = limit?.parse().ok().filter(|&l: &u64| l < (1 << 60))?;
        return Some((limit, usage.and_then(|u| u.parse().ok()).unwrap_or(0)));
    }
    None
}

/// How this OS treats mapped file pages under pressure.
pub fn page_cache_class() -> PageCacheClass {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        PageCacheClass::Evicting
    } else if cfg!(target_os = "macos") {
        PageCacheClass::Compressing
    } else if cfg!(windows) {
        PageCacheClass::WorkingSetTrim
    } else {
        PageCacheClass::Unknown
    }
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
