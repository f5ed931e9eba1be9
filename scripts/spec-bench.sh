#!/usr/bin/env bash
# Speculative decoding on a ring with slow links: a head and two workers on
# loopback, each worker behind `prima delay-proxy` (DELAY ms each way), so
# every trip round the ring pays 3 hops of latency. Prints TPOT plainly,
# with prompt lookup and with a draft model (SmolLM2 requantized to Q4_0:
# no smaller model shares its vocabulary), on a prompt whose answer copies
# much of it (editing code: what prompt lookup is for).
# Usage: scripts/spec-bench.sh [delay_ms] [tokens]
set -euo pipefail
cd "$(dirname "$0")/.."
delay=${1:-5} tokens=${2:-96}
./scripts/setup.sh >/dev/null
cargo build --release -q -p prima-host-linux
prima=$PWD/target/release/prima
model=.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
work=$(mktemp -d /tmp/prima-spec.XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$prima" quantize "$model" "$work/draft.gguf" Q4_0 2>/dev/null
ring=()
for i in 1 2; do
    PRIMA_CACHE=$work/cache$i "$prima" worker --listen 127.0.0.1:$((19400 + i)) -t 1 2>"$work/w$i.log" &
    "$prima" delay-proxy --listen 127.0.0.1:$((19500 + i)) --to 127.0.0.1:$((19400 + i)) --delay-ms "$delay" 2>/dev/null &
    ring+=("127.0.0.1:$((19500 + i))")
    for _ in $(seq 100); do grep -q "listening on" "$work/w$i.log" && break; sleep 0.1; done
done
prompt=$'<|im_start|>user\nAdd a docstring to this function and return the whole function:\ndef area(width, height):\n    if width < 0 or height < 0:\n        raise ValueError("negative size")\n    return width * height\n<|im_end|>\n<|im_start|>assistant\n'
run() {
    "$prima" run -m "$model" -p "$prompt" -n "$tokens" --temp 0 -t 1 --json \
        --ring "$(IFS=,; echo "${ring[*]}")" --layer-window 10,10,10 "$@"
}
printf '%-12s %8s %10s %10s %s\n' mode ms/token passes tok/pass acceptance
base=""
for mode in plain lookup draft; do
    case $mode in
        plain) args=() ;;
        lookup) args=(--lookup) ;;
        draft) args=(--model-draft "$work/draft.gguf" --draft-max 8) ;;
    esac
    run "${args[@]}" >"$work/$mode.json"
    python3 - "$work/$mode.json" "$mode" "$work/plain.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); t = d["timings"]; s = t.get("speculative") or {}
plain = json.load(open(sys.argv[3]))
same = "same tokens" if d["generated_ids"] == plain["generated_ids"] else "TOKENS DIFFER"
print(f'{sys.argv[2]:<12} {t["ms_per_token"]:8.2f} {s.get("target_passes", "-"):>10} '
      f'{s.get("tokens_per_target_pass", 1.0):10.2f} {s.get("acceptance_rate", "-")} ({same}, {t["ms_per_token"] / json.load(open(sys.argv[3]))["timings"]["ms_per_token"]:.2f}x plain)')
PY
done
