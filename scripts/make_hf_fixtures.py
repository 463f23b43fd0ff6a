#!/usr/bin/env python3
"""Make tests/fixtures/hf/<name>/ and tests/golden/hf_fixtures.json (developer-run).

Usage: make_hf_fixtures.py [--out-dir tests/fixtures/hf] [-o tests/golden/hf_fixtures.json]

Needs torch + transformers (scripts/requirements-dev.txt; NOT for CI, the outputs are committed).
Builds one tiny random-initialised Llama-family model per entry of FAMILIES (hidden 64, 2 layers,
4 heads, head_dim 16, intermediate 128, vocab 128, float32), with weights drawn by this script from a
fixed seed (not transformers' initialiser, so a transformers upgrade does not change them):
  embeddings N(0, 1); every Linear weight N(0, 1/fan_in); biases (qwen2's q/k/v) N(0, 0.5²);
  every RMSNorm weight 1 + 0.1·N(0, 1), so a misplaced or missing norm weight shows.
Each is saved with save_pretrained(safe_serialization=True); only config.json and model.safetensors
are kept. transformers 5 writes 5.x-style configs (`rope_parameters`, and `layer_types` for qwen2);
the configs named in V4_STYLE are then rewritten by hand in transformers-4.x style (`rope_theta` +
`rope_scaling`, `torch_dtype`). The golden logits are computed from the model RELOADED from the
fixture directory (so transformers' own reading of the written config, 4.x style included, is what
the goldens reflect), on CPU in float32 with eager attention, for the two fixed rows IDS as one
[2, 10] batch. The script also prints how much each architectural detail moves the logits (rope
scaling off, biases off, norm weights reset to 1), to show the test can see it.
"""
import argparse
import copy
import json
import os
import platform
import shutil
import sys
import tempfile

try:
    import numpy as np
    import torch
    import transformers
    from transformers import (
        AutoModelForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )
except ImportError as e:
    sys.exit(f"make_hf_fixtures.py: {e} (needs torch + transformers; developer tool, not CI)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two fixed rows of 10 token ids (< 128), run as one [2, 10] batch.
IDS = [
    [1, 17, 93, 5, 64, 127, 40, 40, 2, 101],
    [0, 77, 12, 118, 33, 9, 86, 51, 120, 64],
]

COMMON = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    max_position_embeddings=256,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)

# name -> (model class, config class, seed, config overrides, rope parameters, what it checks)
FAMILIES = {
    "llama31": (
        LlamaForCausalLM,
        LlamaConfig,
        31,
        dict(tie_word_embeddings=False),
        # original_max_position_embeddings 64 puts head_dim 16's wavelengths (6.3 .. 3.3e5 at
        # theta 500000) in all three llama3 regimes: kept (< 16), smoothed (16..64), divided (> 64).
        dict(
            rope_type="llama3",
            rope_theta=500000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        ),
        "Llama 3.1: rope_scaling llama3, GQA 4/2, untied; config rewritten in 4.x style",
    ),
    "llama2": (
        LlamaForCausalLM,
        LlamaConfig,
        2,
        dict(num_key_value_heads=4, tie_word_embeddings=False),
        dict(rope_type="default", rope_theta=10000.0),
        "Llama 2: no GQA (4 KV heads), rope_theta 10000, untied",
    ),
    "llama32_tied": (
        LlamaForCausalLM,
        LlamaConfig,
        32,
        dict(tie_word_embeddings=True),
        dict(rope_type="default", rope_theta=500000.0),
        "Llama 3.2-style tied embeddings (no lm_head.weight), rope_theta 500000",
    ),
    "qwen2": (
        Qwen2ForCausalLM,
        Qwen2Config,
        2002,
        dict(tie_word_embeddings=False, use_sliding_window=False, sliding_window=None),
        dict(rope_type="default", rope_theta=1000000.0),
        "Qwen2: non-zero q/k/v biases, rope_theta 1e6, layer_types (5.x)",
    ),
    "mistral": (
        MistralForCausalLM,
        MistralConfig,
        7,
        dict(tie_word_embeddings=False, sliding_window=None),
        dict(rope_type="default", rope_theta=10000.0),
        "Mistral: sliding_window null",
    ),
}

V4_STYLE = {"llama31"}


def init_weights(model, seed):
    """Deterministic weights drawn here, independent of transformers' initialiser."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif name == "model.embed_tokens.weight":
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith(".weight") and p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            else:
                raise SystemExit(f"make_hf_fixtures.py: no init rule for {name} {tuple(p.shape)}")


def rewrite_v4(path):
    """Turns a transformers-5 config.json into the 4.x layout: rope_theta + rope_scaling, torch_dtype."""
    with open(path) as f:
        cfg = json.load(f)
    rp = dict(cfg.pop("rope_parameters"))
    cfg.pop("layer_types", None)
    cfg["rope_theta"] = rp.pop("rope_theta")
    cfg["rope_scaling"] = None if rp.get("rope_type") == "default" else rp
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def logits_of(model):
    with torch.no_grad():
        return model(torch.tensor(IDS, dtype=torch.long), use_cache=False).logits.float()


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def f32_list(t):
    # Shortest decimal that round-trips the float32 value (parses back to the same f32).
    return [float(str(np.float32(x))) for x in t.flatten().tolist()]


def nested(flat, shape):
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0]
    return [nested(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def unscaled_inv_freq(theta, head_dim):
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)


def make(name, out_dir):
    model_cls, config_cls, seed, overrides, rope, what = FAMILIES[name]
    cfg = config_cls(**{**COMMON, **overrides, "rope_parameters": rope})
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(cfg).float().eval()
    init_weights(model, seed)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    dest = os.path.join(out_dir, name)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(tmp, f), os.path.join(dest, f))
            os.chmod(os.path.join(dest, f), 0o644)
    style = "4.x" if name in V4_STYLE else "5.x"
    if style == "4.x":
        rewrite_v4(os.path.join(dest, "config.json"))

    # Reload from the fixture: the goldens are what transformers makes of the files as written.
    loaded = AutoModelForCausalLM.from_pretrained(
        dest, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert type(loaded) is model_cls, type(loaded)
    got_rope = {k: v for k, v in loaded.config.rope_parameters.items()}
    assert got_rope == {**rope}, f"{name}: reloaded rope_parameters {got_rope} != {rope}"
    sd, ref = loaded.state_dict(), model.state_dict()
    for k, v in ref.items():
        assert torch.equal(sd[k], v), f"{name}: {k} changed on reload"
    logits = logits_of(loaded)
    assert torch.equal(logits, logits_of(model)), f"{name}: reloaded model differs"

    from safetensors import safe_open

    with safe_open(os.path.join(dest, "model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
    assert ("lm_head.weight" in keys) == (not cfg.tie_word_embeddings), keys
    size = os.path.getsize(os.path.join(dest, "model.safetensors"))
    assert size < 1 << 20, size

    # How much each detail moves the logits (printed as max|diff| / max|logit|).
    sens = {}
    m = copy.deepcopy(loaded)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("norm.weight"):
                p.fill_(1.0)
    sens["norm weights := 1"] = rel(logits_of(m), logits)
    rot = loaded.model.rotary_emb
    theta = rope["rope_theta"]
    plain = unscaled_inv_freq(theta, cfg.head_dim)
    if rope["rope_type"] != "default":
        print(f"{name}: inv_freq (llama3-scaled) vs unscaled, theta {theta}:")
        for i, (a, b) in enumerate(zip(rot.inv_freq.tolist(), plain.tolist())):
            print(f"  [{i}] {a:.9g}  {b:.9g}  ratio {b / a:.6g}")
        assert not torch.allclose(rot.inv_freq, plain), "llama3 scaling changed nothing"
        m = copy.deepcopy(loaded)
        m.model.rotary_emb.inv_freq = plain.clone()
        sens["rope scaling off"] = rel(logits_of(m), logits)
    if any(n.endswith(".bias") for n, _ in loaded.named_parameters()):
        m = copy.deepcopy(loaded)
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n.endswith(".bias"):
                    p.zero_()
        sens["biases := 0"] = rel(logits_of(m), logits)
    m = copy.deepcopy(loaded)
    m.model.rotary_emb.inv_freq = rot.inv_freq * 1.01
    sens["inv_freq x1.01"] = rel(logits_of(m), logits)
    print(f"{name} ({style} config, {size} bytes): max|logit| {logits.abs().max():.4g}; "
          + ", ".join(f"{k}: {v:.3g}" for k, v in sens.items()))

    return {
        "description": what,
        "config_style": style,
        "model_class": model_cls.__name__,
        "seed": seed,
        "tensors": keys,
        "rope_inv_freq": f32_list(rot.inv_freq),
        "ids": IDS,
        "logits_shape": list(logits.shape),
        "logits": nested(f32_list(logits), list(logits.shape)),
        "sensitivity": {k: float(f"{v:.3g}") for k, v in sens.items()},
    }


def dumps(v, indent=0):
    """JSON with objects and nested lists indented, and each list of scalars on one line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(v, dict):
        items = [f"{inner}{json.dumps(k)}: {dumps(x, indent + 1)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(v, list) and any(isinstance(x, (list, dict)) for x in v):
        return "[\n" + ",\n".join(inner + dumps(x, indent + 1) for x in v) + "\n" + pad + "]"
    return json.dumps(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "tests/fixtures/hf"))
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "tests/golden/hf_fixtures.json"))
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(args.out_dir, exist_ok=True)
    models = {name: make(name, args.out_dir) for name in FAMILIES}
    doc = {
        "generated": {
            "script": "scripts/make_hf_fixtures.py",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "device": "cpu",
            "dtype": "float32",
            "attention": "eager",
        },
        "models": models,
    }
    with open(args.output, "w") as f:
        f.write(dumps(doc) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
