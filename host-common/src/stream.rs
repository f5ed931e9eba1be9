//! Layers that do not fit in memory, streamed from the mapped model file:
//! which layers stay resident, and the read-ahead and release around each
//! layer that runs. One device alone and a ring device use the same code.

use prima_core::cost::{ModelCost, RunShape};
use prima_core::halda::{self, STAGING_LAYERS};
use prima_core::profile::PageCacheClass;
use prima_core::{Gguf, KvType, LayerHook, Parts};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::mapped::MappedFile;

/// What a streamed layer's resident head is rounded down to, so that
/// releasing the rest never drops a page of it.
const PAGE: usize = 4096;

/// Most tokens one forward pass carries (prompt batches).
pub const N_BATCH: usize = 512;

/// What a run of `n_ctx` positions, forward passes of up to `n_batch`
/// tokens (capped at [`N_BATCH`]), `kv` cache elements and `threads` asks
/// of a device.
pub fn run_shape(n_ctx: usize, n_batch: usize, kv: KvType, threads: usize) -> RunShape {
    let kv_elem_bytes = match kv {
        KvType::F16 => 2,
        KvType::F32 => 4,
    };
    RunShape { n_ctx, n_batch: n_batch.min(N_BATCH).min(n_ctx), kv_elem_bytes, threads }
}

/// Whether this OS reads ahead while others compute (Halda's `overlaps_disk`).
pub fn prefetches() -> bool {
    crate::os::current().page_cache() != PageCacheClass::Unknown
}

/// Byte ranges of each `blk.N.` layer's tensors in `g`.
pub fn layer_spans(g: &Gguf<'_>) -> BTreeMap<usize, Range<usize>> {
    let mut out: BTreeMap<usize, Range<usize>> = BTreeMap::new();
    for t in g.tensors() {
        if let Some(l) = prima_core::gguf::write::layer_of(t.name) {
            let r = t.file_offset as usize..(t.file_offset + t.n_bytes) as usize;
            let e = out.entry(l).or_insert(r.clone());
            *e = e.start.min(r.start)..e.end.max(r.end);
        }
    }
    out
}

/// Byte ranges of what `parts` runs every token, for reading ahead: the
/// layers it holds for which `resident` says so, and with the output head
/// its tensors (the embedding when tied: it is then read whole each token).
/// An untied embedding is left out: a token reads one row of it.
pub fn model_ranges(g: &Gguf<'_>, parts: &Parts, resident: impl Fn(usize) -> bool) -> Vec<Range<usize>> {
    let tied = g.tensor("output.weight").is_none();
    g.tensors()
        .iter()
        .filter(|t| match prima_core::gguf::write::layer_of(t.name) {
            Some(l) => parts.windows.iter().any(|w| w.contains(&l)) && resident(l),
            None => parts.output && (t.name.starts_with("output") || (tied && t.name == "token_embd.weight")),
        })
        .map(|t| t.file_offset as usize..(t.file_offset + t.n_bytes) as usize)
        .collect()
}

/// A device's memory for one run: what it may fill with its layers'
/// weights and KV cache (Halda's budget, from the same formula), and what
/// one layer's KV cache takes of it.
#[derive(Debug, Clone, Copy)]
pub struct LayerMemory {
    pub budget_bytes: f64,
    pub kv_layer_bytes: f64,
}

impl LayerMemory {
    /// For a device with `available` bytes of memory running `run`; the
    /// head also holds the output head.
    pub fn new(cost: &ModelCost, run: &RunShape, available: u64, head: bool) -> Self {
        let reserve = halda::device_reserve(cost, run, head);
        Self {
            budget_bytes: halda::weight_budget(available, reserve),
            kv_layer_bytes: cost.kv_bytes_per_layer(run) as f64,
        }
    }

    /// What of `order`'s layers (held layers, in the order they run) is
    /// streamed: nothing when they fit; else, after as many bytes as Halda
    /// counts as resident (whole layers in order, then the head of the next
    /// one, to a page), the rest of each layer's bytes.
    pub fn streamed(&self, order: &[usize], spans: &BTreeMap<usize, Range<usize>>) -> BTreeMap<usize, Range<usize>> {
        let size = |l: &usize| spans.get(l).map_or(0, |r| r.len());
        let weights: usize = order.iter().map(size).sum();
        let room = self.budget_bytes - order.len() as f64 * self.kv_layer_bytes;
        let largest = order.iter().map(size).max().unwrap_or(0).max(1);
        let kept = halda::resident_weight_bytes(room.max(0.0), weights as f64, largest as f64, prefetches());
        let mut left = kept as usize;
        let mut streamed = BTreeMap::new();
        for &l in order {
            let Some(span) = spans.get(&l) else { continue };
            // A layer kept whole stays whole; one kept in part keeps its
            // head to a page.
            let keep = if left >= span.len() { span.len() } else { left / PAGE * PAGE };
            left -= left.min(span.len());
            if keep < span.len() {
                streamed.insert(l, span.start + keep..span.end);
            }
        }
        streamed
    }
}

/// The stream of `parts`'s layers in `file` for a device with `memory`:
/// decides what stays resident, starts reading that in, and says on stderr
/// when `who` ("the head", …) streams.
pub fn open<'f>(
    file: &'f MappedFile,
    g: &Gguf<'_>,
    parts: &Parts,
    memory: &LayerMemory,
    who: &str,
) -> anyhow::Result<LayerStream<'f>> {
    let order: Vec<usize> = parts.held().collect();
    let spans = layer_spans(g);
    let streamed = memory.streamed(&order, &spans);
    // Whatever of the streamed bytes is mapped or cached leaves first. A
    // freshly written file is cached in large folios, and a fault maps a
    // whole folio: a first pass over them kept megabytes of each layer's
    // neighbours mapped (a 60 MiB cap peaked at 95 MB).
    file.release_all(streamed.values().cloned())?;
    // What stays resident: whole layers, the output head, and the head of a
    // layer that streams only in part.
    let partial = streamed.iter().filter_map(|(l, s)| spans.get(l).map(|span| span.start..s.start));
    file.load_ahead(model_ranges(g, parts, |l| !streamed.contains_key(&l)).into_iter().chain(partial))?;
    let stream = LayerStream::new(file, order, streamed);
    if stream.streams() {
        let (bytes, _) = stream.streamed_bytes();
        let mib = |b: f64| b / (1u64 << 20) as f64;
        let room = match memory.budget_bytes {
            b if b > 0.0 => format!("{:.0} MiB for weights and KV cache", mib(b)),
            // The run's buffers and the parts that never stream already
            // take more than the memory given: the run will exceed it.
            b => format!(
                "no room for layers: the buffers and the parts that stay resident exceed the memory by {:.0} MiB",
                mib(-b)
            ),
        };
        eprintln!(
            "memory: {who} keeps {} of its {} layers resident and streams {:.0} MiB a pass from disk ({room})",
            stream.resident_count(),
            stream.order.len(),
            mib(bytes as f64),
        );
    }
    Ok(stream)
}

/// The stream of the layers `parts` holds for one device running `run`
/// with the head's parts (it also holds the output head), or `None` when
/// they all stay resident (then read in now). `beside` bytes of the memory
/// available are left to the rest of the process (a draft model). Without
/// a memory figure everything is taken as resident.
pub fn plan<'f>(
    file: &'f MappedFile,
    g: &Gguf<'_>,
    parts: &Parts,
    cost: &ModelCost,
    run: &RunShape,
    who: &str,
    beside: u64,
) -> anyhow::Result<Option<LayerStream<'f>>> {
    let Ok(available) = crate::profiler::system::memory().map(|m| m.available.saturating_sub(beside)) else {
        file.load_ahead(model_ranges(g, parts, |_| true))?;
        return Ok(None);
    };
    let memory = LayerMemory::new(cost, run, available, true);
    let stream = open(file, g, parts, &memory, who)?;
    Ok(stream.streams().then_some(stream))
}

/// Streams the held layers that are not resident: before one runs, its
/// pages are faulted in (timed as disk stall) and the next streamed layers
/// are read ahead, [`STAGING_LAYERS`] in flight at most; after it runs, its
/// pages leave the process and the file cache. Reads wrap round to the
/// first layers, so the next token's first layer is read while this one
/// finishes.
pub struct LayerStream<'f> {
    file: &'f MappedFile,
    /// Held layers in the order they run.
    order: Vec<usize>,
    /// The bytes of each layer that stream (all of it, or its tail); layers
    /// not here stay resident.
    streamed: BTreeMap<usize, Range<usize>>,
    /// Streamed layers read ahead and not yet released, oldest first.
    in_flight: VecDeque<usize>,
    /// The streamed layer released last: a fault in the layer after it can
    /// map back into it (a large page-cache folio maps whole), so it is
    /// released again after that layer runs.
    released: Option<usize>,
    /// Time spent waiting for streamed pages.
    pub disk: Duration,
    /// The first failed OS call, reported after the layer that hit it.
    error: Option<anyhow::Error>,
}

impl<'f> LayerStream<'f> {
    pub fn new(file: &'f MappedFile, order: Vec<usize>, streamed: BTreeMap<usize, Range<usize>>) -> Self {
        Self { file, order, streamed, in_flight: VecDeque::new(), released: None, disk: Duration::ZERO, error: None }
    }

    /// Whether any held layer is streamed.
    pub fn streams(&self) -> bool {
        !self.streamed.is_empty()
    }

    /// Held layers that stay wholly resident.
    pub fn resident_count(&self) -> usize {
        self.order.iter().filter(|l| !self.streamed.contains_key(l)).count()
    }

    /// Bytes of the held layers that stream, and of the largest
    /// [`STAGING_LAYERS`] of them (what is in memory of them at once).
    pub fn streamed_bytes(&self) -> (u64, u64) {
        let mut sizes: Vec<u64> = self.streamed.values().map(|r| r.len() as u64).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        (sizes.iter().sum(), sizes.iter().take(STAGING_LAYERS).sum())
    }

    fn streamed(&self, l: usize) -> bool {
        self.streamed.contains_key(&l)
    }

    /// The streamed layer that runs next after `l`, wrapping round.
    fn next_streamed(&self, l: usize) -> Option<usize> {
        let at = self.order.iter().position(|&x| x == l)?;
        let n = self.order.len();
        (1..=n).map(|i| self.order[(at + i) % n]).find(|&x| self.streamed(x))
    }

    /// Reads ahead until [`STAGING_LAYERS`] streamed layers are in flight.
    fn top_up(&mut self, from: usize) {
        while self.in_flight.len() < STAGING_LAYERS {
            let after = self.in_flight.back().copied().unwrap_or(from);
            let Some(next) = self.next_streamed(after) else { return };
            if self.in_flight.contains(&next) {
                return;
            }
            self.in_flight.push_back(next);
            let span = self.streamed[&next].clone();
            self.note(self.file.prefetch(span));
        }
    }

    fn note(&mut self, r: anyhow::Result<()>) {
        if let Err(e) = r {
            self.error.get_or_insert(e);
        }
    }

    /// The first OS call that failed since the last check.
    pub fn take_error(&mut self) -> anyhow::Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }

    /// Touches one byte per page of layer `l`, so its disk reads happen
    /// here, timed, rather than inside the kernels.
    fn fault_in(&mut self, l: usize) {
        let t = Instant::now();
        let mut sum = 0u8;
        for b in self.file.bytes()[self.streamed[&l].clone()].iter().step_by(PAGE) {
            sum = sum.wrapping_add(*b);
        }
        std::hint::black_box(sum);
        self.disk += t.elapsed();
    }
}

impl LayerHook for LayerStream<'_> {
    fn before(&mut self, layer: usize) {
        if !self.streamed(layer) {
            return;
        }
        if !self.in_flight.contains(&layer) {
            self.in_flight.push_front(layer);
        }
        self.fault_in(layer);
        self.top_up(layer);
    }

    fn after(&mut self, layer: usize) {
        if !self.streamed(layer) {
            return;
        }
        self.in_flight.retain(|&l| l != layer);
        let span = self.streamed[&layer].clone();
        self.note(self.file.release(span));
        if let Some(before) = self.released.replace(layer).filter(|l| *l != layer && !self.in_flight.contains(l)) {
            let span = self.streamed[&before].clone();
            self.note(self.file.release(span));
        }
        self.top_up(layer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(n: usize, size: usize) -> BTreeMap<usize, Range<usize>> {
        (0..n).map(|l| (l, l * size..(l + 1) * size)).collect()
    }

    #[test]
    fn everything_stays_when_it_fits_and_staging_is_left_when_not() {
        let order: Vec<usize> = (0..8).collect();
        let s = spans(8, 10 * PAGE);
        let fits = LayerMemory { budget_bytes: 90.0 * PAGE as f64, kv_layer_bytes: PAGE as f64 };
        assert!(fits.streamed(&order, &s).is_empty());
        // 74.5 pages of room after the KV cache: 7 whole layers and 4 pages
        // of the next, less the staging area.
        let short = LayerMemory { budget_bytes: 82.5 * PAGE as f64, kv_layer_bytes: PAGE as f64 };
        let streamed = short.streamed(&order, &s);
        let whole = if prefetches() { 7 - STAGING_LAYERS } else { 7 };
        assert_eq!(streamed.keys().copied().collect::<Vec<_>>(), (whole..8).collect::<Vec<_>>());
        // The first streamed layer keeps its first 4 pages; the others stream whole.
        assert_eq!(streamed[&whole], whole * 10 * PAGE + 4 * PAGE..(whole + 1) * 10 * PAGE);
        for l in whole + 1..8 {
            assert_eq!(streamed[&l], s[&l]);
        }
        let none = LayerMemory { budget_bytes: -5.0, kv_layer_bytes: 10.0 };
        assert_eq!(none.streamed(&order, &s).len(), 8);
    }
}
