//! Matrix x activations, split into independent row ranges for the host's
//! threads.

use alloc::vec;
use alloc::vec::Vec;

use core::ops::Range;

use super::{
    GemmFn, GemmRowsFn, GemmWideFn, Kernels, PanelFn, TileFn, GEMM_ROWS, GEMM_TOKENS, GEMM_WIDE_ROWS, PANEL_ROWS, TILE,
};
use crate::parallel::{chunk_size, for_each_chunk_mut, Parallel};
use crate::quant::{ActFormat, GgmlType};

/// A 2-D weight matrix borrowed from the model file: `n_out` rows of `n_in`.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub ty: GgmlType,
    pub n_in: usize,
    pub n_out: usize,
    pub data: &'a [u8],
}

impl<'a> Matrix<'a> {
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.n_in)
    }
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// A batch of activation vectors encoded for one weight type.
#[derive(Debug, Default)]
pub struct Acts {
    pub fmt: Option<ActFormat>,
    pub n: usize,
    pub row_bytes: usize,
    pub data: Vec<u8>,
}

impl Acts {
    /// Encodes `x` (`rows` vectors of `n` floats) as `fmt`, reusing the buffer.
    pub fn encode(&mut self, k: &Kernels, fmt: ActFormat, x: &[f32], n: usize, par: &dyn Parallel) {
        let rows = x.len() / n;
        self.fmt = Some(fmt);
        self.n = n;
        self.row_bytes = fmt.row_bytes(n);
        // The encoder writes every byte, so only new bytes are zeroed.
        self.data.truncate(rows * self.row_bytes);
        self.data.resize(rows * self.row_bytes, 0);
        let rb = self.row_bytes;
        for_each_chunk_mut(par, &mut self.data, rb * rows.div_ceil(par.threads()).max(1), &|start, out| {
            let first = start / rb;
            for (i, o) in out.chunks_exact_mut(rb).enumerate() {
                k.quantize_row(fmt, &x[(first + i) * n..(first + i + 1) * n], o);
            }
        });
    }

    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.row_bytes).unwrap_or(0)
    }

    pub fn row(&self, t: usize) -> &[u8] {
        &self.data[t * self.row_bytes..(t + 1) * self.row_bytes]
    }
}

/// Batches at least this large are split among threads by token, so each
/// thread writes whole output vectors; smaller ones are split by weight row,
/// so the weights are read from memory once.
const SPLIT_BY_TOKEN_FROM: usize = 32;

/// Tokens whose encoded activations are kept hot in L1 while weight rows stream past.
const TOKEN_BLOCK: usize = 16;

/// `out[t][r] = dot(w.row(r), acts.row(t))` for every token `t` and row `r`.
/// `out` holds `acts.rows()` vectors of `w.n_out`. `scratch` is reused.
pub fn matmul(k: &Kernels, w: &Matrix<'_>, acts: &Acts, out: &mut [f32], scratch: &mut Vec<f32>, par: &dyn Parallel) {
    let tile = Products::of(k, w.ty);
    let n_tok = acts.rows();
    debug_assert_eq!(out.len(), n_tok * w.n_out);
    if n_tok >= SPLIT_BY_TOKEN_FROM {
        if let Some(panel) = tile.panel {
            return panel_matmul(panel, tile, w, acts, out, scratch, par);
        }
        let toks_per_task = chunk_size(n_tok, par.threads(), TILE);
        for_each_chunk_mut(par, out, toks_per_task * w.n_out, &|start, o| {
            let t0 = start / w.n_out;
            let n = o.len() / w.n_out;
            for tb in (0..n).step_by(TOKEN_BLOCK) {
                let toks = tb..(tb + TOKEN_BLOCK).min(n);
                tiles(tile, w, acts, 0..w.n_out, t0 + toks.start..t0 + toks.end, false, &mut |r, t, y| {
                    o[(t - t0) * w.n_out + r] = y
                });
            }
        });
        return;
    }
    let rows_per_task = chunk_size(w.n_out, par.threads(), 16);
    if n_tok == 1 {
        for_each_chunk_mut(par, out, rows_per_task, &|r0, o| {
            tiles(tile, w, acts, r0..r0 + o.len(), 0..1, true, |r, _, y| o[r - r0] = y);
        });
        return;
    }
    // Small batches: each task's rows into its own piece of `scratch` as
    // [token][row], then each token's run of rows copied out whole.
    // Every value is written before it is read, so the buffer is only grown.
    let scratch = grown(scratch, w.n_out * n_tok);
    let per_task = rows_per_task * n_tok;
    for_each_chunk_mut(par, scratch, per_task, &|start, o| {
        let (r0, rows) = (start / n_tok, o.len() / n_tok);
        tiles(tile, w, acts, r0..r0 + rows, 0..n_tok, true, |r, t, y| o[t * rows + r - r0] = y);
    });
    for (task, piece) in scratch.chunks(per_task).enumerate() {
        let (r0, rows) = (task * rows_per_task, piece.len() / n_tok);
        for (t, run) in piece.chunks_exact(rows).enumerate() {
            out[t * w.n_out + r0..][..rows].copy_from_slice(run);
        }
    }
}

/// The first `n` values of `scratch`, grown (never shrunk or cleared) to
/// hold them: the callers write every value before reading it.
fn grown(scratch: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if scratch.len() < n {
        scratch.resize(n, 0.0);
    }
    &mut scratch[..n]
}

/// Large batches by a panel product: split by weight row, so each thread
/// reads its rows once for all the tokens. Each task writes its rows into
/// `scratch` as groups of [`PANEL_ROWS`] (fewer at the matrix's end), each
/// laid out `[token][row]`; then each token's row is copied out.
fn panel_matmul(
    panel: PanelFn,
    k: Products,
    w: &Matrix<'_>,
    acts: &Acts,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    par: &dyn Parallel,
) {
    let n_tok = acts.rows();
    let scratch = grown(scratch, w.n_out * n_tok);
    let rows_per_task = chunk_size(w.n_out, par.threads(), PANEL_ROWS);
    for_each_chunk_mut(par, scratch, rows_per_task * n_tok, &|start, piece| {
        let (r0, rows) = (start / n_tok, piece.len() / n_tok);
        let panels = rows / PANEL_ROWS * PANEL_ROWS;
        let (whole, rest) = piece.split_at_mut(panels * n_tok);
        for (p, group) in whole.chunks_exact_mut(PANEL_ROWS * n_tok).enumerate() {
            let first = r0 + p * PANEL_ROWS;
            let wr: [&[u8]; PANEL_ROWS] = core::array::from_fn(|i| w.row(first + i));
            panel(w.n_in, &wr, &acts.data, acts.row_bytes, group.as_chunks_mut().0);
        }
        let (first, width) = (r0 + panels, rows - panels);
        tiles(k, w, acts, first..r0 + rows, 0..n_tok, false, |r, t, y| rest[t * width + r - first] = y);
    });
    let scratch = &*scratch;
    let toks_per_task = chunk_size(n_tok, par.threads(), 1);
    for_each_chunk_mut(par, out, toks_per_task * w.n_out, &|start, o| {
        let t0 = start / w.n_out;
        for (i, row) in o.chunks_exact_mut(w.n_out).enumerate() {
            for g0 in (0..w.n_out).step_by(PANEL_ROWS) {
                let width = PANEL_ROWS.min(w.n_out - g0);
                row[g0..g0 + width].copy_from_slice(&scratch[g0 * n_tok + (t0 + i) * width..][..width]);
            }
        }
    });
}

/// One activation vector times several matrices of one weight type, as a
/// single dispatch over their stacked rows (decode's Q/K/V and gate/up), so
/// threads meet at one barrier instead of one per matrix. `out` receives the
/// products one matrix after another.
pub fn matvec_stacked(k: &Kernels, ws: &[&Matrix<'_>], acts: &Acts, out: &mut [f32], par: &dyn Parallel) {
    debug_assert_eq!(acts.rows(), 1);
    debug_assert!(ws.iter().all(|w| w.ty == ws[0].ty && w.n_in == ws[0].n_in));
    let tile = Products::of(k, ws[0].ty);
    let total: usize = ws.iter().map(|w| w.n_out).sum();
    debug_assert_eq!(out.len(), total);
    let rows_per_task = chunk_size(total, par.threads(), 16);
    for_each_chunk_mut(par, out, rows_per_task, &|r0, o| {
        let mut base = 0;
        for w in ws {
            let (lo, hi) = (r0.max(base), (r0 + o.len()).min(base + w.n_out));
            if lo < hi {
                tiles(tile, w, acts, lo - base..hi - base, 0..1, true, |r, _, y| o[base + r - r0] = y);
            }
            base += w.n_out;
        }
    });
}

/// A weight type's kernels: tiles, and the row-parallel and panel
/// products where there are some.
#[derive(Clone, Copy)]
struct Products {
    tile: TileFn,
    gemm: Option<GemmFn>,
    wide: Option<GemmWideFn>,
    panel: Option<PanelFn>,
}

impl Products {
    fn of(k: &Kernels, ty: GgmlType) -> Self {
        Self { tile: k.tile(ty), gemm: k.gemm(ty), wide: k.gemm_wide(ty), panel: k.panel(ty) }
    }
}

/// Runs the products over `rows` x `toks`, passing each result to
/// `put(row, token, value)`: the aligned groups of [`GEMM_ROWS`] rows by
/// the row-parallel product where the type has one (`prefetch` as
/// [`GemmFn`] says), the rest in [`TILE`]-sized tiles. A row is computed
/// the same way whatever the tokens beside it, so a sequence batched with
/// others gets the logits it gets alone (as long as the row ranges split
/// at multiples of [`GEMM_ROWS`], as `chunk_size` and the matrices of real
/// models do).
fn tiles(
    k: Products,
    w: &Matrix<'_>,
    acts: &Acts,
    rows: Range<usize>,
    toks: Range<usize>,
    prefetch: bool,
    mut put: impl FnMut(usize, usize, f32),
) {
    let Some(gemm) = k.gemm else {
        return tile_rows(k.tile, w, acts, rows, toks, put);
    };
    let aligned = rows.start.next_multiple_of(GEMM_ROWS).min(rows.end);
    let grouped = aligned..aligned + (rows.end - aligned) / GEMM_ROWS * GEMM_ROWS;
    tile_rows(k.tile, w, acts, rows.start..grouped.start, toks.clone(), &mut put);
    tile_rows(k.tile, w, acts, grouped.end..rows.end, toks.clone(), &mut put);
    // 16-row groups where the CPU has them, then 8-row ones.
    let wide_end = match k.wide {
        Some(wide) => {
            let end = grouped.start + grouped.len() / GEMM_WIDE_ROWS * GEMM_WIDE_ROWS;
            for r0 in (grouped.start..end).step_by(GEMM_WIDE_ROWS) {
                row_group(wide, w, acts, r0, toks.clone(), prefetch, &mut put);
            }
            end
        }
        None => grouped.start,
    };
    for r0 in (wide_end..grouped.end).step_by(GEMM_ROWS) {
        row_group(gemm, w, acts, r0, toks.clone(), prefetch, &mut put);
    }
}

/// Rows `r0..r0 + R` times `toks` by the `R`-row product `gemm`.
fn row_group<const R: usize>(
    gemm: GemmRowsFn<R>,
    w: &Matrix<'_>,
    acts: &Acts,
    r0: usize,
    toks: Range<usize>,
    prefetch: bool,
    put: &mut impl FnMut(usize, usize, f32),
) {
    let (wrb, arb) = (w.row_bytes(), acts.row_bytes);
    let wr: [&[u8]; R] = core::array::from_fn(|i| &w.data[(r0 + i) * wrb..(r0 + i + 1) * wrb]);
    let mut out = [[0.0; R]; GEMM_TOKENS];
    for t0 in toks.clone().step_by(GEMM_TOKENS) {
        let t1 = (t0 + GEMM_TOKENS).min(toks.end);
        let mut ar: [&[u8]; GEMM_TOKENS] = [&[]; GEMM_TOKENS];
        for (i, slot) in ar.iter_mut().enumerate().take(t1 - t0) {
            *slot = &acts.data[(t0 + i) * arb..(t0 + i + 1) * arb];
        }
        gemm(w.n_in, &wr, &ar[..t1 - t0], &mut out, prefetch);
        for (t, row) in (t0..t1).zip(&out) {
            for (r, &y) in row.iter().enumerate() {
                put(r0 + r, t, y);
            }
        }
    }
}

/// `rows` x `toks` in [`TILE`]-sized tiles.
fn tile_rows(
    tile: TileFn,
    w: &Matrix<'_>,
    acts: &Acts,
    rows: Range<usize>,
    toks: Range<usize>,
    mut put: impl FnMut(usize, usize, f32),
) {
    let (wrb, arb) = (w.row_bytes(), acts.row_bytes);
    let mut out = [[0.0; TILE]; TILE];
    for r0 in rows.clone().step_by(TILE) {
        let r1 = (r0 + TILE).min(rows.end);
        let mut wr: [&[u8]; TILE] = [&[]; TILE];
        for (i, slot) in wr.iter_mut().enumerate().take(r1 - r0) {
            *slot = &w.data[(r0 + i) * wrb..(r0 + i + 1) * wrb];
        }
        for t0 in toks.clone().step_by(TILE) {
            let t1 = (t0 + TILE).min(toks.end);
            let mut ar: [&[u8]; TILE] = [&[]; TILE];
            for (i, slot) in ar.iter_mut().enumerate().take(t1 - t0) {
                *slot = &acts.data[(t0 + i) * arb..(t0 + i + 1) * arb];
            }
            tile(w.n_in, &wr[..r1 - r0], &ar[..t1 - t0], &mut out);
            for r in r0..r1 {
                for t in t0..t1 {
                    put(r, t, out[r - r0][t - t0]);
                }
            }
        }
    }
}

/// Convenience for one-off products (tests, tools): encodes `x` and multiplies.
pub fn matmul_f32(k: &Kernels, w: &Matrix<'_>, x: &[f32], par: &dyn Parallel) -> Vec<f32> {
    let mut acts = Acts::default();
    acts.encode(k, w.ty.act_format(), x, w.n_in, par);
    let mut out = vec![0.0; acts.rows() * w.n_out];
    matmul(k, w, &acts, &mut out, &mut Vec::new(), par);
    out
}
