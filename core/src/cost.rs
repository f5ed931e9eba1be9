//! What running a model costs, from the GGUF metadata alone: the bytes and
//! floating-point operations of every stage by tensor type, the KV-cache
//! bytes per token and the activation bytes that cross each ring hop. The
//! scheduler combines these with device profiles.

use alloc::vec::Vec;

use crate::gguf::Gguf;
use crate::model::{Config, ModelError};
use crate::quant::GgmlType;

/// Bytes and per-token FLOPs of the tensors of one type in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeCost {
    pub ty: GgmlType,
    /// Bytes the stage's tensors of this type occupy in the file.
    pub bytes: u64,
    /// Floating-point operations per token (2 per weight of a matrix-vector product).
    pub flops: u64,
}

/// One stage (the input embedding, a layer, or the output head).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageCost {
    /// One entry per tensor type, in type order.
    pub types: Vec<TypeCost>,
}

impl StageCost {
    fn add(&mut self, ty: GgmlType, bytes: u64, flops: u64) {
        match self.types.iter_mut().find(|t| t.ty == ty) {
            Some(t) => {
                t.bytes += bytes;
                t.flops += flops;
            }
            None => {
                self.types.push(TypeCost { ty, bytes, flops });
                self.types.sort_by_key(|t| t.ty.id());
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.types.iter().map(|t| t.bytes).sum()
    }

    pub fn flops(&self) -> u64 {
        self.types.iter().map(|t| t.flops).sum()
    }
}

/// The whole model's costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCost {
    /// The token embedding: held by the head; each token reads one row.
    pub input: StageCost,
    /// Bytes of one embedding row (what a token reads from `input`).
    pub input_row_bytes: u64,
    pub layers: Vec<StageCost>,
    /// The final norm and the output head (the embedding again when tied).
    pub output: StageCost,
    /// Keys plus values of one token in one layer, in the f16 cache.
    pub kv_bytes_per_token_layer: u64,
    /// One token's hidden state crossing a ring hop: f16 unless
    /// [`ModelCost::with_f32_activations`] says otherwise.
    pub activation_bytes: u64,
    /// Attention FLOPs per token per layer per position already in the cache.
    pub attention_flops_per_position: u64,
    /// The shapes that size a run's buffers (see [`ModelCost::runtime_bytes`]).
    pub n_embd: u64,
    pub n_ff: u64,
    pub q_dim: u64,
    pub kv_dim: u64,
    pub n_vocab: u64,
    /// Bytes before the tensor data: metadata, the tokenizer's vocabulary
    /// (read at load, so resident on every device that parses the file),
    /// and the parsed tokenizer's heap.
    pub header_bytes: u64,
}

/// What one run asks of a device beyond its layers' weights: the context
/// its KV cache holds, the most tokens a forward pass carries, and threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunShape {
    pub n_ctx: usize,
    pub n_batch: usize,
    /// Bytes per KV cache element (2 for f16, 4 for f32).
    pub kv_elem_bytes: usize,
    pub threads: usize,
}

/// The process itself: code, the allocator's arenas, the tokenizer, the
/// GGUF header pages and the OS's own per-process cost. Measured as the
/// peak RSS of a run less its buffers and weights (docs/RING.md).
pub const PROCESS_BYTES: u64 = 16 << 20;
/// Stack a pool thread touches (its mapping is larger, but untouched pages cost nothing).
pub const THREAD_STACK_BYTES: u64 = 256 << 10;

impl ModelCost {
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self, ModelError> {
        let c = Config::from_gguf(g)?;
        let mut input = StageCost::default();
        let mut output = StageCost::default();
        let mut layers = alloc::vec![StageCost::default(); c.n_layer];
        let mut input_row_bytes = 0;
        for t in g.tensors() {
            // A matrix costs 2 FLOPs per weight per token; vectors (norms, biases) about 1 per element.
            let flops = if t.n_dims >= 2 { 2 * t.n_elements() } else { t.n_elements() };
            if t.name == "token_embd.weight" {
                input.add(t.ty, t.n_bytes, 0);
                input_row_bytes = t.ty.row_bytes(t.dims[0] as usize) as u64;
            } else if t.name == "output.weight" || t.name == "output_norm.weight" {
                output.add(t.ty, t.n_bytes, flops);
            } else if let Some(layer) = layer_of(t.name) {
                let stage = layers.get_mut(layer).ok_or(ModelError::LayerRange {
                    start: layer,
                    end: layer + 1,
                    n_layer: c.n_layer,
                })?;
                stage.add(t.ty, t.n_bytes, flops);
            }
        }
        if g.tensor("output.weight").is_none() {
            // Tied output head: the embedding matrix is read again, all of it.
            if let Some(e) = g.tensor("token_embd.weight") {
                output.add(e.ty, e.n_bytes, 2 * e.n_elements());
            }
        }
        Ok(Self {
            input,
            input_row_bytes,
            layers,
            output,
            kv_bytes_per_token_layer: 2 * c.kv_dim() as u64 * 2,
            activation_bytes: c.n_embd as u64 * 2,
            attention_flops_per_position: 4 * c.q_dim() as u64,
            n_embd: c.n_embd as u64,
            n_ff: c.n_ff as u64,
            q_dim: c.q_dim() as u64,
            kv_dim: c.kv_dim() as u64,
            n_vocab: c.n_vocab as u64,
            // The parsed tokenizer's heap besides the mapped strings: a
            // String, an index entry, a kind and a score per token, about
            // 32 bytes each as measured on Gemma 3's 262k vocabulary.
            header_bytes: g.data_offset + 32 * g.get_array("tokenizer.ggml.tokens").map_or(0, |a| a.len() as u64),
        })
    }

    /// The costs of a ring that sends f32 activations (twice the bytes a hop).
    pub fn with_f32_activations(mut self) -> Self {
        self.activation_bytes = self.activation_bytes / 2 * 4;
        self
    }

    /// Bytes of one layer's KV cache (keys and values) for `run`'s context.
    pub fn kv_bytes_per_layer(&self, run: &RunShape) -> u64 {
        2 * self.kv_dim * run.n_ctx as u64 * run.kv_elem_bytes as u64
    }

    /// What a device needs besides its layers' weights and KV cache: the
    /// process, thread stacks, and the buffers of a forward pass of
    /// `run.n_batch` tokens (hidden states, every intermediate the workspace
    /// keeps, quantized activations, the ring's activation frames in and
    /// out, attention scores) and the logits of one position.
    pub fn runtime_bytes(&self, run: &RunShape) -> u64 {
        let t = run.n_batch.clamp(1, run.n_ctx.max(1)) as u64;
        let (e, f, q, kv) = (self.n_embd, self.n_ff, self.q_dim, self.kv_dim);
        // f32 workspace: hidden + norm + proj, q + attn, k + v, gate + up.
        let workspace = 4 * t * (3 * e + 2 * q + 2 * kv + 2 * f);
        // Quantized activations (at most ~1.1 bytes per value) and frames in and out.
        let acts = t * (e.max(f) * 9 / 8) + 2 * 4 * t * e;
        // One row of scores per head per token in a block, over the context.
        let scores = 4 * 16 * (q / 64).max(1) * run.n_ctx as u64;
        let logits = 4 * self.n_vocab;
        PROCESS_BYTES + self.header_bytes + run.threads as u64 * THREAD_STACK_BYTES + workspace + acts + scores + logits
    }

    /// The peak memory of one device running every layer with `run`, its
    /// weights all resident: what `prima run` predicts of itself.
    pub fn single_device_bytes(&self, run: &RunShape) -> u64 {
        let layers = self.layers.len() as u64;
        self.runtime_bytes(run) + self.output.bytes() + self.layer_bytes() + layers * self.kv_bytes_per_layer(run)
    }

    /// Bytes of all layers.
    pub fn layer_bytes(&self) -> u64 {
        self.layers.iter().map(StageCost::bytes).sum()
    }
}

/// `Some(i)` for tensor names `blk.{i}.…`.
fn layer_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("blk.")?;
    rest[..rest.find('.')?].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_numbers_come_from_block_names() {
        assert_eq!(layer_of("blk.17.ffn_up.weight"), Some(17));
        assert_eq!(layer_of("blk.x.ffn_up.weight"), None);
        assert_eq!(layer_of("output.weight"), None);
        assert_eq!(layer_of("blk.3"), None);
    }

    #[test]
    fn stage_costs_merge_by_type_in_type_order() {
        let mut s = StageCost::default();
        s.add(GgmlType::Q8_0, 10, 20);
        s.add(GgmlType::Q4_1, 5, 7);
        s.add(GgmlType::Q8_0, 1, 2);
        assert_eq!(s.types.iter().map(|t| t.ty).collect::<Vec<_>>(), [GgmlType::Q4_1, GgmlType::Q8_0]);
        assert_eq!((s.bytes(), s.flops()), (16, 29));
    }
}
