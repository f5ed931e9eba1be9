//! `/proc/meminfo` and the memory cgroup (v2 or v1), which Linux and Android share.

use anyhow::Context;
use prima_host::os::Memory;

/// The fields of `/proc/meminfo` that planning needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    /// `MemAvailable` (Linux 3.14 and later), or free plus cached before it.
    pub available: u64,
    pub swap_free: u64,
}

impl MemInfo {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let field = |name: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))?;
            let kib: u64 = line[name.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
            kib.checked_mul(1024)
        };
        let total = field("MemTotal").context("/proc/meminfo has no MemTotal")?;
        let available = field("MemAvailable").or_else(|| Some(field("MemFree")? + field("Cached")?)).unwrap_or(0);
        Ok(Self { total, available, swap_free: field("SwapFree").unwrap_or(0) })
    }

    pub fn read() -> anyhow::Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/meminfo").context("cannot read /proc/meminfo")?)
    }
}

/// Bytes this process has read from storage (`read_bytes` of
/// `/proc/self/io`: page-cache hits do not count), if the kernel keeps it.
pub fn io_read_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    text.lines().find_map(|l| l.strip_prefix("read_bytes:")).and_then(|v| v.trim().parse().ok())
}

/// `VmHWM` of `/proc/self/status`: this process's peak resident set.
pub fn peak_rss() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 =
        text.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Linux's rule: `MemAvailable`, capped by the headroom left under any
/// cgroup limit this process runs in.
pub fn memory() -> anyhow::Result<Memory> {
    let info = MemInfo::read()?;
    Ok(with_cgroup(info, info.available))
}

/// `available` (already reduced by any OS rule) capped by the process's
/// cgroup, as a [`Memory`].
pub fn with_cgroup(info: MemInfo, available: u64) -> Memory {
    let cgroup = cgroup_headroom(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    Memory {
        total: info.total,
        available: cgroup.map_or(available, |(limit, used)| available.min(limit.saturating_sub(used))),
        swap_free: info.swap_free,
        cgroup_limit: cgroup.map(|c| c.0),
        unified: false,
    }
}

/// `(limit, usage)` of the memory cgroup named in `/proc/self/cgroup`'s
/// text, v2 first, then v1; `None` when unlimited or absent. Usage leaves
/// out inactive file pages: the cgroup reclaims them before it fails an
/// allocation, as `MemAvailable` counts them available.
pub fn cgroup_headroom(self_cgroup: &str) -> Option<(u64, u64)> {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (limit, usage, stat, inactive_key) = if controllers.is_empty() {
            let base = format!("/sys/fs/cgroup{path}");
            let at = |f: &str| read(&format!("{base}/{f}"));
            (at("memory.max"), at("memory.current"), at("memory.stat"), "inactive_file")
        } else if controllers.split(',').any(|c| c == "memory") {
            let base = format!("/sys/fs/cgroup/memory{path}");
            let at = |f: &str| read(&format!("{base}/{f}")).or_else(|| read(&format!("/sys/fs/cgroup/memory/{f}")));
            (at("memory.limit_in_bytes"), at("memory.usage_in_bytes"), at("memory.stat"), "total_inactive_file")
        } else {
            continue;
        };
        // "max" (v2) or a huge page-rounded number (v1) means no limit.
        // A v2 line on a hybrid system may name a group with no memory
        // files; the v1 memory line may follow.
        let Some(limit) = limit.and_then(|l| l.parse::<u64>().ok()) else { continue };
        if limit >= 1 << 60 {
            return None;
        }
        let usage: u64 = usage.and_then(|u| u.parse().ok()).unwrap_or(0);
        let inactive = stat.as_deref().and_then(|s| stat_field(s, inactive_key)).unwrap_or(0);
        return Some((limit, usage.saturating_sub(inactive)));
    }
    None
}

/// A `key value` line's value in a cgroup `memory.stat`.
pub fn stat_field(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_read_in_bytes() {
        let text =
            "MemTotal:       16384 kB\nMemFree:     1000 kB\nMemAvailable:    8192 kB\nCached: 10 kB\nSwapFree: 4 kB\n";
        let m = MemInfo::parse(text).unwrap();
        assert_eq!(m, MemInfo { total: 16384 * 1024, available: 8192 * 1024, swap_free: 4096 });
    }

    #[test]
    fn old_kernels_without_memavailable_count_free_and_cached() {
        let m = MemInfo::parse("MemTotal: 100 kB\nMemFree: 10 kB\nCached: 20 kB\n").unwrap();
        assert_eq!(m.available, 30 * 1024);
        assert_eq!(m.swap_free, 0);
    }

    #[test]
    fn meminfo_without_total_is_a_named_error() {
        let e = MemInfo::parse("MemFree: 10 kB\n").unwrap_err();
        assert!(e.to_string().contains("MemTotal"), "{e}");
    }

    #[test]
    fn cgroup_stat_fields_are_found_by_exact_key() {
        let stat = "inactive_file 10\ntotal_inactive_file 4096\nactive_file 7\n";
        assert_eq!(stat_field(stat, "total_inactive_file"), Some(4096));
        assert_eq!(stat_field(stat, "inactive_file"), Some(10));
        assert_eq!(stat_field(stat, "inactive"), None);
    }

    #[test]
    fn this_machine_reports_memory() {
        let m = memory().unwrap();
        assert!(m.total > 0 && m.available <= m.total.max(m.cgroup_limit.unwrap_or(0)), "{m:?}");
    }
}
