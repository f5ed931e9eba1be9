use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ops::Range;

use super::ops::GeluTable;
use super::{Config, ModelError};
use crate::gguf::Gguf;
use crate::kernels::matmul::Matrix;
use crate::kernels::Kernels;
use crate::quant::{dequant::dequantize_row, GgmlType};

/// Which parts of the model a device holds. A ring worker holds only its
/// layer windows (one per round); the head also holds the embedding and the
/// output head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// Ascending, non-overlapping layer ranges.
    pub windows: Vec<Range<usize>>,
    pub embedding: bool,
    pub output: bool,
}

impl Parts {
    pub fn all(n_layer: usize) -> Self {
        Self { windows: alloc::vec![0..n_layer], embedding: true, output: true }
    }

    /// Layers `windows`, without the embedding or the output head.
    pub fn layers(windows: Vec<Range<usize>>) -> Self {
        Self { windows, embedding: false, output: false }
    }

    /// Every layer held, in order.
    pub fn held(&self) -> impl Iterator<Item = usize> + '_ {
        self.windows.iter().flat_map(|w| w.clone())
    }

    /// Where layer `layer` sits among the held ones.
    pub fn slot(&self, layer: usize) -> Option<usize> {
        let mut before = 0;
        for w in &self.windows {
            if w.contains(&layer) {
                return Some(before + layer - w.start);
            }
            before += w.len();
        }
        None
    }

    /// Whether every layer of `range` is held.
    pub fn holds(&self, range: &Range<usize>) -> bool {
        range.is_empty() || self.windows.iter().any(|w| w.start <= range.start && range.end <= w.end)
    }
}

/// One transformer block's weights.
#[derive(Debug)]
pub struct LayerWeights<'a> {
    pub attn_norm: Vec<f32>,
    pub wq: Matrix<'a>,
    pub wk: Matrix<'a>,
    pub wv: Matrix<'a>,
    pub wo: Matrix<'a>,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Matrix<'a>,
    pub w_up: Matrix<'a>,
    pub w_down: Matrix<'a>,
    /// Gemma 3: per-head RMS norms of queries and keys (head_dim wide), and
    /// norms of the attention and feed-forward outputs.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub post_attn_norm: Option<Vec<f32>>,
    pub post_ffn_norm: Option<Vec<f32>>,
}

/// A loaded model: its configuration and the weights of the parts this
/// device holds, borrowed from the GGUF bytes (no copy of any matrix).
#[derive(Debug)]
pub struct Model<'a> {
    pub config: Config,
    pub parts: Parts,
    pub kernels: Kernels,
    pub(crate) token_embd: Option<Matrix<'a>>,
    pub(crate) output_norm: Option<Vec<f32>>,
    pub(crate) output: Option<Matrix<'a>>,
    pub(crate) rope_freqs: Option<Vec<f32>>,
    pub(crate) layers: Vec<LayerWeights<'a>>,
    /// Gemma3's feed-forward gate, where this device holds layers.
    pub(crate) gelu: Option<GeluTable>,
}

impl<'a> Model<'a> {
    /// Loads every part of the model.
    pub fn load(g: &Gguf<'a>, kernels: Kernels) -> Result<Self, ModelError> {
        let n = Config::from_gguf(g)?.n_layer;
        Self::load_parts(g, Parts::all(n), kernels)
    }

    /// Loads only `parts`, validating every tensor it will touch.
    pub fn load_parts(g: &Gguf<'a>, parts: Parts, kernels: Kernels) -> Result<Self, ModelError> {
        let c = Config::from_gguf(g)?;
        let mut end = 0;
        for w in &parts.windows {
            if w.start < end || w.start > w.end || w.end > c.n_layer {
                return Err(ModelError::LayerRange { start: w.start, end: w.end, n_layer: c.n_layer });
            }
            end = w.end;
        }
        let l = Loader { g };
        let (e, v) = (c.n_embd as u64, c.n_vocab as u64);
        let token_embd =
            if parts.embedding || parts.output { Some(l.matrix("token_embd.weight", e, v)?) } else { None };
        let (output_norm, output) = if parts.output {
            let out = match g.tensor("output.weight") {
                Some(_) => l.matrix("output.weight", e, v)?,
                None => token_embd.ok_or(ModelError::MissingTensor { name: "output.weight".into() })?,
            };
            (Some(l.vector("output_norm.weight", e)?), Some(out))
        } else {
            (None, None)
        };
        let rope_freqs = match g.tensor("rope_freqs.weight") {
            Some(_) => Some(l.vector("rope_freqs.weight", (c.rope_dim / 2) as u64)?),
            None => None,
        };
        let (q, kv, ff) = (c.q_dim() as u64, c.kv_dim() as u64, c.n_ff as u64);
        let (gemma, hd) = (c.arch == super::Arch::Gemma3, c.head_dim as u64);
        let head_norms = gemma || c.arch == super::Arch::Qwen3;
        let mut layers = Vec::new();
        for i in parts.held() {
            let name = |s: &str| format!("blk.{i}.{s}");
            let bias = |s: &str, n: u64| -> Result<Option<Vec<f32>>, ModelError> {
                match g.tensor(&name(s)) {
                    Some(_) => l.vector(&name(s), n).map(Some),
                    None => Ok(None),
                }
            };
            layers.push(LayerWeights {
                attn_norm: l.vector(&name("attn_norm.weight"), e)?,
                wq: l.matrix(&name("attn_q.weight"), e, q)?,
                wk: l.matrix(&name("attn_k.weight"), e, kv)?,
                wv: l.matrix(&name("attn_v.weight"), e, kv)?,
                wo: l.matrix(&name("attn_output.weight"), q, e)?,
                bq: bias("attn_q.bias", q)?,
                bk: bias("attn_k.bias", kv)?,
                bv: bias("attn_v.bias", kv)?,
                ffn_norm: l.vector(&name("ffn_norm.weight"), e)?,
                w_gate: l.matrix(&name("ffn_gate.weight"), e, ff)?,
                w_up: l.matrix(&name("ffn_up.weight"), e, ff)?,
                w_down: l.matrix(&name("ffn_down.weight"), ff, e)?,
                q_norm: head_norms.then(|| l.vector(&name("attn_q_norm.weight"), hd)).transpose()?,
                k_norm: head_norms.then(|| l.vector(&name("attn_k_norm.weight"), hd)).transpose()?,
                post_attn_norm: gemma.then(|| l.vector(&name("post_attention_norm.weight"), e)).transpose()?,
                post_ffn_norm: gemma.then(|| l.vector(&name("post_ffw_norm.weight"), e)).transpose()?,
            });
        }
        let embedding = parts.embedding;
        let gelu = (gemma && !layers.is_empty()).then(GeluTable::new);
        Ok(Self {
            config: c,
            parts,
            kernels,
            token_embd: if embedding || output.is_some() { token_embd } else { None },
            output_norm,
            output,
            rope_freqs,
            layers,
            gelu,
        })
    }

    /// Layer `i`'s weights, if this device holds it.
    pub fn layer(&self, i: usize) -> Option<&LayerWeights<'a>> {
        self.parts.slot(i).and_then(|j| self.layers.get(j))
    }
}

struct Loader<'g, 'a> {
    g: &'g Gguf<'a>,
}

impl<'a> Loader<'_, 'a> {
    fn info(&self, name: &str) -> Result<&crate::gguf::TensorInfo<'a>, ModelError> {
        self.g.tensor(name).ok_or_else(|| ModelError::MissingTensor { name: name.to_string() })
    }

    /// A 2-D matrix of `n_out` rows by `n_in` columns.
    fn matrix(&self, name: &str, n_in: u64, n_out: u64) -> Result<Matrix<'a>, ModelError> {
        let t = self.info(name)?;
        if t.dims != [n_in, n_out, 1, 1] {
            return Err(ModelError::BadShape { name: name.to_string(), expected: [n_in, n_out], found: t.dims });
        }
        if !t.ty.is_supported() {
            return Err(ModelError::UnsupportedTensorType { name: name.to_string(), ty: t.ty });
        }
        Ok(Matrix { ty: t.ty, n_in: n_in as usize, n_out: n_out as usize, data: self.g.tensor_data(t) })
    }

    /// A 1-D F32 vector, copied (norms and biases are tiny).
    fn vector(&self, name: &str, n: u64) -> Result<Vec<f32>, ModelError> {
        let t = self.info(name)?;
        if t.dims != [n, 1, 1, 1] {
            return Err(ModelError::BadShape { name: name.to_string(), expected: [n, 1], found: t.dims });
        }
        if t.ty != GgmlType::F32 {
            return Err(ModelError::NotF32 { name: String::from(name), ty: t.ty });
        }
        let mut out = alloc::vec![0.0; n as usize];
        dequantize_row(GgmlType::F32, self.g.tensor_data(t), &mut out)
            .map_err(|_| ModelError::NotF32 { name: name.to_string(), ty: t.ty })?;
        Ok(out)
    }
}
