//! A [`Problem`] from measured device profiles and the model's costs.

use alloc::vec::Vec;

use super::{DeviceCosts, PlanError, Problem};
use crate::cost::{ModelCost, StageCost};
use crate::profile::{DeviceProfile, PageCacheClass};

/// Share of available RAM a plan may fill with weights; the rest is left for
/// the KV cache, buffers and the OS.
pub const RAM_SHARE: f64 = 0.9;
/// Memory every device keeps for itself beyond the weights: the process,
/// its buffers and page tables, and the page cache of the layer file it
/// was sent. Without it, a small device planned to its last megabyte
/// thrashes (seen on the emulated cluster with 520 MB caps).
pub const RUNTIME_RESERVE: f64 = 128.0 * 1024.0 * 1024.0;

/// Bytes of layer weights a device with `ram_available_bytes` may keep in
/// memory, after `reserved_bytes` of other weights (the head's embedding and
/// output head). The plan and the device that runs it both use this, so a
/// window Halda counted as resident is kept resident.
pub fn weight_budget(ram_available_bytes: u64, reserved_bytes: f64) -> f64 {
    (ram_available_bytes as f64 * RAM_SHARE - RUNTIME_RESERVE - reserved_bytes).max(0.0)
}

impl Problem {
    /// Devices in ring order (head first). Each device's layer time is the
    /// slower of its arithmetic (its throughput for every tensor type in the
    /// layer) and reading the layer's weights at its memory bandwidth; its hop
    /// from its link (none measured: no network cost); its memory budget from
    /// its available RAM, less the embedding and output head on the head.
    pub fn from_profiles(profiles: &[DeviceProfile], cost: &ModelCost) -> Result<Self, PlanError> {
        let n_layer = cost.layers.len();
        if n_layer == 0 {
            return Err(PlanError::NoLayers);
        }
        let layer_bytes = cost.layer_bytes() as f64 / n_layer as f64;
        let mut devices = Vec::with_capacity(profiles.len());
        for (i, p) in profiles.iter().enumerate() {
            // A layer takes as long as its arithmetic or its weight reads, whichever is slower.
            let mem = p.mem_read_bytes_per_s as f64;
            if !(mem.is_finite() && mem > 0.0) {
                return Err(PlanError::BadFigure { device: i, field: "memory bandwidth", value: mem });
            }
            let mut per_layer = 0.0;
            for l in &cost.layers {
                per_layer += stage_seconds(p, i, l)?.max(l.bytes() as f64 / mem);
            }
            let layer_s = per_layer / n_layer as f64 + p.kv_write_s as f64;
            let hop_s =
                p.link.map_or(0.0, |l| l.rtt_s as f64 / 2.0 + cost.activation_bytes as f64 / l.bytes_per_s as f64);
            let reserved = if i == 0 { (cost.input.bytes() + cost.output.bytes()) as f64 } else { 0.0 };
            devices.push(DeviceCosts {
                layer_s,
                hop_s,
                budget_bytes: weight_budget(p.ram_available_bytes, reserved),
                disk_bytes_per_s: p.disk_seq_read_bytes_per_s as f64,
                overlaps_disk: p.page_cache != PageCacheClass::Unknown,
            });
        }
        let head_s = match profiles.first() {
            Some(head) => {
                let read_row = cost.input_row_bytes as f64 / head.mem_read_bytes_per_s as f64;
                stage_seconds(head, 0, &cost.output)? + read_row
            }
            None => return Err(PlanError::NoDevices),
        };
        let problem = Self { devices, n_layer, layer_bytes, head_s };
        problem.validate()?;
        Ok(problem)
    }
}

/// Seconds device `i` spends on one token of `stage`.
fn stage_seconds(p: &DeviceProfile, i: usize, stage: &StageCost) -> Result<f64, PlanError> {
    stage
        .types
        .iter()
        .map(|t| match p.flops(t.ty) {
            Some(f) if f.is_finite() && f > 0.0 => Ok(t.flops as f64 / f as f64),
            Some(f) => Err(PlanError::BadFigure { device: i, field: "type throughput", value: f as f64 }),
            None => Err(PlanError::MissingType { device: i, ty: t.ty }),
        })
        .sum()
}
