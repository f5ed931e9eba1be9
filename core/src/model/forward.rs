use alloc::vec::Vec;
use core::ops::Range;

use super::attention::{attend, attend_short, Heads, SeqAttn, SEQS_AT_ONCE};
use super::ops::{rms_norm, rms_norm_in_place, Rope};
use super::{KvCache, Model, ModelError};
use crate::kernels::matmul::{matmul, matvec_stacked, Acts, Matrix};
use crate::parallel::{for_each_chunk_mut, Parallel};
use crate::quant::dequant::dequantize_row;

/// One sequence's share of a batched forward pass: `n_tok` consecutive
/// rows of the hidden states, at positions `pos0 ..` of its cache `kv`.
#[derive(Debug)]
pub struct SeqRows<'k> {
    pub kv: &'k mut KvCache,
    pub pos0: usize,
    pub n_tok: usize,
}

/// Buffers reused across forward passes, so steady-state decoding does not allocate.
#[derive(Debug, Default)]
pub struct Workspace {
    norm: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    proj: Vec<f32>,
    acts: Acts,
    scratch: Vec<f32>,
    attn_scratch: Vec<f32>,
    angles: Vec<(f32, f32)>,
    angles_swa: Vec<(f32, f32)>,
}

/// Runs `f(first_row, rows)` over `buf`'s rows of `row_len`, split among
/// threads when the batch is big enough to repay the hand-off.
fn by_rows(par: &dyn Parallel, buf: &mut [f32], row_len: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    let n_rows = buf.len() / row_len.max(1);
    let per_task = if n_rows < 8 { n_rows.max(1) } else { n_rows.div_ceil(par.threads()) };
    for_each_chunk_mut(par, buf, per_task * row_len, &|start, rows| f(start / row_len, rows));
}

/// RMS-normalizes each row of `rows` in place by `w`, when there is a norm.
fn post_norm(par: &dyn Parallel, rows: &mut [f32], w: Option<&[f32]>, n_embd: usize, eps: f32) {
    let Some(w) = w else { return };
    by_rows(par, rows, n_embd, &|_, rows| rows.chunks_exact_mut(n_embd).for_each(|r| rms_norm_in_place(r, w, eps)));
}

/// (cos, sin) of every row's position, `rope_dim / 2` pairs a row.
fn fill_angles(out: &mut Vec<(f32, f32)>, rope: &Rope<'_>, seqs: &[SeqRows<'_>], rope_dim: usize) {
    let half = (rope_dim / 2).max(1);
    out.clear();
    out.resize(seqs.iter().map(|s| s.n_tok).sum::<usize>() * half, (0.0, 0.0));
    let positions = seqs.iter().flat_map(|s| s.pos0..s.pos0 + s.n_tok);
    for (pos, cs) in positions.zip(out.chunks_exact_mut(half)) {
        rope.angles(pos, cs);
    }
}

fn resize(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buf.clear();
    buf.resize(n, 0.0);
    buf
}

/// `buf` as `n` values that the caller writes, every one, before reading
/// any: only values it did not hold before are zeroed (a prompt's
/// feed-forward buffers are tens of MiB, and clearing them cost 1.5% of
/// an 8B-shaped prompt on one thread).
fn overwritten(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buf.truncate(n);
    buf.resize(n, 0.0);
    buf
}

impl Model<'_> {
    /// The rotation of the model's layers; sliding-window layers (`swa`)
    /// rotate with their own base, unscaled.
    pub fn rope(&self, swa: bool) -> Rope<'_> {
        let c = &self.config;
        let rope = Rope {
            kind: c.rope_kind,
            dims: c.rope_dim,
            base: c.rope_base,
            freq_scale: c.rope_freq_scale,
            freq_factors: self.rope_freqs.as_deref(),
            yarn: c.yarn,
            mscale: c.rope_mscale,
        };
        if swa {
            Rope { base: c.rope_base_swa, freq_scale: 1.0, freq_factors: None, yarn: None, mscale: 1.0, ..rope }
        } else {
            rope
        }
    }

    /// Looks up the embedding rows of `tokens` into `out` (`tokens.len() * n_embd`).
    pub fn embed(&self, tokens: &[u32], out: &mut [f32]) -> Result<(), ModelError> {
        let emb = self.token_embd.as_ref().filter(|_| self.parts.embedding);
        let emb = emb.ok_or(ModelError::PartNotLoaded { part: "token embedding" })?;
        let n = self.config.n_embd;
        for (&t, o) in tokens.iter().zip(out.chunks_exact_mut(n)) {
            if t as usize >= self.config.n_vocab {
                return Err(ModelError::TokenOutOfRange { token: t, n_vocab: self.config.n_vocab });
            }
            dequantize_row(emb.ty, emb.row(t as usize), o)
                .map_err(|_| ModelError::UnsupportedTensorType { name: "token_embd.weight".into(), ty: emb.ty })?;
            if self.config.scales_embeddings() {
                let scale = libm::sqrtf(n as f32);
                o.iter_mut().for_each(|v| *v *= scale);
            }
        }
        Ok(())
    }

    /// Runs layers `range` on the hidden states `x` (`n_tok * n_embd`) of tokens
    /// at positions `kv.len ..`, appending their keys and values to `kv`.
    pub fn forward_layers(
        &self,
        range: Range<usize>,
        kv: &mut KvCache,
        x: &mut [f32],
        ws: &mut Workspace,
        par: &dyn Parallel,
    ) -> Result<(), ModelError> {
        let pos0 = kv.len;
        self.forward_layers_at(range, pos0, kv, x, ws, par)
    }

    /// [`Self::forward_layers`] for tokens at positions `pos0 ..`, which a ring
    /// device needs: it runs one token batch through several windows, and
    /// the cache's length moves on only after the first.
    pub fn forward_layers_at(
        &self,
        range: Range<usize>,
        pos0: usize,
        kv: &mut KvCache,
        x: &mut [f32],
        ws: &mut Workspace,
        par: &dyn Parallel,
    ) -> Result<(), ModelError> {
        let n_tok = x.len() / self.config.n_embd;
        self.forward_seqs(range, &mut [SeqRows { kv, pos0, n_tok }], x, ws, par)
    }

    /// Runs layers `range` on the hidden states `x` of several sequences at
    /// once: `seqs` in order own consecutive rows of `x`, each at its own
    /// positions in its own cache. The matrix products run over all rows
    /// together (one read of the weights for every sequence); attention
    /// runs per sequence.
    pub fn forward_seqs(
        &self,
        range: Range<usize>,
        seqs: &mut [SeqRows<'_>],
        x: &mut [f32],
        ws: &mut Workspace,
        par: &dyn Parallel,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let n_rows = x.len() / c.n_embd;
        if seqs.iter().map(|s| s.n_tok).sum::<usize>() != n_rows {
            return Err(ModelError::BatchRows { rows: n_rows, claimed: seqs.iter().map(|s| s.n_tok).sum() });
        }
        for s in seqs.iter() {
            if s.pos0 > s.kv.len {
                return Err(ModelError::PositionGap { pos0: s.pos0, filled: s.kv.len });
            }
            if s.pos0 + s.n_tok > s.kv.n_ctx {
                return Err(ModelError::ContextOverflow { needed: s.pos0 + s.n_tok, n_ctx: s.kv.n_ctx });
            }
            if !(self.parts.holds(&range) && s.kv.holds(&range)) || range.start > range.end {
                return Err(ModelError::LayerRange { start: range.start, end: range.end, n_layer: c.n_layer });
            }
        }
        let rope = self.rope(false);
        // The angle tables are the workspace's, taken for the loop and put back.
        let (mut angles, mut angles_swa) = (core::mem::take(&mut ws.angles), core::mem::take(&mut ws.angles_swa));
        fill_angles(&mut angles, &rope, seqs, c.rope_dim);
        if range.clone().any(|il| c.is_swa(il)) {
            fill_angles(&mut angles_swa, &self.rope(true), seqs, c.rope_dim);
        }
        for il in range {
            let angles = if c.is_swa(il) { &angles_swa } else { &angles };
            self.layer_forward(il, seqs, x, angles, &rope, ws, par);
        }
        (ws.angles, ws.angles_swa) = (angles, angles_swa);
        for s in seqs.iter_mut() {
            s.kv.len = s.kv.len.max(s.pos0 + s.n_tok);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        il: usize,
        seqs: &mut [SeqRows<'_>],
        x: &mut [f32],
        angles: &[(f32, f32)],
        rope: &Rope<'_>,
        ws: &mut Workspace,
        par: &dyn Parallel,
    ) {
        let c = &self.config;
        let lw = self.layer(il).expect("forward_layers_at checked the layer is held");
        let (n_embd, hd) = (c.n_embd, c.head_dim);
        let n_tok = x.len() / n_embd;
        let k_ = &self.kernels;

        // Attention block.
        by_rows(par, overwritten(&mut ws.norm, x.len()), n_embd, &|t0, rows| {
            for (t, o) in (t0..).zip(rows.chunks_exact_mut(n_embd)) {
                rms_norm(&x[t * n_embd..(t + 1) * n_embd], &lw.attn_norm, c.rms_eps, o);
            }
        });
        let project = |src: &[f32], w: &Matrix<'_>, acts: &mut Acts, out: &mut Vec<f32>, s: &mut Vec<f32>| {
            if acts.fmt != Some(w.ty.act_format()) || acts.n != w.n_in {
                acts.encode(k_, w.ty.act_format(), src, w.n_in, par);
            }
            matmul(k_, w, acts, overwritten(out, n_tok * w.n_out), s, par);
        };
        ws.acts.fmt = None;
        if !self.stacked_matvec(&[&lw.wq, &lw.wk, &lw.wv], ws, par, |ws| [&mut ws.q, &mut ws.k, &mut ws.v]) {
            project(&ws.norm, &lw.wq, &mut ws.acts, &mut ws.q, &mut ws.scratch);
            project(&ws.norm, &lw.wk, &mut ws.acts, &mut ws.k, &mut ws.scratch);
            project(&ws.norm, &lw.wv, &mut ws.acts, &mut ws.v, &mut ws.scratch);
        }
        for (out, b) in [(&mut ws.q, &lw.bq), (&mut ws.k, &lw.bk), (&mut ws.v, &lw.bv)] {
            if let Some(b) = b {
                for row in out.chunks_exact_mut(b.len()) {
                    row.iter_mut().zip(b).for_each(|(o, bi)| *o += bi);
                }
            }
        }

        // Gemma 3 and Qwen3 normalize each query and key head before rotating it.
        if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
            for (buf, w) in [(&mut ws.q, qn), (&mut ws.k, kn)] {
                by_rows(par, buf, hd, &|_, rows| {
                    rows.chunks_exact_mut(hd).for_each(|h| rms_norm_in_place(h, w, c.rms_eps));
                });
            }
        }
        let half = c.rope_dim / 2;
        for (buf, dim) in [(&mut ws.q, c.q_dim()), (&mut ws.k, c.kv_dim())] {
            by_rows(par, buf, dim, &|t0, rows| {
                for (t, row) in (t0..).zip(rows.chunks_exact_mut(dim)) {
                    let cs = &angles[t * half..(t + 1) * half];
                    row.chunks_exact_mut(hd).for_each(|h| rope.apply(h, cs));
                }
            });
        }
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let attn = resize(&mut ws.attn, n_tok * qd);
        let heads = |pos0| Heads {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: hd,
            pos0,
            scale: c.attn_scale,
            window: c.is_swa(il).then_some(c.sliding_window),
        };
        let mut row = 0;
        for s in seqs.iter_mut() {
            let rows = row..row + s.n_tok;
            row += s.n_tok;
            s.kv.write(
                il,
                s.pos0,
                hd,
                &ws.k[rows.start * kvd..rows.end * kvd],
                &ws.v[rows.start * kvd..rows.end * kvd],
            );
            if c.attn_temperature.is_some() {
                for (pos, q) in (s.pos0..).zip(ws.q[rows.start * qd..rows.end * qd].chunks_exact_mut(qd)) {
                    let scale = c.query_scale(pos);
                    q.iter_mut().for_each(|v| *v *= scale);
                }
            }
        }
        // Sequences all decoding over short caches share one dispatch
        // (per SEQS_AT_ONCE of them); otherwise each takes its own.
        let mut row = 0;
        for batch in seqs.chunks(SEQS_AT_ONCE) {
            let mut list = heapless::Vec::<SeqAttn<'_>, SEQS_AT_ONCE>::new();
            for s in batch.iter() {
                let (kc, vc) = s.kv.layer(il, hd);
                // Never full: a batch holds at most SEQS_AT_ONCE.
                let _ = list.push(SeqAttn { heads: heads(s.pos0), n_tok: s.n_tok, kc, vc });
            }
            let rows = row..row + batch.iter().map(|s| s.n_tok).sum::<usize>();
            row = rows.end;
            let (q, out) = (&ws.q[rows.start * qd..rows.end * qd], &mut attn[rows.start * qd..rows.end * qd]);
            if list.len() > 1 && list.iter().all(SeqAttn::is_short) {
                attend_short(k_, &list, q, out, &mut ws.attn_scratch, par);
                continue;
            }
            let mut at = 0;
            for a in &list {
                let len = a.n_tok * qd;
                attend(k_, a, &q[at..at + len], &mut out[at..at + len], &mut ws.attn_scratch, par);
                at += len;
            }
        }
        ws.acts.encode(k_, lw.wo.ty.act_format(), &ws.attn, lw.wo.n_in, par);
        let proj = overwritten(&mut ws.proj, n_tok * n_embd);
        matmul(k_, &lw.wo, &ws.acts, proj, &mut ws.scratch, par);
        post_norm(par, proj, lw.post_attn_norm.as_deref(), n_embd, c.rms_eps);
        let proj = &ws.proj;
        by_rows(par, x, n_embd, &|t0, rows| {
            rows.iter_mut().zip(&proj[t0 * n_embd..]).for_each(|(a, b)| *a += b);
        });

        // Feed-forward block (SwiGLU).
        by_rows(par, overwritten(&mut ws.norm, x.len()), n_embd, &|t0, rows| {
            for (t, o) in (t0..).zip(rows.chunks_exact_mut(n_embd)) {
                rms_norm(&x[t * n_embd..(t + 1) * n_embd], &lw.ffn_norm, c.rms_eps, o);
            }
        });
        ws.acts.fmt = None;
        if !self.stacked_matvec(&[&lw.w_gate, &lw.w_up], ws, par, |ws| [&mut ws.gate, &mut ws.up]) {
            project(&ws.norm, &lw.w_gate, &mut ws.acts, &mut ws.gate, &mut ws.scratch);
            project(&ws.norm, &lw.w_up, &mut ws.acts, &mut ws.up, &mut ws.scratch);
        }
        let (up, n_ff) = (&ws.up, lw.w_gate.n_out);
        let gelu = self.gelu.as_ref();
        by_rows(par, &mut ws.gate, n_ff, &|t0, rows| {
            let up = &up[t0 * n_ff..][..rows.len()];
            if let Some(gelu) = gelu {
                rows.iter_mut().zip(up).for_each(|(g, u)| *g = gelu.gate(*g) * u);
            } else {
                k_.swiglu(rows, up);
            }
        });
        ws.acts.encode(k_, lw.w_down.ty.act_format(), &ws.gate, lw.w_down.n_in, par);
        let proj = overwritten(&mut ws.proj, n_tok * n_embd);
        matmul(k_, &lw.w_down, &ws.acts, proj, &mut ws.scratch, par);
        post_norm(par, proj, lw.post_ffn_norm.as_deref(), n_embd, c.rms_eps);
        let proj = &ws.proj;
        by_rows(par, x, n_embd, &|t0, rows| {
            rows.iter_mut().zip(&proj[t0 * n_embd..]).for_each(|(a, b)| *a += b);
        });
    }

    /// For one token whose matrices share a weight type: multiplies `ws.norm`
    /// by all of `mats` in one dispatch and splits the result into the
    /// buffers `outs` picks. Returns false (doing nothing) otherwise.
    fn stacked_matvec<const N: usize>(
        &self,
        mats: &[&Matrix<'_>; N],
        ws: &mut Workspace,
        par: &dyn Parallel,
        outs: impl FnOnce(&mut Workspace) -> [&mut Vec<f32>; N],
    ) -> bool {
        let ty = mats[0].ty;
        if ws.norm.len() != self.config.n_embd || mats.iter().any(|m| m.ty != ty) {
            return false;
        }
        ws.acts.encode(&self.kernels, ty.act_format(), &ws.norm, self.config.n_embd, par);
        let total = mats.iter().map(|m| m.n_out).sum();
        let mut stacked = core::mem::take(&mut ws.scratch);
        matvec_stacked(&self.kernels, mats, &ws.acts, resize(&mut stacked, total), par);
        let mut at = 0;
        for (m, out) in mats.iter().zip(outs(ws)) {
            out.clear();
            out.extend_from_slice(&stacked[at..at + m.n_out]);
            at += m.n_out;
        }
        ws.scratch = stacked;
        true
    }

    /// Final norm and output head for the hidden states `x`, writing
    /// `n_tok * n_vocab` logits.
    pub fn output(
        &self,
        x: &[f32],
        logits: &mut [f32],
        ws: &mut Workspace,
        par: &dyn Parallel,
    ) -> Result<(), ModelError> {
        let (Some(norm_w), Some(out)) = (&self.output_norm, &self.output) else {
            return Err(ModelError::PartNotLoaded { part: "output head" });
        };
        let n = self.config.n_embd;
        let norm = overwritten(&mut ws.norm, x.len());
        for (o, xi) in norm.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
            rms_norm(xi, norm_w, self.config.rms_eps, o);
        }
        ws.acts.encode(&self.kernels, out.ty.act_format(), &ws.norm, n, par);
        matmul(&self.kernels, out, &ws.acts, logits, &mut ws.scratch, par);
        if let Some(cap) = self.config.logit_softcap {
            logits.iter_mut().for_each(|l| *l = libm::tanhf(*l / cap) * cap);
        }
        Ok(())
    }
}
