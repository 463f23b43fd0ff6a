#!/usr/bin/env python3
"""Writes a tiny Llama HF directory with head_dim 64 (SmolLM2's; or D, the third argument),
GQA 4/2, random weights: the shapes whose recurrence kernels need > 48 KiB of dynamic
shared memory, which the repo's D=16 fixtures never reach; at D 128 the decode step takes
the bulk-copy kernel.   usage: make_d64_fixture.py SRC_HF_DIR OUT_DIR [D]"""
import json, os, shutil, struct, sys
import array, math, random

src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
for f in os.listdir(src):
    if f not in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(src, f), out)
cfg = json.load(open(os.path.join(src, "config.json")))
D = int(sys.argv[3]) if len(sys.argv) > 3 else 64
H, KV, HID, FF, V, L = 4, 2, 256, 512, cfg["vocab_size"], 2
cfg.update(hidden_size=HID, num_attention_heads=H, num_key_value_heads=KV, head_dim=D,
           intermediate_size=FF, num_hidden_layers=L, tie_word_embeddings=False)
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
random.seed(0)
t = {"model.embed_tokens.weight": (V, HID), "model.norm.weight": (HID,), "lm_head.weight": (V, HID)}
for l in range(L):
    p = f"model.layers.{l}."
    t.update({p + "self_attn.q_proj.weight": (H * D, HID), p + "self_attn.k_proj.weight": (KV * D, HID),
              p + "self_attn.v_proj.weight": (KV * D, HID), p + "self_attn.o_proj.weight": (HID, H * D),
              p + "mlp.gate_proj.weight": (FF, HID), p + "mlp.up_proj.weight": (FF, HID),
              p + "mlp.down_proj.weight": (HID, FF), p + "input_layernorm.weight": (HID,),
              p + "post_attention_layernorm.weight": (HID,)})
header, blobs, off = {}, [], 0
for n, s in t.items():
    n_el = math.prod(s)
    a = [1.0 + 0.1 * random.gauss(0, 1) for _ in range(n_el)] if len(s) == 1 else [random.gauss(0, 1) / math.sqrt(s[-1]) for _ in range(n_el)]
    b = array.array("f", a).tobytes()
    header[n] = {"dtype": "F32", "shape": list(s), "data_offsets": [off, off + len(b)]}
    blobs.append(b); off += len(b)
h = json.dumps(header).encode(); h += b" " * ((8 - len(h) % 8) % 8)
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h); [f.write(b) for b in blobs]
