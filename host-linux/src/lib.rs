//! The Linux shell of prima-rs: memory from `/proc/meminfo` capped by the
//! process's cgroup, prefetch with `MADV_POPULATE_READ` on a background
//! thread, release with `MADV_DONTNEED`, `O_DIRECT` disk reads, and aarch64
//! features from `AT_HWCAP`. The Android shell reuses every piece here but
//! its memory rule.
#![cfg(any(target_os = "linux", target_os = "android"))]

pub mod procfs;

use anyhow::Context;
use memmap2::{Advice, Mmap, UncheckedAdvice};
use prima_core::kernels::CpuCaps;
use prima_core::profile::PageCacheClass;
use prima_host::os::{Memory, Os};
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// The Linux shell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Linux;

impl Os for Linux {
    fn name(&self) -> &'static str {
        "linux"
    }

    /// `MADV_WILLNEED` reads exactly the range into
    /// the page cache in large requests (model data is mapped `MADV_RANDOM`,
    /// so faults alone would read it a page at a time), in pieces: the
    /// kernel reads at most its read-ahead window per call. Then
    /// `MADV_POPULATE_READ` maps the pages as a first touch would; kernels
    /// before 5.14 lack the second, and stop after the first.
    fn prefetch(&self, map: &Arc<Mmap>, _file: &File, range: Range<usize>) -> anyhow::Result<()> {
        #[cfg(target_os = "linux")]
        {
            const PIECE: usize = 2 << 20;
            for at in range.clone().step_by(PIECE) {
                map.advise_range(Advice::WillNeed, at, PIECE.min(range.end - at))
                    .context("madvise(MADV_WILLNEED) failed")?;
            }
            // Kernels before 5.14 lack it: the pages are read, and fault in cheaply.
            let _ = map.advise_range(Advice::PopulateRead, range.start, range.len());
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        will_need(map, range)
    }

    fn release(&self, map: &Mmap, file: &File, range: Range<usize>) -> anyhow::Result<()> {
        dont_need(map, range.clone())?;
        drop_cached(file, range)
    }

    fn advise_access(&self, map: &Mmap, range: Range<usize>, random: bool) -> anyhow::Result<()> {
        advise_access(map, range, random)
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        procfs::memory()
    }

    fn io_read_bytes(&self) -> Option<u64> {
        procfs::io_read_bytes()
    }

    fn peak_rss(&self) -> Option<u64> {
        procfs::peak_rss()
    }

    fn drop_file_cache(&self, file: &File) -> anyhow::Result<()> {
        drop_file_cache(file)
    }

    fn page_cache(&self) -> PageCacheClass {
        PageCacheClass::Evicting
    }

    fn open_uncached(&self, path: &Path) -> anyhow::Result<(File, bool)> {
        open_direct(path)
    }

    fn cpu_caps(&self) -> CpuCaps {
        hwcap_caps()
    }
}

/// `MADV_WILLNEED`: start read-ahead of `range`, returning at once.
pub fn will_need(map: &Mmap, range: Range<usize>) -> anyhow::Result<()> {
    map.advise_range(Advice::WillNeed, range.start, range.len()).context("madvise(MADV_WILLNEED) failed")
}

/// `MADV_RANDOM` (faults read only their page) or `MADV_NORMAL` (faults read around).
pub fn advise_access(map: &Mmap, range: Range<usize>, random: bool) -> anyhow::Result<()> {
    let (advice, name) = if random { (Advice::Random, "MADV_RANDOM") } else { (Advice::Normal, "MADV_NORMAL") };
    map.advise_range(advice, range.start, range.len()).with_context(|| format!("madvise({name}) failed"))
}

/// `MADV_DONTNEED`: drop `range`'s pages from this process now.
pub fn dont_need(map: &Mmap, range: Range<usize>) -> anyhow::Result<()> {
    // SAFETY: the map is a read-only, private file mapping, so dropping its
    // pages loses nothing: the next access reads the file again.
    unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, range.start, range.len()) }
        .context("madvise(MADV_DONTNEED) failed")
}

/// `POSIX_FADV_DONTNEED`: drop `range` of `file` from the page cache (pages
/// still mapped elsewhere stay), so streamed layers leave no cached copy
/// charged to this process's cgroup.
pub fn drop_cached(file: &File, range: Range<usize>) -> anyhow::Result<()> {
    let len = std::num::NonZeroU64::new(range.len() as u64);
    rustix::fs::fadvise(file, range.start as u64, len, rustix::fs::Advice::DontNeed)
        .context("posix_fadvise(POSIX_FADV_DONTNEED) failed")
}

/// `POSIX_FADV_DONTNEED` on the whole of `file`.
pub fn drop_file_cache(file: &File) -> anyhow::Result<()> {
    rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed)
        .context("posix_fadvise(POSIX_FADV_DONTNEED) failed")
}

/// `O_DIRECT` where the filesystem allows it; tmpfs and some others refuse
/// it, and get the file's cached pages dropped (`POSIX_FADV_DONTNEED`) instead.
pub fn open_direct(path: &Path) -> anyhow::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let direct = rustix::fs::OFlags::DIRECT.bits() as i32;
    if let Ok(f) = OpenOptions::new().read(true).custom_flags(direct).open(path) {
        return Ok((f, true));
    }
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)
        .with_context(|| format!("posix_fadvise(POSIX_FADV_DONTNEED) on {} failed", path.display()))?;
    Ok((f, false))
}

/// On aarch64, NEON is baseline and dot products are `HWCAP_ASIMDDP` in the
/// auxiliary vector; x86-64 features come from core's CPUID reading.
pub fn hwcap_caps() -> CpuCaps {
    #[cfg(target_arch = "aarch64")]
    {
        const HWCAP_ASIMD: usize = 1 << 1;
        const HWCAP_ASIMDDP: usize = 1 << 20;
        let (hwcap, _) = rustix::param::linux_hwcap();
        CpuCaps { neon: hwcap & HWCAP_ASIMD != 0, dotprod: hwcap & HWCAP_ASIMDDP != 0, ..CpuCaps::NONE }
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        CpuCaps::detect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_and_release_a_mapped_file() {
        let path = std::env::temp_dir().join(format!("prima-os-{}.bin", std::process::id()));
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let file = File::open(&path).unwrap();
        // SAFETY (test): the file is private to this test and not modified while mapped.
        let map = Arc::new(unsafe { Mmap::map(&file) }.unwrap());
        Linux.prefetch(&map, &file, 0..map.len()).unwrap();
        Linux.release(&map, &file, 4096..map.len()).unwrap();
        assert!(map.iter().all(|&b| b == 7), "released pages read back from the file");
        drop(map);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn uncached_open_of_a_missing_file_names_it() {
        let e = Linux.open_uncached(Path::new("/nonexistent/prima-scratch")).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/prima-scratch"), "{e:#}");
    }

    #[test]
    fn hwcap_caps_match_std_detection() {
        let caps = hwcap_caps();
        #[cfg(target_arch = "aarch64")]
        assert_eq!(caps.dotprod, std::arch::is_aarch64_feature_detected!("dotprod"));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(caps.avx2, std::arch::is_x86_feature_detected!("avx2"));
    }
}
