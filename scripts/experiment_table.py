#!/usr/bin/env python3
"""The results table of scripts/experiment.sh: RESULTS/table.md (Markdown) and
RESULTS/table.json, from the eval-*.json, train-*/summary.json, train-*.seconds,
long-*.json and ctx-*.json files it wrote.

    python3 scripts/experiment_table.py RESULTS "piqa arc_easy arc_challenge hellaswag winogrande"

Metrics per task follow the Liger paper (LIGER.md §5): acc for piqa, arc_easy, winogrande,
sciq, boolq, openbookqa; acc_norm for arc_challenge and hellaswag. Recovery is reported two
ways, because SmolLM2-135M sits close to chance: linearized average / original average, and
(linearized − chance) / (original − chance) with the tasks' chance levels averaged the same way.
"""
import json
import os
import sys

METRIC = {"arc_challenge": "acc_norm", "hellaswag": "acc_norm"}
CHANCE = {
    "piqa": 0.5,
    "arc_easy": 0.25,
    "arc_challenge": 0.25,
    "hellaswag": 0.25,
    "winogrande": 0.5,
    "sciq": 0.25,
    "boolq": 0.5,
    "openbookqa": 0.25,
}
ROWS = [
    ("original", "SmolLM2-135M-Instruct (original)"),
    ("gla", "Liger-GLA, no training"),
    ("gla+ft", "Liger-GLA + LoRA"),
    ("hgrn2", "Liger-HGRN2, no training"),
    ("hgrn2+ft", "Liger-HGRN2 + LoRA"),
    ("hybrid", "Liger-GLA hybrid (softmax in layers 7, 15, 23), no training"),
    ("hybrid+ft", "Liger-GLA hybrid + LoRA"),
]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def find(obj, key):
    """The first value under `key` anywhere in a JSON tree (depth first), or None."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        children = obj.values()
    elif isinstance(obj, list):
        children = obj
    else:
        return None
    for c in children:
        got = find(c, key)
        if got is not None:
            return got
    return None


def main():
    res, tasks = sys.argv[1], sys.argv[2].split()
    chance = sum(CHANCE[t] for t in tasks) / len(tasks)
    table = {}
    for key, _ in ROWS:
        r = load(os.path.join(res, f"eval-{key}.json"))
        if r is None:
            continue
        scores = {}
        for t in tasks:
            got = r["tasks"].get(t)
            if got is None:
                sys.exit(f"eval-{key}.json has no task {t}")
            scores[t] = {"value": got[METRIC.get(t, "acc")], "n": got["n"]}
        avg = sum(s["value"] for s in scores.values()) / len(tasks)
        row = {"scores": scores, "average": avg}
        if key.endswith("+ft"):
            s = load(os.path.join(res, f"train-{key[:-3]}", "summary.json"))
            secs = None
            p = os.path.join(res, f"train-{key[:-3]}.seconds")
            if os.path.exists(p):
                secs = int(open(p).read().strip())
            if s:
                row["trained_tokens"] = s["trained_tokens"]
                row["updates"] = s["steps"]
                row["loss"] = [s["first_loss"], s["last_loss"]]
            row["gpu_minutes"] = None if secs is None else secs / 60
        table[key] = row
    orig = table.get("original")
    for key, row in table.items():
        if orig and key != "original":
            row["recovery_average"] = row["average"] / orig["average"]
            margin = orig["average"] - chance
            row["recovery_margin"] = (row["average"] - chance) / margin if margin > 0 else None
    with open(os.path.join(res, "table.json"), "w") as f:
        json.dump({"tasks": tasks, "chance": chance, "rows": table}, f, indent=1)

    head = ["model"] + [f"{t} ({METRIC.get(t, 'acc')})" for t in tasks]
    head += ["average", "recovery of average", "recovery of margin", "tokens", "train min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label in ROWS:
        row = table.get(key)
        if row is None:
            continue
        cells = [label] + [f"{row['scores'][t]['value']:.3f}" for t in tasks]
        cells.append(f"{row['average']:.3f}")
        ra, rm = row.get("recovery_average"), row.get("recovery_margin")
        cells.append("—" if ra is None else f"{100 * ra:.1f}%")
        cells.append("—" if rm is None else f"{100 * rm:.1f}%")
        tok = row.get("trained_tokens")
        cells.append("—" if tok is None else f"{tok / 1e6:.2f}M")
        gm = row.get("gpu_minutes")
        cells.append("—" if gm is None else f"{gm:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    n = {t: orig["scores"][t]["n"] for t in tasks} if orig else {}
    lines.append("")
    lines.append(f"Chance level (average of the tasks' chance): {chance:.3f}. Questions per task: {n}. "
                 "train min: wall minutes of the train stage (on the GPU: device minutes).")
    for key, label in ROWS:
        lc = load(os.path.join(res, f"long-{key}.json"))
        if lc is None:
            continue
        by_length = find(lc["passkey"], "by_length") or []
        buckets = find(lc["perplexity"], "buckets") or []
        pk = ", ".join(f"{r['length']} tokens {r['correct']}/{r['trials']}" for r in by_length)
        lines.append("")
        pos = ", ".join(
            f"[{b['lo']}, {b['hi']}): {b['mean_nll']:.3f}" for b in buckets if b.get("tokens")
        )
        lines.append(f"Long context, {label}: passkey {pk}; mean loss (nats) by position {pos}")
    for key, label in ROWS:
        cx = load(os.path.join(res, f"ctx-{key}.json"))
        if cx is None:
            continue
        lines.append("")
        lines.append(
            f"Context ablation, {label}: mean loss {cx['long_context']['mean_nll']:.4f} nats with "
            f"512–1023 tokens of context, {cx['short_context']['mean_nll']:.4f} with 64–127: "
            f"{cx['gain_nats']:+.4f} nats from context beyond 127 tokens"
        )
    md = "\n".join(lines) + "\n"
    with open(os.path.join(res, "table.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
