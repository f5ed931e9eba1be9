//! Flags that put a command on a ring of workers, shared by every command
//! that evaluates a model.

use anyhow::anyhow;
use clap::{Args, ValueEnum};
use prima_core::ring::wire::ActType;
use prima_core::Gguf;

use crate::forward::Step;
use crate::generate::{Evaluate, SessionShape};
use crate::gpu::GpuChoice;
use std::path::Path;
use std::time::Duration;

use crate::mapped::MappedFile;
use crate::pool::Pool;
use crate::profiler::{self, system, Options};
use crate::ring::head::{Handshake, Ring, RingOptions};
use crate::ring::recover::{Models, Resilient};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum ActArg {
    /// Half the bytes on the wire; results differ from one device by f16 rounding.
    F16,
    /// Exact hidden states: a ring matches one device bit for bit (the default).
    F32,
}

#[derive(Debug, Args)]
pub(crate) struct RingArgs {
    /// Run on a ring: the head (this process) and `prima worker` addresses, comma-separated, in ring order;
    /// `auto` finds the workers on the LAN that announce this ring's key (mDNS).
    #[arg(long, value_delimiter = ',')]
    ring: Vec<String>,
    /// With `--ring auto`: seconds to listen for workers' announcements.
    #[arg(long = "discover-time", default_value_t = 2.0, value_name = "SECS")]
    discover_time: f64,
    /// Layers per device per round, head first (such as 10,10,10), or `auto` for Halda's plan.
    #[arg(long = "layer-window", default_value = "auto")]
    layer_window: String,
    /// Element type of the hidden states sent between devices.
    #[arg(long = "act", value_enum, default_value = "f32")]
    act: ActArg,
    /// Seconds of silence from a worker before it counts as dead.
    #[arg(long = "peer-timeout", default_value_t = 10.0)]
    peer_timeout: f64,
    /// Memory this device may use, in MiB (default: what the OS says is
    /// available). Layers that do not fit stream from disk.
    #[arg(long = "mem", value_name = "MIB")]
    mem: Option<u64>,
    #[command(flatten)]
    key: super::key::KeyArg,
}

impl RingArgs {
    /// Connects to the ring's workers and plans it for the session's
    /// `slots` sequences of `n_ctx` tokens, leaving the head `beside` bytes
    /// for what else it holds (a draft model) and running its first layers
    /// on its GPU as `gpu` asks, or `None` without `--ring`.
    pub fn handshake(
        &self,
        (file, g, model_path): (&MappedFile, &Gguf<'_>, &Path),
        shape: &SessionShape,
        gpu: GpuChoice,
        pool: &Pool,
    ) -> anyhow::Result<Option<Handshake>> {
        let SessionShape { n_ctx, slots, kv, beside, .. } = *shape;
        // Before anything reads a memory figure: the profile, then the session.
        if let Some(mib) = self.mem {
            profiler::system::limit_memory_mib(mib)?;
        }
        if self.ring.is_empty() {
            if self.layer_window != "auto" {
                anyhow::bail!("--layer-window needs --ring");
            }
            return Ok(None);
        }
        if !(self.peer_timeout.is_finite() && self.peer_timeout > 0.0) {
            anyhow::bail!("--peer-timeout must be a positive number of seconds");
        }
        let key = self.key.load()?;
        let addrs = self.addresses(key.as_ref())?;
        let windows = match self.layer_window.as_str() {
            "auto" => None,
            list => Some(
                list.split(',')
                    .map(|w| {
                        w.trim().parse::<usize>().map_err(|_| anyhow!("--layer-window: '{w}' is not a layer count"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?,
            ),
        };
        let (head_profile, layer_check) = match windows {
            Some(_) => (None, None),
            None => {
                let profile = head_profile(g, model_path, gpu, pool)?;
                // Layer 0 is the head's in every plan: read it ahead for the check.
                file.load_ahead(crate::stream::layer_spans(g).get(&0).cloned())?;
                let check = profiler::calibrate::check_layer(g, &profile, pool)?;
                (Some(profile), Some(check))
            }
        };
        let opts = RingOptions {
            addrs,
            windows,
            act: match self.act {
                ActArg::F16 => ActType::F16,
                ActArg::F32 => ActType::F32,
            },
            n_ctx,
            slots,
            kv,
            peer_timeout: Duration::from_secs_f64(self.peer_timeout),
            head_profile,
            layer_check,
            key,
            beside,
            layer_factors: Vec::new(),
            gpu,
        };
        Handshake::connect(opts, g).map(Some)
    }
}

impl RingArgs {
    /// With `--ring auto` and Halda's windows: the key to look for more
    /// workers with, and how long each look listens.
    #[cfg(feature = "server")]
    pub fn keeps_discovering(&self) -> anyhow::Result<Option<(Option<crate::link::RingKey>, Duration)>> {
        if self.ring != ["auto"] || self.layer_window != "auto" {
            return Ok(None);
        }
        Ok(Some((self.key.load()?, Duration::from_secs_f64(self.discover_time))))
    }

    /// The workers' addresses: as given, or found on the LAN for `auto`.
    fn addresses(&self, key: Option<&crate::link::RingKey>) -> anyhow::Result<Vec<String>> {
        if self.ring != ["auto"] {
            return Ok(self.ring.clone());
        }
        if !(self.discover_time.is_finite() && self.discover_time > 0.0 && self.discover_time <= 600.0) {
            anyhow::bail!("--discover-time must be a number of seconds between 0 and 600");
        }
        let wait = Duration::from_secs_f64(self.discover_time);
        #[cfg(feature = "discovery")]
        return crate::ring::discover::discover(key, wait);
        #[cfg(not(feature = "discovery"))]
        {
            let _ = (key, wait);
            anyhow::bail!("--ring auto needs a build with the `discovery` feature")
        }
    }
}

/// The head measures itself quickly for Halda, on the model's tensor
/// types, its GPU too when it is to run layers.
fn head_profile(
    g: &Gguf<'_>,
    model_path: &Path,
    gpu: GpuChoice,
    pool: &Pool,
) -> anyhow::Result<prima_core::profile::DeviceProfile> {
    let mut types: Vec<_> = g.tensors().iter().map(|t| t.ty).collect();
    types.sort_by_key(|t| t.id());
    types.dedup();
    let cost = prima_core::cost::ModelCost::from_gguf(g).map_err(anyhow::Error::from)?;
    let opts = Options {
        name: system::host_name(),
        types,
        kv_dim: (cost.kv_bytes_per_token_layer / 4) as usize,
        dir: model_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf(),
        peer: None,
        peer_key: None,
        quick: true,
        quick_cpu_budget: profiler::QUICK_CPU_BUDGET,
        gpu: (gpu.layers > 0).then_some(crate::gpu::GpuProbe { device: gpu.device, mem_bytes: None }),
    };
    profiler::run(&opts, pool, &mut |_| {})
}

impl Evaluate for Ring<'_, '_> {
    fn slots(&self) -> usize {
        Ring::slots(self)
    }
    fn clear(&mut self, slot: usize) {
        Ring::clear(self, slot);
    }
    fn truncate(&mut self, slot: usize, pos: usize) {
        Ring::truncate(self, slot, pos);
    }
    fn step(&mut self, steps: &[Step<'_>]) -> anyhow::Result<Vec<f32>> {
        Ring::step(self, steps)
    }
    fn idle(&mut self) -> anyhow::Result<bool> {
        Ring::idle(self).map(|()| true)
    }
    fn ring(&self) -> Option<&Ring<'_, '_>> {
        Some(self)
    }
}

/// Starts the evaluator: a ring that re-plans around lost devices when
/// there is a handshake (its head's models live in `models`), else a local
/// session of the whole model.
pub(crate) fn evaluator<'m, 'a>(
    hs: Option<Handshake>,
    models: &'m Models<'a>,
    file: &'m MappedFile,
    pool: &'m Pool,
    g: &'m Gguf<'a>,
    shape: SessionShape,
    gpu: GpuChoice,
) -> anyhow::Result<Box<dyn Evaluate + 'm>> {
    Ok(match hs {
        Some(hs) => Box::new(Resilient::new(hs, models, file, pool, g, shape)?),
        None => {
            let (model, offload) = crate::gpu::split(g, gpu, (shape.slots.max(1), shape.n_ctx))?;
            crate::generate::local_with(models.alloc(model), file, g, shape, pool, offload)?
        }
    })
}
