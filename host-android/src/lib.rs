//! The Android shell of prima-rs, for Termux and for apps that link it.
//! Mapping, hints, disk reads and CPU features are the Linux shell's code;
//! memory differs: Android's low-memory killer ends processes well before
//! the kernel runs out, so its headroom is kept free. It also builds for
//! Linux, where its tests run.
#![cfg(any(target_os = "linux", target_os = "android"))]

pub mod lmk;

use memmap2::Mmap;
use prima_core::kernels::CpuCaps;
use prima_core::profile::PageCacheClass;
use prima_host::os::{Memory, Os};
use prima_host_linux::procfs::{self, MemInfo};
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// The Android shell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Android;

impl Os for Android {
    fn name(&self) -> &'static str {
        "android"
    }

    /// `MADV_WILLNEED`: many Android kernels predate `MADV_POPULATE_READ`.
    fn prefetch(&self, map: &Arc<Mmap>, _file: &File, range: Range<usize>) -> anyhow::Result<()> {
        prima_host_linux::will_need(map, range)
    }

    fn release(&self, map: &Mmap, file: &File, range: Range<usize>) -> anyhow::Result<()> {
        prima_host_linux::dont_need(map, range.clone())?;
        prima_host_linux::drop_cached(file, range)
    }

    fn advise_access(&self, map: &Mmap, range: Range<usize>, random: bool) -> anyhow::Result<()> {
        prima_host_linux::advise_access(map, range, random)
    }

    fn io_read_bytes(&self) -> Option<u64> {
        procfs::io_read_bytes()
    }

    fn peak_rss(&self) -> Option<u64> {
        procfs::peak_rss()
    }

    fn drop_file_cache(&self, file: &File) -> anyhow::Result<()> {
        prima_host_linux::drop_file_cache(file)
    }

    /// `MemAvailable` less the low-memory killer's threshold for this
    /// process (see [`lmk`]), capped by any cgroup.
    fn memory(&self) -> anyhow::Result<Memory> {
        let info = MemInfo::read()?;
        let headroom = lmk::Levels::read().headroom(lmk::our_adj());
        Ok(procfs::with_cgroup(info, info.available.saturating_sub(headroom)))
    }

    fn page_cache(&self) -> PageCacheClass {
        PageCacheClass::Evicting
    }

    fn open_uncached(&self, path: &Path) -> anyhow::Result<(File, bool)> {
        prima_host_linux::open_direct(path)
    }

    fn cpu_caps(&self) -> CpuCaps {
        prima_host_linux::hwcap_caps()
    }
}
