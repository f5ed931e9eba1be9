//! Re-balancing a serving ring: each worker's measured compute time per
//! decode step against Halda's prediction, request by request.

use super::head::Ring;

/// Watches each worker's compute time per decode step against Halda's
/// prediction, request by request, relative to the worker closest to its
/// prediction. A worker slower than that by more than `BALANCE_THRESHOLD`
/// for `BALANCE_STRIKES` requests in a row gets the ratio as a factor on its
/// layer time, and the ring is planned again between requests: a device that throttles, runs short of
/// memory or shares its cores loses layers to the others.
#[derive(Debug, Default)]
pub struct Balance {
    /// Per ring position, decode compute seconds so far, and decode steps,
    /// at the last look.
    seen: Option<(Vec<f64>, usize)>,
    /// Requests in a row each device (by address) was off.
    strikes: Vec<(String, usize)>,
    /// A re-plan is due.
    pub due: bool,
}

/// How much slower than planned, against the others, a device may run.
const BALANCE_THRESHOLD: f64 = 1.5;
/// Requests in a row a device must be off before the ring is re-planned.
const BALANCE_STRIKES: usize = 2;
/// Largest factor on a device's layer time.
const MAX_FACTOR: f64 = 8.0;
/// Decode steps a request needs to count.
const BALANCE_MIN_STEPS: usize = 16;

impl Balance {
    pub fn new() -> Self {
        let mut b = Self::default();
        b.restart();
        b
    }

    /// A new ring: its times start again.
    pub fn restart(&mut self) {
        self.seen = Some((Vec::new(), 0));
        self.strikes.clear();
        self.due = false;
    }

    /// After a request on `ring`: judges each worker's time over it.
    pub fn look(&mut self, ring: &Ring<'_, '_>, factors: &mut Vec<(String, f64)>) {
        if ring.prediction.is_none() {
            return; // fixed windows: nothing to move
        }
        let steps = ring.decode_steps();
        let devices: Vec<Device> = ring
            .report()
            .into_iter()
            .enumerate()
            .map(|(i, d)| Device {
                addr: if i == 0 { String::new() } else { ring.addrs[i - 1].clone() },
                name: d.name,
                compute_s: d.per_decode_step.map_or(0.0, |t| t.compute.as_secs_f64() * steps as f64),
                predicted_s: d.predicted.map(|p| p.compute_s).filter(|p| *p > 0.0),
            })
            .collect();
        self.judge(&devices, steps, factors);
    }

    /// Judges the decode steps since the last look; `devices[0]` is the head.
    fn judge(&mut self, devices: &[Device], steps: usize, factors: &mut Vec<(String, f64)>) {
        let totals: Vec<f64> = devices.iter().map(|d| d.compute_s).collect();
        let Some((before, before_steps)) = self.seen.replace((totals.clone(), steps)) else { return };
        let n = steps.saturating_sub(before_steps);
        if n < BALANCE_MIN_STEPS {
            self.seen = Some((before, before_steps)); // too short a request: wait for more
            return;
        }
        // Measured over predicted, per device; against the best worker's, so
        // an error the plan makes for every device alike moves nothing.
        let ratios: Vec<Option<f64>> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| Some((totals[i] - before.get(i).copied().unwrap_or(0.0)) / n as f64 / d.predicted_s?))
            .collect();
        // The workers only: the head's time is mostly the output head, which
        // no layer factor moves, and a head short of memory faults its
        // layers in. With one worker there is nothing to compare with.
        let workers: Vec<f64> = ratios.iter().skip(1).flatten().copied().collect();
        if workers.len() < 2 {
            return;
        }
        let Some(best) = workers.into_iter().reduce(f64::min).filter(|b| *b > 0.0) else { return };
        for (d, ratio) in devices.iter().zip(&ratios).skip(1) {
            let Some(ratio) = ratio.map(|r| r / best) else { continue };
            let k = self.strikes.iter().position(|(a, _)| *a == d.addr).unwrap_or_else(|| {
                self.strikes.push((d.addr.clone(), 0));
                self.strikes.len() - 1
            });
            let strikes = &mut self.strikes[k].1;
            *strikes = if ratio > BALANCE_THRESHOLD { *strikes + 1 } else { 0 };
            if *strikes < BALANCE_STRIKES {
                continue;
            }
            *strikes = 0;
            let k = factors.iter().position(|(a, _)| *a == d.addr).unwrap_or_else(|| {
                factors.push((d.addr.clone(), 1.0));
                factors.len() - 1
            });
            let factor = &mut factors[k].1;
            // Bounded, so a device the plan cannot help is not re-planned for ever.
            if *factor < MAX_FACTOR {
                *factor = (*factor * ratio).min(MAX_FACTOR);
                self.due = true;
                eprintln!(
                    "ring: {} computes in {ratio:.2}x the time the plan gives it, against the others, for {BALANCE_STRIKES} requests; re-planning",
                    d.name
                );
            }
        }
    }
}

/// One device's decode compute so far, and what the plan predicted per step.
#[derive(Debug, Clone)]
struct Device {
    addr: String,
    name: String,
    compute_s: f64,
    predicted_s: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(compute: [f64; 3]) -> Vec<Device> {
        let names = ["", "a:1", "b:1"];
        (0..3)
            .map(|i| Device {
                addr: names[i].into(),
                name: names[i].into(),
                compute_s: compute[i],
                predicted_s: Some(0.001),
            })
            .collect()
    }

    #[test]
    fn a_worker_off_for_two_requests_gets_its_ratio_and_a_replan() {
        let mut b = Balance::new();
        let mut factors = Vec::new();
        // 20 steps a request: the head 3x off (ignored), worker a on plan, worker b 2x.
        b.judge(&devices([0.06, 0.02, 0.04]), 20, &mut factors);
        assert!(!b.due && factors.is_empty(), "one request is not enough");
        b.judge(&devices([0.12, 0.04, 0.08]), 40, &mut factors);
        assert!(b.due);
        assert_eq!(factors.len(), 1);
        assert_eq!(factors[0].0, "b:1");
        assert!((factors[0].1 - 2.0).abs() < 1e-9, "{factors:?}");
    }

    #[test]
    fn short_requests_wait_and_an_error_shared_by_all_moves_nothing() {
        let mut b = Balance::new();
        let mut factors = Vec::new();
        // Both workers 3x their prediction: relative to each other, on plan.
        for (k, steps) in [(1.0, 20), (2.0, 40), (3.0, 60)] {
            b.judge(&devices([0.0, 0.06 * k, 0.06 * k]), steps, &mut factors);
        }
        assert!(!b.due && factors.is_empty());
        // 10 steps (under 16) are not judged: the next look covers them too.
        let mut b = Balance::new();
        b.judge(&devices([0.0, 0.01, 0.04]), 10, &mut factors);
        b.judge(&devices([0.0, 0.02, 0.08]), 20, &mut factors);
        assert!(!b.due, "the first judged request is only one strike");
    }

    #[test]
    fn one_worker_is_never_judged_and_factors_stop_at_the_cap() {
        let mut b = Balance::new();
        let mut factors = Vec::new();
        let alone = |c: f64| {
            vec![
                Device { addr: String::new(), name: "head".into(), compute_s: 0.0, predicted_s: Some(0.001) },
                Device { addr: "a:1".into(), name: "a".into(), compute_s: c, predicted_s: Some(0.001) },
            ]
        };
        b.judge(&alone(0.5), 20, &mut factors);
        b.judge(&alone(1.0), 40, &mut factors);
        assert!(!b.due && factors.is_empty());
        let mut factors = vec![("b:1".to_string(), MAX_FACTOR)];
        b.restart();
        b.judge(&devices([0.0, 0.02, 0.2]), 20, &mut factors);
        b.judge(&devices([0.0, 0.04, 0.4]), 40, &mut factors);
        assert!(!b.due, "at the cap: no more re-plans");
        assert_eq!(factors, [("b:1".to_string(), MAX_FACTOR)]);
    }
}
