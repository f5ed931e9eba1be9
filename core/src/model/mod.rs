//! The transformer: configuration from GGUF metadata, weights borrowed from
//! the file, and a forward pass over any layer range.

mod attention;
pub mod backend;
mod config;
mod error;
mod forward;
mod kv;
pub mod ops;
mod session;
mod weights;

pub use backend::{BackendFailure, CpuLayers, LayerBackend, SeqSpan};
pub use config::{Arch, Config, RopeKind, Yarn};
pub use error::ModelError;
pub use forward::{SeqRows, Workspace};
pub use kv::{KvCache, KvType};
pub use session::{Batch, LayerHook, Session, Want};
pub use weights::{LayerWeights, Model, Parts};
