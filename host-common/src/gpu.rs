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
    /// Layers to run on the GPU, from the first (more than the model has: all).
    pub layers: usize,
    /// Adapter index in `prima devices` order; the best one when unset.
    pub device: Option<usize>,
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
    let (windows, backend) = split_windows(g, &all, choice, (slots, n_ctx));
    let parts = Parts { windows, embedding: true, output: true };
    let model = Model::load_parts(g, parts, crate::detect_kernels()).context("cannot load model")?;
    Ok((model, backend))
}

/// Splits a device's layer `windows`: the first `choice.layers` of the
/// first window go to the GPU (the returned backend, with `slots` caches of
/// `n_ctx`), the rest stay for the CPU. Without a usable GPU one line says
/// why and every layer stays.
pub fn split_windows(
    g: &Gguf<'_>,
    windows: &[Range<usize>],
    choice: GpuChoice,
    (slots, n_ctx): (usize, usize),
) -> (Vec<Range<usize>>, Option<Box<dyn LayerBackend>>) {
    let Some(first) = windows.first().filter(|w| choice.layers > 0 && !w.is_empty()) else {
        return (windows.to_vec(), None);
    };
    let on_gpu = first.start..first.end.min(first.start + choice.layers);
    match offload(g, choice, on_gpu.clone(), (slots, n_ctx)) {
        Ok(backend) => {
            eprintln!("gpu: layers {}..{} run on {}", on_gpu.start, on_gpu.end, backend.name());
            let rest = std::iter::once(on_gpu.end..first.end).filter(|w| !w.is_empty());
            (rest.chain(windows[1..].iter().cloned()).collect(), Some(backend))
        }
        Err(e) => {
            eprintln!("gpu: {e:#}; every layer runs on the CPU");
            (windows.to_vec(), None)
        }
    }
}

#[cfg(feature = "gpu")]
fn offload(
    g: &Gguf<'_>,
    choice: GpuChoice,
    layers: Range<usize>,
    (slots, n_ctx): (usize, usize),
) -> anyhow::Result<Box<dyn LayerBackend>> {
    let gpu = prima_gpu::Gpu::open(choice.device)?;
    // The GPU's layers are read once from the mapping to upload them.
    let parts = Parts::layers(std::iter::once(layers.clone()).collect());
    let model = Model::load_parts(g, parts, crate::detect_kernels())?;
    let adapter = gpu.adapter.name.clone();
    let backend = prima_gpu::GpuLayers::new(gpu, &model, layers.clone(), slots, n_ctx)
        .with_context(|| format!("cannot put layers {}..{} on {adapter}", layers.start, layers.end))?;
    Ok(Box::new(backend))
}

#[cfg(not(feature = "gpu"))]
fn offload(_: &Gguf<'_>, _: GpuChoice, _: Range<usize>, _: (usize, usize)) -> anyhow::Result<Box<dyn LayerBackend>> {
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

/// Measures the GPU's product throughput on the first of `types` it
/// computes (decode's shape), and its memory.
#[cfg(feature = "gpu")]
pub fn profile(
    probe: &GpuProbe,
    types: impl Iterator<Item = prima_core::GgmlType>,
    ram: &crate::profiler::system::Memory,
    budget: std::time::Duration,
) -> anyhow::Result<prima_core::profile::GpuProfile> {
    use prima_core::GgmlType;
    let gpu = prima_gpu::Gpu::open(probe.device)?;
    let mut types = types.filter(|&t| t != GgmlType::F32 && prima_gpu::supports(t));
    let ty = types.next().unwrap_or(GgmlType::Q4_0);
    let (flops, bytes_per_s) = prima_gpu::measure(&gpu, ty, budget)?;
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
        vram_total_bytes: total,
        vram_free_bytes: free,
        flops: flops as f32,
        mem_read_bytes_per_s: bytes_per_s as f32,
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
