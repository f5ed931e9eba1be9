//! A model file mapped, parsed and ready to run.

use anyhow::Context;
use prima_core::tokenizer::Tokenizer;
use prima_core::{Gguf, Model};

use super::ModelArgs;
use crate::mapped::MappedFile;
use crate::pool::Pool;

pub(super) struct Loaded {
    pub file: MappedFile,
    pub pool: Pool,
}

impl Loaded {
    pub fn open(args: &ModelArgs) -> anyhow::Result<Self> {
        let file = MappedFile::open(&args.model)?;
        let threads = args.threads.unwrap_or_else(Pool::default_threads);
        if threads == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        Ok(Self { file, pool: Pool::new(threads)? })
    }

    pub fn gguf(&self) -> anyhow::Result<Gguf<'_>> {
        self.file.gguf()
    }
}

/// The whole model. Nothing is read ahead here: the evaluator decides
/// what stays resident (see `Local::new`).
pub(super) fn model<'a>(g: &Gguf<'a>) -> anyhow::Result<Model<'a>> {
    let kernels = crate::detect_kernels();
    Model::load(g, kernels).map_err(anyhow::Error::from).context("cannot load model")
}

pub(super) fn tokenizer(g: &Gguf<'_>) -> anyhow::Result<Tokenizer> {
    Tokenizer::from_gguf(g).map_err(anyhow::Error::from).context("cannot load tokenizer")
}
