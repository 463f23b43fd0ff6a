#!/usr/bin/env python3
"""Reference scores for `ligerc eval --task`: transformers, fp32, CPU, lm-eval's conventions.

Usage:
  scripts/eval_reference.py --model models/SmolLM2-135M-Instruct-hf \
      [--tasks piqa,arc_easy,...] [--limit 5] [--data-dir data/oe-eval] [-o tests/golden/eval_smollm2.json]

Reads the same OE-Eval request files as ligerc (data/oe-eval/<task>.jsonl.gz, fetched by
scripts/fetch-oe-eval.sh) and, independently of ligerc, scores the first N questions of each:

* request lines with the same doc_id are one question's choices (ordered by idx, gold = label);
  doc_id >= 1,000,000 (OE-Eval's unconditional requests) are skipped;
* each (context, continuation) pair is tokenized like lm-eval's HFLM._encode_pair: trailing
  whitespace of the context moves to the continuation, whole = encode(context + continuation),
  ctx = encode(context), cont = whole[len(ctx):]; no special tokens;
* the model reads (ctx + cont)[-(max_length + 1):][:-1], one full forward per choice (no cache,
  no batching), and the continuation's log-probabilities (log_softmax in float64 of the fp32
  logits) are summed;
* acc = argmax loglik; acc_norm = argmax loglik / UTF-8 bytes of the continuation string;
  acc_per_char = argmax loglik / characters of it (numpy.argmax: first index on ties).

Writes JSON: {"model", "tasks": {task: {"n", "acc", "acc_norm", "acc_per_char",
"questions": [{"doc_id", "gold", "loglik": [...], "tokens": [...], "bytes": [...]}]}}}.
Needs torch and transformers (scripts/requirements-dev.txt), not the CI venv.
"""

import argparse
import gzip
import json
import sys
from pathlib import Path

TASKS = "piqa,arc_easy,arc_challenge,hellaswag,winogrande,sciq,boolq,openbookqa"
UNCOND = 1_000_000


def read_questions(path, limit):
    """Questions of a request file, in order of first appearance: (doc_id, gold, [(ctx, cont)])."""
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    docs = {}
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if r["doc_id"] >= UNCOND:
                continue
            d = docs.setdefault(r["doc_id"], {"gold": r["label"], "choices": {}})
            d["choices"][r["idx"]] = (r["request"]["context"], r["request"]["continuation"])
    out = []
    for doc_id, d in list(docs.items())[:limit]:
        ch = d["choices"]
        assert sorted(ch) == list(range(len(ch))), f"{path}: doc_id {doc_id} choice indices"
        out.append((doc_id, d["gold"], [ch[i] for i in range(len(ch))]))
    return out


def encode_pair(tok, context, continuation):
    """lm-eval's HFLM._encode_pair for causal models."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok.encode(context + continuation, add_special_tokens=False)
    ctx = tok.encode(context, add_special_tokens=False)
    return ctx, whole[len(ctx):]


def loglik(model, torch, ctx, cont, max_length):
    seq = (ctx + cont)[-(max_length + 1):][:-1]
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)
    base = len(seq) + 1 - len(cont)
    return [float(lp[base + j - 1, t]) for j, t in enumerate(cont)]


def argmax(xs):
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--data-dir", type=Path, default=Path("data/oe-eval"))
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("-o", "--output", type=Path)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    report = {
        "model": a.model.name,
        "reference": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, fp32 CPU",
        "limit": a.limit,
        "max_length": a.max_length,
        "tasks": {},
    }
    for task in a.tasks.split(","):
        qs = read_questions(a.data_dir / f"{task}.jsonl.gz", a.limit)
        rows = []
        for doc_id, gold, choices in qs:
            lls, ntok, nbytes, nchars = [], [], [], []
            for ctx_s, cont_s in choices:
                ctx, cont = encode_pair(tok, ctx_s, cont_s)
                lp = loglik(model, torch, ctx, cont, a.max_length)
                lls.append(sum(lp))
                ntok.append(len(cont))
                nbytes.append(len(cont_s.encode("utf-8")))
                nchars.append(len(cont_s))
            rows.append({
                "doc_id": doc_id, "gold": gold, "loglik": lls, "tokens": ntok, "bytes": nbytes,
                "pred": argmax(lls),
                "pred_norm": argmax([l / b for l, b in zip(lls, nbytes)]),
                "pred_per_char": argmax([l / c for l, c in zip(lls, nchars)]),
            })
        n = len(rows)
        frac = lambda k: sum(r[k] == r["gold"] for r in rows) / n
        report["tasks"][task] = {
            "n": n, "acc": frac("pred"), "acc_norm": frac("pred_norm"),
            "acc_per_char": frac("pred_per_char"), "questions": rows,
        }
        print(f"{task}: n {n} acc {frac('pred'):.4f} acc_norm {frac('pred_norm'):.4f}", file=sys.stderr)
    text = json.dumps(report, indent=1) + "\n"
    if a.output:
        a.output.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
