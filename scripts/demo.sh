#!/usr/bin/env bash
# The main job on the small model shipped in the repo (a 2-layer Llama exported by
# torch.onnx, tests/fixtures/onnx/tiny_dynamo_op18_sdpa.onnx): import, raise,
# linearize to Liger-GLA, emit text IR, ONNX and CUDA (kernels + launch plan), run original and linearized
# on the CPU reference backend, and (for the shipped model) LoRA-fine-tune the linearized model on a
# Shakespeare excerpt. Outputs go to out/demo/.
#
# Usage: scripts/demo.sh [MODEL]   (any .onnx, Hugging Face directory or .gguf)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model="${1:-tests/fixtures/onnx/tiny_dynamo_op18_sdpa.onnx}"
out=out/demo
mkdir -p "$out"
cargo build --release --quiet --bin ligerc
ligerc=target/release/ligerc
set -x
"$ligerc" "$model" --pass linearize --emit ir -o "$out/model.liger.ir"
"$ligerc" "$model" --pass linearize --window 4 --emit onnx -o "$out/model.liger.onnx"
"$ligerc" "$model" --pass linearize --emit cuda -o "$out/cuda"
"$ligerc" run "$model" --ids 1,2,3,4,5,6,7,8 --logits "$out/original.npy"
"$ligerc" run "$model" --pass linearize --window 4 --ids 1,2,3,4,5,6,7,8 --logits "$out/liger.npy"
if [ "$#" -eq 0 ]; then
  # The shipped model has a byte-sized vocabulary (256) and no tokenizer: train on UTF-8 bytes.
  rm -rf "$out/finetune"
  "$ligerc" finetune "$model" --pass linearize --pass lora --tokenizer bytes \
    --data tests/fixtures/text/shakespeare_sample.txt --seq-len 64 --batch 4 --accum 1 --lr 1e-2 \
    --steps 100 --eval-every 50 -o "$out/finetune"
fi
set +x
echo "wrote $out/: model.liger.ir (text IR), model.liger.onnx (runs in onnxruntime), cuda/ (kernels/*.cu, plan.json, weights), original.npy, liger.npy (logits), finetune/ (PEFT adapter, metrics.jsonl, loss_curve.svg)"
