#!/usr/bin/env python3
"""Where a decode step's time goes, block by block, on the GPU machine (no Rust there).

    python3 scripts/decode_timeline.py [--ligerc .gpu/ligerc] [--src VARIANT.cu] [--batch 1,64,256]

It emits the bench layer (H 32, KV 8, D 128, window 64) with `ligerc --emit cuda`, takes its
decode kernel (or --src, a variant with the same name and arguments), and inserts a
`%globaltimer` stamp (thread 0 of each block) at the phase boundaries the emitted source
marks. The bulk layout (`liger_*_decode_bulk_*`, the default at D 128): entry, the token's
vectors stored, feature maps, window landed, scores, softmax, p·V, the state's first chunk
landed, the state done, end. The thread-loaded layout (emitted with
LIGERC_CUDA_DECODE=threads in the environment): entry, loads issued, window landed, token
stored, feature maps + scores, softmax, p·V, each state pass, end. It then runs 8 layers back
to back (as in a model's decode step, so
the L2 holds what earlier layers left), three times, and prints for the last layer: the
kernel's span, the blocks that started in the first wave and the start of the rest, and per
group the median time of each phase (µs). The stamps cost a global store each; compare spans
with `gpu_kernels.py bench`'s `seq_us`, not with a figure from an uninstrumented run.
"""
import argparse
import os
import re
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_kernels as gk  # noqa: E402

# Per layout: the phases' names and, for each stamp, (anchor in the emitted source, stamp
# inserted after it; after the rest of the line when the anchor does not end one). Stamp 0 is
# the entry, the last the end (after a barrier).
LAYOUTS = {
    "threads": (
        ["issue", "window landed", "token stored", "maps+scores", "softmax", "pV+wo",
         "pass0", "pass1", "pass2", "pass3", "out"],
        [("tid = threadIdx.x;\n", "    STAMP(0);\n"),
         ("    load_pass(1);", "    STAMP(1);\n"),
         ("    cp_async_wait_all();  // the staged window (row cur is stored over below)\n    __syncthreads();\n", "    STAMP(2);\n"),
         ("uint4{0u, 0u, 0u, 0u};  // rows G.. zero\n    __syncthreads();\n", "    STAMP(3);\n"),
         ("    score(0);\n    __syncthreads();\n", "    STAMP(4);\n"),
         ("                wm[g] = m;\n            }\n        }\n        __syncthreads();\n", "        STAMP(5);\n"),
         ("    __syncthreads();  // wo is written; the keys (the per-warp sums' memory) are dead\n", "    STAMP(6);\n"),
         ("        __syncthreads();  // (the other buffer's readers are past the previous pass's barrier)\n", "        STAMP(7 + cb);\n")],
    ),
    "bulk": (
        ["vectors stored", "maps", "window landed", "scores", "softmax", "pV+wo",
         "chunk0 landed", "state", "out"],
        [("lane = tid & 31;\n", "    STAMP(0);\n"),
         ("    __syncthreads();  // (also: the barriers are armed)\n", "    STAMP(1);\n"),
         ("    softmax_rows(qk,", "    STAMP(2);\n"),
         ("    bulk_wait(&bars[0]);\n", "    STAMP(3);\n"),
         ("        wmma::store_matrix_sync(wsc + KT * t * GS, sc, GS, wmma::mem_row_major);\n    }\n    __syncthreads();\n", "    STAMP(4);\n"),
         ("        if (lane == 0) wi[g] = MIX_WIN / sum;\n    }\n    __syncthreads();\n", "    STAMP(5);\n"),
         ("        wo[e] = a * wi[g];\n    }\n", "    STAMP(6);\n"),
         ("        bulk_wait(&bars[1 + ch]);\n", "        if (ch == 0) STAMP(7);\n"),
         ("        if (tid == 0) bulk_store(sg + ch * CR * D, ss + ch * CR * D, CR * D * 4);\n    }\n", "    STAMP(8);\n")],
    ),
}


def layout(src):
    """The decode kernel's layout: `bulk` (`liger_*_decode_bulk_*`) or `threads`."""
    return "bulk" if re.search(r"liger_\w+_decode_bulk_", src) else "threads"


def instrument(src):
    """The source with the stamps (and the number of the last); names the first anchor it
    cannot find."""
    head = ("__device__ unsigned long long tstamp[4096 * 16];\n"
            "__device__ __forceinline__ unsigned long long gtime() { unsigned long long t; "
            "asm volatile(\"mov.u64 %0, %globaltimer;\" : \"=l\"(t)); return t; }\n"
            "#define STAMP(i) do { if (threadIdx.x == 0) tstamp[(blockIdx.z * gridDim.y + blockIdx.y) * 16 + (i)] = gtime(); } while (0)\n")
    phases, anchors = LAYOUTS[layout(src)]
    m = re.search(r"^constexpr int H = ", src, re.M)
    if not m:
        raise SystemExit("decode_timeline: no `constexpr int H` in the kernel source")
    src = src[:m.start()] + head + src[m.start():]
    for anchor, stamp in anchors:
        if anchor not in src:
            raise SystemExit(f"decode_timeline: the kernel source has no phase marker {anchor.strip()!r}")
        at = src.index(anchor) + len(anchor)
        if not anchor.endswith("\n"):  # after the rest of that line
            at = src.index("\n", at) + 1
        src = src[:at] + stamp + src[at:]
    end = src.rindex("}")
    return src[:end] + f"    __syncthreads();\n    STAMP({len(phases)});\n}}" + src[end + 1:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ligerc", default=".gpu/ligerc")
    ap.add_argument("--src", help="a variant of the decode kernel (same name and arguments)")
    ap.add_argument("--batch", default="1,64,256")
    ap.add_argument("--out", default="/tmp/ligerc-timeline")
    a = ap.parse_args()
    import cupy as cp
    H, KV, D = 32, 8, 128
    L0 = gk.Layer(gk.emit(a.ligerc, a.out, H, KV, D, 64))
    name = L0.dec[0]["kernel"]
    raw = open(a.src).read() if a.src else L0.src[name]
    phases = LAYOUTS[layout(raw)][0]
    L = L0.with_decode_source(instrument(raw))
    L.func(name)
    ts = cp.ndarray((4096 * 16,), dtype=cp.uint64, memptr=L.mod[name].get_global("tstamp"))
    for B in (int(x) for x in a.batch.split(",")):
        if B * KV > 4096:
            raise SystemExit(f"decode_timeline: batch {B} has more than 4096 blocks")
        env = {"batch": B, "seq": 1, "tokens": B, "max_seq": 1}
        layers = []
        for _ in range(8):
            t = L.alloc(env, {}, "decode")
            for key in ("q", "k", "v", "q_rot", "k_rot", "state"):
                t[L.dnames[key]].normal_()
            t["__pos0"].fill_(1000)
            layers.append(t)
        for _ in range(3):
            ts.fill(0)
            for t in layers:
                L.decode(env, t)
        torch.cuda.synchronize()
        r = cp.asnumpy(ts).reshape(4096, 16)[: B * KV, : len(phases) + 1].astype(np.int64)
        r = (r - r[:, 0].min()) / 1000.0  # µs from the first block's entry
        first = r[:, 0] < 0.5
        rest = f"; the rest start at {np.median(r[~first, 0]):.2f} (median)" if (~first).any() else ""
        print(f"B={B}: span {r[:, -1].max():.2f} us, {len(r)} blocks, {first.sum()} in the first wave{rest}")
        for sel, lab in ((first, "first wave"), (~first, "later")):
            if sel.any():
                d = np.diff(r[sel], axis=1)
                print(f"  {lab:10s} n={sel.sum():4d} end {np.median(r[sel, -1]):6.2f} (max {r[sel, -1].max():6.2f}) | "
                      + " ".join(f"{n} {np.median(d[:, i]):.2f}" for i, n in enumerate(phases)))
        del layers
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
