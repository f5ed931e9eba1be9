use super::*;
use alloc::vec;
use proptest::prelude::*;

/// Every valid plan, tried one by one.
fn exhaustive(p: &Problem) -> Option<Plan> {
    let n = p.devices.len();
    let mut best: Option<Plan> = None;
    for mask in 0..(1u32 << (n - 1)) {
        let devices: Vec<usize> = core::iter::once(0).chain((1..n).filter(|i| mask & (1 << (i - 1)) != 0)).collect();
        for k in 1..=p.n_layer {
            if !p.n_layer.is_multiple_of(k) || p.n_layer / k < devices.len() {
                continue;
            }
            for_each_composition(p.n_layer / k, devices.len(), &mut vec![], &mut |w| {
                if let Some(plan) = p.evaluate(&devices, w, k) {
                    if best.as_ref().is_none_or(|b| plan.tpot_s < b.tpot_s) {
                        best = Some(plan);
                    }
                }
            });
        }
    }
    best
}

/// Calls `f` with every way to write `total` as `parts` positive integers.
fn for_each_composition(total: usize, parts: usize, prefix: &mut Vec<usize>, f: &mut dyn FnMut(&[usize])) {
    if parts == 1 {
        prefix.push(total);
        f(prefix);
        prefix.pop();
        return;
    }
    for first in 1..=total - (parts - 1) {
        prefix.push(first);
        for_each_composition(total - first, parts - 1, prefix, f);
        prefix.pop();
    }
}

fn device(layer_s: f64, hop_s: f64, budget_layers: f64, disk: f64, overlaps: bool) -> DeviceCosts {
    DeviceCosts { layer_s, hop_s, budget_bytes: budget_layers * 100.0, disk_bytes_per_s: disk, overlaps_disk: overlaps }
}

fn problem(devices: Vec<DeviceCosts>, n_layer: usize) -> Problem {
    Problem { devices, n_layer, layer_bytes: 100.0, head_s: 0.001 }
}

fn arb_device() -> impl Strategy<Value = DeviceCosts> {
    // Budgets in quarter layers, so windows often overflow memory partly.
    (1u32..50, 0u32..20, 2u32..48, 1u32..100, any::<bool>()).prop_map(|(t, hop, budget, disk, overlaps)| {
        device(t as f64 * 1e-3, hop as f64 * 1e-3, budget as f64 / 4.0, disk as f64 * 1e3, overlaps)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// On random small instances the solver's plan is as fast as the best
    /// plan exhaustive search finds, and its predicted time is that plan's.
    #[test]
    fn solver_equals_exhaustive_search(devices in proptest::collection::vec(arb_device(), 1..6), n_layer in 1usize..17) {
        let p = problem(devices, n_layer);
        let want = exhaustive(&p);
        match (solve(&p), want) {
            (Ok(got), Some(want)) => {
                let tol = 1e-9 * want.tpot_s;
                prop_assert!((got.tpot_s - want.tpot_s).abs() <= tol, "solver {:?}\nexhaustive {:?}", got, want);
                let again = p.evaluate(&got.devices, &got.windows, got.k).unwrap();
                prop_assert_eq!(again.tpot_s, got.tpot_s);
            }
            (Err(PlanError::Infeasible), None) => {}
            (got, want) => prop_assert!(false, "solver {:?}, exhaustive {:?}", got, want),
        }
    }
}

#[test]
fn a_slow_device_is_dropped_and_a_fast_one_kept() {
    let p = problem(vec![device(1e-3, 1e-4, 100.0, 1e9, true), device(50e-3, 1e-4, 100.0, 1e9, true)], 8);
    let plan = solve(&p).unwrap();
    assert_eq!(plan.devices, [0]);
    assert_eq!((plan.windows.as_slice(), plan.k), ([8].as_slice(), 1));
    assert!((plan.tpot_s - (8e-3 + 1e-3)).abs() < 1e-12, "{}", plan.tpot_s);
}

/// When no device can hold its share, rounds (k > 1) with prefetch beat one
/// round: each device reads its next window while the other computes.
#[test]
fn memory_pressure_picks_several_rounds() {
    let d = device(1e-3, 1e-4, 4.0, 2e5, true);
    let p = problem(vec![d, d], 16);
    let plan = solve(&p).unwrap();
    assert!(plan.k > 1, "{plan:?}");
    assert!(plan.times.iter().all(|t| t.disk_s > 0.0));
}

#[test]
fn bad_figures_are_named() {
    let good = device(1e-3, 1e-4, 10.0, 1e6, true);
    let cases = [
        (device(f64::NAN, 1e-4, 10.0, 1e6, true), "layer time"),
        (device(1e-3, -1.0, 10.0, 1e6, true), "hop time"),
        (device(1e-3, 1e-4, f64::INFINITY, 1e6, true), "memory budget"),
        (device(1e-3, 1e-4, 10.0, 0.0, true), "disk speed"),
    ];
    for (bad, field) in cases {
        let err = solve(&problem(vec![good, bad], 4)).unwrap_err();
        assert!(matches!(err, PlanError::BadFigure { device: 1, field: f, .. } if f == field), "{err:?}");
        assert!(alloc::format!("{err}").contains(field));
    }
    assert_eq!(solve(&problem(vec![], 4)), Err(PlanError::NoDevices));
    assert_eq!(solve(&problem(vec![good], 0)), Err(PlanError::NoLayers));
    let tiny = device(1e-3, 1e-4, 0.5, 1e6, true);
    assert_eq!(solve(&problem(vec![tiny], 4)), Err(PlanError::Infeasible));
}

#[test]
fn more_devices_than_layers_drops_the_extra() {
    let d = device(1e-3, 1e-5, 10.0, 1e6, true);
    let plan = solve(&problem(vec![d; 6], 3)).unwrap();
    assert!(plan.devices.len() <= 3);
    assert_eq!(plan.windows.iter().sum::<usize>() * plan.k, 3);
}
