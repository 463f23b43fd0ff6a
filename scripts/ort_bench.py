#!/usr/bin/env python3
"""Time an ONNX causal LM's forward pass in onnxruntime (CPU); print JSON lines.

Usage: ort_bench.py MODEL.onnx [--seq 128,512] [--batch 1] [--reps 3] [--warmup 1] [--threads 2]
                    [--opt all|extended|basic|disabled] [--seed 0] [--label TEXT]

The onnxruntime side of `scripts/bench-cpu.sh`, the counterpart of `ligerc bench --json`. Needs only
numpy + onnxruntime. Prints one JSON object per line on stdout:
  {"tool": "onnxruntime", "stage": "session", ...}  session creation (load + graph optimisation), ms
  {"tool": "onnxruntime", "stage": "forward", "seq": T, "batch": B, "median_ms": ...}  one per --seq
Each forward feeds input_ids [B, T] of seeded random ids below the vocabulary size (the last dim of
the first output when fixed, else 100) in the dtype the model declares (int64 or int32), and
attention_mask of ones if the model has that input; any other input is an error. Every output is
fetched, as a full forward would. Times are wall-clock (time.perf_counter), median of --reps runs
after --warmup untimed ones. --threads sets intra_op_num_threads (0 = onnxruntime's choice;
inter-op is 1, sequential execution). Exit 0 on success, 1 on error, 2 on bad usage.
"""
import argparse
import json
import os
import statistics
import sys
import time

PROG = "ort_bench.py"
FALLBACK_VOCAB = 100


def fail(msg, code=1):
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(code)


try:
    import numpy as np
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover
    fail(f"{e}; run scripts/setup-python.sh and use .venv/bin/python")

DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def parse_seqs(s):
    try:
        seqs = [int(x) for x in s.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seq wants comma-separated integers, got {s!r}") from None
    if not seqs or min(seqs) <= 0:
        raise argparse.ArgumentTypeError(f"--seq wants positive lengths, got {s!r}")
    return seqs


def positive(s):
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("model", metavar="MODEL.onnx")
    ap.add_argument("--seq", type=parse_seqs, default=[128, 512], help="sequence lengths (default 128,512)")
    ap.add_argument("--batch", type=positive, default=1, help="rows per forward (default 1)")
    ap.add_argument("--reps", type=positive, default=3, help="timed runs per length (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (default 0: ORT's choice)")
    ap.add_argument("--opt", choices=["all", "extended", "basic", "disabled"], default="all",
                    help="graph optimisation level (default all, onnxruntime's own default)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random ids")
    ap.add_argument("--label", default=None, help="free-form tag carried into every line")
    a = ap.parse_args(argv)
    if a.warmup < 0 or a.threads < 0:
        fail("--warmup and --threads must not be negative", 2)
    if not os.path.isfile(a.model):
        fail(f"no such model file: {a.model}")

    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[a.opt]
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 4  # errors come back as exceptions
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(a.model, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        fail(f"onnxruntime cannot load {a.model}: {e}")
    session_ms = (time.perf_counter() - t0) * 1000.0

    inputs = {i.name: i for i in sess.get_inputs()}
    if "input_ids" not in inputs:
        fail(f"model has no 'input_ids' input; its inputs: {list(inputs)}")
    extra = sorted(set(inputs) - {"input_ids", "attention_mask"})
    if extra:
        fail(f"model needs inputs this script does not provide: {extra}")
    for name, i in inputs.items():
        if i.type not in DTYPES:
            fail(f"input '{name}' has type {i.type}; expected one of {sorted(DTYPES)}")
    out0 = sess.get_outputs()[0]
    vocab = out0.shape[-1] if out0.shape and isinstance(out0.shape[-1], int) and out0.shape[-1] > 0 else None
    if vocab is None:
        print(f"{PROG}: warning: vocabulary size unknown; drawing ids below {FALLBACK_VOCAB}", file=sys.stderr)
        vocab = FALLBACK_VOCAB

    common = {
        "tool": "onnxruntime",
        "version": ort.__version__,
        "model": a.model,
        "format": "onnx",
        "label": a.label,
        "threads": a.threads,
        "opt": a.opt,
    }

    def line(**kw):
        print(json.dumps({**common, **kw}), flush=True)

    line(stage="session", seq=None, batch=None, warmup=0, reps=1,
         median_ms=session_ms, min_ms=session_ms, max_ms=session_ms, tokens_per_s=None,
         samples_ms=[session_ms])

    rng = np.random.default_rng(a.seed)
    for seq in a.seq:
        feed = {}
        for name, i in inputs.items():
            dt = DTYPES[i.type]
            if name == "input_ids":
                feed[name] = rng.integers(0, vocab, size=(a.batch, seq)).astype(dt)
            else:
                feed[name] = np.ones((a.batch, seq), dtype=dt)
        samples = []
        for r in range(a.warmup + a.reps):
            t0 = time.perf_counter()
            try:
                outs = sess.run(None, feed)
            except Exception as e:
                fail(f"onnxruntime run failed for input_ids {list(feed['input_ids'].shape)}: {e}")
            ms = (time.perf_counter() - t0) * 1000.0
            del outs
            if r >= a.warmup:
                samples.append(ms)
        med = statistics.median(samples)
        line(stage="forward", seq=seq, batch=a.batch, warmup=a.warmup, reps=len(samples),
             median_ms=med, min_ms=min(samples), max_ms=max(samples),
             tokens_per_s=a.batch * seq * 1000.0 / med if med > 0 else None, samples_ms=samples)


if __name__ == "__main__":
    main()
