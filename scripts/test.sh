#!/usr/bin/env bash
# The full test suite: unit tests, reference parity on the real and synthetic
# models, and the CLI. Needs scripts/setup.sh to have fetched the model.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
# The C ABI test links the shared library, which only a build of the
# library itself produces (tests link the rlib).
cargo build --release -p prima-host
cargo test --release --workspace
# The GPU backend against the CPU path and the reference (tests/tests/gpu.rs),
# on whatever adapter wgpu finds: lavapipe where there is no GPU.
cargo test --release -p prima-tests --features gpu --test gpu
