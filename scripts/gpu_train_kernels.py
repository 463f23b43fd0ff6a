#!/usr/bin/env python3
"""The LigerGate / LigerAttention training kernels (codegen/src/cuda/kernels/liger_train.rs) on a
GPU, without Rust: correctness against float64 torch autograd, and forward+backward timings
against fla `chunk_gla`. Prints one JSON object per line.

    # here (Rust): sources + launch lists
    LIGERC_TRAIN_KERNELS_DUMP=.gpu/train cargo test --test cuda_train_kernels dump -- --ignored
    # on the GPU machine (carry .gpu/train and .whl/)
    python3 scripts/gpu_train_kernels.py check [--dir .gpu/train]
    python3 scripts/gpu_train_kernels.py bench [--dir .gpu/train]

check: for every dumped spec (GLA GQA 4:1 D128 / 3:1 D64 / 2:1 D64 window 3, HGRN2, retention,
linear, swa-only, GSA GQA 3:1 D64 M64 / 2:1 D64 M32 window 3) at batch x seq = 1x1, 2x37, 3x67,
1x200, with moderate and extreme (near 0 and near -30) gates: the forward launch list (Y) and the
backward list (DQ, DK, DV, DQRot, DKRot, DGate), every output and the scratch pre-filled with NaN,
vs torch autograd of the float64 reference (softmax feature maps / 1 - e^g for HGRN2,
per-channel / broadcast / no decay; GSA as a per-token recurrence over M slots on raw q, k with
slot writes 1 - e^g and a softmax over M; window softmax over window+1 keys with scale
1/sqrt(D); mixes and GSA's M from launches.json). Also the GLA gate kernels (K -> Gate,
K, DGate -> DK). Pass: max|err| <= 2e-4 x max|ref| per output for the f32 kernels, and the
dump's "tolerance" (TC_TOL in tests/cuda_train_kernels.rs) for the bf16 tensor-core ones ("_tc").

bench: B=8, H=32, KV=8, D=128, T=1024 and 4096: our gate + attention forward, backward, and
both (f32 kernels, then the bf16 tensor-core ones: LIGERC_BENCH_SPECS), vs fla chunk_gla (bf16, then f32 inputs: LIGERC_BENCH_FLA_DTYPES, "none" for ours alone; feature maps, gate and
the k/v repeat to 32 heads in torch, as upstream Liger; scale 1) forward and forward+backward.
That peer lacks the sliding-window branch ours include, so its ratio flatters fla; the like-for-like
peer ("fla_*_win_*") adds fla's own parallel_attn window (window_size = window + 1, scale 1/sqrt(D),
GQA) on QRot/KRot/V and the mix, gradients to all five inputs; "fla_*_attn_only_*": the window alone.
Medians of triton.testing.do_bench. Ours print first, on a line of their own (fla's first calls
autotune its Triton kernels for tens of seconds); shapes: LIGERC_BENCH_SHAPES (8x1024,8x4096).
"""
import argparse
import json
import math
import os
import re
import sys
import time
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Spec:
    """One dumped spec: its module (compiled once), constants and launch lists."""

    def __init__(self, folder):
        import cupy as cp
        self.cp = cp
        self.name = os.path.basename(folder)
        self.meta = json.load(open(os.path.join(folder, "launches.json")))
        self.mod = cp.RawModule(code=open(os.path.join(folder, "source.cu")).read(),
                                options=("-std=c++17",), backend="nvrtc")
        self.gate_mod = cp.RawModule(code=open(os.path.join(folder, "gate_source.cu")).read(),
                                     options=("-std=c++17",), backend="nvrtc")
        self.fn = {}
        m = self.meta
        self.variant, self.H, self.KV, self.D = m["variant"], m["heads"], m["kv_heads"], m["head_dim"]
        self.W, self.mix_w, self.mix_l = m["window"], m["mix_window"], m["mix_linear"]
        self.M = m.get("slots", 0)

    def func(self, mod, name, smem):
        # A kernel's launches may ask for more dynamic shared memory than its first (the
        # tensor-core window kernels take more tiles a block at larger batches): raise the limit.
        if name not in self.fn:
            self.fn[name] = [mod.get_function(name), 48 * 1024]
        f = self.fn[name]
        if smem > f[1]:
            f[0].max_dynamic_shared_size_bytes = smem
            f[1] = smem
        return f[0]

    def run(self, shape, which, bufs, scratch):
        lists = self.meta["launches"][shape]
        mod = self.gate_mod if which.startswith("gate") else self.mod
        B, T = (int(x) for x in shape.split("x"))
        for l in lists[which]:
            args = []
            for a in l["args"]:
                if isinstance(a, list):
                    args.append(np.uint64(scratch.data_ptr() + 4 * a[1]))
                elif a == "Batch":
                    args.append(np.int32(B))
                elif a == "Seq":
                    args.append(np.int32(T))
                else:
                    t = bufs.get(a)
                    args.append(np.uint64(0 if t is None else t.data_ptr()))
            self.func(mod, l["kernel"], l["smem"])(tuple(l["grid"]), (l["block"],), tuple(args),
                                                   shared_mem=l["smem"])


def gate_width(variant, d, slots=0):
    return {"retention": 1, "linear": 0, "swa-only": 0, "gsa": slots}.get(variant, d)


def gsa_reference(q, k, v, gate, kv):
    """GSA's recurrent branch in float64 (autograd-able), token by token as runtime/src/ops/liger/gsa.rs:
    Hk = Hk diag(e^g) + k^T s (D x M), p = softmax_M(q Hk) (raw q, k, scale 1), Hv = diag(e^g) Hv + s^T v
    (M x D), o = p Hv, with slot writes s = 1 - e^g; query head h reads KV head h // (H / KV).
    q [B,T,H,D], k/v [B,T,KV,D], gate [B,T,KV,M] (log-gates <= 0) -> o [B,T,H,D]."""
    B, T, H, D = q.shape
    M = gate.shape[-1]
    qg = q.reshape(B, T, kv, H // kv, D)
    s, a = -torch.expm1(gate), torch.exp(gate)
    hk = torch.zeros((B, kv, D, M), dtype=q.dtype, device=q.device)
    hv = torch.zeros((B, kv, M, D), dtype=q.dtype, device=q.device)
    outs = []
    for t in range(T):
        hk = hk * a[:, t, :, None, :] + k[:, t, :, :, None] * s[:, t, :, None, :]
        p = torch.softmax(torch.einsum("bjgd,bjdm->bjgm", qg[:, t], hk), -1)
        hv = hv * a[:, t, :, :, None] + s[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bjgm,bjmd->bjgd", p, hv))
    return torch.stack(outs, 1).reshape(B, T, H, D)


def reference(s, q, k, v, qr, kr, gate):
    """Liger attention in float64 (autograd-able). q/qr [B,T,H,D], k/kr/v [B,T,KV,D], gate [B,T,KV,w]
    (w: D for GLA and HGRN2, M for GSA, 1 for retention)."""
    B, T, H, D = q.shape
    G = H // s.KV
    rep = lambda x: x.repeat_interleave(G, 2)
    i = torch.arange(T, device=q.device)
    sc = torch.einsum("bthd,bshd->bhts", qr, rep(kr)) / math.sqrt(D)
    band = (i[None, :] <= i[:, None]) & (i[None, :] >= i[:, None] - s.W)
    y = torch.einsum("bhts,bshd->bthd", torch.softmax(sc.masked_fill(~band, float("-inf")), -1), rep(v))
    out = s.mix_w * y
    if s.variant == "swa-only":
        return out
    if s.variant == "gsa":
        return out + s.mix_l * gsa_reference(q, k, v, gate, s.KV)
    qf = torch.softmax(q, -1)
    kf = -torch.expm1(gate) if s.variant == "hgrn2" else torch.softmax(k, -1)
    if s.variant in ("gla", "hgrn2"):
        g = gate
    elif s.variant == "retention":
        g = gate.expand(B, T, s.KV, D)
    else:
        g = torch.zeros_like(k)
    cb = torch.cumsum(rep(g), 1)                                    # [B,T,H,D]
    diff = cb[:, :, None] - cb[:, None, :]                          # [B,t,s,H,D]
    causal = (i[None, :] <= i[:, None])[None, :, :, None, None]
    w = torch.exp(torch.where(causal, diff, torch.full_like(diff, float("-inf"))))
    a = torch.einsum("bthd,bshd,btshd->bhts", qf, rep(kf), w)
    return out + s.mix_l * torch.einsum("bhts,bshd->bthd", a, rep(v))


def rel(a, b):
    scale = b.abs().max().item()
    d = (a.double() - b).abs().max().item()
    if math.isnan(d):
        return float("inf")
    return d / scale if scale > 0 else d


def check(args):
    fails = 0
    torch.manual_seed(0)
    for folder in sorted(os.listdir(args.dir)):
        s = Spec(os.path.join(args.dir, folder))
        for shape in ("1x1", "2x37", "3x67", "1x200"):
            B, T = (int(x) for x in shape.split("x"))
            for extreme in (False, True):
                H, KV, D = s.H, s.KV, s.D
                wd = gate_width(s.variant, D, s.M)
                dev = dict(device="cuda", dtype=torch.float32)
                x = {"Q": torch.rand(B, T, H, D, **dev) * 4 - 2, "K": torch.rand(B, T, KV, D, **dev) * 4 - 2,
                     "V": torch.rand(B, T, KV, D, **dev) * 2 - 1, "QRot": torch.rand(B, T, H, D, **dev) * 3 - 1.5,
                     "KRot": torch.rand(B, T, KV, D, **dev) * 3 - 1.5}
                if wd:
                    u = torch.rand(B, T, KV, wd, **dev)
                    gate = -0.4 * torch.rand_like(u)
                    if extreme:
                        gate = torch.where(u < 1 / 3, -1e-3 * torch.rand_like(u),
                                           torch.where(u < 2 / 3, -30 + torch.rand_like(u), gate))
                    x["Gate"] = gate
                dy = torch.rand(B, T, H, D, **dev) * 2 - 1
                meta = s.meta["launches"][shape]
                nan = lambda t: torch.full_like(t, float("nan"))
                bufs = dict(x, DY=dy, Y=nan(dy), DQ=nan(x["Q"]), DK=nan(x["K"]), DV=nan(x["V"]),
                            DQRot=nan(x["QRot"]), DKRot=nan(x["KRot"]))
                if wd:
                    bufs["DGate"] = nan(x["Gate"])
                scratch = torch.full((max(meta["scratch"], 1),), float("nan"), **dev)
                s.run(shape, "forward", bufs, scratch)
                s.run(shape, "backward", bufs, scratch)
                torch.cuda.synchronize()
                ref_in = {n: t.double().requires_grad_() for n, t in x.items()}
                yref = reference(s, ref_in["Q"], ref_in["K"], ref_in["V"], ref_in["QRot"], ref_in["KRot"],
                                 ref_in.get("Gate"))
                yref.backward(dy.double())
                errs = {"Y": rel(bufs["Y"], yref.detach())}
                for n in x:
                    g = ref_in[n].grad
                    # An operand the output does not depend on (HGRN2's raw key) has no
                    # autograd gradient: ours must then be exactly zero.
                    errs["D" + n] = rel(bufs["D" + n], torch.zeros_like(ref_in[n]) if g is None else g)
                tol = s.meta.get("tolerance", 2e-4)  # bf16 tensor-core kernels ("_tc"): TC_TOL of the Rust test
                ok = all(e <= tol for e in errs.values())
                fails += not ok
                print(json.dumps({"spec": s.name, "shape": shape, "extreme_gates": extreme, "pass": ok,
                                  "errors": {k: float(f"{v:.3g}") for k, v in errs.items()}}), flush=True)
        # The GLA gate kernels of this head shape (normalizer 16).
        B, T = 2, 37
        k = (torch.rand(B, T, s.KV, s.D, device="cuda") * 16 - 8)
        dg = torch.rand_like(k) * 2 - 1
        bufs = {"K": k, "Gate": torch.full_like(k, float("nan")), "DGate": dg, "DK": torch.full_like(k, float("nan"))}
        s.run("2x37", "gate_forward", bufs, k)
        s.run("2x37", "gate_backward", bufs, k)
        torch.cuda.synchronize()
        kd = k.double().requires_grad_()
        g = F.logsigmoid(kd) / 16
        g.backward(dg.double())
        e = {"Gate": rel(bufs["Gate"], g.detach()), "DK": rel(bufs["DK"], kd.grad)}
        ok = all(v <= 2e-4 for v in e.values())
        fails += not ok
        print(json.dumps({"spec": s.name, "gate_kernels": True, "pass": ok,
                          "errors": {k: float(f"{v:.3g}") for k, v in e.items()}}), flush=True)
    print(json.dumps({"check_failures": fails}), flush=True)
    return fails


def load_fla():
    try:
        from fla.ops.gla import chunk_gla
        return chunk_gla
    except Exception:  # noqa: BLE001
        pass
    whl = [f for f in os.listdir(os.path.join(ROOT, ".whl")) if f.startswith("fla_core")] if os.path.isdir(
        os.path.join(ROOT, ".whl")) else []
    if not whl:
        return None
    dst = "/tmp/fla_core_whl"
    if not os.path.isdir(dst):
        zipfile.ZipFile(os.path.join(ROOT, ".whl", whl[0])).extractall(dst)
    sys.path.insert(0, dst)
    try:
        from fla.ops.gla import chunk_gla
        return chunk_gla
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"fla_import_error": str(e)}), flush=True)
        return None


def load_fla_attn():
    """fla's sliding-window softmax attention (the wheel is on the path once load_fla found it), or
    None with a note: then only the like-for-like peer drops, chunk_gla alone still runs."""
    try:
        from fla.ops.attn.parallel import parallel_attn
        return parallel_attn
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"fla_attn_import_error": str(e)}), flush=True)
        return None


def events_ms(f, n):
    """Mean milliseconds of `n` calls of `f` after one untimed call, by CUDA events."""
    f()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        f()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / n


def bench(args):
    import triton.testing as tt
    med = lambda f: tt.do_bench(f, warmup=10, rep=100, return_mode="median")
    specs = []
    for name in os.environ.get("LIGERC_BENCH_SPECS", "gla_h32_kv8_d128_w64,gla_h32_kv8_d128_w64_tc").split(","):
        if not os.path.isdir(os.path.join(args.dir, name)):
            continue
        t0 = time.perf_counter()
        specs.append(Spec(os.path.join(args.dir, name)))
        print(json.dumps({"spec": name, "compile_s": time.perf_counter() - t0}), flush=True)
    chunk_gla = load_fla()
    print(json.dumps({"device": torch.cuda.get_device_name(), "fla": chunk_gla is not None}), flush=True)
    parallel_attn = load_fla_attn() if chunk_gla is not None else None
    H, KV, D = specs[0].H, specs[0].KV, specs[0].D
    for B, T in [tuple(map(int, bt.split("x"))) for bt in os.environ.get("LIGERC_BENCH_SHAPES", "8x1024,8x4096").split(",")]:
        shape = f"{B}x{T}"
        dev = dict(device="cuda", dtype=torch.float32)
        x = {"Q": torch.randn(B, T, H, D, **dev), "K": torch.randn(B, T, KV, D, **dev),
             "V": torch.randn(B, T, KV, D, **dev), "QRot": torch.randn(B, T, H, D, **dev),
             "KRot": torch.randn(B, T, KV, D, **dev)}
        e = torch.empty_like
        bufs = dict(x, Gate=e(x["K"]), DY=torch.randn(B, T, H, D, **dev), Y=e(x["Q"]), DQ=e(x["Q"]), DK=e(x["K"]),
                    DV=e(x["V"]), DQRot=e(x["Q"]), DKRot=e(x["K"]), DGate=e(x["K"]))
        gk = {"K": x["K"], "Gate": bufs["Gate"], "DGate": bufs["DGate"], "DK": e(x["K"])}
        for s in specs:
            r = bench_ours(s, shape, B, T, bufs, gk, med)
        bench_fla(chunk_gla, parallel_attn, x, bufs, r, med, specs[-1])
        del bufs, gk, x
        torch.cuda.empty_cache()


def bench_ours(s, shape, B, T, bufs, gk, med):
    """Our gate + attention forward, backward and both for spec `s`: one timed call each, CUDA
    events, medians, and a per-kernel breakdown; prints and returns the row."""
    dev = dict(device="cuda", dtype=torch.float32)
    scratch = torch.empty(s.meta["launches"][shape]["scratch"], **dev)
    fwd = lambda: (s.run(shape, "gate_forward", gk, scratch), s.run(shape, "forward", bufs, scratch))
    bwd = lambda: (s.run(shape, "backward", bufs, scratch), s.run(shape, "gate_backward", gk, scratch))
    r = {"spec": s.name, "math": s.meta.get("math", "f32"), "B": B, "T": T, "H": s.H, "KV": s.KV, "D": s.D,
         "scratch_MiB": scratch.numel() * 4 / 2**20}
    # one of each first, timed, so a slow shape shows where its time goes
    for what, f in (("forward", fwd), ("backward", bwd)):
        t0 = time.perf_counter()
        f()
        torch.cuda.synchronize()
        print(json.dumps({"B": B, "T": T, f"first_{what}_s": time.perf_counter() - t0}), flush=True)
    # ours with CUDA events first (a few calls: a slow kernel shows at once), then medians
    for what, f in (("fwd", fwd), ("bwd", bwd)):
        print(json.dumps({"B": B, "T": T, f"ligerc_{what}_ms_events": events_ms(f, 3)}), flush=True)
    r["ligerc_fwd_ms"] = med(fwd)
    r["ligerc_bwd_ms"] = med(bwd)
    r["ligerc_fwd_bwd_ms"] = med(lambda: (fwd(), bwd()))
    # per-kernel breakdown of the forward and the backward (events, 3 calls each)
    for which in ("forward", "backward"):
        per = {}
        saved = s.meta["launches"][shape]
        for l in saved[which]:
            s.meta["launches"][shape] = dict(saved, **{which: [l]})
            per[re.sub(r"^.*_m[0-9a-f]{8}_", "", l["kernel"])] = events_ms(
                lambda: s.run(shape, which, bufs, scratch), 3)
        s.meta["launches"][shape] = saved
        r[f"ligerc_{which[:3]}_kernels_ms"] = per
    # ours first, on a line of their own: fla's first calls autotune its Triton kernels
    # (tens of seconds per dtype and direction), so a short slot still reports ours
    print(json.dumps(r), flush=True)
    del scratch
    return r


def bench_fla(chunk_gla, parallel_attn, x, bufs, r, med, s):
    """fla chunk_gla forward and forward+backward (bf16, then f32: LIGERC_BENCH_FLA_DTYPES) with
    the feature maps, gate and k/v repeat in torch, as upstream Liger; `r` is the last of ours.
    Ours also run the sliding-window branch, so then, like for like ("fla_{dtype}_win_*"): the same
    plus fla's parallel_attn over QRot/KRot/V (keys t-W..=t of spec `s`, the last of ours; scale
    1/sqrt(D); GQA in the kernel) mixed as s.mix_w * window + s.mix_l * gla, backward into q, k, v,
    QRot and KRot; and that window attention alone, forward+backward ("fla_{dtype}_attn_only_*")."""
    B, T, H, D = x["Q"].shape
    KV = x["K"].shape[2]
    dtypes = {"f32": torch.float32, "bf16": torch.bfloat16}
    if chunk_gla is not None:
        names = os.environ.get("LIGERC_BENCH_FLA_DTYPES", "bf16,f32").split(",")  # "none": ours alone
        for dt in (dtypes[n] for n in names if n != "none"):
            q = x["Q"].to(dt).requires_grad_()
            k = x["K"].to(dt).requires_grad_()
            v = x["V"].to(dt).requires_grad_()
            dy = bufs["DY"].to(dt)

            def run_fla():
                kk, vv = k.repeat_interleave(H // KV, 2), v.repeat_interleave(H // KV, 2)
                gg = F.logsigmoid(kk.float()) / 16
                o, _ = chunk_gla(torch.softmax(q.float(), -1).to(dt), torch.softmax(kk.float(), -1).to(dt), vv, gg,
                                 scale=1.0)
                return o

            tag = "f32" if dt == torch.float32 else "bf16"
            t0 = time.perf_counter()
            run_fla().backward(dy)  # Triton compiles and autotunes here
            torch.cuda.synchronize()
            print(json.dumps({f"fla_{tag}_first_fwd_bwd_s": time.perf_counter() - t0}), flush=True)
            with torch.no_grad():
                r[f"fla_{tag}_fwd_ms"] = med(run_fla)
            r[f"fla_{tag}_fwd_bwd_ms"] = med(lambda: run_fla().backward(dy))
            r[f"speedup_vs_fla_{tag}_fwd_bwd"] = r[f"fla_{tag}_fwd_bwd_ms"] / r["ligerc_fwd_bwd_ms"]
            q.grad = k.grad = v.grad = None
            print(json.dumps({k_: v_ for k_, v_ in r.items() if k_.startswith(("spec", "B", "T", "fla_", "speedup"))}), flush=True)
            if parallel_attn is None:
                continue
            # copies (in f32, .to alone would hand back x's own tensors); v stays the one leaf both
            # branches read, so its gradient sums the two, as our single DV does
            qr, kr = (x[n].to(dt, copy=True).requires_grad_() for n in ("QRot", "KRot"))
            # fla's window_size w: keys [i-w+1, i]; ours, W: keys t-W..=t, so w = W + 1
            win = lambda: parallel_attn(qr, kr, v, scale=None, window_size=s.W + 1)
            run_win = lambda: s.mix_w * win() + s.mix_l * run_fla()
            try:
                t0 = time.perf_counter()
                run_win().backward(dy)  # parallel_attn's kernels compile here (untimed)
                torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001  e.g. f32 tiles past the shared-memory limit
                print(json.dumps({f"fla_{tag}_win_error": str(e)[:500]}), flush=True)
                q.grad = k.grad = v.grad = None
                continue
            print(json.dumps({f"fla_{tag}_win_first_fwd_bwd_s": time.perf_counter() - t0}), flush=True)
            with torch.no_grad():
                r[f"fla_{tag}_win_fwd_ms"] = med(run_win)
            r[f"fla_{tag}_win_fwd_bwd_ms"] = med(lambda: run_win().backward(dy))
            r[f"speedup_vs_fla_{tag}_win_fwd_bwd"] = r[f"fla_{tag}_win_fwd_bwd_ms"] / r["ligerc_fwd_bwd_ms"]
            r[f"fla_{tag}_attn_only_fwd_bwd_ms"] = med(lambda: win().backward(dy))
            q.grad = k.grad = v.grad = qr.grad = kr.grad = None
            print(json.dumps({k_: v_ for k_, v_ in r.items() if k_.startswith(("spec", "B", "T"))
                              or "_win_" in k_ or "_attn_only_" in k_}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["check", "bench", "all"])
    ap.add_argument("--dir", default=os.path.join(ROOT, ".gpu", "train"))
    a = ap.parse_args()
    fails = 0
    if a.mode in ("check", "all"):
        fails = check(a)
    if a.mode in ("bench", "all"):
        bench(a)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
