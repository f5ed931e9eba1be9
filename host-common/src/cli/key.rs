//! `prima keygen` and the `--key` flag: the ring key that authenticates
//! and encrypts every link between a head and its workers.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

use crate::link::{RingKey, KEY_ENV};

/// The ring key flag, shared by every command that talks to workers.
#[derive(Debug, Args)]
pub(super) struct KeyArg {
    /// The ring key (from `prima keygen`): its 64 hex digits or a file
    /// holding them (default: $PRIMA_RING_KEY). Links are then authenticated
    /// and encrypted, and peers without the key are refused.
    #[arg(long = "key", value_name = "KEY|FILE")]
    key: Option<String>,
}

impl KeyArg {
    pub fn load(&self) -> anyhow::Result<Option<RingKey>> {
        RingKey::from_arg_or_env(self.key.as_deref()).context("--key")
    }
}

#[derive(Debug, Args)]
pub(super) struct KeygenArgs {
    /// Write the key to this file (readable by its owner only) instead of printing it.
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
}

pub(super) fn keygen(a: KeygenArgs) -> anyhow::Result<()> {
    let key = RingKey::generate()?;
    let Some(path) = a.out else {
        outln!("{}", key.to_hex());
        return Ok(());
    };
    write_private(&path, &format!("{}\n", key.to_hex()))
        .with_context(|| format!("cannot write ring key file {}", path.display()))?;
    eprintln!(
        "wrote ring key {} to {}; copy it to every device and pass --key {} (or set {KEY_ENV})",
        key.id(),
        path.display(),
        path.display()
    );
    Ok(())
}

/// Creates `path` (not over an existing file) readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}
