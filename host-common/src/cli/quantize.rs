//! `prima quantize IN OUT TYPE`: llama-quantize's job. Each weight matrix
//! is dequantized a batch of rows at a time and quantized to the type the
//! scheme picks; everything else is copied. The result is written beside
//! OUT and renamed into place only when whole.

use anyhow::{bail, Context};
use clap::Args;
use prima_core::gguf::write::{layer_of, Writer};
use prima_core::gguf::TensorInfo;
use prima_core::quant::dequant::dequantize_row;
use prima_core::quant::scheme::{Role, Scheme};
use prima_core::quant::{can_quantize, quantize_weights};
use prima_core::GgmlType;
use rayon::prelude::*;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::mapped::MappedFile;

#[derive(Debug, Args)]
pub(super) struct QuantizeArgs {
    /// The model to quantize (F32, F16, BF16 or any type prima reads).
    input: PathBuf,
    /// Where to write the result.
    output: PathBuf,
    /// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M, Q4_K_S, Q4_K_M,
    /// Q5_K_S, Q5_K_M, Q6_K, F16, BF16 or F32.
    #[arg(value_name = "TYPE")]
    ty: String,
    /// Threads (default: one per core).
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

/// Rows converted per batch, and the most bytes a batch's output holds:
/// bound the memory a huge matrix (or a file claiming very long rows) needs.
const ROWS_PER_BATCH: usize = 256;
const BATCH_BYTES: usize = 64 << 20;

/// What happens to one tensor.
struct Step<'a> {
    info: &'a TensorInfo<'a>,
    to: GgmlType,
    n_bytes: u64,
}

/// The target type of each tensor: matrices follow the scheme, and vectors
/// (norms, biases) and anything else keep their type.
fn plan<'a>(g: &'a prima_core::Gguf<'a>, scheme: &Scheme) -> anyhow::Result<Vec<Step<'a>>> {
    let arch = g.get_str("general.architecture")?;
    let n_layer = g.get_u64(&format!("{arch}.block_count")).unwrap_or(0) as usize;
    let tied = g.tensor("output.weight").is_none();
    let mut steps = Vec::new();
    for t in g.tensors() {
        let n = t.dims[0] as usize;
        let matrix = t.n_dims >= 2 && t.name.ends_with(".weight");
        let to = match matrix {
            true => Scheme::fallback(scheme.type_for(Role::of(t.name, tied), layer_of(t.name), n_layer), n),
            false => t.ty,
        };
        if to != t.ty && !t.ty.is_supported() {
            bail!("tensor {} is {}, which prima cannot read to convert", t.name, t.ty);
        }
        debug_assert!(to == t.ty || can_quantize(to));
        steps.push(Step { info: t, to, n_bytes: (to.row_bytes(n) as u64) * t.n_rows() });
    }
    Ok(steps)
}

pub(super) fn quantize(a: QuantizeArgs) -> anyhow::Result<()> {
    let Some(scheme) = Scheme::from_name(&a.ty) else {
        let names: Vec<_> = Scheme::names().collect();
        bail!("unknown type {:?}: use one of {}", a.ty, names.join(", "));
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or_else(crate::pool::Pool::default_threads).max(1))
        .build()?;
    let start = Instant::now();
    let input = MappedFile::open(&a.input)?;
    let g = input.gguf()?;
    let steps = plan(&g, &scheme)?;
    let mut w = Writer::new();
    w.copy_metadata(&g, |k| k != "general.file_type");
    w.kv_u32("general.file_type", scheme.file_type);
    let offsets: Vec<u64> =
        steps.iter().map(|s| w.tensor(s.info.name, &s.info.dims[..s.info.n_dims as usize], s.to, s.n_bytes)).collect();
    let header = w.header();
    let mut partial = a.output.clone().into_os_string();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    let written = pool.install(|| write(&partial, &header, w.file_len(), &g, &steps, &offsets));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &a.output)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), a.output.display()))?;
    let changed = steps.iter().filter(|s| s.to != s.info.ty).count();
    eprintln!(
        "wrote {} as {} ({:.1} MB from {:.1} MB, {changed} of {} tensors converted) in {:.1} s",
        a.output.display(),
        scheme.name,
        w.file_len() as f64 / 1e6,
        input.bytes().len() as f64 / 1e6,
        steps.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write(
    path: &Path,
    header: &[u8],
    file_len: u64,
    g: &prima_core::Gguf<'_>,
    steps: &[Step<'_>],
    offsets: &[u64],
) -> anyhow::Result<()> {
    let full = || format!("cannot write {} (is the disk full?)", path.display());
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.set_len(file_len).with_context(full)?;
    let mut out = BufWriter::with_capacity(8 << 20, file);
    out.write_all(header).with_context(full)?;
    let base = header.len() as u64;
    for (s, &off) in steps.iter().zip(offsets) {
        out.seek(SeekFrom::Start(base + off)).with_context(full)?;
        let data = g.tensor_data(s.info);
        if s.to == s.info.ty {
            out.write_all(data).with_context(full)?;
            continue;
        }
        let n = s.info.dims[0] as usize;
        let (in_row, out_row) = (s.info.ty.row_bytes(n), s.to.row_bytes(n));
        let per_batch = (BATCH_BYTES / out_row.max(1)).clamp(1, ROWS_PER_BATCH);
        let mut batch = vec![0u8; out_row * per_batch];
        for rows in data.chunks(in_row * per_batch) {
            let got = &mut batch[..rows.len() / in_row * out_row];
            got.par_chunks_mut(out_row).zip(rows.par_chunks(in_row)).try_for_each_init(
                || vec![0.0f32; n],
                |x, (o, r)| -> anyhow::Result<()> {
                    dequantize_row(s.info.ty, r, x).with_context(|| format!("tensor {}", s.info.name))?;
                    quantize_weights(s.to, x, o).with_context(|| format!("tensor {}", s.info.name))?;
                    Ok(())
                },
            )?;
            out.write_all(got).with_context(full)?;
        }
    }
    out.flush().with_context(full)?;
    out.get_ref().sync_all().with_context(full)?;
    Ok(())
}
