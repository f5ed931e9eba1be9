#!/usr/bin/env bash
# Loopback overhead of the ring: TPOT of a 2-device ring (head + one worker,
# 1 thread each), plaintext and with a ring key (encrypted links), against
# one device with 1 thread, interleaved runs, medians.
# Usage: scripts/bench-ring-loopback.sh [rounds] [tokens]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-7}
tokens=${2:-128}
./scripts/setup.sh >/dev/null
prima=target/release/prima
model=.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
cache=$(mktemp -d)
log=$(mktemp)
key="$cache/ring.key"
"$prima" keygen -o "$key" 2>/dev/null
PRIMA_CACHE=$cache/plain $prima worker --listen 127.0.0.1:0 -t 1 2>"$log" &
worker=$!
PRIMA_CACHE=$cache/keyed $prima worker --listen 127.0.0.1:0 -t 1 --key "$key" 2>"$log.keyed" &
keyed=$!
trap 'kill $worker $keyed 2>/dev/null; rm -rf "$cache" "$log" "$log.keyed"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$log" && grep -q "listening on" "$log.keyed" && break; sleep 0.1; done
addr=$(sed -n 's/^prima worker listening on //p' "$log")
addr_keyed=$(sed -n 's/^prima worker listening on //p' "$log.keyed")
tpot() { "$prima" run -m "$model" -p "Once upon a time" -n "$tokens" --ignore-eos --temp 0 -t 1 --json "$@" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["timings"]["ms_per_token"])'; }
# Warm the page cache and the workers' layer caches.
tpot >/dev/null; tpot --ring "$addr" --layer-window 15,15 >/dev/null
tpot --ring "$addr_keyed" --layer-window 15,15 --key "$key" >/dev/null
single=(); ring=(); secure=()
for _ in $(seq "$rounds"); do
    single+=("$(tpot)")
    ring+=("$(tpot --ring "$addr" --layer-window 15,15)")
    secure+=("$(tpot --ring "$addr_keyed" --layer-window 15,15 --key "$key")")
done
python3 - "${single[*]}" "${ring[*]}" "${secure[*]}" <<'PY'
import statistics, sys
s, r, k = ([float(x) for x in a.split()] for a in sys.argv[1:4])
ms = statistics.median(s)
print(f"one device, 1 thread:         median {ms:.2f} ms/token  runs {' '.join(f'{x:.2f}' for x in s)}")
for name, runs in (("2-device ring, plaintext:", r), ("2-device ring, ring key:", k)):
    m = statistics.median(runs)
    pairs = sorted(b / a for a, b in zip(s, runs))
    print(f"{name:29} median {m:.2f} ms/token  runs {' '.join(f'{x:.2f}' for x in runs)}")
    print(f"  / single = {m / ms:.3f} by medians; median of adjacent pairs {statistics.median(pairs):.3f}"
          f" (pairs {pairs[0]:.3f}..{pairs[-1]:.3f})")
print("target <= 1.05; prima.cpp: 17.1 / 16.1 = 1.062")
PY
