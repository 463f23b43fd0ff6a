#!/usr/bin/env python3
"""Decode token ids one at a time with a step-form ONNX model in onnxruntime (CPU) and save the
logits of every position as a float32 .npy.

Usage: ort_step.py STEP.onnx --ids 1,2,3 [--ids 4,5,6 ...] [--opt] [--threads N] [--report R.json] -o OUT.npy

STEP.onnx is what `ligerc MODEL --pass linearize --emit onnx --onnx-form step` writes (its module
doc in codegen/src/onnx/step.rs is the I/O contract). Each --ids is one row (all rows the same
length). Every state input (`state.L`, `window_k.L`, `past_k.L`, ...) starts at zeros of its declared
shape, with the `batch` axis = rows and the `past` axis = 0; step t feeds `input_ids[:, t:t+1]`,
`position = t` per row, `attention_mask` ones `[rows, 1]` if the model has that input, and the
previous step's `present_*` outputs (`present_X` feeds `X`; `present_k.L`/`present_v.L` feed
`past_k.L`/`past_v.L`). Logits `[rows, len, vocab]` are written to OUT.npy; --report writes JSON with
the bytes of the state inputs fed at every step. Needs only numpy + onnxruntime. Exit 0 on
success, 1 on error, 2 on bad usage.
"""
import argparse
import json
import os
import sys

PROG = "ort_step.py"


def fail(msg, code=1):
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(code)


try:
    import numpy as np
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover
    fail(f"{e}; run scripts/setup-python.sh and use .venv/bin/python")


def parse_ids(s):
    try:
        ids = [int(x) for x in s.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ids wants comma-separated integers, got {s!r}") from None
    if not ids or min(ids) < 0:
        raise argparse.ArgumentTypeError(f"--ids wants non-negative token ids, got {s!r}")
    return ids


def feeds_back(output_name):
    """The input a `present_*` output feeds at the next step, or None."""
    if not output_name.startswith("present_"):
        return None
    rest = output_name[len("present_"):]
    if rest.startswith(("k.", "v.")):
        return "past_" + rest
    return rest


def zeros_for(inp, rows):
    dims = []
    for d in inp.shape:
        if isinstance(d, int):
            dims.append(d)
        elif d == "batch":
            dims.append(rows)
        elif d == "past":
            dims.append(0)
        else:
            fail(f"state input '{inp.name}' has axis {d!r} of unknown size (shape {inp.shape})")
    if inp.type != "tensor(float)":
        fail(f"state input '{inp.name}' has type {inp.type}; expected tensor(float)")
    return np.zeros(dims, dtype=np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("model", metavar="STEP.onnx")
    ap.add_argument("--ids", type=parse_ids, action="append", required=True,
                    help="one row of token ids, comma-separated; repeat for more rows")
    ap.add_argument("--opt", action="store_true", help="enable all ORT graph optimisations (default: disabled)")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (default 0: ORT's choice)")
    ap.add_argument("--report", metavar="R.json", help="write the state-input bytes of every step as JSON")
    ap.add_argument("-o", "--output", required=True, metavar="OUT.npy")
    a = ap.parse_args(argv)

    rows = a.ids
    if len({len(r) for r in rows}) != 1:
        fail(f"all --ids rows must have the same length, got lengths {[len(r) for r in rows]}", 2)
    if not os.path.isfile(a.model):
        fail(f"no such model file: {a.model}")

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if a.opt
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = a.threads
    so.log_severity_level = 4
    try:
        sess = ort.InferenceSession(a.model, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        fail(f"onnxruntime cannot load {a.model}: {e}")

    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = [o.name for o in sess.get_outputs()]
    for need in ("input_ids", "position"):
        if need not in inputs:
            fail(f"model has no '{need}' input (is it a step-form model?); its inputs: {list(inputs)}")
    if "logits" not in outputs:
        fail(f"model has no 'logits' output; its outputs: {outputs}")
    links = {o: feeds_back(o) for o in outputs if feeds_back(o) is not None}
    missing = sorted(set(links.values()) - set(inputs))
    if missing:
        fail(f"outputs feed inputs the model lacks: {missing}")
    states = {name: zeros_for(inputs[name], len(rows)) for name in inputs
              if name not in ("input_ids", "position", "attention_mask")}
    unfed = sorted(set(states) - set(links.values()))
    if unfed:
        fail(f"inputs no present_* output feeds: {unfed}")

    ids = np.array(rows, dtype=np.int64)
    id_type = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(inputs["input_ids"].type)
    if id_type is None:
        fail(f"input_ids has type {inputs['input_ids'].type}")
    logits, state_bytes = [], []
    for t in range(ids.shape[1]):
        feed = dict(states)
        feed["input_ids"] = ids[:, t:t + 1].astype(id_type)
        feed["position"] = np.full((len(rows),), t, dtype=np.int64)
        if "attention_mask" in inputs:
            feed["attention_mask"] = np.ones((len(rows), 1), dtype=id_type)
        state_bytes.append(int(sum(v.nbytes for v in states.values())))
        try:
            result = dict(zip(outputs, sess.run(outputs, feed)))
        except Exception as e:
            fail(f"onnxruntime step {t} failed: {e}")
        step_logits = np.asarray(result["logits"])
        if step_logits.ndim != 3 or step_logits.shape[:2] != (len(rows), 1):
            fail(f"step {t}: logits have shape {list(step_logits.shape)}, expected [{len(rows)}, 1, vocab]")
        logits.append(step_logits[:, 0, :])
        states = {links[o]: np.asarray(result[o]) for o in links}
    out = np.stack(logits, axis=1).astype(np.float32)
    if not np.isfinite(out).all():
        print(f"{PROG}: warning: logits contain non-finite values", file=sys.stderr)
    np.save(a.output, out)
    if a.report:
        with open(a.report, "w") as f:
            json.dump({"steps": ids.shape[1], "state_bytes": state_bytes, "states": sorted(states)}, f)
    print(f"{PROG}: wrote {a.output} {list(out.shape)} float32 from {ids.shape[1]} steps", file=sys.stderr)


if __name__ == "__main__":
    main()
