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

/// One layer's keys or values: `[position][kv_head * head_dim]`.
#[derive(Debug)]
enum Rows {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Rows {
    fn view(&self) -> RowsRef<'_> {
        match self {
            Rows::F16(d) => RowsRef::F16(d),
            Rows::F32(d) => RowsRef::F32(d),
        }
    }
}

/// A read-only view of one layer's keys or values.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RowsRef<'a> {
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

    /// Stores the keys and values of positions `pos0 ..` of `layer`.
    pub(crate) fn write(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let j = self.slot(layer);
        let at = pos0 * self.kv_dim;
        for (rows, src) in [(&mut self.k[j], k), (&mut self.v[j], v)] {
            match rows {
                Rows::F16(d) => d[at..at + src.len()].iter_mut().zip(src).for_each(|(d, s)| *d = f16::from_f32(*s)),
                Rows::F32(d) => d[at..at + src.len()].copy_from_slice(src),
            }
        }
    }

    /// Keys and values of `layer`.
    pub(crate) fn layer(&self, layer: usize) -> (RowsRef<'_>, RowsRef<'_>) {
        let j = self.slot(layer);
        (self.k[j].view(), self.v[j].view())
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

impl RowsRef<'_> {
    /// Elements held (every row the cache can hold, filled or not).
    pub(crate) fn len(&self) -> usize {
        match self {
            RowsRef::F16(d) => d.len(),
            RowsRef::F32(d) => d.len(),
        }
    }

    /// Whether values are stored as f16 (the reference engine then rounds
    /// what meets them to f16 too).
    pub(crate) fn is_f16(&self) -> bool {
        matches!(self, RowsRef::F16(_))
    }

    /// Elements `range` as f32.
    pub(crate) fn widen(&self, k: &Kernels, range: Range<usize>, out: &mut [f32]) {
        match self {
            RowsRef::F16(d) => k.f16_to_f32(&d[range], out),
            RowsRef::F32(d) => out.copy_from_slice(&d[range]),
        }
    }

    /// `sum(rows[range] * q)`.
    pub(crate) fn dot(&self, k: &Kernels, range: Range<usize>, q: &[f32]) -> f32 {
        match self {
            RowsRef::F16(d) => k.dot_f16_f32(&d[range], q),
            RowsRef::F32(d) => {
                let mut score = [0.0];
                k.dot_rows(q, &d[range], &mut score);
                score[0]
            }
        }
    }

    /// `out[i]` = `q` · the `q.len()` values at `offset` of row `first + i`,
    /// as [`Self::dot`] computes each (`stride`: values per row).
    pub(crate) fn dots(&self, k: &Kernels, (first, offset, stride): (usize, usize, usize), q: &[f32], out: &mut [f32]) {
        match self {
            RowsRef::F16(d) => k.dot_f16_strided(q, &d[first * stride + offset..], stride, out),
            RowsRef::F32(_) => {
                for (i, o) in out.iter_mut().enumerate() {
                    let at = (first + i) * stride + offset;
                    *o = self.dot(k, at..at + q.len(), q);
                }
            }
        }
    }

    /// `out` = Σ `p[i]` × the `out.len()` values at `offset` of row
    /// `first + i`, as [`Self::axpy`] from zero computes it.
    pub(crate) fn weighted(
        &self,
        k: &Kernels,
        (first, offset, stride): (usize, usize, usize),
        p: &[f32],
        out: &mut [f32],
    ) {
        match self {
            RowsRef::F16(d) => k.weighted_sum_f16(p, &d[first * stride + offset..], stride, out),
            RowsRef::F32(_) => {
                out.fill(0.0);
                for (i, &pi) in p.iter().enumerate() {
                    let at = (first + i) * stride + offset;
                    self.axpy(k, out, pi, at..at + out.len());
                }
            }
        }
    }

    /// [`Self::dots`] for the `qs.len() / hd` queries of `qs` at once:
    /// `out[i * n + j]` for query `i` and row `first + j`.
    pub(crate) fn dots_multi(&self, k: &Kernels, rows: (usize, usize, usize), qs: &[f32], hd: usize, out: &mut [f32]) {
        let (first, offset, stride) = rows;
        match self {
            RowsRef::F16(d) => k.dot_f16_strided_multi(qs, hd, &d[first * stride + offset..], stride, out),
            RowsRef::F32(_) => {
                let n = out.len() / (qs.len() / hd).max(1);
                for (q, o) in qs.chunks_exact(hd).zip(out.chunks_exact_mut(n.max(1))) {
                    self.dots(k, rows, q, o);
                }
            }
        }
    }

    /// [`Self::weighted`] for `ps.len()` queries at once, into rows of
    /// `outs.len() / ps.len()` values.
    pub(crate) fn weighted_multi(&self, k: &Kernels, rows: (usize, usize, usize), ps: &[&[f32]], outs: &mut [f32]) {
        let (first, offset, stride) = rows;
        match self {
            RowsRef::F16(d) => k.weighted_sum_f16_multi(ps, &d[first * stride + offset..], stride, outs),
            RowsRef::F32(_) => {
                let cols = outs.len() / ps.len().max(1);
                for (p, o) in ps.iter().zip(outs.chunks_exact_mut(cols.max(1))) {
                    self.weighted(k, rows, p, o);
                }
            }
        }
    }

    /// `out += p * rows[range]`.
    pub(crate) fn axpy(&self, k: &Kernels, out: &mut [f32], p: f32, range: Range<usize>) {
        match self {
            RowsRef::F16(d) => k.axpy_f16(out, p, &d[range]),
            RowsRef::F32(d) => k.axpy_f32(out, p, &d[range]),
        }
    }
}
