//! A ring that survives a lost device. When a worker dies, stalls past
//! `--peer-timeout` or breaks the protocol mid-request, the head lets the
//! others go, plans a new ring without it (Halda over the devices left, or
//! the dead device's windows given to the device before it when the windows
//! were fixed), ships layers where they are missing, rebuilds every KV
//! cache by evaluating again what was evaluated so far, in the same calls,
//! and carries on. Replaying the same calls makes the same arithmetic, so
//! the tokens are exactly those of one device. Between requests (a serving
//! head), a lost device that accepts connections again is taken back: the
//! ring is planned anew with it.

use anyhow::{anyhow, bail};
use prima_core::{Gguf, LayerBackend, Model};
use std::time::{Duration, Instant};
use typed_arena::Arena;

use super::balance::Balance;
use super::driver::PeerLost;
use super::head::DeviceLost;
use super::head::{Handshake, Ring, RingOptions};
use crate::forward::Step;
use crate::generate::{local_with, Evaluate, SessionShape};
use crate::mapped::MappedFile;
use crate::pool::Pool;

/// The head's models: each new plan may give the head other layers, and a
/// ring borrows its head's model, so they live as long as the run.
pub type Models<'a> = Arena<Model<'a>>;

/// The evaluator for a planned ring: the ring itself, or one device when
/// the plan keeps every layer on the head. `model` holds the head's part.
pub fn start<'m, 'a>(
    hs: Handshake,
    (model, gpu): (&'m Model<'a>, Vec<Box<dyn LayerBackend>>),
    file: &'m MappedFile,
    pool: &'m Pool,
    g: &Gguf<'_>,
    shape: SessionShape,
) -> anyhow::Result<Box<dyn Evaluate + 'm>> {
    Ok(if hs.kept.len() > 1 {
        Box::new(hs.start((model, gpu), file, pool, g)?)
    } else {
        eprintln!("notice: Halda's plan runs every layer on the head; the workers are left out");
        local_with(model, file, g, shape, pool, crate::gpu::single(gpu)?)?
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
    /// The options the run began with: every device, the windows as given.
    original: RingOptions,
    /// Addresses of the devices lost and not back.
    gone: Vec<String>,
    /// When to look for lost devices again, and the wait after that.
    rejoin_at: Instant,
    rejoin_wait: Duration,
    /// A look in progress, on its own thread: the lost devices that answer.
    probe: Option<std::sync::mpsc::Receiver<Vec<String>>>,
    /// Devices that asked to join and were never in a ring: dropped, not
    /// retried, when they do not answer or cannot be planned with.
    newcomers: Vec<String>,
    /// Per slot: the tokens of every successful call since it was
    /// cleared, to replay on a new ring.
    history: Vec<Vec<Vec<u32>>>,
    /// Devices lost since every slot was last empty.
    lost_in_run: usize,
    /// Each device's measured time against Halda's prediction.
    balance: Balance,
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

/// First wait before a lost device is looked for; it doubles after each
/// failed attempt to take one back, up to `REJOIN_MAX_WAIT`.
const REJOIN_WAIT: Duration = Duration::from_secs(2);
const REJOIN_MAX_WAIT: Duration = Duration::from_secs(300);

impl<'m, 'a> Resilient<'m, 'a> {
    pub fn new(
        hs: Handshake,
        models: &'m Models<'a>,
        file: &'m MappedFile,
        pool: &'m Pool,
        g: &'m Gguf<'a>,
        shape: SessionShape,
    ) -> anyhow::Result<Self> {
        let original = hs.options().clone();
        let (model, gpu) = head_model(g, &hs)?;
        let current = Some(start(hs, (models.alloc(model), gpu), file, pool, g, shape)?);
        Ok(Self {
            current,
            models,
            file,
            pool,
            g,
            shape,
            original,
            gone: Vec::new(),
            rejoin_at: Instant::now(),
            rejoin_wait: REJOIN_WAIT,
            probe: None,
            newcomers: Vec::new(),
            history: vec![Vec::new(); shape.slots.max(1)],
            lost_in_run: 0,
            balance: Balance::new(),
            recoveries: Vec::new(),
        })
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
        self.gone.push(lost.clone());
        self.rejoin_at = Instant::now() + REJOIN_WAIT;
        self.rejoin_wait = REJOIN_WAIT;
        let devices_left = self.replan()?;
        let took = start_time.elapsed();
        eprintln!("ring: recovered in {:.2} s on {devices_left} devices", took.as_secs_f64());
        self.recoveries.push(Recovery { lost, why, took, devices_left });
        Ok(())
    }

    /// Replaces the ring with one over the devices not gone, and replays
    /// this run's calls on it. A device that fails meanwhile (in the new
    /// ring's setup or during the replay) is left out too, and the ring
    /// planned again. Returns its number of devices.
    fn replan(&mut self) -> anyhow::Result<usize> {
        loop {
            match self.replan_once() {
                Ok(devices) => return Ok(devices),
                Err(e) => {
                    let Some(addr) = self.failed_device(&e) else { return Err(e) };
                    if self.gone.contains(&addr) || self.lost_in_run >= MAX_RECOVERIES {
                        return Err(e);
                    }
                    eprintln!("ring: lost {addr} while re-planning ({e:#}); planning without it");
                    self.lost_in_run += 1;
                    self.gone.push(addr);
                }
            }
        }
    }

    /// The device an error of a new ring's setup or replay names.
    fn failed_device(&self, e: &anyhow::Error) -> Option<String> {
        if let Some(lost) = e.downcast_ref::<DeviceLost>() {
            return Some(lost.addr.clone());
        }
        let lost = e.downcast_ref::<PeerLost>()?;
        let ring = self.current.as_ref()?.ring()?;
        ring.addrs.get(lost.position.wrapping_sub(1)).cloned()
    }

    fn replan_once(&mut self) -> anyhow::Result<usize> {
        // The others end their sessions when the old ring goes.
        self.current = None;
        let opts = without(&self.original, &self.gone);
        let next: Box<dyn Evaluate + 'm> = if opts.addrs.is_empty() {
            eprintln!("ring: no worker is left; the head runs every layer");
            let (model, gpu) = crate::gpu::split(self.g, opts.gpu, (self.shape.slots.max(1), self.shape.n_ctx))?;
            local_with(self.models.alloc(model), self.file, self.g, self.shape, self.pool, gpu)?
        } else {
            let hs = Handshake::connect(opts, self.g)?;
            let (model, gpu) = head_model(self.g, &hs)?;
            start(hs, (self.models.alloc(model), gpu), self.file, self.pool, self.g, self.shape)?
        };
        self.balance.restart();
        let current = self.current.insert(next);
        // The layers' arithmetic does not depend on which logits are wanted,
        // nor on which sequences share a pass: each slot's calls, in order.
        let calls = self.history.iter().map(Vec::len).max().unwrap_or(0);
        for call in 0..calls {
            let steps: Vec<Step<'_>> = (self.history.iter().enumerate())
                .filter_map(|(slot, h)| Some(Step { slot, tokens: h.get(call)?, rows: 0 }))
                .collect();
            current.step(&steps)?;
        }
        Ok(current.ring().map_or(1, |r| r.plan.devices()))
    }

    /// Between requests: takes back lost devices that answer again, and
    /// devices that asked to join, with the plan they had (or Halda's over
    /// them all). Whether they answer is asked on another thread, so a
    /// device that is off costs the engine no connect timeout.
    fn rejoin(&mut self) -> anyhow::Result<()> {
        if self.gone.is_empty() {
            return Ok(());
        }
        let back = match &self.probe {
            None if Instant::now() >= self.rejoin_at => {
                let (tx, rx) = std::sync::mpsc::channel();
                let (addrs, key) = (self.gone.clone(), self.original.key.clone());
                std::thread::spawn(move || {
                    let back = addrs.into_iter().filter(|a| crate::profiler::probe::ping(a, key.as_ref()).is_ok());
                    let _ = tx.send(back.collect());
                });
                self.probe = Some(rx);
                return Ok(());
            }
            None => return Ok(()),
            Some(rx) => match rx.try_recv() {
                Ok(back) => back,
                Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(()),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => Vec::new(),
            },
        };
        self.probe = None;
        let silent: Vec<String> = self.newcomers.iter().filter(|a| !back.contains(a)).cloned().collect();
        for addr in &silent {
            eprintln!("ring: {addr} asked to join but does not answer; left out");
        }
        self.forget(&silent);
        if back.is_empty() {
            self.rejoin_at = Instant::now() + REJOIN_WAIT;
            return Ok(());
        }
        let t = Instant::now();
        eprintln!("ring: {} answers; planning a ring with it", back.join(", "));
        let before = std::mem::take(&mut self.gone);
        self.gone = before.iter().filter(|a| !back.contains(a)).cloned().collect();
        match self.replan() {
            Ok(devices) => {
                eprintln!("ring: re-planned in {:.2} s on {devices} devices", t.elapsed().as_secs_f64());
                self.newcomers.clear();
                self.rejoin_wait = REJOIN_WAIT;
                Ok(())
            }
            Err(e) => {
                eprintln!("ring: cannot take in {}: {e:#}", back.join(", "));
                self.gone = before;
                let newcomers = std::mem::take(&mut self.newcomers);
                self.forget(&newcomers);
                self.rejoin_wait = (self.rejoin_wait * 2).min(REJOIN_MAX_WAIT);
                self.rejoin_at = Instant::now() + self.rejoin_wait;
                self.replan().map(drop)
            }
        }
    }

    /// Drops devices that joined and never ran from every list.
    fn forget(&mut self, addrs: &[String]) {
        self.original.addrs.retain(|a| !addrs.contains(a));
        self.gone.retain(|a| !addrs.contains(a));
        self.newcomers.retain(|a| !addrs.contains(a));
    }

    /// A device at `addr` asks to join: it is taken in between requests,
    /// when it answers (a lost one is looked for at once).
    fn add_device(&mut self, addr: String) -> anyhow::Result<()> {
        if self.gone.contains(&addr) {
            self.rejoin_at = Instant::now();
            return Ok(());
        }
        if self.original.addrs.contains(&addr) {
            return Ok(()); // already in the ring
        }
        if self.original.windows.is_some() {
            bail!("the ring's windows are fixed (--layer-window); only a ring that Halda plans takes new devices");
        }
        if self.original.addrs.len() + 1 >= MAX_DEVICES {
            bail!("the ring has its {MAX_DEVICES} devices");
        }
        eprintln!("ring: {addr} asks to join");
        self.original.addrs.push(addr.clone());
        self.gone.push(addr.clone());
        self.newcomers.push(addr);
        self.rejoin_at = Instant::now();
        Ok(())
    }

    /// Recovers from a lost device, or passes any other error on.
    fn after_failure(&mut self, e: anyhow::Error) -> anyhow::Result<()> {
        let Some(lost) = e.downcast_ref::<PeerLost>() else { return Err(e) };
        if self.lost_in_run >= MAX_RECOVERIES {
            return Err(e.context(format!("{MAX_RECOVERIES} devices lost in one run")));
        }
        self.lost_in_run += 1;
        let (position, why) = (lost.position, lost.message.clone());
        self.recover(position, why).map_err(|r| r.context(format!("cannot recover from: {e}")))
    }
}

/// `original` without the devices at the addresses `gone`. With fixed
/// windows each lost device's layers go to the device before it, so every
/// round still runs the layers in order (the result does not depend on the
/// order in which they were lost).
fn without(original: &RingOptions, gone: &[String]) -> RingOptions {
    let mut opts = original.clone();
    for lost in gone {
        let Some(index) = opts.addrs.iter().position(|a| a == lost) else { continue };
        opts.addrs.remove(index);
        if let Some(w) = &mut opts.windows {
            let theirs = w.remove(index + 1);
            w[index] += theirs;
        }
    }
    opts
}

/// The head's part of a planned ring, and the backend running its first
/// layers on its GPU when it has one.
fn head_model<'a>(g: &Gguf<'a>, hs: &Handshake) -> anyhow::Result<(Model<'a>, Vec<Box<dyn LayerBackend>>)> {
    let opts = hs.options();
    let parts = hs.head_parts();
    let choice = opts.gpu.within(hs.planned_gpu_layers(0));
    let (windows, gpu) = crate::gpu::split_windows(g, &parts.windows, choice, (opts.slots, opts.n_ctx));
    let model = Model::load_parts(g, prima_core::Parts { windows, ..parts }, crate::detect_kernels())
        .map_err(anyhow::Error::from)
        .map_err(|e| e.context("cannot load the head's layers"))?;
    Ok((model, gpu))
}

/// Most devices in a ring, the head included (a plan's window list holds 64).
const MAX_DEVICES: usize = 64;

/// Most devices lost in one run before it gives up.
const MAX_RECOVERIES: usize = 8;

impl Evaluate for Resilient<'_, '_> {
    fn slots(&self) -> usize {
        self.history.len()
    }

    fn step(&mut self, steps: &[Step<'_>]) -> anyhow::Result<Vec<f32>> {
        crate::forward::check_steps(steps, self.history.len())?;
        if self.current.is_none() {
            // An earlier re-plan failed (a serving head): try again now.
            self.replan()?;
        }
        loop {
            match self.current()?.step(steps) {
                Ok(logits) => {
                    for s in steps.iter().filter(|s| !s.tokens.is_empty()) {
                        self.history[s.slot].push(s.tokens.to_vec());
                    }
                    return Ok(logits);
                }
                Err(e) => self.after_failure(e)?,
            }
        }
    }

    fn truncate(&mut self, slot: usize, pos: usize) {
        // The replay after a loss must end at `pos` too.
        let mut kept = 0;
        self.history[slot].retain_mut(|tokens| {
            tokens.truncate(pos.saturating_sub(kept));
            kept += tokens.len();
            !tokens.is_empty()
        });
        if let Some(c) = self.current.as_mut() {
            c.truncate(slot, pos);
        }
    }

    fn clear(&mut self, slot: usize) {
        self.history[slot].clear();
        if self.history.iter().all(Vec::is_empty) {
            self.lost_in_run = 0;
            if let Some(ring) = self.current.as_ref().and_then(|c| c.ring()) {
                self.balance.look(ring, &mut self.original.layer_factors);
            }
        }
        if let Some(c) = self.current.as_mut() {
            c.clear(slot);
        }
    }

    fn idle(&mut self) -> anyhow::Result<bool> {
        let polled = match self.current()?.idle() {
            Ok(polled) => polled,
            Err(e) => self.after_failure(e).map(|()| false)?,
        };
        if std::mem::take(&mut self.balance.due) {
            let t = Instant::now();
            let devices = self.replan()?;
            eprintln!("ring: re-balanced in {:.2} s on {devices} devices", t.elapsed().as_secs_f64());
        }
        if self.gone.is_empty() {
            return Ok(polled);
        }
        if !polled {
            // Nothing waited for the links: pace the looking for lost devices.
            std::thread::sleep(crate::ring::driver::POLL);
        }
        self.rejoin()?;
        Ok(true)
    }

    fn join(&mut self, addr: String) -> anyhow::Result<()> {
        self.add_device(addr)
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

#[cfg(test)]
mod tests {
    use super::*;
    use prima_core::ring::wire::ActType;

    fn options(addrs: &[&str], windows: &[usize]) -> RingOptions {
        RingOptions {
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            windows: Some(windows.to_vec()),
            act: ActType::F32,
            n_ctx: 64,
            slots: 1,
            kv: prima_core::KvType::F16,
            peer_timeout: Duration::from_secs(1),
            head_profile: None,
            layer_check: None,
            key: None,
            beside: 0,
            layer_factors: Vec::new(),
            gpu: Default::default(),
        }
    }

    #[test]
    fn lost_devices_give_their_windows_to_the_one_before_in_any_order() {
        let all = options(&["a", "b", "c"], &[4, 5, 6, 7]);
        for gone in [["a", "b"], ["b", "a"]] {
            let gone: Vec<String> = gone.iter().map(|g| g.to_string()).collect();
            let left = without(&all, &gone);
            assert_eq!(left.addrs, ["c"]);
            assert_eq!(left.windows, Some(vec![15, 7]));
        }
        let left = without(&all, &["c".to_string()]);
        assert_eq!((left.addrs, left.windows), (vec!["a".to_string(), "b".to_string()], Some(vec![4, 5, 13])));
        // Taking a device back restores its windows: the plan is always made from the original.
        assert_eq!(without(&all, &[]).windows, Some(vec![4, 5, 6, 7]));
    }
}
