#!/usr/bin/env bash
# Windows build (mingw-w64) proven under wine: core's and the shells' unit
# tests, then a short real generation whose tokens must equal the Linux
# build's. Needs gcc-mingw-w64-x86-64 and wine64 (Debian), and setup.sh's model.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-pc-windows-gnu
out=target/$target/release
export WINEDEBUG=-all WINEPREFIX=${WINEPREFIX:-$PWD/target/wineprefix}
mkdir -p "$out/deps"
x86_64-w64-mingw32-gcc -shared -O2 -o "$out/bcryptprimitives.dll" scripts/wine/bcryptprimitives.c -ladvapi32
cp "$out/bcryptprimitives.dll" "$out/deps/"
cargo test --release --target $target -p prima-core -p prima-host -p prima-host-windows --lib
cargo build --release --target $target -p prima-host-windows --features cli
model=.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
args=(run -m "$model" -p "The capital of France is" -n 16 --temp 0 -t 2 --json)
ids() { python3 -c 'import json,sys; print(json.load(sys.stdin)["generated_ids"])'; }
windows=$(/usr/lib/wine/wine64 "$out/prima.exe" "${args[@]}" | ids)
linux=$(target/release/prima "${args[@]}" | ids)
echo "windows (wine): $windows"
echo "linux:          $linux"
[ "$windows" = "$linux" ] || { echo "the Windows build generated different tokens" >&2; exit 1; }
# The GPU backend is in prima.exe (DX12 and Vulkan); wine offers neither
# here, so -ngl must say so in one line and leave the tokens to the CPU.
gpu_log=$(mktemp)
windows_gpu=$(/usr/lib/wine/wine64 "$out/prima.exe" "${args[@]}" -ngl 99 2>"$gpu_log" | ids)
grep -q "every layer runs on the CPU" "$gpu_log" || { cat "$gpu_log" >&2; exit 1; }
[ "$windows_gpu" = "$linux" ] || { echo "-ngl without a GPU changed the tokens" >&2; exit 1; }
rm -f "$gpu_log"
# The Windows shell's own calls: memory figures, unbuffered disk reads.
# CI once saw this step print nothing (no error, no panic) and could not
# reproduce it: a failed try prints its exit status, stderr and wine's
# error channel, and runs once more, so a flake of wine is told from a bug.
profile_json=$(mktemp) profile_err=$(mktemp)
windows_profile() {
    rc=0
    /usr/lib/wine/wine64 "$out/prima.exe" profile --quick --json >"$profile_json" 2>"$profile_err" || rc=$?
    [ "$rc" -eq 0 ] && [ -s "$profile_json" ] && return 0
    echo "prima.exe profile failed: exit $rc, $(wc -c <"$profile_json") bytes out; stderr:" >&2
    cat "$profile_err" >&2
    return 1
}
if ! windows_profile; then
    timeout 60 /usr/lib/wine/wineserver -w || true
    WINEDEBUG=err+all windows_profile || exit 1
    echo "the second try succeeded" >&2
fi
python3 -c '
import json, sys
p = json.load(sys.stdin)
assert p["page_cache"] == "WorkingSetTrim", p["page_cache"]
assert 0 < p["ram_available_bytes"] <= p["ram_total_bytes"], p
assert p["disk_seq_read_bytes_per_s"] > 0, p
print("windows profile:", p["ram_available_bytes"] >> 20, "MiB available,", p["kernels"])' <"$profile_json"
rm -f "$profile_json" "$profile_err"
