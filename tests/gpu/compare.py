#!/usr/bin/env python3
"""Compare two logits .npy files (CPU f32 reference vs CUDA bf16).

usage: compare.py NAME CPU.npy CUDA.npy TOL [median]  -> one line, exit 1 on failure.
Pass: max|diff| <= TOL * max|cpu| and the argmax agrees on >= 90% of positions, no NaN.
With `median`: the median over positions of max|diff_p| / max|cpu_p| <= TOL instead of
the worst position (for linearized SmolLM2, whose outputs are so sensitive that the
CPU emulation of the same bf16 plan is as far from the f32 runtime as the GPU is).
"""
import sys

import numpy as np

name, a, b, tol = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3]), float(sys.argv[4])
ok = a.shape == b.shape and np.isfinite(b).all()
if not ok:
    print(f"FAIL {name}: shapes {a.shape} vs {b.shape} or non-finite CUDA logits")
    sys.exit(1)
scale = float(np.abs(a).max())
d = float(np.abs(a - b).max())
rel = d / max(scale, 1e-30)
am = (a.argmax(-1) == b.argmax(-1)).mean()
a3, b3 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
per = np.abs(a3 - b3).max(-1) / np.abs(a3).max(-1)
med = float(np.median(per))
ok = (med if len(sys.argv) > 5 and sys.argv[5] == "median" else rel) <= tol and am >= 0.9
print(f"{'PASS' if ok else 'FAIL'} {name}: shape {a.shape} max|diff| {d:.4g} = {rel:.4f} x max|logit| ({scale:.4g}), per-position median {med:.4f}, argmax agree {am*100:.1f}%")
import os
if os.environ.get("DIAG"):
    # Per position: max|diff| over the vocabulary / max|cpu logit| of that position.
    a2, b2 = a.reshape(-1, a.shape[1], a.shape[-1]), b.reshape(-1, b.shape[1], b.shape[-1])
    per = np.abs(a2 - b2).max(-1) / np.abs(a2).max(-1)
    for r in range(per.shape[0]):
        q = " ".join(f"{x:.3f}" for x in per[r])
        print(f"  {name} row {r} per-position rel err: {q}")
sys.exit(0 if ok else 1)
