//! Shipping a worker its layers: the head sends a GGUF holding only them,
//! and the worker keeps it in a cache keyed by the model's fingerprint, so
//! a device needs neither the whole model file nor a second transfer.

use anyhow::{anyhow, bail, Context};
use prima_core::gguf::write::{layer_of, subset};
use prima_core::ring::wire::Control;
use prima_core::Gguf;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

use super::conn::{read_control, send_control};
use crate::link::Link;
use prima_core::ring::wire::FrameDecoder;

/// Bytes per `Weights` message. Small enough that the buffers on both ends
/// stay small: glibc keeps freed multi-megabyte buffers in its heap (its
/// mmap threshold rises to the largest freed), and 8 MiB messages left a
/// worker 50 MB of heap it no longer used, taken from its layers' memory.
const CHUNK: usize = 1 << 20;
/// Largest layer file a worker accepts (1 TiB): a hostile length is refused
/// before any byte is written.
const MAX_FILE: u64 = 1 << 40;

/// Identifies a model file: its header, length and the first 4 KiB of every
/// tensor (which tells fine-tunes of one base apart) without reading it all.
pub fn fingerprint(g: &Gguf<'_>) -> [u8; 32] {
    let bytes = g.bytes();
    let mut h = Sha256::new();
    h.update(&bytes[..g.data_offset as usize]);
    h.update((bytes.len() as u64).to_le_bytes());
    for t in g.tensors() {
        let start = t.file_offset as usize;
        h.update(&bytes[start..start + (t.n_bytes as usize).min(4096)]);
    }
    h.finalize().into()
}

fn held(windows: &[Range<usize>], name: &str) -> bool {
    match layer_of(name) {
        Some(l) => windows.iter().any(|w| w.contains(&l)),
        // Rope frequency factors are shared by every layer.
        None => name == "rope_freqs.weight",
    }
}

/// Where a worker keeps the layers `windows` of model `model`.
pub fn cache_path(dir: &Path, model: &[u8; 32], windows: &[Range<usize>]) -> PathBuf {
    // The whole fingerprint: a shorter key could let a file of another
    // model pass for this one's.
    let id = crate::hex(model);
    let w: Vec<String> = windows.iter().map(|w| format!("{}-{}", w.start, w.end)).collect();
    dir.join("layers").join(format!("{id}-{}.gguf", w.join("_")))
}

/// The default cache directory: `$PRIMA_CACHE`, else the user's cache dir.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PRIMA_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .or_else(|| std::env::var_os("LOCALAPPDATA").map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir);
    base.join("prima")
}

/// Head side: sends the GGUF subset holding `windows` to a worker.
pub async fn send(s: &mut Link, g: &Gguf<'_>, windows: &[Range<usize>], peer: &str) -> anyhow::Result<u64> {
    let sub = subset(g, |t| held(windows, t.name));
    let total = sub.file_len;
    let src = g.bytes();
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut sent = 0u64;
    let mut pieces: Vec<&[u8]> = vec![&sub.header];
    let mut at = sub.header.len() as u64;
    // Alignment padding, in pieces of at most 4 KiB (a file's alignment may be larger).
    const ZEROS: &[u8] = &[0; 4096];
    let pad = |pieces: &mut Vec<&[u8]>, mut n: u64| {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64);
            pieces.push(&ZEROS[..k as usize]);
            n -= k;
        }
    };
    for (from, to) in &sub.copies {
        pad(&mut pieces, to.offset - at);
        pieces.push(&src[from.start as usize..from.end as usize]);
        at = to.offset + to.n_bytes;
    }
    pad(&mut pieces, total - at);
    let mut digest = Sha256::new();
    for mut piece in pieces {
        digest.update(piece);
        while !piece.is_empty() {
            let n = piece.len().min(CHUNK - chunk.len());
            chunk.extend_from_slice(&piece[..n]);
            piece = &piece[n..];
            if chunk.len() == CHUNK {
                sent = flush(s, &mut chunk, sent, total, peer).await?;
            }
        }
    }
    if !chunk.is_empty() {
        sent = flush(s, &mut chunk, sent, total, peer).await?;
    }
    debug_assert_eq!(sent, total);
    send_control(s, &Control::WeightsDigest { sha256: digest.finalize().into() }, peer).await?;
    Ok(total)
}

async fn flush(s: &mut Link, chunk: &mut Vec<u8>, offset: u64, total: u64, peer: &str) -> anyhow::Result<u64> {
    let n = chunk.len() as u64;
    let msg = Control::Weights { offset, total, bytes: std::mem::take(chunk) };
    send_control(s, &msg, peer).await?;
    Ok(offset + n)
}

/// A layer file a worker runs from, locked shared for as long as this is
/// held: another worker's clean-up of stale files (in a shared cache
/// directory) takes the lock exclusively, so it passes over files in use.
#[derive(Debug)]
pub struct InUse {
    _locked: std::fs::File,
}

/// The cached layer file at `path`, locked as in use, once its SHA-256
/// matches the one recorded when it was received; `None` when there is none
/// (or a clean-up removed it just now). A file that fails the check is
/// removed, so the head sends it again. Blocking: it may read the whole file.
pub fn use_cached(path: &Path) -> Option<InUse> {
    let f = std::fs::File::open(path).ok()?;
    f.lock_shared().ok()?;
    if !path.exists() {
        return None;
    }
    match verify(path, &f) {
        Ok(()) => Some(InUse { _locked: f }),
        Err(why) => {
            eprintln!("worker: {}: {why}; the head will send it again", path.display());
            drop(f);
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(digest_path(path));
            None
        }
    }
}

/// Where the SHA-256 of the layer file at `path` is kept.
fn digest_path(path: &Path) -> PathBuf {
    path.with_extension("sha256")
}

/// Files this process has checked, with their length and modification
/// time then: a file unchanged since is not read again.
static VERIFIED: std::sync::Mutex<Vec<(PathBuf, u64, std::time::SystemTime)>> = std::sync::Mutex::new(Vec::new());

fn stamp(f: &std::fs::File) -> Option<(u64, std::time::SystemTime)> {
    let m = f.metadata().ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn remember(path: &Path, f: &std::fs::File) {
    let (Some((len, modified)), Ok(mut seen)) = (stamp(f), VERIFIED.lock()) else { return };
    seen.retain(|(p, ..)| p != path);
    seen.push((path.to_path_buf(), len, modified));
}

/// Checks the file `f` at `path` against its recorded SHA-256.
fn verify(path: &Path, f: &std::fs::File) -> Result<(), String> {
    let now = stamp(f);
    let seen = VERIFIED.lock().map(|v| v.iter().any(|(p, l, m)| p == path && now == Some((*l, *m)))).unwrap_or(false);
    if seen {
        return Ok(());
    }
    let recorded = std::fs::read_to_string(digest_path(path)).map_err(|e| format!("no recorded SHA-256 ({e})"))?;
    let mut h = Sha256::new();
    std::io::copy(&mut std::io::BufReader::with_capacity(1 << 20, f), &mut h)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if crate::hex(&h.finalize()) != recorded.trim() {
        return Err("its SHA-256 does not match the one recorded when it was received".into());
    }
    remember(path, f);
    // Read for the check; the layers' own loading decides what stays.
    let _ = crate::os::current().drop_file_cache(f);
    Ok(())
}

/// Worker side: receives the layer file into `path` (via a `.part` file
/// renamed when complete, so a broken transfer never looks cached).
pub async fn receive(s: &mut Link, dec: &mut FrameDecoder, path: &Path) -> anyhow::Result<InUse> {
    let dir = path.parent().ok_or_else(|| anyhow!("bad cache path {}", path.display()))?;
    tokio::fs::create_dir_all(dir).await.with_context(|| format!("cannot create cache directory {}", dir.display()))?;
    // A name of this process and transfer alone: two workers sharing a cache
    // directory (one per NUMA node, or a test) used to write the same
    // `.part` file, and one's rename failed under the other.
    static TRANSFERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = TRANSFERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let part = path.with_extension(format!("{}-{n}.part", std::process::id()));
    let got = receive_into(s, dec, &part, path).await;
    if got.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    let in_use = got?;
    // Other layer files of this model are stale (the plan changed): their
    // page cache would count against this device's memory. Files another
    // worker uses are locked and stay.
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let model = name.split('-').next().unwrap_or_default();
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            let other = e.file_name().to_string_lossy().into_owned();
            // Finished files only: a `.part` is another worker's transfer.
            if other != name && other.starts_with(&format!("{model}-")) && other.ends_with(".gguf") {
                let unused = std::fs::File::open(e.path()).is_ok_and(|f| f.try_lock().is_ok());
                if unused {
                    let _ = tokio::fs::remove_file(e.path()).await;
                    let _ = tokio::fs::remove_file(digest_path(&e.path())).await;
                }
            }
        }
    }
    Ok(in_use)
}

async fn receive_into(s: &mut Link, dec: &mut FrameDecoder, part: &Path, path: &Path) -> anyhow::Result<InUse> {
    let mut f = tokio::fs::File::create(part).await.with_context(|| format!("cannot create {}", part.display()))?;
    let mut written = 0u64;
    let mut expected = None;
    let mut digest = Sha256::new();
    loop {
        let (offset, total, bytes) = match read_control(s, dec, "the head").await? {
            Control::Weights { offset, total, bytes } => (offset, total, bytes),
            other => bail!("expected layer weights from the head, got {other:?}"),
        };
        if total > MAX_FILE || *expected.get_or_insert(total) != total || offset != written || bytes.is_empty() {
            bail!("the head sent a layer-file chunk at {offset} of {total} bytes, out of order or oversized");
        }
        if written == 0 {
            // Refused before a byte is written, rather than a full disk midway.
            let dir = part.parent().unwrap_or(Path::new("."));
            let free = fs4::available_space(dir)
                .with_context(|| format!("cannot read the free space of {}", dir.display()))?;
            if total > free {
                bail!(
                    "the layer file of {:.1} MB does not fit the {:.1} MB free in {}",
                    total as f64 / 1e6,
                    free as f64 / 1e6,
                    dir.display()
                );
            }
        }
        if written + bytes.len() as u64 > total {
            bail!("the head sent more layer bytes than the {total} it announced");
        }
        f.write_all(&bytes).await.with_context(|| format!("cannot write layer cache file {}", part.display()))?;
        digest.update(&bytes);
        written += bytes.len() as u64;
        if written == total {
            break;
        }
    }
    let sha256: [u8; 32] = digest.finalize().into();
    match read_control(s, dec, "the head").await? {
        Control::WeightsDigest { sha256: sent } if sent == sha256 => {}
        Control::WeightsDigest { .. } => {
            bail!("the layer file's SHA-256 does not match the head's: the transfer was corrupted")
        }
        other => bail!("expected the layer file's SHA-256 from the head, got {other:?}"),
    }
    f.sync_all().await.with_context(|| format!("cannot write layer cache file {}", part.display()))?;
    drop(f);
    // The digest is on disk before the file it describes has its name.
    let digest_file = digest_path(path);
    tokio::fs::write(&digest_file, crate::hex(&sha256))
        .await
        .with_context(|| format!("cannot write {}", digest_file.display()))?;
    // Locked before the rename, so the finished file is never unlocked (and
    // after the writes: on Windows a lock also bars other handles' writes).
    let locked = std::fs::File::open(part).with_context(|| format!("cannot open {}", part.display()))?;
    locked.lock_shared().with_context(|| format!("cannot lock {}", part.display()))?;
    tokio::fs::rename(part, path).await.with_context(|| format!("cannot rename {}", part.display()))?;
    remember(path, &locked);
    // The file's written pages are charged to this device's memory; what it
    // keeps resident it reads back ahead of use, the rest it streams.
    crate::os::current().drop_file_cache(&locked).with_context(|| path.display().to_string())?;
    Ok(InUse { _locked: locked })
}
