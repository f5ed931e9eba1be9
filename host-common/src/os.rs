//! What an OS shell supplies: prefetch and release hints for mapped model
//! files, memory figures by the OS's own rules, uncached reads for the disk
//! profile, and the CPU features its kernels may use.
//!
//! The shells (`prima-host-linux`, `-android`, `-macos`, `-windows`)
//! implement [`Os`] and [`install`] it before running the CLI. A program
//! that links this crate without a shell (the C ABI, the test crate) gets
//! [`Portable`]: no hints, core's own CPU detection, and an error where a
//! memory figure is needed.

use anyhow::Context;
use memmap2::Mmap;
use prima_core::kernels::CpuCaps;
use prima_core::profile::PageCacheClass;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Memory as the OS reports it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    /// What this process can use without swapping or being killed: the
    /// OS's estimate, less any headroom its rules demand (Android's
    /// low-memory killer), capped by any cgroup limit.
    pub available: u64,
    pub swap_free: u64,
    /// The cgroup limit, when one applies.
    pub cgroup_limit: Option<u64>,
    /// The GPU draws on this same memory (Apple silicon), so a GPU backend's
    /// buffers come out of `available` rather than from separate VRAM.
    pub unified: bool,
}

/// One OS's calls. Every method names the failing OS call in its error.
pub trait Os: Send + Sync {
    /// Short name for logs: "linux", "android", "macos", "windows".
    fn name(&self) -> &'static str;

    /// Reads `range` of the mapped `file` in (or starts to), so what runs
    /// next finds its pages present. It may block until the pages are read:
    /// prima calls it from each file's own prefetch thread, in order.
    fn prefetch(&self, map: &Arc<Mmap>, file: &File, range: Range<usize>) -> anyhow::Result<()>;

    /// Lets the OS drop `range`'s pages now, from this process and, where the
    /// OS allows, from its file cache: they are not needed until the next
    /// token, and memory is short (a cgroup counts cached pages too, and
    /// would push resident layers out to make room). The map is read-only
    /// and private, so nothing is lost; the next access reads the file again.
    fn release(&self, map: &Mmap, file: &File, range: Range<usize>) -> anyhow::Result<()>;

    /// Tells the OS how `range` of the map will be read: `random` (touched
    /// here and there, such as embedding rows and the few bytes a file's
    /// fingerprint reads), so a fault reads only its page, or sequentially
    /// (layers that run), so faults read ahead. Without the first, a 4 KiB
    /// touch can read megabytes around it (Linux reads `read_ahead_kb`
    /// around a fault; 8 MiB on the build VM).
    fn advise_access(&self, _map: &Mmap, _range: Range<usize>, _random: bool) -> anyhow::Result<()> {
        Ok(())
    }

    fn memory(&self) -> anyhow::Result<Memory>;

    /// The most memory this process has held at once (resident set), where
    /// the OS counts it.
    fn peak_rss(&self) -> Option<u64> {
        None
    }

    /// Drops `file`'s clean pages from the page cache (where the OS allows).
    fn drop_file_cache(&self, _file: &File) -> anyhow::Result<()> {
        Ok(())
    }

    /// Bytes this process has read from storage so far (not from the file
    /// cache), where the OS counts them.
    fn io_read_bytes(&self) -> Option<u64> {
        None
    }

    /// How the OS treats mapped file pages under pressure.
    fn page_cache(&self) -> PageCacheClass;

    /// Opens `path` for reads that bypass the page cache where the OS and
    /// filesystem allow; `true` when they do.
    fn open_uncached(&self, path: &Path) -> anyhow::Result<(File, bool)> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok((file, false))
    }

    /// CPU features the kernels may use. Core reads CPUID itself on x86-64;
    /// on aarch64 the optional features need the OS's word.
    fn cpu_caps(&self) -> CpuCaps {
        CpuCaps::detect()
    }
}

/// No shell: hints do nothing, and memory figures are an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Portable;

impl Os for Portable {
    fn name(&self) -> &'static str {
        "portable"
    }

    fn prefetch(&self, _: &Arc<Mmap>, _: &File, _: Range<usize>) -> anyhow::Result<()> {
        Ok(())
    }

    fn release(&self, _: &Mmap, _: &File, _: Range<usize>) -> anyhow::Result<()> {
        Ok(())
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        anyhow::bail!(
            "memory figures need an OS shell (prima-host-linux, -android, -macos or -windows); none is installed"
        )
    }

    fn page_cache(&self) -> PageCacheClass {
        PageCacheClass::Unknown
    }
}

static INSTALLED: OnceLock<&'static dyn Os> = OnceLock::new();

/// Makes `os` the one every later call uses. The first call wins; a later
/// one returns `false` and changes nothing.
pub fn install(os: &'static dyn Os) -> bool {
    INSTALLED.set(os).is_ok()
}

/// The installed shell, or [`Portable`].
pub fn current() -> &'static dyn Os {
    INSTALLED.get().copied().unwrap_or(&Portable)
}
