//! prima-core: the `no_std` heart of prima-rs.
//!
//! It owns everything that does not need an operating system: the GGUF
//! format, the quantized tensor formats and their kernels, the model forward
//! pass over a layer range, the tokenizer and the samplers. Hosts hand it bytes
//! (usually an mmap of the model file) and a [`parallel::Parallel`] runner;
//! core never touches a file, a clock, a thread or a socket.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

#[macro_use]
mod log;

pub mod cost;
pub mod engine;
pub mod gguf;
pub mod halda;
pub mod kernels;
pub mod model;
pub mod parallel;
pub mod profile;
pub mod quant;
pub mod ring;
pub mod sampler;
pub mod speculative;
pub mod stop;
pub mod tokenizer;

pub use gguf::{Gguf, GgufError};
pub use model::{
    Batch, CpuLayers, KvCache, KvType, LayerBackend, LayerHook, Model, ModelError, Parts, SeqRows, SeqSpan, Session,
    Want, Workspace,
};

pub use quant::GgmlType;
