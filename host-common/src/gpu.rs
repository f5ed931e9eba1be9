//! `-ngl`: a device's first layers on its GPU, through core's
//! `LayerBackend` seam (the `prima-gpu` crate, behind the `gpu` feature).
//! With no adapter, a failing one, or a build without the feature, one line
//! says so and every layer runs on the CPU.

use anyhow::Context;
use prima_core::model::{Config, LayerBackend};
use prima_core::{Gguf, Model, Parts};

/// What the command line asked of the GPU.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuChoice {
    /// Layers to run on the GPU, from the first (more than the model has: all).
    pub layers: usize,
    /// Adapter index in `prima devices` order; the best one when unset.
    pub device: Option<usize>,
}

/// The model this device's CPU runs, and the backend running the layers
/// before it on the GPU, if any: with `choice.layers` = 0 or no usable GPU,
/// the whole model and no backend.
pub fn split<'a>(
    g: &Gguf<'a>,
    choice: GpuChoice,
    n_ctx: usize,
) -> anyhow::Result<(Model<'a>, Option<Box<dyn LayerBackend>>)> {
    let kernels = crate::detect_kernels();
    let whole = |g: &Gguf<'a>| Model::load(g, kernels).context("cannot load model");
    if choice.layers == 0 {
        return Ok((whole(g)?, None));
    }
    let n_layer = Config::from_gguf(g).context("cannot load model")?.n_layer;
    let n_gpu = choice.layers.min(n_layer);
    match offload(g, choice, n_gpu, n_ctx) {
        Ok(backend) => {
            eprintln!("gpu: layers 0..{n_gpu} of {n_layer} run on {}", backend.name());
            let parts = Parts { windows: std::iter::once(n_gpu..n_layer).collect(), embedding: true, output: true };
            let model = Model::load_parts(g, parts, kernels).context("cannot load model")?;
            Ok((model, Some(backend)))
        }
        Err(e) => {
            eprintln!("gpu: {e:#}; every layer runs on the CPU");
            Ok((whole(g)?, None))
        }
    }
}

#[cfg(feature = "gpu")]
fn offload(g: &Gguf<'_>, choice: GpuChoice, n_gpu: usize, n_ctx: usize) -> anyhow::Result<Box<dyn LayerBackend>> {
    let gpu = prima_gpu::Gpu::open(choice.device)?;
    // The GPU's layers are read once from the mapping to upload them.
    let layers = Model::load_parts(g, Parts::layers(std::iter::once(0..n_gpu).collect()), crate::detect_kernels())?;
    let adapter = gpu.adapter.name.clone();
    let backend = prima_gpu::GpuLayers::new(gpu, &layers, 0..n_gpu, 1, n_ctx)
        .with_context(|| format!("cannot put layers 0..{n_gpu} on {adapter}"))?;
    Ok(Box::new(backend))
}

#[cfg(not(feature = "gpu"))]
fn offload(_: &Gguf<'_>, _: GpuChoice, _: usize, _: usize) -> anyhow::Result<Box<dyn LayerBackend>> {
    anyhow::bail!("this prima was built without the GPU backend (cargo feature `gpu`)")
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
    vec!["this prima was built without the GPU backend (cargo feature `gpu`)".into()]
}
