#!/usr/bin/env python3
"""Is a greedy divergence between the CPU (f32) and CUDA (bf16) runs a near tie or a bug?

usage: tie_check.py NAME CPU.npy CUDA.npy   (logits [1, T, vocab] of the same teacher-forced ids)

For every position where the two argmaxes differ, prints the CPU's top-1 − top-2 margin and
the CUDA − CPU error at that position, both over max|cpu logit| of the position. A margin
below the error is a rounding flip (tie); a margin far above it points at a real bug.
Exit 1 if any flip has margin > 3 × error.
"""
import sys

import numpy as np

name, a, b = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3])
a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
bad = 0
flips = np.nonzero(a.argmax(-1) != b.argmax(-1))[0]
for p in flips:
    s = np.abs(a[p]).max()
    top = np.sort(a[p])[-2:]
    margin = (top[1] - top[0]) / s
    err = np.abs(a[p] - b[p]).max() / s
    # what the CPU thinks of the CUDA pick
    gap_cuda_pick = (a[p].max() - a[p][b[p].argmax()]) / s
    verdict = "tie" if gap_cuda_pick <= err else ("close" if gap_cuda_pick <= 3 * err else "BUG?")
    bad += verdict == "BUG?"
    print(f"{name} pos {p}: cpu margin {margin:.4f}, cpu gap to cuda's pick {gap_cuda_pick:.4f}, err {err:.4f} -> {verdict}")
print(f"{name}: {len(flips)} argmax flips of {a.shape[0]} positions, {bad} not explained by rounding")
sys.exit(1 if bad else 0)
