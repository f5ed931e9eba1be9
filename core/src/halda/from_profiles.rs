//! A [`Problem`] from measured device profiles and the model's costs.

use alloc::vec::Vec;

use super::{DeviceCosts, GpuCosts, PlanError, Problem};
use crate::cost::{ModelCost, RunShape, StageCost};
use crate::profile::{DeviceProfile, GpuProfile, PageCacheClass};
use crate::quant::GgmlType;

/// Share of available RAM a plan may fill: the rest is the OS's margin
/// (page tables, kernel buffers, estimates of "available" that run high).
pub const RAM_SHARE: f64 = 0.95;

/// Bytes of layer weights and KV cache a device with `ram_available_bytes`
/// may hold, after `reserved_bytes` for the run (its buffers, and on the head
/// the output head). Negative when even those do not fit. The plan and the
/// device that runs it both use this, so a layer Halda counted as resident
/// is kept resident.
pub fn weight_budget(ram_available_bytes: u64, reserved_bytes: f64) -> f64 {
    ram_available_bytes as f64 * RAM_SHARE - reserved_bytes
}

impl Problem {
    /// Devices in ring order (head first). Each device's layer time is the
    /// slower of its arithmetic (its throughput for every tensor type in the
    /// layer) and reading the layer's weights at its memory bandwidth; its hop
    /// from its link (none measured: no network cost); its memory budget from
    /// its available RAM, less what `run` needs beside the layers, and on the
    /// head the output head (the embedding is read a row per token and need
    /// not stay resident, unless it is the output head too).
    pub fn from_profiles(profiles: &[DeviceProfile], cost: &ModelCost, run: &RunShape) -> Result<Self, PlanError> {
        let n_layer = cost.layers.len();
        if n_layer == 0 {
            return Err(PlanError::NoLayers);
        }
        let mut devices = Vec::with_capacity(profiles.len());
        for (i, p) in profiles.iter().enumerate() {
            // A layer takes as long as its arithmetic or its weight reads, whichever is slower.
            let mem = p.mem_read_bytes_per_s as f64;
            if !(mem.is_finite() && mem > 0.0) {
                return Err(PlanError::BadFigure { device: i, field: "memory bandwidth", value: mem });
            }
            let layer_s = mean_layer_s(cost, mem, |l| stage_seconds(p, i, l))? + p.kv_write_s as f64;
            let hop_s =
                p.link.map_or(0.0, |l| l.rtt_s as f64 / 2.0 + cost.activation_bytes as f64 / l.bytes_per_s as f64);
            let reserved = device_reserve(cost, run, i == 0);
            let gpu = match &p.gpu {
                Some(g) => gpu_costs(g, i, cost)?,
                None => None,
            };
            devices.push(DeviceCosts {
                layer_s,
                hop_s,
                budget_bytes: weight_budget(p.ram_available_bytes, reserved),
                disk_bytes_per_s: p.disk_seq_read_bytes_per_s as f64,
                overlaps_disk: p.page_cache != PageCacheClass::Unknown,
                gpu,
            });
        }
        let head_s = match profiles.first() {
            Some(head) => {
                let read_row = cost.input_row_bytes as f64 / head.mem_read_bytes_per_s as f64;
                stage_seconds(head, 0, &cost.output)? + read_row
            }
            None => return Err(PlanError::NoDevices),
        };
        let kv_layer_bytes = cost.kv_bytes_per_layer(run) as f64;
        let layer_bytes = cost.layer_bytes() as f64 / n_layer as f64;
        let problem = Self { devices, n_layer, layer_bytes, kv_layer_bytes, head_s };
        problem.validate()?;
        Ok(problem)
    }
}

/// The mean of each layer's time for one token: its arithmetic
/// (`stage_s`) or its weight reads at `mem` bytes/s, whichever is slower.
fn mean_layer_s(
    cost: &ModelCost,
    mem: f64,
    mut stage_s: impl FnMut(&StageCost) -> Result<f64, PlanError>,
) -> Result<f64, PlanError> {
    let mut total = 0.0;
    for l in &cost.layers {
        total += stage_s(l)?.max(l.bytes() as f64 / mem);
    }
    Ok(total / cost.layers.len() as f64)
}

/// A GPU's layer time, from its throughput on each of the layers' types,
/// and the share of its free memory a plan may fill. A GPU that cannot
/// compute one of the types gets no layers (`None`).
fn gpu_costs(g: &GpuProfile, i: usize, cost: &ModelCost) -> Result<Option<GpuCosts>, PlanError> {
    let mem = g.mem_read_bytes_per_s as f64;
    if !(mem.is_finite() && mem > 0.0) {
        return Err(PlanError::BadFigure { device: i, field: "GPU memory bandwidth", value: mem });
    }
    let computes_all = cost.layers.iter().flat_map(|l| &l.types).all(|t| g.flops(t.ty).is_some());
    if !computes_all {
        return Ok(None);
    }
    let layer_s = mean_layer_s(cost, mem, |l| typed_seconds(l, i, "GPU type throughput", |ty| g.flops(ty)))?;
    Ok(Some(GpuCosts { layer_s, budget_bytes: g.vram_free_bytes as f64 * RAM_SHARE, unified: g.unified }))
}

/// Seconds device `i` spends on one token of `stage`.
fn stage_seconds(p: &DeviceProfile, i: usize, stage: &StageCost) -> Result<f64, PlanError> {
    typed_seconds(stage, i, "type throughput", |ty| p.flops(ty))
}

/// Seconds for one token of `stage` at the throughputs `flops` gives per type.
fn typed_seconds(
    stage: &StageCost,
    i: usize,
    field: &'static str,
    flops: impl Fn(GgmlType) -> Option<f32>,
) -> Result<f64, PlanError> {
    stage
        .types
        .iter()
        .map(|t| match flops(t.ty) {
            Some(f) if f.is_finite() && f > 0.0 => Ok(t.flops as f64 / f as f64),
            Some(f) => Err(PlanError::BadFigure { device: i, field, value: f as f64 }),
            None => Err(PlanError::MissingType { device: i, ty: t.ty }),
        })
        .sum()
}

/// Bytes a device holds for `run` besides its layers' weights and KV cache:
/// its runtime buffers, and on the head the output head.
pub fn device_reserve(cost: &ModelCost, run: &RunShape, head: bool) -> f64 {
    let output = if head { cost.output.bytes() } else { 0 };
    (cost.runtime_bytes(run) + output) as f64
}
