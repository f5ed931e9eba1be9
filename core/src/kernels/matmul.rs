//! Matrix x activations, split into independent row ranges for the host's
//! threads.

use alloc::vec;
use alloc::vec::Vec;

use super::Kernels;
use crate::parallel::{chunk_size, for_each_chunk_mut, Parallel};
use crate::quant::{q8::quantize_row, ActFormat, GgmlType};

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
    pub fn encode(&mut self, fmt: ActFormat, x: &[f32], n: usize, par: &dyn Parallel) {
        let rows = x.len() / n;
        self.fmt = Some(fmt);
        self.n = n;
        self.row_bytes = fmt.row_bytes(n);
        self.data.clear();
        self.data.resize(rows * self.row_bytes, 0);
        let rb = self.row_bytes;
        for_each_chunk_mut(par, &mut self.data, rb * rows.div_ceil(par.threads()).max(1), &|start, out| {
            let first = start / rb;
            for (i, o) in out.chunks_exact_mut(rb).enumerate() {
                quantize_row(fmt, &x[(first + i) * n..(first + i + 1) * n], o);
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

/// `out[t][r] = dot(w.row(r), acts.row(t))` for every token `t` and row `r`.
/// `out` holds `acts.rows()` vectors of `w.n_out`. `scratch` is reused.
pub fn matmul(k: &Kernels, w: &Matrix<'_>, acts: &Acts, out: &mut [f32], scratch: &mut Vec<f32>, par: &dyn Parallel) {
    let dot = k.dot(w.ty);
    let n_tok = acts.rows();
    debug_assert_eq!(out.len(), n_tok * w.n_out);
    if n_tok == 1 {
        let chunk = chunk_size(w.n_out, par.threads(), 16);
        for_each_chunk_mut(par, out, chunk, &|r0, o| {
            for (i, y) in o.iter_mut().enumerate() {
                *y = dot(w.n_in, w.row(r0 + i), acts.row(0));
            }
        });
        return;
    }
    // Row-major by weight row so each row is read once and reused across the batch.
    scratch.clear();
    scratch.resize(w.n_out * n_tok, 0.0);
    let rows_per_chunk = chunk_size(w.n_out, par.threads(), 4);
    for_each_chunk_mut(par, scratch, rows_per_chunk * n_tok, &|start, o| {
        let r0 = start / n_tok;
        for (i, row_out) in o.chunks_exact_mut(n_tok).enumerate() {
            let wr = w.row(r0 + i);
            for (t, y) in row_out.iter_mut().enumerate() {
                *y = dot(w.n_in, wr, acts.row(t));
            }
        }
    });
    for t in 0..n_tok {
        for r in 0..w.n_out {
            out[t * w.n_out + r] = scratch[r * n_tok + t];
        }
    }
}

/// Convenience for one-off products (tests, tools): encodes `x` and multiplies.
pub fn matmul_f32(k: &Kernels, w: &Matrix<'_>, x: &[f32], par: &dyn Parallel) -> Vec<f32> {
    let mut acts = Acts::default();
    acts.encode(w.ty.act_format(), x, w.n_in, par);
    let mut out = vec![0.0; acts.rows() * w.n_out];
    matmul(k, w, &acts, &mut out, &mut Vec::new(), par);
    out
}
