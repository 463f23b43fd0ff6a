#!/usr/bin/env python3
"""Liger-GLA in PyTorch, written from docs/LINEARIZE.md / LIGER.md §2 independently of ligerc.

The reference model for fine-tuning: a transformers Llama whose every attention is replaced by
Liger attention (GLA recurrence on the un-rotated, softmax-feature-mapped q/k with the gate
logsigmoid(k)/16, state per *query* head as upstream's repeat_kv does, plus sliding-window
softmax attention over `window + 1` keys on the rotated q/k, mixed 0.5/0.5), with LoRA adapters
on q/k/v through PEFT.

Two uses:

  golden  (developer-run, CPU, float64; output committed as tests/golden/finetune_grads.json)
      liger_torch.py golden --model tests/fixtures/hf/llama31 -o tests/golden/finetune_grads.json
    One batch of fixed ids/targets, LoRA A and B set to seeded values (B non-zero, so every A has a
    gradient): the mean loss and every LoRA gradient, under ligerc's weight names. tests/finetune.rs
    compares ligerc's training graph with it.

  bench   (GPU machine: torch + transformers + peft there; fla-core carried as a wheel)
      liger_torch.py bench --model DIR --seq 1024,4096 --steps 6 [--random-weights] -o OUT.json
    The Liger recipe (LIGER.md §5) in PyTorch + PEFT + fla: bf16 frozen weights, fp32 LoRA r=8
    alpha=8 on q/k/v, AdamW lr 1e-3 wd 0.01, batch 1; fla `chunk_gla` for the recurrence and
    SDPA with a banded causal mask for the window. Prints and writes tokens/s (median over the
    steps after the first) and peak GPU memory per sequence length.
"""
import argparse
import json
import math
import os
import sys
import time
import types

try:
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
except ImportError as e:
    sys.exit(f"liger_torch.py: {e} (needs torch + transformers)")

WINDOW = 64  # a query sees itself and 64 earlier keys
MIX_WINDOW = 0.5
MIX_LINEAR = 0.5
NORMALIZER = 16.0


def gla_recurrent(q, k, v, g):
    """o_t = q_t S_t, S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t; inputs [B, H, T, D]."""
    b, h, t, d = q.shape
    state = q.new_zeros(b, h, d, v.shape[-1])
    out = []
    for i in range(t):
        state = state * g[:, :, i].exp().unsqueeze(-1) + k[:, :, i].unsqueeze(-1) * v[:, :, i].unsqueeze(-2)
        out.append(torch.einsum("bhd,bhde->bhe", q[:, :, i], state))
    return torch.stack(out, dim=2)


def gla(q, k, v, g):
    """The GLA recurrence, fla's chunk_gla on CUDA (layout [B, T, H, D]), the loop otherwise."""
    if q.is_cuda:
        from fla.ops.gla import chunk_gla

        dt = v.dtype  # under autocast the softmax feature maps come out f32, v in bf16
        o, _ = chunk_gla(
            q.to(dt).transpose(1, 2).contiguous(),
            k.to(dt).transpose(1, 2).contiguous(),
            v.transpose(1, 2).contiguous(),
            g.float().transpose(1, 2).contiguous(),
            scale=1.0,
        )
        return o.transpose(1, 2)
    return gla_recurrent(q, k, v, g)


def window_mask(t, device):
    i = torch.arange(t, device=device)
    diff = i[:, None] - i[None, :]
    return (diff >= 0) & (diff <= WINDOW)


def liger_forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
    """Replacement for LlamaAttention.forward (no cache: training and full forwards only)."""
    bsz, t, _ = hidden_states.shape
    d = self.head_dim
    q = self.q_proj(hidden_states).view(bsz, t, -1, d).transpose(1, 2)
    k = self.k_proj(hidden_states).view(bsz, t, -1, d).transpose(1, 2)
    v = self.v_proj(hidden_states).view(bsz, t, -1, d).transpose(1, 2)
    groups = q.shape[1] // k.shape[1]
    # Recurrent branch on the un-rotated projections, repeat_kv'd to the query heads.
    gate = F.logsigmoid(k) / NORMALIZER
    qf = torch.softmax(q, dim=-1)
    kf = torch.softmax(k, dim=-1)
    rep = lambda x: x.repeat_interleave(groups, dim=1)
    o_lin = gla(qf, rep(kf), rep(v), rep(gate))
    # Window branch on the rotated projections.
    cos, sin = position_embeddings
    q_rot, k_rot = apply_rotary_pos_emb(q, k, cos, sin)
    o_win = F.scaled_dot_product_attention(
        q_rot, rep(k_rot), rep(v), attn_mask=window_mask(t, q.device), scale=1.0 / math.sqrt(d)
    )
    o = MIX_WINDOW * o_win + MIX_LINEAR * o_lin.to(o_win.dtype)
    o = o.transpose(1, 2).reshape(bsz, t, -1)
    return self.o_proj(o), None


def linearize(model):
    for layer in model.model.layers:
        layer.self_attn.forward = types.MethodType(liger_forward, layer.self_attn)
    return model


def with_lora(model, rank=8, alpha=8):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj"])
    return get_peft_model(model, cfg)


def ligerc_name(peft_name):
    """base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight → ligerc's name."""
    name = peft_name.removeprefix("base_model.model.")
    return name.replace(".default.weight", ".weight")


def golden(args):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float64, attn_implementation="eager")
    model = with_lora(linearize(model))
    gen = torch.Generator().manual_seed(1234)
    lora = {}
    for n, p in model.named_parameters():
        if "lora_" in n:
            with torch.no_grad():
                p.copy_(0.2 * (torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1))
            lora[ligerc_name(n)] = p.detach().flatten().tolist()
    vocab = model.config.vocab_size
    ids = [[(i * 37 + 11 + 5 * r) % vocab for i in range(args.seq)] for r in range(2)]
    targets = [[(i * 53 + 5 + 3 * r) % vocab for i in range(args.seq)] for r in range(2)]
    targets[0][3] = -100
    logits = model(input_ids=torch.tensor(ids)).logits
    loss = F.cross_entropy(logits.reshape(-1, vocab), torch.tensor(targets).reshape(-1), ignore_index=-100)
    loss.backward()
    grads = {ligerc_name(n): p.grad.flatten().tolist() for n, p in model.named_parameters() if "lora_" in n}
    out = {
        "model": os.path.relpath(args.model, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        "window": WINDOW,
        "lora_rank": 8,
        "lora_alpha": 8,
        "ids": ids,
        "targets": targets,
        "loss": loss.item(),
        "lora": lora,
        "grads": grads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    with open(args.output, "w") as f:
        json.dump(out, f)
    print(f"loss {loss.item():.6f}, {len(grads)} gradients → {args.output}")


def bench(args):
    dev = torch.device("cuda")
    if args.random_weights:
        cfg = AutoConfig.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16)
    model = with_lora(linearize(model)).to(dev)
    print(f"model ready: {sum(p.numel() for p in model.parameters() if p.requires_grad)} trainable", flush=True)
    for n, p in model.named_parameters():
        if p.requires_grad:
            p.data = p.data.float()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    vocab = model.config.vocab_size
    results = []
    for seq in [int(s) for s in args.seq.split(",")]:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(args.steps):
            ids = torch.randint(0, vocab, (1, seq + 1), device=dev)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(input_ids=ids[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, vocab), ids[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            print(f"seq {seq} step {step}: {times[-1] * 1e3:.1f} ms, loss {loss.item():.4f}", flush=True)
        med = sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0]
        r = {
            "impl": "pytorch+peft+fla",
            "seq": seq,
            "batch": 1,
            "tokens_per_s": seq / med,
            "step_ms": med * 1e3,
            "peak_gb": torch.cuda.max_memory_allocated() / 1e9,
            "device": torch.cuda.get_device_name(),
        }
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("golden")
    g.add_argument("--model", required=True)
    g.add_argument("--seq", type=int, default=12)
    g.add_argument("-o", "--output", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--model", required=True)
    b.add_argument("--seq", default="1024,4096")
    b.add_argument("--steps", type=int, default=6)
    b.add_argument("--random-weights", action="store_true")
    b.add_argument("-o", "--output")
    args = ap.parse_args()
    {"golden": golden, "bench": bench}[args.cmd](args)


if __name__ == "__main__":
    main()
