//! `prima synth`: a Llama-shaped model of any size with random Q4_0
//! weights and a real model's tokenizer, for benchmarks that need a model
//! bigger than a device (the emulated home cluster).

use anyhow::{bail, Context};
use clap::Args;
use prima_core::gguf::write::Writer;
use prima_core::GgmlType;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::mapped::MappedFile;

#[derive(Debug, Args)]
pub(super) struct SynthArgs {
    /// A llama-architecture GGUF whose tokenizer and metadata are copied.
    #[arg(long)]
    like: PathBuf,
    /// Output file.
    #[arg(short = 'o', long)]
    out: PathBuf,
    #[arg(long, default_value_t = 32)]
    layers: u32,
    #[arg(long, default_value_t = 2048)]
    embd: u32,
    #[arg(long, default_value_t = 8192)]
    ff: u32,
    #[arg(long, default_value_t = 16)]
    heads: u32,
    #[arg(long = "kv-heads", default_value_t = 4)]
    kv_heads: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const QK: u64 = 32;
const BLOCK: u64 = 18;

pub(super) fn synth(a: SynthArgs) -> anyhow::Result<()> {
    if a.embd == 0
        || !a.embd.is_multiple_of(QK as u32)
        || !a.ff.is_multiple_of(QK as u32)
        || a.heads == 0
        || a.kv_heads == 0
    {
        bail!("--embd and --ff must be positive multiples of 32, and the head counts positive");
    }
    if !a.embd.is_multiple_of(a.heads) || !a.heads.is_multiple_of(a.kv_heads) || a.layers == 0 {
        bail!("--heads must divide --embd, --kv-heads must divide --heads, and --layers must be positive");
    }
    let like = MappedFile::open(&a.like)?;
    let g = like.gguf()?;
    if g.get_str("general.architecture").ok() != Some("llama") {
        bail!("{} is not a llama-architecture model", a.like.display());
    }
    let n_vocab = g.get_array("tokenizer.ggml.tokens").context("the template has no tokenizer")?.len() as u64;
    let (e, f, l) = (a.embd as u64, a.ff as u64, a.layers);
    let head_dim = e / a.heads as u64;
    let kv = head_dim * a.kv_heads as u64;

    let mut w = Writer::new();
    w.copy_metadata(&g, |k| !k.starts_with("llama.") && k != "general.file_type" && k != "general.name");
    w.kv_str("general.name", "prima-synth")
        .kv_u32("general.file_type", 2)
        .kv_u32("llama.block_count", l)
        .kv_u32("llama.context_length", 4096)
        .kv_u32("llama.embedding_length", a.embd)
        .kv_u32("llama.feed_forward_length", a.ff)
        .kv_u32("llama.attention.head_count", a.heads)
        .kv_u32("llama.attention.head_count_kv", a.kv_heads)
        .kv_u32("llama.rope.dimension_count", head_dim as u32)
        .kv_u32("llama.vocab_size", n_vocab as u32)
        .kv_f32("llama.rope.freq_base", 10000.0)
        .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    let mut tensors: Vec<(String, Vec<u64>, GgmlType)> = vec![
        ("token_embd.weight".into(), vec![e, n_vocab], GgmlType::Q4_0),
        ("output_norm.weight".into(), vec![e], GgmlType::F32),
        ("output.weight".into(), vec![e, n_vocab], GgmlType::Q4_0),
    ];
    for i in 0..l {
        let t = |s: &str, dims: Vec<u64>, ty| (format!("blk.{i}.{s}"), dims, ty);
        tensors.extend([
            t("attn_norm.weight", vec![e], GgmlType::F32),
            t("attn_q.weight", vec![e, e], GgmlType::Q4_0),
            t("attn_k.weight", vec![e, kv], GgmlType::Q4_0),
            t("attn_v.weight", vec![e, kv], GgmlType::Q4_0),
            t("attn_output.weight", vec![e, e], GgmlType::Q4_0),
            t("ffn_norm.weight", vec![e], GgmlType::F32),
            t("ffn_gate.weight", vec![e, f], GgmlType::Q4_0),
            t("ffn_up.weight", vec![e, f], GgmlType::Q4_0),
            t("ffn_down.weight", vec![f, e], GgmlType::Q4_0),
        ]);
    }
    let sizes: Vec<u64> = tensors
        .iter()
        .map(|(_, d, ty)| match ty {
            GgmlType::F32 => d.iter().product::<u64>() * 4,
            _ => d.iter().product::<u64>() / QK * BLOCK,
        })
        .collect();
    let offsets: Vec<u64> = tensors.iter().zip(&sizes).map(|((n, d, ty), &s)| w.tensor(n, d, *ty, s)).collect();
    let header = w.header();
    let file = std::fs::File::create(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    file.set_len(w.file_len()).with_context(|| format!("cannot size {} (is the disk full?)", a.out.display()))?;
    let mut out = BufWriter::with_capacity(8 << 20, file);
    out.write_all(&header)?;
    let mut rng = a.seed.max(1);
    let base = header.len() as u64;
    for (((_, dims, ty), &size), &off) in tensors.iter().zip(&sizes).zip(&offsets) {
        out.seek(SeekFrom::Start(base + off))?;
        match ty {
            GgmlType::F32 => {
                for _ in 0..size / 4 {
                    out.write_all(&1.0f32.to_le_bytes())?;
                }
            }
            _ => {
                // Scales so that a row's dot product with unit inputs is about unit size.
                let d = half::f16::from_f32(1.0 / (4.6 * (dims[0] as f32).sqrt())).to_le_bytes();
                let mut block = [0u8; BLOCK as usize];
                block[..2].copy_from_slice(&d);
                for _ in 0..size / BLOCK {
                    for chunk in block[2..].chunks_mut(8) {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        chunk.copy_from_slice(&rng.to_le_bytes()[..chunk.len()]);
                    }
                    out.write_all(&block)?;
                }
            }
        }
    }
    out.flush().with_context(|| format!("cannot write {} (is the disk full?)", a.out.display()))?;
    eprintln!("wrote {} ({:.2} GB, {} layers)", a.out.display(), w.file_len() as f64 / 1e9, l);
    Ok(())
}
