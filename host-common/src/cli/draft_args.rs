//! Speculative decoding's flags, shared by `prima run` and `prima serve`.

use anyhow::Context;
use clap::Args;
use prima_core::engine::{DraftSource, Speculation};
use prima_core::{Gguf, KvCache, KvType, Model};
use std::path::PathBuf;

use crate::mapped::MappedFile;

/// Most draft tokens a pass may check: each costs the draft model a step
/// and the target a row of logits, and the draft's cache holds them.
pub const MAX_DRAFT: usize = 256;

/// Speculative decoding, with llama.cpp's flag names.
#[derive(Debug, Args)]
pub struct DraftArgs {
    /// A small model with the same vocabulary that drafts tokens on this
    /// device for the target to check several at a time.
    /// (`-md FILE` as in llama.cpp works too.)
    #[arg(long = "model-draft", value_name = "FILE")]
    pub model_draft: Option<PathBuf>,
    /// Draft from the text so far (prompt lookup) instead of a draft model.
    #[arg(long, conflicts_with = "model_draft")]
    pub lookup: bool,
    /// Most draft tokens the target checks in one pass.
    #[arg(long = "draft-max", default_value_t = 8)]
    pub draft_max: usize,
    /// Fewer drafts than this are not checked: one token is decoded plainly.
    #[arg(long = "draft-min", default_value_t = 1)]
    pub draft_min: usize,
}

impl DraftArgs {
    /// How to speculate, or `None` when no flag asks for it.
    pub fn settings(&self) -> anyhow::Result<Option<Speculation>> {
        let source = match (&self.model_draft, self.lookup) {
            (Some(_), _) => DraftSource::Model,
            (None, true) => DraftSource::Lookup,
            (None, false) => return Ok(None),
        };
        if !(1..=MAX_DRAFT).contains(&self.draft_max) {
            anyhow::bail!("--draft-max must be from 1 to {MAX_DRAFT}");
        }
        Ok(Some(Speculation { source, max: self.draft_max, min: self.draft_min }))
    }

    /// The draft model's file, opened (so a missing one is named before
    /// anything loads).
    pub fn open(&self) -> anyhow::Result<Option<MappedFile>> {
        self.model_draft.as_deref().map(MappedFile::open).transpose()
    }
}

/// The memory a draft model in `file` takes beside the target: its weights,
/// and `slots` KV caches of `n_ctx` positions.
pub fn draft_bytes(file: &MappedFile, g: &Gguf<'_>, slots: usize, n_ctx: usize) -> anyhow::Result<u64> {
    let c = prima_core::model::Config::from_gguf(g).context("cannot read the draft model's shape")?;
    let every_layer = 0..c.n_layer;
    let kv = KvCache::bytes_for(std::slice::from_ref(&every_layer), n_ctx, c.kv_dim(), KvType::F16);
    Ok((file.bytes().len() as u64).saturating_add(kv.saturating_mul(slots as u64)))
}

/// Loads the draft model from `g`, which must share the target's vocabulary.
pub fn load_draft<'a>(g: &Gguf<'a>, target_vocab: usize) -> anyhow::Result<Model<'a>> {
    let model = Model::load(g, crate::detect_kernels()).context("cannot load the draft model")?;
    if model.config.n_vocab != target_vocab {
        anyhow::bail!(
            "the draft model has {} tokens in its vocabulary and the target {target_vocab}: they must share one",
            model.config.n_vocab
        );
    }
    Ok(model)
}
