//! Disk read speed, sequential and random, past the page cache.

use anyhow::Context;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Measured read speeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskSpeed {
    pub seq_bytes_per_s: f64,
    pub random_bytes_per_s: f64,
    /// Whether reads bypassed the page cache (O_DIRECT); otherwise the
    /// file's cached pages were dropped first, which is close.
    pub direct: bool,
}

const BLOCK: usize = 4 << 20;
const RANDOM_READ: usize = 4096;
const ALIGN: usize = 4096;

/// A scratch file that is removed however the measurement ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes a `size`-byte scratch file in `dir` (the model's directory, so the
/// same disk), then reads it back sequentially and at random offsets, each
/// for at most `budget`.
pub fn measure(dir: &Path, size: usize, budget: Duration) -> anyhow::Result<DiskSpeed> {
    let size = size.div_ceil(BLOCK).max(1) * BLOCK;
    let tmp = TempFile(dir.join(format!(".prima-profile-{}.tmp", std::process::id())));
    {
        let mut f = File::create(&tmp.0).with_context(|| format!("cannot create scratch file {}", tmp.0.display()))?;
        let block: Vec<u8> = (0..BLOCK).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for _ in 0..size / BLOCK {
            f.write_all(&block)
                .with_context(|| format!("cannot write scratch file {} (disk full?)", tmp.0.display()))?;
        }
        f.sync_all().with_context(|| format!("cannot sync scratch file {}", tmp.0.display()))?;
    }
    let (file, direct) = crate::os::current().open_uncached(&tmp.0)?;
    let mut raw = vec![0u8; BLOCK + ALIGN];
    let at = raw.as_ptr().align_offset(ALIGN);
    let buf = &mut raw[at..at + BLOCK];

    let start = Instant::now();
    let mut read = 0usize;
    while read < size && start.elapsed() < budget {
        read += read_at(&file, &mut buf[..], read as u64)?;
    }
    let seq = read as f64 / start.elapsed().as_secs_f64();

    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let blocks = (size / RANDOM_READ) as u64;
    let start = Instant::now();
    let mut random = 0usize;
    while start.elapsed() < budget / 2 || random == 0 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        random += read_at(&file, &mut buf[..RANDOM_READ], (state % blocks) * RANDOM_READ as u64)?;
    }
    let rand = random as f64 / start.elapsed().as_secs_f64();
    Ok(DiskSpeed { seq_bytes_per_s: seq, random_bytes_per_s: rand, direct })
}

fn read_at(file: &File, buf: &mut [u8], offset: u64) -> anyhow::Result<usize> {
    #[cfg(unix)]
    let n = std::os::unix::fs::FileExt::read_at(file, buf, offset);
    #[cfg(windows)]
    let n = std::os::windows::fs::FileExt::seek_read(file, buf, offset);
    let n = n.context("reading the scratch file failed")?;
    anyhow::ensure!(n > 0, "scratch file ended early");
    Ok(n)
}
