#!/usr/bin/env python3
"""Run an ONNX causal LM in onnxruntime (CPU) and save its logits as a float32 .npy.

Usage: ort_logits.py MODEL.onnx --ids 1,2,3 [--ids 4,5,6 ...] [--mask] [--opt] [--threads N] -o OUT.npy

The reference ligerc's ONNX import and `--emit onnx` output are compared against. Needs only
numpy + onnxruntime (CI-installable). Each --ids is one row of input_ids (all rows the same
length), fed as [rows, len] in the dtype the model declares (int64, or int32). If the model has an
`attention_mask` input it is fed all ones; --mask additionally requires that input (error if the
model lacks it). Any other input (position_ids, past key/values, ...) is an error. Graph
optimisations are disabled unless --opt (ORT_ENABLE_ALL). The output named `logits` (else the
only output) is written, as float32, with shape [rows, len, vocab]. Exit 0 on success, 1 on error,
2 on bad usage.
"""
import argparse
import os
import sys

PROG = "ort_logits.py"


def fail(msg, code=1):
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(code)


try:
    import numpy as np
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover
    fail(f"{e}; run scripts/setup-python.sh and use .venv/bin/python")

DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def parse_ids(s):
    try:
        ids = [int(x) for x in s.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ids wants comma-separated integers, got {s!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("--ids is empty")
    if min(ids) < 0:
        raise argparse.ArgumentTypeError(f"negative token id in {s!r}")
    return ids


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("model", metavar="MODEL.onnx")
    ap.add_argument("--ids", type=parse_ids, action="append", required=True,
                    help="one row of token ids, comma-separated; repeat for more rows")
    ap.add_argument("--mask", action="store_true", help="require (and feed, all ones) an attention_mask input")
    ap.add_argument("--opt", action="store_true", help="enable all ORT graph optimisations (default: disabled)")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (default 0: ORT's choice)")
    ap.add_argument("-o", "--output", required=True, metavar="OUT.npy")
    a = ap.parse_args(argv)

    rows = a.ids
    if len({len(r) for r in rows}) != 1:
        fail(f"all --ids rows must have the same length, got lengths {[len(r) for r in rows]}", 2)
    if not os.path.isfile(a.model):
        fail(f"no such model file: {a.model}")
    out_dir = os.path.dirname(os.path.abspath(a.output))
    if not os.path.isdir(out_dir):
        fail(f"output directory does not exist: {out_dir}")

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if a.opt
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = a.threads
    so.log_severity_level = 4  # errors come back as exceptions
    try:
        sess = ort.InferenceSession(a.model, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        fail(f"onnxruntime cannot load {a.model}: {e}")

    inputs = {i.name: i for i in sess.get_inputs()}
    if "input_ids" not in inputs:
        fail(f"model has no 'input_ids' input; its inputs: {list(inputs)}")
    extra = sorted(set(inputs) - {"input_ids", "attention_mask"})
    if extra:
        fail(f"model needs inputs this script does not provide: {extra} (it feeds input_ids"
             f" and attention_mask only)")
    if a.mask and "attention_mask" not in inputs:
        fail(f"--mask given but the model has no 'attention_mask' input; its inputs: {list(inputs)}")

    feed = {}
    for name in inputs:
        ty = inputs[name].type
        if ty not in DTYPES:
            fail(f"input '{name}' has type {ty}; expected one of {sorted(DTYPES)}")
        dt = DTYPES[ty]
        if name == "input_ids":
            feed[name] = np.array(rows, dtype=dt)
        else:
            feed[name] = np.ones((len(rows), len(rows[0])), dtype=dt)
        if dt == np.int32 and max(map(max, rows)) > np.iinfo(np.int32).max:
            fail("a token id does not fit the model's int32 input_ids")

    outputs = [o.name for o in sess.get_outputs()]
    if "logits" in outputs:
        out_name = "logits"
    elif len(outputs) == 1:
        out_name = outputs[0]
    else:
        fail(f"model has several outputs and none named 'logits': {outputs}")
    try:
        (logits,) = sess.run([out_name], feed)
    except Exception as e:
        hint = ""
        if len(rows) > 1 and "RotaryEmbedding" in str(e):
            hint = ("\nhint: onnxruntime's RotaryEmbedding kernel wants cos/sin caches of the input's batch"
                    " size, and exporters often emit batch 1: try a single --ids row")
        fail(f"onnxruntime run failed for input_ids shape {feed['input_ids'].shape}: {e}{hint}")
    logits = np.asarray(logits)
    if logits.ndim != 3 or logits.shape[:2] != (len(rows), len(rows[0])):
        fail(f"output '{out_name}' has shape {list(logits.shape)}, expected [{len(rows)}, {len(rows[0])}, vocab]")
    if not np.isfinite(logits).all():
        print(f"{PROG}: warning: logits contain non-finite values", file=sys.stderr)
    np.save(a.output, logits.astype(np.float32))
    print(f"{PROG}: wrote {a.output} {list(logits.shape)} float32 "
          f"(opt={'all' if a.opt else 'disabled'}, mask={'attention_mask' in feed})", file=sys.stderr)


if __name__ == "__main__":
    main()
