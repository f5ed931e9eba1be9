//! Model files mapped into memory, never copied.

use anyhow::{bail, Context};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::prefetcher::Prefetcher;

/// A read-only memory map of a model file.
#[derive(Debug)]
pub struct MappedFile {
    pub path: PathBuf,
    /// Shared with prefetch threads, so the map outlives their work.
    map: std::sync::Arc<Mmap>,
    /// Kept open for the OS calls that advise by descriptor (macOS `F_RDADVISE`).
    file: File,
    /// Started on the first prefetch.
    prefetcher: std::sync::OnceLock<Prefetcher>,
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
        Ok(Self { path: path.to_path_buf(), map: std::sync::Arc::new(map), file, prefetcher: Default::default() })
    }

    /// Starts reading `range` in on the OS's terms (see [`crate::os::Os::prefetch`])
    /// on this file's prefetch thread, so what runs next finds its pages present.
    pub fn prefetch(&self, range: std::ops::Range<usize>) -> anyhow::Result<()> {
        let p = match self.prefetcher.get() {
            Some(p) => p,
            None => {
                let file = self.file.try_clone().with_context(|| format!("cannot reopen {}", self.path.display()))?;
                let p = Prefetcher::start(std::sync::Arc::clone(&self.map), file)
                    .context("cannot start a prefetch thread")?;
                self.prefetcher.get_or_init(|| p)
            }
        };
        p.request(range);
        Ok(())
    }

    /// Lets the OS drop `range`'s pages now: they are not needed until the
    /// next token, and memory is short. A read of them still queued or
    /// running finishes first, so it cannot map them again behind the release.
    pub fn release(&self, range: std::ops::Range<usize>) -> anyhow::Result<()> {
        if let Some(p) = self.prefetcher.get() {
            p.settle(&range);
        }
        crate::os::current().release(&self.map, &self.file, range).with_context(|| self.path.display().to_string())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The file parsed as GGUF; errors name the file. Its tensor data is
    /// marked as read at random: a fault reads only its page, so touching
    /// a tensor here and there (the fingerprint, the norms copied at load,
    /// an embedding row) does not read the megabytes around it. What a
    /// device runs is read ahead explicitly ([`Self::load_ahead`], and the
    /// layer stream).
    pub fn gguf(&self) -> anyhow::Result<prima_core::Gguf<'_>> {
        let g = prima_core::Gguf::parse(self.bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))?;
        let data = (g.data_offset as usize).min(self.map.len())..self.map.len();
        if !data.is_empty() {
            crate::os::current()
                .advise_access(&self.map, data, true)
                .with_context(|| self.path.display().to_string())?;
        }
        Ok(g)
    }

    /// Starts reading `ranges` in, merged where they are within 64 KiB of
    /// each other, so that weights a device keeps resident load in large
    /// reads before (or while) they first run.
    pub fn load_ahead(&self, ranges: impl IntoIterator<Item = std::ops::Range<usize>>) -> anyhow::Result<()> {
        self.merged(ranges).into_iter().try_for_each(|r| self.prefetch(r))
    }

    /// Releases `ranges` merged as [`Self::load_ahead`] merges them, so that
    /// page-cache folios straddling two of them leave too (releasing each
    /// alone keeps a folio that lies partly outside it).
    pub fn release_all(&self, ranges: impl IntoIterator<Item = std::ops::Range<usize>>) -> anyhow::Result<()> {
        self.merged(ranges).into_iter().try_for_each(|r| self.release(r))
    }

    fn merged(&self, ranges: impl IntoIterator<Item = std::ops::Range<usize>>) -> Vec<std::ops::Range<usize>> {
        let mut ranges: Vec<_> = ranges.into_iter().filter(|r| !r.is_empty() && r.end <= self.map.len()).collect();
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<std::ops::Range<usize>> = Vec::new();
        for r in ranges {
            match merged.last_mut() {
                Some(m) if r.start <= m.end + (64 << 10) => m.end = m.end.max(r.end),
                _ => merged.push(r),
            }
        }
        merged
    }
}
