//! A ring that survives a lost device. When a worker dies, stalls past
//! `--peer-timeout` or breaks the protocol mid-request, the head lets the
//! others go, plans a new ring without it (Halda over the devices left, or
//! the dead device's windows given to the device before it when the windows
//! were fixed), ships layers where they are missing, rebuilds every KV
//! cache by evaluating again what was evaluated so far, in the same calls,
//! and carries on. Replaying the same calls makes the same arithmetic, so
//! the tokens are exactly those of one device.

use anyhow::{anyhow, bail};
use prima_core::{Gguf, Model, Want};
use std::time::{Duration, Instant};
use typed_arena::Arena;

use super::driver::PeerLost;
use super::head::{Handshake, Ring, RingOptions};
use crate::generate::{Evaluate, Local, SessionShape};
use crate::mapped::MappedFile;
use crate::pool::Pool;

/// The head's models: each new plan may give the head other layers, and a
/// ring borrows its head's model, so they live as long as the run.
pub type Models<'a> = Arena<Model<'a>>;

/// The evaluator for a planned ring: the ring itself, or one device when
/// the plan keeps every layer on the head. `model` holds the head's part.
pub fn start<'m, 'a>(
    hs: Handshake,
    model: &'m Model<'a>,
    file: &'m MappedFile,
    pool: &'m Pool,
    g: &Gguf<'_>,
    shape: SessionShape,
) -> anyhow::Result<Box<dyn Evaluate + 'm>> {
    Ok(if hs.kept.len() > 1 {
        Box::new(hs.start(model, file, pool, g)?)
    } else {
        eprintln!("notice: Halda's plan runs every layer on the head; the workers are left out");
        Box::new(Local::new(model, file, g, shape, pool)?)
    })
}

/// A ring evaluator that re-plans around lost devices.
pub struct Resilient<'m, 'a> {
    current: Option<Box<dyn Evaluate + 'm>>,
    models: &'m Models<'a>,
    file: &'m MappedFile,
    pool: &'m Pool,
    g: &'m Gguf<'a>,
    shape: SessionShape,
    opts: RingOptions,
    /// Every successful call so far, to replay on a new ring.
    history: Vec<Vec<u32>>,
    /// Recoveries so far: what was lost, and how long the new ring took.
    pub recoveries: Vec<Recovery>,
}

/// One lost device, and the ring that replaced it.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub lost: String,
    pub why: String,
    /// From the failure to the new ring's KV caches rebuilt.
    pub took: Duration,
    pub devices_left: usize,
}

impl<'m, 'a> Resilient<'m, 'a> {
    pub fn new(
        hs: Handshake,
        models: &'m Models<'a>,
        file: &'m MappedFile,
        pool: &'m Pool,
        g: &'m Gguf<'a>,
        shape: SessionShape,
    ) -> anyhow::Result<Self> {
        let opts = hs.options().clone();
        let model = models.alloc(head_model(g, &hs)?);
        let current = Some(start(hs, model, file, pool, g, shape)?);
        Ok(Self { current, models, file, pool, g, shape, opts, history: Vec::new(), recoveries: Vec::new() })
    }

    fn current(&mut self) -> anyhow::Result<&mut Box<dyn Evaluate + 'm>> {
        self.current.as_mut().ok_or_else(|| anyhow!("the ring was lost and not replaced"))
    }

    /// Plans a ring without the device at ring position `position` and
    /// brings it to where the lost one was.
    fn recover(&mut self, position: usize, why: String) -> anyhow::Result<()> {
        let start_time = Instant::now();
        let addrs = match self.current.as_ref().and_then(|c| c.ring()) {
            Some(r) => r.addrs.clone(),
            None => bail!("lost a device without a ring: {why}"),
        };
        let lost = addrs.get(position.wrapping_sub(1)).cloned().ok_or_else(|| anyhow!("{why}"))?;
        eprintln!("ring: lost {lost} ({why}); planning a ring without it");
        // The others end their sessions when the old ring goes.
        self.current = None;
        let mut opts = self.opts.clone();
        let index = opts.addrs.iter().position(|a| *a == lost).ok_or_else(|| anyhow!("{why}"))?;
        opts.addrs.remove(index);
        if let Some(w) = &mut opts.windows {
            // Fixed windows: the lost device's layers go to the device before
            // it, so every round still runs the layers in order.
            let gone = w.remove(index + 1);
            w[index] += gone;
        }
        let hs = if opts.addrs.is_empty() { None } else { Some(Handshake::connect(opts.clone(), self.g)?) };
        self.opts = opts;
        let next: Box<dyn Evaluate + 'm> = match hs {
            Some(hs) => {
                let model = self.models.alloc(head_model(self.g, &hs)?);
                start(hs, model, self.file, self.pool, self.g, self.shape)?
            }
            None => {
                eprintln!("ring: no worker is left; the head runs every layer");
                let model = Model::load(self.g, crate::detect_kernels()).map_err(anyhow::Error::from)?;
                let model = self.models.alloc(model);
                Box::new(Local::new(model, self.file, self.g, self.shape, self.pool)?)
            }
        };
        let current = self.current.insert(next);
        // The layers' arithmetic does not depend on which logits are wanted.
        for tokens in &self.history {
            current.eval(tokens, Want::None)?;
        }
        let devices_left = current.ring().map_or(1, |r| r.plan.devices());
        let took = start_time.elapsed();
        eprintln!("ring: recovered in {:.2} s on {devices_left} devices", took.as_secs_f64());
        self.recoveries.push(Recovery { lost, why, took, devices_left });
        Ok(())
    }
}

impl Resilient<'_, '_> {
    /// Recovers from a lost device, or passes any other error on.
    fn after_failure(&mut self, e: anyhow::Error) -> anyhow::Result<()> {
        let Some(lost) = e.downcast_ref::<PeerLost>() else { return Err(e) };
        if self.recoveries.len() >= MAX_RECOVERIES {
            return Err(e.context(format!("{MAX_RECOVERIES} devices lost in one run")));
        }
        let (position, why) = (lost.position, lost.message.clone());
        self.recover(position, why).map_err(|r| r.context(format!("cannot recover from: {e}")))
    }
}

/// The head's part of a planned ring.
fn head_model<'a>(g: &Gguf<'a>, hs: &Handshake) -> anyhow::Result<Model<'a>> {
    Model::load_parts(g, hs.head_parts(), crate::detect_kernels())
        .map_err(anyhow::Error::from)
        .map_err(|e| e.context("cannot load the head's layers"))
}

/// Most devices lost in one run before it gives up.
const MAX_RECOVERIES: usize = 8;

impl Evaluate for Resilient<'_, '_> {
    fn eval(&mut self, tokens: &[u32], want: Want) -> anyhow::Result<Vec<f32>> {
        loop {
            match self.current()?.eval(tokens, want) {
                Ok(logits) => {
                    self.history.push(tokens.to_vec());
                    return Ok(logits);
                }
                Err(e) => self.after_failure(e)?,
            }
        }
    }

    fn reset(&mut self) {
        self.history.clear();
        if let Some(c) = self.current.as_mut() {
            c.reset();
        }
    }

    fn idle(&mut self) -> anyhow::Result<bool> {
        match self.current()?.idle() {
            Ok(more) => Ok(more),
            Err(e) => self.after_failure(e).map(|()| true),
        }
    }

    fn ring(&self) -> Option<&Ring<'_, '_>> {
        self.current.as_ref().and_then(|c| c.ring())
    }

    fn disk_stall(&self) -> Option<Duration> {
        self.current.as_ref().and_then(|c| c.disk_stall())
    }

    fn predicted_peak(&self) -> Option<u64> {
        self.current.as_ref().and_then(|c| c.predicted_peak())
    }
}
