use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;

use super::loaded::{tokenizer, Loaded};
use super::ModelArgs;

#[derive(Debug, Args)]
pub(super) struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text to tokenize.
    #[arg(short = 'p', long = "prompt")]
    prompt: String,
    /// Treat special-token text as plain text and add no BOS/EOS.
    #[arg(long)]
    no_special: bool,
    #[arg(long)]
    json: bool,
}

pub(super) fn tokenize(a: TokenizeArgs) -> anyhow::Result<()> {
    a.model.cpu_only("tokenize")?;
    let l = Loaded::open(&a.model)?;
    let g = l.gguf()?;
    let tok = tokenizer(&g)?;
    let ids = tok.encode(&a.prompt, !a.no_special, !a.no_special);
    let pieces: Vec<String> = ids
        .iter()
        .map(|&id| {
            let mut b = Vec::new();
            tok.token_bytes(id, true, &mut b);
            String::from_utf8_lossy(&b).into_owned()
        })
        .collect();
    if a.json {
        outln!("{}", json!({ "ids": ids, "pieces": pieces }));
    } else {
        for (id, p) in ids.iter().zip(&pieces) {
            outln!("{id:>7} {p:?}");
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    json: bool,
}

pub(super) fn info(a: InfoArgs) -> anyhow::Result<()> {
    a.model.cpu_only("info")?;
    let bar = ProgressBar::new_spinner().with_message(format!("mapping and validating {}", a.model.model.display()));
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let l = Loaded::open(&a.model)?;
    let g = l.gguf()?;
    let model = super::loaded::model(&g);
    bar.finish_and_clear();
    let mut hist: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in g.tensors() {
        let e = hist.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
    }
    let n_params: u64 = g.tensors().iter().map(|t| t.n_elements()).sum();
    let arch = g.get_str("general.architecture").unwrap_or("?");
    let name = g.get_str("general.name").unwrap_or("?");
    let file_bytes = l.file.bytes().len();
    if a.json {
        let cfg = model.as_ref().ok().map(|m| format!("{:?}", m.config));
        outln!(
            "{}",
            json!({
                "file": a.model.model, "bytes": file_bytes, "gguf_version": g.version,
                "architecture": arch, "name": name, "parameters": n_params,
                "tensors": g.tensors().len(),
                "types": hist.iter().map(|(k, v)| (k.to_string(), json!({"count": v.0, "bytes": v.1}))).collect::<BTreeMap<_, _>>(),
                "config": cfg, "loadable": model.as_ref().err().map(|e| format!("{e:#}")),
            })
        );
        return Ok(());
    }
    outln!(
        "file:          {} ({:.1} MiB, GGUF v{})",
        a.model.model.display(),
        file_bytes as f64 / 1048576.0,
        g.version
    );
    outln!("architecture:  {arch}");
    outln!("name:          {name}");
    outln!("parameters:    {:.1} M in {} tensors", n_params as f64 / 1e6, g.tensors().len());
    match &model {
        Ok(m) => {
            let c = &m.config;
            outln!(
                "shape:         {} layers, embd {}, ff {}, heads {}/{} (q/kv), head dim {}, vocab {}",
                c.n_layer,
                c.n_embd,
                c.n_ff,
                c.n_head,
                c.n_head_kv,
                c.head_dim,
                c.n_vocab
            );
            outln!(
                "rope:          {:?}, base {}, dims {}; train ctx {}",
                c.rope_kind,
                c.rope_base,
                c.rope_dim,
                c.n_ctx_train
            );
            outln!("kernels:       {}", m.kernels.name());
        }
        Err(e) => outln!("loadable:      no ({e:#})"),
    }
    outln!("tensor types:");
    for (ty, (count, bytes)) in &hist {
        outln!("  {ty:<8} {count:>5} tensors {:>10.1} MiB", *bytes as f64 / 1048576.0);
    }
    Ok(())
}
