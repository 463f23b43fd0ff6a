#!/usr/bin/env bash
# Create (or reuse) the repo-local Python environment for the reference scripts.
#
# Usage: scripts/setup-python.sh
#   Creates .venv/ in the repo root with python3 -m venv and pip-installs the pinned
#   packages of scripts/requirements-ci.txt (numpy, onnx, onnxruntime, gguf, safetensors).
#   Idempotent: a stamp file (.venv/.requirements-ci.sha256) holds the hash of the
#   requirements file; if it matches, nothing is installed. Prints the venv's python path
#   (the only thing written to stdout), so callers can do PY=$(scripts/setup-python.sh).
# Env: PYTHON (default python3) picks the interpreter used to create the venv.
set -euo pipefail

if [[ $# -gt 0 ]]; then
    case "$1" in
        -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0 ;;
        *) echo "setup-python.sh: takes no arguments (got '$1'); see --help" >&2; exit 2 ;;
    esac
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$root/scripts/requirements-ci.txt"
venv="$root/.venv"
stamp="$venv/.requirements-ci.sha256"
python="${PYTHON:-python3}"

[[ -f "$req" ]] || { echo "setup-python.sh: missing $req" >&2; exit 1; }
command -v "$python" >/dev/null || { echo "setup-python.sh: '$python' not found on PATH" >&2; exit 1; }

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "$venv/bin/python"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup-python.sh: creating $venv" >&2
    "$python" -m venv "$venv" >&2 || {
        echo "setup-python.sh: '$python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    }
fi

echo "setup-python.sh: installing $(grep -cv '^\s*\(#\|$\)' "$req") pinned packages from $req" >&2
rm -f "$stamp"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2 || {
    echo "setup-python.sh: pip install failed (is PyPI reachable?)" >&2
    exit 1
}
"$venv/bin/python" -c 'import numpy, onnx, onnxruntime, gguf, safetensors' || {
    echo "setup-python.sh: packages installed but an import failed" >&2
    exit 1
}
echo "$want" > "$stamp"
echo "$venv/bin/python"
