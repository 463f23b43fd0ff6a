#!/usr/bin/env python3
"""Standalone launcher for the LigerAttention kernels that `ligerc --emit cuda` writes, on the
GPU machine (no Rust there): kernel-level correctness checks against a float64 torch reference,
and timings against fla `chunk_gla` / `fused_recurrent_gla` and PyTorch SDPA.

    python3 scripts/gpu_kernels.py check  [--ligerc .gpu/ligerc] [--out DIR]
    python3 scripts/gpu_kernels.py bench  [--ligerc .gpu/ligerc] [--out DIR]
    ncu -k regex:liger python3 scripts/gpu_kernels.py profile   (one prefill + one decode step)

How: for each head shape (H, KV, D, window) it writes a 1-layer Hugging Face directory of that
shape (zero weights: only the shapes matter), runs `ligerc DIR --pass linearize --emit cuda`,
reads plan.json and the layer's Liger launch steps (window prefill, recurrence prefill, ring
store; decode step), compiles those .cu files with NVRTC through CuPy, and launches them with
the plan's grid, block, dynamic shared memory and argument list on torch tensors (buffers
sized from the plan's extents at the chosen batch/seq). `pos0` is a device int, as the
runtime passes it. Baked constants (gate normalizer, mixes) are read back from the sources.

check: prefill of T tokens (one call, and split into two calls continuing from the stored
state and ring), then decode steps, vs the float64 reference (GLA recurrence with
feature maps softmax(q), softmax(k), gate logsigmoid(k)/NORM, plus the sliding-window
softmax branch), on odd T, T below the window, T not a multiple of the chunk, batch > 1,
and extreme gates (k scaled ×30). Pass: max|err| ≤ 2e-2 × max|ref| (bf16 in and out).

bench: the fused prefill (window + recurrence kernels; RoPE excluded, as for the peers) at
B=8,H=32,KV=8,D=128,T=1k/2k/4k and B=2,T=16k vs fla chunk_gla (kernel; + feature maps & gate,
k/v repeated to 32 heads as upstream Liger) and SDPA causal; the decode step at batch
1/8/64/256 vs fla fused_recurrent_gla (state per query head). Medians of
triton.testing.do_bench; % of the bytes floor at the copy bandwidth measured in the same run;
each launch of the layer is also timed alone (ligerc_steps_ms / ligerc_steps_us).
The decode step is also timed as one of N layers captured back to back in a CUDA graph
(seq_us: µs per layer as in a model's decode step, without do_bench's L2-flushing memset),
beside a copy of the step's bytes and fla timed both ways. LIGERC_DECODE_VARIANTS=a.cu,...
times other sources of the decode kernel (same name and arguments; `VARIANT_SMEM=N` in the
source if its dynamic shared memory differs) and steps each once from the emitted kernel's
state (pos 1000 and 10) to print the largest differences.
LIGERC_BENCH_ONLY=prefill|decode runs that half alone; LIGERC_BENCH_SHAPES=8x2048,... picks
the prefill shapes; LIGERC_BENCH_FLA=0 skips fla; LIGERC_BENCH_BASE=PATH times another
ligerc build's prefill and decode kernels in the same process on the same inputs (and their
outputs' largest difference).
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- fixture + emission


def make_fixture(path, h, kv, d, hidden=256, ff=256, vocab=256):
    from safetensors.numpy import save_file
    os.makedirs(path, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "head_dim": d,
           "hidden_act": "silu", "hidden_size": hidden, "intermediate_size": ff,
           "max_position_embeddings": 65536, "mlp_bias": False, "model_type": "llama",
           "num_attention_heads": h, "num_hidden_layers": 1, "num_key_value_heads": kv,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
           "torch_dtype": "float32", "vocab_size": vocab}
    json.dump(cfg, open(os.path.join(path, "config.json"), "w"))
    z = lambda *s: np.zeros(s, np.float32)
    p = "model.layers.0."
    t = {"model.embed_tokens.weight": z(vocab, hidden), "model.norm.weight": np.ones(hidden, np.float32),
         "lm_head.weight": z(vocab, hidden), p + "self_attn.q_proj.weight": z(h * d, hidden),
         p + "self_attn.k_proj.weight": z(kv * d, hidden), p + "self_attn.v_proj.weight": z(kv * d, hidden),
         p + "self_attn.o_proj.weight": z(hidden, h * d), p + "mlp.gate_proj.weight": z(ff, hidden),
         p + "mlp.up_proj.weight": z(ff, hidden), p + "mlp.down_proj.weight": z(hidden, ff),
         p + "input_layernorm.weight": np.ones(hidden, np.float32),
         p + "post_attention_layernorm.weight": np.ones(hidden, np.float32)}
    save_file(t, os.path.join(path, "model.safetensors"))


def emit(ligerc, root, h, kv, d, window):
    tag = f"h{h}_kv{kv}_d{d}_w{window}"
    src, out = os.path.join(root, "hf_" + tag), os.path.join(root, "emit_" + tag)
    make_fixture(src, h, kv, d)
    cmd = [ligerc, src, "--pass", "linearize", "--window", str(window), "--emit", "cuda", "-o", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr}")
    return out


# ---------------------------------------------------------------- plan launcher


def extent(e, env):
    if isinstance(e, int):
        return e
    s, div = e, 1
    if s.startswith("ceil("):
        s, dv = s[5:-1].rsplit("/", 1)
        div = int(dv)
    if "*" in s:
        m, sym = s.split("*")
        v = int(m) * env[sym]
    else:
        v = int(s) if s.isdigit() else env[s]
    return -(-v // div)


DT = {"bf16": torch.bfloat16, "f32": torch.float32, "i64": torch.int64, "i32": torch.int32, "u8": torch.uint8}


class Layer:
    """The Liger launch steps of layer 0 of an emitted plan, ready to run on torch tensors."""

    def __init__(self, emit_dir):
        import cupy as cp
        self.cp = cp
        self.plan = json.load(open(os.path.join(emit_dir, "plan.json")))
        self.src = {}
        self.fn = {}
        self.mod = {}  # the NVRTC modules of `fn` (for their globals)
        for k in self.plan["kernels"]:
            self.src[k["name"]] = open(os.path.join(emit_dir, k["file"])).read()
        self.decl = {}
        for ph in ("prefill", "decode"):
            self.decl[ph] = {t["name"]: t for t in self.plan[ph]["buffers"] + self.plan[ph]["inputs"]}
            self.decl[ph].update({p["name"]: p for p in self.plan["persistent"]})
        self.pre = [s for s in self.plan["prefill"]["steps"]
                    if s["kind"] == "launch" and s["kernel"].startswith("liger_") and s["layer"] == 0]
        self.dec = [s for s in self.plan["decode"]["steps"]
                    if s["kind"] == "launch" and s["kernel"].startswith("liger_") and s["layer"] == 0]
        rec = next(s for s in self.pre
                   if re.match(r"liger_\w+_prefill_(tc_|mma_|fused_)?h", s["kernel"]) and "window" not in s["kernel"])
        # the window branch: its own kernel, or inside the fused step 3
        fused = "_prefill_fused_" in rec["kernel"]
        win = rec if fused else next(s for s in self.pre if s["kernel"].startswith("liger_window_prefill"))
        # the gate normalizer: in the key pass where there is one, else in the recurrence kernel
        prep = next((s for s in self.pre if re.match(r"liger_\w+_chunk_prep", s["kernel"])), None)
        gate_src = self.src[(prep or rec)["kernel"]]
        const = lambda src, name: float(re.search(rf"constexpr float {name} = ([^;]+);", src).group(1).rstrip("f"))
        self.norm = const(gate_src, "NORM")
        self.mix_l = const(self.src[rec["kernel"]], "MIXL" if fused else "MIX")
        self.mix_w = const(self.src[win["kernel"]], "MIXW" if fused else "MIX")
        self.window = int(re.search(r"constexpr int W = (\d+);", self.src[win["kernel"]]).group(1))
        # The roles of the layer's tensors, from the recurrence and window argument lists.
        names = lambda s: [next(iter(a.values())) if isinstance(a, dict) else a for a in s["args"]]
        wn = names(win)
        rn = names(rec)
        if fused:  # q, q_rot, k_rot, v, ring_k, ring_v, kmap, ebuf, states, slow, out, seq, pos0
            self.q_rot, self.k_rot, self.v, self.ring_k, self.ring_v = wn[1:6]
            self.q, self.out = rn[0], rn[10]
        else:
            self.q_rot, self.k_rot, self.v, self.ring_k, self.ring_v = wn[:5]
            self.q, self.out = rn[0], rn[-2]
        # the raw keys: the key pass's input where there is one (the tensor-core step 3 reads
        # the key pass's tiles instead)
        self.k = names(prep)[0] if prep else rn[1]
        dn = names(self.dec[0])
        self.dnames = dict(zip(["q", "k", "v", "q_rot", "k_rot", "state", "ring_k", "ring_v", "out"], dn[:9]))

    def func(self, name):
        if name not in self.fn:
            # The machine's own CUDA headers first: the pip wheels' include dir lacks crt/mma.h,
            # which the tensor-core kernels' mma.h includes.
            inc = tuple(f"-I{d}" for d in ("/usr/local/cuda/include",) if os.path.isdir(d))
            m = self.cp.RawModule(code=self.src[name], options=("-std=c++17",) + inc, backend="nvrtc")
            f = m.get_function(name)
            k = next(k for k in self.plan["kernels"] if k["name"] == name)
            if k["dynamic_smem"] > 48 * 1024:
                f.max_dynamic_shared_size_bytes = k["dynamic_smem"]
            self.fn[name], self.mod[name] = f, m
        return self.fn[name]

    def with_decode_source(self, src):
        """This layer with another source of its decode kernel (same name, launch and
        arguments; `VARIANT_SMEM=N` in it if its dynamic shared memory differs)."""
        v = Layer.__new__(Layer)
        v.__dict__.update(self.__dict__)
        name = self.dec[0]["kernel"]
        v.src, v.fn, v.mod = dict(self.src), {}, {}
        v.src[name] = src
        m = re.search(r"VARIANT_SMEM=(\d+)", src)
        if m:
            n = int(m.group(1))
            v.dec = [dict(s, dynamic_smem=n) if s["kernel"] == name else s for s in self.dec]
            v.plan = dict(self.plan, kernels=[dict(k, dynamic_smem=n) if k["name"] == name else k for k in self.plan["kernels"]])
        return v

    def decode_inputs_from(self, env, src, tensors, pos0=1000):
        """This layer's decode tensors at bindings `env`, with the inputs, state and ring
        copied from `src`'s decode tensors `tensors` (another build's layer, or this one's)."""
        t = self.alloc(env, {}, "decode")
        for key in ("q", "k", "v", "q_rot", "k_rot", "state", "ring_k", "ring_v"):
            t[self.dnames[key]].copy_(tensors[src.dnames[key]])
        t["__pos0"].fill_(pos0)
        return t

    def alloc(self, env, tensors, phase):
        """Allocates (if missing) every tensor the phase's layer steps name, at bindings `env`."""
        for s in self.pre if phase == "prefill" else self.dec:
            for a in s["args"]:
                if isinstance(a, dict) and "scalar" not in a:
                    n = next(iter(a.values()))
                    if n not in tensors:
                        t = self.decl[phase][n]
                        shape = [extent(e, env) for e in t["shape"]]
                        tensors[n] = torch.zeros(shape, dtype=DT[t["dtype"]], device="cuda")
        tensors.setdefault("__pos0", torch.zeros(1, dtype=torch.int32, device="cuda"))
        return tensors

    def launch(self, s, env, tensors):
        cp = self.cp
        args = []
        for a in s["args"]:
            if a == "null":
                args.append(np.uint64(0))
            elif "scalar" in a:
                sc = a["scalar"]
                if sc == "pos0":
                    args.append(np.uint64(tensors["__pos0"].data_ptr()))
                else:
                    args.append(np.int32(env[sc]))
            else:
                args.append(np.uint64(tensors[next(iter(a.values()))].data_ptr()))
        grid = tuple(extent(e, env) for e in s["grid"])
        if 0 in grid:
            return
        self.func(s["kernel"])(grid, tuple(s["block"]), tuple(args), shared_mem=s["dynamic_smem"])

    def prefill(self, env, tensors):
        for s in self.pre:
            self.launch(s, env, tensors)

    def decode(self, env, tensors):
        for s in self.dec:
            self.launch(s, env, tensors)


# ---------------------------------------------------------------- float64 reference


def reference(q, k, v, qr, kr, norm, mix_l, mix_w, window):
    """Liger GLA + sliding window, float64. q/qr [B,T,H,D], k/kr/v [B,T,KV,D] -> [B,T,H,D]."""
    B, T, H, D = q.shape
    G = H // k.shape[2]
    q, k, v, qr, kr = (x.double() for x in (q, k, v, qr, kr))
    qf, kf = torch.softmax(q, -1), torch.softmax(k, -1)
    g = F.logsigmoid(k) / norm
    rep = lambda x: x.repeat_interleave(G, 2)
    kf, g, vh, krh = rep(kf), rep(g), rep(v), rep(kr)
    S = torch.zeros(B, H, D, D, dtype=torch.float64, device=q.device)
    o = torch.empty(B, T, H, D, dtype=torch.float64, device=q.device)
    for t in range(T):
        S = torch.exp(g[:, t])[..., None] * S + kf[:, t][..., :, None] * vh[:, t][..., None, :]
        o[:, t] = torch.einsum("bhd,bhde->bhe", qf[:, t], S)
    sc = torch.einsum("bthd,bshd->bhts", qr, krh) / math.sqrt(D)
    i = torch.arange(T, device=q.device)
    band = (i[None, :] <= i[:, None]) & (i[None, :] >= i[:, None] - window)
    sc = sc.masked_fill(~band, float("-inf"))
    y = torch.einsum("bhts,bshd->bthd", torch.softmax(sc, -1), vh)
    return mix_l * o + mix_w * y


def check(args):
    fails = 0
    lines = []
    cases = [  # (H, KV, D, window, [(B, T, split, gate_scale)])
        (32, 8, 128, 64, [(1, 1, None, 1), (2, 67, 30, 1), (3, 130, 70, 1), (1, 200, None, 30)]),
        (9, 3, 64, 64, [(2, 5, None, 1), (2, 129, 64, 1), (1, 100, 37, 30), (4, 33, 17, -30)]),
        (4, 2, 64, 3, [(2, 50, 21, 1), (1, 7, 3, 1)]),
    ]
    for h, kv, d, w, runs in cases:
        L = Layer(emit(args.ligerc, args.out, h, kv, d, w))
        for B, T, split, gs in runs:
            torch.manual_seed(B * 1000 + T)
            n_dec = 4
            TT = T + n_dec
            q = torch.randn(B, TT, h, d, device="cuda").bfloat16()
            k = (torch.randn(B, TT, kv, d, device="cuda") * (abs(gs) if gs != 1 else 1) * (1 if gs > 0 else -1)).bfloat16()
            v = torch.randn(B, TT, kv, d, device="cuda").bfloat16()
            qr = torch.randn(B, TT, h, d, device="cuda").bfloat16()
            kr = torch.randn(B, TT, kv, d, device="cuda").bfloat16()
            ref = reference(q, k, v, qr, kr, L.norm, L.mix_l, L.mix_w, L.window)
            tensors = {}
            outs = []
            parts = [(0, T)] if split is None else [(0, split), (split, T)]
            for (a, bnd) in parts:
                env = {"batch": B, "seq": bnd - a, "tokens": B * (bnd - a), "max_seq": TT}
                tp = L.alloc(env, {k_: v_ for k_, v_ in tensors.items() if k_.startswith(("state", "ring", "__"))}, "prefill")
                tensors.update({k_: v_ for k_, v_ in tp.items() if k_.startswith(("state", "ring", "__"))})
                tp[L.q].copy_(q[:, a:bnd].reshape(tp[L.q].shape))
                tp[L.k].copy_(k[:, a:bnd].reshape(tp[L.k].shape))
                tp[L.v].copy_(v[:, a:bnd].reshape(tp[L.v].shape))
                tp[L.q_rot].copy_(qr[:, a:bnd].reshape(tp[L.q_rot].shape))
                tp[L.k_rot].copy_(kr[:, a:bnd].reshape(tp[L.k_rot].shape))
                tp[L.out].fill_(float("nan"))
                tp["__pos0"].fill_(a)
                L.prefill(env, tp)
                outs.append(tp[L.out].reshape(B, bnd - a, h, d).float())
            for t in range(T, TT):  # decode steps, reading the ring and the state
                env = {"batch": B, "seq": 1, "tokens": B, "max_seq": TT}
                td = L.alloc(env, {k_: v_ for k_, v_ in tensors.items() if k_.startswith(("state", "ring", "__"))}, "decode")
                dn = L.dnames
                for key, src in (("q", q), ("k", k), ("v", v), ("q_rot", qr), ("k_rot", kr)):
                    td[dn[key]].copy_(src[:, t].reshape(td[dn[key]].shape))
                td[dn["out"]].fill_(float("nan"))
                td["__pos0"].fill_(t)
                L.decode(env, td)
                outs.append(td[dn["out"]].reshape(B, 1, h, d).float())
            torch.cuda.synchronize()
            got = torch.cat(outs, 1)
            err = (got.double() - ref).abs()
            scale = ref.abs().max().item()
            rel = err.max().item() / scale if torch.isfinite(got).all() else float("inf")
            rel_pre = (err[:, :T].max().item() / scale) if torch.isfinite(got).all() else float("inf")
            rms = (err.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()
            ok = rel <= 2e-2
            fails += not ok
            msg = (f"{'PASS' if ok else 'FAIL'} liger-gla H{h} KV{kv} D{d} W{w} B{B} T{T} split={split} "
                   f"gate×{gs} +{n_dec} decode: max err {rel:.2e} (prefill {rel_pre:.2e}) of max|ref| {scale:.3g}, "
                   f"rms err {rms:.2e} of rms ref")
            print(msg, flush=True)
            lines.append(msg)
    print(f"kernel checks: {fails} failures")
    return fails


# ---------------------------------------------------------------- bench


def graph_us(launch_all, n_layers, reps=30):
    """µs per layer of `launch_all` (one launch per layer, each layer on its own buffers),
    captured in one CUDA graph and replayed: the layers run back to back as in a model's decode
    step, each reading what an earlier layer's traffic has long evicted from the L2 and paying,
    in the steady state, for the write-back of as many dirty lines as it leaves. Median of
    `reps` replays."""
    import cupy as cp
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())

    def run():
        import warnings
        with warnings.catch_warnings():  # CuPy 13 prefers Stream.from_external; both work
            warnings.simplefilter("ignore", DeprecationWarning)
            ext = cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
        with ext:  # the CuPy launches go to torch's (capturing) stream
            launch_all()
    with torch.cuda.stream(side):
        run()
        run()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        run()
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    del g
    return float(np.median(ts)) * 1e3 / n_layers


def seq_layers(bytes_per_layer, l2=64 << 20):
    """Layers a sequence timing cycles through: their buffers together are ≥ 4 L2s (at least 8
    layers, at most 512)."""
    return int(min(512, max(8, -(-4 * l2 // max(1, bytes_per_layer)))))


def bench(args):
    import triton.testing as tt
    med = lambda f: tt.do_bench(f, warmup=25, rep=200, return_mode="median")
    # copy bandwidth (bytes read + written)
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    bw = 2 * x.numel() / (med(lambda: y.copy_(x)) * 1e-3)
    del x, y
    dev = torch.cuda.get_device_name()
    print(json.dumps({"device": dev, "copy_bw_TBps": bw / 1e12}), flush=True)
    chunk_gla = fused_recurrent_gla = None
    if os.environ.get("LIGERC_BENCH_FLA", "1") != "0":
        try:
            from fla.ops.gla import chunk_gla, fused_recurrent_gla
        except Exception as e:  # noqa: BLE001
            print(f"fla not importable: {e}", flush=True)
    H, KV, D = 32, 8, 128
    L = Layer(emit(args.ligerc, args.out, H, KV, D, 64))
    # LIGERC_BENCH_BASE=PATH: another ligerc build's kernels, timed in the same process on the
    # same inputs (base_ms, base_steps_ms), so that a change is measured against what it replaces.
    base = os.environ.get("LIGERC_BENCH_BASE")
    LB = Layer(emit(base, os.path.join(args.out, "base"), H, KV, D, 64)) if base else None
    rows = []
    only = os.environ.get("LIGERC_BENCH_ONLY", "")  # "prefill" or "decode": that half alone
    shapes = [(8, 1024), (8, 2048), (8, 4096), (2, 16384)]
    if os.environ.get("LIGERC_BENCH_SHAPES"):  # e.g. "8x2048,8x4096"
        shapes = [tuple(int(x) for x in s.split("x")) for s in os.environ["LIGERC_BENCH_SHAPES"].split(",")]
    for B, T in [] if only == "decode" else shapes:
        env = {"batch": B, "seq": T, "tokens": B * T, "max_seq": T}
        tp = L.alloc(env, {}, "prefill")
        for n in (L.q, L.k, L.v, L.q_rot, L.k_rot):
            tp[n].normal_()
        ours = med(lambda: L.prefill(env, tp))
        floor = (B * T * (H + 2 * KV) * D * 2 + B * T * H * D * 2) / bw * 1e3
        r = {"kernel": "prefill", "B": B, "T": T, "ligerc_ms": ours, "floor_ms": floor, "pct_floor": 100 * floor / ours}
        # Where the prefill's time goes: each launch of the layer alone (inputs as left by a full run).
        r["ligerc_steps_ms"] = {s["kernel"]: med(lambda s=s: L.launch(s, env, tp)) for s in L.pre}
        if LB is not None:
            tb = LB.alloc(env, {}, "prefill")
            for n, m in zip((LB.q, LB.k, LB.v, LB.q_rot, LB.k_rot), (L.q, L.k, L.v, L.q_rot, L.k_rot)):
                tb[n].copy_(tp[m])
            r["base_ms"] = med(lambda: LB.prefill(env, tb))
            r["base_steps_ms"] = {s["kernel"]: med(lambda s=s: LB.launch(s, env, tb)) for s in LB.pre}
            for lay, t in ((L, tp), (LB, tb)):  # one call each from a zero state
                if lay.dnames["state"] in t:
                    t[lay.dnames["state"]].zero_()
                lay.prefill(env, t)
            o, ob = tp[L.out].float(), tb[LB.out].float()
            r["vs_base_max_abs_diff"] = (o - ob).abs().max().item()
            r["base_max_abs"] = ob.abs().max().item()
            del tb
        q = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(B, T, KV, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, T, KV, D, device="cuda", dtype=torch.bfloat16)
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        r["sdpa_causal_ms"] = med(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True))
        if chunk_gla is not None:
            kh, vh = k.repeat_interleave(H // KV, 2), v.repeat_interleave(H // KV, 2)
            g = F.logsigmoid(kh.float()) / 16
            qf, kf = torch.softmax(q.float(), -1).bfloat16(), torch.softmax(kh.float(), -1).bfloat16()
            r["fla_chunk_gla_ms"] = med(lambda: chunk_gla(qf, kf, vh, g))

            def full():
                kk, vv = k.repeat_interleave(H // KV, 2), v.repeat_interleave(H // KV, 2)
                gg = F.logsigmoid(kk.float()) / 16
                return chunk_gla(torch.softmax(q.float(), -1).to(q.dtype), torch.softmax(kk.float(), -1).to(q.dtype), vv, gg)
            r["fla_with_maps_ms"] = med(full)
            r["speedup_vs_fla_with_maps"] = r["fla_with_maps_ms"] / ours
        r["speedup_vs_sdpa"] = r["sdpa_causal_ms"] / ours
        print(json.dumps(r), flush=True)
        rows.append(r)
        del tp
        torch.cuda.empty_cache()
    for B in () if only == "prefill" else (1, 8, 64, 256):
        env = {"batch": B, "seq": 1, "tokens": B, "max_seq": 1}
        tp = L.alloc(env, {}, "decode")
        dn = L.dnames
        for key in ("q", "k", "v", "q_rot", "k_rot"):
            tp[dn[key]].normal_()
        tp[dn["state"]].normal_()
        tp["__pos0"].fill_(1000)
        ours = med(lambda: L.decode(env, tp)) * 1e3
        steps_us = {s["kernel"]: med(lambda s=s: L.launch(s, env, tp)) * 1e3 for s in L.dec}
        sbytes = tp[dn["state"]].numel() * 4 * 2
        floor = sbytes / bw * 1e6
        # every byte the step must move: the state read and written, the window's ring read (a
        # whole ring: W+1 keys and values), the token's q, k, v (raw and rotated) and the output
        io = sum(tp[dn[n]].numel() * tp[dn[n]].element_size() for n in ("ring_k", "ring_v", "q", "k", "v", "q_rot", "k_rot", "out"))
        floor_all = (sbytes + io) / bw * 1e6
        r = {"kernel": "decode", "B": B, "ligerc_us": ours, "floor_us": floor, "pct_floor": 100 * floor / ours,
             "floor_all_us": floor_all, "pct_floor_all": 100 * floor_all / ours,
             "state_per": "kv_head", "ligerc_steps_us": steps_us}
        if LB:  # the other build on the same inputs: its time, and one step of both from the same state
            tb = LB.decode_inputs_from(env, L, tp)
            bn = LB.dnames
            r["base_us"] = med(lambda: LB.decode(env, tb)) * 1e3
            r["base_steps_us"] = {s["kernel"]: med(lambda s=s: LB.launch(s, env, tb)) * 1e3 for s in LB.dec}
            for key in ("state", "ring_k", "ring_v"):
                tb[bn[key]].copy_(tp[dn[key]])
            L.decode(env, tp)
            LB.decode(env, tb)
            torch.cuda.synchronize()
            r["base_max_diff_out"] = (tp[dn["out"]].float() - tb[bn["out"]].float()).abs().max().item()
            r["base_max_diff_state"] = (tp[dn["state"]] - tb[bn["state"]]).abs().max().item()
        # The same step as one of NL layers run back to back in a CUDA graph (µs per layer;
        # do_bench above flushes the L2 with a 256 MB memset before each call, so its figure also
        # pays for writing back the flush's dirty lines that the step's reads evict), and a copy
        # of the step's bytes (half read, half written) timed both ways.
        layer_bytes = sbytes + io
        nl = seq_layers(layer_bytes)
        layers = [tp] + [L.decode_inputs_from(env, L, tp) for _ in range(nl - 1)]
        r["seq_layers"] = nl
        r["seq_us"] = graph_us(lambda: [L.decode(env, t) for t in layers], nl)
        r["seq_pct_floor_all"] = 100 * floor_all / r["seq_us"]
        # LIGERC_DECODE_VARIANTS=a.cu,b.cu: other sources of the decode kernel (same name, launch
        # and arguments), timed both ways on the same layers, and one step of each from the same
        # state (at pos 1000 and pos 10) against the emitted kernel's.
        for vp in filter(None, os.environ.get("LIGERC_DECODE_VARIANTS", "").split(",")):
            V = L.with_decode_source(open(vp).read())
            vr = {"us": med(lambda: V.decode(env, tp)) * 1e3,
                  "seq_us": graph_us(lambda: [V.decode(env, t) for t in layers], nl)}
            for p0 in (1000, 10):
                res = []
                for lay in (L, V):
                    for key in ("state", "ring_k", "ring_v"):
                        tp[dn[key]].copy_(layers[1][dn[key]])
                    tp["__pos0"].fill_(p0)
                    lay.decode(env, tp)
                    res.append((tp[dn["out"]].float().clone(), tp[dn["state"]].clone(), tp[dn["ring_k"]].clone()))
                (o0, s0_, k0), (o1, s1_, k1) = res
                vr[f"pos{p0}_max_diff_out"] = (o0 - o1).abs().max().item()
                vr[f"pos{p0}_max_out"] = o0.abs().max().item()
                vr[f"pos{p0}_max_diff_state"] = (s0_ - s1_).abs().max().item()
                vr[f"pos{p0}_ring_equal"] = bool(torch.equal(k0, k1))
                vr[f"pos{p0}_finite"] = bool(torch.isfinite(o1).all().item())
            tp["__pos0"].fill_(1000)
            r.setdefault("variants", {})[os.path.basename(vp)] = vr
        if LB:
            bl = [LB.decode_inputs_from(env, L, t) for t in layers]
            r["base_seq_us"] = graph_us(lambda: [LB.decode(env, u) for u in bl], nl)
            del bl
        half = layer_bytes // 2
        cx = [torch.empty(half, dtype=torch.uint8, device="cuda") for _ in range(nl)]
        cy = [torch.empty(half, dtype=torch.uint8, device="cuda") for _ in range(nl)]
        r["copy_same_bytes_us"] = med(lambda: cy[0].copy_(cx[0])) * 1e3
        r["copy_same_bytes_seq_us"] = graph_us(lambda: [y.copy_(x) for x, y in zip(cx, cy)], nl)
        del cx, cy, layers
        torch.cuda.empty_cache()
        if fused_recurrent_gla is not None:
            q = torch.randn(B, 1, H, D, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(B, 1, H, D, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(B, 1, H, D, device="cuda", dtype=torch.bfloat16)
            g = F.logsigmoid(torch.randn(B, 1, H, D, device="cuda")) / 16
            s0 = torch.randn(B, H, D, D, device="cuda")
            r["fla_fused_recurrent_us"] = med(lambda: fused_recurrent_gla(q, k, v, g, initial_state=s0, output_final_state=True)) * 1e3
            r["speedup_vs_fla"] = r["fla_fused_recurrent_us"] / ours
            fl = []
            for _ in range(seq_layers(s0.numel() * 4 * 2)):
                fl.append((q.clone(), k.clone(), v.clone(), g.clone(), s0.clone()))
            r["fla_seq_layers"] = len(fl)
            r["fla_seq_us"] = graph_us(lambda: [fused_recurrent_gla(*x[:4], initial_state=x[4], output_final_state=True) for x in fl], len(fl))
            del fl
            torch.cuda.empty_cache()
        print(json.dumps(r), flush=True)
        rows.append(r)
    json.dump(rows, open(os.path.join(args.out, "kernel_bench.json"), "w"), indent=1)
    return 0


def profile(args):
    """One prefill and one batch-64 decode step of the bench layer (B=8, T=1024), after a
    warm-up: the launches to capture with `ncu -k regex:... python3 gpu_kernels.py profile`."""
    H, KV, D = 32, 8, 128
    L = Layer(emit(args.ligerc, args.out, H, KV, D, 64))
    env = {"batch": 8, "seq": 1024, "tokens": 8 * 1024, "max_seq": 1024}
    tp = L.alloc(env, {}, "prefill")
    for n in (L.q, L.k, L.v, L.q_rot, L.k_rot):
        tp[n].normal_()
    for _ in range(2):
        L.prefill(env, tp)
    env = {"batch": 64, "seq": 1, "tokens": 64, "max_seq": 1}
    td = L.alloc(env, {}, "decode")
    for key in ("q", "k", "v", "q_rot", "k_rot", "state"):
        td[L.dnames[key]].normal_()
    td["__pos0"].fill_(1000)
    for _ in range(2):
        L.decode(env, td)
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["check", "bench", "profile"])
    ap.add_argument("--ligerc", default=".gpu/ligerc")
    ap.add_argument("--out", default="/tmp/ligerc-kernels")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    sys.exit({"check": check, "bench": bench, "profile": profile}[a.what](a))
