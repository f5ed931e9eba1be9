//! `prima plan`: Halda's schedule for a model on a set of profiled devices.

use anyhow::{anyhow, Context};
use clap::Args;
use prima_core::cost::ModelCost;
use prima_core::halda::{solve, Problem};
use prima_core::profile::{DeviceProfile, PROFILE_VERSION};
use serde_json::json;
use std::path::PathBuf;

use crate::mapped::MappedFile;

#[derive(Debug, Args)]
pub(super) struct PlanArgs {
    /// Path to a GGUF model file (only its metadata is read).
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// A device profile (JSON), once per device, in ring order; the first is the head.
    #[arg(long = "device", required = true)]
    devices: Vec<PathBuf>,
    /// Context the run will hold (sizes each device's KV cache and buffers).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 2048)]
    ctx: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub(super) fn read_profile(path: &PathBuf) -> anyhow::Result<DeviceProfile> {
    let size = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
    if size > 1 << 20 {
        anyhow::bail!("{} is {size} bytes, too large for a device profile", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let p: DeviceProfile =
        serde_json::from_str(&text).with_context(|| format!("{} is not a device profile", path.display()))?;
    if p.version != PROFILE_VERSION {
        anyhow::bail!("{}: profile format version {}, this build reads {PROFILE_VERSION}", path.display(), p.version);
    }
    Ok(p)
}

pub(super) fn plan(a: PlanArgs) -> anyhow::Result<()> {
    let file = MappedFile::open(&a.model)?;
    let g = file.gguf()?;
    let cost = ModelCost::from_gguf(&g).map_err(|e| anyhow!("{}: {e}", a.model.display()))?;
    let profiles = a.devices.iter().map(read_profile).collect::<anyhow::Result<Vec<_>>>()?;
    if a.ctx == 0 {
        anyhow::bail!("--ctx-size must be at least 1");
    }
    let threads = profiles.first().map_or(1, |p| p.threads as usize);
    let run = crate::stream::run_shape(a.ctx, crate::stream::N_BATCH, prima_core::KvType::F16, threads);
    let problem = Problem::from_profiles(&profiles, &cost, &run).map_err(anyhow::Error::from)?;
    let plan = solve(&problem).map_err(anyhow::Error::from)?;
    let ms = |s: f64| s * 1e3;
    let kept: Vec<_> = plan
        .devices
        .iter()
        .zip(&plan.windows)
        .zip(&plan.times)
        .zip(&plan.gpu_layers)
        .map(|(((&i, &w), t), &gpu)| {
            json!({
                "index": i, "name": profiles[i].name.as_str(), "window": w, "layers": w * plan.k,
                "gpu_layers": gpu, "compute_ms": ms(t.compute_s), "network_ms": ms(t.network_s), "disk_ms": ms(t.disk_s),
            })
        })
        .collect();
    let dropped: Vec<_> = (0..profiles.len())
        .filter(|i| !plan.devices.contains(i))
        .map(|i| json!({"index": i, "name": profiles[i].name.as_str()}))
        .collect();
    if a.json {
        outln!(
            "{}",
            json!({
                "k": plan.k, "tpot_ms": ms(plan.tpot_s), "stall_ms": ms(plan.stall_s), "head_ms": ms(problem.head_s),
                "devices": kept, "dropped": dropped,
            })
        );
        return Ok(());
    }
    outln!(
        "plan: {} of {} devices, {} round(s) per token, predicted {:.2} ms per token (head stages {:.2} ms, disk stalls {:.2} ms)",
        plan.devices.len(),
        profiles.len(),
        plan.k,
        ms(plan.tpot_s),
        ms(problem.head_s),
        ms(plan.stall_s)
    );
    outln!("| device | name | window | layers | gpu layers | compute ms | network ms | disk ms |");
    outln!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for d in &kept {
        outln!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            d["index"],
            d["name"].as_str().unwrap_or("?"),
            d["window"],
            d["layers"],
            d["gpu_layers"],
            d["compute_ms"].as_f64().unwrap_or(0.0),
            d["network_ms"].as_f64().unwrap_or(0.0),
            d["disk_ms"].as_f64().unwrap_or(0.0)
        );
    }
    for d in &dropped {
        outln!("dropped: device {} ({}): the ring is faster without it", d["index"], d["name"].as_str().unwrap_or("?"));
    }
    Ok(())
}
