//! Model files mapped into memory, never copied.

use anyhow::{bail, Context};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A read-only memory map of a model file.
#[derive(Debug)]
pub struct MappedFile {
    pub path: PathBuf,
    /// Shared with prefetch threads, so the map outlives their work.
    map: std::sync::Arc<Mmap>,
}

impl MappedFile {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open model file {}", path.display()))?;
        let len = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?.len();
        if len == 0 {
            bail!("model file {} is empty", path.display());
        }
        // SAFETY: the map is read-only. A concurrent truncation of the file by
        // another process would fault; prima documents that model files must
        // not be modified while in use, as every mmap-based engine does.
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("cannot mmap {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), map: std::sync::Arc::new(map) })
    }

    /// Starts reading `range` in and mapping it, on a background thread,
    /// so the window that runs next finds its pages present: on Linux
    /// `MADV_POPULATE_READ` (read and map, as a first touch would, but off
    /// the compute thread), elsewhere on Unix (Android included: memmap2
    /// does not offer it there) `MADV_WILLNEED`.
    pub fn prefetch(&self, range: std::ops::Range<usize>) -> anyhow::Result<()> {
        #[cfg(target_os = "linux")]
        {
            let map = std::sync::Arc::clone(&self.map);
            std::thread::Builder::new()
                .name("prima-prefetch".into())
                .spawn(move || {
                    let _ = map.advise_range(memmap2::Advice::PopulateRead, range.start, range.len());
                })
                .with_context(|| format!("cannot start a prefetch thread for {}", self.path.display()))?;
        }
        #[cfg(all(unix, not(target_os = "linux")))]
        self.map
            .advise_range(memmap2::Advice::WillNeed, range.start, range.len())
            .with_context(|| format!("madvise(WILLNEED) on {}", self.path.display()))?;
        #[cfg(windows)]
        windows::prefetch(&self.map[range])
            .with_context(|| format!("PrefetchVirtualMemory on {}", self.path.display()))?;
        Ok(())
    }

    /// Lets the OS drop `range`'s pages now: they are not needed until the
    /// next token, and memory is short.
    pub fn release(&self, range: std::ops::Range<usize>) -> anyhow::Result<()> {
        // SAFETY: the map is a read-only, private file mapping, so dropping
        // its pages loses nothing: the next access reads the file again.
        #[cfg(unix)]
        unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.len()) }
            .with_context(|| format!("madvise(DONTNEED) on {}", self.path.display()))?;
        #[cfg(windows)]
        windows::trim(&self.map[range]);
        Ok(())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The file parsed as GGUF; errors name the file.
    pub fn gguf(&self) -> anyhow::Result<prima_core::Gguf<'_>> {
        prima_core::Gguf::parse(self.bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))
    }
}

/// Prefetch and release through Windows' own calls.
#[cfg(windows)]
mod windows {
    use windows_sys::Win32::System::Memory::{PrefetchVirtualMemory, VirtualUnlock, WIN32_MEMORY_RANGE_ENTRY};
    use windows_sys::Win32::System::Threading::GetCurrentProcess;

    /// Asks the memory manager to read `bytes` in, asynchronously.
    pub fn prefetch(bytes: &[u8]) -> std::io::Result<()> {
        let entry = WIN32_MEMORY_RANGE_ENTRY { VirtualAddress: bytes.as_ptr() as *mut _, NumberOfBytes: bytes.len() };
        // SAFETY: the range lies inside a live read-only view this process
        // mapped; the call only schedules reads of it.
        let ok = unsafe { PrefetchVirtualMemory(GetCurrentProcess(), 1, &entry, 0) };
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes `bytes` from the working set: `VirtualUnlock` on pages that
    /// are not locked trims them, and they stay in the standby list.
    pub fn trim(bytes: &[u8]) {
        // SAFETY: as for `prefetch`; unlocking never invalidates the view.
        // It reports "not locked" by design, so the result is ignored.
        unsafe { VirtualUnlock(bytes.as_ptr() as *const _, bytes.len()) };
    }
}
