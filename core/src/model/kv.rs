use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;
use half::f16;

use crate::kernels::Kernels;

/// The element type of a [`KvCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// Half the memory; what the reference engine stores, so results match it.
    #[default]
    F16,
    /// Exact keys and values, at twice the memory.
    F32,
}

/// One layer's keys or values, head-major: `[kv_head][position][head_dim]`,
/// so each head's rows are contiguous and decode attention streams them.
#[derive(Debug)]
enum Rows {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Rows {
    fn view(&self, head_dim: usize, n_ctx: usize) -> RowsRef<'_> {
        let data = match self {
            Rows::F16(d) => Elems::F16(d),
            Rows::F32(d) => Elems::F32(d),
        };
        RowsRef { data, head_dim, n_ctx }
    }
}

/// A read-only view of one layer's keys or values, laid out as [`Rows`]
/// (`n_ctx` positions per head).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowsRef<'a> {
    data: Elems<'a>,
    head_dim: usize,
    n_ctx: usize,
}

#[derive(Debug, Clone, Copy)]
enum Elems<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
}

/// Keys and values for the layers a device runs.
#[derive(Debug)]
pub struct KvCache {
    /// The layers held, as in [`super::Parts::windows`].
    pub windows: Vec<Range<usize>>,
    pub n_ctx: usize,
    pub kv_dim: usize,
    pub ty: KvType,
    k: Vec<Rows>,
    v: Vec<Rows>,
    /// Number of positions filled.
    pub len: usize,
}

impl KvCache {
    /// An f16 cache, as the reference engine keeps.
    pub fn new(layers: Range<usize>, n_ctx: usize, kv_dim: usize) -> Self {
        Self::with_type(vec![layers], n_ctx, kv_dim, KvType::F16)
    }

    /// A cache for the layers of `windows` only.
    pub fn with_type(windows: Vec<Range<usize>>, n_ctx: usize, kv_dim: usize, ty: KvType) -> Self {
        let rows = || match ty {
            KvType::F16 => Rows::F16(vec![f16::ZERO; n_ctx * kv_dim]),
            KvType::F32 => Rows::F32(vec![0.0; n_ctx * kv_dim]),
        };
        let n = windows.iter().map(|w| w.len()).sum();
        Self {
            windows,
            n_ctx,
            kv_dim,
            ty,
            k: (0..n).map(|_| rows()).collect(),
            v: (0..n).map(|_| rows()).collect(),
            len: 0,
        }
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Forgets positions from `pos` on.
    pub fn truncate(&mut self, pos: usize) {
        self.len = self.len.min(pos);
    }

    /// Where `layer`'s rows are kept; the caller has checked [`Self::holds`].
    fn slot(&self, layer: usize) -> usize {
        let mut before = 0;
        for w in &self.windows {
            if w.contains(&layer) {
                return before + layer - w.start;
            }
            before += w.len();
        }
        unreachable!("layer {layer} is not in this cache")
    }

    /// Whether every layer of `range` has rows here.
    pub fn holds(&self, range: &Range<usize>) -> bool {
        range.is_empty() || self.windows.iter().any(|w| w.start <= range.start && range.end <= w.end)
    }

    /// Stores the keys and values of positions `pos0 ..` of `layer`, given
    /// as rows of `kv_dim` (heads of `head_dim` side by side).
    pub(crate) fn write(&mut self, layer: usize, pos0: usize, head_dim: usize, k: &[f32], v: &[f32]) {
        let (j, n_ctx) = (self.slot(layer), self.n_ctx);
        for (rows, src) in [(&mut self.k[j], k), (&mut self.v[j], v)] {
            for (t, row) in src.chunks_exact(self.kv_dim).enumerate() {
                for (g, head) in row.chunks_exact(head_dim).enumerate() {
                    let at = (g * n_ctx + pos0 + t) * head_dim;
                    match rows {
                        Rows::F16(d) => {
                            d[at..at + head_dim].iter_mut().zip(head).for_each(|(d, s)| *d = f16::from_f32(*s))
                        }
                        Rows::F32(d) => d[at..at + head_dim].copy_from_slice(head),
                    }
                }
            }
        }
    }

    /// Keys and values of `layer`, in heads of `head_dim`.
    pub(crate) fn layer(&self, layer: usize, head_dim: usize) -> (RowsRef<'_>, RowsRef<'_>) {
        let j = self.slot(layer);
        (self.k[j].view(head_dim, self.n_ctx), self.v[j].view(head_dim, self.n_ctx))
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        Self::bytes_for(&self.windows, self.n_ctx, self.kv_dim, self.ty) as usize
    }

    /// Bytes a cache of this shape would hold, computed without overflow
    /// (a peer's request is checked with it before anything is allocated).
    pub fn bytes_for(windows: &[Range<usize>], n_ctx: usize, kv_dim: usize, ty: KvType) -> u64 {
        let elem: u64 = match ty {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        let layers: u64 = windows.iter().map(|w| w.len() as u64).sum();
        layers.saturating_mul(n_ctx as u64).saturating_mul(kv_dim as u64).saturating_mul(2 * elem)
    }
}

impl<'a> RowsRef<'a> {
    /// A view of f16 rows laid out as [`Rows`].
    #[cfg(test)]
    pub(crate) fn f16(data: &'a [f16], head_dim: usize, n_ctx: usize) -> Self {
        Self { data: Elems::F16(data), head_dim, n_ctx }
    }

    /// A view of f32 rows laid out as [`Rows`].
    #[cfg(test)]
    pub(crate) fn f32(data: &'a [f32], head_dim: usize, n_ctx: usize) -> Self {
        Self { data: Elems::F32(data), head_dim, n_ctx }
    }

    /// Positions each head can hold.
    pub(crate) fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Whether values are stored as f16 (the reference engine then rounds
    /// what meets them to f16 too).
    pub(crate) fn is_f16(&self) -> bool {
        matches!(self.data, Elems::F16(_))
    }

    /// Where head `g`'s row at `pos` starts.
    fn at(&self, g: usize, pos: usize) -> usize {
        (g * self.n_ctx + pos) * self.head_dim
    }

    /// Head `g`'s rows `rows`, widened to f32 into `out` (one after another).
    pub(crate) fn widen(&self, k: &Kernels, g: usize, rows: Range<usize>, out: &mut [f32]) {
        let span = self.at(g, rows.start)..self.at(g, rows.end);
        match self.data {
            Elems::F16(d) => k.f16_to_f32(&d[span], out),
            Elems::F32(d) => out.copy_from_slice(&d[span]),
        }
    }

    /// `out[i * n + j]` = query `i` of `qs` (rows of `head_dim`) · head `g`'s
    /// row `first + j`, each as one query's product alone.
    pub(crate) fn dots_multi(&self, k: &Kernels, g: usize, first: usize, qs: &[f32], out: &mut [f32]) {
        let (hd, at) = (self.head_dim, self.at(g, first));
        let n = out.len() / (qs.len() / hd).max(1);
        match self.data {
            Elems::F16(d) => k.dot_f16_strided_multi(qs, hd, &d[at..at + n * hd], hd, out),
            Elems::F32(d) => {
                for (q, o) in qs.chunks_exact(hd).zip(out.chunks_exact_mut(n.max(1))) {
                    k.dot_rows(q, &d[at..at + n * hd], o);
                }
            }
        }
    }

    /// `outs[i]` = Σ_j `ps[i][j]` × columns `cols` of head `g`'s row
    /// `first + j`, each as one query's sum alone.
    pub(crate) fn weighted_multi(
        &self,
        k: &Kernels,
        (g, first): (usize, usize),
        cols: Range<usize>,
        ps: &[&[f32]],
        outs: &mut [f32],
    ) {
        let (hd, m) = (self.head_dim, ps.first().map_or(0, |p| p.len()));
        let from = self.at(g, first) + cols.start;
        match self.data {
            Elems::F16(d) => k.weighted_sum_f16_multi(ps, &d[from..from + m * hd - cols.start], hd, outs),
            Elems::F32(d) => {
                for (p, o) in ps.iter().zip(outs.chunks_exact_mut(cols.len().max(1))) {
                    o.fill(0.0);
                    for (j, &pj) in p.iter().enumerate() {
                        k.axpy_f32(o, pj, &d[from + j * hd..][..cols.len()]);
                    }
                }
            }
        }
    }
}
