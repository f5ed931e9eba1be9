#!/usr/bin/env bash
# The full test suite: unit tests, reference parity on the real and synthetic
# models, and the CLI. Needs scripts/setup.sh to have fetched the model.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
cargo test --release --workspace
