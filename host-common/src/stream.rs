//! Layers that do not fit in memory, streamed from the mapped model file:
//! which layers stay resident, and the read-ahead and release around each
//! layer that runs. One device alone and a ring device use the same code.

use prima_core::cost::{ModelCost, RunShape};
use prima_core::halda::{self, STAGING_LAYERS};
use prima_core::profile::PageCacheClass;
use prima_core::{Gguf, KvType, LayerHook, Parts};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::mapped::MappedFile;

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

    /// The layers of `order` (held layers, in the order they run) that stay
    /// resident: all when they fit, else whole layers in order up to what
    /// Halda counts as resident, leaving room to stream the rest through.
    pub fn resident(&self, order: &[usize], spans: &BTreeMap<usize, Range<usize>>) -> BTreeSet<usize> {
        let size = |l: &usize| spans.get(l).map_or(0, |r| r.len()) as f64;
        let weights: f64 = order.iter().map(size).sum();
        let room = self.budget_bytes - order.len() as f64 * self.kv_layer_bytes;
        let largest = order.iter().map(size).fold(0.0, f64::max);
        let mut left = halda::resident_weight_bytes(room.max(0.0), weights, largest.max(1.0), prefetches());
        let mut kept = BTreeSet::new();
        for &l in order {
            if size(&l) > left {
                break;
            }
            left -= size(&l);
            kept.insert(l);
        }
        kept
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
    let resident = memory.resident(&order, &spans);
    file.load_ahead(model_ranges(g, parts, |l| resident.contains(&l)))?;
    if resident.len() < order.len() {
        eprintln!(
            "memory: {who} keeps {} of its {} layers resident, the rest stream from disk ({:.0} MiB for weights and KV cache)",
            resident.len(),
            order.len(),
            memory.budget_bytes / (1u64 << 20) as f64
        );
    }
    Ok(LayerStream::new(file, order, spans, resident))
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
    spans: BTreeMap<usize, Range<usize>>,
    resident: BTreeSet<usize>,
    /// Streamed layers read ahead and not yet released, oldest first.
    in_flight: VecDeque<usize>,
    /// Time spent waiting for streamed pages.
    pub disk: Duration,
    /// The first failed OS call, reported after the layer that hit it.
    error: Option<anyhow::Error>,
}

impl<'f> LayerStream<'f> {
    pub fn new(
        file: &'f MappedFile,
        order: Vec<usize>,
        spans: BTreeMap<usize, Range<usize>>,
        resident: BTreeSet<usize>,
    ) -> Self {
        Self { file, order, spans, resident, in_flight: VecDeque::new(), disk: Duration::ZERO, error: None }
    }

    /// Whether any held layer is streamed.
    pub fn streams(&self) -> bool {
        self.order.iter().any(|l| !self.resident.contains(l))
    }

    pub fn resident_count(&self) -> usize {
        self.resident.len()
    }

    /// Bytes of the held layers that stream, and of the largest
    /// [`STAGING_LAYERS`] of them (what is in memory of them at once).
    pub fn streamed_bytes(&self) -> (u64, u64) {
        let mut sizes: Vec<u64> =
            self.order.iter().filter(|l| self.streamed(**l)).map(|l| self.spans[l].len() as u64).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        (sizes.iter().sum(), sizes.iter().take(STAGING_LAYERS).sum())
    }

    fn streamed(&self, l: usize) -> bool {
        !self.resident.contains(&l) && self.spans.contains_key(&l)
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
            let span = self.spans[&next].clone();
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
        for b in self.file.bytes()[self.spans[&l].clone()].iter().step_by(4096) {
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
        let span = self.spans[&layer].clone();
        self.note(self.file.release(span));
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
        let s = spans(8, 100);
        let fits = LayerMemory { budget_bytes: 900.0, kv_layer_bytes: 10.0 };
        assert_eq!(fits.resident(&order, &s).len(), 8);
        // 780 bytes of room after the KV cache: 7 whole layers, less the staging.
        let short = LayerMemory { budget_bytes: 860.0, kv_layer_bytes: 10.0 };
        let kept = short.resident(&order, &s);
        let expect = if prefetches() { 7 - STAGING_LAYERS } else { 7 };
        assert_eq!(kept, (0..expect).collect());
        let none = LayerMemory { budget_bytes: -5.0, kv_layer_bytes: 10.0 };
        assert!(none.resident(&order, &s).is_empty());
    }
}
