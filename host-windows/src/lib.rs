//! The Windows shell of prima-rs: prefetch with `PrefetchVirtualMemory`,
//! release by trimming the working set with `VirtualUnlock`, unbuffered
//! disk reads (`FILE_FLAG_NO_BUFFERING`), and the OS's available physical
//! memory.
#![cfg(windows)]

use anyhow::Context;
use memmap2::Mmap;
use prima_core::profile::PageCacheClass;
use prima_host::os::{Memory, Os};
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use windows_sys::Win32::System::Memory::{PrefetchVirtualMemory, VirtualUnlock, WIN32_MEMORY_RANGE_ENTRY};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

/// The Windows shell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Windows;

impl Os for Windows {
    fn name(&self) -> &'static str {
        "windows"
    }

    /// Asks the memory manager to read the range in, asynchronously.
    fn prefetch(&self, map: &Arc<Mmap>, _file: &File, range: Range<usize>) -> anyhow::Result<()> {
        let bytes = &map[range];
        let entry = WIN32_MEMORY_RANGE_ENTRY { VirtualAddress: bytes.as_ptr() as *mut _, NumberOfBytes: bytes.len() };
        // SAFETY: the range lies inside a live read-only view this process
        // mapped; the call only schedules reads of it.
        let ok = unsafe { PrefetchVirtualMemory(GetCurrentProcess(), 1, &entry, 0) };
        if ok == 0 {
            return Err(std::io::Error::last_os_error()).context("PrefetchVirtualMemory failed");
        }
        Ok(())
    }

    /// `VirtualUnlock` on pages that are not locked removes them from the
    /// working set; they stay in the standby list, cheap to fault back.
    fn release(&self, map: &Mmap, _file: &File, range: Range<usize>) -> anyhow::Result<()> {
        let bytes = &map[range];
        // SAFETY: as for `prefetch`; unlocking never invalidates the view.
        // It reports "not locked" by design, so the result is ignored.
        unsafe { VirtualUnlock(bytes.as_ptr() as *const _, bytes.len()) };
        Ok(())
    }

    /// `GlobalMemoryStatusEx`'s available physical memory (through sysinfo).
    fn memory(&self) -> anyhow::Result<Memory> {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        anyhow::ensure!(sys.total_memory() > 0, "GlobalMemoryStatusEx reported no memory");
        Ok(Memory {
            total: sys.total_memory(),
            available: sys.available_memory(),
            swap_free: sys.free_swap(),
            cgroup_limit: None,
            unified: false,
        })
    }

    fn page_cache(&self) -> PageCacheClass {
        PageCacheClass::WorkingSetTrim
    }

    /// Unbuffered reads need sector-aligned offsets, lengths and buffers,
    /// which the disk profile's 4 KiB-aligned reads are.
    fn open_uncached(&self, path: &Path) -> anyhow::Result<(File, bool)> {
        use std::os::windows::fs::OpenOptionsExt;
        use windows_sys::Win32::Storage::FileSystem::FILE_FLAG_NO_BUFFERING;
        if let Ok(f) = OpenOptions::new().read(true).custom_flags(FILE_FLAG_NO_BUFFERING).open(path) {
            return Ok((f, true));
        }
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok((f, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_memory() {
        let m = Windows.memory().unwrap();
        assert!(m.total > 0 && m.available > 0 && m.available <= m.total, "{m:?}");
    }

    #[test]
    fn prefetch_and_release_a_mapped_file() {
        let path = std::env::temp_dir().join(format!("prima-os-{}.bin", std::process::id()));
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let file = File::open(&path).unwrap();
        // SAFETY (test): the file is private to this test and not modified while mapped.
        let map = Arc::new(unsafe { Mmap::map(&file) }.unwrap());
        Windows.prefetch(&map, &file, 0..map.len()).unwrap();
        Windows.release(&map, &file, 4096..map.len()).unwrap();
        assert!(map.iter().all(|&b| b == 7), "released pages read back from the file");
        drop(map);
        drop(file);
        let _ = std::fs::remove_file(&path);
    }
}
