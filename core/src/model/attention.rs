//! Causal multi-head attention over the f16 KV cache, with grouped KV heads.

use alloc::vec;
use alloc::vec::Vec;

use super::kv::RowsRef;
use super::ops::softmax;
use crate::kernels::Kernels;
use crate::parallel::{for_each_chunk_mut, Parallel};

/// Prompts of at least this many tokens take the blocked path.
const TOKEN_BLOCK: usize = 16;
/// Query heads of a group scored against the keys together (the AVX2
/// kernel's most).
const QUERIES_AT_ONCE: usize = 4;

/// The attention problem of one layer for `n_tok` new tokens at `pos0..`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heads {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub pos0: usize,
    /// Scores are scaled by this.
    pub scale: f32,
    /// A token sees only the latest `window` positions, when set.
    pub window: Option<usize>,
}

impl Heads {
    fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
    fn group(&self) -> usize {
        self.n_head / self.n_head_kv
    }
    /// The first cache row a token at `pos` sees.
    fn first_seen(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }
}

/// `out` (`n_tok * q_dim`) = attention of the queries `q` over cache rows
/// `0 .. pos0 + t + 1` for token `t`. `scratch` is reused between calls.
#[allow(clippy::too_many_arguments)]
pub(super) fn attend(
    k: &Kernels,
    h: Heads,
    q: &[f32],
    kc: RowsRef<'_>,
    vc: RowsRef<'_>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    par: &dyn Parallel,
) {
    if q.len() / h.q_dim() >= TOKEN_BLOCK {
        attend_blocked(k, h, q, kc, vc, out, scratch, par);
    } else {
        attend_per_head(k, h, q, kc, vc, out, scratch, par);
    }
}

/// A query head, rounded to f16 precision when the keys are f16: the
/// reference engine multiplies f16 keys by f16-rounded queries.
fn rounded_query(k: &Kernels, q: &[f32], keys: RowsRef<'_>, out: &mut [f32]) {
    out.copy_from_slice(q);
    if keys.is_f16() {
        k.round_to_f16(out);
    }
}

/// Scaled scores → probabilities, rounded to f16 when the values are f16, as
/// the reference engine keeps them.
fn probabilities(k: &Kernels, scores: &mut [f32], scale: f32, values: RowsRef<'_>) {
    scores.iter_mut().for_each(|s| *s *= scale);
    softmax(scores);
    if values.is_f16() {
        k.round_to_f16(scores);
    }
}

/// One task per (token, head), reading the f16 cache directly: decode's
/// only parallelism is across heads. Each task works in its own piece of
/// `scratch` (query, output, scores), sized once for the whole cache, so
/// decoding allocates nothing.
#[allow(clippy::too_many_arguments)]
fn attend_per_head(
    k: &Kernels,
    h: Heads,
    q: &[f32],
    kc: RowsRef<'_>,
    vc: RowsRef<'_>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    par: &dyn Parallel,
) {
    let (hd, q_dim, kv_dim) = (h.head_dim, h.q_dim(), h.kv_dim());
    let n_tok = q.len() / q_dim;
    let n_tasks = n_tok * h.n_head;
    let per_task = 2 * hd + h.pos0 + n_tok;
    scratch.clear();
    scratch.reserve(n_tasks * (2 * hd + kc.len() / kv_dim));
    scratch.resize(n_tasks * per_task, 0.0);
    for_each_chunk_mut(par, scratch, per_task, &|start, buf| {
        let task = start / per_task;
        let (t, head) = (task / h.n_head, task % h.n_head);
        let (qh, rest) = buf.split_at_mut(hd);
        let (o, scores) = rest.split_at_mut(hd);
        let n_ctx = h.pos0 + t + 1;
        let first = h.first_seen(n_ctx - 1);
        let kvh = head / h.group();
        rounded_query(k, &q[t * q_dim + head * hd..][..hd], kc, qh);
        let rows = (first, kvh * hd, kv_dim);
        let scores = &mut scores[..n_ctx - first];
        kc.dots(k, rows, qh, scores);
        probabilities(k, scores, h.scale, vc);
        vc.weighted(k, rows, scores, o);
    });
    for (task, o) in out.chunks_exact_mut(hd).enumerate() {
        o.copy_from_slice(&scratch[task * per_task + hd..][..hd]);
    }
}

/// One task per (KV head, block of tokens): the head's keys and values are
/// widened to f32 once and serve every query head of the group for every
/// token of the block. Results land in `scratch` as `[kv head][token][group * hd]`
/// and are then scattered into `out`.
#[allow(clippy::too_many_arguments)]
fn attend_blocked(
    k: &Kernels,
    h: Heads,
    q: &[f32],
    kc: RowsRef<'_>,
    vc: RowsRef<'_>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    par: &dyn Parallel,
) {
    let (hd, q_dim, kv_dim, group) = (h.head_dim, h.q_dim(), h.kv_dim(), h.group());
    let n_tok = q.len() / q_dim;
    let n_blocks = n_tok.div_ceil(TOKEN_BLOCK);
    let per_task = TOKEN_BLOCK * group * hd;
    scratch.clear();
    scratch.resize(h.n_head_kv * n_blocks * per_task, 0.0);
    for_each_chunk_mut(par, scratch, per_task, &|start, res| {
        let task = start / per_task;
        let (g, t0) = (task / n_blocks, task % n_blocks * TOKEN_BLOCK);
        let t1 = (t0 + TOKEN_BLOCK).min(n_tok);
        let ctx_end = h.pos0 + t1;
        let (mut keys, mut values) = (vec![0.0f32; ctx_end * hd], vec![0.0f32; ctx_end * hd]);
        for j in 0..ctx_end {
            let row = j * kv_dim + g * hd..j * kv_dim + g * hd + hd;
            kc.widen(k, row.clone(), &mut keys[j * hd..(j + 1) * hd]);
            vc.widen(k, row, &mut values[j * hd..(j + 1) * hd]);
        }
        // The group's query heads go through the keys together, up to
        // QUERIES_AT_ONCE at a time, so each key is read once for all of them.
        let mut scores = vec![0.0f32; QUERIES_AT_ONCE * ctx_end];
        let mut qh = vec![0.0f32; QUERIES_AT_ONCE * hd];
        for t in t0..t1 {
            let n_ctx = h.pos0 + t + 1;
            let first = h.first_seen(n_ctx - 1);
            let m = n_ctx - first;
            for h0 in (0..group).step_by(QUERIES_AT_ONCE) {
                let his = h0..(h0 + QUERIES_AT_ONCE).min(group);
                for (i, hi) in his.clone().enumerate() {
                    let head = g * group + hi;
                    rounded_query(k, &q[t * q_dim + head * hd..][..hd], kc, &mut qh[i * hd..(i + 1) * hd]);
                }
                let nq = his.len();
                k.dot_rows_multi(&qh[..nq * hd], hd, &keys[first * hd..n_ctx * hd], &mut scores[..nq * m]);
                for (i, hi) in his.enumerate() {
                    let s = &mut scores[i * m..(i + 1) * m];
                    probabilities(k, s, h.scale, vc);
                    let o = &mut res[((t - t0) * group + hi) * hd..][..hd];
                    k.weighted_sum(s, &values[first * hd..n_ctx * hd], o);
                }
            }
        }
    });
    for t in 0..n_tok {
        for head in 0..h.n_head {
            let (g, hi) = (head / group, head % group);
            let from = (g * n_blocks * TOKEN_BLOCK + t) * group * hd + hi * hd;
            out[t * q_dim + head * hd..][..hd].copy_from_slice(&scratch[from..from + hd]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::Serial;
    use crate::sampler::Rng;
    use half::f16;

    /// The blocked prompt path and the per-head decode path compute exactly
    /// the same attention, for f16 and f32 caches and a prefix already in the
    /// cache, so how a prompt is batched never changes the result.
    #[test]
    fn blocked_and_per_head_paths_agree() {
        let mut rng = Rng::new(9);
        let h = Heads { n_head: 6, n_head_kv: 2, head_dim: 64, pos0: 7, scale: 0.125, window: None };
        let n_tok = 37;
        let ctx = h.pos0 + n_tok;
        let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.next_f64() as f32 - 0.5) * 4.0).collect() };
        let q = rand(n_tok * h.q_dim());
        let (kf, vf) = (rand(ctx * h.kv_dim()), rand(ctx * h.kv_dim()));
        let (kh, vh): (Vec<f16>, Vec<f16>) =
            (kf.iter().map(|&x| f16::from_f32(x)).collect(), vf.iter().map(|&x| f16::from_f32(x)).collect());
        for window in [None, Some(5)] {
            let h = Heads { window, ..h };
            for k in [Kernels::detect(), Kernels::scalar()] {
                for (kc, vc) in [(RowsRef::F16(&kh), RowsRef::F16(&vh)), (RowsRef::F32(&kf), RowsRef::F32(&vf))] {
                    let mut per_head = vec![0.0; q.len()];
                    attend_per_head(&k, h, &q, kc, vc, &mut per_head, &mut Vec::new(), &Serial);
                    let mut blocked = vec![0.0; q.len()];
                    attend_blocked(&k, h, &q, kc, vc, &mut blocked, &mut Vec::new(), &Serial);
                    assert_eq!(per_head, blocked, "{} f16={} window {window:?}", k.name(), kc.is_f16());
                }
            }
        }
    }

    /// A token attending through a window of w sees exactly what it would
    /// see in a cache holding only the latest w rows.
    #[test]
    fn a_window_sees_only_the_latest_rows() {
        let mut rng = Rng::new(4);
        let (w, pos0) = (6, 20);
        let h = Heads { n_head: 4, n_head_kv: 2, head_dim: 32, pos0, scale: 0.2, window: Some(w) };
        let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.next_f64() as f32 - 0.5) * 4.0).collect() };
        let q = rand(h.q_dim());
        let (kf, vf) = (rand((pos0 + 1) * h.kv_dim()), rand((pos0 + 1) * h.kv_dim()));
        let k = Kernels::scalar();
        let mut windowed = vec![0.0; q.len()];
        attend_per_head(&k, h, &q, RowsRef::F32(&kf), RowsRef::F32(&vf), &mut windowed, &mut Vec::new(), &Serial);
        let tail = (pos0 + 1 - w) * h.kv_dim();
        let short = Heads { pos0: w - 1, window: None, ..h };
        let mut expect = vec![0.0; q.len()];
        attend_per_head(
            &k,
            short,
            &q,
            RowsRef::F32(&kf[tail..]),
            RowsRef::F32(&vf[tail..]),
            &mut expect,
            &mut Vec::new(),
            &Serial,
        );
        assert_eq!(windowed, expect);
    }
}
