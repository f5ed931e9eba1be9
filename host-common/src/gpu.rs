//! `-ngl`: a device's first layers on its GPU, through core's
//! `LayerBackend` seam (the `prima-gpu` crate, behind the `gpu` feature).
//! With no adapter, a failing one, or a build without the feature, one line
//! says so and every layer runs on the CPU.

use std::ops::Range;

use anyhow::Context;
use prima_core::model::{Config, LayerBackend};
use prima_core::{Gguf, Model, Parts};

/// What a build without the `gpu` feature says when asked for a GPU.
#[cfg_attr(feature = "gpu", allow(dead_code))]
const NOT_BUILT: &str = "this prima was built without the GPU backend (cargo feature `gpu`)";

/// What the command line asked of the GPU.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuChoice {
    /// Layers to run on the GPU, spread over the device's windows, the
    /// first of each (more than it holds: all).
    pub layers: usize,
    /// Adapter index in `prima devices` order; the best one when unset.
    pub device: Option<usize>,
}

impl GpuChoice {
    /// The choice once Halda planned `planned` GPU layers for the device
    /// (`None`: it did not plan them): no more than `-ngl` allows.
    pub fn within(self, planned: Option<usize>) -> Self {
        Self { layers: planned.map_or(self.layers, |p| p.min(self.layers)), ..self }
    }
}

/// The model this device's CPU runs, and the backend running the layers
/// before it on the GPU (with `slots` caches of `n_ctx`), if any: with
/// `choice.layers` = 0 or no usable GPU, the whole model and no backend.
pub fn split<'a>(
    g: &Gguf<'a>,
    choice: GpuChoice,
    (slots, n_ctx): (usize, usize),
) -> anyhow::Result<(Model<'a>, Option<Box<dyn LayerBackend>>)> {
    let n_layer = Config::from_gguf(g).context("cannot load model")?.n_layer;
    let all = std::iter::once(0..n_layer).collect::<Vec<_>>();
    let (windows, backends) = split_windows(g, &all, choice, (slots, n_ctx));
    let parts = Parts { windows, embedding: true, output: true };
    let model = Model::load_parts(g, parts, crate::detect_kernels()).context("cannot load model")?;
    Ok((model, single(backends)?))
}

/// The backend of a device whose layers are one window (a session runs one).
pub fn single(backends: Vec<Box<dyn LayerBackend>>) -> anyhow::Result<Option<Box<dyn LayerBackend>>> {
    let mut all = backends.into_iter();
    let first = all.next();
    if all.next().is_some() {
        anyhow::bail!("one device's layers run on its GPU in more than one window");
    }
    Ok(first)
}

/// How many of each window's first layers `layers` GPU layers are: equal
/// shares, the first windows taking what does not divide, and what a short
/// window cannot take going to the others.
pub fn shares(windows: &[Range<usize>], layers: usize) -> Vec<usize> {
    let mut got = vec![0; windows.len()];
    let mut left = layers;
    while left > 0 {
        let before = left;
        for (n, w) in got.iter_mut().zip(windows) {
            if left > 0 && *n < w.len() {
                *n += 1;
                left -= 1;
            }
        }
        if left == before {
            break;
        }
    }
    got
}

/// Splits a device's layer `windows`: `choice.layers` of them go to the GPU
/// (the first of each window, by [`shares`]: one backend per window, with
/// `slots` caches of `n_ctx`), the rest stay for the CPU. Without a usable
/// GPU one line says why and every layer stays.
pub fn split_windows(
    g: &Gguf<'_>,
    windows: &[Range<usize>],
    choice: GpuChoice,
    (slots, n_ctx): (usize, usize),
) -> (Vec<Range<usize>>, Vec<Box<dyn LayerBackend>>) {
    // A device's consecutive windows (one device, several rounds) are one.
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(windows.len());
    for w in windows {
        match merged.last_mut() {
            Some(last) if last.end == w.start => last.end = w.end,
            _ => merged.push(w.clone()),
        }
    }
    let windows = &merged[..];
    let on_gpu: Vec<Range<usize>> = windows
        .iter()
        .zip(shares(windows, choice.layers))
        .filter(|(_, n)| *n > 0)
        .map(|(w, n)| w.start..w.start + n)
        .collect();
    if on_gpu.is_empty() {
        return (windows.to_vec(), Vec::new());
    }
    match offload(g, choice.device, &on_gpu, (slots, n_ctx)) {
        Ok(backends) => {
            for b in &backends {
                eprintln!("gpu: layers {}..{} run on {}", b.layers().start, b.layers().end, b.name());
            }
            let rest = windows.iter().map(|w| {
                let gpu_end = on_gpu.iter().find(|o| o.start == w.start).map_or(w.start, |o| o.end);
                gpu_end..w.end
            });
            (rest.filter(|w| !w.is_empty()).collect(), backends)
        }
        Err(e) => {
            eprintln!("gpu: {e:#}; every layer runs on the CPU");
            (windows.to_vec(), Vec::new())
        }
    }
}

/// One backend per range of `layers`, on one device.
#[cfg(feature = "gpu")]
fn offload(
    g: &Gguf<'_>,
    device: Option<usize>,
    layers: &[Range<usize>],
    (slots, n_ctx): (usize, usize),
) -> anyhow::Result<Vec<Box<dyn LayerBackend>>> {
    let gpu = prima_gpu::Gpu::open(device)?;
    // The GPU's layers are read once from the mapping to upload them.
    let model = Model::load_parts(g, Parts::layers(layers.to_vec()), crate::detect_kernels())?;
    let adapter = gpu.adapter.name.clone();
    let mut backends: Vec<Box<dyn LayerBackend>> = Vec::with_capacity(layers.len());
    for l in layers {
        let backend = prima_gpu::GpuLayers::new(gpu.clone(), &model, l.clone(), slots, n_ctx)
            .with_context(|| format!("cannot put layers {}..{} on {adapter}", l.start, l.end))?;
        backends.push(Box::new(backend));
    }
    Ok(backends)
}

#[cfg(not(feature = "gpu"))]
fn offload(
    _: &Gguf<'_>,
    _: Option<usize>,
    _: &[Range<usize>],
    _: (usize, usize),
) -> anyhow::Result<Vec<Box<dyn LayerBackend>>> {
    anyhow::bail!(NOT_BUILT)
}

/// What `prima profile --gpu` measures with.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuProbe {
    pub device: Option<usize>,
    /// The memory of a GPU with its own (wgpu cannot read it); a GPU that
    /// shares RAM gets the RAM's figures.
    pub mem_bytes: Option<u64>,
}

/// Measures the GPU's product throughput on each of `types` it computes
/// (decode's shape, `budget` each), and its memory.
#[cfg(feature = "gpu")]
pub fn profile(
    probe: &GpuProbe,
    types: impl Iterator<Item = prima_core::GgmlType>,
    ram: &crate::profiler::system::Memory,
    budget: std::time::Duration,
) -> anyhow::Result<prima_core::profile::GpuProfile> {
    use prima_core::profile::{TypeThroughput, MAX_TYPES};
    let gpu = prima_gpu::Gpu::open(probe.device)?;
    let (mut measured, mut best_bytes_per_s) = (heapless::Vec::<TypeThroughput, MAX_TYPES>::new(), 0f64);
    for ty in types.filter(|&t| prima_gpu::supports(t)).take(MAX_TYPES) {
        let (flops, bytes_per_s) = prima_gpu::measure(&gpu, ty, budget)?;
        best_bytes_per_s = best_bytes_per_s.max(bytes_per_s);
        // `take` keeps the list within its bound.
        let _ = measured.push(TypeThroughput { ggml_type: ty.id(), flops: flops as f32 });
    }
    if measured.is_empty() {
        anyhow::bail!("{} computes none of the model's tensor types", gpu.adapter.name);
    }
    let a = &gpu.adapter;
    let (total, free) = match (a.unified, probe.mem_bytes) {
        (_, Some(m)) => (m, m),
        (true, None) => (ram.total, ram.available),
        (false, None) => {
            eprintln!("gpu: {} has its own memory, which wgpu cannot read: give it with --gpu-mem MIB (until then plans give it no layers)", a.name);
            (0, 0)
        }
    };
    Ok(prima_core::profile::GpuProfile {
        name: crate::profiler::bounded(&a.name),
        backend: crate::profiler::bounded(&a.backend),
        vram_total_bytes: total,
        vram_free_bytes: free,
        types: measured,
        mem_read_bytes_per_s: best_bytes_per_s as f32,
        unified: a.unified,
    })
}

#[cfg(not(feature = "gpu"))]
pub fn profile(
    _: &GpuProbe,
    _: impl Iterator<Item = prima_core::GgmlType>,
    _: &crate::profiler::system::Memory,
    _: std::time::Duration,
) -> anyhow::Result<prima_core::profile::GpuProfile> {
    anyhow::bail!(NOT_BUILT)
}

/// `prima devices`: one line per adapter, in the order `--gpu-device` counts them.
pub fn adapter_lines() -> Vec<String> {
    #[cfg(feature = "gpu")]
    {
        let all = prima_gpu::adapters();
        if all.is_empty() {
            return vec!["no GPU adapter found (is a Vulkan, Metal or DX12 driver installed?)".into()];
        }
        all.iter()
            .enumerate()
            .map(|(i, a)| {
                let memory = if a.unified { "shares RAM" } else { "own memory" };
                format!(
                    "{i}: {} ({}, {}, {memory}, buffers up to {} MiB)",
                    a.name,
                    a.backend,
                    a.kind,
                    a.max_buffer_bytes >> 20
                )
            })
            .collect()
    }
    #[cfg(not(feature = "gpu"))]
    vec![NOT_BUILT.into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_layers_are_the_first_of_each_window_in_equal_shares() {
        let two = [0..5, 15..20];
        assert_eq!(shares(&two, 6), [3, 3]);
        assert_eq!(shares(&two, 3), [2, 1]);
        assert_eq!(shares(&two, 99), [5, 5]);
        assert_eq!(shares(&two, 0), [0, 0]);
        assert_eq!(shares(&[3..4, 9..30], 8), [1, 7]);
        assert_eq!(shares(&[], 8), [] as [usize; 0]);
    }

    #[test]
    fn halda_picks_the_count_within_ngl() {
        let ngl = GpuChoice { layers: 8, device: Some(1) };
        assert_eq!(ngl.within(None).layers, 8);
        assert_eq!(ngl.within(Some(3)).layers, 3);
        assert_eq!(ngl.within(Some(20)).layers, 8);
        assert_eq!(ngl.within(Some(3)).device, Some(1));
    }
}
