#!/usr/bin/env python3
"""Decode tok/s of the original SmolLM2-135M architecture in transformers (SDPA, bf16,
random weights: no checkpoint travels to the GPU machine) — the peer of
`ligerc run MODEL --pass linearize --backend cuda --bench-decode N` on the same GPU.

Prints one JSON line per (batch, context): greedy decode with the KV cache, `steps` tokens
timed with CUDA events after a warm-up, prefill timed likewise.

    gpu_bench.py [STEPS] [BATCH:CONTEXT ...]     (default 128 steps; 1:128 1:1024 32:128 32:1024)
"""
import json
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

cfg = LlamaConfig(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=65536,
    rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
    attn_implementation="sdpa",
)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 128
dev = torch.cuda.get_device_name()


@torch.inference_mode()
def run(batch, ctx):
    ids = torch.randint(1, cfg.vocab_size, (batch, ctx), device="cuda")
    for warm in (True, False):
        torch.cuda.synchronize()
        e0, e1, e2 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        e0.record()
        out = model(ids, use_cache=True)
        e1.record()
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        n = 8 if warm else steps
        for _ in range(n):
            out = model(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        e2.record()
        torch.cuda.synchronize()
    pre = e0.elapsed_time(e1) / 1e3
    dec = e1.elapsed_time(e2) / 1e3
    print(json.dumps({"backend": "transformers-sdpa", "device": dev, "batch": batch, "context": ctx,
                      "steps": steps, "prefill_s": pre, "decode_s": dec,
                      "prefill_tok_s": batch * ctx / pre, "decode_tok_s": batch * steps / dec,
                      "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9}), flush=True)


pairs = [tuple(map(int, a.split(":"))) for a in sys.argv[2:]] or [(1, 128), (1, 1024), (32, 128), (32, 1024)]
for b, c in pairs:
    torch.cuda.reset_peak_memory_stats()
    run(b, c)
    torch.cuda.empty_cache()
