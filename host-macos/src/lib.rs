//! The macOS shell of prima-rs: prefetch through `F_RDADVISE` (the file
//! system's read-ahead) and `MADV_WILLNEED` (the mapping's), release with
//! `MADV_DONTNEED`, `F_NOCACHE` disk reads, and memory by the OS's pressure
//! figure. On Apple silicon memory is unified: the GPU draws on the same
//! pool, so there is no separate VRAM to count.
#![cfg(target_os = "macos")]

use anyhow::{bail, Context};
use memmap2::{Advice, Mmap, UncheckedAdvice};
use prima_core::kernels::CpuCaps;
use prima_core::profile::PageCacheClass;
use prima_host::os::{Memory, Os};
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use sysctl::{CtlValue, Sysctl};

/// The macOS shell.
#[derive(Debug, Clone, Copy, Default)]
pub struct MacOs;

impl Os for MacOs {
    fn name(&self) -> &'static str {
        "macos"
    }

    /// The map covers the file from offset 0, so map offsets are file offsets.
    fn prefetch(&self, map: &Arc<Mmap>, file: &File, range: Range<usize>) -> anyhow::Result<()> {
        rustix::fs::fcntl_rdadvise(file, range.start as u64, range.len() as u64).context("fcntl(F_RDADVISE) failed")?;
        map.advise_range(Advice::WillNeed, range.start, range.len()).context("madvise(MADV_WILLNEED) failed")
    }

    fn release(&self, map: &Mmap, _file: &File, range: Range<usize>) -> anyhow::Result<()> {
        // SAFETY: the map is a read-only, private file mapping, so dropping
        // its pages loses nothing: the next access reads the file again.
        unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, range.start, range.len()) }
            .context("madvise(MADV_DONTNEED) failed")
    }

    fn advise_access(&self, map: &Mmap, range: Range<usize>, random: bool) -> anyhow::Result<()> {
        let (advice, name) = if random { (Advice::Random, "MADV_RANDOM") } else { (Advice::Normal, "MADV_NORMAL") };
        map.advise_range(advice, range.start, range.len()).with_context(|| format!("madvise({name}) failed"))
    }

    /// `kern.memorystatus_level` is the share of memory the kernel counts
    /// as available before it raises memory pressure (free, reclaimable and
    /// compressible pages together): what Activity Monitor shows.
    fn memory(&self) -> anyhow::Result<Memory> {
        let total = number("hw.memsize")?;
        let level = number("kern.memorystatus_level")?.min(100);
        // xsw_usage: total, avail, used (u64 each), then page size and flags.
        let swap_free = match sysctl::Ctl::new("vm.swapusage").and_then(|c| c.value()) {
            Ok(CtlValue::Struct(b)) if b.len() >= 16 => u64::from_ne_bytes(b[8..16].try_into().unwrap_or_default()),
            _ => 0,
        };
        Ok(Memory {
            total,
            available: total / 100 * level,
            swap_free,
            cgroup_limit: None,
            unified: cfg!(target_arch = "aarch64"),
        })
    }

    fn page_cache(&self) -> PageCacheClass {
        PageCacheClass::Compressing
    }

    fn open_uncached(&self, path: &Path) -> anyhow::Result<(File, bool)> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        rustix::fs::fcntl_nocache(&file, true).context("fcntl(F_NOCACHE) failed")?;
        Ok((file, true))
    }

    /// Apple silicon announces each optional feature as `hw.optional.arm.FEAT_*`.
    fn cpu_caps(&self) -> CpuCaps {
        if cfg!(target_arch = "aarch64") {
            let dotprod = number("hw.optional.arm.FEAT_DotProd").is_ok_and(|v| v == 1);
            CpuCaps { neon: true, dotprod, ..CpuCaps::NONE }
        } else {
            CpuCaps::detect()
        }
    }
}

/// A numeric sysctl, whatever its width.
fn number(name: &str) -> anyhow::Result<u64> {
    let value = sysctl::Ctl::new(name).and_then(|c| c.value()).with_context(|| format!("sysctl({name}) failed"))?;
    Ok(match value {
        CtlValue::Int(v) | CtlValue::S32(v) => v.max(0) as u64,
        CtlValue::Uint(v) | CtlValue::U32(v) => v as u64,
        CtlValue::Long(v) | CtlValue::S64(v) => v.max(0) as u64,
        CtlValue::Ulong(v) | CtlValue::U64(v) => v,
        other => bail!("sysctl({name}) is not a number: {other}"),
    })
}
