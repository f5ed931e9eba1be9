use alloc::string::ToString;

use super::ModelError;
use crate::gguf::{Gguf, GgufError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    /// Gemma 3: scaled embeddings, per-head query/key norms, norms after
    /// attention and the feed-forward too, GELU gating, and sliding-window
    /// attention on five layers of every six.
    Gemma3,
    /// Qwen3: Qwen2 with per-head query/key norms and no projection biases.
    Qwen3,
    /// Mistral 3 (Ministral): Llama with YaRN and, past the original
    /// context, a query temperature that grows with position.
    Mistral3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma3 => "gemma3",
            Arch::Qwen3 => "qwen3",
            Arch::Mistral3 => "mistral3",
        }
    }
}

/// How RoPE pairs dimensions: adjacent (`Norm`) or split halves (`Neox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeKind {
    Norm,
    Neox,
}

/// Hyper-parameters, all read from GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_dim: usize,
    pub rope_kind: RopeKind,
    /// 1 / linear scaling factor.
    pub rope_freq_scale: f32,
    /// Sliding-window layers see only this many latest positions (0: none).
    pub sliding_window: usize,
    /// Every `swa_pattern`-th layer attends globally, the others through
    /// the window (0: every layer globally).
    pub swa_pattern: usize,
    /// RoPE base of the sliding-window layers.
    pub rope_base_swa: f32,
    /// Attention scores are scaled by this.
    pub attn_scale: f32,
    /// Logits are squashed into (-cap, cap) when set.
    pub logit_softcap: Option<f32>,
    /// YaRN's blend of interpolated and extrapolated angles, when the model uses it.
    pub yarn: Option<Yarn>,
    /// RoPE's cos and sin are multiplied by this (YaRN's magnitude correction).
    pub rope_mscale: f32,
    /// Queries are scaled by `ln(⌊pos / floor⌋ + 1) · scale + 1` (Mistral 3), when set.
    pub attn_temperature: Option<(f32, usize)>,
}

/// YaRN parameters, as the reference engine derives them from the metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    /// How much of the extrapolated angle blends in (1: fully, on the ramp).
    pub ext_factor: f32,
    /// Rotation pairs below the first are extrapolated, above the second interpolated.
    pub corr_dims: [f32; 2],
}

impl Config {
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self, ModelError> {
        let arch_name = g.get_str("general.architecture")?;
        let (arch, rope_kind) = match arch_name {
            "llama" => (Arch::Llama, RopeKind::Norm),
            "qwen2" => (Arch::Qwen2, RopeKind::Neox),
            "gemma3" => (Arch::Gemma3, RopeKind::Neox),
            "qwen3" => (Arch::Qwen3, RopeKind::Neox),
            "mistral3" => (Arch::Mistral3, RopeKind::Norm),
            other => return Err(ModelError::UnsupportedArch { arch: other.to_string() }),
        };
        let key = |k: &str| alloc::format!("{arch_name}.{k}");
        let usize_of = |k: &str| -> Result<usize, ModelError> { Ok(g.get_u64(&key(k))? as usize) };
        let opt_usize =
            |k: &str| -> Result<Option<usize>, GgufError> { Ok(g.opt(&key(k), Gguf::get_u64)?.map(|v| v as usize)) };
        let n_embd = usize_of("embedding_length")?;
        let n_head = usize_of("attention.head_count")?;
        let n_head_kv = opt_usize("attention.head_count_kv")?.unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 || n_embd % n_head != 0 {
            return Err(ModelError::BadMetadata {
                key: "attention.head_count",
                reason: "head counts must be non-zero, and head_count a multiple of head_count_kv",
            });
        }
        let head_dim = opt_usize("attention.key_length")?.unwrap_or(n_embd / n_head);
        let rope_dim = opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 || head_dim == 0 {
            return Err(ModelError::BadMetadata {
                key: "rope.dimension_count",
                reason: "must be even and ≤ head size",
            });
        }
        let scaling = g.opt(&key("rope.scaling.type"), Gguf::get_str)?;
        let factor = match scaling {
            Some("linear") | Some("yarn") => {
                let factor = g.opt(&key("rope.scaling.factor"), Gguf::get_f32)?.unwrap_or(1.0);
                if !(factor.is_finite() && factor > 0.0) {
                    return Err(ModelError::BadMetadata { key: "rope.scaling.factor", reason: "must be positive" });
                }
                factor
            }
            None | Some("none") => 1.0,
            Some(_) => {
                return Err(ModelError::BadMetadata {
                    key: "rope.scaling.type",
                    reason: "only linear and yarn scaling are supported",
                })
            }
        };
        let rope_freq_scale = 1.0 / factor;
        // A ring worker's layer file has no embedding; the vocabulary size is
        // then in the metadata.
        let n_vocab = match g.tensor("token_embd.weight") {
            Some(t) => t.dims[1] as usize,
            None => match opt_usize("vocab_size")? {
                Some(n) => n,
                None => g
                    .get_array("tokenizer.ggml.tokens")
                    .map(|a| a.len())
                    .map_err(|_| ModelError::MissingTensor { name: "token_embd.weight".into() })?,
            },
        };
        let n_layer = usize_of("block_count")?;
        let (sliding_window, swa_pattern, rope_base_swa) = match arch {
            // As the reference engine: five window layers then a global one,
            // the window layers with RoPE base 10000.
            Arch::Gemma3 => (opt_usize("attention.sliding_window")?.unwrap_or(0), 6, 10_000.0),
            _ => (0, 0, 0.0),
        };
        let attn_scale = match arch {
            // Gemma 3 27B (62 layers) scales by the model width per head.
            Arch::Gemma3 if n_layer == 62 => 1.0 / libm::sqrtf((n_embd / n_head) as f32),
            _ => 1.0 / libm::sqrtf(head_dim as f32),
        };
        let logit_softcap = g.opt(&key("final_logit_softcapping"), Gguf::get_f32)?.filter(|c| *c > 0.0);
        let n_ctx_train = opt_usize("context_length")?.unwrap_or(2048);
        let rope_base = g.opt(&key("rope.freq_base"), Gguf::get_f32)?.unwrap_or(10000.0);
        let n_ctx_orig = opt_usize("rope.scaling.original_context_length")?.unwrap_or(n_ctx_train);
        let f32_or =
            |k: &str, default: f32| -> Result<f32, GgufError> { Ok(g.opt(&key(k), Gguf::get_f32)?.unwrap_or(default)) };
        let (yarn, rope_mscale) = match scaling {
            Some("yarn") => {
                let (fast, slow) =
                    (f32_or("rope.scaling.yarn_beta_fast", 32.0)?, f32_or("rope.scaling.yarn_beta_slow", 1.0)?);
                let yarn =
                    Yarn { ext_factor: 1.0, corr_dims: yarn_corr_dims(rope_dim, n_ctx_orig, rope_base, fast, slow) };
                let log_mul = f32_or("rope.scaling.yarn_log_multiplier", 0.0)?;
                (Some(yarn), yarn_mscale(factor, log_mul) * f32_or("rope.scaling.attn_factor", 1.0)?)
            }
            _ => (None, f32_or("rope.scaling.attn_factor", 1.0)?),
        };
        let attn_temperature = match (arch, g.opt(&key("attention.temperature_scale"), Gguf::get_f32)?) {
            (Arch::Mistral3, Some(scale)) if scale != 0.0 => Some((scale, n_ctx_orig.max(1))),
            _ => None,
        };
        Ok(Self {
            arch,
            n_vocab,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: usize_of("feed_forward_length")?,
            n_ctx_train,
            rms_eps: g.opt(&key("attention.layer_norm_rms_epsilon"), Gguf::get_f32)?.unwrap_or(1e-5),
            rope_base,
            rope_dim,
            rope_kind,
            rope_freq_scale,
            sliding_window,
            swa_pattern,
            rope_base_swa,
            attn_scale,
            logit_softcap,
            yarn,
            rope_mscale,
            attn_temperature,
        })
    }

    /// The query scale at `pos` (1 unless the model has a temperature).
    pub fn query_scale(&self, pos: usize) -> f32 {
        self.attn_temperature.map_or(1.0, |(scale, floor)| libm::logf((pos / floor) as f32 + 1.0) * scale + 1.0)
    }

    /// Whether layer `il` attends through the sliding window.
    pub fn is_swa(&self, il: usize) -> bool {
        self.sliding_window > 0 && self.swa_pattern > 0 && il % self.swa_pattern < self.swa_pattern - 1
    }

    /// Whether the embeddings are scaled by √n_embd before the first layer.
    pub fn scales_embeddings(&self) -> bool {
        self.arch == Arch::Gemma3
    }

    /// Width of the query projection (all heads).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of the key/value projections (all KV heads).
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// The rotation pair where a wavelength fits `n_ctx_orig / beta` turns.
fn yarn_corr_dim(dims: usize, n_ctx_orig: usize, beta: f32, base: f32) -> f32 {
    dims as f32 * libm::logf(n_ctx_orig as f32 / (beta * 2.0 * core::f32::consts::PI)) / (2.0 * libm::logf(base))
}

/// YaRN's ramp bounds: pairs below extrapolate, above interpolate.
fn yarn_corr_dims(dims: usize, n_ctx_orig: usize, base: f32, beta_fast: f32, beta_slow: f32) -> [f32; 2] {
    let start = libm::floorf(yarn_corr_dim(dims, n_ctx_orig, beta_fast, base));
    let end = libm::ceilf(yarn_corr_dim(dims, n_ctx_orig, beta_slow, base));
    [start.max(0.0), end.min(dims as f32 - 1.0)]
}

/// YaRN's magnitude correction for a context `factor` times the original,
/// as the reference engine applies it to cos and sin.
fn yarn_mscale(factor: f32, log_mul: f32) -> f32 {
    let m = |mul: f32| if factor <= 1.0 { 1.0 } else { 0.1 * mul * libm::logf(factor) + 1.0 };
    // The reference divides its attention factor by m(1) and its RoPE
    // kernel multiplies m(1) back; a log multiplier divides by m(mul).
    match log_mul {
        0.0 => m(1.0),
        mul => m(1.0) / m(mul),
    }
}
