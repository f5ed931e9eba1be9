use alloc::string::String;
use core::fmt;

use crate::gguf::GgufError;
use crate::quant::GgmlType;

use super::backend::BackendFailure;

/// Why a model could not be loaded or run.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelError {
    Gguf(GgufError),
    UnsupportedArch {
        arch: String,
    },
    MissingTensor {
        name: String,
    },
    BadShape {
        name: String,
        expected: [u64; 2],
        found: [u64; 4],
    },
    UnsupportedTensorType {
        name: String,
        ty: GgmlType,
    },
    /// Norm and bias tensors must be F32.
    NotF32 {
        name: String,
        ty: GgmlType,
    },
    BadMetadata {
        key: &'static str,
        reason: &'static str,
    },
    ContextOverflow {
        needed: usize,
        n_ctx: usize,
    },
    TokenOutOfRange {
        token: u32,
        n_vocab: usize,
    },
    LayerRange {
        start: usize,
        end: usize,
        n_layer: usize,
    },
    /// Tokens would start past the positions the cache holds.
    PositionGap {
        pos0: usize,
        filled: usize,
    },
    /// A batch's sequences claim other than its number of rows.
    BatchRows {
        rows: usize,
        claimed: usize,
    },
    /// More logit rows were asked of a batch entry than it has tokens.
    RowsWanted {
        wanted: usize,
        tokens: usize,
    },
    /// A stage was asked of a model loaded without it (e.g. the output head on a worker).
    PartNotLoaded {
        part: &'static str,
    },
    /// A span named a slot the backend does not have, or named one twice.
    BadSlot {
        slot: usize,
        slots: usize,
    },
    /// The backend running `layers` (a GPU) failed.
    Backend {
        name: String,
        layers: [usize; 2],
        source: BackendFailure,
    },
}

impl From<GgufError> for ModelError {
    fn from(e: GgufError) -> Self {
        ModelError::Gguf(e)
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ModelError::*;
        match self {
            Gguf(e) => e.fmt(f),
            UnsupportedArch { arch } => {
                write!(f, "unsupported model architecture '{arch}' (supported: llama, qwen2, gemma3)")
            }
            MissingTensor { name } => write!(f, "model is missing tensor '{name}'"),
            BadShape { name, expected, found } => {
                write!(f, "tensor '{name}' has shape {found:?}, expected {expected:?}")
            }
            UnsupportedTensorType { name, ty } => {
                write!(f, "tensor '{name}' has type {ty}, which prima cannot compute")
            }
            NotF32 { name, ty } => write!(f, "tensor '{name}' has type {ty}, expected F32"),
            BadMetadata { key, reason } => write!(f, "metadata '{key}': {reason}"),
            ContextOverflow { needed, n_ctx } => {
                write!(f, "context overflow: {needed} tokens do not fit the context of {n_ctx} (raise -c)")
            }
            TokenOutOfRange { token, n_vocab } => {
                write!(f, "token id {token} is out of range (vocabulary has {n_vocab})")
            }
            LayerRange { start, end, n_layer } => {
                write!(f, "layer range {start}..{end} is not within the model's {n_layer} layers, or not held here")
            }
            PositionGap { pos0, filled } => {
                write!(f, "tokens start at position {pos0} but the cache holds only {filled}")
            }
            PartNotLoaded { part } => write!(f, "the {part} is not loaded on this device"),
            BadSlot { slot, slots } => write!(f, "slot {slot} is not one of the {slots} slots, or was named twice"),
            Backend { name, layers: [a, b], .. } => write!(f, "{name} failed while running layers {a}..{b}"),
            BatchRows { rows, claimed } => write!(f, "a batch of {rows} rows was given sequences of {claimed} tokens"),
            RowsWanted { wanted, tokens } => {
                write!(f, "{wanted} rows of logits were asked of a step of {tokens} tokens")
            }
        }
    }
}

impl core::error::Error for ModelError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ModelError::Gguf(e) => Some(e),
            ModelError::Backend { source, .. } => Some(&*source.0),
            _ => None,
        }
    }
}
