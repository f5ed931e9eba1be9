//! `prima synth`: a model of any size and architecture with random
//! weights and a real model's tokenizer, for benchmarks that need a model
//! bigger than a device (the emulated home cluster) and for faithfulness
//! tests of architectures whose real models are too big to fetch. The
//! same flags always write the same bytes.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use prima_core::gguf::write::Writer;
use prima_core::quant::scheme::Scheme;
use prima_core::quant::{can_quantize, quantize_weights};
use prima_core::sampler::Rng;
use prima_core::GgmlType;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::mapped::MappedFile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SynthArch {
    Llama,
    Qwen2,
    Qwen3,
    Mistral3,
}

#[derive(Debug, Args)]
pub(super) struct SynthArgs {
    /// A GGUF whose tokenizer and general metadata are copied.
    #[arg(long)]
    like: PathBuf,
    /// Output file.
    #[arg(short = 'o', long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "llama")]
    arch: SynthArch,
    /// Type of the weight matrices (random Q4_0 levels are written
    /// directly; other types quantize random f32 weights).
    #[arg(long = "type", default_value = "Q4_0")]
    ty: String,
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
    /// Width of a head (default: embd / heads).
    #[arg(long = "head-dim")]
    head_dim: Option<u32>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// One tensor to write: name, dims (innermost first), type.
type Spec = (String, Vec<u64>, GgmlType);

pub(super) fn synth(a: SynthArgs) -> anyhow::Result<()> {
    let ty = GgmlType::from_name(&a.ty).filter(|&t| can_quantize(t) && t != GgmlType::F32);
    let Some(ty) = ty else { bail!("--type {} is not a type prima can write (Q4_0, Q8_0, Q4_K, F16, …)", a.ty) };
    // The plain scheme of that name: every matrix of the type.
    let file_type = Scheme::from_name(ty.name()).map_or(0, |s| s.file_type);
    let head_dim = a.head_dim.unwrap_or(a.embd.checked_div(a.heads).unwrap_or(0));
    if a.embd == 0 || a.heads == 0 || a.kv_heads == 0 || a.layers == 0 || head_dim == 0 || !head_dim.is_multiple_of(2) {
        bail!("--embd, --heads, --kv-heads, --layers and --head-dim must be positive, and --head-dim even");
    }
    if !a.heads.is_multiple_of(a.kv_heads) || (a.head_dim.is_none() && !a.embd.is_multiple_of(a.heads)) {
        bail!("--kv-heads must divide --heads, and --heads divide --embd unless --head-dim is given");
    }
    let block = ty.block_len() as u32;
    let (q_dim, kv_dim) = (a.heads * head_dim, a.kv_heads * head_dim);
    if [a.embd, a.ff, q_dim].iter().any(|d| !d.is_multiple_of(block)) {
        bail!("--embd, --ff and heads × head-dim must be multiples of {block} for {ty}");
    }
    let like = MappedFile::open(&a.like)?;
    let g = like.gguf()?;
    let like_arch = g.get_str("general.architecture").context("the template names no architecture")?;
    let n_vocab = g.get_array("tokenizer.ggml.tokens").context("the template has no tokenizer")?.len() as u64;
    let arch = a.arch.to_possible_value().expect("every arch has a name").get_name().to_string();

    let mut w = Writer::new();
    let own = format!("{like_arch}.");
    w.copy_metadata(&g, |k| {
        !k.starts_with(&own) && !matches!(k, "general.file_type" | "general.name" | "general.architecture")
    });
    let key = |k: &str| format!("{arch}.{k}");
    w.kv_str("general.architecture", &arch)
        .kv_str("general.name", "prima-synth")
        .kv_u32("general.file_type", file_type)
        .kv_u32(&key("block_count"), a.layers)
        .kv_u32(&key("context_length"), 4096)
        .kv_u32(&key("embedding_length"), a.embd)
        .kv_u32(&key("feed_forward_length"), a.ff)
        .kv_u32(&key("attention.head_count"), a.heads)
        .kv_u32(&key("attention.head_count_kv"), a.kv_heads)
        .kv_u32(&key("attention.key_length"), head_dim)
        .kv_u32(&key("attention.value_length"), head_dim)
        .kv_u32(&key("rope.dimension_count"), head_dim)
        .kv_u32(&key("vocab_size"), n_vocab as u32)
        .kv_f32(&key("rope.freq_base"), 10000.0)
        .kv_f32(&key("attention.layer_norm_rms_epsilon"), 1e-5);
    if a.arch == SynthArch::Mistral3 {
        // YaRN over a short original context, and the query temperature
        // that starts past it, so short test sequences exercise both.
        w.kv_str(&key("rope.scaling.type"), "yarn")
            .kv_f32(&key("rope.scaling.factor"), 4.0)
            .kv_u32(&key("rope.scaling.original_context_length"), 16)
            .kv_f32(&key("rope.scaling.yarn_log_multiplier"), 1.0)
            .kv_f32(&key("attention.temperature_scale"), 0.5);
    }
    let tensors = tensor_specs(a.arch, ty, &a, n_vocab, q_dim as u64, kv_dim as u64, head_dim as u64);
    let sizes: Vec<u64> = tensors
        .iter()
        .map(|(_, d, ty)| (ty.row_bytes(d[0] as usize) as u64) * d[1..].iter().product::<u64>())
        .collect();
    let offsets: Vec<u64> = tensors.iter().zip(&sizes).map(|((n, d, ty), &s)| w.tensor(n, d, *ty, s)).collect();
    let header = w.header();
    let full = || format!("cannot write {} (is the disk full?)", a.out.display());
    let file = std::fs::File::create(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    file.set_len(w.file_len()).with_context(full)?;
    let mut out = BufWriter::with_capacity(8 << 20, file);
    out.write_all(&header).with_context(full)?;
    let mut rng = Rng::new(a.seed);
    let base = header.len() as u64;
    for (((name, dims, ty), &size), &off) in tensors.iter().zip(&sizes).zip(&offsets) {
        out.seek(SeekFrom::Start(base + off)).with_context(full)?;
        write_tensor(&mut out, name, dims, *ty, size, &mut rng).with_context(full)?;
    }
    out.flush().with_context(full)?;
    eprintln!("wrote {} ({:.2} GB, {arch}, {} layers of {ty})", a.out.display(), w.file_len() as f64 / 1e9, a.layers);
    Ok(())
}

fn tensor_specs(arch: SynthArch, ty: GgmlType, a: &SynthArgs, n_vocab: u64, q: u64, kv: u64, hd: u64) -> Vec<Spec> {
    let (e, f) = (a.embd as u64, a.ff as u64);
    let mut t: Vec<Spec> = vec![
        ("token_embd.weight".into(), vec![e, n_vocab], ty),
        ("output_norm.weight".into(), vec![e], GgmlType::F32),
        ("output.weight".into(), vec![e, n_vocab], ty),
    ];
    for i in 0..a.layers {
        let l = |s: &str, dims: Vec<u64>, ty| (format!("blk.{i}.{s}"), dims, ty);
        t.extend([l("attn_norm.weight", vec![e], GgmlType::F32), l("attn_q.weight", vec![e, q], ty)]);
        t.extend([l("attn_k.weight", vec![e, kv], ty), l("attn_v.weight", vec![e, kv], ty)]);
        if arch == SynthArch::Qwen2 {
            t.extend([l("attn_q.bias", vec![q], GgmlType::F32), l("attn_k.bias", vec![kv], GgmlType::F32)]);
            t.push(l("attn_v.bias", vec![kv], GgmlType::F32));
        }
        if arch == SynthArch::Qwen3 {
            t.extend([
                l("attn_q_norm.weight", vec![hd], GgmlType::F32),
                l("attn_k_norm.weight", vec![hd], GgmlType::F32),
            ]);
        }
        t.extend([l("attn_output.weight", vec![q, e], ty), l("ffn_norm.weight", vec![e], GgmlType::F32)]);
        t.extend([l("ffn_gate.weight", vec![e, f], ty), l("ffn_up.weight", vec![e, f], ty)]);
        t.push(l("ffn_down.weight", vec![f, e], ty));
    }
    t
}

/// A uniform value in [-0.5, 0.5).
fn centred(rng: &mut Rng) -> f32 {
    rng.next_f64() as f32 - 0.5
}

fn write_tensor(
    out: &mut impl Write,
    name: &str,
    dims: &[u64],
    ty: GgmlType,
    size: u64,
    rng: &mut Rng,
) -> std::io::Result<()> {
    let n = dims[0] as usize;
    match ty {
        GgmlType::F32 => {
            // Norm weights near 1 (biases near 0), varied so that each one matters.
            let centre = if name.ends_with(".bias") { 0.0 } else { 1.0 };
            for _ in 0..size / 4 {
                out.write_all(&(centre + 0.5 * centred(rng)).to_le_bytes())?;
            }
        }
        GgmlType::Q4_0 => {
            // Random levels written directly (fast for 70B-sized files), with
            // scales so that a row's dot product with unit inputs is about unit size.
            let d = half::f16::from_f32(1.0 / (4.6 * (n as f32).sqrt())).to_le_bytes();
            let mut block = [0u8; 18];
            block[..2].copy_from_slice(&d);
            for _ in 0..size / 18 {
                for chunk in block[2..].chunks_mut(8) {
                    chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..chunk.len()]);
                }
                out.write_all(&block)?;
            }
        }
        _ => {
            let scale = 3.5 / (n as f32).sqrt();
            let (mut x, mut row) = (vec![0.0f32; n], vec![0u8; ty.row_bytes(n)]);
            for _ in 0..size / row.len() as u64 {
                x.iter_mut().for_each(|v| *v = centred(rng) * scale);
                quantize_weights(ty, &x, &mut row).map_err(std::io::Error::other)?;
                out.write_all(&row)?;
            }
        }
    }
    Ok(())
}
