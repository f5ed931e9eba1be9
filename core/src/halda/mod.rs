//! Halda: which devices run which layers, and in how many rounds, so that a
//! token takes the least time.
//!
//! ## The latency model
//!
//! Devices form a ring in the given order; the first is the head (embedding,
//! output head, sampler) and is always kept. A plan keeps a subset `S`, gives
//! each kept device a window of `w_m >= 1` layers and runs `k` rounds per
//! token, with `k * sum(w) = L`. Per round, device `m`:
//! - computes its window: `w_m * layer_s_m`;
//! - hands the activations on to the next kept device: `hop_m`. Only the
//!   head's links are measured (each worker's round trip and bandwidth to
//!   the head give its `hop_s`), so a hop to or from the head takes that
//!   worker's `hop_s`, and a hop between two workers the mean of theirs.
//!   A ring of `s` devices crosses `s` hops a round (the last worker hands
//!   back to the head); a device alone crosses none;
//! - holds `k * w_m` layers and their KV cache, which must fit its memory
//!   budget (else the window is not allowed). What the weights exceed of the
//!   rest is read from disk again every token, `1/k` of it each round:
//!   `disk_m = streamed_m / k / disk_bw_m`. A device that prefetches streams
//!   through a staging area of [`STAGING_LAYERS`] layers: once it streams at
//!   all it keeps that much less resident, and while the rest of the ring
//!   works it can read ahead only what the staging area holds; the rest of
//!   its reads, `rest_m`, fall inside its own turn. One that cannot prefetch
//!   pages in on demand, byte for byte, all inside its turn. A window
//!   larger than the whole budget is allowed: it streams.
//!
//! With `c_m = w_m * layer_s_m + hop_m + rest_m` (a device's turn), the ring's
//! period is `P = max(sum(c_m), max(c_m + disk_m - rest_m))`: no shorter than
//! the ring's work, and no shorter than any device's own read-then-compute
//! cycle. Per token: `T = k * P + head_s` (the head's embedding and output
//! head).
//!
//! A device with a GPU faster than its CPU runs the first `g_m` layers of
//! each window there: as many as the GPU's memory holds with their KV
//! cache, `k * g_m * (layer + kv) <= gpu budget`, at the GPU's layer time.
//! A GPU with its own memory leaves the device's RAM budget to the CPU
//! layers; one that shares RAM (Apple silicon, integrated GPUs) takes its
//! layers out of that same budget, counted once. Per-layer cost is then the
//! GPU's, then the CPU's, then the CPU's plus disk reads: still convex in
//! the window, so the argument below holds.
//!
//! ## The solver, and why it is exact
//!
//! For each device subset and each `k`, consider any bottleneck bound `tau`:
//! every device must satisfy `cycle_m <= tau`, which caps `w_m` (cycles grow
//! with `w_m`). Under those caps, the windows minimising `sum(c_m)` come
//! from a greedy fill (one layer each, then the cheapest next layer
//! anywhere): each `c_m` is convex in `w_m` (linear, then steeper once reads
//! spill out of the staging area), so cheapest-first is optimal. Call that
//! minimum `R(tau)`; it never increases with `tau`. The optimal plan's own
//! bottleneck value is some cycle value, so searching `tau` over those
//! finitely many candidates and taking `min(max(R(tau), tau))` gives the
//! optimum; since `R` falls and `tau` rises, a binary search finds the
//! crossing. Subsets and `k` are enumerated, pruned by a lower bound
//! (`k * sum(hop) + L * min(layer_s)`). Property tests check the result
//! against exhaustive search on thousands of random instances.

mod from_profiles;
mod solve;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;
use core::fmt;

pub use from_profiles::{device_reserve, weight_budget, RAM_SHARE};
pub use solve::{solve, MAX_DEVICES};

/// What the solver needs of one device, derived from its profile and the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceCosts {
    /// Seconds to run one layer for one token (compute plus KV write).
    pub layer_s: f64,
    /// Seconds to carry one token's activations between this device and the
    /// head: half the measured round trip plus the bytes over the measured
    /// bandwidth (the head's own is unused). See [`Problem::hop`].
    pub hop_s: f64,
    /// Bytes the device can fill with layer weights and their KV cache, after
    /// its runtime buffers (negative: it lacks that much to run at all).
    pub budget_bytes: f64,
    /// Sequential disk read speed, for layers that do not fit.
    pub disk_bytes_per_s: f64,
    /// Whether the OS lets it read the next window while others compute.
    pub overlaps_disk: bool,
    /// Its GPU, if it has one.
    pub gpu: Option<GpuCosts>,
}

/// What the solver needs of a device's GPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuCosts {
    /// Seconds to run one layer for one token on the GPU.
    pub layer_s: f64,
    /// Bytes of GPU memory for layers and their KV cache.
    pub budget_bytes: f64,
    /// The GPU's memory is the device's RAM: its layers come out of the
    /// device's budget too (once, not twice).
    pub unified: bool,
}

impl DeviceCosts {
    /// The least time any of its processors takes for a layer.
    pub fn fastest_layer_s(&self) -> f64 {
        self.gpu.map_or(self.layer_s, |g| g.layer_s.min(self.layer_s))
    }
}

/// A scheduling problem: devices in ring order (head first) and the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub devices: Vec<DeviceCosts>,
    pub n_layer: usize,
    /// Bytes of one layer's weights.
    pub layer_bytes: f64,
    /// Bytes of one layer's KV cache for the run's context (never streamed).
    pub kv_layer_bytes: f64,
    /// Seconds per token the head spends on the embedding and output head.
    pub head_s: f64,
}

/// One kept device's share of a token's time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DeviceTime {
    /// Its layers (on the head also the embedding row and the output head).
    pub compute_s: f64,
    pub network_s: f64,
    /// Time reading layers from disk (hidden behind others' work where it overlaps).
    pub disk_s: f64,
}

/// A schedule and its predicted time per output token.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Indices into `Problem::devices` of the kept devices, in ring order.
    pub devices: Vec<usize>,
    /// Layers per round for each kept device.
    pub windows: Vec<usize>,
    /// Rounds per token.
    pub k: usize,
    /// GPU layers per kept device, over all its rounds: the first of each
    /// window's layers.
    pub gpu_layers: Vec<usize>,
    /// Predicted seconds per token.
    pub tpot_s: f64,
    /// Per kept device, per token.
    pub times: Vec<DeviceTime>,
    /// Seconds per token the ring waits on disk beyond its compute and network.
    pub stall_s: f64,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanError {
    NoDevices,
    NoLayers,
    /// A device's figure is NaN, infinite, negative, or (for speeds) zero.
    BadFigure {
        device: usize,
        field: &'static str,
        value: f64,
    },
    /// The model's layer size is not a positive finite number.
    BadLayerBytes(f64),
    /// No device subset can run: the KV cache and runtime buffers do not
    /// fit. `head_short_bytes` is what the head lacks to run every layer alone.
    OutOfMemory {
        head_short_bytes: f64,
    },
    /// More devices than the solver enumerates subsets of.
    TooManyDevices {
        devices: usize,
        max: usize,
    },
    /// A device's profile has no throughput for a tensor type the model uses.
    MissingType {
        device: usize,
        ty: crate::quant::GgmlType,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDevices => f.write_str("no devices to plan for"),
            Self::NoLayers => f.write_str("the model has no layers"),
            Self::BadFigure { device, field, value } => {
                write!(f, "device {device}: {field} is {value}, which no plan can use")
            }
            Self::BadLayerBytes(b) => write!(f, "layer size {b} bytes is not a positive finite number"),
            Self::TooManyDevices { devices, max } => {
                write!(f, "{devices} devices given; plans are made for at most {max}")
            }
            Self::MissingType { device, ty } => {
                write!(f, "device {device}: its profile has no throughput for {ty}, which the model uses (profile it with this model)")
            }
            Self::OutOfMemory { head_short_bytes } => write!(
                f,
                "no plan fits in memory: no worker can take layers, and the head alone is {:.0} MB short of its runtime buffers and every layer's KV cache (weights would stream from disk)",
                head_short_bytes / 1e6
            ),
        }
    }
}

impl core::error::Error for PlanError {}

/// Layers a prefetching device that streams keeps in flight: the one
/// running and the one being read, so that consecutive streamed layers
/// overlap their reads with compute. (One was tried: it kept a layer more
/// resident but lost that overlap, and one device at 40% ran slower.)
pub const STAGING_LAYERS: usize = 2;

/// Bytes of room a device that streams leaves for its staging area (none
/// for one that cannot prefetch: the OS pages on demand).
fn staging_bytes(layer_bytes: f64, prefetches: bool) -> f64 {
    if prefetches {
        STAGING_LAYERS as f64 * layer_bytes
    } else {
        0.0
    }
}

/// Bytes of `weights` kept resident with `room` bytes for them, before
/// clamping: all when they fit, else the room less the staging area (below
/// zero when the staging area is squeezed).
fn resident_unclamped(room: f64, weights: f64, layer_bytes: f64, prefetches: bool) -> f64 {
    if weights <= room {
        weights
    } else {
        room - staging_bytes(layer_bytes, prefetches)
    }
}

/// Bytes of `weights` a device keeps resident with `room` bytes for them:
/// all when they fit, else what is left after [`STAGING_LAYERS`] of room
/// for the layers it streams through. The host keeps whole layers and the
/// head of the next one, to a page.
pub fn resident_weight_bytes(room: f64, weights: f64, layer_bytes: f64, prefetches: bool) -> f64 {
    resident_unclamped(room, weights, layer_bytes, prefetches).clamp(0.0, weights)
}

impl Problem {
    /// Checks every figure, naming the first bad one.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.devices.is_empty() {
            return Err(PlanError::NoDevices);
        }
        if self.n_layer == 0 {
            return Err(PlanError::NoLayers);
        }
        if !(self.layer_bytes.is_finite() && self.layer_bytes > 0.0) {
            return Err(PlanError::BadLayerBytes(self.layer_bytes));
        }
        if !(self.kv_layer_bytes.is_finite() && self.kv_layer_bytes >= 0.0) {
            return Err(PlanError::BadFigure { device: 0, field: "KV bytes per layer", value: self.kv_layer_bytes });
        }
        for (i, d) in self.devices.iter().enumerate() {
            // (A negative budget is a device short of memory: it runs no layer.)
            let checks = [
                ("layer time", d.layer_s, Some(true)),
                ("hop time", d.hop_s, Some(false)),
                ("memory budget", d.budget_bytes, None),
                ("disk speed", d.disk_bytes_per_s, Some(true)),
                ("GPU layer time", d.gpu.map_or(1.0, |g| g.layer_s), Some(true)),
                ("GPU memory budget", d.gpu.map_or(0.0, |g| g.budget_bytes), None),
            ];
            for (field, value, sign) in checks {
                let ok = value.is_finite() && sign.is_none_or(|positive| value >= 0.0 && (!positive || value > 0.0));
                if !ok {
                    return Err(PlanError::BadFigure { device: i, field, value });
                }
            }
        }
        if !(self.head_s.is_finite() && self.head_s >= 0.0) {
            return Err(PlanError::BadFigure { device: 0, field: "head time", value: self.head_s });
        }
        Ok(())
    }

    /// Scales every device's layer time by `ratio`: a measured correction of
    /// the profiles' matrix probe to this model's real layer (see the host's
    /// layer check), assumed to hold alike on every device.
    pub fn scale_layer_times(&mut self, ratio: f64) {
        for d in &mut self.devices {
            d.layer_s *= ratio;
        }
    }

    /// Seconds to hand one token's activations from device `from` to device
    /// `to`: the measured head link of the worker when the head is one end,
    /// else the mean of the two workers' (their own link is not measured).
    pub fn hop(&self, from: usize, to: usize) -> f64 {
        let (a, b) = (self.devices[from].hop_s, self.devices[to].hop_s);
        match (from, to) {
            (0, _) => b,
            (_, 0) => a,
            _ => (a + b) / 2.0,
        }
    }

    /// Each kept device's hop out to the next one round the ring (none alone).
    pub fn ring_hops(&self, devices: &[usize]) -> Vec<f64> {
        if devices.len() < 2 {
            return alloc::vec![0.0; devices.len()];
        }
        let next = devices.iter().skip(1).chain(devices.first());
        devices.iter().zip(next).map(|(&a, &b)| self.hop(a, b)).collect()
    }

    /// Device `m`'s turn (its share of the ring's work), read-then-compute
    /// cycle and disk time per round, with window `w` in `k` rounds and a
    /// hop of `hop` seconds after it, or `None` when its layers' KV cache
    /// alone exceeds its budget. See the module docs.
    pub(crate) fn cycle(&self, m: usize, w: usize, k: usize, hop: f64) -> Option<(f64, f64, f64)> {
        let d = &self.devices[m];
        let g = self.gpu_layers(m, w, k);
        let held = (k * (w - g)) as f64;
        let mut room = d.budget_bytes - held * self.kv_layer_bytes;
        if d.gpu.is_some_and(|gpu| gpu.unified) {
            room -= (k * g) as f64 * (self.layer_bytes + self.kv_layer_bytes);
        }
        if room < 0.0 {
            return None;
        }
        let weights = held * self.layer_bytes;
        // As the host keeps (`resident_weight_bytes`), but not clamped at
        // zero: a staging area squeezed by the KV cache costs as many reads
        // as it lacks, which keeps each device's work convex in its window.
        let resident = resident_unclamped(room, weights, self.layer_bytes, d.overlaps_disk);
        let per_round = (weights - resident) / k as f64;
        let ahead = per_round.min(staging_bytes(self.layer_bytes, d.overlaps_disk));
        let (disk, rest) = (per_round / d.disk_bytes_per_s, (per_round - ahead) / d.disk_bytes_per_s);
        let turn = self.compute_s(m, w, g) + hop + rest;
        Some((turn, turn + disk - rest, disk))
    }

    /// Layers of each window device `m` runs on its GPU, with window `w` in
    /// `k` rounds: as many as its GPU memory holds with their KV cache (a
    /// GPU sharing RAM also within the device's budget), when the GPU is
    /// the faster.
    pub fn gpu_layers(&self, m: usize, w: usize, k: usize) -> usize {
        let d = &self.devices[m];
        let Some(gpu) = d.gpu.filter(|g| g.layer_s < d.layer_s) else { return 0 };
        let budget = if gpu.unified { gpu.budget_bytes.min(d.budget_bytes) } else { gpu.budget_bytes };
        let per_layer = k as f64 * (self.layer_bytes + self.kv_layer_bytes);
        let fits = if per_layer > 0.0 { libm::floor(budget / per_layer).max(0.0) } else { w as f64 };
        (fits as usize).min(w)
    }

    /// Seconds device `m` computes its window `w` per round, `g` of its
    /// layers on its GPU.
    fn compute_s(&self, m: usize, w: usize, g: usize) -> f64 {
        let d = &self.devices[m];
        let gpu_s = d.gpu.map_or(0.0, |gpu| g as f64 * gpu.layer_s);
        gpu_s + (w - g) as f64 * d.layer_s
    }

    /// The full plan for kept `devices` with `windows` and `k`, or `None` if
    /// it is not valid.
    pub fn evaluate(&self, devices: &[usize], windows: &[usize], k: usize) -> Option<Plan> {
        let valid = !devices.is_empty()
            && devices[0] == 0
            && devices.len() == windows.len()
            && k >= 1
            && windows.iter().all(|&w| w >= 1)
            && k * windows.iter().sum::<usize>() == self.n_layer;
        if !valid {
            return None;
        }
        let (mut ring, mut bottleneck) = (0.0f64, 0.0f64);
        let mut times = Vec::with_capacity(devices.len());
        let mut gpu_layers = Vec::with_capacity(devices.len());
        for ((&m, &w), hop) in devices.iter().zip(windows).zip(self.ring_hops(devices)) {
            let (work, cycle, disk) = self.cycle(m, w, k, hop)?;
            ring += work;
            bottleneck = bottleneck.max(cycle);
            let kf = k as f64;
            let g = self.gpu_layers(m, w, k);
            let compute_s = kf * self.compute_s(m, w, g);
            times.push(DeviceTime { compute_s, network_s: kf * hop, disk_s: kf * disk });
            gpu_layers.push(k * g);
        }
        // The head's embedding row and output head are its compute too.
        times[0].compute_s += self.head_s;
        let period = ring.max(bottleneck);
        let busy: f64 = times.iter().map(|t| t.compute_s + t.network_s).sum();
        let tpot_s = k as f64 * period + self.head_s;
        Some(Plan {
            devices: devices.to_vec(),
            windows: windows.to_vec(),
            k,
            gpu_layers,
            tpot_s,
            times,
            stall_s: (tpot_s - busy).max(0.0),
        })
    }
}
