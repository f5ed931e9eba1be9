//! The exact solver described in the module docs.

use alloc::vec::Vec;

use super::{Plan, PlanError, Problem};

/// Subsets of this many devices or more are not enumerated (2^(n-1) of them).
pub const MAX_DEVICES: usize = 16;

/// The plan with the least predicted time per token. Deterministic: ties go
/// to the fewest rounds, then the first subset in enumeration order.
pub fn solve(p: &Problem) -> Result<Plan, PlanError> {
    p.validate()?;
    let n = p.devices.len();
    if n > MAX_DEVICES {
        return Err(PlanError::TooManyDevices { devices: n, max: MAX_DEVICES });
    }
    let l = p.n_layer;
    let ks: Vec<usize> = (1..=l).filter(|&k| l.is_multiple_of(k)).collect();
    // tables[j][m][w - 1]: device m's read-then-compute cycle with window w
    // in ks[j] rounds, before its hop (windows over its budget left out).
    let tables: Vec<Vec<Vec<f64>>> = ks
        .iter()
        .map(|&k| (0..n).map(|m| (1..=l / k).map_while(|w| p.cycle(m, w, k, 0.0).map(|c| c.1)).collect()).collect())
        .collect();
    let mut best: Option<Plan> = None;
    // Largest subsets first: they usually give a good plan early, and a good
    // incumbent lets the bound below skip most of the rest.
    for mask in (0..(1u32 << (n - 1))).rev() {
        let devices: Vec<usize> = core::iter::once(0).chain((1..n).filter(|i| mask & (1 << (i - 1)) != 0)).collect();
        let s = devices.len();
        let hops = p.ring_hops(&devices);
        let hop_sum: f64 = hops.iter().sum();
        let fastest = devices.iter().map(|&m| p.devices[m].fastest_layer_s()).fold(f64::INFINITY, f64::min);
        let firsts: f64 = devices.iter().map(|&m| p.devices[m].fastest_layer_s()).sum();
        for (&k, table) in ks.iter().zip(&tables) {
            let per_round = l / k;
            if per_round < s {
                break;
            }
            // Every round crosses every hop and gives every kept device at
            // least one layer; the remaining layers go at best to the fastest.
            let bound = k as f64 * (hop_sum + firsts + (per_round - s) as f64 * fastest) + p.head_s;
            if best.as_ref().is_some_and(|b| bound >= b.tpot_s) {
                break; // the bound never falls as k grows (k * (firsts - s * fastest) >= 0)
            }
            if let Some(plan) = solve_fixed(p, &devices, &hops, k, per_round, table) {
                if best.as_ref().is_none_or(|b| plan.tpot_s < b.tpot_s) {
                    best = Some(plan);
                }
            }
        }
    }
    best.ok_or_else(|| {
        let all_kv = l as f64 * p.kv_layer_bytes;
        PlanError::OutOfMemory { head_short_bytes: (all_kv - p.devices[0].budget_bytes).max(0.0) }
    })
}

/// The best windows for kept `devices` (each followed by its hop in `hops`),
/// `k` rounds and `per_round` layers a round. `table` holds every device's
/// cycles for this `k` before its hop.
fn solve_fixed(
    p: &Problem,
    devices: &[usize],
    hops: &[f64],
    k: usize,
    per_round: usize,
    table: &[Vec<f64>],
) -> Option<Plan> {
    let most = per_round + 1 - devices.len();
    // cycles[i][w - 1]: kept device i's read-then-compute cycle with a window of w.
    let mut cycles: heapless::Vec<Vec<f64>, MAX_DEVICES> = heapless::Vec::new();
    for (&m, &hop) in devices.iter().zip(hops) {
        let c: Vec<f64> = table[m].iter().take(most).map(|c| c + hop).collect();
        if c.is_empty() {
            return None;
        }
        cycles.push(c).ok()?;
    }
    let mut taus: Vec<f64> = cycles.iter().flat_map(|c| c.iter()).copied().collect();
    // Stable sort: it finds the per-device runs (each already ascending) and merges them.
    taus.sort_by(f64::total_cmp);
    taus.dedup();
    let windows_at = |tau: f64| -> Option<(f64, Vec<usize>)> {
        let caps: Vec<usize> = cycles.iter().map(|c| c.partition_point(|&x| x <= tau)).collect();
        greedy(p, devices, hops, k, per_round, &caps)
    };
    // First candidate whose least ring work fits under it (the crossing).
    let first = taus.partition_point(|&tau| windows_at(tau).is_none_or(|(work, _)| work > tau));
    let mut best: Option<Plan> = None;
    for i in [first.checked_sub(1), (first < taus.len()).then_some(first)].into_iter().flatten() {
        let Some((_, windows)) = windows_at(taus[i]) else { continue };
        if let Some(plan) = p.evaluate(devices, &windows, k) {
            if best.as_ref().is_none_or(|b| plan.tpot_s < b.tpot_s) {
                best = Some(plan);
            }
        }
    }
    best
}

/// Windows within `caps` (each at least 1, summing to `per_round`) with the
/// least total per-round work, and that work. Each device's work is convex
/// in its window (see the module docs), so taking the cheapest next layer
/// anywhere, one at a time, is optimal.
fn greedy(
    p: &Problem,
    devices: &[usize],
    hops: &[f64],
    k: usize,
    per_round: usize,
    caps: &[usize],
) -> Option<(f64, Vec<usize>)> {
    if caps.contains(&0) || caps.iter().sum::<usize>() < per_round {
        return None;
    }
    // (marginal work, device) of each layer beyond the first, within caps.
    let mut steps: Vec<(f64, usize)> = Vec::new();
    for (i, (&m, &cap)) in devices.iter().zip(caps).enumerate() {
        let work = |w: usize| p.cycle(m, w, k, 0.0).map_or(f64::INFINITY, |c| c.0);
        let mut before = work(1);
        for w in 2..=cap {
            let now = work(w);
            steps.push((now - before, i));
            before = now;
        }
    }
    // Ties by device, then (stably) by window: each device's steps stay in order.
    steps.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut windows = alloc::vec![1usize; devices.len()];
    for &(_, i) in steps.iter().take(per_round - devices.len()) {
        windows[i] += 1;
    }
    let total = devices
        .iter()
        .zip(&windows)
        .zip(hops)
        .map(|((&m, &w), &hop)| p.cycle(m, w, k, hop).map_or(f64::INFINITY, |c| c.0))
        .sum();
    Some((total, windows))
}
