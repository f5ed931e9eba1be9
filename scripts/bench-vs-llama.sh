#!/usr/bin/env bash
# prima bench against llama-bench, interleaved in one session, and the
# ratios (prima / llama.cpp, tokens per second; above 1 is prima ahead).
# llama.cpp is not part of this repository: build it yourself elsewhere and
# pass the llama-bench binary.
#
# Usage: scripts/bench-vs-llama.sh LLAMA_BENCH [MODEL] [ROUNDS] [THREADS] [DEPTHS]
#   MODEL    default: the test model (SmolLM2-135M-Instruct Q4_1)
#   ROUNDS   interleaved rounds, each running both engines (default 3)
#   THREADS  default 2
#   DEPTHS   llama-bench -d list, e.g. 0,2048 (default 0)
# Extra llama-bench flags go in LLAMA_BENCH_FLAGS (e.g. "--repack 0" where
# the build repacks weights; prima never does).
set -euo pipefail
cd "$(dirname "$0")/.."
llama_bench=${1:?usage: $0 LLAMA_BENCH [MODEL] [ROUNDS] [THREADS] [DEPTHS]}
model=${2:-.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
rounds=${3:-3} threads=${4:-2} depths=${5:-0}
[ -x "$llama_bench" ] || { echo "$llama_bench is not an executable llama-bench" >&2; exit 2; }
cargo build --release -q -p prima-host-linux
prima=$PWD/target/release/prima
work=$(mktemp -d /tmp/prima-vs-llama.XXXX)
trap 'rm -rf "$work"' EXIT
for round in $(seq "$rounds"); do
    echo "round $round/$rounds" >&2
    # shellcheck disable=SC2086
    "$llama_bench" -m "$model" -p 512 -n 128 -t "$threads" -d "$depths" -r 3 -o jsonl ${LLAMA_BENCH_FLAGS:-} \
        >"$work/llama-$round.jsonl" 2>"$work/llama-$round.log" || { cat "$work/llama-$round.log" >&2; exit 1; }
    "$prima" bench -m "$model" -p 512 -n 128 -t "$threads" -d "$depths" -r 3 -o jsonl >"$work/prima-$round.jsonl"
done
python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def load(path, rate):
    rows = {}
    for line in open(path):
        r = json.loads(line)
        if r.get("n_prompt") and r.get("n_gen"):
            continue
        test = f'pp{r["n_prompt"]}' if r.get("n_prompt") else f'tg{r["n_gen"]}'
        rows[(test, r.get("n_depth", 0))] = r[rate]
    return rows
print("| test | depth | llama.cpp t/s (per round) | prima t/s (per round) | ratio (per round) | median ratio |")
print("| --- | ---: | --- | --- | --- | ---: |")
per = {}
for k in range(1, rounds + 1):
    lo = load(f"{work}/llama-{k}.jsonl", "avg_ts")
    pr = load(f"{work}/prima-{k}.jsonl", "tokens_per_s_mean")
    for key in lo:
        if key in pr:
            per.setdefault(key, []).append((lo[key], pr[key]))
for (test, depth), pairs in per.items():
    ratios = [p / l for l, p in pairs]
    f = lambda xs: " ".join(f"{x:.1f}" for x in xs)
    print(f"| {test} | {depth} | {f([l for l, _ in pairs])} | {f([p for _, p in pairs])} | "
          f"{' '.join(f'{r:.2f}' for r in ratios)} | **{statistics.median(ratios):.2f}** |")
PY
