#!/usr/bin/env python3
"""Convert a llama-architecture GGUF file to a Hugging Face model directory (f32).

Usage: gguf_to_hf.py GGUF OUTDIR [--force]

This is a REFERENCE converter, written independently of ligerc's Rust code (frontends/):
tests compare ligerc's own GGUF import against the directory this produces, so it must not
share code or assumptions with it. It needs only numpy, gguf and safetensors (CI-installable,
no torch), and it uses the `gguf` package's GGUFReader and gguf.quants.dequantize.

Writes to OUTDIR:
  config.json             LlamaForCausalLM, transformers-4.x style keys, torch_dtype float32
  model.safetensors       every tensor dequantized to f32 under its HF name; llama.cpp's q/k
                          row permutation undone; lm_head.weight only if the GGUF has
                          output.weight (otherwise tie_word_embeddings is true)
  tokenizer.json          byte-level BPE ("gpt2" GGUF tokenizers only) built from the GGUF
                          vocabulary and merges; control tokens (type 3) are special added tokens
  tokenizer_config.json, generation_config.json   minimal

The pre-tokenizer is plain ByteLevel (GPT-2 regex), as in transformers' own GGUF tokenizer.
llama.cpp's "smollm" pre-tokenizer also splits digits one by one; for SmolLM2 that changes
nothing, since its vocabulary has no token holding a digit next to any other character.
"""
import argparse
import json
import os
import sys

try:
    import numpy as np
    import gguf
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import save_file
except ImportError as e:  # pragma: no cover
    sys.exit(f"gguf_to_hf.py: {e}; run scripts/setup-python.sh and use .venv/bin/python")


class ConvertError(Exception):
    pass


def field(reader, key, default=KeyError):
    f = reader.fields.get(key)
    if f is None:
        if default is KeyError:
            raise ConvertError(f"GGUF metadata key '{key}' is missing")
        return default
    return f.contents()


def unpermute(w, n_head):
    """Invert llama.cpp's convert permutation
    w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)."""
    rows, cols = w.shape
    if rows % (2 * n_head):
        raise ConvertError(f"cannot un-permute a [{rows}, {cols}] weight over {n_head} heads")
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def load_tensor(t):
    """Dequantize one GGUF tensor to a float32 numpy array in row-major (PyTorch) order.

    GGUF lists dims fastest-first (ne0 = in-features for a 2-D weight); GGUFReader's numpy
    view and dequantize() give the reversed, row-major shape, i.e. [out, in] like nn.Linear."""
    try:
        a = dequantize(t.data, t.tensor_type)
    except NotImplementedError as e:
        raise ConvertError(f"tensor {t.name}: {e}") from None
    want = tuple(int(d) for d in reversed(t.shape))
    if a.shape != want:
        a = a.reshape(want)
    return np.ascontiguousarray(a, dtype=np.float32)


def f32(x):
    """A float32 metadata value as its shortest decimal (9.99999974e-06 -> 1e-05)."""
    return float(str(np.float32(x)))


def hparams(r):
    arch = field(r, "general.architecture")
    if arch != "llama":
        raise ConvertError(f"general.architecture is '{arch}'; only 'llama' is supported")
    p = "llama."
    n_embd = int(field(r, p + "embedding_length"))
    n_head = int(field(r, p + "attention.head_count"))
    n_head_kv = int(field(r, p + "attention.head_count_kv", n_head))
    head_dim = int(field(r, p + "attention.key_length", n_embd // n_head))
    rope_dim = int(field(r, p + "rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise ConvertError(f"partial rotary (rope.dimension_count {rope_dim} != head_dim {head_dim}) unsupported")
    scaling = field(r, p + "rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise ConvertError(f"rope scaling '{scaling}' is not supported by this converter")
    return dict(
        n_layer=int(field(r, p + "block_count")),
        n_embd=n_embd,
        n_ff=int(field(r, p + "feed_forward_length")),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        eps=f32(field(r, p + "attention.layer_norm_rms_epsilon")),
        rope_theta=f32(field(r, p + "rope.freq_base", 10000.0)),
        n_ctx=int(field(r, p + "context_length", 2048)),
        vocab=field(r, p + "vocab_size", None),
    )


def convert_weights(r, hp):
    by_name = {t.name: t for t in r.tensors}
    unknown = [n for n in by_name if n == "rope_freqs.weight" or n.endswith(".bias")]
    if unknown:
        raise ConvertError(f"unsupported tensors for a plain Llama: {unknown[:5]}")
    out, used = {}, set()

    def take(gname, hname, n_head=None):
        t = by_name.get(gname)
        if t is None:
            raise ConvertError(f"tensor '{gname}' is missing")
        w = load_tensor(t)
        if n_head is not None:
            w = unpermute(w, n_head)
        out[hname] = w
        used.add(gname)

    take("token_embd.weight", "model.embed_tokens.weight")
    take("output_norm.weight", "model.norm.weight")
    tied = "output.weight" not in by_name
    if not tied:
        take("output.weight", "lm_head.weight")
    for i in range(hp["n_layer"]):
        b, h = f"blk.{i}.", f"model.layers.{i}."
        take(b + "attn_q.weight", h + "self_attn.q_proj.weight", hp["n_head"])
        take(b + "attn_k.weight", h + "self_attn.k_proj.weight", hp["n_head_kv"])
        take(b + "attn_v.weight", h + "self_attn.v_proj.weight")
        take(b + "attn_output.weight", h + "self_attn.o_proj.weight")
        take(b + "ffn_gate.weight", h + "mlp.gate_proj.weight")
        take(b + "ffn_up.weight", h + "mlp.up_proj.weight")
        take(b + "ffn_down.weight", h + "mlp.down_proj.weight")
        take(b + "attn_norm.weight", h + "input_layernorm.weight")
        take(b + "ffn_norm.weight", h + "post_attention_layernorm.weight")
    left = sorted(set(by_name) - used)
    if left:
        raise ConvertError(f"{len(left)} GGUF tensors not converted, e.g. {left[:5]}")

    d, hd = hp["n_embd"], hp["head_dim"]
    expect = {
        "model.embed_tokens.weight": (None, d),
        "model.layers.0.self_attn.q_proj.weight": (hp["n_head"] * hd, d),
        "model.layers.0.self_attn.k_proj.weight": (hp["n_head_kv"] * hd, d),
        "model.layers.0.self_attn.o_proj.weight": (d, hp["n_head"] * hd),
        "model.layers.0.mlp.gate_proj.weight": (hp["n_ff"], d),
        "model.layers.0.mlp.down_proj.weight": (d, hp["n_ff"]),
    }
    for name, shape in expect.items():
        got = out[name].shape
        if len(got) != 2 or any(s is not None and s != g for s, g in zip(shape, got)):
            raise ConvertError(f"{name} has shape {list(got)}, expected {list(shape)} (None = any)")
    return out, tied


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_tokenizer(r):
    model = field(r, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ConvertError(f"tokenizer.ggml.model is '{model}'; only 'gpt2' (byte-level BPE) is supported")
    tokens = list(field(r, "tokenizer.ggml.tokens"))
    types = list(field(r, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = list(field(r, "tokenizer.ggml.merges"))
    if len(types) != len(tokens):
        raise ConvertError(f"{len(tokens)} tokens but {len(types)} token types")
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {}
    for i, t in enumerate(tokens):
        if not set(t) <= alphabet:  # stored as raw text: respell in the byte alphabet
            t = "".join(spelling[b] for b in t.encode("utf-8"))
        if t in vocab:
            raise ConvertError(f"duplicate token {t!r} at ids {vocab[t]} and {i}")
        vocab[t] = i
    added = []
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty == 3 and set(t) <= alphabet:  # CONTROL
            added.append((i, t, True))
        elif ty == 4:  # USER_DEFINED: whole-matched, not special
            added.append((i, t, False))
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}

    def ident(key):
        v = field(r, key, None)
        return int(v) if v is not None else None

    ids = {k: ident(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "unknown", "padding")}
    add_bos = bool(field(r, "tokenizer.ggml.add_bos_token", False))
    add_eos = bool(field(r, "tokenizer.ggml.add_eos_token", False))
    post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    if add_bos or add_eos:
        single, pair, special = [], [], {}
        for flag, key in ((add_bos, "bos"), (add_eos, "eos")):
            if flag and ids[key] is None:
                raise ConvertError(f"add_{key}_token is set but no {key} token id is given")
        if add_bos:
            b = tokens[ids["bos"]]
            single.append({"SpecialToken": {"id": b, "type_id": 0}})
            pair.append({"SpecialToken": {"id": b, "type_id": 0}})
            special[b] = {"id": b, "ids": [ids["bos"]], "tokens": [b]}
        single.append({"Sequence": {"id": "A", "type_id": 0}})
        pair.append({"Sequence": {"id": "A", "type_id": 0}})
        if add_eos:
            e = tokens[ids["eos"]]
            single.append({"SpecialToken": {"id": e, "type_id": 0}})
            special[e] = {"id": e, "ids": [ids["eos"]], "tokens": [e]}
        pair.append({"Sequence": {"id": "B", "type_id": 1}})
        post = {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special}

    tok_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": sp}
            for i, t, sp in added
        ],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab, "merges": merges,
        },
    }
    name = lambda k: tokens[ids[k]] if ids[k] is not None else None  # noqa: E731
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name("bos"), "eos_token": name("eos"),
        "unk_token": name("unknown"), "pad_token": name("padding"),
        "add_bos_token": add_bos, "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "additional_special_tokens": [t for _, t, sp in added if sp and t not in
                                      (name("bos"), name("eos"), name("unknown"), name("padding"))],
    }
    tmpl = field(r, "tokenizer.chat_template", None)
    if tmpl:
        tok_cfg["chat_template"] = tmpl
    return tok_json, tok_cfg, ids, len(tokens)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Reference converter, independent of ligerc's Rust code.")
    ap.add_argument("gguf", metavar="GGUF", help="llama-architecture .gguf file")
    ap.add_argument("outdir", metavar="OUTDIR", help="output directory (created)")
    ap.add_argument("--force", action="store_true", help="overwrite files in a non-empty OUTDIR")
    a = ap.parse_args(argv)
    if not os.path.isfile(a.gguf):
        sys.exit(f"gguf_to_hf.py: no such file: {a.gguf}")
    if os.path.isdir(a.outdir) and os.listdir(a.outdir) and not a.force:
        sys.exit(f"gguf_to_hf.py: {a.outdir} is not empty (use --force to overwrite)")
    try:
        r = GGUFReader(a.gguf)
    except Exception as e:
        sys.exit(f"gguf_to_hf.py: cannot read {a.gguf} as GGUF: {e}")
    try:
        hp = hparams(r)
        tok_json, tok_cfg, ids, n_tokens = build_tokenizer(r)
        weights, tied = convert_weights(r, hp)
    except ConvertError as e:
        sys.exit(f"gguf_to_hf.py: {a.gguf}: {e}")
    n_vocab = weights["model.embed_tokens.weight"].shape[0]
    if hp["vocab"] is not None and int(hp["vocab"]) != n_vocab:
        sys.exit(f"gguf_to_hf.py: llama.vocab_size {hp['vocab']} != token_embd rows {n_vocab}")
    if n_tokens != n_vocab:
        sys.exit(f"gguf_to_hf.py: {n_tokens} tokenizer tokens != token_embd rows {n_vocab}")

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hp["n_embd"],
        "intermediate_size": hp["n_ff"],
        "num_hidden_layers": hp["n_layer"],
        "num_attention_heads": hp["n_head"],
        "num_key_value_heads": hp["n_head_kv"],
        "head_dim": hp["head_dim"],
        "hidden_act": "silu",
        "rms_norm_eps": hp["eps"],
        "rope_theta": hp["rope_theta"],
        "rope_scaling": None,
        "vocab_size": n_vocab,
        "max_position_embeddings": hp["n_ctx"],
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["padding"],
        "torch_dtype": "float32",
    }
    gen = {"bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["padding"]}
    tok_cfg["model_max_length"] = hp["n_ctx"]

    os.makedirs(a.outdir, exist_ok=True)

    def dump(name, obj, **kw):
        with open(os.path.join(a.outdir, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, **kw)
            f.write("\n")

    save_file(weights, os.path.join(a.outdir, "model.safetensors"), metadata={"format": "pt"})
    dump("config.json", config, indent=2)
    dump("generation_config.json", gen, indent=2)
    dump("tokenizer_config.json", tok_cfg, indent=2)
    dump("tokenizer.json", tok_json)
    n_params = sum(w.size for w in weights.values())
    print(f"gguf_to_hf.py: wrote {a.outdir} ({len(weights)} tensors, {n_params / 1e6:.1f}M params, "
          f"tied={tied}, vocab={n_vocab})", file=sys.stderr)


if __name__ == "__main__":
    main()
