//! The head's check of its profile against the model's own layer.
//!
//! The profile's matrix probe predicts a real decode layer 7-9% fast on the
//! build VM (narrower rows, norms, attention and thread wake-ups are not in
//! it). The head holds layer 0 of every plan, so before planning it times
//! that layer and the probe alternately, call by call: a slowdown of the
//! device that comes and goes then hits both alike, and the ratio stays.

use anyhow::anyhow;
use prima_core::cost::ModelCost;
use prima_core::halda::Problem;
use prima_core::profile::DeviceProfile;
use prima_core::{GgmlType, Gguf, KvCache, KvType, Model, Parts, Workspace};
use std::time::Instant;

use super::compute::MatvecProbe;
use crate::pool::Pool;

/// Probe calls and layer steps timed, alternately.
const PAIRS: usize = 15;

/// How a real layer compares with its profile-based prediction.
#[derive(Debug, Clone, Copy)]
pub struct LayerCheck {
    /// Seconds per layer per token, as Halda predicts from `profile`.
    pub predicted_s: f64,
    /// Measured, per layer per token, with the device as fast as it was when
    /// profiled (the median over pairs of layer time over probe slowdown).
    pub measured_s: f64,
}

/// Bounds on the correction: beyond them the check measured something other
/// than the kernels' fit to this model (a stall, a page fault storm), so it
/// is only partly believed.
const MIN_CORRECTION: f64 = 0.75;
const MAX_CORRECTION: f64 = 1.5;

impl LayerCheck {
    /// Measured over predicted.
    pub fn ratio(&self) -> f64 {
        self.measured_s / self.predicted_s
    }

    /// What every device's layer time is scaled by: [`LayerCheck::ratio`],
    /// bounded.
    pub fn correction(&self) -> f64 {
        self.ratio().clamp(MIN_CORRECTION, MAX_CORRECTION)
    }
}

/// Times decode steps of `g`'s layer 0 against the probe for the layer's
/// main tensor type, on `pool`, and compares them with `profile`'s prediction.
pub fn check_layer(g: &Gguf<'_>, profile: &DeviceProfile, pool: &Pool) -> anyhow::Result<LayerCheck> {
    let cost = ModelCost::from_gguf(g).map_err(anyhow::Error::from)?;
    // Only the layer time is used: the run's shape does not matter here.
    let run = crate::stream::run_shape(1, 1, prima_core::KvType::F16, 1);
    let problem = Problem::from_profiles(core::slice::from_ref(profile), &cost, &run).map_err(anyhow::Error::from)?;
    let predicted_s = problem.devices[0].layer_s;
    let main: GgmlType = cost
        .layers
        .first()
        .and_then(|l| l.types.iter().max_by_key(|t| t.flops))
        .map(|t| t.ty)
        .ok_or_else(|| anyhow!("the model has no layer tensors"))?;
    let profiled_flops =
        profile.flops(main).map(f64::from).ok_or_else(|| anyhow!("no {main} figure in the profile"))?;

    let kernels = crate::detect_kernels();
    let model =
        Model::load_parts(g, Parts::layers(core::iter::once(0..1).collect()), kernels).map_err(anyhow::Error::from)?;
    let c = &model.config;
    let mut kv = KvCache::with_type(core::iter::once(0..1).collect(), PAIRS + 1, c.kv_dim(), KvType::F16);
    let mut ws = Workspace::default();
    let input: Vec<f32> = (0..c.n_embd).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
    let mut hidden = input.clone();
    let mut probe = MatvecProbe::new(main);
    pool.enter(|| {
        // Warm-up: faults the layer's weights in, and the probe's pages.
        probe.call(&kernels, pool);
        model.forward_layers_at(0..1, 0, &mut kv, &mut hidden, &mut ws, pool).map_err(anyhow::Error::from)?;
        let mut ratios = Vec::with_capacity(PAIRS);
        for pos in 1..=PAIRS {
            let t = Instant::now();
            probe.call(&kernels, pool);
            let probe_flops = probe.flops_per_call() / t.elapsed().as_secs_f64();
            hidden.copy_from_slice(&input);
            let t = Instant::now();
            model.forward_layers_at(0..1, pos, &mut kv, &mut hidden, &mut ws, pool).map_err(anyhow::Error::from)?;
            let layer_s = t.elapsed().as_secs_f64();
            // This layer step as it would have run at the profiled speed.
            ratios.push(layer_s * probe_flops / profiled_flops);
        }
        ratios.sort_by(f64::total_cmp);
        Ok(LayerCheck { predicted_s, measured_s: ratios[PAIRS / 2] })
    })
}
