#!/usr/bin/env bash
# CPU benchmark of SmolLM2-135M: ligerc's reference runtime vs onnxruntime, same machine, same run.
#
# Usage: scripts/bench-cpu.sh [--threads N] [--seq 128,512] [--reps 3] [--warmup 1] [--decode N]
#                             [--out DIR] [--no-build]
#   1. cargo build --release (skipped with --no-build; target/release/ligerc must then exist).
#   2. scripts/setup-python.sh and scripts/fetch-smollm2.sh: the .venv/ and models/ (GGUF + HF dir).
#   3. Exports the GGUF to ONNX: ligerc MODEL.gguf --emit onnx -o DIR/smollm2.onnx (timed).
#   4. ligerc bench --json on the GGUF and on the HF directory (import, weight preparation, forward
#      at each --seq; with --decode N also prefill + N KV-cache decode steps, ms per token);
#      ligerc bench --import-only on tests/fixtures/onnx/tiny_dynamo_op18_sdpa.onnx and on the
#      exported ONNX, and on the three SmolLM2 files again with --no-check-finite (import without
#      the NaN/Inf weight scan); scripts/ort_bench.py on the exported ONNX at the same lengths.
#   5. Prints a markdown report on stdout: forward ms, ours / onnxruntime ratio, import times.
#   --threads N  threads for both sides (default: nproc): RAYON_NUM_THREADS and MATMUL_NUM_THREADS
#                for ligerc, intra_op_num_threads for onnxruntime.
#   --seq LIST   comma-separated sequence lengths (default 128,512); batch is 1.
#   --reps N     timed runs per measurement, median reported (default 3); --warmup N untimed first (1).
#   --decode N   also time N decode steps after a prefill of each length (default 0: off).
#   --out DIR    keep the raw JSON lines and the exported ONNX in DIR (default: a temp dir, removed).
# Runs one benchmark at a time; on a small machine the whole run takes a few minutes.
set -euo pipefail

die() { echo "bench-cpu.sh: $*" >&2; exit 1; }
usage_err() { echo "bench-cpu.sh: $*; see --help" >&2; exit 2; }

threads="$(nproc)"
seq=128,512
reps=3
warmup=1
decode=0
out=""
build=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) [[ $# -ge 2 ]] || usage_err "--threads needs a value"; threads="$2"; shift 2 ;;
        --seq) [[ $# -ge 2 ]] || usage_err "--seq needs a value"; seq="$2"; shift 2 ;;
        --reps) [[ $# -ge 2 ]] || usage_err "--reps needs a value"; reps="$2"; shift 2 ;;
        --warmup) [[ $# -ge 2 ]] || usage_err "--warmup needs a value"; warmup="$2"; shift 2 ;;
        --decode) [[ $# -ge 2 ]] || usage_err "--decode needs a value"; decode="$2"; shift 2 ;;
        --out) [[ $# -ge 2 ]] || usage_err "--out needs a value"; out="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0 ;;
        *) usage_err "unknown argument '$1'" ;;
    esac
done
for v in threads reps; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || usage_err "--$v wants a positive integer, got '${!v}'"
done
for v in warmup decode; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || usage_err "--$v wants a non-negative integer, got '${!v}'"
done
[[ "$seq" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || usage_err "--seq wants lengths like 128,512, got '$seq'"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
ligerc="$root/target/release/ligerc"
tiny="$root/tests/fixtures/onnx/tiny_dynamo_op18_sdpa.onnx"

if [[ -n "$out" ]]; then
    mkdir -p "$out"
    dir="$(cd "$out" && pwd)"
else
    dir="$(mktemp -d)"
    trap 'rm -rf "$dir"' EXIT
fi

if [[ $build == 1 ]]; then
    echo "bench-cpu.sh: cargo build --release" >&2
    cargo build --release >&2 || die "cargo build --release failed"
fi
[[ -x "$ligerc" ]] || die "$ligerc missing (drop --no-build)"

py="$("$root/scripts/setup-python.sh")" || die "scripts/setup-python.sh failed"
fetched="$(LIGERC_PY="$py" "$root/scripts/fetch-smollm2.sh")" || die "scripts/fetch-smollm2.sh failed"
gguf="$(sed -n 1p <<<"$fetched")"
hfdir="$(sed -n 2p <<<"$fetched")"
[[ -f "$gguf" && -d "$hfdir" ]] || die "fetch-smollm2.sh gave no GGUF/HF dir: $fetched"
onnx="$dir/smollm2.onnx"

export RAYON_NUM_THREADS="$threads" MATMUL_NUM_THREADS="$threads"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
if awk -v l="${load_start%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n) }'; then
    echo "bench-cpu.sh: warning: load average ${load_start%% *} on $(nproc) cores; other work will skew" \
        "the timings (onnxruntime's timings seemed to suffer most), so the ratios too" >&2
fi
bench=(--seq "$seq" --batch 1 --reps "$reps" --warmup "$warmup" --import-reps 3 --json)

echo "bench-cpu.sh: exporting $gguf to ONNX" >&2
t0=$(date +%s%N)
"$ligerc" "$gguf" --emit onnx -o "$onnx" || die "ONNX export failed"
t1=$(date +%s%N)
"$py" -c 'import json,sys; print(json.dumps({"tool": "ligerc", "stage": "export", "format": "gguf",
    "model": sys.argv[1], "median_ms": int(sys.argv[2]) / 1e6, "note": "whole process: import + ONNX write"}))' \
    "$gguf" "$((t1 - t0))" > "$dir/export.jsonl"

echo "bench-cpu.sh: ligerc bench $gguf" >&2
"$ligerc" bench "$gguf" "${bench[@]}" --decode "$decode" --label gguf > "$dir/gguf.jsonl"
echo "bench-cpu.sh: ligerc bench $hfdir" >&2
"$ligerc" bench "$hfdir" "${bench[@]}" --decode "$decode" --label hf > "$dir/hf.jsonl"
echo "bench-cpu.sh: ligerc bench --import-only (ONNX)" >&2
"$ligerc" bench "$tiny" --import-only --import-reps 5 --json --label onnx-tiny > "$dir/onnx-tiny.jsonl"
"$ligerc" bench "$onnx" --import-only --import-reps 3 --json --label onnx-smollm2 > "$dir/onnx-smollm2.jsonl"
# The same imports without the NaN/Inf scan of every weight: the parsing/dequantizing cost alone.
for m in gguf:"$gguf" hf:"$hfdir" onnx-smollm2:"$onnx"; do
    "$ligerc" bench "${m#*:}" --import-only --import-reps 3 --no-check-finite --json \
        --label "${m%%:*}-nocheck" > "$dir/${m%%:*}-nocheck.jsonl"
done
echo "bench-cpu.sh: onnxruntime on $onnx" >&2
"$py" "$root/scripts/ort_bench.py" "$onnx" --seq "$seq" --batch 1 --reps "$reps" --warmup "$warmup" \
    --threads "$threads" --label ort > "$dir/ort.jsonl"

cpu="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
rev="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git -C "$root" status --porcelain 2>/dev/null | grep -q . && echo ' (with uncommitted changes)' || true)"
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"
"$py" - "$dir" "$cpu" "$(nproc)" "$threads" "$rev$dirty" "$load_start" "$load_end" <<'PY'
import datetime, glob, json, os, sys

d, cpu, ncpu, threads, rev, load_start, load_end = sys.argv[1:]
rows = []
for f in sorted(glob.glob(os.path.join(d, "*.jsonl"))):
    with open(f) as fh:
        rows += [json.loads(l) for l in fh if l.strip()]

def get(label, stage, seq=None):
    for r in rows:
        if r.get("label") == label and r["stage"] == stage and r.get("seq") == seq:
            return r
    return None

def fmt(m):
    return f"{m:.2f}" if m < 10 else f"{m:.1f}" if m < 1000 else f"{m:.0f}"

def ms(r, key="median_ms"):
    return fmt(r[key]) if r and r.get(key) is not None else "n/a"

def ms_min(r):
    """median (min) for timed stages with several samples."""
    return f"{ms(r)} ({ms(r, 'min_ms')})" if r and r.get("reps", 1) > 1 else ms(r)

def ratio(a, o):
    if not (a and o):
        return "n/a"
    return f"{a['median_ms'] / o['median_ms']:.2f}× ({a['min_ms'] / o['min_ms']:.2f}×)"

ort_v = next((r["version"] for r in rows if r["tool"] == "onnxruntime"), "?")
print(f"CPU: {cpu}, {ncpu} cores; threads: {threads} (RAYON_NUM_THREADS = MATMUL_NUM_THREADS = "
      f"onnxruntime intra_op_num_threads); ligerc {rev}; onnxruntime {ort_v} (CPU EP, graph opt all); "
      f"{datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; "
      f"load average (1, 5, 15 min) {load_start} before, {load_end} after")
print()
reps = next((r["reps"] for r in rows if r["stage"] == "forward"), "?")
print(f"Forward pass, batch 1, random ids, no KV cache; ms as median (min) of {reps} timed runs,")
print("ratios as median/median (min/min):")
print()
print("| tokens | ours, GGUF import | ours, HF import | onnxruntime (exported ONNX) | ours/ORT (GGUF) | ours/ORT (HF) |")
print("|---:|---:|---:|---:|---:|---:|")
seqs = sorted({r["seq"] for r in rows if r["stage"] == "forward"})
for s in seqs:
    g, h, o = get("gguf", "forward", s), get("hf", "forward", s), get("ort", "forward", s)
    print(f"| {s} | {ms_min(g)} | {ms_min(h)} | {ms_min(o)} | {ratio(g, o)} | {ratio(h, o)} |")
if any(r["stage"] == "decode" for r in rows):
    print()
    print("Prefill then KV-cache decode (ours only; median (min); decode is ms per token over all steps):")
    print()
    print("| prompt tokens | prefill ms, GGUF | decode ms/token, GGUF | prefill ms, HF | decode ms/token, HF |")
    print("|---:|---:|---:|---:|---:|")
    for s in seqs:
        print(f"| {s} | {ms_min(get('gguf', 'prefill', s))} | {ms_min(get('gguf', 'decode', s))} | "
              f"{ms_min(get('hf', 'prefill', s))} | {ms_min(get('hf', 'decode', s))} |")
print()
print("Import and setup (ms; median (min) where repeated):")
print()
print("| step | ms |")
print("|---|---:|")
for what, r in [
    ("GGUF import (Q4_1 file → graph)", get("gguf", "import")),
    ("GGUF weight preparation (`Session::new`)", get("gguf", "prepare")),
    ("HF import (f32 safetensors dir → graph)", get("hf", "import")),
    ("HF weight preparation (`Session::new`)", get("hf", "prepare")),
    ("ONNX import, tiny fixture (tiny_dynamo_op18_sdpa.onnx)", get("onnx-tiny", "import")),
    ("ONNX import, exported SmolLM2", get("onnx-smollm2", "import")),
    ("GGUF import without the NaN/Inf weight scan (`--no-check-finite`)", get("gguf-nocheck", "import")),
    ("HF import without the NaN/Inf weight scan", get("hf-nocheck", "import")),
    ("ONNX import, exported SmolLM2, without the NaN/Inf weight scan", get("onnx-smollm2-nocheck", "import")),
    ("GGUF → ONNX export (`ligerc --emit onnx`, whole process)", next((r for r in rows if r["stage"] == "export"), None)),
    ("onnxruntime session creation, exported SmolLM2", get("ort", "session")),
]:
    print(f"| {what} | {ms_min(r)} |")
PY
if [[ -n "$out" ]]; then
    echo "bench-cpu.sh: raw JSON lines and the exported ONNX are in $dir" >&2
fi
