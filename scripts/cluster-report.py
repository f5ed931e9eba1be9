#!/usr/bin/env python3
"""Prints what scripts/cluster-bench.sh measured, and the preset's checks.

Usage: cluster-report.py WORK_DIR MODEL_BYTES HEAD_CAP_MB (PRESET and DISKS in
the environment). Exits 1 when a check fails.
"""
import json
import os
import sys

work, size, head_cap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
preset = os.environ.get("PRESET", "?")


def load(name):
    with open(os.path.join(work, name)) as f:
        return json.load(f)


def rows(name):
    out = []
    with open(os.path.join(work, name + ".rows")) as f:
        for line in f:
            dev, limit, rss_kb, peak, faults, fails, oom, swap = line.split()
            limit = int(limit)
            cap = "none" if limit >= 1 << 60 else str(limit >> 20)
            out.append(dict(dev=dev, cap=cap, rss=int(rss_kb) / 1024, peak=int(peak), faults=int(faults),
                            fails=int(fails), oom=int(oom), swap=int(swap or 0)))
    return out


def table(title, name):
    run = load(name + ".json")
    ring = run["ring"]
    t = run["timings"]["ms_per_token"]
    p = ring.get("predicted_ms_per_token")
    plan = "; ".join(f"{d['name']}: {','.join(d['layers'])} ({d['resident_layers']} of {d['layers_held']} resident)"
                     for d in ring["devices"])
    print(f"\n### {title}: TPOT {t:.1f} ms" + (f", Halda predicted {p:.1f} ms ({abs(p - t) / t * 100:.1f}% off)" if p else ""))
    print(f"plan (k={ring['k']}): {plan}")
    print("| device | cap MB | peak RSS MB | cgroup peak MB | major faults | limit hits | OOM kills | swap |"
          " compute ms | network wait ms | disk ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    # Ring devices are "the head" and "device i (devN, addr)"; rows name "head" and "devN".
    by_name = {("head" if d["name"] == "the head" else d["name"].split("(")[1].split(",")[0]): d for d in ring["devices"]}
    for r in rows(name):
        d = by_name.get(r["dev"])
        if d is None:
            print(f"| {r['dev']} | {r['cap']} | left out of the plan | | | | | | | | |")
            continue
        m = d.get("per_token") or {}
        h = d.get("predicted_per_token") or {}
        pred = lambda k: f" ({h[k]:.1f})" if k in h else ""
        print(f"| {r['dev']} | {r['cap']} | {r['rss']:.0f} | {r['peak']} | {r['faults']} | {r['fails']} | {r['oom']} |"
              f" {r['swap']} | {m.get('compute_ms', 0):.1f}{pred('compute_ms')} | {m.get('network_ms', 0):.1f}"
              f"{pred('hop_ms')} | {m.get('disk_ms', 0):.1f}{pred('disk_ms')} |")
    return t, p, rows(name)


print(f"## preset {preset}: synthetic llama Q4_0, {size / 1e6:.0f} MB; disks (MB/s): {os.environ.get('DISKS')}")
capped_t, predicted, capped_rows = table("capped", "capped")
uncapped_t, _, _ = table("uncapped (same windows)", "uncapped")
alone_c, alone_u = load("alone-capped.json"), load("alone-uncapped.json")
cg_c = load(f"alone-{head_cap}.cg.json")
a_c, a_u = alone_c["timings"]["ms_per_token"], alone_u["timings"]["ms_per_token"]
read_mb = alone_c["timings"].get("disk_read_mb") or 0
tokens = alone_c["timings"]["generated_tokens"]
print(f"\n### one device: capped at {head_cap} MB {a_c:.1f} ms/token (cgroup peak {cg_c['peak_mb']} MB,"
      f" OOM kills {cg_c['oom']}, disk stall {alone_c['timings'].get('disk_stall_ms') or 0:.0f} ms,"
      f" read {read_mb / max(tokens, 1):.0f} MB per token); uncapped {a_u:.1f} ms/token: {a_c / a_u:.2f}x")

ratio = capped_t / uncapped_t
no_oom = all(r["oom"] == 0 for r in capped_rows) and cg_c["oom"] == 0
no_swap = all(r["swap"] == 0 for r in capped_rows)
halda_ok = predicted is not None and abs(predicted - capped_t) / capped_t <= 0.15
checks = {
    "anchor": [("capped/uncapped <= 1.05", ratio <= 1.05), ("no OOM", no_oom), ("no swap", no_swap),
               ("one device capped/uncapped <= 3", a_c / a_u <= 3.0)],
    "over": [("capped/uncapped <= 1.5", ratio <= 1.5), ("Halda within 15%", halda_ok), ("no OOM", no_oom),
             ("no swap", no_swap)],
    "roomy": [("Halda within 15%", halda_ok), ("no OOM", no_oom), ("no swap", no_swap)],
}[preset]
print(f"\nring capped/uncapped: {ratio:.3f}x")
for what, ok in checks:
    print(f"check {what}: {'PASS' if ok else 'FAIL'}")
sys.exit(0 if all(ok for _, ok in checks) else 1)
