#!/usr/bin/env python3
"""Check scripts/gguf_to_hf.py's output against transformers' own GGUF loader (developer-run).

Usage: check_gguf_to_hf.py GGUF HFDIR [--text TEXT] [--tol 1e-4]

Needs torch + transformers (not CI). Loads HFDIR with AutoTokenizer/AutoModelForCausalLM and the
GGUF with from_pretrained(dir, gguf_file=...), both on CPU in float32, and checks that TEXT
tokenizes identically and that the logits agree within --tol (max abs diff). Exit 1 on mismatch.
"""
import argparse
import os
import sys

try:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as e:
    sys.exit(f"check_gguf_to_hf.py: {e} (needs torch + transformers; a developer tool, not CI)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", metavar="GGUF")
    ap.add_argument("hfdir", metavar="HFDIR")
    ap.add_argument("--text", default="The capital of France is")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    for p in (a.gguf, os.path.join(a.hfdir, "config.json")):
        if not os.path.isfile(p):
            sys.exit(f"check_gguf_to_hf.py: no such file: {p}")
    gdir, gname = os.path.dirname(os.path.abspath(a.gguf)), os.path.basename(a.gguf)
    torch.manual_seed(0)
    tok_hf = AutoTokenizer.from_pretrained(a.hfdir)
    tok_gg = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    ids_hf, ids_gg = tok_hf(a.text)["input_ids"], tok_gg(a.text)["input_ids"]
    print(f"tokens hf  : {ids_hf}\ntokens gguf: {ids_gg}")
    ok = ids_hf == ids_gg
    kw = dict(dtype=torch.float32, attn_implementation="eager")
    m_hf = AutoModelForCausalLM.from_pretrained(a.hfdir, **kw).eval()
    m_gg = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, **kw).eval()
    x = torch.tensor([ids_gg])
    with torch.no_grad():
        l_hf, l_gg = m_hf(x).logits, m_gg(x).logits
    diff = (l_hf - l_gg).abs().max().item()
    same_argmax = bool((l_hf.argmax(-1) == l_gg.argmax(-1)).all())
    print(f"logits {tuple(l_hf.shape)} max|diff| = {diff:.3g} (tol {a.tol}), same argmax: {same_argmax}")
    ok = ok and diff <= a.tol and same_argmax
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
