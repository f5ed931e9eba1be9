#!/usr/bin/env bash
# Loopback overhead of the ring: TPOT of a 2-device ring (head + one worker,
# 1 thread each) against one device with 1 thread, interleaved runs, medians.
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
PRIMA_CACHE=$cache $prima worker --listen 127.0.0.1:0 -t 1 2>"$log" &
worker=$!
trap 'kill $worker 2>/dev/null; rm -rf "$cache" "$log"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
addr=$(sed -n 's/^prima worker listening on //p' "$log")
tpot() { "$prima" run -m "$model" -p "Once upon a time" -n "$tokens" --ignore-eos --temp 0 -t 1 --json "$@" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["timings"]["ms_per_token"])'; }
tpot >/dev/null; tpot --ring "$addr" --layer-window 15,15 >/dev/null   # warm the page cache and the worker's layer cache
single=(); ring=()
for _ in $(seq "$rounds"); do
    single+=("$(tpot)")
    ring+=("$(tpot --ring "$addr" --layer-window 15,15)")
done
python3 - "${single[*]}" "${ring[*]}" <<'PY'
import statistics, sys
s = [float(x) for x in sys.argv[1].split()]
r = [float(x) for x in sys.argv[2].split()]
ms, mr = statistics.median(s), statistics.median(r)
print(f"one device, 1 thread:        median {ms:.2f} ms/token  runs {' '.join(f'{x:.2f}' for x in s)}")
print(f"2-device ring, 1 thread each: median {mr:.2f} ms/token  runs {' '.join(f'{x:.2f}' for x in r)}")
pairs = sorted(b / a for a, b in zip(s, r))
print(f"ring / single = {mr / ms:.3f} by medians; median of adjacent pairs {statistics.median(pairs):.3f}"
      f" (pairs {pairs[0]:.3f}..{pairs[-1]:.3f}); target <= 1.05; prima.cpp: 17.1 / 16.1 = 1.062")
PY
