#!/usr/bin/env bash
# Fuzzes what a file, a peer or a request can hand prima: GGUF files, ring
# frames and the ring node, device profiles with the plans Halda makes from
# them, and text for the tokenizer. Needs nightly and cargo-fuzz.
# Usage: scripts/fuzz.sh SECONDS            each target for SECONDS (CI)
#        scripts/fuzz.sh runs=N [TARGET…]   each target for N executions
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf wire profile tokenizer)
ref=${PRIMA_REFERENCE_DIR:-$PWD/../shared/reference}
export PRIMA_FUZZ_COST_MODEL=$ref/models/synth-llama-Q4_0.gguf
export PRIMA_FUZZ_MODEL=$PWD/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
# Seeds, generated rather than kept: the headers of real and synthetic GGUFs.
mkdir -p fuzz/corpus/gguf
for f in "$ref"/models/synth-llama-Q4_0.gguf "$ref"/models/synth-qwen2-Q4_K.gguf "$PRIMA_FUZZ_MODEL"; do
    [ -f "$f" ] && head -c 65536 "$f" >"fuzz/corpus/gguf/$(basename "$f").head"
done
case $limit in
runs=*) budget=(-runs="${limit#runs=}") ;;
*) budget=(-max_total_time="$limit") ;;
esac
cd fuzz
for t in "${targets[@]}"; do
    # The tokenizer is slow per input; short texts reach its branches too.
    extra=()
    [ "$t" = tokenizer ] && extra=(-max_len=64)
    log=$(mktemp)
    if ! cargo +nightly fuzz run "$t" -- "${budget[@]}" "${extra[@]}" -rss_limit_mb=4096 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz target $t failed (artifacts in fuzz/artifacts/$t)" >&2
        exit 1
    fi
    echo "$t: $(grep -E '^Done' "$log")"
    rm -f "$log"
done
