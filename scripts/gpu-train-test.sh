#!/usr/bin/env bash
# GPU training checks, in one device call (the GPU machine has no Rust; build here with
# ../shared/tools/stage-gpu, which puts the release `ligerc` into .gpu/):
#
#   scripts/gpu-train-test.sh [grads] [grads-hybrid] [grads-gsa] [grads-smol] [grads-real] [resume] [bench] [ref]
#                                                                                    (default: all)
#
#   grads  one update of the tiny linearized + LoRA fixture with --backend cuda and --backend cpu
#          (--clip 0, --dump-grads) and the gradients compared: max |cuda − cpu| / max |cpu| per
#          tensor. With --frozen-dtype f32, pass ≤ 1e-3 (f32 on both; cuBLAS and the kernels sum
#          in other orders; the CPU's own float64-checked tolerance is 1e-4 of the largest
#          gradient). With the default bf16 frozen weights, pass ≤ 5e-2: weights and the
#          activations entering their products are rounded to 8 significant bits (2^-9 ≈ 2e-3
#          relative each), over products of 64-128 terms and a 2-layer chain.
#   grads-hybrid  the same with layer 1 of 2 keeping softmax attention (linearize:keep-softmax=every:2)
#   grads-gsa     the same with Liger-GSA (linearize:variant=gsa,slots=8)
#   grads-smol  the same on a random-weight SmolLM2-135M-shaped model at 256 tokens (30 layers)
#   grads-real  the same on the real SmolLM2-135M ($SMOL, default /root/models/SmolLM2-135M-Instruct.Q4_1.gguf),
#          its own tokenizer, f32 frozen weights (<= 1e-3) and bf16 ones (<= 2x the CPU's own
#          bf16-vs-f32 difference, measured in the same run)
#   resume kill -9 during a run of the random-weight SmolLM2 shape (seq 256, 40 updates, a
#          checkpoint every 5), then --resume; every update's loss must match the uninterrupted
#          run's within 1e-3 relative (bf16 noise; the kernels are deterministic, so expect 0).
#          RESUME_BACKEND=cpu runs the same check on the CPU (slow; for testing this script)
#   bench  a random-weight SmolLM2-135M (tests/gpu/make_random_smol.py), linearized + LoRA q,k,v
#          r8: a few updates at seq 1024 and 4096, batch 1, accum 1 → tokens/s and peak GPU memory
#          (BENCH_SEQS, BENCH_BATCHES, BENCH_STEPS; BENCH_MATHS="f32 bf16" runs each with
#          LIGERC_TRAIN_MATH set: the attention kernels in f32 or on bf16 tensor cores)
#   ref    scripts/liger_torch.py bench: the same model and recipe in PyTorch + PEFT + fla (fla-core
#          from .whl/, installed by the caller with `python3 -m pip install --no-deps --no-index
#          .whl/*.whl` — plain `pip` installs into another Python there), same shapes, in the
#          same call; Triton compiles fla's kernels on first use: allow it 3-5 minutes
#
# Every op runs on the GPU (LigerGate / LigerAttention through the liger_train kernels); set
# LIGERC_TRAIN_HOST_OPS=1 to run ops without a GPU kernel on the CPU instead of refusing them.
# Everything is logged under $OUT (or ./gpu-train-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-train-out}
mkdir -p "$OUT"
BIN=${LIGERC:-.gpu/ligerc}
PY=${PYTHON:-python3}
parts=("$@")
[[ ${#parts[@]} -eq 0 ]] && parts=(grads grads-hybrid grads-gsa grads-smol grads-real resume bench ref)
status=0
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

for part in "${parts[@]}"; do
case $part in
grads|grads-hybrid|grads-gsa)
    fx=tests/fixtures/onnx/tiny_dynamo_op18_sdpa.onnx
    lin=linearize
    [[ $part == grads-hybrid ]] && lin=linearize:keep-softmax=every:2
    [[ $part == grads-gsa ]] && lin=linearize:variant=gsa,slots=8
    for be in cuda cuda-bf16 cpu; do
        rm -rf "$OUT/grads-$be"
        case $be in
            cuda) flags=(--backend cuda --frozen-dtype f32) ;;
            cuda-bf16) flags=(--backend cuda --frozen-dtype bf16) ;;
            *) flags=(--backend cpu) ;;
        esac
        "$BIN" finetune "$fx" --pass $lin --pass lora --lora-targets q,k,v,o,gate,up,down \
            --lora-rank 8 --tokenizer bytes --data tests/fixtures/text/shakespeare_sample.txt \
            --seq-len 64 --batch 2 --accum 2 --steps 1 --clip 0 --eval-every 0 --heldout 0.2 \
            "${flags[@]}" --dump-grads "$OUT/grads-$be.json" -o "$OUT/grads-$be" \
            > "$OUT/grads-$be.log" 2>&1
        rc=$?
        log "$part: --backend $be exit $rc ($(tail -1 "$OUT/grads-$be.log"))"
        [[ $rc -eq 0 ]] || status=1
    done
    for pair in "cuda 1e-3" "cuda-bf16 5e-2"; do
    set -- $pair
    "$PY" - "$OUT/grads-$1.json" "$OUT/grads-cpu.json" "$part ($1)" "$2" <<'PYEOF' 2>&1 | tail -1 | tee -a "$OUT/summary.txt" || status=1
import json, sys
import numpy as np
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a.keys() == b.keys(), "different parameter sets"
worst = 0.0
for k in sorted(b):
    x, y = np.array(a[k]["values"], np.float64), np.array(b[k]["values"], np.float64)
    scale = max(np.abs(y).max(), 1e-30)
    err = np.abs(x - y).max() / scale
    worst = max(worst, err)
    print(f"  {k}: max|grad| {scale:.3e}, max err / max|cpu| {err:.2e}")
tol = float(sys.argv[4])
print(f"{sys.argv[3]}: {len(b)} tensors, worst relative error {worst:.2e} (pass <= {tol:g})")
sys.exit(0 if worst <= tol else 1)
PYEOF
    done
    ;;
grads-smol|grads-real)
    # One update of linearized SmolLM2-135M + LoRA q,k,v r8, 256 tokens, on the GPU and on this
    # machine's CPUs; LoRA B starts at zero, so the B gradients carry the whole backward chain.
    # Error: max|cuda − cpu| / max|cpu| per tensor, the worst tensor.
    # grads-smol: random weights of its shape, byte tokens, f32 frozen weights (pass <= 1e-3).
    # grads-real: the real model ($SMOL) and its tokenizer. f32 frozen weights: pass <= 1e-3.
    #   bf16 frozen weights: the real model's gradients are very sensitive to them (rounding
    #   the projection weights to bf16 alone moves some layers' q/k gradients by more than
    #   their own size: measured here as CPU `--frozen-dtype bf16` vs CPU f32, same math), so
    #   the bound is that measured sensitivity ×2 (the GPU also rounds the activations entering
    #   the products, a second perturbation of the same size).
    "$PY" -c "
t=open('tests/fixtures/text/shakespeare_sample.txt').read()
open('/tmp/train.txt','w').write(t*max(1,400000//len(t)+1))"
    if [[ $part == grads-smol ]]; then
        model=/tmp/rsmol tok=bytes
        [[ -d $model ]] || "$PY" tests/gpu/make_random_smol.py "$model" > "$OUT/make_random_smol.log" 2>&1
        runs=("cpu f32 -" "cuda f32 1e-3")
    else
        model=${SMOL:-/root/models/SmolLM2-135M-Instruct.Q4_1.gguf} tok=model
        runs=("cpu f32 -" "cpu bf16 sensitivity" "cuda f32 1e-3" "cuda bf16 2x")
    fi
    tag=${part#grads-}
    sensitivity=
    for run in "${runs[@]}"; do
        read -r be dt bound <<< "$run"
        name=$tag-grads-$be-$dt
        rm -rf "${OUT:?}/$name"
        "$BIN" finetune "$model" --pass linearize --pass lora --tokenizer $tok --data /tmp/train.txt \
            --seq-len 256 --batch 1 --accum 1 --steps 1 --clip 0 --eval-every 0 --heldout 0.01 \
            --eval-sequences 1 --backend "$be" --frozen-dtype "$dt" --dump-grads "$OUT/$name.json" \
            -o "$OUT/$name" > "$OUT/$name.log" 2>&1
        rc=$?
        log "$part: --backend $be --frozen-dtype $dt exit $rc ($(tail -1 "$OUT/$name.log"))"
        [[ $rc -eq 0 ]] || status=1
        [[ $bound == - ]] && continue
        if [[ $bound == 2x ]]; then
            [[ -n $sensitivity ]] || { log "$part: no bf16 sensitivity measured"; status=1; continue; }
            bound=$("$PY" -c "print(2 * $sensitivity)")
        fi
        "$PY" - "$OUT/$name.json" "$OUT/$tag-grads-cpu-f32.json" "$bound" "$part $be $dt" "$OUT/$name.worst" <<'PYEOF' 2>&1 | tail -3 | tee -a "$OUT/summary.txt" || status=1
import json, sys
import numpy as np
a, b = (json.load(open(p)) for p in sys.argv[1:3])
bound, what = sys.argv[3], sys.argv[4]
assert a.keys() == b.keys(), "different parameter sets"
worst, n, dx, dy, xy = 0.0, 0, 0.0, 0.0, 0.0
for k in sorted(b):
    x, y = np.array(a[k]["values"], np.float64), np.array(b[k]["values"], np.float64)
    dx, dy, xy = dx + x @ x, dy + y @ y, xy + x @ y
    if np.abs(y).max() == 0 and np.abs(x).max() == 0:
        continue
    n += 1
    worst = max(worst, np.abs(x - y).max() / np.abs(y).max())
open(sys.argv[5], "w").write(f"{worst:.6e}")
cos = xy / np.sqrt(dx * dy)
if bound == "sensitivity":
    print(f"{what}: bf16-rounded weights vs f32 weights, both on the CPU: worst per tensor {worst:.2e}, cosine of all gradients {cos:.4f}")
    sys.exit(0)
print(f"{what}: {n} non-zero tensors of {len(b)}, worst max|cuda-cpu|/max|cpu| per tensor {worst:.2e} (pass <= {float(bound):.2e}), cosine of all gradients {cos:.4f}")
sys.exit(0 if worst <= float(bound) else 1)
PYEOF
        [[ $bound == sensitivity ]] && sensitivity=$(cat "$OUT/$name.worst")
    done
    ;;
resume)
    smol=${RESUME_MODEL:-/tmp/rsmol}
    [[ -d $smol || -f $smol ]] || "$PY" tests/gpu/make_random_smol.py "$smol" > "$OUT/make_random_smol.log" 2>&1
    "$PY" -c "
t=open('tests/fixtures/text/shakespeare_sample.txt').read()
open('/tmp/train.txt','w').write(t*max(1,400000//len(t)+1))"
    steps=${RESUME_STEPS:-40}
    run_args=(finetune "$smol" --pass linearize --pass lora --tokenizer bytes --data /tmp/train.txt
        --seq-len ${RESUME_SEQ:-256} --batch 1 --accum 1 --steps "$steps" --save-every 5
        --eval-every 0 --heldout 0.01 --eval-sequences 1 --backend ${RESUME_BACKEND:-cuda})
    rm -rf "$OUT/resume-full" "$OUT/resume-killed"
    "$BIN" "${run_args[@]}" -o "$OUT/resume-full" > "$OUT/resume-full.log" 2>&1 || status=1
    "$BIN" "${run_args[@]}" -o "$OUT/resume-killed" > "$OUT/resume-killed.log" 2>&1 &
    pid=$!
    # Kill -9 once a checkpoint past update 10 exists and the run is not done.
    for _ in $(seq 1 6000); do
        st=$("$PY" -c "import json,sys
try: print(json.load(open(sys.argv[1]))['step'])
except Exception: print(0)" "$OUT/resume-killed/checkpoint/state.json")
        [[ $st -ge 10 ]] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.05
    done
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    killed_at=$st
    "$BIN" "${run_args[@]}" --resume -o "$OUT/resume-killed" >> "$OUT/resume-killed.log" 2>&1 || status=1
    "$PY" - "$OUT/resume-full/metrics.jsonl" "$OUT/resume-killed/metrics.jsonl" "$killed_at" "$steps" <<'PYEOF' 2>&1 | tee -a "$OUT/summary.txt" || status=1
import json, sys
def curve(p):
    rows = [json.loads(l) for l in open(p)]
    return {r["step"]: r["loss"] for r in rows if "loss" in r and "step" in r}
a, b = curve(sys.argv[1]), curve(sys.argv[2])
killed, steps = int(sys.argv[3]), int(sys.argv[4])
ok = killed < steps and sorted(a) == sorted(b) == list(range(1, steps + 1))
worst = max((abs(a[k] - b[k]) / max(abs(a[k]), 1e-30) for k in a if k in b), default=float("inf"))
ok = ok and worst <= 1e-3
print(f"resume: killed after checkpoint {killed} of {steps}, {len(b)} updates logged, "
      f"worst relative loss difference {worst:.2e} (pass <= 1e-3, {'ok' if ok else 'FAIL'})")
sys.exit(0 if ok else 1)
PYEOF
    ;;
bench)
    smol=/tmp/rsmol
    [[ -d $smol ]] || "$PY" tests/gpu/make_random_smol.py "$smol" > "$OUT/make_random_smol.log" 2>&1
    "$PY" -c "
t=open('tests/fixtures/text/shakespeare_sample.txt').read()
open('/tmp/train.txt','w').write(t*max(1,400000//len(t)+1))"
    # BENCH_SEQS, BENCH_BATCHES, BENCH_MATHS (the attention kernels' math: LIGERC_TRAIN_MATH;
    # "default" follows the frozen dtype, bf16) pick the runs; each is its own process.
    for math in ${BENCH_MATHS:-default}; do
    for batch in ${BENCH_BATCHES:-1}; do
    for seq in ${BENCH_SEQS:-1024 4096}; do
        tag=bench-$seq; [[ $batch == 1 ]] || tag=$tag-b$batch; [[ $math == default ]] || tag=$tag-$math
        rm -rf "$OUT/$tag"
        menv=(); [[ $math == default ]] || menv=(LIGERC_TRAIN_MATH="$math")
        env "${menv[@]}" /usr/bin/time -v "$BIN" finetune "$smol" --pass linearize --pass lora --tokenizer bytes \
            --data /tmp/train.txt --seq-len $seq --batch $batch --accum 1 --steps ${BENCH_STEPS:-4} \
            --eval-every 0 --heldout 0.01 --eval-sequences 1 --backend cuda -o "$OUT/$tag" \
            > "$OUT/$tag.log" 2>&1
        rc=$?
        log "bench seq $seq batch $batch math $math: exit $rc: $(grep -E '^done|tok/s' "$OUT/$tag.log" | tail -1)"
        # Steady state: updates 2..N (the first compiles the kernels and fills the buffer pool).
        "$PY" - "$OUT/$tag/metrics.jsonl" $((seq * batch)) <<'PYEOF' 2>&1 | tee -a "$OUT/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
per = int(sys.argv[2])  # tokens an update
t = [r["step"] * per / r["tokens_per_s"] for r in rows]
if len(t) >= 2:
    print(f"  steady state: {(len(t) - 1) * per / (t[-1] - t[0]):.0f} tok/s over updates 2..{len(t)}")
PYEOF
        [[ $rc -eq 0 ]] || status=1
    done
    done
    done
    ;;
ref)
    smol=/tmp/rsmol
    [[ -d $smol ]] || "$PY" tests/gpu/make_random_smol.py "$smol" > "$OUT/make_random_smol.log" 2>&1
    "$PY" scripts/liger_torch.py bench --model "$smol" --random-weights --seq 1024,4096 \
        --steps ${BENCH_STEPS:-4} -o "$OUT/ref_bench.json" > "$OUT/ref_bench.log" 2>&1
    rc=$?
    log "ref (pytorch+peft+fla): exit $rc: $(grep tokens_per_s "$OUT/ref_bench.log" | tr '\n' ' ')"
    [[ $rc -eq 0 ]] || tail -15 "$OUT/ref_bench.log" | tee -a "$OUT/summary.txt"
    [[ $rc -eq 0 ]] || status=1
    ;;
*) echo "unknown part: $part" >&2; exit 2 ;;
esac
done
log "status $status"
exit $status
