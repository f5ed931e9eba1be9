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
    /// Kept open for the OS calls that advise by descriptor (macOS `F_RDADVISE`).
    file: File,
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
        Ok(Self { path: path.to_path_buf(), map: std::sync::Arc::new(map), file })
    }

    /// Starts reading `range` in on the OS's terms (see [`crate::os::Os::prefetch`]),
    /// so the window that runs next finds its pages present.
    pub fn prefetch(&self, range: std::ops::Range<usize>) -> anyhow::Result<()> {
        crate::os::current().prefetch(&self.map, &self.file, range).with_context(|| self.path.display().to_string())
    }

    /// Lets the OS drop `range`'s pages now: they are not needed until the
    /// next token, and memory is short.
    pub fn release(&self, range: std::ops::Range<usize>) -> anyhow::Result<()> {
        crate::os::current().release(&self.map, &self.file, range).with_context(|| self.path.display().to_string())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The file parsed as GGUF; errors name the file.
    pub fn gguf(&self) -> anyhow::Result<prima_core::Gguf<'_>> {
        prima_core::Gguf::parse(self.bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))
    }
}
